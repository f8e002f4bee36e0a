"""Citizen and enterprise reports (12345 hotline, app, enterprise channel) that follow conditions.

Reports come after the condition that causes them, from where it is felt: no water in
the communities of a zone whose pressure fell, flooding at low spots that ponded, noise
at night near construction, gas smell near a leak, a displaced manhole, an accident
(with plate numbers), an outage after a feeder trips. Ordinary background reports
(parking, rubbish, street lights…) arrive all day so incidents are not the only
signal. Free text is Chinese or English and sometimes repeats the caller's name and
number, as real calls do; all personal data is generated (:mod:`cityvitals.sim.pii`).
The truth links each report to its incident.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from cityvitals.sim._rng import stream
from cityvitals.sim.assets import locate_points
from cityvitals.sim.pii import person, plate

# category -> (service code, [zh templates], [en templates])
CATEGORIES: dict[str, tuple[str, list[str], list[str]]] = {
    "water_outage": ("WS01", ["{place}附近停水了，水龙头一点水都没有，什么时候恢复？", "家里水压很低，楼上基本没水，请尽快处理。{contact}"],
                     ["No water at all near {place} since a while, when will it be back?", "Water pressure is very low, upper floors have no water. {contact}"]),
    "flooding": ("DR01", ["{place}积水很深，车子开不过去，请派人排水。", "{place}下立交积水已经没过脚踝了。{contact}"],
                 ["Deep water on the road at {place}, cars cannot pass.", "The underpass at {place} is flooded. {contact}"]),
    "night_noise": ("EN02", ["晚上{time}了{place}工地还在施工，噪音太大睡不着。{contact}", "{place}工地夜间施工扰民，请查处。"],
                    ["Construction at {place} still going at {time} at night, too loud to sleep. {contact}", "Night work noise at the site near {place}."]),
    "gas_smell": ("GS01", ["{place}闻到很浓的煤气味，请赶紧来看看！{contact}", "{place}附近有燃气泄漏的味道。"],
                  ["Strong smell of gas near {place}, please come quickly! {contact}", "Smells like a gas leak around {place}."]),
    "manhole": ("MU03", ["{place}井盖移位了，很危险，有人差点踩空。", "{place}路上的井盖翻起来了。{contact}"],
                ["A manhole cover at {place} is displaced, dangerous.", "Open manhole on the road at {place}. {contact}"]),
    "traffic_accident": ("TR01", ["{place}发生交通事故，车牌{plate}的车和另一辆车相撞，堵得很厉害。", "{place}事故，{plate}停在路中间。{contact}"],
                         ["Accident at {place}: car {plate} collided with another, heavy jam.", "Crash at {place}, vehicle {plate} blocking the lane. {contact}"]),
    "power_outage": ("PW01", ["{place}突然停电了，空调都停了，什么时候来电？{contact}", "我们小区停电了，{place}一带。"],
                     ["Power cut at {place}, air conditioning off in this heat. {contact}", "Our compound near {place} has no electricity."]),
    "air_quality": ("EN01", ["今天{place}空气很差，雾蒙蒙的，有没有污染源？", "{place}灰霾严重，呼吸不舒服。{contact}"],
                    ["Air is very hazy at {place} today, is there a pollution source?", "Heavy smog near {place}. {contact}"]),
    "elevator_entrapment": ("EL01", ["{place}电梯困人了，里面有老人，快来！{contact}"], ["People trapped in the lift at {place}! {contact}"]),
    "illegal_parking": ("TR05", ["{place}有车违停，车牌{plate}，挡住出入口了。", "{place}人行道上停了车{plate}。{contact}"],
                        ["Car {plate} illegally parked at {place}, blocking the entrance.", "Vehicle {plate} parked on the pavement at {place}."]),
    "garbage": ("SA01", ["{place}垃圾好几天没清运了，味道很大。", "{place}有人乱倒建筑垃圾。{contact}"],
                ["Rubbish not collected for days at {place}.", "Construction waste dumped at {place}. {contact}"]),
    "street_light": ("MU01", ["{place}路灯坏了，晚上很黑。", "{place}一排路灯都不亮。"], ["Street lights out at {place}.", "Street lamp broken near {place}."]),
    "road_damage": ("MU02", ["{place}路面有个大坑。{contact}", "{place}人行道砖松动。"], ["Big pothole at {place}. {contact}", "Loose paving at {place}."]),
    "neighbour_noise": ("EN03", ["楼上每天深夜装修，{place}。{contact}"], ["Neighbours renovating late at night at {place}. {contact}"]),
}
BACKGROUND = ["illegal_parking", "garbage", "street_light", "road_damage", "neighbour_noise"]
_BACKGROUND_P = [0.3, 0.25, 0.15, 0.15, 0.15]
_ENTERPRISES = ["上海{}物业管理有限公司", "{}建设工程有限公司", "{}商贸有限公司", "{}餐饮管理有限公司"]


def _ts(t0: datetime, seconds: float) -> str:
    return (t0 + timedelta(seconds=float(seconds))).replace(microsecond=0).isoformat()


def generate_reports(city, ix, truth: dict, path: Path, *, seed: int, t0: datetime, dt: float, steps: int) -> int:
    """Write reports.ndjson and link report ids into ``truth``; returns the number written."""
    rng = stream(seed, "reports")
    end_s = steps * dt
    sid = {s: i for i, s in enumerate(ix.sensors.ids)}
    rows: list[dict] = []

    def t_rel(iso: str) -> float:
        return (datetime.fromisoformat(iso) - t0).total_seconds()

    def near(x: float, y: float, spread: float) -> tuple[float, float]:
        return x + rng.normal(0, spread), y + rng.normal(0, spread)

    def add(category: str, when_s: float, x: float, y: float, incident: dict | None, **extra) -> None:
        if not (0 <= when_s < end_s):
            return
        rows.append({"cat": category, "t": when_s, "x": x, "y": y, "inc": incident, **extra})

    def anchor(doc: dict) -> tuple[float, float]:
        ss = [sid[s] for s in doc.get("affected_sensors", []) if s in sid]
        if ss:
            j = ss[int(rng.integers(len(ss)))]
            return float(ix.sx[j]), float(ix.sy[j])
        a = doc.get("root_cause_asset")
        if a and a in ix.assets._index:
            i = ix.assets.index(a)
            return float(ix.assets.x[i]), float(ix.assets.y[i])
        return 0.0, 0.0

    comm_xy = {u.code: u.geom.representative_point() for u in city.communities}
    for doc in truth["incidents"] + truth["background"]:
        typ = doc["type"]
        first = [c["first_crossing"] for c in doc.get("thresholds", []) if c.get("first_crossing")]
        t_first = min((t_rel(x) for x in first), default=t_rel(doc["start"]))
        if typ == "water_main_burst":
            units = doc["affected_units"] or []
            for _ in range(int(rng.integers(8, 20))):
                if units:
                    p = comm_xy[units[int(rng.integers(len(units)))]]
                    x, y = near(p.x, p.y, 250)
                else:
                    x, y = near(*anchor(doc), 300)
                add("water_outage", t_first + rng.lognormal(np.log(1500), 0.6), x, y, doc)
        elif typ == "waterlogging":
            for _ in range(int(rng.integers(1, 5))):
                add("flooding", t_first + rng.lognormal(np.log(600), 0.7), *near(*anchor(doc), 80), doc)
        elif typ == "night_construction_noise":
            for _ in range(int(rng.integers(1, 4))):
                add("night_noise", t_rel(doc["start"]) + rng.uniform(900, 7200), *near(*anchor(doc), 150), doc)
        elif typ == "gas_leak":
            for _ in range(int(rng.integers(2, 6))):
                add("gas_smell", t_first + rng.lognormal(np.log(900), 0.6), *near(*anchor(doc), 120), doc)
        elif typ == "manhole_displaced":
            for _ in range(int(rng.integers(1, 3))):
                add("manhole", t_rel(doc["start"]) + rng.lognormal(np.log(1800), 0.7), *near(*anchor(doc), 30), doc)
        elif typ == "traffic_accident":
            for _ in range(int(rng.integers(1, 4))):
                add("traffic_accident", t_rel(doc["start"]) + rng.lognormal(np.log(240), 0.6), *near(*anchor(doc), 60), doc,
                    plate=plate(rng))
        elif typ == "substation_overload":
            units = doc["params"].get("outage_units") or []
            ts = doc["params"].get("trip_start")
            if units and ts is not None:
                for _ in range(int(rng.integers(4, 12))):
                    p = comm_xy[units[int(rng.integers(len(units)))]]
                    add("power_outage", ts * dt + rng.lognormal(np.log(420), 0.6), *near(p.x, p.y, 250), doc)
        elif typ == "air_pollution":
            for _ in range(int(rng.integers(0, 4))):
                add("air_quality", t_first + rng.uniform(1800, 14400), *near(*anchor(doc), 2000), doc)
        elif typ == "elevator_entrapment":
            add("elevator_entrapment", t_rel(doc["start"]) + rng.uniform(60, 600), *near(*anchor(doc), 10), doc)
    # background reports, by population and time of day (more in the day)
    pop = float(city.params.get("population", 1e6))
    n_bg = int(rng.poisson(pop / 1e6 * 30 * end_s / 86400))
    comms = city.communities
    w = np.array([max(c.population, 1) for c in comms], dtype=float)
    for _ in range(n_bg):
        t = rng.uniform(0, end_s)
        c = comms[int(rng.choice(len(comms), p=w / w.sum()))]
        p = c.geom.representative_point()
        cat = str(rng.choice(BACKGROUND, p=_BACKGROUND_P))
        add(cat, t, *near(p.x, p.y, 200), None, plate=plate(rng) if cat == "illegal_parking" else None)
    rows.sort(key=lambda r: (r["t"], r["cat"]))
    if not rows:
        path.write_text("", encoding="utf-8")
        return 0
    xs = np.array([r["x"] for r in rows])
    ys = np.array([r["y"] for r in rows])
    codes = locate_points(city.communities, xs, ys)
    lon, lat = city.frame.to_lonlat(xs, ys)
    names = {u.code: u.name for u in city.communities}
    lines = []
    for i, r in enumerate(rows):
        rid = f"RPT-{i + 1:06d}"
        code = codes[i] or ""
        who = person(rng, code[:6] or "310101")
        enterprise = rng.uniform() < 0.12
        lang = "en" if rng.uniform() < 0.15 else "zh"
        svc, zh, en = CATEGORIES[r["cat"]]
        tpl = (en if lang == "en" else zh)[int(rng.integers(len(en if lang == "en" else zh)))]
        place = names.get(code, "")
        if lang == "en" and code:
            place = next((u.name_en for u in city.communities if u.code == code), place)
        contact = ""
        if rng.uniform() < 0.35:
            contact = (f"I am {who['name']}, call me on {who['mobile']}." if lang == "en"
                       else f"我是{who['name']}，电话{who['mobile']}，身份证{who['resident_id']}。")
        when = t0 + timedelta(seconds=r["t"])
        text = tpl.format(place=place, contact=contact, plate=r.get("plate") or "", time=when.strftime("%H:%M")).strip()
        doc = {
            "id": rid, "reported_at": _ts(t0, r["t"]),
            "channel": "enterprise" if enterprise else str(rng.choice(["hotline_12345", "app", "wechat"], p=[0.6, 0.25, 0.15])),
            "reporter_type": "enterprise" if enterprise else "citizen",
            "category": r["cat"], "service_code": svc, "lang": lang, "text": text,
            "lon": round(float(lon[i]), 6), "lat": round(float(lat[i]), 6), "unit_code": code or None,
            "reporter": {"name": who["name"], "mobile": who["mobile"], "resident_id": who["resident_id"], "gender": who["gender"]},
        }
        if enterprise:
            doc["reporter"]["enterprise"] = _ENTERPRISES[int(rng.integers(len(_ENTERPRISES)))].format(place[:2] or "浦江")
        if r.get("plate"):
            doc["plate"] = r["plate"]
        lines.append(json.dumps(doc, ensure_ascii=False))
        if r["inc"] is not None:
            r["inc"]["reports"].append(rid)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)
