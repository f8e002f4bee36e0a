"""The indicator catalogue: the shipped file, overlays, and every problem `catalog check` reports."""

from __future__ import annotations

import json
import textwrap

import pytest
from typer.testing import CliRunner

from cityvitals.cli import app
from cityvitals.errors import InputError
from cityvitals.registry.kinds import load_kinds
from cityvitals.signs.catalog import CATEGORIES, check_catalog, load_catalog

runner = CliRunner()


def write(tmp_path, text: str):
    p = tmp_path / "city.yaml"
    p.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return p


def problems_of(path):
    _, problems = check_catalog(path)
    return [(p.indicator, p.field, p.line) for p in problems if p.file == str(path)], problems


def test_shipped_catalogue_is_valid_and_complete():
    cat, problems = check_catalog()
    assert problems == []
    assert len(cat) >= 60
    assert len(cat.categories()) >= 8 and set(cat.categories()) <= set(CATEGORIES)
    kinds = load_kinds()
    for ind in cat.values():
        assert ind.source, ind.id  # every threshold set names its standard or says it is a default
        for k in ind.kinds:
            assert k in kinds
    for stable in ("env.aqi", "env.pm25", "fac.water_pressure_end", "wx.rain_1h", "env.noise_day"):
        assert stable in cat
    assert cat["env.aqi"].derived_fn == "max_of" and "HJ 633-2012" in cat["env.aqi"].source
    assert cat["env.noise_day"].params["limit"]["by"] == "zone_class"  # GB 3096 limits per zone class are data
    no_source = cat.no_source()
    assert "gov.closure_rate" in no_source and "liv.hotline_per_10k" in no_source  # fed by a feed with no source yet
    assert "env.aqi" not in no_source


def test_each_problem_kind_has_id_field_and_line(tmp_path):
    path = write(tmp_path, """
        indicators:
        - id: x.unknown_kind
          name_en: Unknown kind
          category: safety
          unit: m
          kinds: [moon_dust]
          window: {size: PT5M}
          direction: higher_is_worse
          thresholds: {warning: {gte: 1}}
          source: test
        - id: x.unit
          name_en: Unit mismatch
          category: facilities
          unit: kPa
          kinds: [water_pressure]
          window: {size: PT5M}
          direction: lower_is_worse
          thresholds: {warning: {lt: 140}}
          source: test
        - id: x.order
          name_en: Out of order
          category: environment
          unit: ug/m3
          kinds: [pm25]
          window: {size: PT1H}
          direction: higher_is_worse
          thresholds:
            attention: {gte: 100}
            warning: {gte: 50}
          source: test
        - id: x.a
          name_en: Cycle a
          category: environment
          unit: index
          derived: {max_of: [x.b, env.aqi]}
          window: {size: PT1H}
          direction: higher_is_worse
          thresholds: {alarm: {gte: 1}}
          source: test
        - id: x.b
          name_en: Cycle b
          category: environment
          unit: index
          derived: {sum: [x.a]}
          window: {size: PT1H}
          direction: higher_is_worse
          thresholds: {alarm: {gte: 1}}
          source: test
        - id: x.fn
          name_en: Unknown function
          category: environment
          unit: index
          derived: {geometric_mean: [env.pm25]}
          window: {size: PT1H}
          direction: higher_is_worse
          thresholds: {alarm: {gte: 1}}
          source: test
        - id: x.missing
          name_en: Missing fields
          kinds: [pm25]
          unit: ug/m3
        """)
    found, problems = problems_of(path)
    assert ("x.unknown_kind", "kinds", 6) in found
    assert ("x.unit", "unit", 14) in found
    assert ("x.order", "thresholds.warning", 29) in found
    assert any(i in ("x.a", "x.b") and f == "derived" and line in (35, 44) for i, f, line in found)
    assert ("x.fn", "derived.geometric_mean", 53) in found
    missing = {(f, line) for i, f, line in found if i == "x.missing"}
    assert {("category", 58), ("window", 58), ("thresholds", 58), ("source", 58)} <= missing
    msgs = {p.indicator: p.message for p in problems}
    assert "moon_dust" in msgs["x.unknown_kind"] and "kPa" in msgs["x.unit"] and "MPa" in msgs["x.unit"]
    assert "out of order" in msgs["x.order"]
    assert "cycle" in [p.message for p in problems if p.indicator in ("x.a", "x.b")][0]
    with pytest.raises(InputError):
        load_catalog(path)


def test_more_problems_direction_agg_params_and_unknown_input(tmp_path):
    path = write(tmp_path, """
        indicators:
        - id: env.pm25
          thresholds:
            attention: {lte: 75}
        - id: x.agg
          name_en: Bad agg
          category: weather
          unit: mm
          kinds: [rainfall]
          agg: median
          window: {size: PT1H, slide: PT7M}
          direction: higher_is_worse
          thresholds: {warning: {gte: "limit + 5"}}
          source: test
        - id: x.input
          name_en: Unknown input
          category: weather
          unit: index
          derived: {ratio: {num: wx.rain_1h, den: x.nothing}}
          window: {size: PT1H}
          direction: higher_is_worse
          thresholds: {warning: {gte: 1}}
          source: test
        """)
    found, _ = problems_of(path)
    assert ("env.pm25", "thresholds.attention", 4) in found  # direction needs gte/gt; overlay line, not shipped line
    assert ("x.agg", "agg", 10) in found
    assert ("x.agg", "window", 11) in found  # 1 h is not a whole number of 7-min slides
    assert ("x.agg", "thresholds.warning", 13) in found  # parameter 'limit' not defined
    assert ("x.input", "derived.ratio", 19) in found


def test_overlay_overrides_and_adds(tmp_path):
    path = write(tmp_path, """
        indicators:
        - id: env.pm25
          thresholds:
            attention: {gt: 35}
            warning: {gt: 75}
            alarm: {gt: 115}
          source: "GB 3095-2012 grade I (nature reserve)"
        - id: fac.pressure_low_share
          name_en: Share of low-pressure readings
          category: facilities
          unit: "%"
          kinds: [water_pressure]
          agg: {share_le: 0.14}
          window: {size: PT1H}
          direction: higher_is_worse
          thresholds: {warning: {gte: 5}}
          source: local rule
        """)
    cat, problems = check_catalog(path)
    assert problems == []
    assert cat["env.pm25"].thresholds["attention"].bounds[0].value == 35
    assert cat["env.pm25"].kinds == ("pm25",)  # untouched fields come from the shipped entry
    assert cat["fac.pressure_low_share"].agg == "share_le"


def test_cli_check_list_show(tmp_path):
    bad = write(tmp_path, """
        indicators:
        - id: x.k
          name_en: k
          category: safety
          unit: m
          kinds: [moon_dust]
          window: {size: PT5M}
          direction: higher_is_worse
          thresholds: {warning: {gte: 1}}
          source: test
        """)
    res = runner.invoke(app, ["catalog", "check", str(bad), "--json"])
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert out["ok"] is False and out["problems"][0] == {
        "indicator": "x.k", "field": "kinds", "line": 6, "message": out["problems"][0]["message"], "file": str(bad)}
    res = runner.invoke(app, ["catalog", "check", str(bad)])
    assert res.exit_code == 1 and f"{bad}:6: x.k: kinds:" in res.stdout
    good = write(tmp_path, "indicators: []\n")
    assert runner.invoke(app, ["catalog", "check", str(good)]).exit_code == 0
    res = runner.invoke(app, ["catalog", "list", "--category", "environment", "--json"])
    ids = [i["id"] for i in json.loads(res.stdout)["indicators"]]
    assert "env.aqi" in ids and all(i.startswith("env.") for i in ids)
    res = runner.invoke(app, ["catalog", "show", "env.aqi", "--json"])
    assert json.loads(res.stdout)["derived"]["max_of"][0] == "env.iaqi_pm25"
    res = runner.invoke(app, ["catalog", "show", "env.nothing"])
    assert res.exit_code != 0
