"""Auto-opening cases from alerts and incidents, by rules that are data (``auto_open.yaml``).

The engine is generic over a *source*: a query returning rows newer than a watermark
(``id``, ``ts``, the fields rules match on, and ``lon``/``lat``/``unit_code``). ``alerts``
reads ``store.alerts`` joined to the sensor for its place; ``incidents`` reads the
diagnosis stage's table when it exists (columns are looked up, so a schema with
``first_at``/``start`` or ``unit_code``/``lon``/``lat`` works). A case remembers its
source row as ``alert:ID`` / ``incident:ID``, so a row never opens two cases.

>>> matches({"level": "alarm", "kind": "water_*"}, {"level": "alarm", "kind": "water_pressure"})
True
>>> matches({"type": "health:*"}, {"type": "threshold"})
False
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cityvitals.errors import InputError


def matches(when: dict, row: dict) -> bool:
    for k, want in (when or {}).items():
        v = row.get(k)
        opts = want if isinstance(want, list) else [want]
        if v is None or not any(fnmatchcase(str(v), str(o)) for o in opts):
            return False
    return True


def load_rules(path: str | Path | None = None) -> list[dict]:
    if path is None:
        doc = yaml.safe_load(resources.files("cityvitals.dispose").joinpath("auto_open.yaml").read_text("utf-8"))
        where = "auto_open.yaml"
    else:
        try:
            doc = yaml.safe_load(Path(path).read_text("utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"{path}: cannot read the rules: {exc}") from None
        where = str(path)
    rules = doc.get("rules") or []
    for i, r in enumerate(rules):
        for k in ("source", "category"):
            if not r.get(k):
                raise InputError(f"{where}: rules[{i}] has no {k!r}")
    return rules


@dataclass
class Source:
    """Rows of one table, newer than an integer-or-text id watermark."""

    name: str
    sql: str          # takes one parameter, the watermark; returns id, ts, lon, lat, unit_code, text, fields...
    initial: Any = 0


def _cols(store, table: str) -> set[str]:
    rows = store.cases._rows("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                             "AND table_schema = current_schema()", [table])
    return {r["column_name"] for r in rows}


def source_for(store, name: str) -> Source | None:
    """The built-in source ``name`` if its table exists in this store."""
    if name == "alerts" and hasattr(store, "alerts"):
        return Source("alerts", """SELECT a.id, a.first_at AS ts, a.type, a.level, a.source AS sensor, a.message AS text,
                                          s.kind, s.lon, s.lat, s.unit_code
                                   FROM alerts a LEFT JOIN sensors s ON s.id = a.source
                                   WHERE a.id > ? ORDER BY a.id""")
    if name == "incidents":
        cols = _cols(store, "incidents")
        if {"id", "type", "units", "start_at", "opened_at"} <= cols:   # the diagnosis stage's schema
            first = "trim(split_part(trim(i.units, '[] '), ',', 1), ' \"')"
            return Source("incidents", f"""SELECT i.id, coalesce(i.start_at, i.opened_at) AS ts, i.type, i.severity,
                                                 i.level, i.title AS text, {first} AS unit_code,
                                                 u.centroid_lon AS lon, u.centroid_lat AS lat
                                          FROM incidents i LEFT JOIN units u ON u.code = {first}
                                          WHERE i.id > ? AND i.state <> 'merged' ORDER BY i.id""")
        if not cols or "id" not in cols:
            return None
        ts = next((c for c in ("first_at", "start", "started_at", "opened_at", "created_at", "ts") if c in cols), None)
        pick = ["id", f"{ts} AS ts" if ts else "NULL AS ts"]
        for c in ("type", "level", "severity", "kind", "lon", "lat", "unit_code", "title", "summary", "message"):
            if c in cols:
                pick.append(c)
        return Source("incidents", f"SELECT {', '.join(pick)} FROM incidents WHERE id > ? ORDER BY id")
    return None


def auto_open(desk, *, sources: tuple[str, ...] = ("alerts", "incidents"), rules: list[dict] | None = None,
              extra: list[Source] = ()) -> dict:
    """Open cases for new rows of each source that a rule matches; returns counts per source."""
    store = desk.store
    rules = rules if rules is not None else load_rules()
    out: dict[str, dict] = {}
    srcs = [s for s in (source_for(store, n) for n in sources) if s is not None] + list(extra)
    for src in srcs:
        wm = store.cases.get_watermark(f"auto_open:{src.name}")
        wm_val: Any = src.initial if wm is None else (int(wm) if isinstance(src.initial, int) else wm)
        rows = store.cases._rows(src.sql, [wm_val])
        mine = [r for r in rules if r["source"] == src.name]
        reports = []
        for row in rows:
            rule = next((r for r in mine if matches(r.get("when") or {}, row)), None)
            if rule is None:
                continue
            text = row.get("text") or row.get("summary") or row.get("title") or row.get("message") or ""
            reports.append({
                "category": rule["category"], "priority": rule.get("priority", "normal"),
                "source": "alert" if src.name == "alerts" else ("incident" if src.name == "incidents" else "sensor"),
                "channel": src.name, "ref": f"{src.name[:-1] if src.name.endswith('s') else src.name}:{row['id']}",
                "lon": row.get("lon"), "lat": row.get("lat"), "unit_code": row.get("unit_code"),
                "reported_at": row.get("ts") or desk.clock(), "text": str(text)[:4000],
                "actor": "rules", "role": "system",
            })
        reports = [r for r in reports if r["lon"] is not None or r["unit_code"]]
        res = desk.report_many(reports) if reports else []
        if rows:
            last = rows[-1]["id"]
            with store.transaction() as con:
                store.cases.put_watermark(con, f"auto_open:{src.name}", str(last), desk.clock())
        out[src.name] = {"seen": len(rows), "opened": sum(1 for r in res if not r["attached"] and not r.get("skipped")),
                         "attached": sum(1 for r in res if r["attached"])}
    return out
