"""Grouping: which symptoms belong to one incident.

Each symptom gets *keys*: the asset its sensor watches (distance 0), what directly supplies
that asset (distance 1), road segments within two hops (1: a queue skips segments without
a sensor or not slow enough to alert), a grid cell for things linked by
distance (gas, manholes, reports), or a city-wide key for weather and air. Two symptoms
link when they share a key at total distance <= 1 (one of them sits *on* the shared node)
and their times overlap within ``slack_s``. Why that rule: a burst main links the pressure
drop in its zone (zone -> main) to the main's own flow meter, but two zones fed by the
same pump station never link through the pump alone, so unrelated trouble in a big
network stays apart. Components of the link graph are the groups.

Ponding at a low spot and the rain never share a key; a catchment whose ponding outlasts the
rain over the city by ``LINGER_S`` and recedes slowly is the exception (its drainage is not
keeping up): its ponding groups join the rain's group, see :func:`drains_slowly`. A road that
slows after its low spot's ponding stands deep is slow because of the water: it links to that
low spot, not through road hops to a queue next to it (:func:`flooded_roads`).

Sensor-health findings do not link by themselves: they join the group of their own
sensor when that sensor is part of a wider pattern, otherwise they stay with that one
sensor (a candidate "sensor fault").

>>> import numpy as np
>>> components(3, np.array([0]), np.array([1])).tolist()
[0, 0, 1]
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cityvitals.diagnose.domains import CITYWIDE_DOMAINS, GRAPH_DOMAINS, SPATIAL_DOMAINS
from cityvitals.diagnose.graph import AssetGraph
from cityvitals.diagnose.symptoms import WEAK_TYPES, Symptoms

SLACK_S = 3600.0
ROAD_LINK_HOPS = 2  # a jam skips segments (no sensor, or not slow enough): two hops still link
CHAIN_SLACK_S = 7200.0  # alerts on one asset that come and go within two hours are one episode
# ponding that outlasts the rain by this much is water the drainage is not taking away: a healthy
# catchment's low spots recede within about half an hour of the hourly rain signal easing
LINGER_S = 2700.0
# ...unless the water went down fast once the rain eased: a ponding gauge that fell from warning
# (0.15 m) back below attention (0.05 m) within this long drains at a healthy rate; it lingered
# only because it was deep (a healthy spot drains 0.12-0.4 m/h, one whose station fails far slower)
RECEDE_S = 1920.0
PONDING_KINDS = ("waterlogging_depth", "water_level")
ROAD_KINDS = ("traffic_speed", "traffic_flow", "road_occupancy")
# the water comes first: a road slows once its ponding is deep, so its alert follows the ponding's
# (a jam that was there before the water is someone else's queue)
FLOOD_LEAD_S = 300.0
# what a citizen's "no water" / "no power" can point at, up the network
REPORT_REACH = {"water": {"pressure_zone", "water_main"}, "power": {"power_area", "feeder", "substation"}}


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    m = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    return connected_components(m, directed=False)[1]


def symptom_keys(s: Symptoms, graph: AssetGraph) -> tuple[list[int], list[str], list[int]]:
    """(symptom index, key, distance) triples."""
    idx: list[int] = []
    keys: list[str] = []
    dist: list[int] = []

    def add(i: int, k: str, d: int) -> None:
        idx.append(i)
        keys.append(k)
        dist.append(d)

    anchors_cache = graph._link_keys  # kept on the graph: the same assets alarm update after update
    flooded = flooded_roads(s, graph)
    for i in range(len(s)):
        if s.health[i]:
            continue
        dom = s.domain[i]
        if s.origin[i] == "alert":
            asset = s.asset[i]
            if dom in CITYWIDE_DOMAINS:  # one air mass: PM2.5, PM10, NO2 ... rise together; weather kinds differ
                add(i, "city:air" if dom == "air" else f"city:{s.kind[i]}", 0)
            elif s.indicator[i]:  # an area's indicator: its unit, like a report there (no sensor, no asset)
                unit = s.unit[i]
                if unit:
                    add(i, f"{dom}:{unit}", 0)
                    for p, d in graph.ancestors(unit, 3).items():
                        if d and graph.type_of.get(p, "") in REPORT_REACH.get(dom, ()):
                            add(i, p, 1)
            elif dom == "drainage" and asset and graph.type_of.get(asset) in ("drainage_pumping_station", "river_gauge"):
                add(i, "city:rainfall", 1)  # drainage plant answers to the rain, not to a place
                add(i, asset, 0)
            elif i in flooded:  # the water on it explains the jam: it belongs with the ponding, not a queue
                for spot in flooded[i]:
                    add(i, spot, 1)
                if not np.isnan(s.x[i]):
                    cx, cy = graph.cell((s.x[i], s.y[i]))
                    add(i, f"cell:drainage:{cx}:{cy}", 1)
            elif dom in GRAPH_DOMAINS and asset:
                hit = anchors_cache.get((dom, asset))
                if hit is None:
                    ks = [(asset, 0)] + [(p, 1) for p in graph.parents.get(asset, ())
                                         if not (dom == "road" and graph.type_of.get(p) == "low_spot")]
                    if dom == "road":  # a queue spreads over segments: link within ROAD_LINK_HOPS; a low spot
                        # joins a road only when its water came first (flooded_roads)
                        ks += [(n, 1) for n, h in graph.road_hops(asset, ROAD_LINK_HOPS).items() if h > 0]
                    hit = ([k for k, _ in ks], [d for _, d in ks])
                    anchors_cache[(dom, asset)] = hit
                idx.extend([i] * len(hit[0]))
                keys.extend(hit[0])
                dist.extend(hit[1])
                if dom in ("road", "drainage") and not np.isnan(s.x[i]):
                    cx, cy = graph.cell((s.x[i], s.y[i]))
                    add(i, f"cell:{dom}:{cx}:{cy}", 1)  # meets reports of the same cell
            elif dom in SPATIAL_DOMAINS and not np.isnan(s.x[i]):
                cx, cy = graph.cell((s.x[i], s.y[i]))
                for dx in (-1, 0, 1):
                    for dy in (-1, 0, 1):
                        add(i, f"cell:{dom}:{cx + dx}:{cy + dy}", 0 if dx == dy == 0 else 1)
            elif asset:
                add(i, asset, 0)
        else:  # a report
            if dom in CITYWIDE_DOMAINS:
                add(i, "city:air" if dom == "air" else f"city:{dom}", 1)
                continue
            if dom in ("water", "power") and s.unit[i]:
                unit = s.unit[i]
                add(i, f"{dom}:{unit}", 0)  # per domain: "no water" and "no power" in one community are two things
                ok = REPORT_REACH[dom]
                for p, d in graph.ancestors(unit, 3).items():
                    if graph.type_of.get(p, "") in ok:
                        add(i, p, 1)  # the places a loss of supply here could come from
            if not np.isnan(s.x[i]):
                cx, cy = graph.cell((s.x[i], s.y[i]))
                for dx in (-1, 0, 1):
                    for dy in (-1, 0, 1):
                        add(i, f"cell:{dom}:{cx + dx}:{cy + dy}", 0 if dx == dy == 0 else 1)
    return idx, keys, dist


def flooded_roads(s: Symptoms, graph: AssetGraph) -> dict[int, list[str]]:
    """Road alert -> the low spots that flood its segment and pond while it is slow.

    Why: a segment under water is slow because of the water. Linked by road hops it bridged
    the ponding of a storm and the queue of an unrelated accident next to it into one
    incident; linked to the ponding that floods it, the jam stays with its cause. Only a
    ponding alert that reached warning on a measured depth (a few centimetres slow no one;
    a forecast is not water), started before the jam (within ``FLOOD_LEAD_S``) and was
    still on when it began counts.
    """
    kinds = np.asarray(s.kind, dtype=object)
    strong = (s.origin == "alert") & ~s.health & np.fromiter((t not in WEAK_TYPES for t in s.type), bool, len(s))
    # standing water that blocks a lane: the ponding reached warning (0.15 m by default), measured, not forecast
    deep = strong & (s.level >= 2) & np.fromiter((t != "breach" for t in s.type), bool, len(s))
    ponds: dict[str, list[tuple[float, float]]] = {}
    for p in np.flatnonzero(deep & np.isin(kinds, PONDING_KINDS)).tolist():
        a = s.asset[p]
        if a and graph.type_of.get(a) == "low_spot":
            ponds.setdefault(a, []).append((float(s.t0[p]), float(s.t1[p])))
    if not ponds:
        return {}
    out: dict[int, list[str]] = {}
    for i in np.flatnonzero(strong & np.isin(kinds, ROAD_KINDS)).tolist():
        a = s.asset[i]
        if not a:
            continue
        spots = [p for p in graph.parents.get(a, ()) if p in ponds
                 and any(t0 <= s.t0[i] + FLOOD_LEAD_S and s.t0[i] <= t1 + FLOOD_LEAD_S for t0, t1 in ponds[p])]
        if spots:
            out[i] = spots
    return out


def link(s: Symptoms, graph: AssetGraph, slack_s: float = SLACK_S) -> np.ndarray:
    """Group label per symptom (health findings get their own labels, see :func:`attach_health`).

    Why arrays throughout: a storm puts thousands of symptoms on tens of thousands of keys;
    keys become integer codes, rows are sorted by (key, onset) once, and the per-key rules
    (anchors chain, leaves join an anchor) run as segmented scans over the whole table.
    """
    n = len(s)
    idx, keys, dist = symptom_keys(s, graph)
    a, b = _key_edges(s, np.asarray(idx, dtype=np.int64), keys, np.asarray(dist, dtype=np.int64), slack_s)
    labels = components(n, a, b)
    pa, pb = _drainage_edges(s, graph, labels, slack_s)
    if len(pa):
        labels = components(n, np.concatenate([a, pa]), np.concatenate([b, pb]))
    return attach_health(s, labels, slack_s)


def ponding_after_rain(s: Symptoms, graph: AssetGraph, rain_among: np.ndarray | None = None,
                       slack_s: float = SLACK_S) -> list[tuple[int, int, float, str]]:
    """(ponding alert, rain alert, seconds the ponding outlasted the rain, catchment) for every
    ponding alert at a low spot that started while it rained (rain alerts from ``rain_among``,
    default all).

    "The rain" is the rain alerts overlapping the ponding's onset (within ``slack_s``); the
    rain alert returned is the one that ended last. Why it matters: rain explains ponding
    while it falls; ponding that stays long after it is water the catchment's drainage is
    not pumping away, which points at the station that drains it, not at the weather.
    """
    strong = (s.origin == "alert") & ~s.health & np.fromiter((t not in WEAK_TYPES for t in s.type), bool, len(s))
    kinds = np.asarray(s.kind, dtype=object)
    rain_ok = strong & (kinds == "rainfall")
    if rain_among is not None:
        rain_ok &= np.isin(np.arange(len(s)), rain_among)
    rain = np.flatnonzero(rain_ok)
    pond = np.flatnonzero(strong & np.isin(kinds, PONDING_KINDS))
    if not len(rain) or not len(pond):
        return []
    out = []
    for p in pond.tolist():
        asset = s.asset[p]
        if not asset or graph.type_of.get(asset) != "low_spot":
            continue
        cats = [c for c in graph.parents.get(asset, ()) if graph.type_of.get(c) == "catchment"]
        if not cats:
            continue
        ov = rain[(s.t0[rain] <= s.t0[p] + slack_s) & (s.t1[rain] + slack_s >= s.t0[p])]
        if not len(ov):
            continue
        last = int(ov[np.argmax(s.t1[ov])])
        out.append((p, last, float(s.t1[p] - s.t1[last]), cats[0]))
    return out


def drains_slowly(s: Symptoms, p: int, linger: float) -> bool:
    """Ponding alert ``p`` outlasted the rain by ``LINGER_S`` and, where its gauge fell back from
    warning, took at least ``RECEDE_S`` to recede: its water is not being taken away.

    Why both: a deep puddle outlasts the rain in a healthy catchment too (up to 80 min on the
    simulated cities); how fast the level falls once the rain eases tells the drainage apart.
    """
    return linger >= LINGER_S and not s.recede[p] < RECEDE_S


def _drainage_edges(s: Symptoms, graph: AssetGraph, labels: np.ndarray, slack_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Link the ponding of a catchment to the rain when some of it drains slowly (:func:`drains_slowly`).

    Why: on their own keys a low spot's ponding and the city's rain never meet, so a failing
    storm-water station looked like a few unrelated puddles beside plain weather. A
    catchment whose ponding lingers is one story with the storm over it: its ponding groups
    during the rain join the rain's group, where its station is ranked against the weather.
    Only groups that are mostly about drainage join (``labels``: the groups so far): a
    queue that a ponding touches stays a traffic incident.
    """
    rows = ponding_after_rain(s, graph, slack_s=slack_s)
    slow: dict[str, int] = {}
    for p, r, linger, cat in rows:
        if drains_slowly(s, p, linger):
            slow.setdefault(cat, r)
    rows = [(p, slow[cat]) for p, _, _, cat in rows if cat in slow]
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ponding_group = {int(labels[p]) for p, _ in rows}
    mostly: dict[int, bool] = {}
    for grp in ponding_group:
        doms = Counter(s.domain[i] for i in np.flatnonzero((labels == grp) & ~s.health))
        mostly[grp] = 2 * doms.get("drainage", 0) > sum(doms.values())
    rows = [(p, r) for p, r in rows if mostly[int(labels[p])]]
    return np.asarray([p for p, _ in rows], dtype=np.int64), np.asarray([r for _, r in rows], dtype=np.int64)


def _key_edges(s: Symptoms, sym: np.ndarray, keys: list[str], dist: np.ndarray,
               slack_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Link edges (symptom pairs) from the (symptom, key, distance) triples.

    Per key: its anchors (distance 0) in onset order chain while each starts before the
    activity of those before it (plus the key's chain slack) has ended; a leaf (distance 1)
    joins the anchor active longest among those starting before it (+ slack), if that one
    was still active within ``slack_s`` of the leaf's onset.
    """
    empty = np.zeros(0, dtype=np.int64)
    if not len(sym):
        return empty, empty
    key_id: dict[str, int] = {}  # codes in order of first use: a dict, as sorting strings costs more than all the rest
    code = np.fromiter((key_id.setdefault(k, len(key_id)) for k in keys), dtype=np.int64, count=len(keys))
    chain_of_key = np.array([slack_s if k.startswith(("city:", "cell:")) else max(slack_s, CHAIN_SLACK_S) for k in key_id])
    t0, t1 = s.t0[sym], s.t1[sym]
    base = float(np.nanmin(s.t0)) if len(s.t0) else 0.0
    span = float(np.nanmax(s.t1) - base) + 4 * max(slack_s, CHAIN_SLACK_S) + 1.0
    ea: list[np.ndarray] = []
    eb: list[np.ndarray] = []
    # ---- anchors: sorted by (key, onset); offsets keep a running maximum inside its key
    am = dist == 0
    ak, a_sym, a0, a1 = code[am], sym[am], t0[am], t1[am]
    o = np.lexsort((a0, ak))
    ak, a_sym, a0, a1 = ak[o], a_sym[o], a0[o], a1[o]
    off = ak * span
    end_run = np.fmax.accumulate(a1 - base + off)  # segmented: a later key starts above every earlier value; NaN skipped
    if len(ak) > 1:
        same = ak[1:] == ak[:-1]
        ok = same & (a0[1:] - base + off[1:] <= end_run[:-1] + chain_of_key[ak[1:]])
        ea.append(a_sym[:-1][ok])
        eb.append(a_sym[1:][ok])
    # ---- leaves: the latest anchor of the key starting before the leaf (+ slack); the longest active up to it
    lm = dist == 1
    if lm.any() and len(ak):
        lk, l_sym, l0 = code[lm], sym[lm], t0[lm]
        keyed_start = a0 - base + off
        j = np.searchsorted(keyed_start, l0 + slack_s - base + lk * span, side="right") - 1
        first = np.searchsorted(ak, lk, side="left")  # the key's first anchor
        has = j >= first
        jj = np.maximum(j, 0)
        # index of the running maximum of t1 inside the key: the last position equal to the running max
        pos = np.arange(len(ak))
        at_max = (a1 - base + off) >= end_run
        arg_end = np.maximum.accumulate(np.where(at_max, pos, 0))[jj]
        ok = has & (a1[arg_end] + slack_s >= l0)
        ea.append(l_sym[ok])
        eb.append(a_sym[arg_end[ok]])
    return (np.concatenate(ea) if ea else empty), (np.concatenate(eb) if eb else empty)


def attach_health(s: Symptoms, labels: np.ndarray, slack_s: float = SLACK_S) -> np.ndarray:
    """Health findings join their sensor's group when they overlap it in time, else stay together per sensor.

    A finding joins the group of the first (lowest index) non-health alert of its sensor that it
    overlaps within ``slack_s``; findings that overlap none are grouped per sensor. One join on
    the sensor, not a loop over findings.
    """
    labels = labels.copy()
    h = np.flatnonzero(s.health)
    if len(h):
        src = np.asarray(s.source, dtype=object)
        nh = np.flatnonzero(~s.health & (s.origin == "alert"))
        # typed sources: with no plain alert at all (only health findings) an empty list would
        # make a column of nulls, which cannot join strings
        hf = pl.DataFrame({"i": h, "src": pl.Series(src[h].tolist(), dtype=pl.String), "t0": s.t0[h], "t1": s.t1[h]})
        nf = pl.DataFrame({"j": nh, "src": pl.Series(src[nh].tolist(), dtype=pl.String), "u0": s.t0[nh], "u1": s.t1[nh]})
        best = (hf.join(nf, on="src", how="inner")
                .filter((pl.col("t0") <= pl.col("u1") + slack_s) & (pl.col("u0") <= pl.col("t1") + slack_s))
                .group_by("i").agg(pl.col("j").min()))
        bi, bj = best["i"].to_numpy(), best["j"].to_numpy()
        labels[bi] = labels[bj]
        rest = hf.filter(~pl.col("i").is_in(bi.tolist()))
        if rest.height:
            root = rest.group_by("src").agg(pl.col("i").min().alias("root"))
            rest = rest.join(root, on="src")
            labels[rest["i"].to_numpy()] = labels[rest["root"].to_numpy()]
    _, compact = np.unique(labels, return_inverse=True)
    return compact
