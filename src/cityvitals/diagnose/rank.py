"""Ranking probable causes of one group of symptoms, with the evidence in plain words.

A candidate asset is scored by how well it explains the pattern:

* **coverage** — the share of affected places it sits above in the dependency graph (its
  suppliers reacting count half: a pump pushing more water into a burst main);
* **specificity** — of the sensors below it that should feel its failure, the share that
  did (a pump station feeding four zones of which one lost pressure is a poor suspect);
* **own signal** — its own sensors alarming;
* **timing** — symptoms near it started first (roads: the segment the queue spreads from);
* **prior** — zones, areas and catchments are places, not parts that break.

"sensor fault" wins when one sensor alone is wrong while its peers are fine, "weather"
for weather and air patterns that cover the city, "unknown" when nothing explains much.
Under rain, a storm-water station whose catchment's ponding outlasts the rain by
``LINGER_S`` and recedes slowly outranks the weather (the water is not being pumped away), and a jam that one
blockage explains leaves little to the weather (rain slows every road a little at once).
Scores are normalised into shares that sum to one.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from cityvitals.diagnose.domains import (
    DOMAIN_ASSETS,
    INCIDENT_TYPE,
    SPATIAL_DOMAINS,
    TYPE_PRIOR,
    WEATHER_TYPE,
)
from cityvitals.diagnose.graph import AssetGraph
from cityvitals.diagnose.group import LINGER_S, PONDING_KINDS, RECEDE_S, drains_slowly, ponding_after_rain
from cityvitals.diagnose.symptoms import WEAK_TYPES, Symptoms

SENSOR_FAULT = "sensor fault"
WEATHER = "weather"
UNKNOWN = "unknown"
MAX_CANDIDATES = 40  # scored in detail; the rest are pruned by coverage and prior
SLOW_DRAINAGE = 0.95  # a station whose catchment keeps ponding after the rain: strong, direct evidence


@dataclass
class Cause:
    cause: str  # an asset id, or SENSOR_FAULT / WEATHER / UNKNOWN
    kind: str  # "asset" | "sensor_fault" | "weather" | "unknown"
    score: float
    evidence: list[str] = field(default_factory=list)
    asset_type: str | None = None
    name: str | None = None


@dataclass
class Diagnosis:
    """One group's diagnosis: what a stored incident is made from."""

    members: list[int]  # symptom indices
    type: str
    causes: list[Cause]
    level: int
    units: list[str]
    sensors: list[str]
    start: float
    end: float
    open: bool
    title: str = ""

    @property
    def confidence(self) -> float:
        return self.causes[0].score if self.causes else 0.0


@dataclass
class Context:
    """What is going on city-wide while a group is ranked ("which are affected and which are not")."""

    affected_sensors: dict[str, tuple[float, float]]  # sensor -> (t0, t1) of non-health symptoms
    rain: list[tuple[float, float]]  # intervals with rainfall alerts

    def affected_during(self, sid: str, t0: float, t1: float, slack: float = 3600.0) -> bool:
        span = self.affected_sensors.get(sid)
        return span is not None and span[0] <= t1 + slack and span[1] + slack >= t0

    def raining(self, t0: float, t1: float) -> bool:
        return any(a <= t1 + 1800 and b + 1800 >= t0 for a, b in self.rain)


def make_context(s: Symptoms) -> Context:
    aff: dict[str, tuple[float, float]] = {}
    rain = []
    for i in np.flatnonzero((s.origin == "alert") & ~s.health):
        sid = s.source[i]
        a, b = aff.get(sid, (math.inf, -math.inf))
        aff[sid] = (min(a, s.t0[i]), max(b, s.t1[i]))
        if s.kind[i] == "rainfall" and s.type[i] not in WEAK_TYPES:
            rain.append((float(s.t0[i]), float(s.t1[i])))
    return Context(aff, rain)


def _concordance(hops: np.ndarray, onset: np.ndarray) -> float:
    """Share of pairs of affected segments whose onset order follows their hop distance from a candidate.

    >>> _concordance(np.array([0, 1, 2]), np.array([10.0, 20.0, 30.0])), _concordance(np.array([1]), np.array([5.0]))
    (1.0, 0.5)
    """
    if len(hops) < 2:
        return 0.5
    hh = hops.astype(float)
    dh = np.sign(hh[:, None] - hh[None, :])
    dt = np.sign(onset[:, None] - onset[None, :])
    m = dh != 0
    return float(((dh == dt) & m).sum() / m.sum()) if m.any() else 0.5


def _accumulate(g: AssetGraph, site_w: dict[str, float], site_t: dict[str, float], road_hops: set[str]):
    """Coverage (summed site weight), mean hop distance and earliest nearby onset of every node
    that could explain a site, plus a lookup of (hops, onsets) of the sites a node reaches.

    Why arrays: the storm's road group has thousands of sites each reaching dozens of
    segments; a dict update per pair was most of an update's time.
    """
    sites = list(site_w)
    if not sites:
        return {}, {}, {}, lambda c: (np.zeros(0, np.int64), np.zeros(0))
    parts = [g.reach(x, x in road_hops) for x in sites]
    lens = np.fromiter((len(p[0]) for p in parts), dtype=np.int64, count=len(parts))
    ids = np.concatenate([p[0] for p in parts])
    hops = np.concatenate([p[1] for p in parts])
    owner = np.repeat(np.arange(len(sites)), lens)
    w = np.fromiter((site_w[x] for x in sites), dtype=float, count=len(sites))
    t = np.fromiter((site_t.get(x, math.inf) for x in sites), dtype=float, count=len(sites))
    order = np.argsort(ids, kind="stable")
    ids, hops, owner = ids[order], hops[order], owner[order]
    uniq, start = np.unique(ids, return_index=True)
    cov = np.add.reduceat(w[owner], start)
    cnt = np.diff(np.r_[start, len(ids)])
    mean_h = np.add.reduceat(hops, start) / cnt
    near = np.minimum.reduceat(np.where(hops <= 1, t[owner], math.inf), start)
    names = [g.node_name(int(i)) for i in uniq]
    cov_acc = dict(zip(names, cov.tolist()))
    near_t = {n: v for n, v in zip(names, near.tolist()) if math.isfinite(v)}
    dist_mean = dict(zip(names, mean_h.tolist()))
    road_owner = np.fromiter((x in road_hops for x in sites), dtype=bool, count=len(sites))

    def reach_of(c: str) -> tuple[np.ndarray, np.ndarray]:
        """(hops from ``c``, onset) of the road sites whose walk reaches ``c``."""
        cid = g._node_id.get(c)
        if cid is None:
            return np.zeros(0, np.int64), np.zeros(0)
        lo, hi = np.searchsorted(ids, cid), np.searchsorted(ids, cid, side="right")
        o = owner[lo:hi]
        keep = road_owner[o]
        return hops[lo:hi][keep], t[o[keep]]

    return cov_acc, dist_mean, near_t, reach_of


def _minutes(sec: float) -> str:
    """A duration as a duty officer reads it.

    >>> _minutes(6360), _minutes(2700)
    ('1 h 46 min', '45 min')
    """
    m = round(sec / 60)
    return f"{m // 60} h {m % 60} min" if m >= 60 else f"{m} min"


def _slow_stations(members: list[int], s: Symptoms, g: AssetGraph) -> dict[str, tuple[float, str, int, int, float]]:
    """Storm-water stations whose catchment's ponding outlasted this group's rain by ``LINGER_S``
    and receded slowly (:func:`~cityvitals.diagnose.group.drains_slowly`): station -> (longest
    linger in seconds, its low spot, ponding alerts that drained slowly, ponding alerts, seconds
    its gauge took from warning to clear or NaN).

    The ponding may sit in another group (a puddle on a jammed road is a traffic incident):
    it is still evidence about the station the rain overwhelmed.
    """
    by_cat: dict[str, list[tuple[bool, float, int]]] = {}
    for p, _, linger, cat in ponding_after_rain(s, g, np.asarray(members)):
        by_cat.setdefault(cat, []).append((drains_slowly(s, p, linger), linger, p))
    out: dict[str, tuple[float, str, int, int, float]] = {}
    for cat, rows in by_cat.items():
        slow, linger, p = max(rows)
        if not slow:
            continue
        for st in g.parents.get(cat, ()):
            if g.type_of.get(st) == "drainage_pumping_station":
                out[st] = (linger, s.asset[p], sum(x for x, _, _ in rows), len(rows), float(s.recede[p]))
    return out


REPORT_SEEN_M = 1000.0  # a flooding report this close to a ponding gauge describes that ponding


def _gauged_spots(alerts: list[int], s: Symptoms, g: AssetGraph) -> dict[str, tuple[float, float]]:
    """Low spots of the group whose ponding gauge alarms -> their place."""
    return {s.asset[i]: (s.x[i], s.y[i]) for i in alerts
            if s.kind[i] in PONDING_KINDS and s.asset[i] and g.type_of.get(s.asset[i]) == "low_spot"
            and not np.isnan(s.x[i])}


def _near_any(x: float, y: float, places: dict[str, tuple[float, float]]) -> bool:
    return not np.isnan(x) and any(math.hypot(x - px, y - py) <= REPORT_SEEN_M for px, py in places.values())


def _name(g: AssetGraph, a: str) -> str:
    n = g.name_of.get(a)
    return f"{n} ({a})" if n and n != a and a not in n else (n or a)


def rank_group(members: list[int], s: Symptoms, g: AssetGraph, ctx: Context,
               population: dict[str, float] | None = None) -> Diagnosis:
    members = sorted(members)
    m = np.asarray(members)
    nonh = [i for i in members if not s.health[i]]
    alerts = [i for i in nonh if s.origin[i] == "alert"]
    reports = [i for i in members if s.origin[i] == "report"]
    health = [i for i in members if s.health[i]]
    sensors = sorted({s.source[i] for i in members if s.origin[i] == "alert" and not s.indicator[i]})
    alert_sensors = sorted({s.source[i] for i in alerts if not s.indicator[i]})
    indicators = [i for i in alerts if s.indicator[i]]
    kinds = {s.kind[i] for i in alerts if s.kind[i]}
    t_min = float(s.t0[m].min())
    t_max = float(s.t1[m].max())
    doms = Counter(s.domain[i] for i in nonh) or Counter(s.domain[i] for i in members)
    domain = doms.most_common(1)[0][0]
    level = int(s.level[np.asarray(nonh)].max()) if nonh else 1

    # ---- sites: assets with symptoms, communities with reports; weight by level
    site_w: dict[str, float] = {}
    site_t: dict[str, float] = {}
    for i in alerts:
        a = s.asset[i]
        if not a:
            continue
        w = s.level[i] / 3.0 * (0.5 if s.type[i] in WEAK_TYPES else 1.0)
        site_w[a] = max(site_w.get(a, 0.0), w)
        site_t[a] = min(site_t.get(a, math.inf), s.t0[i])
    for i in indicators:  # an area's indicator weighs like its alert level, placed on the unit
        u = s.unit[i]
        if u and u in g.type_of:
            site_w[u] = max(site_w.get(u, 0.0), s.level[i] / 3.0)
            site_t[u] = min(site_t.get(u, math.inf), s.t0[i])
    # a flooding report near a gauged spot is a citizen seeing that same water, not another place
    seen_at = _gauged_spots(alerts, s, g) if doms.most_common(1)[0][0] == "drainage" else {}
    for i in reports:
        u = s.unit[i]
        if u and u in g.type_of and not _near_any(s.x[i], s.y[i], seen_at):
            site_w[u] = max(site_w.get(u, 0.0), 0.4)
            site_t[u] = min(site_t.get(u, math.inf), s.t0[i])

    causes: list[Cause] = []
    road = domain == "road"
    fit = 0.0  # road groups: how completely the best single segment explains the queue (coverage x specificity)
    # ---- candidate assets
    cand: dict[str, None] = {}
    slow = _slow_stations(members, s, g) if domain in ("weather", "drainage") else {}
    if domain in ("weather", "air"):
        for a in site_w:
            if g.type_of.get(a) == "drainage_pumping_station":
                cand[a] = None
    elif road:
        for a in site_w:
            if g.type_of.get(a) == "road_segment":
                for b in g.road_hops(a, 1):
                    cand[b] = None
            for p in g.parents.get(a, ()):
                cand[p] = None
    else:
        for a in site_w:
            for b in g.ancestors(a, 4):
                cand[b] = None
    cand.update(dict.fromkeys(slow))
    allowed = DOMAIN_ASSETS.get(domain, set())
    cand = {c: None for c in cand if g.type_of.get(c) in allowed}
    spatial = domain in SPATIAL_DOMAINS and domain not in ("road", "drainage")
    if spatial:  # point sources: the asset of an affected sensor, judged by distance and strength
        cand = {a: None for a in site_w if g.type_of.get(a) in allowed}
    site_xy = {}
    for i in alerts:
        if s.asset[i] and not np.isnan(s.x[i]):
            site_xy.setdefault(s.asset[i], (s.x[i], s.y[i]))
    for i in reports:
        if not np.isnan(s.x[i]):
            site_xy.setdefault(f"@{s.ref[i]}", (s.x[i], s.y[i]))
    total_w = sum(site_w.values()) or 1.0
    road_hops = {a for a in site_w if road and g.type_of.get(a) == "road_segment"}
    own_by: dict[str, list[int]] = {}
    for i in alerts:
        if s.asset[i]:
            own_by.setdefault(s.asset[i], []).append(i)
    # coverage accumulated from the sites up in one pass over arrays, not candidate by site
    cov_acc, dist_mean, near_t, reach_of = _accumulate(g, site_w, site_t, road_hops)
    if not spatial and not road:
        for c in cand:  # a supplier of the candidate reacting to it counts half
            for b, h in g.ancestors(c, 2).items():
                if h > 0 and b in site_w:
                    cov_acc[c] = cov_acc.get(c, 0.0) + 0.5 * site_w[b]
    if len(cand) > MAX_CANDIDATES and not spatial:
        keep = sorted(cand, key=lambda c: (-TYPE_PRIOR.get(g.type_of.get(c, ""), 0.5) * cov_acc.get(c, 0.0) ** 2, c))
        cand = {c: None for c in keep[:MAX_CANDIDATES]}
    for c in cand:
        ctype = g.type_of.get(c, "")
        prior = TYPE_PRIOR.get(ctype, 0.5)
        own = own_by.get(c, [])
        own_level = max((s.level[i] for i in own), default=0) / 3.0
        if spatial:
            cxy = site_xy.get(c) or g.xy.get(c)
            num = den = 0.0
            for site, xy in site_xy.items():
                w = site_w.get(site, 0.4)
                d = math.hypot(xy[0] - cxy[0], xy[1] - cxy[1]) if cxy else 1e9
                num += w * math.exp(-d / 400.0)
                den += w
            cov = num / den if den else 0.0
            occ = len(own) / max(len(alerts), 1)
            t_c = min((s.t0[i] for i in own), default=t_max)
            timing = math.exp(-max(0.0, t_c - t_min) / 1800.0)
            score = prior * cov * (0.4 + 0.6 * own_level) * (0.6 + 0.4 * timing) * (0.7 + 0.3 * occ)
            ev = [f"closest to the strongest readings ({cov:.0%} of the evidence weighted by distance)"]
            if own:
                ev.append(f"its own sensors alarm ({len(own)} alert{'s' if len(own) > 1 else ''}, level {int(own_level * 3)})")
            if timing > 0.8 and len(site_xy) > 1:
                ev.append("its readings rose first")
            causes.append(Cause(c, "asset", score, ev, ctype, _name(g, c)))
            continue
        if c in slow:  # its catchment holds water the rain no longer explains: it is not pumping it away
            linger, spot, n_slow, n_pond, recede = slow[c]
            gauges = sorted(set(g.monitored_below(c, set(PONDING_KINDS), 4)))
            wet = sum(ctx.affected_during(x, t_min, t_max) for x in gauges)
            longer = min(1.0, linger / (4 * LINGER_S))  # the longer the water stays, the surer
            causes.append(Cause(c, "asset", prior * SLOW_DRAINAGE * (0.8 + 0.2 * longer), [
                (f"ponding at {_name(g, spot)} in its catchment stayed {_minutes(linger)} after the rain eased "
                 f"(a draining catchment recedes within {_minutes(LINGER_S)})"),
                *([f"its gauge took {_minutes(recede)} to fall from warning to clear (a healthy spot: under "
                   f"{_minutes(RECEDE_S)})"] if not math.isnan(recede) else []),
                f"{n_slow} of {n_pond} ponding alerts in its catchment outlasted the rain that way",
                *([f"{wet} of {len(gauges)} level gauges it drains show symptoms"] if gauges else [])], ctype, _name(g, c)))
            continue
        cov = min(1.0, cov_acc.get(c, 0.0) / total_w)
        if cov <= 0:
            continue
        if road:
            below = g.road_monitored(c, kinds, 3)
        else:
            below = sorted(set(g.monitored_below(c, kinds, 4))) if kinds else []
        hit = sum(ctx.affected_during(x, t_min, t_max) for x in below)
        spec = hit / len(below) if below else 0.5
        if road:
            fit = max(fit, cov * spec)
        t_c = min((s.t0[i] for i in own), default=math.inf)
        if not math.isfinite(t_c):
            t_c = near_t.get(c, t_max)
        timing = math.exp(-max(0.0, t_c - t_min) / 1800.0)
        score = prior * cov ** 2 * (0.3 + 0.7 * spec) * (0.6 + 0.4 * timing) * (0.6 + 0.4 * own_level)
        if road and c in dist_mean:
            score *= 1.0 / (1.0 + 0.5 * dist_mean[c])
            tau = _concordance(*reach_of(c))
            score *= 0.3 + 0.7 * tau  # queues spread outwards from the blockage
        if domain in ("weather", "air"):  # a plant failing under the rain: its own distress against the others'
            score = prior * (0.3 + 0.7 * own_level) * (0.5 + 0.5 * spec) * 0.8
        ev = [f"explains {cov:.0%} of the affected places" + (f" ({len(site_w)} places)" if len(site_w) > 1 else "")]
        if below:
            ev.append(f"{hit} of {len(below)} sensors that depend on it show symptoms")
        if own:
            ev.append(f"its own sensors alarm ({len(own)} alert{'s' if len(own) > 1 else ''})")
        if timing > 0.8 and len(site_w) > 1:
            ev.append("symptoms near it started first")
        causes.append(Cause(c, "asset", score, ev, ctype, _name(g, c)))

    # ---- sensor fault: one sensor wrong while its peers are fine
    n_sens = len(alert_sensors) or len({s.source[i] for i in health})
    if n_sens == 1 and not reports and not indicators:  # an indicator is an area's aggregate, never one sensor
        sid = (alert_sensors or [s.source[i] for i in health])[0]
        kind = g.sensor_kind.get(sid)
        asset = g.sensor_asset.get(sid)
        peers = set(g.sensors_on.get(asset, ())) if asset else set()
        for p in (g.parents.get(asset, ()) if asset else ()):
            for sib in g.children.get(p, ()):
                peers.update(g.sensors_on.get(sib, ()))
        peers = {p for p in peers if p != sid and g.sensor_kind.get(p) == kind}
        calm = sum(not ctx.affected_during(p, t_min, t_max) for p in peers)
        sf = 0.45
        ev = []
        if health:
            sf += 0.35
            ev.append("sensor-health findings: " + ", ".join(sorted({s.type[i].split(':', 1)[1] for i in health})))
        if alerts and all(s.type[i] in WEAK_TYPES for i in alerts):
            sf += 0.2
            ev.append("only pattern changes, no threshold crossed")
        if peers:
            sf += 0.25 * calm / len(peers)
            ev.append(f"{calm} of {len(peers)} {kind} sensors nearby in the same network read normally")
        else:
            sf -= 0.1
            ev.append("no peer sensor to compare with")
        if any(s.type[i] == "threshold" and s.level[i] >= 3 for i in alerts):
            sf -= 0.15
        causes.append(Cause(SENSOR_FAULT, "sensor_fault", max(sf, 0.02), ev or ["one sensor alone"], name=f"sensor {sid}"))
    else:
        frac = len(health) / max(len(members), 1)
        causes.append(Cause(SENSOR_FAULT, "sensor_fault", 0.02 + 0.1 * frac,
                            [f"{len(alert_sensors)} sensors, {len(indicators)} indicator series and {len(reports)} reports agree"
                             if indicators else f"{len(alert_sensors)} sensors and {len(reports)} reports agree"]))
    # ---- weather
    if domain in ("weather", "air"):
        wx = 0.6 if any(c.kind == "asset" for c in causes) else 0.9
        wx *= min(1.0, (len(alert_sensors) - 1) / 3.0) if len(alert_sensors) < 4 and not indicators else 1.0
        wx = max(wx, 0.03)
        causes.append(Cause(WEATHER, "weather", wx, [f"{len(alert_sensors)} {'/'.join(sorted(kinds)) or domain} sensors across the city"]))
    elif domain in ("drainage", "road") and ctx.raining(t_min, t_max):
        # rain slows every road a little at once; a queue that one blockage explains is not the weather
        ev = ["rainfall alerts at the same time"]
        if fit >= 0.5:
            ev.append(f"but one blockage explains {fit:.0%} of the slowed roads, all that depend on it being slow")
        causes.append(Cause(WEATHER, "weather", 0.25 * (1.0 - 0.9 * fit), ev))
    else:
        causes.append(Cause(WEATHER, "weather", 0.01, ["no weather signal at the time"]))
    causes.append(Cause(UNKNOWN, "unknown", 0.08, ["nothing else explains the pattern well"]))
    tot = sum(c.score for c in causes) or 1.0
    for c in causes:
        c.score = c.score / tot
    causes.sort(key=lambda c: (-c.score, c.cause))

    # ---- type, units, title
    top = causes[0]
    if top.kind == "sensor_fault":
        typ = "sensor_fault"
    elif domain == "weather":
        wk = Counter(s.kind[i] for i in alerts if s.kind[i]).most_common(1)
        typ = WEATHER_TYPE.get(wk[0][0], "severe_weather") if wk else "severe_weather"
    elif domain == "water" and kinds and kinds <= {"turbidity", "residual_chlorine"}:
        typ = "water_quality"
    elif domain == "power" and not any(s.type[i] == "power_outage" for i in reports):
        typ = "power_overload"
    else:
        typ = INCIDENT_TYPE.get(domain, "unknown")
    units = {s.unit[i] for i in members if s.unit[i]}
    if top.kind == "asset":
        units.update(a for a in g.descendants(top.cause, 4) if g.type_of.get(a) == "community")
        if g.unit_of.get(top.cause):
            units.add(g.unit_of[top.cause])
    units_l = sorted(u for u in units if u)
    where = top.name if top.kind == "asset" else (f"{len(units_l)} units" if units_l else "")
    title = f"{typ.replace('_', ' ')}: suspected {top.cause if top.kind != 'asset' else where}, {top.score:.0%}"
    return Diagnosis(members, typ, causes[:6], level, units_l, sensors, t_min, t_max,
                     bool(s.open[m].any()), title)


def _signature(members: list[int], s: Symptoms) -> bytes:
    """What a group's ranking depends on from its own symptoms: which, when, how strong, still open.

    A digest of the members' refs and arrays: the storm's group has thousands of members and
    a set of tuples cost a fifth of an update.
    """
    m = np.asarray(members, dtype=np.int64)
    h = hashlib.blake2b(digest_size=16)
    h.update("\x1f".join(s.ref[i] for i in members).encode())
    for arr in (s.t0[m], s.t1[m], s.open[m], s.level[m]):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.digest()


def diagnose_symptoms(s: Symptoms, g: AssetGraph, labels: np.ndarray,
                      population: dict[str, float] | None = None, *, min_reports: int = 2,
                      cache: dict | None = None) -> list[Diagnosis]:
    """One diagnosis per group; groups of a single report are left out (one call is not an incident).

    ``cache`` (a dict the caller keeps between updates) makes an update re-rank only the
    groups that new or changed symptoms touched: a group whose symptoms are exactly those of
    the last update keeps its ranking. Why that is enough: a group's causes follow from its
    own symptoms; the rest of the picture only nudges the specificity of its candidates,
    and that is refreshed the next time the group changes.
    """
    ctx = make_context(s)
    fresh: dict = {}
    ponding = _signature(np.flatnonzero(np.isin(np.asarray(s.kind, dtype=object), PONDING_KINDS)).tolist(), s) \
        if cache is not None else b""
    order = np.argsort(labels, kind="stable")
    bounds = np.r_[0, np.flatnonzero(np.diff(labels[order])) + 1, len(order)]
    out = []
    for a, b in itertools.pairwise(bounds):
        members = order[a:b].tolist()
        if not members:
            continue
        if all(s.origin[i] == "report" for i in members) and len(members) < min_reports:
            continue
        if cache is None:
            out.append(rank_group(members, s, g, ctx, population))
            continue
        sig = _signature(members, s)
        if ponding and any(s.kind[i] == "rainfall" for i in members):  # its station evidence is the city's ponding
            sig += ponding
        hit = cache.get(sig)
        d = replace(hit, members=sorted(members)) if hit is not None else rank_group(members, s, g, ctx, population)
        fresh[sig] = d
        out.append(d)
    if cache is not None:
        cache.clear()
        cache.update(fresh)
    return out
