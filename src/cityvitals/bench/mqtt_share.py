"""``cityvitals bench mqtt-share``: how fast one, and several, ingesting servers that split
one stream (``serve --mqtt-share-group``) catch up a backlog.

Why a bench of its own: ``bench mqtt`` measures one server, and its figures showed a single
server catching up a backlog with the machine not busy (1.4 of 2 cores): one process's
interpreter and its single committer are the bound, not the CPU. Several servers split the
Python, and their COPYs overlap (each batch's stamp is held in flight apart from its
transaction: ``PgReadingRepo.open_stamp``).

Each run, in a scratch schema of the PostgreSQL server: ``sensors`` sensors registered, the
members' persistent sessions made at the bench's private Mosquitto, ``readings`` readings
(20 per message, as gateways send) queued there, then ``members`` real ``cityvitals serve
--no-http`` processes started at once. The clock runs from the first member subscribed (its
``--mqtt-stats`` file appears) to the moment their stats count every reading accepted. The
stages (watch, signs) run only with ``stages`` (then timed until the watch has read the
last batch, as ``bench mqtt`` does); without, this measures the ingest. The runs of each
member count alternate, so a machine that drifts affects all counts alike. Everything made is removed;
every wait is bounded.
"""

from __future__ import annotations

import json as _json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Annotated

import typer

from cityvitals.bench.mqtt import DEFAULT_PG, _PrivateBroker, _proc_cpu, _publish, _register, _schema, workload


def _drain(broker: str, pg: str, members: int, readings: int, sensors: int, seed: int, limit_s: float,
           stages: bool = False) -> dict:
    """One run: queue ``readings`` for ``members`` servers sharing a subscription, then time them.

    ``stages``: the watch and signs follow the store in a process of their own, as one
    ``serve --follow`` among the members runs them, and the clock stops only once the watch
    has read the last batch (end to end, as ``bench mqtt`` times it)."""
    from cityvitals.ingest.mqtt import MqttConfig, drop_session, ensure_session
    from cityvitals.store.pg import PostgresStore

    run = uuid.uuid4().hex[:8]
    prefix = f"cvbench/{run}/share"
    group = f"cvbench{run}" if members > 1 else ""
    with _schema(pg) as url, tempfile.TemporaryDirectory(prefix="cv-bench-share-") as tmp:
        s = PostgresStore(url, migrate_schema=True)
        _register(s, sensors)
        s.close()
        cfgs = [MqttConfig(url=broker, layout=prefix + "/{kind}/{sensor_id}", client_id=f"cv-bench-{k}-{run}",
                           session_expiry=300, share_group=group) for k in range(members)]
        for cfg in cfgs:  # every member's session holds its share before any server connects
            ensure_session(cfg)
        procs: list[subprocess.Popen] = []
        live = None
        try:
            if stages:
                from cityvitals.live import StagesProcess
                from cityvitals.watch.runner import Threshold

                live = StagesProcess(url, thresholds={"pm25": Threshold((300.0, 500.0, 700.0), "higher", 0)},
                                     use_catalog=False).start()
            # data time just ahead of the clock and spread over a minute: nothing stale, nothing too far ahead
            base = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=5)
            rounds = max(1, readings // sensors)
            msgs = workload(prefix, readings=readings, sensors=sensors, per_message=20, seed=seed, spikes=0,
                            base=base, period=max(0.05, 60.0 / rounds))[0]
            total = rounds * sensors  # every sensor once a round
            times, _ = _publish(*cfgs[0].host_port, msgs, 0, limit_s)
            if not (times > 0).all():
                raise RuntimeError("the publisher did not send every message")
            del msgs
            stats = [os.path.join(tmp, f"stats-{k}.json") for k in range(members)]
            env = {k: v for k, v in os.environ.items() if k != "CITYVITALS_STORE"}
            for k, cfg in enumerate(cfgs):
                cmd = [sys.executable, "-m", "cityvitals", "serve", "--no-http", "--mqtt", broker, "--mqtt-layout",
                       cfg.layout, "--mqtt-client-id", cfg.client_id, "--mqtt-stats", stats[k], "--store", url,
                       "--home", os.path.join(tmp, "home")]
                if group:
                    cmd += ["--mqtt-share-group", group]
                procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env))
            up = None
            accepted = 0
            deadline = time.monotonic() + limit_s
            while time.monotonic() < deadline:
                seen = [_read_stats(f) for f in stats]
                if up is None and any(v is not None for v in seen):
                    up = time.monotonic()
                accepted = sum(v["accepted"] for v in seen if v)
                if accepted >= total or any(p.poll() is not None for p in procs):
                    break
                time.sleep(0.01)
            stored = time.monotonic()
            caught_up = live.wait_caught_up(limit_s) if live is not None else None
            end = time.monotonic()
            cpu = [round(_proc_cpu([p.pid]), 2) for p in procs]
            failed = [p.stderr.read().decode()[-2000:] for p in procs if p.poll() is not None]
        finally:
            if live is not None:
                live.close()
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
            for cfg in cfgs:
                drop_session(cfg)
    if failed:
        raise RuntimeError(f"a member stopped: {failed[0]}")
    secs = max(end - (up or end), 1e-9)
    return {"members": members, "readings": total, "accepted": accepted, "seconds": round(secs, 3),
            "readings_per_s": round(accepted / secs), "stages": stages, "stages_caught_up": caught_up,
            "watch_caught_up_after_s": round(end - stored, 3) if stages else None,
            # each member's process, its start-up (about 1.5 s: imports, the compiled scanner) included
            "member_cpu_s": cpu}


def _read_stats(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            return _json.loads(f.read())
    except (OSError, ValueError):
        return None


def run(*, members: tuple[int, ...] = (1, 2), runs: int = 3, readings: int = 600_000, sensors: int = 20_000,
        pg: str = DEFAULT_PG, seed: int = 11, limit_s: float = 180.0, stages: bool = False) -> dict:
    """Every member count ``runs`` times, alternating; min / median / max per count."""
    from cityvitals.bench._machine import machine

    out: dict = {"machine": machine(), "load_average": os.getloadavg(), "readings": readings, "sensors": sensors,
                 "stages": "watch and signs following, timed to the watch caught up" if stages else
                 "not running (ingest only)", "runs": []}
    with _PrivateBroker() as (broker, _pid):
        if broker is None:
            raise typer.BadParameter("bench mqtt-share needs a mosquitto binary (it queues the backlog on a broker "
                                     "of its own)")
        for r in range(runs):
            for n in members:
                out["runs"].append(_drain(broker, pg, n, readings, sensors, seed + r, limit_s, stages))
    out["summary"] = {}
    for n in members:
        rates = [x["readings_per_s"] for x in out["runs"] if x["members"] == n]
        out["summary"][str(n)] = {"min": min(rates), "median": round(statistics.median(rates)), "max": max(rates)}
    return out


def bench_mqtt_share(
    members: Annotated[str, typer.Option(help="Member counts to compare, comma-separated.")] = "1,2",
    runs: Annotated[int, typer.Option(min=1, max=20, help="Runs of each member count (alternating).")] = 3,
    readings: Annotated[int, typer.Option(min=1000, help="Readings queued for each run.")] = 600_000,
    sensors: Annotated[int, typer.Option(min=20, help="Registered sensors (20 per message).")] = 20_000,
    stages: Annotated[bool, typer.Option("--stages/--no-stages", help="Run the watch and signs beside the members "
                                         "(one stages process, as --follow) and time until the watch caught up.")] = False,
    pg: Annotated[str, typer.Option("--pg", help="PostgreSQL server for scratch schemas (dropped afterwards).")] = DEFAULT_PG,
    json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object for scripts.")] = False,
) -> None:
    """Catching up a backlog with one and with several servers sharing the stream (--mqtt-share-group)."""
    try:
        counts = tuple(int(x) for x in members.split(","))
    except ValueError as exc:
        raise typer.BadParameter(f"--members {members!r}: give counts such as 1,2") from exc
    if not counts or any(n < 1 or n > 8 for n in counts):
        raise typer.BadParameter(f"--members {members!r}: each count from 1 to 8")
    res = run(members=counts, runs=runs, readings=readings, sensors=sensors,
              pg=os.environ.get("CITYVITALS_BENCH_PG", pg), stages=stages)
    if json:
        typer.echo(_json.dumps(res, default=str))
        return
    m = res["machine"]
    lines = [f"bench mqtt-share on {m['cpu']} ({m['cores']} cores, load average {res['load_average'][0]:.1f} at start): "
             f"{res['readings']:,} readings queued, then drained by N servers sharing the stream ({res['stages']})"]
    for n, s in res["summary"].items():
        lines.append(f"  {n} member(s): {s['min']:,} / {s['median']:,} / {s['max']:,} readings/s (min / median / max)")
    typer.echo("\n".join(lines))
