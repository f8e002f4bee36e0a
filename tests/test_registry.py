"""The sensor registry: kinds table and sensor import."""

from __future__ import annotations

import pytest

from cityvitals.errors import InputError
from cityvitals.registry import load_kinds
from cityvitals.registry.sensors import import_sensors

pytestmark = pytest.mark.both_backends  # DuckDB and PostgreSQL in every run (tests/conftest.py)

REQUIRED_KINDS = {
    "water_pressure", "water_level", "rainfall", "pm25", "pm10", "o3", "no2", "so2", "co", "noise", "traffic_speed",
    "traffic_flow", "road_occupancy", "power_load", "temperature", "humidity", "wind_speed", "gas_concentration",
    "manhole_tilt", "crowd_density", "elevator_status",
}


def test_kind_table_covers_the_required_kinds_with_sane_ranges():
    kinds = load_kinds()
    assert REQUIRED_KINDS <= set(kinds)
    assert kinds["water_pressure"].min == 0 and kinds["pm25"].max < 50_000
    for kind in kinds.values():
        assert kind.min < kind.max
        assert kind.conversion(kind.unit) == (1.0, 0.0)
    f, o = kinds["temperature"].conversion("degF")
    assert 212 * f + o == pytest.approx(100.0)


def test_import_csv_with_metadata_columns(store, tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(
        "id,kind,unit,lon,lat,department,installed,asset_id\n"
        "P1,water_pressure,kPa,121.47,31.23,water,2024-03-01,M-17\n"
        "N1,noise,dB(A),121.48,31.24,environment,,\n"
    )
    result = import_sensors(store, path)
    assert result == {"imported": 2, "outside": 2, "by_kind": {"noise": 1, "water_pressure": 1}}
    p1 = store.sensors.get("P1")
    assert p1["unit"] == "kPa" and p1["department"] == "water" and '"asset_id":"M-17"' in p1["meta"]
    assert p1["installed"].year == 2024


@pytest.mark.parametrize(
    "row,needle",
    [
        ("X1,no_such_kind,MPa,121.4,31.2,w", "field kind 'no_such_kind'"),
        ("X1,water_pressure,degC,121.4,31.2,w", "field unit 'degC' cannot be converted to MPa"),
        ("X1,water_pressure,MPa,200,31.2,w", "field lon"),
        ("X1,water_pressure,MPa,121.4,north,w", "field lat"),
        (",water_pressure,MPa,121.4,31.2,w", "field id is empty"),
    ],
)
def test_bad_rows_are_refused_whole_and_named(store, tmp_path, row, needle):
    path = tmp_path / "s.csv"
    path.write_text("id,kind,unit,lon,lat,department\nOK1,noise,dB(A),121.4,31.2,env\n" + row + "\n")
    with pytest.raises(InputError, match="line 3") as info:
        import_sensors(store, path)
    assert needle in str(info.value) and "nothing imported" in str(info.value)
    assert store.sensors.count() == 0


def test_missing_column_and_duplicate_ids(store, tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("id,kind,lon,lat\nA,noise,1,1\n")
    with pytest.raises(InputError, match="missing column"):
        import_sensors(store, path)
    path.write_text("id,kind,unit,lon,lat\nA,noise,dB(A),1,1\nA,noise,dB(A),1,1\n")
    with pytest.raises(InputError, match="appears twice"):
        import_sensors(store, path)


def test_import_json(store, tmp_path):
    path = tmp_path / "s.json"
    path.write_text('[{"id": "W1", "kind": "water_level", "unit": "cm", "lon": 121.5, "lat": 31.2, "depth": 3}]')
    assert import_sensors(store, path)["imported"] == 1
    assert store.sensors.get("W1")["meta"] == '{"depth":"3"}'
