"""Infrastructure assets and their dependency edges, for diagnose to walk.

``assets`` holds each asset once (type, name, geometry, representative point, the
unit it lies in, free-form properties as JSON); ``asset_edges`` holds the dependency
graph pointing from supplier to dependent ("pump station P feeds main M").
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

ASSET_COLUMNS = ("id", "type", "name", "geometry_wkb", "lon", "lat", "unit_code", "props")


class AssetRepo:
    DDL = (
        """CREATE TABLE IF NOT EXISTS assets (
            id VARCHAR PRIMARY KEY,
            type VARCHAR NOT NULL,
            name VARCHAR,
            geometry_wkb BLOB,
            lon DOUBLE,
            lat DOUBLE,
            unit_code VARCHAR,
            props VARCHAR
        )""",
        """CREATE TABLE IF NOT EXISTS asset_edges (
            src VARCHAR NOT NULL,
            dst VARCHAR NOT NULL,
            relation VARCHAR NOT NULL
        )""",
    )

    def __init__(self, store):
        self.store = store

    def replace(self, assets: pa.Table | pl.DataFrame, edges: pa.Table | pl.DataFrame) -> dict:
        """Replace every asset and edge in one transaction (a city's network is loaded whole)."""
        if isinstance(assets, pl.DataFrame):
            assets = assets.to_arrow()
        if isinstance(edges, pl.DataFrame):
            edges = edges.to_arrow()
        with self.store.transaction() as con:
            con.register("_assets_in", assets)
            con.register("_edges_in", edges)
            try:
                con.execute("DELETE FROM asset_edges")
                con.execute("DELETE FROM assets")
                con.execute(f"INSERT INTO assets ({', '.join(ASSET_COLUMNS)}) SELECT {', '.join(ASSET_COLUMNS)} FROM _assets_in")
                con.execute("INSERT INTO asset_edges (src, dst, relation) SELECT src, dst, relation FROM _edges_in")
            finally:
                con.unregister("_assets_in")
                con.unregister("_edges_in")
        return {"assets": assets.num_rows, "edges": edges.num_rows}

    def frame(self, type_: str | None = None) -> pl.DataFrame:
        sql = "SELECT id, type, name, lon, lat, unit_code, props FROM assets"
        params: list = []
        if type_:
            sql += " WHERE type = ?"
            params.append(type_)
        return self.store.frame(sql + " ORDER BY id", params)

    def edges(self, relation: str | None = None) -> pl.DataFrame:
        sql = "SELECT src, dst, relation FROM asset_edges"
        params: list = []
        if relation:
            sql += " WHERE relation = ?"
            params.append(relation)
        return self.store.frame(sql + " ORDER BY src, dst", params)

    def sensor_asset_props(self, kinds: list[str], props: dict[str, str]) -> pl.DataFrame:
        """Sensors of ``kinds`` joined to their asset (``meta.asset_id``): id, kind, atype and,
        per output column of ``props`` (column -> key in the asset's JSON ``props``), the
        value as a number (null when missing or not a number)."""
        cols = ", ".join(f"TRY_CAST(json_extract(a.props, '$.{_key(k)}') AS DOUBLE) AS {_key(c)}" for c, k in props.items())
        return self.store.frame(
            f"SELECT s.id, s.kind, a.type AS atype{', ' if cols else ''}{cols} FROM sensors s "
            "JOIN assets a ON a.id = json_extract_string(s.meta, '$.asset_id') WHERE list_contains(?, s.kind) ORDER BY s.id",
            [list(kinds)],
        )

    def status(self) -> dict:
        with self.store.lock:
            n = self.store.con.execute("SELECT count(*) FROM assets").fetchall()[0][0]
            e = self.store.con.execute("SELECT count(*) FROM asset_edges").fetchall()[0][0]
        return {"assets": n, "asset_edges": e}


def _key(name: str) -> str:
    """A JSON key or column name put into SQL text: identifiers only."""
    if not name.isidentifier():
        raise ValueError(f"not a plain name: {name!r}")
    return name
