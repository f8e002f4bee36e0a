"""Assets and their dependency edges on PostgreSQL."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from cityvitals.store.duck.assets import ASSET_COLUMNS, AssetRepo, _key
from cityvitals.store.pg._sql import copy_arrow


class PgAssetRepo(AssetRepo):
    DDL = ()

    def replace(self, assets: pa.Table | pl.DataFrame, edges: pa.Table | pl.DataFrame) -> dict:
        """Replace every asset and edge in one transaction (a city's network is loaded whole)."""
        if isinstance(assets, pl.DataFrame):
            assets = assets.to_arrow()
        if isinstance(edges, pl.DataFrame):
            edges = edges.to_arrow()
        with self.store.transaction() as con:
            con.raw("DELETE FROM asset_edges")
            con.raw("DELETE FROM assets")
            copy_arrow(con, assets, "assets", ASSET_COLUMNS)
            copy_arrow(con, edges, "asset_edges", ("src", "dst", "relation"))
        return {"assets": assets.num_rows, "edges": edges.num_rows}

    def sensor_asset_props(self, kinds: list[str], props: dict[str, str]) -> pl.DataFrame:
        """As the DuckDB repository, with PostgreSQL's jsonb (only JSON numbers count)."""
        cols = "".join(
            f", CASE WHEN jsonb_typeof(a.props::jsonb -> '{_key(k)}') = 'number' "
            f"THEN (a.props::jsonb ->> '{_key(k)}')::double precision END AS {_key(c)}" for c, k in props.items())
        return self.store.frame(
            f"SELECT s.id, s.kind, a.type AS atype{cols} FROM sensors s "
            "JOIN assets a ON a.id = (s.meta::jsonb ->> 'asset_id') WHERE s.kind = ANY(?) ORDER BY s.id",
            [list(kinds)],
        )
