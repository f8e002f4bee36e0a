"""The table of sensor kinds: canonical unit, accepted units and physical range.

Kinds are data (``kinds.yaml``) so a city can add its own without touching code; the
ingest stage turns the table into a small columnar lookup and converts every reading
to its kind's canonical unit before anything else sees it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pyarrow as pa
import yaml

_KIND_ID = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Kind:
    id: str
    unit: str
    min: float
    max: float
    name_en: str = ""
    name_zh: str = ""
    accepts: dict[str, tuple[float, float]] = field(default_factory=dict)

    def conversion(self, unit: str | None) -> tuple[float, float] | None:
        """(factor, offset) to the canonical unit, or None when ``unit`` is not accepted."""
        if unit is None or unit == "" or unit == self.unit:
            return (1.0, 0.0)
        return self.accepts.get(unit)


class KindTable(dict[str, Kind]):
    """Kinds by id, with the columnar view the vectorised validator joins against."""

    def conversions_table(self) -> pa.Table:
        """One row per (kind, accepted unit) including the canonical unit itself."""
        kinds, units, factors, offsets = [], [], [], []
        for kind in self.values():
            for unit, (factor, offset) in {kind.unit: (1.0, 0.0), **kind.accepts}.items():
                kinds.append(kind.id)
                units.append(unit)
                factors.append(factor)
                offsets.append(offset)
        return pa.table({"kind": kinds, "unit": units, "factor": factors, "offset": offsets})

    def ranges_table(self) -> pa.Table:
        ks = list(self.values())
        return pa.table(
            {
                "kind": [k.id for k in ks],
                "canonical_unit": [k.unit for k in ks],
                "min_value": [float(k.min) for k in ks],
                "max_value": [float(k.max) for k in ks],
            }
        )


def _parse(doc: dict, origin: str) -> KindTable:
    table = KindTable()
    for kind_id, spec in (doc.get("kinds") or {}).items():
        if not _KIND_ID.match(str(kind_id)):
            raise ValueError(f"{origin}: kind id {kind_id!r} must be snake_case")
        try:
            accepts = {
                str(u): (float(c.get("factor", 1.0)), float(c.get("offset", 0.0)))
                for u, c in (spec.get("accepts") or {}).items()
            }
            kind = Kind(
                id=kind_id,
                unit=str(spec["unit"]),
                min=float(spec["min"]),
                max=float(spec["max"]),
                name_en=str(spec.get("name_en", "")),
                name_zh=str(spec.get("name_zh", "")),
                accepts=accepts,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{origin}: kind {kind_id!r}: {exc}") from exc
        if kind.min > kind.max:
            raise ValueError(f"{origin}: kind {kind_id!r}: min {kind.min} is above max {kind.max}")
        table[kind_id] = kind
    return table


@lru_cache(maxsize=8)
def _load_cached(extra: str | None) -> KindTable:
    text = resources.files("cityvitals.registry").joinpath("kinds.yaml").read_text("utf-8")
    table = _parse(yaml.safe_load(text), "kinds.yaml")
    if extra:
        table.update(_parse(yaml.safe_load(Path(extra).read_text("utf-8")), extra))
    return table


def load_kinds(extra: str | Path | None = None) -> KindTable:
    """The shipped kinds, overlaid with a city's own kinds file when given.

    >>> kinds = load_kinds()
    >>> kinds["water_pressure"].unit
    'MPa'
    >>> kinds["water_pressure"].conversion("kPa")
    (0.001, 0.0)
    """
    return _load_cached(str(extra) if extra else None)
