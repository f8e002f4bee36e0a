"""Quarantine on PostgreSQL: the DuckDB repository's SQL is portable as it stands."""

from __future__ import annotations

from cityvitals.store.duck.quarantine import QuarantineRepo


class PgQuarantineRepo(QuarantineRepo):
    DDL = ()
