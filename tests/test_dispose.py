"""Disposal loop: a full case life with a working-time clock, illegal transitions, duplicates,
dispatch and crews, statistics against hand-computed values, auto-open, report import, photos."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
import shapely

from cityvitals.dispose import Actor, CaseDesk, TransitionError, WorkCalendar, auto_open, case_stats, import_reports
from cityvitals.dispose.calendar import Limit
from cityvitals.errors import InputError

pytestmark = pytest.mark.both_backends  # DuckDB and PostgreSQL in every run (tests/conftest.py)

UTC = timezone.utc
SH = timezone(timedelta(hours=8))
LON, LAT = 121.40, 31.20

SUP, DISP, INSP, OPR = (Actor("wu", "supervisor"), Actor("he", "dispatcher"), Actor("lin", "inspector"),
                        Actor("qian", "operator"))


def dept(name: str) -> Actor:
    return Actor("crew-lead", "department", name)


class Clock:
    def __init__(self, t: datetime):
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def set(self, *args) -> datetime:
        self.t = datetime(*args, tzinfo=SH).astimezone(UTC)
        return self.t


def build_units(store) -> None:
    units = [("C", "city", 0, None, (0, 0, 8, 4)), ("D1", "district", 1, "C", (0, 0, 4, 4)),
             ("D2", "district", 1, "C", (4, 0, 8, 4)), ("G1", "grid", 2, "D1", (0, 0, 4, 4)),
             ("G2", "grid", 2, "D2", (4, 0, 8, 4))]
    boxes = [shapely.box(LON + b[0] / 100, LAT + b[1] / 100, LON + b[2] / 100, LAT + b[3] / 100) for *_, b in units]
    store.units.upsert(pl.DataFrame({
        "code": [u[0] for u in units], "name": [u[0] for u in units], "level": [u[1] for u in units],
        "depth": [u[2] for u in units], "parent_code": [u[3] for u in units],
        "geometry_wkb": [shapely.to_wkb(b) for b in boxes],
        "centroid_lon": [b.centroid.x for b in boxes], "centroid_lat": [b.centroid.y for b in boxes]}))


@pytest.fixture
def desk(store):
    build_units(store)
    clock = Clock(datetime(2026, 5, 6, 1, 0, tzinfo=UTC))   # Wednesday 09:00 Shanghai
    d = CaseDesk(store, clock=clock)
    d.sync_departments()
    d.clock_obj = clock
    return d


def test_calendar_holidays_make_up_days_and_natural_hours():
    cal = WorkCalendar.load()
    thu = datetime(2026, 4, 30, 17, 0, tzinfo=SH)           # before the May Day holiday (1-5 May)
    assert cal.add(thu, 3) == datetime(2026, 5, 6, 11, 0, tzinfo=SH)   # 1 h Thursday, then Wednesday 9-11
    assert cal.between(thu, datetime(2026, 5, 6, 11, 0, tzinfo=SH)) == 3.0
    sat = datetime(2026, 5, 9, 9, 0, tzinfo=SH)             # a make-up working Saturday
    assert cal.is_workday(sat.date()) and not cal.is_workday(datetime(2026, 5, 10).date())
    assert cal.add(thu, 3, natural=True) == thu + timedelta(hours=3)
    assert Limit.parse("2wd", cal.hours_per_day) == Limit(16.0)
    with pytest.raises(InputError, match="not a time limit"):
        Limit.parse("soon", 8)


def test_full_case_life_with_return_extension_rework_and_escalation(desk, store):
    c = desk.clock_obj
    res = desk.report(category="SA01", lon=LON + 0.01, lat=LAT + 0.01, text="我是王伟，电话13812345678，垃圾堆了三天",
                      reporter={"name": "王伟", "phone": "13812345678"}, ref="R1", source="public")
    cid = res["case_id"]
    row = store.cases.get(cid)
    assert row["unit_code"] == "G1" and row["region_code"] == "D1"
    assert "13812345678" not in row["description"] and "王伟" not in row["description"]
    # public reports must be verified first
    with pytest.raises(TransitionError, match="must be verified on site"):
        desk.act(cid, "file", SUP)
    c.set(2026, 5, 6, 9, 10)
    desk.act(cid, "request_verify", OPR)
    c.set(2026, 5, 6, 9, 40)
    assert desk.act(cid, "verify", INSP).state == "verified"
    c.set(2026, 5, 6, 10, 0)
    assert desk.act(cid, "file", SUP).state == "filed"
    # dispatched to the wrong department: returned and re-dispatched
    c.set(2026, 5, 6, 10, 0)
    s = desk.act(cid, "dispatch", DISP, department="greening")
    assert s.department == "greening" and s.due_at == datetime(2026, 5, 6, 15, 0, tzinfo=SH)   # 4 wh, lunch 12-13
    c.set(2026, 5, 6, 10, 30)
    with pytest.raises(TransitionError, match="belongs to department 'greening', not 'sanitation'"):
        desk.act(cid, "accept", dept("sanitation"))
    s = desk.act(cid, "return", dept("greening"), note="not ours")
    assert s.state == "returned" and s.returns == 1
    c.set(2026, 5, 6, 11, 0)
    s = desk.act(cid, "dispatch", DISP)                       # ownership table: sanitation
    assert s.department == "sanitation" and s.due_at == datetime(2026, 5, 6, 16, 0, tzinfo=SH)
    c.set(2026, 5, 6, 11, 30)
    desk.act(cid, "accept", dept("sanitation"))
    # extension: the clock stops while it is requested, and the grant adds time
    c.set(2026, 5, 6, 14, 0)
    desk.act(cid, "request_extension", dept("sanitation"))
    c.set(2026, 5, 6, 15, 0)                                  # 1 working hour paused
    s = desk.act(cid, "grant_extension", SUP, hours=2)
    assert s.extensions == 1 and s.paused_h == 1.0
    assert s.due_at == datetime(2026, 5, 7, 10, 0, tzinfo=SH)   # 16:00 + 1 h paused + 2 h = 19:00 -> next day 10:00
    c.set(2026, 5, 6, 17, 0)
    s = desk.act(cid, "handle", dept("sanitation"), note="cleared")
    assert s.on_time
    c.set(2026, 5, 6, 17, 10)
    desk.act(cid, "forward", DISP)
    c.set(2026, 5, 6, 17, 30)
    s = desk.act(cid, "rework", INSP, note="still dirty")
    assert s.state == "rework" and s.reworks == 1
    # rework: dispatched again with a fresh clock; not handled in time -> escalated
    c.set(2026, 5, 6, 17, 40)
    s = desk.act(cid, "dispatch", DISP, department="sanitation")
    assert s.due_at == datetime(2026, 5, 7, 13, 40, tzinfo=SH) and s.extra_h == 0   # 20 min + 3 h + (lunch) 40 min
    assert desk.escalate_overdue(datetime(2026, 5, 7, 13, 39, tzinfo=SH)) == []
    assert desk.escalate_overdue(datetime(2026, 5, 7, 14, 0, tzinfo=SH)) == [{"case_id": cid, "level": 1}]
    assert desk.escalate_overdue(datetime(2026, 5, 7, 15, 0, tzinfo=SH)) == []        # still level 1
    assert desk.escalate_overdue(datetime(2026, 5, 7, 18, 0, tzinfo=SH)) == [{"case_id": cid, "level": 2}]
    c.set(2026, 5, 7, 18, 0)
    desk.act(cid, "accept", dept("sanitation"))
    c.set(2026, 5, 8, 10, 0)
    s = desk.act(cid, "handle", dept("sanitation"))
    assert s.on_time is False
    c.set(2026, 5, 8, 10, 30)
    desk.act(cid, "forward", DISP)
    c.set(2026, 5, 8, 11, 0)
    s = desk.act(cid, "close", INSP)
    assert (s.state, s.escalation, s.returns, s.reworks, s.extensions) == ("closed", 2, 1, 1, 1)
    # the log is append-only and the snapshot equals the fold of the log
    evs = store.cases.events(cid)
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    assert [e["action"] for e in evs][:6] == ["report", "request_verify", "verify", "file", "dispatch", "return"]
    assert desk.replay(cid) == desk.state(cid)
    # the reporter is told
    assert [n["ref"] for n in store.cases.notices(cid)] == ["R1"]
    with pytest.raises(TransitionError, match="cannot dispatch from state 'closed'"):
        desk.act(cid, "dispatch", DISP)


def test_illegal_transitions_are_refused_with_clear_errors(desk, store):
    cid = desk.report(category="event.0505", lon=LON, lat=LAT, source="inspector", actor="lin", role="inspector")["case_id"]
    with pytest.raises(TransitionError, match=r"case \d+: cannot close from state 'reported' \(allowed from: checking\)"):
        desk.act(cid, "close", INSP)
    with pytest.raises(TransitionError, match=r"role 'department' may not file \(needs: supervisor\)"):
        desk.act(cid, "file", dept("traffic_police"))
    with pytest.raises(TransitionError, match="unknown action 'fix'"):
        desk.act(cid, "fix", SUP)
    desk.act(cid, "file", SUP)                                  # inspector reports need no verification
    with pytest.raises(InputError, match="department 'nobody' is unknown"):
        desk.act(cid, "dispatch", DISP, department="nobody")
    with pytest.raises(TransitionError, match="grant_extension from state 'filed'"):
        desk.act(cid, "grant_extension", SUP, hours=1)
    # a batch with one illegal action writes nothing
    before = len(store.cases.events(cid))
    with pytest.raises(TransitionError):
        desk.act_many([{"case_id": cid, "action": "dispatch", "actor": DISP, "data": {}},
                       {"case_id": cid, "action": "close", "actor": INSP, "data": {}}])
    assert len(store.cases.events(cid)) == before and desk.state(cid).state == "filed"
    with pytest.raises(InputError, match="no such case"):
        desk.act(999, "file", SUP)
    with pytest.raises(InputError, match="category 'XX99' is not in the code table"):
        desk.report(category="XX99", lon=LON, lat=LAT)
    # suspension pauses and resume returns to the state before
    desk.act(cid, "suspend", SUP)
    assert desk.act(cid, "resume", SUP).state == "filed"


def test_duplicates_attach_and_all_reporters_are_told(desk, store):
    t0 = desk.clock()
    a = desk.report(category="SA01", lon=LON, lat=LAT, ref="A", reporter={"name": "张三", "phone": "13900000001"},
                    reported_at=t0)
    b = desk.report(category="SA01", lon=LON + 0.0005, lat=LAT, ref="B", reporter={"name": "李四"},
                    reported_at=t0 + timedelta(hours=1))                       # ~48 m away: attaches
    far = desk.report(category="SA01", lon=LON + 0.01, lat=LAT, ref="C", reported_at=t0 + timedelta(hours=1))
    other = desk.report(category="MU01", lon=LON, lat=LAT, ref="D", reported_at=t0 + timedelta(hours=1))
    late = desk.report(category="SA01", lon=LON, lat=LAT, ref="E", reported_at=t0 + timedelta(hours=72))
    assert b["attached"] and b["case_id"] == a["case_id"]
    assert not far["attached"] and not other["attached"] and not late["attached"]
    assert store.cases.get(a["case_id"])["reports"] == 2
    assert {r["name"] for r in store.cases.reporters(a["case_id"])} == {"张三", "李四"}
    cid = a["case_id"]
    for action, actor in [("request_verify", OPR), ("verify", INSP), ("file", SUP), ("dispatch", DISP),
                          ("accept", dept("sanitation")), ("handle", dept("sanitation")), ("forward", DISP),
                          ("close", INSP)]:
        desk.act(cid, action, actor)
    assert sorted(n["ref"] for n in store.cases.notices(cid)) == ["A", "B"]
    # the same report imported twice opens nothing new
    again = desk.report(category="SA01", lon=LON, lat=LAT, ref="C")
    assert again.get("skipped") and again["case_id"] == far["case_id"]


def test_crews_are_chosen_by_distance_and_workload(desk, store):
    desk.add_crew("near", "sanitation", lon=LON, lat=LAT)
    desk.add_crew("far", "sanitation", lon=LON + 0.05, lat=LAT)
    ids = []
    for i in range(4):
        cid = desk.report_many([{"category": "SA01", "lon": LON, "lat": LAT, "source": "inspector",
                                 "actor": "lin", "role": "inspector"}], check_duplicates=False)[0]["case_id"]
        desk.act(cid, "file", SUP)
        ids.append(desk.act(cid, "dispatch", DISP).crew)
    # near gets cases until its workload (2 km per open case) outweighs the ~4.8 km to far
    assert ids == ["near", "near", "near", "far"]
    with pytest.raises(InputError, match="department 'nope' is unknown"):
        desk.add_crew("x", "nope")


def test_statistics_match_hand_computed_values(desk, store):
    c = desk.clock_obj
    t = c.set(2026, 5, 6, 9, 0)

    def life(lon, steps, inspector="lin"):
        cid = desk.report(category="SA01", lon=lon, lat=LAT + 0.01, source="inspector", actor=inspector,
                          role="inspector", check_duplicates=False)["case_id"] if False else \
            desk.report_many([{"category": "SA01", "lon": lon, "lat": LAT + 0.01, "source": "inspector",
                               "actor": inspector, "role": "inspector"}], check_duplicates=False)[0]["case_id"]
        for hh, mm, action, actor, data in steps:
            c.set(2026, 5, 6, hh, mm)
            desk.act(cid, action, actor, **data)
        c.set(2026, 5, 6, 9, 0)
        return cid

    S = dept("sanitation")
    full = [(10, 0, "file", SUP, {}), (10, 0, "dispatch", DISP, {}), (10, 30, "accept", S, {}),
            (11, 0, "handle", S, {}), (11, 0, "forward", DISP, {}), (12, 0, "close", INSP, {})]
    life(LON + 0.001, full)                                     # D1: closed on time, 2 h filed→closed
    life(LON + 0.002, full[:4] + [(11, 0, "forward", DISP, {}), (11, 10, "rework", INSP, {}),
                                  (11, 20, "dispatch", DISP, {}), (11, 30, "accept", S, {}),
                                  (12, 0, "handle", S, {}), (13, 0, "forward", DISP, {}), (14, 0, "close", INSP, {})],
         inspector="zhou")                                      # D1: rework, closed, 4 h
    life(LON + 0.003, [(10, 0, "file", SUP, {}), (10, 0, "dispatch", DISP, {}), (10, 10, "return", S, {})])
    life(LON + 0.004, [])                                       # D1: reported only
    life(LON + 0.05, full)                                      # D2: closed, 2 h
    rows = {r["group"]: r for r in case_stats(store, by="region")}
    d1, d2 = rows["D1"], rows["D2"]
    assert (d1["cases"], d1["filed"], d1["closed"], d1["handled"], d1["reworked"], d1["returns"]) == (4, 3, 2, 2, 1, 1)
    assert d1["filed_rate"] == 0.75 and d1["close_rate"] == round(2 / 3, 4)
    assert d1["on_time_close_rate"] == 1.0 and d1["rework_rate"] == 0.5 and d1["avg_handling_h"] == 3.0
    assert (d2["cases"], d2["filed_rate"], d2["close_rate"], d2["avg_handling_h"]) == (1, 1.0, 1.0, 2.0)
    # domain.md §4.6 over the cases due (应处置数): at 12:30 the returned case's deadline (15:00) is
    # still ahead, so only the two handled cases are due; a day later all three dispatched ones are
    early = {r["group"]: r for r in case_stats(store, by="region", as_of=datetime(2026, 5, 6, 12, 30, tzinfo=SH))}
    assert (early["D1"]["due"], early["D1"]["handle_rate"], early["D1"]["on_time_close_rate_due"]) == (2, 1.0, 1.0)
    late = {r["group"]: r for r in case_stats(store, by="region", as_of=datetime(2026, 5, 7, 9, 0, tzinfo=SH))}
    d1 = late["D1"]
    assert (d1["due"], d1["handled_now"], d1["handled_on_time"]) == (3, 2, 2)
    assert d1["handle_rate"] == d1["on_time_handle_rate"] == d1["on_time_close_rate_due"] == round(2 / 3, 4)
    assert late["D2"]["due"] == 1 and late["D2"]["on_time_close_rate_due"] == 1.0
    deps = {r["group"]: r for r in case_stats(store, by="department", as_of=datetime(2026, 5, 7, 9, 0, tzinfo=SH))}
    assert deps["sanitation"]["returns"] == 1 and deps["sanitation"]["cases"] == 4
    insp = {r["group"]: r for r in case_stats(store, by="inspector")}
    assert insp["zhou"]["cases"] == 1 and insp["lin"]["cases"] == 4
    none = case_stats(store, by="all", start=t + timedelta(days=1))
    assert none == []
    with pytest.raises(InputError, match="--by"):
        case_stats(store, by="planet")


def test_auto_open_from_alerts_by_rules(desk, store):
    store.sensors.upsert(pl.DataFrame({"id": ["P1", "A1"], "kind": ["water_pressure", "pm25"], "unit": ["MPa", "ug/m3"],
                                       "lon": [LON + 0.01, LON + 0.05], "lat": [LAT + 0.01, LAT + 0.01],
                                       "unit_code": ["G1", "G2"], "department": ["water", "env"]}))
    t = desk.clock()
    with store.transaction() as con:
        # one active alert per (source, type): A1's earlier warning has resolved before its alarm
        for src, level, state in (("P1", "alarm", "active"), ("A1", "warning", "resolved"), ("A1", "alarm", "active")):
            store.alerts.insert(con, {"source": src, "type": "threshold", "level": level, "state": state,
                                      "message": f"{src} {level}", "first_at": t, "last_at": t})
    res = auto_open(desk)
    assert res["alerts"] == {"seen": 3, "opened": 2, "attached": 0}
    cats = sorted(r["category"] for r in store.cases.list(state="all"))
    assert cats == ["event.0608", "event.0609"]
    assert auto_open(desk)["alerts"]["seen"] == 0                  # watermark: nothing twice
    if "incidents" in res:
        assert res["incidents"]["seen"] == 0


def test_import_simulated_reports(desk, store, tmp_path):
    path = tmp_path / "reports.ndjson"
    rows = [
        {"id": "RPT-000001", "reported_at": "2026-05-06T09:00:00+08:00", "channel": "hotline_12345",
         "reporter_type": "citizen", "category": "garbage", "service_code": "SA01", "lang": "zh",
         "text": "我是赵敏，电话13712345678，身份证11010519491231002X。垃圾没清运", "lon": LON + 0.01, "lat": LAT + 0.01,
         "unit_code": "G1", "reporter": {"name": "赵敏", "mobile": "13712345678", "resident_id": "11010519491231002X"}},
        {"id": "RPT-000002", "reported_at": "2026-05-06T09:30:00+08:00", "channel": "app", "reporter_type": "enterprise",
         "category": "garbage", "service_code": "SA01", "text": "rubbish", "lon": LON + 0.0101, "lat": LAT + 0.01,
         "unit_code": "G1", "reporter": {"name": "钱多", "mobile": "13812340000", "resident_id": "x",
                                         "enterprise": "上海浦江物业管理有限公司"}},
        {"id": "RPT-000003", "reported_at": "2026-05-06T10:00:00+08:00", "channel": "wechat", "reporter_type": "citizen",
         "category": "street_light", "service_code": "MU01", "text": "Street lights out", "lon": LON + 0.05,
         "lat": LAT + 0.01, "unit_code": "G2", "reporter": {"name": "孙", "mobile": "13600000000", "resident_id": "y"}},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", "utf-8")
    assert import_reports(desk, path) == {"reports": 3, "opened": 2, "attached": 1, "skipped": 0}
    assert import_reports(desk, path)["skipped"] == 3
    one = store.cases.by_ref("RPT-000001")
    assert one["category"] == "event.0102" and one["source"] == "public"
    assert "赵敏" not in one["description"] and "11010519491231002X" not in one["description"]
    (tmp_path / "bad.ndjson").write_text('{"id": 1}\n', "utf-8")
    with pytest.raises(InputError, match="line 1: no service_code"):
        import_reports(desk, tmp_path / "bad.ndjson")


def test_photos_are_checked_by_content_and_size(desk, store):
    cid = desk.report(category="SA01", lon=LON, lat=LAT)["case_id"]
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    row = desk.attach_photo(cid, png, stage="feedback", by="crew")
    assert row["mime"] == "image/png" and (desk.data_dir / row["path"]).read_bytes() == png
    with pytest.raises(InputError, match="not a JPEG, PNG, WebP or GIF"):
        desk.attach_photo(cid, b"<html>evil</html>", name="photo.jpg")
    from cityvitals.dispose.attachments import store_photo

    with pytest.raises(InputError, match="more than the limit"):
        store_photo(desk.data_dir, cid, b"\xff\xd8\xff" + b"0" * 200, max_bytes=100)
    assert len(store.cases.attachments(cid)) == 1


def test_returns_count_against_the_department_that_returned(desk, store):
    cid = desk.report_many([{"category": "SA01", "lon": LON + 0.01, "lat": LAT + 0.01, "source": "inspector",
                             "actor": "lin", "role": "inspector"}])[0]["case_id"]
    desk.act(cid, "file", SUP)
    desk.act(cid, "dispatch", DISP, department="greening")
    desk.act(cid, "return", dept("greening"))
    desk.act(cid, "dispatch", DISP)                                # ownership: sanitation
    rows = {r["group"]: r for r in case_stats(store, by="department")}
    assert rows["greening"]["returns"] == 1 and rows["greening"]["cases"] == 0
    assert rows["sanitation"]["returns"] == 0 and rows["sanitation"]["cases"] == 1


def test_batches_find_duplicates_in_one_pass_and_act_in_bulk(desk, store):
    """A batch with duplicates of a stored case and of each other, then bulk actions with crews."""
    t0 = desk.clock()
    first = desk.report(category="SA01", lon=LON, lat=LAT, ref="S", reported_at=t0)
    batch = [{"category": "SA01", "lon": LON + 0.0003, "lat": LAT, "ref": "near-stored",
              "reported_at": t0 + timedelta(minutes=5)},
             {"category": "SA01", "lon": LON + 0.02, "lat": LAT + 0.01, "ref": "new-1",
              "reported_at": t0 + timedelta(minutes=6)},
             {"category": "SA01", "lon": LON + 0.0201, "lat": LAT + 0.01, "ref": "near-new-1",
              "reported_at": t0 + timedelta(minutes=7)},
             {"category": "MU01", "lon": LON + 0.02, "lat": LAT + 0.01, "ref": "other-category",
              "reported_at": t0 + timedelta(minutes=8)},
             {"category": "SA01", "lon": LON + 0.0201, "lat": LAT + 0.01, "ref": "new-1",       # same ref twice
              "reported_at": t0 + timedelta(minutes=9)}]
    res = {r["ref"]: r for r in desk.report_many(batch)}
    assert res["near-stored"]["attached"] and res["near-stored"]["case_id"] == first["case_id"]
    assert not res["new-1"]["attached"] and res["near-new-1"]["case_id"] == res["new-1"]["case_id"]
    assert not res["other-category"]["attached"]
    assert store.cases.get(first["case_id"])["reports"] == 2
    assert store.cases.get(res["new-1"]["case_id"])["reports"] == 2
    assert desk.replay(first["case_id"]) == desk.state(first["case_id"])
    # bulk dispatch picks crews by distance and the workload the batch itself adds
    desk.add_crew("near", "sanitation", lon=LON, lat=LAT)
    desk.add_crew("far", "sanitation", lon=LON + 0.05, lat=LAT)
    ids = [r["case_id"] for r in desk.report_many(
        [{"category": "SA01", "lon": LON, "lat": LAT, "source": "inspector", "actor": "lin",
          "role": "inspector"} for k in range(4)], check_duplicates=False)]
    desk.act_many([{"case_id": c, "action": "file", "actor": SUP} for c in ids])
    crews = [s.crew for s in desk.act_many([{"case_id": c, "action": "dispatch", "actor": DISP} for c in ids])]
    assert crews[:3] == ["near", "near", "near"] and crews[3] == "far"
    for action, actor in (("accept", dept("sanitation")), ("handle", dept("sanitation")), ("forward", DISP),
                          ("close", INSP)):
        desk.act_many([{"case_id": c, "action": action, "actor": actor} for c in ids])
    assert all(desk.replay(c) == desk.state(c) for c in ids)
    assert len(store.cases.notices()) == 4


def test_reporters_route_requires_a_purpose_and_is_audited(desk, store):
    from fastapi.testclient import TestClient

    from cityvitals.api import create_app
    from cityvitals.share.audit import entries, verify

    cid = desk.report(category="SA01", lon=LON, lat=LAT, ref="R9", reporter={"name": "王伟", "phone": "13812345678"},
                      text="垃圾")["case_id"]
    duty = store.users.add("duty", "duty_officer")
    analyst = store.users.add("ana", "analyst")
    app = create_app(store, clock=desk.clock, poll_interval=None, dashboard=False)
    with TestClient(app) as c:
        h = {"Authorization": f"Bearer {duty}"}
        assert c.get(f"/api/v1/cases/{cid}/reporters", headers=h).status_code == 422         # no purpose
        assert c.get(f"/api/v1/cases/{cid}/reporters", headers=h, params={"purpose": "  "}).status_code == 422
        assert c.get(f"/api/v1/cases/{cid}/reporters", params={"purpose": "call back"},
                     headers={"Authorization": f"Bearer {analyst}"}).status_code == 403
        assert entries(store) == []                                    # refused reads are not data reads
        r = c.get(f"/api/v1/cases/{cid}/reporters", headers=h, params={"purpose": "call back about the rubbish"})
        assert r.status_code == 200 and r.json()["reporters"][0]["phone"] == "13812345678"
    log = entries(store)
    assert len(log) == 1
    e = log[0]
    assert (e["actor"], e["role"], e["action"], e["dataset"], e["purpose"], e["records"]) == (
        "duty", "duty_officer", "read", "case_reporters", "call back about the rubbish", 1)
    assert json.loads(e["detail"])["case_id"] == cid and "phone" in e["fields"]
    assert verify(store)["ok"]


def test_cli_reporters_read_needs_who_and_why_and_is_audited(desk, store):
    from typer.testing import CliRunner

    from cityvitals.cli import app
    from cityvitals.share.audit import entries, verify

    cid = desk.report(category="SA01", lon=LON, lat=LAT, ref="R10", reporter={"name": "赵敏", "phone": "13900001111"},
                      text="路灯坏了")["case_id"]
    # the CLI opens the store itself: the same DuckDB file, or the same PostgreSQL schema
    url = getattr(store, "url", None)
    where = ["--store", url] if url else ["--home", str(store.path.parent)]
    store.close()
    runner = CliRunner()
    refused = runner.invoke(app, ["cases", "show", str(cid), "--reporters", *where, "--json"])
    assert refused.exit_code == 1 and "--purpose" in str(refused.exception or refused.output)
    ok = runner.invoke(app, ["cases", "show", str(cid), "--reporters", "--by", "li", "--purpose", "call the reporter back",
                             *where, "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["reporters"][0]["phone"] == "13900001111"
    from cityvitals.store import open_store

    with (open_store(url=url) if url else open_store(where[1])) as again:
        [e] = entries(again)
        assert (e["actor"], e["action"], e["dataset"], e["purpose"], e["records"]) == (
            "li", "read", "case_reporters", "call the reporter back", 1)
        assert verify(again)["ok"]


@pytest.mark.slow
def test_incidents_and_simulated_reports_flow_into_cases(tmp_path):
    """A small simulated city with a water main burst: watch, diagnose, then one dispose step
    opens a case for the diagnosed incident and imports the reports due by the clock."""
    from cityvitals import sim
    from cityvitals.diagnose import diagnose
    from cityvitals.dispose import run_step
    from cityvitals.store import open_store
    from cityvitals.watch import watch_readings
    from cityvitals.watch.runner import Threshold

    sim.run_simulation(tmp_path / "sim", scenario="water_main_burst", duration="6h", seed=1, city_sensors=300,
                       interval="60s")
    truth = json.loads((tmp_path / "sim" / "truth.json").read_text("utf-8"))
    end = datetime.fromisoformat(truth["end"])
    with open_store(tmp_path / "home") as store:
        sim.load_folder(store, tmp_path / "sim")
        watch_readings(store, thresholds={"water_pressure": Threshold((0.16, 0.14, 0.10), "lower")},
                       clock=lambda: end)
        diagnose(store, clock=lambda: end)
        incidents = store.incidents.list(state="all")
        water = [i for i in incidents if i["type"] == "water_outage"]
        assert water, incidents
        reports = [json.loads(x) for x in (tmp_path / "home" / "sim" / "reports.ndjson").read_text("utf-8").splitlines()]
        mid = min(datetime.fromisoformat(r["reported_at"]) for r in reports) + timedelta(hours=1)
        due_mid = sum(datetime.fromisoformat(r["reported_at"]) <= mid for r in reports)
        first = run_step(store, lambda: mid, escalate=False)          # the clock half-way: only reports so far
        assert first["reports"]["reports"] == due_mid
        out = run_step(store, lambda: end)
        assert first["auto_open"]["incidents"]["opened"] + out["auto_open"]["incidents"]["opened"] == len(
            [i for i in incidents if i["type"] in ("water_outage", "sensor_fault") and i["state"] != "merged"])
        assert first["reports"]["reports"] + out["reports"]["reports"] == len(reports)
        case = store.cases.by_ref(f"incident:{water[0]['id']}")
        assert (case["category"], case["priority"], case["source"]) == ("event.0402", "urgent", "incident")
        assert case["unit_code"] == water[0]["units"][0]
        assert all("reporter" not in (r["description"] or "") for r in store.cases.list(state="all", limit=1000))
        again = run_step(store, lambda: end)                          # idempotent at the same clock
        assert again["auto_open"]["incidents"]["seen"] == 0 and again["reports"]["reports"] == 0
        n = store.cases.count()
        assert n == first["reports"]["opened"] + out["reports"]["opened"] + sum(
            v["opened"] for v in out["auto_open"].values()) + sum(v["opened"] for v in first["auto_open"].values())
