"""The dataset catalogue: what the city can share, field by field, and how sensitive each field is.

A dataset is a declared query (a *source* returning a Polars frame from the store or the
data directory) plus its fields, each with a sensitivity class:

- ``public``: releasable as is;
- ``restricted``: releasable only coarsened (e.g. a critical asset's exact position);
- ``confidential``: internal only (operational detail, free-form properties);
- ``personal``: personal information under PIPL; never released in clear.

Only declared fields ever leave a source: an undeclared column (a new field added by a
later stage) is dropped until someone classifies it. Tiers follow the city's data
catalogue practice: base (units, sensors, assets), thematic (indicators, health, alerts,
incidents, aggregates) and special (cases, reports: microdata about people).

>>> cat = catalogue()
>>> [d.id for d in cat if d.tier == "special"]
['reports', 'cases']
>>> cat_by_id()["reports"].field("reporter_resident_id").cls
'personal'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import polars as pl

from cityvitals.errors import InputError

CLASSES = ("public", "restricted", "confidential", "personal")
TIERS = ("base", "thematic", "special")
AUDIENCES = ("public", "research", "internal")
"""public: open data, no login; research: registered researchers under agreement (pseudonyms,
finer time); internal: city staff with a stated purpose (masked identifiers). Every read
that reaches personal data (research, internal) is written to the access log."""

OPEN_LICENCE = "CC-BY-4.0"
SPECIAL_LICENCE = "CC-BY-NC-4.0 (desensitised view only; microdata under a data-sharing agreement)"


@dataclass(frozen=True)
class Field:
    """One column: its sensitivity class, its kind (what transforms apply) and per-audience ops.

    ``ops`` maps an audience to a transform (see :mod:`cityvitals.share.transform`);
    audiences not listed get the default for the class and kind.
    """

    name: str
    cls: str = "public"
    kind: str = "other"  # id, text, time, lon, lat, unit, name, phone, resident_id, plate, category, number, geometry, json, other
    description: str = ""
    ops: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "class": self.cls, "kind": self.kind, "description": self.description,
                "ops": dict(self.ops)}


@dataclass(frozen=True)
class Dataset:
    id: str
    tier: str
    title: str
    title_zh: str
    fields: tuple[Field, ...]
    frequency: str
    licence: str
    lineage: str
    source: Callable[[Any], pl.DataFrame | None] = field(repr=False, compare=False, default=lambda store: None)
    microdata: bool = False
    quasi_identifiers: dict[str, str] = field(default_factory=dict)  # column -> 'unit' | 'time' | 'category'
    k: int = 5
    person_keys: tuple[str, ...] = ()   # fields that identify the person a row is about (for erasure)
    aggregate_of: str | None = None      # a DP aggregate over another dataset
    epsilon: float | None = None         # per release
    budget: float | None = None          # total epsilon of the dataset
    geometry: str | None = None          # a WKB column drawn in GeoJSON exports

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise InputError(f"dataset {self.id!r}: no field {name!r}")

    def personal_fields(self) -> list[str]:
        return [f.name for f in self.fields if f.cls == "personal"]

    def to_dict(self, store=None) -> dict:
        out = {"id": self.id, "tier": self.tier, "title": self.title, "title_zh": self.title_zh,
               "frequency": self.frequency, "licence": self.licence, "lineage": self.lineage,
               "microdata": self.microdata, "fields": [f.to_dict() for f in self.fields]}
        if self.microdata:
            out["k_anonymity"] = {"k": self.k, "quasi_identifiers": dict(self.quasi_identifiers)}
        if self.aggregate_of:
            out["differential_privacy"] = {"of": self.aggregate_of, "epsilon_per_release": self.epsilon,
                                           "budget": self.budget, "mechanism": "discrete Laplace (OpenDP)"}
        if store is not None:
            out["available"] = available(self, store)
        return out


# ---- sources ------------------------------------------------------------------------------
def _has_table(store, name: str) -> bool:
    with store.lock:
        return bool(store.con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ? "
                                      "AND table_schema = current_schema()",
                                      [name]).fetchall()[0][0])


def _table(name: str, order: str) -> Callable[[Any], pl.DataFrame | None]:
    def src(store) -> pl.DataFrame | None:
        if not _has_table(store, name):
            return None
        return store.frame(f"SELECT * FROM {name} ORDER BY {order}")

    src.__doc__ = f"Every row of the {name} table."
    return src


REPORT_SCHEMA = {
    "id": pl.String, "reported_at": pl.String, "channel": pl.String, "reporter_type": pl.String,
    "category": pl.String, "service_code": pl.String, "lang": pl.String, "text": pl.String,
    "lon": pl.Float64, "lat": pl.Float64, "unit_code": pl.String, "plate": pl.String,
    "reporter": pl.Struct({"name": pl.String, "mobile": pl.String, "resident_id": pl.String, "gender": pl.String,
                           "enterprise": pl.String, "email": pl.String, "address": pl.String}),
}


def reports_file(store) -> Path:
    return Path(store.home) / "sim" / "reports.ndjson"


def read_reports(path: Path) -> pl.DataFrame:
    """Citizen reports (the simulator's NDJSON, Open311-shaped) flattened to one row per report."""
    if not path.exists() or path.stat().st_size == 0:
        return pl.DataFrame(schema={k: v for k, v in REPORT_SCHEMA.items() if k != "reporter"})
    df = pl.read_ndjson(path, schema=REPORT_SCHEMA)
    rep = df["reporter"].struct.unnest()
    rep = rep.rename({c: f"reporter_{c}" for c in rep.columns})
    return pl.concat([df.drop("reporter"), rep], how="horizontal").with_columns(
        pl.col("reported_at").str.to_datetime(time_zone="UTC"))


def _reports_source(store) -> pl.DataFrame | None:
    if _has_table(store, "reports"):   # once a stage keeps reports in the store, read them there
        return store.frame("SELECT * FROM reports ORDER BY id")
    path = reports_file(store)
    return read_reports(path) if path.exists() else None


CASES_SQL = """
SELECT c.id, c.ref AS report_id, c.channel, c.category, c.priority, c.source, c.state, c.department, c.unit_code,
       c.region_code, c.reported_at AS opened_at, c.closed_at, c.due_at AS deadline_at, c.on_time, c.returns,
       c.reworks AS rework, c.escalation, c.reports, c.description, c.lon, c.lat, c.address, c.token,
       c.crew AS handler, c.inspector, r.text AS report_text, p.name AS reporter_name, p.phone AS reporter_mobile,
       p.email AS reporter_email, p.id_number AS reporter_resident_id, p.enterprise AS reporter_enterprise
FROM cases c
LEFT JOIN (SELECT case_id, reporter_id, text,
                  row_number() OVER (PARTITION BY case_id ORDER BY reported_at, ref) AS rn FROM case_reports) r
       ON r.case_id = c.id AND r.rn = 1
LEFT JOIN case_reporters p ON p.id = r.reporter_id
ORDER BY c.id"""


def _cases_source(store) -> pl.DataFrame | None:
    """Cases (dispose) with their first report's text and reporter, one row per case."""
    if not all(_has_table(store, t) for t in ("cases", "case_reports", "case_reporters")):
        return None
    return store.frame(CASES_SQL)


def available(ds: Dataset, store) -> bool:
    if ds.aggregate_of:
        return store.share.release(ds.id) is not None or available(cat_by_id()[ds.aggregate_of], store)
    try:
        return ds.source(store) is not None
    except Exception:
        return False


# ---- the catalogue ---------------------------------------------------------------------------
P, R, C, X = "public", "restricted", "confidential", "personal"
F = Field


def catalogue() -> list[Dataset]:
    """Every dataset the city shares, in tier order."""
    return [
        Dataset("units", "base", "Spatial units", "空间单元", (
            F("code", P, "unit"), F("name", P), F("level", P, "category"), F("depth", P, "number"),
            F("parent_code", P, "unit"), F("centroid_lon", P, "lon"), F("centroid_lat", P, "lat"),
            F("area_m2", P, "number"), F("population", P, "number"), F("h3_cell", P),
            F("geometry_wkb", P, "geometry"), F("props", C, "json", "free-form import properties")),
            "on import", OPEN_LICENCE, "space: layers and generated grid", _table("units", "depth, code"),
            geometry="geometry_wkb"),
        Dataset("sensors", "base", "Sensors", "感知设备", (
            F("id", P, "id"), F("kind", P, "category"), F("unit", P), F("lon", P, "lon"), F("lat", P, "lat"),
            F("department", P, "category"), F("installed", P, "time"), F("unit_code", P, "unit"),
            F("meta", C, "json", "vendor and maintenance details")),
            "on registration", OPEN_LICENCE, "registry: sensor import", _table("sensors", "id")),
        Dataset("assets", "base", "Infrastructure assets", "基础设施", (
            F("id", P, "id"), F("type", P, "category"), F("name", P),
            F("lon", R, "lon", "exact position of critical infrastructure", {"public": "centroid"}),
            F("lat", R, "lat", "exact position of critical infrastructure", {"public": "centroid"}),
            F("unit_code", P, "unit"), F("geometry_wkb", R, "geometry"), F("props", C, "json")),
            "on import", OPEN_LICENCE, "simulator / asset register", _table("assets", "id")),
        Dataset("indicators", "thematic", "Vital-sign indicator values", "体征指标", (
            F("indicator", P, "category"), F("unit_code", P, "unit"), F("window_start", P, "time"),
            F("window_end", P, "time"), F("value", P, "number"), F("level", P, "number"), F("n", P, "number"),
            F("direct", P)),
            "per indicator window (1 min to 1 day)", OPEN_LICENCE, "signs: windowed computation and roll-up",
            _table("sign_values", "window_start, indicator, unit_code")),
        Dataset("health", "thematic", "Health index", "健康指数", (
            F("unit_code", P, "unit"), F("as_of", P, "time"), F("scope", P, "category"), F("value", P, "number")),
            "hourly", OPEN_LICENCE, "signs: health index roll-up", _table("sign_health", "as_of, unit_code, scope")),
        Dataset("alerts", "thematic", "Alerts", "预警", (
            F("id", P, "id"), F("source", P), F("type", P, "category"), F("level", P, "category"),
            F("state", P, "category"), F("message", R, "text"), F("first_at", P, "time"), F("last_at", P, "time"),
            F("occurrences", P, "number"), F("acknowledged_by", X, "name", "staff account"),
            F("acknowledged_at", P, "time"), F("resolved_by", X, "name", "staff account"), F("resolved_at", P, "time"),
            F("escalation", P, "number")),
            "live", OPEN_LICENCE, "watch: detectors and alert lifecycle", _table("alerts", "id")),
        Dataset("incidents", "thematic", "Incidents", "事件", (
            F("id", P, "id"), F("type", P, "category"), F("state", P, "category"), F("unit_code", P, "unit"),
            F("started_at", P, "time"), F("ended_at", P, "time"), F("title", R, "text"), F("summary", R, "text"),
            F("cause", P, "category"), F("score", P, "number")),
            "live", OPEN_LICENCE, "diagnose: grouped alerts and ranked causes", _table("incidents", "1")),
        Dataset("reports_by_unit", "thematic", "Citizen reports per community and category (differentially private)",
                "市民诉求分区统计（差分隐私）", (
                    F("unit_code", P, "unit"), F("category", P, "category"), F("count", P, "number",
                                                                                "noisy count (discrete Laplace)")),
                "daily", OPEN_LICENCE, "reports → per-unit counts with OpenDP discrete Laplace noise",
                aggregate_of="reports", epsilon=0.5, budget=5.0),
        Dataset("reports", "special", "Citizen reports", "市民诉求", (
            F("id", P, "id"), F("reported_at", R, "time", "quasi-identifier", {"public": "time:hour", "research": "time:hour"}),
            F("channel", P, "category"), F("reporter_type", P, "category"), F("category", P, "category"),
            F("service_code", P, "category"), F("lang", P, "category"),
            F("text", X, "text", "free text; may repeat names, numbers, plates", {"public": "redact", "research": "redact"}),
            F("lon", X, "lon", "where the report was made", {"public": "centroid", "research": "centroid"}),
            F("lat", X, "lat", "where the report was made", {"public": "centroid", "research": "centroid"}),
            F("unit_code", P, "unit", "community; quasi-identifier"),
            F("plate", X, "plate", "vehicle plate", {"research": "pseudonym"}),
            F("reporter_name", X, "name"), F("reporter_mobile", X, "phone"),
            F("reporter_resident_id", X, "resident_id", "", {"research": "pseudonym:reporter_id"}),
            F("reporter_gender", X, "category", "", {"research": "keep"}),
            F("reporter_enterprise", R, "name", "enterprise reporter"),
            F("reporter_email", X, "email"), F("reporter_address", X, "address")),
            "live", SPECIAL_LICENCE, "citizen channels (12345 hotline, app, WeChat, enterprise) / simulator",
            _reports_source, microdata=True, k=3,
            quasi_identifiers={"unit_code": "unit", "reported_at": "time", "category": "category"},
            person_keys=("reporter_resident_id", "reporter_mobile", "reporter_name", "reporter_email")),
        Dataset("cases", "special", "Cases", "案件", (
            F("id", P, "id"), F("report_id", P, "id"), F("channel", P, "category"), F("category", P, "category"),
            F("priority", P, "category"), F("source", P, "category"), F("state", P, "category"),
            F("department", P, "category"), F("unit_code", P, "unit", "quasi-identifier"), F("region_code", P, "unit"),
            F("opened_at", R, "time", "quasi-identifier", {"public": "time:hour", "research": "time:hour"}),
            F("closed_at", R, "time", "", {"public": "time:hour", "research": "time:hour"}),
            F("deadline_at", R, "time", "", {"public": "time:hour", "research": "time:hour"}),
            F("on_time", P), F("returns", P, "number"), F("rework", P, "number"), F("escalation", P, "number"),
            F("reports", P, "number"),
            F("description", X, "text", "desensitised by dispose; checked again", {"public": "redact", "research": "redact"}),
            F("report_text", X, "text", "the first report's raw text", {"public": "redact", "research": "redact"}),
            F("lon", X, "lon", "", {"public": "centroid", "research": "centroid"}),
            F("lat", X, "lat", "", {"public": "centroid", "research": "centroid"}),
            F("address", X, "address"), F("token", C, "id", "the reporter's tracking secret"),
            F("handler", R, "id", "crew"), F("inspector", X, "name", "field inspector account"),
            F("reporter_name", X, "name"), F("reporter_mobile", X, "phone"),
            F("reporter_resident_id", X, "resident_id", "", {"research": "pseudonym:reporter_id"}),
            F("reporter_email", X, "email"), F("reporter_enterprise", R, "name")),
            "live", SPECIAL_LICENCE, "dispose: case workflow (report → file → dispatch → handle → verify → close)",
            _cases_source, microdata=True, k=3,
            quasi_identifiers={"unit_code": "unit", "opened_at": "time", "category": "category"},
            person_keys=("reporter_resident_id", "reporter_mobile", "reporter_name", "reporter_email")),
    ]


def cat_by_id() -> dict[str, Dataset]:
    return {d.id: d for d in catalogue()}


def get_dataset(dataset_id: str) -> Dataset:
    ds = cat_by_id().get(dataset_id)
    if ds is None:
        raise InputError(f"dataset {dataset_id!r}: not in the catalogue (known: {', '.join(cat_by_id())})")
    return ds


def catalogue_json(store=None) -> dict:
    """The catalogue as served at /opendata/v1/catalog and printed by `catalog datasets --json`."""
    return {"classes": list(CLASSES), "tiers": list(TIERS), "audiences": list(AUDIENCES),
            "datasets": [d.to_dict(store) for d in catalogue()]}


def dumps(doc: Any) -> str:
    return json.dumps(doc, ensure_ascii=False, default=str)
