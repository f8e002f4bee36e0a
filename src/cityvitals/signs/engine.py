"""Stage ``signs`` at its edge: read what is new, compute the windows it touches, store.

Incremental by construction: a run reads the readings ingested since the last run (by
``ingested_at``), finds the (indicator, unit, window) keys they touch, recomputes exactly
those windows from *all* stored readings of the window, then the derived indicators on
the same keys, the levels of the touched series (resumed from the stored trigger state),
the roll-ups of the touched ancestors, and a health snapshot. Recomputing a window from
its full contents is what makes an incremental run equal a full recompute.

Event time: the watermark is the latest reading time seen by earlier runs. A window is
closed once ``window_end + lateness <= watermark``; readings that arrive for closed
windows are stored by ingest but not applied here — they are counted (``late``) and a
``recompute`` over their period includes them.

Runs are idempotent (values are replaced by key) and the state is written last, so a run
interrupted half way is simply repeated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import polars as pl

from cityvitals.errors import InputError
from cityvitals.signs.catalog import LEVELS, Catalog, Indicator, load_catalog
from cityvitals.signs.dense import partition
from cityvitals.signs.functions import evaluate, input_keys
from cityvitals.signs.health import health_index
from cityvitals.signs.levels import assign_levels
from cityvitals.signs.rollup import rollup
from cityvitals.signs.session import SignsSession
from cityvitals.signs.windows import US, bucket_expr, expand_windows, window_values
from cityvitals.store.duck.signs import from_us

KEYS = ["unit_code", "window_start"]
VALUE_COLS = ["indicator", "unit_code", "window_start", "window_end", "value", "level", "schmitt", "n", "direct"]
CATEGORICAL = pl.Categorical  # unit codes and indicator ids: integer keys in joins and groups (see store/duck/signs.py)
_EMPTY_KEYS = pl.DataFrame(schema={"unit_code": CATEGORICAL, "window_start": pl.Int64})


@dataclass
class SignsReport:
    """What one run did."""

    mode: str
    readings: int = 0
    values: int = 0
    rolled_up: int = 0
    late: dict[str, int] = field(default_factory=dict)
    indicators: list[str] = field(default_factory=list)
    no_source: list[str] = field(default_factory=list)
    watermark: str | None = None
    health_units: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "mode": self.mode, "readings": self.readings, "values": self.values, "rolled_up": self.rolled_up,
            "late_readings": sum(self.late.values()), "late_by_indicator": self.late, "indicators": self.indicators,
            "no_source_yet": self.no_source, "watermark": self.watermark, "health_units": self.health_units,
            "seconds": round(self.seconds, 3),
        }


def _us(td: timedelta) -> int:
    return int(td.total_seconds() * US)


def _to_us(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int((dt - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(microseconds=1))


def _touched(minutes: pl.DataFrame, ind: Indicator, off: int, *, watermark: int | None = None,
             start: int | None = None, end: int | None = None) -> tuple[pl.DataFrame, int]:
    """Windows of ``ind`` touched by readings summarised per (kind, unit, minute); late count."""
    m = minutes.filter(pl.col("kind").is_in(list(ind.kinds)))
    if m.is_empty():
        return _EMPTY_KEYS, 0
    m = m.with_columns(bucket_expr(pl.col("minute"), ind, off).alias("bucket"), pl.int_range(pl.len()).alias("_row"))
    w = expand_windows(m, ind)
    late = 0
    if watermark is not None:
        closed = pl.col("window_start") + _us(ind.window.size) + _us(ind.lateness) <= watermark
        late_rows = w.filter(closed)["_row"].unique()
        late = int(m.filter(pl.col("_row").is_in(late_rows.implode()))["n"].sum()) if len(late_rows) else 0
        w = w.filter(~closed)
    if start is not None:
        w = w.filter(pl.col("window_start") >= start)
    if end is not None:
        w = w.filter(pl.col("window_start") < end)
    return w.select(KEYS).unique(), late


def _param_columns(part: pl.DataFrame, ind: Indicator, cat: Catalog, units: pl.DataFrame) -> pl.DataFrame:
    """One ``p_<name>`` column per threshold parameter, resolved per row (unit, season, day/night)."""
    if not ind.params:
        return part
    off = int(cat.utc_offset_hours * 3600 * US)
    local = (pl.col("window_start") + off).cast(pl.Datetime("us"))
    for name, spec in ind.params.items():
        if not isinstance(spec, dict):
            part = part.with_columns(pl.lit(float(spec)).alias(f"p_{name}"))
            continue
        values = {str(k): float(v) for k, v in (spec.get("values") or {}).items()}
        by = spec.get("by")
        if by == "season":
            seasons = cat.seasons
            key = local.dt.month().replace_strict(seasons, default=None, return_dtype=pl.String)
        elif by == "day_night":
            h = local.dt.hour()
            key = pl.when((h >= 6) & (h < 22)).then(pl.lit("day")).otherwise(pl.lit("night"))
        else:  # a property of the unit, e.g. its GB 3096 zone class
            prop = units.select("unit_code", pl.col("props").str.json_path_match(f"$.{by}").alias(f"_prop_{name}"))
            part = part.join(prop, on="unit_code", how="left")
            key = pl.col(f"_prop_{name}")
        part = part.with_columns(key.replace_strict(values, default=float(spec["default"]), return_dtype=pl.Float64).alias(f"p_{name}"))
    return part


CONTEXT_LOOKBACK = timedelta(days=2)
"""How far back a series' trigger state is resumed from; after a longer gap it restarts at normal."""


def _with_levels(repo, cat: Catalog, frame: pl.DataFrame, units: pl.DataFrame, *, rolled: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(levels of the rows in ``frame``, re-levelled stored rows after them in each series)."""
    cols = ["indicator", "unit_code", "window_start", "window_end", "value", "n", "direct"]
    if frame.is_empty():
        return frame, frame
    lookback = _us(CONTEXT_LOOKBACK)
    lo = int(frame["window_start"].min())
    ids = frame["indicator"].unique().cast(pl.String).to_list()
    direct = None if not rolled else False
    if not repo.any_values_since(lo - lookback, ids, direct):  # nothing stored to resume from or to re-level
        out = []
        for iid, part in partition(frame.select(cols), "indicator").items():
            ind = cat.get(str(iid))
            if ind is None:
                continue
            share = rolled and ind.rollup == "share_at_level"
            conds = ind.rollup_thresholds if share else ind.thresholds
            res = assign_levels(_param_columns(part, ind, cat, units), conds, hysteresis=0.0 if share else ind.hysteresis,
                                min_windows=ind.min_windows)
            out.append(res.select(VALUE_COLS))
        allv = pl.concat(out, how="vertical_relaxed") if out else frame.clear()
        return allv, allv.clear()
    rows = frame.select(cols).with_columns(pl.lit(False).alias("ctx"), pl.lit(None, pl.Int8).alias("ctx_schmitt"),
                                           pl.lit(False).alias("_after"))
    m = pl.DataFrame({"indicator": list(cat), "m": [max(1, i.min_windows - 1) for i in cat.values()]}).cast({"indicator": CATEGORICAL})
    series = frame.group_by("indicator", "unit_code").agg(pl.col("window_start").min().alias("since")).join(m, on="indicator")
    before, after = repo.series_context(series, lookback)
    after = after.join(frame.select("indicator", "unit_code", "window_start"), on=["indicator", "unit_code", "window_start"], how="anti")
    rows = pl.concat([
        rows,
        after.select(cols).with_columns(pl.lit(False).alias("ctx"), pl.lit(None, pl.Int8).alias("ctx_schmitt"), pl.lit(True).alias("_after")),
        before.select(cols).with_columns(pl.lit(True).alias("ctx"), before["schmitt"].cast(pl.Int8).alias("ctx_schmitt"),
                                         pl.lit(False).alias("_after")),
    ], how="vertical_relaxed")
    out = []
    for iid, part in partition(rows, "indicator").items():
        ind = cat.get(str(iid))
        if ind is None:
            continue
        share = rolled and ind.rollup == "share_at_level"
        conds = ind.rollup_thresholds if share else ind.thresholds
        part = _param_columns(part, ind, cat, units)
        res = assign_levels(part, conds, hysteresis=0.0 if share else ind.hysteresis, min_windows=ind.min_windows)
        out.append(res.filter(~pl.col("ctx")).select(*VALUE_COLS, "_after"))
    if not out:
        return frame.clear(), frame.clear()
    allv = pl.concat(out, how="vertical_relaxed")
    return allv.filter(~pl.col("_after")).drop("_after"), allv.filter(pl.col("_after")).drop("_after")


def _write(repo, pair: tuple[pl.DataFrame, pl.DataFrame], replace: bool) -> int:
    fresh, after = pair
    return repo.write_values(fresh, replace=replace) + repo.write_values(after, replace=True)


def _store_windows(repo, cat: Catalog, touched: dict[str, pl.DataFrame], *,
                   ingested_until: datetime | None = None) -> dict[str, pl.DataFrame]:
    """Values of the touched windows of every sensor-fed indicator, from *all* their stored
    readings: one scan of the readings for every indicator (each kind over the widest range
    that needs it, only the touched units), then ``window_values``. ``ingested_until``: only
    readings stored by then (the live session's bound, see ``signs.session``)."""
    sensor_inds = [i for i in cat.computable() if i.input_kind == "sensor" and touched.get(i.id) is not None
                   and not touched[i.id].is_empty()]
    if not sensor_inds:
        return {}
    off = cat.utc_offset_hours
    spans = pl.DataFrame([
        (k, int(touched[i.id]["window_start"].min()), int(touched[i.id]["window_start"].max()) + _us(i.window.size),
         i.sensor_combine is not None)
        for i in sensor_inds for k in i.kinds
    ], schema={"kind": pl.String, "lo": pl.Int64, "hi": pl.Int64, "sensors": pl.Boolean}, orient="row").group_by(
        "kind", maintain_order=True).agg(pl.col("lo").min(), pl.col("hi").max(), pl.col("sensors").any())
    allu = pl.concat([touched[i.id]["unit_code"] for i in sensor_inds]).unique()
    by_kind = partition(repo.readings(spans, allu, ingested_until=ingested_until), "kind", include_key=False)
    out: dict[str, pl.DataFrame] = {}
    for ind in sensor_inds:
        parts = [by_kind[k] for k in ind.kinds if k in by_kind]
        if not parts:
            continue
        t = touched[ind.id]
        lo = int(t["window_start"].min())
        hi = int(t["window_start"].max()) + _us(ind.window.size)
        r = parts[0] if len(parts) == 1 else pl.concat(parts)
        ts = pl.col("ts").cast(pl.Datetime("us", "UTC")).cast(pl.Int64)
        r = r.filter((ts >= lo) & (ts < hi))  # the kind may have been read for a wider range
        out[ind.id] = window_values(r, ind, utc_offset_hours=off, only=t)
    return out


def _period_windows(cat: Catalog, readings: pl.DataFrame, between: tuple[int, int]) -> dict[str, pl.DataFrame]:
    """Values of every window starting in ``between`` (lo, hi µs) that has readings: a recompute's."""
    off = cat.utc_offset_hours
    by_kind = partition(readings, "kind", include_key=False)
    read_hi = dict(_read_spans(cat, between).select("kind", "hi").iter_rows())
    out: dict[str, pl.DataFrame] = {}
    for ind in cat.computable():
        if ind.input_kind != "sensor":
            continue
        parts = [by_kind[k] for k in ind.kinds if k in by_kind]
        if not parts:
            continue
        r = parts[0] if len(parts) == 1 else pl.concat(parts)
        hi = between[1] + _us(ind.window.size)
        if any(read_hi[k] > hi for k in ind.kinds if k in read_hi):  # the kind was read for a longer indicator
            r = r.filter(pl.col("ts").cast(pl.Datetime("us", "UTC")).cast(pl.Int64) < hi)
        out[ind.id] = window_values(r, ind, utc_offset_hours=off, between=between)
    return out


def _compute(store, cat: Catalog, windows: dict[str, pl.DataFrame], report: SignsReport, *, replace: bool = True,
             complete: bool = False) -> pl.DataFrame:
    """Level and store the sensor-fed windows' values (``windows``: indicator -> frame from
    ``window_values`` or ``windows_from``), compute the derived indicators on the same keys,
    roll every value up the tree; returns the keys written.

    Whoever computed the windows (a recompute, an incremental run reading the store, the
    live session's partials), everything from here on is this one function.
    ``replace=False``: the windows were deleted first (recompute), so values are inserted
    without looking for stored rows with the same key. ``complete``: every direct unit of
    each window is in ``windows`` (a recompute), so the roll-up reads none from the store.
    """
    repo = store.signs
    units = repo.unit_attributes()
    fresh: dict[str, pl.DataFrame] = {}
    for ind in cat.computable():
        if ind.input_kind == "sensor":
            v = windows.get(ind.id)
            if v is None:
                continue
        else:
            deps = ind.inputs()
            parts = [fresh[d].select(KEYS) for d in deps if d in fresh]
            if not parts:
                continue
            keys = input_keys(parts)
            inputs = {d: fresh[d].select(KEYS + ["value"]) for d in deps if d in fresh}
            missing = [d for d in deps if d not in fresh or fresh[d].height < keys.height]
            if missing:  # inputs not computed in this batch for some keys: read them from the store
                stored = repo.fetch_keys(keys.join(pl.DataFrame({"indicator": missing}, schema={"indicator": CATEGORICAL}), how="cross"))
                for d in missing:
                    st = stored.filter(pl.col("indicator") == d).select(KEYS + ["value"])
                    if d in inputs:
                        st = pl.concat([inputs[d], st.join(inputs[d], on=KEYS, how="anti")], how="vertical_relaxed")
                    inputs[d] = st
            pop = units.select("unit_code", pl.col("population").cast(pl.Float64))
            v = evaluate(ind, inputs, keys, pop)
        if not v.is_empty():
            fresh[ind.id] = v.with_columns(pl.lit(ind.id, CATEGORICAL).alias("indicator"))
            report.indicators.append(ind.id)
    if not fresh:
        return pl.DataFrame(schema={"indicator": CATEGORICAL, "unit_code": CATEGORICAL})
    direct = pl.concat(
        [f.select("indicator", "unit_code", "window_start", "window_end", "value", pl.col("n").cast(pl.Int64)) for f in fresh.values()],
        how="vertical_relaxed",
    ).with_columns(pl.lit(True).alias("direct"))
    direct_l = _with_levels(repo, cat, direct, units, rolled=False)
    report.values += _write(repo, direct_l, replace)

    closure = repo.closure()
    if closure.is_empty():
        return direct.select("indicator", "unit_code")
    # the roll-up needs every direct unit of each (indicator, window): read only the pairs
    # where the store holds more direct rows than this batch computed
    if complete:  # a recompute computed every direct unit of each of its windows
        wider = pl.DataFrame(schema={"indicator": CATEGORICAL, "window_start": pl.Int64})
    else:
        pairs = direct.group_by("indicator", "window_start").agg(pl.len().cast(pl.Int64).alias("fresh"))
        counts = repo.direct_counts(pairs)
        wider = pairs.join(counts, on=["indicator", "window_start"], how="left").filter(pl.col("stored") > pl.col("fresh"))
    mine = direct_l[0].select("indicator", "unit_code", "window_start", "window_end", "value", "level")
    rules = pl.DataFrame({
        "indicator": list(cat), "rule": [i.rollup for i in cat.values()], "rule_level": [i.rollup_level for i in cat.values()],
    }).cast({"rule_level": pl.Int8})
    attrs = units.select("unit_code", pl.col("population").cast(pl.Float64), pl.col("area_m2").cast(pl.Float64))
    if wider.is_empty():  # every rolled group is an ancestor of a unit computed here
        leaf = mine
        rolled = rollup(leaf, closure, attrs, rules)
    else:  # other units' stored values join in; keep only the ancestors of units computed here
        stored = repo.fetch_direct(wider.select("indicator", "window_start"))
        leaf = pl.concat([mine.join(wider, on=["indicator", "window_start"], how="anti"), stored.select(mine.columns)],
                         how="vertical_relaxed")
        anc = (
            direct.select("indicator", "unit_code", "window_start").join(wider.select("indicator", "window_start"), on=["indicator", "window_start"])
            .join(closure, on="unit_code").select("indicator", pl.col("ancestor").alias("unit_code"), "window_start").unique()
        )
        rolled = rollup(leaf, closure, attrs, rules)
        rolled = pl.concat([
            rolled.join(wider, on=["indicator", "window_start"], how="anti"),
            rolled.join(anc, on=["indicator", "unit_code", "window_start"], how="semi"),
        ], how="vertical_relaxed")
    # a unit with its own value in a window is not rolled up there
    inner = leaf.filter(pl.col("unit_code").is_in(rolled["unit_code"].unique().implode()))
    rolled = rolled.join(inner.select("indicator", "unit_code", "window_start"), on=["indicator", "unit_code", "window_start"],
                         how="anti").with_columns(pl.lit(False).alias("direct"))
    rolled_l = _with_levels(repo, cat, rolled, units, rolled=True)
    report.rolled_up += _write(repo, rolled_l, replace)
    return pl.concat([direct.select("indicator", "unit_code"), rolled.select("indicator", "unit_code")])


def _snapshot(store, cat: Catalog, at: datetime, unit_codes: list[str], report: SignsReport) -> None:
    if not unit_codes:
        return
    indices, explain = health_frames(store, cat, at, unit_codes)
    if not indices.is_empty():
        store.signs.write_health(at, indices, explain)
        report.health_units = indices["unit_code"].n_unique()


def compute_signs(store, start: datetime | None = None, end: datetime | None = None, *,
                  catalog: Catalog | None = None, snapshot: bool = True, session: SignsSession | None = None) -> SignsReport:
    """Compute the vital signs.

    Without ``start``/``end``: incrementally, for everything ingested since the last run
    (the first run computes everything). With them: ``recompute`` of that period.
    ``session``: a long-running process's memory of the windows' partials between runs
    (``signs.session``): the touched windows are combined from them instead of re-read
    from the store; every other step, and the result, is the same.
    """
    if start is not None or end is not None:
        return recompute(store, start, end, catalog=catalog)
    t0 = time.perf_counter()
    cat = catalog or load_catalog()
    repo = store.signs
    st = repo.state()
    last_ing = datetime.fromisoformat(st["last_ingested_at"]) if st.get("last_ingested_at") else None
    wm_prev = st.get("watermark_us")
    report = SignsReport("incremental", no_source=cat.no_source())
    if session is None:
        minutes, info = repo.reading_minutes(ingested_after=last_ing)
    else:  # the new rows themselves, read once: the session merges them
        session.begin(last_ing)
        minutes, info = session.read(repo, cat, last_ing)
    report.readings = int(info["n"] or 0)
    if report.readings == 0:
        report.watermark = from_us(wm_prev).isoformat() if wm_prev is not None else None
        report.seconds = time.perf_counter() - t0
        return report
    off = int(cat.utc_offset_hours * 3600 * US)
    touched = {}
    for ind in cat.computable():
        if ind.input_kind == "sensor":
            touched[ind.id], late = _touched(minutes, ind, off, watermark=wm_prev)
            if late:
                report.late[ind.id] = late
    if session is None:
        windows = _store_windows(repo, cat, touched)
    else:
        windows = session.windows(repo, cat, touched, until=info["max_ingested_at"], store_windows=_store_windows)
    written = _compute(store, cat, windows, report)
    wm = max(wm_prev if wm_prev is not None else -(2**62), int(info["max_ts_us"]))
    report.watermark = from_us(wm).isoformat()
    if snapshot:
        _snapshot(store, cat, from_us(wm), written["unit_code"].unique().to_list(), report)
    late_total = dict(st.get("late", {}))
    for k, n in report.late.items():
        late_total[k] = late_total.get(k, 0) + n
    mx = info["max_ingested_at"]
    repo.set_state({"last_ingested_at": mx.isoformat() if mx else st.get("last_ingested_at"), "watermark_us": wm, "late": late_total})
    if session is not None:
        session.advance(cat, wm)
    report.seconds = time.perf_counter() - t0
    return report


_MIN_US = -(2**62)
_MAX_US = 2**62


def _read_spans(cat: Catalog, between: tuple[int, int]) -> pl.DataFrame:
    """Per sensor kind: the readings a recompute of windows starting in [lo, hi) needs,
    [lo, hi + the longest window fed by the kind), and whether sensor ids are needed."""
    spans: dict[str, list] = {}
    for ind in cat.computable():
        if ind.input_kind != "sensor":
            continue
        hi = min(between[1] + _us(ind.window.size), _MAX_US)
        for k in ind.kinds:
            cur = spans.setdefault(k, [between[0], hi, False])
            cur[1] = max(cur[1], hi)
            cur[2] = cur[2] or ind.sensor_combine is not None
    return pl.DataFrame([(k, lo, hi, sens) for k, (lo, hi, sens) in sorted(spans.items())], orient="row",
                        schema={"kind": pl.String, "lo": pl.Int64, "hi": pl.Int64, "sensors": pl.Boolean})


def recompute(store, start: datetime | None = None, end: datetime | None = None, *, catalog: Catalog | None = None) -> SignsReport:
    """Rebuild exactly every window starting in [start, end) (open bounds = everything),
    from every stored reading including late ones, and the levels after it."""
    t0 = time.perf_counter()
    cat = catalog or load_catalog()
    repo = store.signs
    report = SignsReport("recompute", no_source=cat.no_source())
    if start is not None and end is not None and start >= end:
        raise InputError(f"--from {start.isoformat()} must be before --to {end.isoformat()}")
    between = (_to_us(start) if start is not None else _MIN_US, _to_us(end) if end is not None else _MAX_US)
    spans = _read_spans(cat, between)
    readings = repo.readings(spans) if not spans.is_empty() else None
    report.readings = readings.height if readings is not None else 0
    repo.delete_windows(start or datetime(1, 1, 2, tzinfo=timezone.utc), end or datetime(9999, 1, 1, tzinfo=timezone.utc))
    if report.readings:
        _compute(store, cat, _period_windows(cat, readings, between), report, replace=False, complete=True)
    report.seconds = time.perf_counter() - t0
    return report


# ---------------------------------------------------------------- health

STALE_WINDOWS = 3
"""A value counts in the health index for this many of its windows after its window ended."""


def stale_after(ind: Indicator) -> timedelta:
    """How long after its window ended an indicator's last value still counts."""
    return STALE_WINDOWS * ind.window.size


def _stale(cat: Catalog, factor: int = 1) -> pl.DataFrame:
    return pl.DataFrame({"indicator": list(cat), "stale": [factor * _us(stale_after(i)) for i in cat.values()]})


def health_frames(store, cat: Catalog, at: datetime, units: list[str] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(indices, explanation) at ``at`` from each indicator's last value that is not stale."""
    latest = store.signs.latest(at, _stale(cat), units)
    if latest.is_empty():
        return pl.DataFrame(schema={"unit_code": pl.String, "scope": pl.String, "value": pl.Float64}), pl.DataFrame()
    return health_index(latest, cat)


def _stale_rows(store, cat: Catalog, at: datetime, unit: str) -> list[dict]:
    """Indicators of ``unit`` whose last value (within 10 staleness limits) is too old to count."""
    older = store.signs.latest(at, _stale(cat, 10), [unit])
    if older.is_empty():
        return []
    limit = _stale(cat).cast({"indicator": older.schema["indicator"]})
    at_us = _to_us(at)
    old = older.join(limit, on="indicator").filter(pl.col("window_end") <= at_us - pl.col("stale")).sort("indicator")
    return [
        {"indicator": str(r["indicator"]), "value": r["value"], "level": LEVELS[r["level"]],
         "window_end": from_us(r["window_end"]).isoformat(), "age_s": (at_us - r["window_end"]) / US,
         "limit_s": r["stale"] / US}
        for r in old.iter_rows(named=True)
    ]


def health(store, unit: str | None = None, at: datetime | None = None, *, catalog: Catalog | None = None) -> dict:
    """The health index of ``unit`` (default: the root of the tree) at ``at``, per category
    and overall, with its explanation.

    ``at`` defaults to the watermark: the latest reading time the stage has seen, so
    every window that ended by then is complete (a sliding window still open at the
    watermark is not). Values whose window ended more than ``STALE_WINDOWS`` windows
    before ``at`` do not count; the result lists them under ``stale``.
    """
    cat = catalog or load_catalog()
    if at is None:
        wm = store.signs.state().get("watermark_us")
        if wm is None:
            raise InputError("no vital signs computed yet; run `cityvitals signs run` first")
        at = from_us(int(wm))
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    units = store.signs.unit_attributes()
    if unit is None:
        roots = units.sort("depth", "unit_code")
        if roots.is_empty():
            raise InputError("the store has no spatial units; give --unit")
        unit = roots["unit_code"][0]
    elif unit not in set(units["unit_code"].to_list()):
        raise InputError(f"unknown unit {unit!r}")
    indices, explain = health_frames(store, cat, at, [unit])
    if indices.is_empty():
        raise InputError(f"unit {unit!r} has no indicator values at {at.isoformat()} (stale or not computed)")
    cats = {r["scope"]: round(r["value"], 2) for r in indices.iter_rows(named=True) if r["scope"] != "overall"}
    overall = indices.filter(pl.col("scope") == "overall")["value"][0]
    rows = [
        {"scope": r["scope"], "indicator": r["indicator"], "category": r["category"], "level": LEVELS[r["level"]],
         "value": r["value"], "weight": r["weight"], "points": round(r["points"], 4)}
        for r in explain.filter(pl.col("unit_code") == unit).iter_rows(named=True)
    ]
    return {"unit": unit, "at": at.isoformat(), "index": round(overall, 2), "categories": cats, "explain": rows,
            "stale": _stale_rows(store, cat, at, unit)}
