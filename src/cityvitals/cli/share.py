"""Data sharing commands: the dataset catalogue, exports, the access audit log and erasure.

Registered by ``cityvitals.cli``: ``catalog datasets`` (:func:`datasets`), ``export``
(:func:`export_cmd`), ``audit`` (:data:`audit_app`) and ``erase`` (:func:`erase_cmd`).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from cityvitals.cli._common import Home, Store, Json, console, emit_json, open_store_cli


def datasets(
    tier: Annotated[Optional[str], typer.Option("--tier", help="Only this tier: base, thematic or special.")] = None,
    fields: Annotated[bool, typer.Option("--fields", help="Also list every field with its sensitivity class.")] = False,
    home: Home = None,
    store_url: Store = None,
    json: Json = False,
) -> None:
    """The shareable datasets: tier, fields with sensitivity class, update frequency, licence, lineage."""
    from cityvitals.errors import InputError
    from cityvitals.share.catalog import TIERS, catalogue_json

    if tier is not None and tier not in TIERS:
        raise InputError(f"--tier {tier!r}: choose one of {', '.join(TIERS)}")
    with open_store_cli(home, store_url) as store:
        doc = catalogue_json(store)
    doc["datasets"] = [d for d in doc["datasets"] if tier is None or d["tier"] == tier]
    if json:
        emit_json(doc)
        return
    t = Table("id", "tier", "title", "fields (public/restricted/confidential/personal)", "frequency", "licence",
              "lineage", "available", title="datasets")
    for d in doc["datasets"]:
        counts = {c: sum(1 for f in d["fields"] if f["class"] == c) for c in doc["classes"]}
        t.add_row(d["id"], d["tier"], f"{d['title']} / {d['title_zh']}", "/".join(str(counts[c]) for c in doc["classes"]),
                  d["frequency"], d["licence"].split(" ")[0], d["lineage"], "yes" if d.get("available") else "no")
    console.print(t)
    if fields:
        for d in doc["datasets"]:
            ft = Table("field", "class", "kind", "public", "research", "internal", title=d["id"])
            from cityvitals.share.catalog import get_dataset
            from cityvitals.share.transform import default_op

            ds = get_dataset(d["id"])
            for f in ds.fields:
                ft.add_row(f.name, f.cls, f.kind, *(default_op(f, a) for a in ("public", "research", "internal")))
            console.print(ft)


def export_cmd(
    dataset: Annotated[str, typer.Argument(help="Dataset id (see `cityvitals catalog datasets`).")],
    format: Annotated[str, typer.Option("--format", "-f", help="csv, parquet or geojson.")] = "csv",
    out: Annotated[str, typer.Option("--out", "-o", help="File to write.")] = "",
    audience: Annotated[str, typer.Option("--audience", help="public (open data), research or internal.")] = "public",
    actor: Annotated[str, typer.Option("--actor", help="Who is exporting (recorded in the access log).")] = "cli",
    purpose: Annotated[Optional[str], typer.Option("--purpose", help="Why: required when the export reaches personal data.")] = None,
    epsilon: Annotated[Optional[float], typer.Option("--epsilon", help="Privacy loss of a new DP release (aggregates only).")] = None,
    home: Home = None,
    store_url: Store = None,
    json: Json = False,
) -> None:
    """Export a desensitised view of DATASET (only desensitised views can leave: see the catalogue)."""
    from cityvitals.errors import InputError
    from cityvitals.share.export import export_dataset

    if not out:
        raise InputError("--out: give the file to write")
    with open_store_cli(home, store_url) as store:
        res = export_dataset(store, dataset, format, out, audience=audience, actor=actor, purpose=purpose, epsilon=epsilon)
    if json:
        emit_json(res)
        return
    line = f"wrote {res['rows']:,} rows of {res['dataset']} ({res['audience']}) to {res['path']}"
    k = res.get("k_anonymity")
    if k and k.get("rung"):
        line += f"; k={k['k']} at time {k['rung']['time']}, unit {k['rung']['unit']}, {k['suppressed']} suppressed"
    if res.get("release"):
        b = res["release"]["budget"]
        line += f"; DP epsilon {res['release']['epsilon']:g}, budget left {b['remaining']:g}"
    typer.echo(line)


audit_app = typer.Typer(help="The access log of personal data: verify its hash chain, list entries.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(home: Home = None, store_url: Store = None, json: Json = False) -> None:
    """Recompute the hash chain; exit 1 if any entry was edited or deleted."""
    from cityvitals.share.audit import verify

    with open_store_cli(home, store_url) as store:
        res = verify(store)
    if json:
        emit_json(res)
    elif res["ok"]:
        typer.echo(f"ok: {res['rows']} entries, chain intact")
    else:
        typer.echo(f"TAMPERED: {res['problem']}")
    if not res["ok"]:
        raise typer.Exit(1)


@audit_app.command("list")
def audit_list(
    limit: Annotated[int, typer.Option(min=1, help="Newest entries to show.")] = 50,
    actor: Annotated[Optional[str], typer.Option(help="Only this actor.")] = None,
    home: Home = None,
    store_url: Store = None,
    json: Json = False,
) -> None:
    """Who read which personal data, when, and why (newest first)."""
    from cityvitals.share.audit import entries

    with open_store_cli(home, store_url) as store:
        rows = entries(store, limit=limit, actor=actor)
    if json:
        emit_json({"entries": rows})
        return
    t = Table("seq", "ts", "actor", "action", "dataset", "fields", "purpose", "records", title="access log")
    for r in rows:
        t.add_row(str(r["seq"]), str(r["ts"]), r["actor"], r["action"], r["dataset"] or "", r["fields"] or "",
                  r["purpose"] or "", str(r["records"] or 0))
    console.print(t)


def erase_cmd(
    person: Annotated[list[str], typer.Option("--person", help="An identifier of the person (resident ID, mobile, "
                                                               "e-mail or name); repeat to give several.")],
    actor: Annotated[str, typer.Option("--actor", help="Who carries out the erasure (recorded).")] = "cli",
    purpose: Annotated[str, typer.Option("--purpose", help="The request being honoured.")] = "erasure request",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report where the person's data is.")] = False,
    home: Home = None,
    store_url: Store = None,
    json: Json = False,
) -> None:
    """Erase a person's personal data from every table, file and export it reached; report where it was."""
    from cityvitals.share.erase import compact_store_file, erase_person

    with open_store_cli(home, store_url) as store:
        res = erase_person(store, person, actor=actor, purpose=purpose, dry_run=dry_run)
        path = store.path if getattr(store, "backend", "") == "duckdb" else None
    if path is not None and not dry_run:  # freed blocks still hold the erased strings: rewrite the file
        res["compacted"] = compact_store_file(path)
    if json:
        emit_json(res)
        return
    t = Table("where", "rows", "action", title="erasure" + (" (dry run)" if dry_run else ""))
    for p in res["places"]:
        t.add_row(p["where"], "" if p["rows"] is None else str(p["rows"]), p["action"])
    console.print(t)
    typer.echo(f"records matched: {res['records']}; places: {len(res['places'])}")
