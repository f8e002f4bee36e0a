"""Spatial units: the city's tree from the city down to the grid cell."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

LEVELS = ("city", "district", "street", "community", "grid")
"""Known unit levels, coarse to fine. A layer may skip levels (a city with no streets)."""

UNIT_COLUMNS = (
    "code", "name", "level", "depth", "parent_code", "geometry_wkb",
    "centroid_lon", "centroid_lat", "area_m2", "population", "h3_cell", "props",
)


class UnitRepo:
    DDL = (
        """CREATE TABLE IF NOT EXISTS units (
            code VARCHAR PRIMARY KEY,
            name VARCHAR,
            level VARCHAR NOT NULL,
            depth INTEGER NOT NULL,
            parent_code VARCHAR,
            geometry_wkb BLOB,
            centroid_lon DOUBLE,
            centroid_lat DOUBLE,
            area_m2 DOUBLE,
            population DOUBLE,
            h3_cell VARCHAR,
            props VARCHAR
        )""",
    )

    def __init__(self, store):
        self.store = store

    def upsert(self, table: pa.Table | pl.DataFrame) -> int:
        """Insert or replace units by code; missing optional columns are left empty."""
        if isinstance(table, pl.DataFrame):
            table = table.to_arrow()
        cols = [c for c in UNIT_COLUMNS if c in table.column_names]
        with self.store.transaction() as con:
            con.register("_units_in", table)
            try:
                con.execute(
                    f"INSERT OR REPLACE INTO units ({', '.join(cols)}) "
                    f"SELECT {', '.join(cols)} FROM _units_in"
                )
                # a unit gets its integer id in the signs store when it is created, as a sensor
                # gets its key when registered: the first recompute of a city then only reads them
                con.execute("INSERT INTO sign_units (unit_code) SELECT code FROM _units_in "
                            "WHERE code NOT IN (SELECT unit_code FROM sign_units) ORDER BY code")
            finally:
                con.unregister("_units_in")
        return table.num_rows

    def delete_level(self, level: str) -> int:
        with self.store.transaction() as con:
            n = con.execute("SELECT count(*) FROM units WHERE level = ?", [level]).fetchall()[0][0]
            con.execute("DELETE FROM units WHERE level = ?", [level])
        return n

    def frame(self, level: str | None = None, *, geometry: bool = False) -> pl.DataFrame:
        cols = [c for c in UNIT_COLUMNS if geometry or c != "geometry_wkb"]
        sql = f"SELECT {', '.join(cols)} FROM units"
        params: list = []
        if level:
            sql += " WHERE level = ?"
            params.append(level)
        return self.store.frame(sql + " ORDER BY depth, code", params)

    def get(self, code: str) -> dict | None:
        with self.store.lock:
            cur = self.store.con.execute(
                "SELECT code, name, level, depth, parent_code, centroid_lon, centroid_lat, area_m2, population, h3_cell "
                "FROM units WHERE code = ?",
                [code],
            )
            rows = cur.fetchall()  # DuckDB keeps a result open until it is fully fetched
            row = rows[0] if rows else None
            if row is None:
                return None
            return dict(zip([d[0] for d in cur.description], row))

    def path(self, code: str) -> list[dict]:
        """The unit and its ancestors, finest first."""
        out = []
        seen = set()
        while code and code not in seen:
            seen.add(code)
            unit = self.get(code)
            if unit is None:
                break
            out.append(unit)
            code = unit["parent_code"]
        return out

    def levels(self) -> list[str]:
        """Levels present in the store, coarse to fine."""
        with self.store.lock:
            rows = self.store.con.execute("SELECT level, min(depth) d FROM units GROUP BY level ORDER BY d").fetchall()
        return [r[0] for r in rows]

    def status(self) -> dict:
        with self.store.lock:
            rows = self.store.con.execute(
                "SELECT level, count(*) FROM units GROUP BY level, depth ORDER BY depth"
            ).fetchall()
        return {"units": {level: n for level, n in rows}}
