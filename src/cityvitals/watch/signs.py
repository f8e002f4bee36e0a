"""``watch_signs``: level crossings of indicator series (``sign_values``) become alerts.

Why here and not only in the signs stage: a vital sign crossing into warning for a district
(PM2.5 1-h mean, rainfall in the last hour, water-pressure compliance) is something a duty
officer must see in the same alert list, with the same lifecycle (one alert per source and
type, acknowledge, auto-resolve, escalation) as a sensor alert. Each series is one
indicator in one spatial unit; its alert source is ``indicator:unit`` (for example
``env.pm25:310101``), type ``threshold``.

The threshold detector runs on the values with the catalogue's levels (direction, plain
numeric bounds) and the indicator's ``min_duration``. Indicators whose levels are not plain
numbers (bands, parameters by zone or season, categorical) are watched on the level the
signs stage already gave each window (thresholds 1, 2, 3 on that level), so every
indicator with levels is covered. Windows already seen for a series are skipped, so
recomputed windows do not count twice; the watermark is the rows' ``computed_at``.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from typing import Callable

import numpy as np
import polars as pl

from cityvitals.watch.alerts import AlertManager, AlertPolicy, Observation, utcnow
from cityvitals.watch.threshold import ThresholdDetector

STATE_NAME = "signs"


def _load(blob: bytes | None) -> tuple[list[str], ThresholdDetector, np.ndarray]:
    if not blob:
        return [], ThresholdDetector(), np.zeros(0, dtype=np.int64)
    data = np.load(io.BytesIO(blob), allow_pickle=False)
    ids = json.loads(bytes(data["ids"]).decode())
    return ids, ThresholdDetector.from_bytes(bytes(data["det"])), data["seen"]


def _dump(ids: list[str], det: ThresholdDetector, seen: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, ids=np.frombuffer(json.dumps(ids).encode(), dtype=np.uint8),
             det=np.frombuffer(det.to_bytes(), dtype=np.uint8), seen=seen)
    return buf.getvalue()


def _levels_by_indicator(catalog) -> dict[str, tuple[list[float], str, int, bool]]:
    """indicator -> (levels, direction, min_duration s, on_values); on_values False: watch the stored level."""
    from cityvitals.watch.catalog import indicator_levels

    out = {}
    for ind in catalog.values():
        if not ind.thresholds:
            continue
        got = indicator_levels(ind)
        dur = int(ind.min_duration.total_seconds())
        out[ind.id] = (got[0], got[1], dur, True) if got else ([1.0, 2.0, 3.0], "higher", 0, False)
    return out


def watch_signs(
    store, *, policy: AlertPolicy | None = None, clock: Callable[[], datetime] = utcnow, catalog=None,
) -> dict:
    """Watch indicator values computed since the last run; returns counts of rows, series and alert changes."""
    if catalog is None:
        from cityvitals.signs import load_catalog

        catalog = load_catalog()
    watermark, blob = store.alerts.get_watch_state(STATE_NAME)
    ids, det, seen = _load(blob)
    df = store.frame(
        """SELECT indicator, unit_code, epoch(window_end)::BIGINT AS t, value, level, computed_at
           FROM sign_values WHERE computed_at > $wm ORDER BY window_end, indicator, unit_code""",
        {"wm": watermark or datetime(1, 1, 1, tzinfo=timezone.utc)},
    )
    result = {"rows": df.height, "series": 0, "alerts": {}}
    if df.height == 0:
        return result
    new_wm = df["computed_at"].max()
    levels = _levels_by_indicator(catalog)
    df = df.filter(pl.col("indicator").is_in(list(levels)))
    mgr = AlertManager(store, policy or AlertPolicy(), clock)
    if df.height:
        df = df.with_columns((pl.col("indicator") + ":" + pl.col("unit_code")).alias("source"))
        new = sorted(set(df["source"].unique().to_list()) - set(ids))
        first_new = len(ids)
        ids.extend(new)
        seen = np.concatenate([seen, np.full(len(new), np.iinfo(np.int64).min, dtype=np.int64)])
        for i, src in enumerate(new, start=first_new):  # a handful per indicator and unit: configuration, not a hot path
            lv, direction, dur, _on_values = levels[src.split(":", 1)[0]]
            det.set_levels([i], lv, direction, dur)
        pos = pl.DataFrame({"source": ids, "sidx": np.arange(len(ids), dtype=np.int64)})
        df = df.join(pos, on="source", how="left")
        on_values = df["indicator"].map_elements(lambda k: levels[k][3], return_dtype=pl.Boolean)
        x = np.where(on_values.to_numpy(), df["value"].fill_null(np.nan).to_numpy(), df["level"].to_numpy().astype(np.float64))
        s = df["sidx"].to_numpy()
        t = df["t"].to_numpy().astype(np.int64)
        keep = t > seen[s]
        s, t, x = s[keep], t[keep], x[keep]
        np.maximum.at(seen, s, t)
        det.update_many(s, t, x)
        touched = np.unique(s)
        last_t = np.full(len(ids), 0, dtype=np.int64)
        np.maximum.at(last_t, s, t)
        open_pairs = {(a["source"], a["type"]) for a in store.alerts.open_alerts()}
        obs = []
        for i in touched:
            lvl = int(det.level[i])
            at = datetime.fromtimestamp(int(last_t[i]), tz=timezone.utc)
            if lvl > 0:
                obs.append(Observation(ids[i], "threshold", lvl, at, f"{ids[i]}: {det.explain(lvl / 3, series=int(i))}"))
            elif (ids[i], "threshold") in open_pairs:  # clear since the level dropped, and still clear now
                since = datetime.fromtimestamp(int(min(det.since[i], last_t[i])), tz=timezone.utc)
                obs += [Observation(ids[i], "threshold", 0, since), Observation(ids[i], "threshold", 0, at)]
        result["alerts"] = mgr.observe(obs)
        result["series"] = int(touched.size)
    with store.transaction() as con:
        store.alerts.put_watch_state(con, STATE_NAME, new_wm, _dump(ids, det, seen), clock())
    return result
