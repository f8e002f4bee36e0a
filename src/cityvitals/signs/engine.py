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
from cityvitals.signs.functions import evaluate
from cityvitals.signs.health import health_index
from cityvitals.signs.levels import assign_levels
from cityvitals.signs.rollup import rollup
from cityvitals.signs.windows import US, bucket_expr, expand_windows, window_values
from cityvitals.store.duck.signs import from_us

KEYS = ["unit_code", "window_start"]
VALUE_COLS = ["indicator", "unit_code", "window_start", "window_end", "value", "level", "schmitt", "n", "direct"]
_EMPTY_KEYS = pl.DataFrame(schema={"unit_code": pl.String, "window_start": pl.Int64})


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


def _with_levels(repo, cat: Catalog, frame: pl.DataFrame, units: pl.DataFrame, *, rolled: bool) -> pl.DataFrame:
    """Levels for the rows in ``frame`` plus the stored rows after them in each series."""
    if frame.is_empty():
        return frame
    m = pl.DataFrame({"indicator": list(cat), "m": [max(1, i.min_windows - 1) for i in cat.values()]})
    series = frame.group_by("indicator", "unit_code").agg(pl.col("window_start").min().alias("since")).join(m, on="indicator")
    before, after = repo.series_context(series)
    cols = ["indicator", "unit_code", "window_start", "window_end", "value", "n", "direct"]
    after = after.join(frame.select("indicator", "unit_code", "window_start"), on=["indicator", "unit_code", "window_start"], how="anti")
    rows = pl.concat([
        frame.select(cols).with_columns(pl.lit(False).alias("ctx"), pl.lit(None, pl.Int8).alias("ctx_schmitt")),
        after.select(cols).with_columns(pl.lit(False).alias("ctx"), pl.lit(None, pl.Int8).alias("ctx_schmitt")),
        before.select(cols).with_columns(pl.lit(True).alias("ctx"), before["schmitt"].cast(pl.Int8).alias("ctx_schmitt")),
    ], how="vertical_relaxed")
    out = []
    for (iid,), part in rows.partition_by("indicator", as_dict=True).items():
        ind = cat.get(iid)
        if ind is None:
            continue
        share = rolled and ind.rollup == "share_at_level"
        conds = ind.rollup_thresholds if share else ind.thresholds
        part = _param_columns(part, ind, cat, units)
        res = assign_levels(part, conds, hysteresis=0.0 if share else ind.hysteresis, min_windows=ind.min_windows)
        out.append(res.filter(~pl.col("ctx")).select(VALUE_COLS))
    return pl.concat(out, how="vertical_relaxed") if out else frame


def _compute(store, cat: Catalog, touched: dict[str, pl.DataFrame], report: SignsReport) -> pl.DataFrame:
    """Compute, level and store every touched window; returns the keys written."""
    repo = store.signs
    off = cat.utc_offset_hours
    units = repo.unit_attributes()
    fresh: dict[str, pl.DataFrame] = {}
    for ind in cat.computable():
        if ind.input_kind == "sensor":
            t = touched.get(ind.id)
            if t is None or t.is_empty():
                continue
            lo = int(t["window_start"].min())
            hi = int(t["window_start"].max()) + _us(ind.window.size)
            r = repo.readings_for(list(ind.kinds), t["unit_code"], lo, hi)
            v = window_values(r, ind, utc_offset_hours=off, only=t)
        else:
            deps = ind.inputs()
            parts = [fresh[d].select(KEYS) for d in deps if d in fresh]
            if not parts:
                continue
            keys = pl.concat(parts).unique()
            stored = repo.fetch_keys(keys.join(pl.DataFrame({"indicator": deps}), how="cross"))
            inputs = {}
            for d in deps:
                st = stored.filter(pl.col("indicator") == d).select(KEYS + ["value"])
                if d in fresh:
                    fr = fresh[d].select(KEYS + ["value"])
                    st = pl.concat([fr, st.join(fr, on=KEYS, how="anti")], how="vertical_relaxed")
                inputs[d] = st
            pop = units.select("unit_code", pl.col("population").cast(pl.Float64))
            v = evaluate(ind, inputs, keys, pop)
        if not v.is_empty():
            fresh[ind.id] = v.with_columns(pl.lit(ind.id).alias("indicator"))
            report.indicators.append(ind.id)
    if not fresh:
        return pl.DataFrame(schema={"indicator": pl.String, "unit_code": pl.String})
    direct = pl.concat(
        [f.select("indicator", "unit_code", "window_start", "window_end", "value", pl.col("n").cast(pl.Int64)) for f in fresh.values()],
        how="vertical_relaxed",
    ).with_columns(pl.lit(True).alias("direct"))
    direct_l = _with_levels(repo, cat, direct, units, rolled=False)
    report.values += repo.write_values(direct_l)

    closure = repo.closure()
    if closure.is_empty():
        return direct.select("indicator", "unit_code")
    anc = (
        direct.select("indicator", "unit_code", "window_start").join(closure, on="unit_code")
        .select("indicator", pl.col("ancestor").alias("unit_code"), "window_start").unique()
    )
    leaf = repo.fetch_direct(direct.select("indicator", "window_start"))
    rules = pl.DataFrame({
        "indicator": list(cat), "rule": [i.rollup for i in cat.values()], "rule_level": [i.rollup_level for i in cat.values()],
    }).cast({"rule_level": pl.Int8})
    rolled = (
        rollup(leaf, closure, units.select("unit_code", pl.col("population").cast(pl.Float64), pl.col("area_m2").cast(pl.Float64)), rules)
        .join(anc, on=["indicator", "unit_code", "window_start"], how="semi")
        .join(leaf.select("indicator", "unit_code", "window_start"), on=["indicator", "unit_code", "window_start"], how="anti")
        .with_columns(pl.lit(False).alias("direct"))
    )
    rolled_l = _with_levels(repo, cat, rolled, units, rolled=True)
    report.rolled_up += repo.write_values(rolled_l)
    return pl.concat([direct.select("indicator", "unit_code"), rolled.select("indicator", "unit_code")])


def _snapshot(store, cat: Catalog, at: datetime, unit_codes: list[str], report: SignsReport) -> None:
    if not unit_codes:
        return
    indices, explain = health_frames(store, cat, at, unit_codes)
    if not indices.is_empty():
        store.signs.write_health(at, indices, explain)
        report.health_units = indices["unit_code"].n_unique()


def compute_signs(store, start: datetime | None = None, end: datetime | None = None, *,
                  catalog: Catalog | None = None, snapshot: bool = True) -> SignsReport:
    """Compute the vital signs.

    Without ``start``/``end``: incrementally, for everything ingested since the last run
    (the first run computes everything). With them: ``recompute`` of that period.
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
    minutes, info = repo.reading_minutes(ingested_after=last_ing)
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
    written = _compute(store, cat, touched, report)
    wm = max(wm_prev if wm_prev is not None else -(2**62), int(info["max_ts_us"]))
    report.watermark = from_us(wm).isoformat()
    if snapshot:
        _snapshot(store, cat, from_us(wm), written["unit_code"].unique().to_list(), report)
    late_total = dict(st.get("late", {}))
    for k, n in report.late.items():
        late_total[k] = late_total.get(k, 0) + n
    mx = info["max_ingested_at"]
    repo.set_state({"last_ingested_at": mx.isoformat() if mx else st.get("last_ingested_at"), "watermark_us": wm, "late": late_total})
    report.seconds = time.perf_counter() - t0
    return report


def recompute(store, start: datetime | None = None, end: datetime | None = None, *, catalog: Catalog | None = None) -> SignsReport:
    """Rebuild exactly every window starting in [start, end) (open bounds = everything),
    from every stored reading including late ones, and the levels after it."""
    t0 = time.perf_counter()
    cat = catalog or load_catalog()
    repo = store.signs
    report = SignsReport("recompute", no_source=cat.no_source())
    if start is not None and end is not None and start >= end:
        raise InputError(f"--from {start.isoformat()} must be before --to {end.isoformat()}")
    s_us = _to_us(start) if start is not None else None
    e_us = _to_us(end) if end is not None else None
    max_size = max((i.window.size for i in cat.computable()), default=timedelta(0))
    minutes, info = repo.reading_minutes(start=start, end=end + max_size if end is not None else None)
    report.readings = int(info["n"] or 0)
    repo.delete_windows(start or datetime(1, 1, 2, tzinfo=timezone.utc), end or datetime(9999, 1, 1, tzinfo=timezone.utc))
    off = int(cat.utc_offset_hours * 3600 * US)
    touched = {}
    for ind in cat.computable():
        if ind.input_kind == "sensor":
            touched[ind.id], _ = _touched(minutes, ind, off, start=s_us, end=e_us)
    _compute(store, cat, touched, report)
    report.seconds = time.perf_counter() - t0
    return report


# ---------------------------------------------------------------- health

def _stale(cat: Catalog) -> pl.DataFrame:
    """How long an indicator's last value counts for the health index: one window + one slide."""
    return pl.DataFrame({"indicator": list(cat), "stale": [_us(i.window.size + i.window.slide) for i in cat.values()]})


def health_frames(store, cat: Catalog, at: datetime, units: list[str] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    latest = store.signs.latest(at, _stale(cat), units)
    if latest.is_empty():
        return pl.DataFrame(schema={"unit_code": pl.String, "scope": pl.String, "value": pl.Float64}), pl.DataFrame()
    return health_index(latest, cat)


def health(store, unit: str | None = None, at: datetime | None = None, *, catalog: Catalog | None = None) -> dict:
    """The health index of ``unit`` (default: the root of the tree) at ``at`` (default: the
    end of the last computed window), per category and overall, with its explanation."""
    cat = catalog or load_catalog()
    if at is None:
        at = store.signs.last_window_end()
        if at is None:
            raise InputError("no vital signs computed yet; run `cityvitals signs run` first")
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
    return {"unit": unit, "at": at.isoformat(), "index": round(overall, 2), "categories": cats, "explain": rows}
