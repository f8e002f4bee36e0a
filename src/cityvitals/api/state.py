"""The state of many units at once, for the map: health index and level, readings counted.

Health comes from the signs stage when this install has it and values were computed; a
unit's *level* on the map is the worst level among the indicators in its health index,
so a red unit always has a red reason in its explanation. Until signs exist, the map is
coloured by the number of readings in the last hour (labelled as such, never as health).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from cityvitals.api.routers._common import rows


def health_at(ctx, at: datetime | None) -> datetime | None:
    """The moment health is shown for: ``at`` (default: the clock's now), but no later than the
    end of the last computed window (windows still open have no value yet)."""
    if not ctx.has_signs:
        return None
    last = ctx.store.signs.last_window_end()
    if last is None:
        return None
    return min(at if at is not None else ctx.clock(), last)


def health_of(ctx, codes: list[str], at: datetime | None) -> dict[str, dict]:
    """code -> {"index": 0-100, "level": 0-3} for units with current indicator values."""
    when = health_at(ctx, at)
    if when is None or not codes:
        return {}
    from cityvitals.signs.engine import health_frames

    indices, explain = health_frames(ctx.store, ctx.get_catalog(), when, codes)
    if indices.is_empty():
        return {}
    overall = indices.filter(pl.col("scope") == "overall")
    worst = explain.filter(pl.col("scope") == "overall").group_by("unit_code").agg(pl.col("level").max())
    df = overall.join(worst, on="unit_code", how="left")
    return {r["unit_code"]: {"index": round(r["value"], 1), "level": int(r["level"] or 0)} for r in df.iter_rows(named=True)}


def readings_count(ctx, layer: list[str], start: datetime, end: datetime) -> dict[str, int]:
    """Readings in [start, end) in each layer unit, counting everything under it."""
    if not layer:
        return {}
    idx = ctx.units
    if not any(idx.children.get(c) for c in layer):  # a layer of leaves (grid cells): each counts itself
        member, owner = list(layer), list(layer)
    else:
        member, owner = [], []
        for code in layer:
            d = idx.descendants(code)
            member += d
            owner += [code] * len(d)
    m = pl.DataFrame({"code": member, "owner": owner}).to_arrow()
    with ctx.store.lock:
        con = ctx.store.con
        con.register("_api_members", m)
        try:
            table = getattr(ctx.store.readings, "by_key", "readings")  # no sensor id join needed to count by unit
            got = con.execute(
                f"SELECT m.owner, count(*) FROM {table} r JOIN _api_members m ON r.unit_code = m.code "
                "WHERE r.ts >= ? AND r.ts < ? GROUP BY m.owner", [start, end],
            ).fetchall()
        finally:
            con.unregister("_api_members")
    return dict(got)


def open_alerts_by_unit(ctx, layer: list[str]) -> dict[str, int]:
    """Open alerts whose sensor lies in or under each layer unit."""
    if not ctx.has_alerts or not layer:
        return {}
    found = rows(ctx.store,
                 "SELECT s.unit_code, count(*) AS n FROM alerts a JOIN sensors s ON s.id = a.source "
                 "WHERE a.state IN ('active', 'acknowledged') GROUP BY s.unit_code", [])
    out: dict[str, int] = {}
    for r in found:
        if r["unit_code"] is None:
            continue
        for anc in ctx.units.ancestors(r["unit_code"]):
            out[anc] = out.get(anc, 0) + r["n"]
    return {c: out[c] for c in layer if c in out}


def window_hour(at: datetime) -> tuple[datetime, datetime]:
    return at - timedelta(hours=1), at
