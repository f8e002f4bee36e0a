"""``cityvitals catalog``: the vital-sign indicator catalogue — check, list, show."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from cityvitals.cli._common import Json, console, emit_json

app = typer.Typer(help="The indicator catalogue: validate a city's overlay file, list and show indicators.", no_args_is_help=True)

CatalogFile = Annotated[
    Optional[str],
    typer.Option("--catalog", help="A catalogue file overlaid on the shipped one (default: <home>/catalogue.yaml if present).",
                 envvar="CITYVITALS_CATALOG"),
]


@app.command("check")
def check(
    file: Annotated[str, typer.Argument(help="Catalogue YAML to validate as an overlay on the shipped catalogue.")],
    json: Json = False,
) -> None:
    """Report every problem in FILE with indicator id, field and line; exit 1 if any."""
    from cityvitals.signs.catalog import check_catalog

    cat, problems = check_catalog(file)
    if json:
        emit_json({"file": file, "ok": not problems, "indicators": len(cat), "problems": [p.to_dict() for p in problems]})
    elif problems:
        for p in problems:
            typer.echo(str(p))
        typer.echo(f"{len(problems)} problem(s)", err=True)
    else:
        typer.echo(f"ok: {len(cat)} indicators in {len(cat.categories())} categories ({len(cat.no_source())} with no source yet)")
    if problems:
        raise typer.Exit(1)


_SYMBOL = {"gte": "≥", "gt": ">", "lte": "≤", "lt": "<"}


def _fmt(cond) -> str:
    """{gte: 35} -> '≥35'; {outside: [a, b]} -> 'outside a–b'."""
    if not isinstance(cond, dict) or not cond:
        return "-"
    op, arg = next(iter(cond.items()))
    if op in _SYMBOL:
        return f"{_SYMBOL[op]}{arg}"
    if op == "outside" and isinstance(arg, list) and len(arg) == 2:
        return f"∉[{arg[0]}, {arg[1]}]"
    return f"{op} {arg}"


@app.command("list")
def list_(
    category: Annotated[Optional[str], typer.Option("--category", help="Only this category.")] = None,
    catalog: CatalogFile = None,
    json: Json = False,
) -> None:
    """The indicators: id, category, unit, input, window, thresholds."""
    from cityvitals.signs.catalog import CATEGORIES, load_catalog
    from cityvitals.errors import InputError

    cat = load_catalog(catalog)
    if category and category not in CATEGORIES:
        raise InputError(f"--category: unknown category {category!r}; use one of {', '.join(CATEGORIES)}")
    inds = [i for i in cat.values() if category is None or i.category == category]
    no_source = set(cat.no_source())
    if json:
        emit_json({"indicators": [
            {"id": i.id, "name_en": i.name_en, "name_zh": i.name_zh, "category": i.category, "unit": i.unit,
             "input": i.input_kind, "kinds": list(i.kinds), "window": i.raw.get("window"), "computed": i.id not in no_source,
             "source": i.source}
            for i in inds
        ]})
        return
    t = Table("id", "category", "unit", "input", "window", "thresholds (attention / warning / alarm)", "name")
    for i in inds:
        src = ",".join(i.kinds) if i.kinds else (i.derived_fn or "no source yet")
        w = i.raw.get("window") or {}
        thr = " / ".join(_fmt(i.raw.get("thresholds", {}).get(lvl)) for lvl in ("attention", "warning", "alarm"))
        t.add_row(i.id, i.category, i.unit, src, f"{w.get('size')}" + (f" every {w['slide']}" if w.get("slide") else ""), thr,
                  f"{i.name_en} / {i.name_zh}")
    console.print(t)


@app.command("show")
def show(
    indicator: Annotated[str, typer.Argument(help="Indicator id, e.g. env.aqi.")],
    catalog: CatalogFile = None,
    json: Json = False,
) -> None:
    """Everything the catalogue says about one indicator."""
    import yaml

    from cityvitals.errors import InputError
    from cityvitals.signs.catalog import load_catalog

    cat = load_catalog(catalog)
    ind = cat.get(indicator)
    if ind is None:
        raise InputError(f"unknown indicator {indicator!r} (see `cityvitals catalog list`)")
    data = {**ind.raw, "computed": indicator not in cat.no_source()}
    if json:
        emit_json(data)
    else:
        typer.echo(yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=120).rstrip())
