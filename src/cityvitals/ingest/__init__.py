"""Stage ``ingest``: receive readings, validate them, quarantine what is bad, lose nothing.

Sources (files now; HTTP and MQTT later) turn bytes into batches; ``Ingestor`` runs
each batch through the vectorised validator (``validate``) and stores it in one
transaction. Python callers use ``ingest_frame`` / ``ingest_records``.
"""

from __future__ import annotations

import polars as pl

from cityvitals.ingest.files import detect_format, ingest_file
from cityvitals.ingest.pipeline import Ingestor, IngestReport
from cityvitals.ingest.reasons import REASONS

__all__ = ["REASONS", "Ingestor", "IngestReport", "detect_format", "ingest_file", "ingest_frame", "ingest_records", "replay"]


def ingest_frame(store, frame: pl.DataFrame, *, source: str = "api", ingestor: Ingestor | None = None) -> IngestReport:
    """A Polars frame with columns sensor_id, ts, value[, unit, quality]."""
    table = frame.select([c for c in frame.columns if c in ("sensor_id", "ts", "value", "unit", "quality")]).to_arrow()
    return (ingestor or Ingestor(store)).ingest_table(table, source=source)


def ingest_records(store, records, *, source: str = "api", ingestor: Ingestor | None = None) -> IngestReport:
    """A list of reading dicts (as received over HTTP or MQTT)."""
    return (ingestor or Ingestor(store)).ingest_records(records, source=source)


def replay(store, *, reason: str | None = None, ids: list[int] | None = None, ingestor: Ingestor | None = None) -> IngestReport:
    """Re-validate quarantined records (for example after registering a missing sensor)."""
    return (ingestor or Ingestor(store)).replay(reason=reason, ids=ids)
