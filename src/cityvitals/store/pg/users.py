"""Users, keys and audit on PostgreSQL: the DuckDB repository's SQL is portable as it stands."""

from __future__ import annotations

from cityvitals.store.duck.users import UserRepo


class PgUserRepo(UserRepo):
    DDL = ()
