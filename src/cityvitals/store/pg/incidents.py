"""Incidents on PostgreSQL: the DuckDB repository's SQL is portable as it stands.

``incident_history`` has a ``rowid`` column (migration 0006) for the "ORDER BY ts, rowid"
the history read uses, and ``con.executemany`` (the ranked causes) is psycopg's own.
"""

from __future__ import annotations

from cityvitals.store.duck.incidents import IncidentRepo


class PgIncidentRepo(IncidentRepo):
    DDL = ()
