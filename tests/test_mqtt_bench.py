"""``cityvitals bench mqtt`` at a tiny size: it runs its four parts on loopback, stores every
message, times the planted alerts and leaves nothing behind (schemas, broker sessions)."""

from __future__ import annotations

import pytest

PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.mark.slow
def test_bench_mqtt_small_run_is_complete_and_clean():
    psycopg = pytest.importorskip("psycopg")
    from cityvitals.bench.mqtt import run

    def schemas() -> set[str]:
        with psycopg.connect(PG, autocommit=True) as c:
            return {r[0] for r in c.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'cv_bench_%'")}

    before = schemas()
    res = run(rate=1000, seconds=2, sensors=100, per_message=10, saturation_readings=2000, spikes=5, pg=PG, limit_s=60)
    assert schemas() == before
    assert res["broker_ceiling"]["received"] == res["broker_ceiling"]["messages"] == 200
    assert res["copy_ceiling"]["readings"] == 2000
    sat, fl = res["saturation"], res["fixed_load"]
    assert sat["readings_stored"] == sat["accepted"] == 2000 and sat["quarantined"] == 0
    bk = res["backlog"]  # queued at the broker before the server connected, then caught up
    assert bk["readings_stored"] == bk["accepted"] == 2000 and bk["quarantined"] == 0
    assert bk["readings_per_s"] > 0 and bk["stored_p99_s"] is None and bk["stages_caught_up"]
    assert fl["readings_stored"] == fl["accepted"] == 2000 and res["goals"]["nothing_lost"]
    assert fl["alerts_seen"] == fl["alerts_planted"] == 5 and 0 < fl["alert_p50_s"] <= fl["alert_p99_s"]
    assert 0 < fl["stored_p50_s"] <= fl["stored_p99_s"] and res["stages"]["errors"] == []
    assert res["stages"]["alerts_by_type"] == {"threshold": 5}
    # the stages ran in their own process, whose CPU is counted apart from the ingest's
    assert fl["cpu_s"]["stages_process"] > 0 and res["stages"]["watch_runs"] > 0
    assert fl["cpu_s"]["publisher"] > 0 and res["broker_ceiling"]["publisher_cpu_s"] > 0
    # CPU per reading, party by party, for the ceiling and the pipeline: the private broker's too
    ceiling_us = res["broker_ceiling"]["cpu_us_per_reading"]
    assert set(ceiling_us) == {"publisher", "broker", "subscriber"}
    assert ceiling_us["publisher"] > 0 and ceiling_us["subscriber"] > 0
    assert ceiling_us["broker"] >= 0  # from /proc in clock ticks: 200 messages may take less than one
    assert set(sat["cpu_us_per_reading"]) == {"ingest", "stages", "postgresql", "broker", "publisher"}
    assert sat["cpu_us_per_reading"]["publisher"] > 0 and res["broker_ceiling"]["publish_window"] == 100
    # end to end: until the watch has read the last batch, so never faster than storing
    for part in (sat, bk, fl):
        assert part["stages_caught_up"] and part["watch_caught_up_after_s"] >= 0
        assert 0 < part["end_to_end_readings_per_s"] <= part["readings_per_s"]


@pytest.mark.slow
def test_bench_mqtt_on_a_given_broker_skips_the_backlog_part_and_says_why():
    """Another broker may drop what it queues beyond a bound for a client that is away
    (Mosquitto's default: 1,000 messages): the backlog part runs on the bench's own broker only."""
    pytest.importorskip("psycopg")
    from cityvitals.bench.mqtt import run

    res = run(rate=1000, seconds=1, sensors=100, per_message=10, saturation_readings=2000, spikes=2, pg=PG,
              broker="mqtt://127.0.0.1:1883", limit_s=60)
    assert res["broker"] == "given" and "max_queued_messages" in res["backlog"]["skipped"]
    assert res["goals"]["half_broker_rate_from_backlog"] is None and res["goals"]["nothing_lost"]
    assert res["saturation"]["readings_stored"] == 2000 and res["fixed_load"]["alerts_seen"] == 2
    assert res["broker_ceiling"]["cpu_us_per_reading"]["broker"] is None  # not ours to read


@pytest.mark.slow
def test_bench_mqtt_share_drains_the_backlog_with_one_and_two_members_and_cleans_up():
    """``cityvitals bench mqtt-share`` at a tiny size: real ``serve`` processes, one and then
    two sharing the stream, each run taking every queued reading exactly once, with the
    stages following in a process of their own until the watch has read it all."""
    psycopg = pytest.importorskip("psycopg")
    from cityvitals.bench.mqtt_share import run

    def schemas() -> set[str]:
        with psycopg.connect(PG, autocommit=True) as c:
            return {r[0] for r in c.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'cv_bench_%'")}

    before = schemas()
    res = run(members=(1, 2), runs=1, readings=2000, sensors=100, pg=PG, limit_s=60, stages=True)
    assert schemas() == before
    assert [r["members"] for r in res["runs"]] == [1, 2]
    for r in res["runs"]:
        assert r["readings"] == r["accepted"] == 2000 and r["readings_per_s"] > 0
        assert r["stages_caught_up"] and r["watch_caught_up_after_s"] >= 0  # timed to the watch caught up
        assert len(r["member_cpu_s"]) == r["members"] and all(c > 0 for c in r["member_cpu_s"])
    assert set(res["summary"]) == {"1", "2"}
