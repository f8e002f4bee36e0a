"""The simulator: determinism, nesting, kinds, truth consistency, bad records, reports, memory."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import shapely

from cityvitals.registry import load_kinds
from cityvitals.sim.city import generate_city, write_city
from cityvitals.sim.pii import valid_resident_id
from cityvitals.sim.run import run_simulation

SMALL = {"city_sensors": 300, "city_districts": 3}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _readings(folder: Path) -> pl.DataFrame:
    """Good-looking rows of every Parquet part, in the canonical unit of each sensor's kind."""
    sensors = pl.read_csv(folder / "sensors.csv")
    df = pl.concat([pl.read_parquet(p) for p in sorted((folder / "readings").glob("*.parquet"))])
    kinds = load_kinds()
    conv = pl.DataFrame({
        "unit_s": [u for k in kinds.values() for u in (k.unit, *k.accepts)],
        "kind": [k.id for k in kinds.values() for _ in (k.unit, *k.accepts)],
        "factor": [k.conversion(u)[0] for k in kinds.values() for u in (k.unit, *k.accepts)],
    })
    df = df.join(sensors.select(pl.col("id").alias("sensor_id"), "kind", pl.col("unit").alias("unit_s")), on="sensor_id")
    df = df.filter(pl.col("unit") == pl.col("unit_s")).join(conv, on=["kind", "unit_s"])
    return df.with_columns((pl.col("value") * pl.col("factor")).alias("canonical")).filter(pl.col("canonical").is_finite())


@pytest.fixture(scope="module")
def burst(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("burst")
    run_simulation(out, scenario="water_main_burst,sensor_faults", duration="4h", seed=11, **SMALL)
    return out


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d, seed in ((a, 4), (b, 4), (c, 5)):
        run_simulation(d, scenario="rainstorm,gas_leak,stuck", duration="90m", seed=seed, **SMALL)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert fa.keys() == fb.keys()
    assert all(fa[k] == fb[k] for k in fa), [k for k in fa if fa[k] != fb[k]]
    assert fa["readings/part-00000.parquet"] != fc["readings/part-00000.parquet"]
    assert fa["sensors.csv"] != fc["sensors.csv"]


def test_layers_nest_and_every_kind_is_present(tmp_path):
    city = generate_city(3, districts=3, sensors=300)
    write_city(city, tmp_path)
    levels = {}
    for name in ("districts", "streets", "communities"):
        doc = json.loads((tmp_path / f"{name}.geojson").read_text("utf-8"))
        levels[name] = {f["properties"]["code"]: (shapely.from_geojson(json.dumps(f["geometry"])), f["properties"])
                        for f in doc["features"]}
    for child, parent in (("streets", "districts"), ("communities", "streets")):
        for code, (geom, props) in levels[child].items():
            pg = levels[parent][props["parent_code"]][0]
            assert code.startswith(props["parent_code"])
            assert shapely.difference(geom, pg.buffer(1e-6)).area < 1e-9 * max(geom.area, 1e-12) + 1e-12
    assert all(p["population"] > 0 for _, p in levels["communities"].values())
    sensors = pl.read_csv(tmp_path / "sensors.csv")
    assert set(sensors["kind"].unique()) == set(load_kinds())
    assert sensors["id"].n_unique() == sensors.height
    assert {"id", "kind", "unit", "lon", "lat", "department", "asset_id"} <= set(sensors.columns)
    edges = pl.read_csv(tmp_path / "edges.csv")
    rels = set(edges["relation"].unique())
    assert {"feeds", "supplies", "drains", "contains", "floods", "connects", "hosts", "carries"} <= rels


def test_burst_pressure_drop_where_and_when_truth_says(burst):
    truth = json.loads((burst / "truth.json").read_text("utf-8"))
    inc = next(i for i in truth["incidents"] if i["type"] == "water_main_burst")
    faulty = {f["sensor"] for f in truth["faults"]}
    df = _readings(burst).filter(pl.col("kind") == "water_pressure")
    zone = {s for s in inc["affected_sensors"] if s.startswith("WP")}
    assert zone
    cross = next(c for c in inc["thresholds"] if c["threshold"].startswith("water_pressure < 0.14"))
    assert set(cross["sensors"]) == zone  # every pressure sensor of the zone crossed
    start = pl.Series([inc["start"]]).str.to_datetime(time_zone="UTC")[0]
    end = pl.Series([inc["end"]]).str.to_datetime(time_zone="UTC")[0]
    before = df.filter(pl.col("ts") < start)
    assert before.filter(pl.col("canonical") < 0.14).height == 0  # nothing low before the burst
    during = df.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
    low = during.filter(pl.col("canonical") < 0.14)
    assert set(low["sensor_id"].unique()) == zone  # low pressure exactly in the zone
    outside = df.filter(~pl.col("sensor_id").is_in(list(zone | faulty)))
    assert outside.filter(pl.col("canonical") < 0.14).height == 0
    first = pl.Series([cross["first_crossing"]]).str.to_datetime(time_zone="UTC")[0]
    assert abs((low["ts"].min() - first).total_seconds()) <= 90


def test_faults_are_confined_to_their_sensor(tmp_path):
    clean, faulty = tmp_path / "clean", tmp_path / "faulty"
    run_simulation(clean, scenario="quiet_day", duration="3h", seed=8, bad_rate=0.0, write_reports=False, **SMALL)
    run_simulation(faulty, scenario="quiet_day,sensor_faults", duration="3h", seed=8, bad_rate=0.0, write_reports=False, **SMALL)
    truth = json.loads((faulty / "truth.json").read_text("utf-8"))
    fault_sensors = {f["sensor"]: f["type"] for f in truth["faults"]}
    assert set(fault_sensors.values()) == {"stuck", "drift", "dropout", "spikes", "wrong_unit"}
    assert all(not f["is_incident"] for f in truth["faults"])

    def series(folder: Path) -> dict[str, list[float]]:
        df = pl.concat([pl.read_parquet(p) for p in sorted((folder / "readings").glob("*.parquet"))])
        df = df.unique(["sensor_id", "ts"], keep="first", maintain_order=True).sort("sensor_id", "ts")
        return {k[0]: g["value"].to_list() for k, g in df.group_by("sensor_id", maintain_order=True)}

    a, b = series(clean), series(faulty)
    changed = {s for s in a if a[s] != b.get(s)}
    assert changed == set(fault_sensors), (changed, fault_sensors)


def test_simulate_load_quarantines_what_was_emitted(tmp_path):
    pytest.importorskip("cityvitals.ingest.files")
    from cityvitals.sim.load import load_folder
    from cityvitals.store import open_store

    out = tmp_path / "sim"
    run_simulation(out, scenario="manhole_displaced", duration="1h", seed=2, bad_rate=0.02, **SMALL)
    truth = json.loads((out / "truth.json").read_text("utf-8"))
    assert set(truth["expected_ingest"]["quarantined"]) == {
        "malformed", "missing_field", "bad_timestamp", "bad_value", "not_finite", "unknown_sensor", "wrong_unit",
        "out_of_range", "conflict"}
    with open_store(tmp_path / "home") as store:
        result = load_folder(store, out)
        assert result["readings"]["accepted"] == truth["expected_ingest"]["accepted"]
        assert result["readings"]["duplicates"] == truth["expected_ingest"]["duplicates"]
        assert result["readings"]["quarantined"] == truth["expected_ingest"]["quarantined"]
        assert result["matches_truth"] is True
        assert store.assets.status()["assets"] > 0
        assert (tmp_path / "home" / "sim" / "reports.ndjson").exists()


def test_reports_follow_incidents_and_carry_valid_resident_ids(burst):
    truth = json.loads((burst / "truth.json").read_text("utf-8"))
    reports = [json.loads(x) for x in (burst / "reports.ndjson").read_text("utf-8").splitlines()]
    assert reports
    assert all(valid_resident_id(r["reporter"]["resident_id"]) for r in reports)
    assert all(len(r["reporter"]["mobile"]) == 11 and r["reporter"]["mobile"].startswith("1") for r in reports)
    inc = next(i for i in truth["incidents"] if i["type"] == "water_main_burst")
    linked = [r for r in reports if r["id"] in set(inc["reports"])]
    assert linked and all(r["category"] == "water_outage" for r in linked)
    first = min(c["first_crossing"] for c in inc["thresholds"] if c["first_crossing"])
    assert all(r["reported_at"] >= first for r in linked)  # complaints come after the pressure drop
    assert {r["lang"] for r in reports} <= {"zh", "en"}


def test_streaming_memory_does_not_grow_with_duration(tmp_path):
    import cityvitals.cli  # noqa: F401  first: bench.simulate -> cli._common -> cli -> cli.bench -> bench.simulate is circular when imported alone
    from cityvitals.bench.simulate import _RssSampler
    from cityvitals.sim.city import generate_city, write_city

    city_dir = tmp_path / "c"
    write_city(generate_city(1, sensors=8000), city_dir)
    growth = {}
    for hours in (1, 4):
        d = tmp_path / f"r{hours}"
        d.mkdir()
        for p in city_dir.iterdir():
            (d / p.name).write_bytes(p.read_bytes())
        with _RssSampler() as mem:
            run_simulation(d, scenario="quiet_day", duration=f"{hours}h", seed=1, write_reports=False)
        growth[hours] = mem.peak - mem.start
    assert growth[4] < growth[1] * 1.5 + 40 * 2**20, growth
