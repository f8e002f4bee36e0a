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

Sensor-health findings do not link by themselves: they join the group of their own
sensor when that sensor is part of a wider pattern, otherwise they stay with that one
sensor (a candidate "sensor fault").

>>> import numpy as np
>>> components(3, np.array([0]), np.array([1])).tolist()
[0, 0, 1]
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cityvitals.diagnose.domains import CITYWIDE_DOMAINS, GRAPH_DOMAINS, SPATIAL_DOMAINS
from cityvitals.diagnose.graph import AssetGraph
from cityvitals.diagnose.symptoms import Symptoms

SLACK_S = 3600.0
ROAD_LINK_HOPS = 2  # a jam skips segments (no sensor, or not slow enough): two hops still link
CHAIN_SLACK_S = 7200.0  # alerts on one asset that come and go within two hours are one episode
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
            elif dom in GRAPH_DOMAINS and asset:
                hit = anchors_cache.get((dom, asset))
                if hit is None:
                    ks = [(asset, 0)] + [(p, 1) for p in graph.parents.get(asset, ())]
                    if dom == "road":  # a queue spreads over segments: link within ROAD_LINK_HOPS
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


def link(s: Symptoms, graph: AssetGraph, slack_s: float = SLACK_S) -> np.ndarray:
    """Group label per symptom (health findings get their own labels, see :func:`attach_health`)."""
    n = len(s)
    idx, keys, dist = symptom_keys(s, graph)
    by_key: dict[str, list[int]] = defaultdict(list)
    for r, k in enumerate(keys):
        by_key[k].append(r)
    ia = np.asarray(idx, dtype=np.int64)
    da = np.asarray(dist, dtype=np.int64)
    ea: list[np.ndarray] = []
    eb: list[np.ndarray] = []
    for key, rows in by_key.items():
        if len(rows) < 2:
            continue
        r = np.asarray(rows)
        sym, d = ia[r], da[r]
        anch = sym[d == 0]
        if not len(anch):
            continue
        order = np.argsort(s.t0[anch], kind="stable")
        anch = anch[order]
        at0, at1 = s.t0[anch], s.t1[anch]
        # anchors chain while their activity (with slack) overlaps
        run_end = np.maximum.accumulate(at1)
        if len(anch) > 1:
            chain = slack_s if key.startswith(("city:", "cell:")) else max(slack_s, CHAIN_SLACK_S)
            ok = at0[1:] <= run_end[:-1] + chain
            ea.append(anch[:-1][ok])
            eb.append(anch[1:][ok])
        leaves = sym[d == 1]
        if len(leaves):
            lt = s.t0[leaves]
            # the latest anchor starting before the leaf (+slack), and the one active longest before it
            j = np.searchsorted(at0, lt + slack_s, side="right") - 1
            has = j >= 0
            jj = np.maximum(j, 0)
            arg_end = _prefix_argmax(at1)[jj]
            ok = has & (at1[arg_end] + slack_s >= lt)
            ea.append(leaves[ok])
            eb.append(anch[arg_end[ok]])
    a = np.concatenate(ea) if ea else np.zeros(0, dtype=np.int64)
    b = np.concatenate(eb) if eb else np.zeros(0, dtype=np.int64)
    labels = components(n, a, b)
    return attach_health(s, labels, slack_s)


def _prefix_argmax(v: np.ndarray) -> np.ndarray:
    """Index of the running maximum of ``v``."""
    out = np.zeros(len(v), dtype=np.int64)
    best = 0
    for i in range(1, len(v)):
        if v[i] > v[best]:
            best = i
        out[i] = best
    return out


def attach_health(s: Symptoms, labels: np.ndarray, slack_s: float = SLACK_S) -> np.ndarray:
    """Health findings join their sensor's group when they overlap it in time, else stay together per sensor."""
    labels = labels.copy()
    src = np.array(s.source, dtype=object)
    nonh = ~s.health
    by_sensor: dict[str, list[int]] = defaultdict(list)
    for i in np.flatnonzero(nonh & (s.origin == "alert")):
        by_sensor[src[i]].append(int(i))
    first_health: dict[str, int] = {}
    for i in np.flatnonzero(s.health):
        best = None
        for j in by_sensor.get(src[i], ()):
            if s.t0[i] <= s.t1[j] + slack_s and s.t0[j] <= s.t1[i] + slack_s:
                best = j
                break
        if best is not None:
            labels[i] = labels[best]
        elif src[i] in first_health:
            labels[i] = labels[first_health[src[i]]]
        else:
            first_health[src[i]] = int(i)
    # compact labels
    _, compact = np.unique(labels, return_inverse=True)
    return compact
