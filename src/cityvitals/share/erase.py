"""Erase a person: every table, file and export their personal data reached, with a report of where.

The person is named by one or more identifiers (resident ID, mobile, e-mail or name).
Their records in the special-tier datasets give the full set of their identifiers; their
pseudonyms under every key ever used are derived from those. Then:

- store: in every table, rows whose personal column (reporter/person/mobile/ID/e-mail)
  holds one of the identifiers are deleted; in every other text column, strong
  identifiers (ID, mobile, e-mail, pseudonym) are overwritten with ``[erased]``. The
  hash-chained access log never holds identifiers and is not touched; the erasure is
  appended to it with counts only. A CHECKPOINT then rewrites the file's blocks.
- data directory: NDJSON lines of the person are dropped, other text files have the
  identifiers overwritten, Parquet files lose the person's rows.
- registered exports: the person's rows (found by identifier or pseudonym) are removed
  and the file's digest updated.
- differentially private releases are not recomputed: one person's influence on them is
  what the noise already hides.

Names are matched as whole values in name columns only, never as substrings of free
text elsewhere: a two-character name is a substring of too many other things.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from cityvitals.errors import InputError
from cityvitals.share import audit
from cityvitals.share.catalog import catalogue
from cityvitals.share.keys import KEY_FILE
from cityvitals.share.views import home_of, keyring_for

ERASED = "[erased]"
_PERSON_COL_HINTS = ("resident_id", "mobile", "email", "reporter", "person", "citizen", "phone", "contact", "id_number")
_SKIP_TABLES = {"share_access_log"}
_SKIP_FILES = {KEY_FILE, "audit.head"}


@dataclass
class Identity:
    strong: set[str] = field(default_factory=set)   # searched as substrings everywhere
    records: dict[str, set[str]] = field(default_factory=dict)  # dataset -> ids of the person's rows
    literals: set[str] = field(default_factory=set)  # addresses etc.: scrubbed only inside rows linked to the person
    names: set[str] = field(default_factory=set)    # matched as whole values in name columns
    pseudonyms: set[str] = field(default_factory=set)

    def all(self) -> set[str]:
        return self.strong | self.names | self.pseudonyms


def _norm(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def resolve(store, identifiers: list[str]) -> tuple[Identity, dict[str, int]]:
    """The person's identifiers, from their records in every special-tier dataset."""
    given = {s for s in (_norm(x) for x in identifiers) if s}
    if not given:
        raise InputError("--person: give at least one identifier (resident ID, mobile, e-mail or name)")
    ident = Identity()
    found: dict[str, int] = {}
    for ds in catalogue():
        if not ds.person_keys:
            continue
        raw = ds.source(store)
        if raw is None or raw.height == 0:
            continue
        keys = [k for k in ds.person_keys if k in raw.columns]
        if not keys:
            continue
        hit = raw.filter(pl.any_horizontal([pl.col(k).cast(pl.String).str.strip_chars().is_in(list(given)) for k in keys]))
        found[ds.id] = hit.height
        if "id" in hit.columns:
            ident.records[ds.id] = {str(x) for x in hit["id"].to_list()}
        for f in ds.fields:
            if f.name not in hit.columns or f.cls != "personal":
                continue
            vals = {s for s in (_norm(x) for x in hit[f.name].to_list()) if s}
            if f.kind == "name":
                ident.names |= vals
            elif f.kind in ("phone", "resident_id", "email"):
                ident.strong |= vals
            elif f.kind == "address":
                ident.literals |= vals
    for g in given:
        (ident.names if not any(ch.isdigit() for ch in g) and "@" not in g else ident.strong).add(g)
    ring = keyring_for(store)
    for s in ident.strong:
        ident.pseudonyms |= ring.all_pseudonyms(s)
    return ident, found


def _text_columns(store) -> list[tuple[str, str]]:
    if store.backend == "postgresql":
        # the store's own schema; a partitioned table once (its partitions are reached through it)
        sql = """SELECT c.table_name, c.column_name FROM information_schema.columns c
                 JOIN pg_class k ON k.relname = c.table_name AND k.relnamespace = current_schema()::regnamespace
                 WHERE c.table_schema = current_schema() AND c.data_type IN ('text', 'character varying')
                   AND k.relkind IN ('r', 'p') AND NOT k.relispartition
                 ORDER BY c.table_name, c.column_name"""
    else:
        sql = ("SELECT table_name, column_name FROM information_schema.columns "
               "WHERE data_type = 'VARCHAR' AND table_schema = 'main' ORDER BY table_name, column_name")
    with store.lock:
        rows = store.con.execute(sql).fetchall()
    return [(t, c) for t, c in rows if t not in _SKIP_TABLES]


def _reclaim(store, tables: set[str]) -> None:
    """Make the erased values unreachable in the store's files, not just invisible to queries.

    DuckDB: a CHECKPOINT writes the changes into the file (``compact_store_file`` then
    rewrites it). PostgreSQL keeps old row versions in the table's pages until they are
    reclaimed; VACUUM FULL rewrites each touched table into new files. (The WAL archive
    and backups still hold the old values until they rotate out: that is the operator's
    retention policy, see docs/architecture.md.)"""
    with store.lock:
        if store.backend == "postgresql":
            for t in sorted(tables):
                store.con.execute(f'VACUUM FULL "{t}"')
        else:
            store.con.execute("CHECKPOINT")


def _is_person_col(col: str) -> bool:
    c = col.lower()
    return any(h in c for h in _PERSON_COL_HINTS) and not c.endswith(("_type", "_count", "channel"))


def _is_name_col(col: str) -> bool:
    c = col.lower()
    return c in ("name", "reporter_name", "person_name", "contact_name", "citizen_name") or c.endswith("_name")


# A table of people and the rows elsewhere that point at them: those rows are the person's
# words (report text, notices) and are scrubbed before the person's row is deleted.
LINKED = {"case_reporters": ("id", ("phone", "email", "id_number", "name"),
                             {"case_reports": ("reporter_id", ("text",)), "case_notices": ("reporter_id", ("message",))})}
# Rows derived from the person's words (a case's description) keep the problem, lose the person.
DERIVED = {"cases": ("id", "case_reports", "case_id", ("description", "address"))}


def _erase_linked(con, by_table: dict[str, list[str]], ident: Identity, strong: list[str]) -> list[dict]:
    from cityvitals.share.pii import redact_texts

    out: list[dict] = []
    for people, (pk, keys, refs) in LINKED.items():
        if people not in by_table:
            continue
        conds, params = [], []
        for k in keys:
            vals = sorted(ident.names) if k == "name" else strong
            if k in by_table[people] and vals and k != "name":
                conds.append(f'trim("{k}") IN ({", ".join("?" * len(vals))})')
                params += vals
        if not conds:
            continue
        ids = [r[0] for r in con.execute(f'SELECT "{pk}" FROM "{people}" WHERE {" OR ".join(conds)}', params).fetchall()]
        if not ids:
            continue
        for table, (fk, cols) in refs.items():
            if table not in by_table:
                continue
            # cases derived from these rows: redact their text with the person's own values
            for dtable, (dpk, src, dfk, dcols) in DERIVED.items():
                if src != table or dtable not in by_table:
                    continue
                rows = con.execute(f'SELECT DISTINCT "{dfk}" FROM "{table}" WHERE list_contains(?, "{fk}")', [ids]).fetchall()
                dids = [r[0] for r in rows]
                if not dids:
                    continue
                lits = sorted((ident.names | ident.literals | set(strong)), key=len, reverse=True)
                for dc in dcols:
                    cur = con.execute(f'SELECT "{dpk}", "{dc}" FROM "{dtable}" WHERE list_contains(?, "{dpk}") '
                                      f'AND "{dc}" IS NOT NULL', [dids]).fetchall()
                    texts = redact_texts([t for _, t in cur])
                    changed = 0
                    for (rid, old), new in zip(cur, texts):
                        for v in lits:
                            new = new.replace(v, ERASED)
                        if new != old:
                            con.execute(f'UPDATE "{dtable}" SET "{dc}" = ? WHERE "{dpk}" = ?', [new, rid])
                            changed += 1
                    if changed:
                        out.append({"where": f"table {dtable}.{dc}", "rows": changed, "action": "redacted derived text"})
            n = con.execute(f'SELECT count(*) FROM "{table}" WHERE list_contains(?, "{fk}")', [ids]).fetchall()[0][0]
            if n:
                sets = ", ".join(f'"{c}" = ?' for c in cols)
                con.execute(f'UPDATE "{table}" SET {sets}, "{fk}" = NULL WHERE list_contains(?, "{fk}")',
                            [ERASED] * len(cols) + [ids])
                out.append({"where": f"table {table}", "rows": int(n), "action": "erased the person's words"})
        con.execute(f'DELETE FROM "{people}" WHERE list_contains(?, "{pk}")', [ids])
        out.append({"where": f"table {people}", "rows": len(ids), "action": "deleted rows"})
    return out


def erase_store(store, ident: Identity) -> list[dict]:
    """Delete the person's rows and overwrite their identifiers elsewhere; one entry per place found."""
    out: list[dict] = []
    strong = sorted(ident.strong | ident.pseudonyms)
    cols = _text_columns(store)
    by_table: dict[str, list[str]] = {}
    for t, c in cols:
        by_table.setdefault(t, []).append(c)
    with store.transaction() as con:
        out += _erase_linked(con, by_table, ident, strong)
        for table, tcols in by_table.items():
            # rows about the person: a personal column equal to an identifier (or a name column equal to a name)
            conds, params = [], []
            for c in tcols:
                if _is_person_col(c) and strong:
                    conds.append(f'trim("{c}") IN ({", ".join("?" * len(strong))})')
                    params += strong
                if _is_name_col(c) and _is_person_col(c) and ident.names:
                    conds.append(f'trim("{c}") IN ({", ".join("?" * len(ident.names))})')
                    params += sorted(ident.names)
            if conds:
                where = " OR ".join(conds)
                n = con.execute(f'SELECT count(*) FROM "{table}" WHERE {where}', params).fetchall()[0][0]
                if n:
                    con.execute(f'DELETE FROM "{table}" WHERE {where}', params)
                    out.append({"where": f"table {table}", "rows": int(n), "action": "deleted rows"})
            # identifiers elsewhere in text
            for c in tcols:
                for s in strong:
                    n = con.execute(f'SELECT count(*) FROM "{table}" WHERE contains("{c}", ?)', [s]).fetchall()[0][0]
                    if n:
                        con.execute(f'UPDATE "{table}" SET "{c}" = replace("{c}", ?, ?) WHERE contains("{c}", ?)',
                                    [s, ERASED, s])
                        out.append({"where": f"table {table}.{c}", "rows": int(n), "action": "overwrote identifier"})
    _reclaim(store, {p["where"].removeprefix("table ").split(".")[0] for p in out})
    return out


def _line_hits(line: str, ident: Identity) -> bool:
    if any(s in line for s in ident.strong | ident.pseudonyms):
        return True
    if ident.names:
        try:
            doc = json.loads(line)
        except ValueError:
            return False
        return any(v in ident.names for v in _json_strings_named(doc))
    return False


def _json_strings_named(doc: Any, key: str = "") -> list[str]:
    """String values held under name-like keys, anywhere in a JSON document."""
    out: list[str] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _json_strings_named(v, k)
    elif isinstance(doc, list):
        for v in doc:
            out += _json_strings_named(v, key)
    elif isinstance(doc, str) and key.endswith("name"):
        out.append(doc.strip())
    return out


def _frame_mask(df: pl.DataFrame, ident: Identity, record_ids: set[str] | None = None) -> pl.Series:
    strong = sorted(ident.strong | ident.pseudonyms)
    conds = []
    if record_ids and "id" in df.columns:  # a masked export row is still the person's row
        conds.append(pl.col("id").cast(pl.String).is_in(sorted(record_ids)).fill_null(False))
    for c, t in df.schema.items():
        if t != pl.String:
            continue
        for s in strong:
            conds.append(pl.col(c).str.contains(s, literal=True).fill_null(False))
        if _is_name_col(c) and ident.names:
            conds.append(pl.col(c).str.strip_chars().is_in(sorted(ident.names)).fill_null(False))
    if not conds:
        return pl.Series([False] * df.height)
    return df.select(pl.any_horizontal(conds).alias("m"))["m"]


def erase_file(path: Path, ident: Identity, record_ids: set[str] | None = None) -> dict | None:
    """Remove or overwrite the person in one file; None if they were not in it."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        df = pl.read_parquet(path)
        m = _frame_mask(df, ident, record_ids)
        n = int(m.sum())
        if n:
            df.filter(~m).write_parquet(path)
            return {"where": f"file {path}", "rows": n, "action": "deleted rows"}
        return None
    try:
        text = path.read_text("utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    if suffix in (".ndjson", ".jsonl"):
        lines = text.splitlines()
        keep = [ln for ln in lines if not _line_hits(ln, ident)]
        if len(keep) != len(lines):
            path.write_text("\n".join(keep) + ("\n" if keep else ""), encoding="utf-8")
            return {"where": f"file {path}", "rows": len(lines) - len(keep), "action": "deleted lines"}
        return None
    if suffix == ".geojson":
        doc = json.loads(text)
        feats = doc.get("features", [])
        ids = record_ids or set()
        keep = [f for f in feats if not _line_hits(json.dumps(f, ensure_ascii=False), ident)
                and str((f.get("properties") or {}).get("id")) not in ids]
        if len(keep) != len(feats):
            doc["features"] = keep
            path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
            return {"where": f"file {path}", "rows": len(feats) - len(keep), "action": "deleted features"}
        return None
    if suffix == ".csv":
        df = pl.read_csv(path, infer_schema=False)
        m = _frame_mask(df, ident, record_ids)
        n = int(m.sum())
        if n:
            df.filter(~m).write_csv(path)
            return {"where": f"file {path}", "rows": n, "action": "deleted rows"}
        return None
    hits = [s for s in ident.strong | ident.pseudonyms if s in text]
    if hits:
        for s in hits:
            text = text.replace(s, ERASED)
        path.write_text(text, encoding="utf-8")
        return {"where": f"file {path}", "rows": None, "action": "overwrote identifier"}
    return None


def erase_person(store, identifiers: list[str], *, actor: str = "cli", purpose: str = "erasure request",
                 dry_run: bool = False, now: datetime | None = None) -> dict:
    """Erase one person everywhere; returns where they were (``dry_run`` only looks)."""
    ident, found = resolve(store, identifiers)
    if not any(found.values()) and not ident.strong:
        raise InputError(f"--person: no record matches {', '.join(identifiers)}")
    report: dict[str, Any] = {"records": found, "identifiers": len(ident.strong) + len(ident.names),
                              "pseudonyms": len(ident.pseudonyms), "places": [], "dry_run": dry_run}
    home = home_of(store)
    export_ds = {Path(e["path"]): e["dataset"] for e in store.share.exports()}
    exports = set(export_ds)
    files = [p for p in sorted(home.rglob("*")) if p.is_file() and p.name not in _SKIP_FILES
             and p.suffix.lower() not in (".duckdb", ".wal", ".tmp")]
    files += sorted(p for p in exports if p.exists() and home not in p.parents)
    if dry_run:
        for p in files:
            try:
                txt = p.read_bytes()
            except OSError:
                continue
            if any(s.encode() in txt for s in ident.strong | ident.pseudonyms):
                report["places"].append({"where": f"file {p}", "rows": None, "action": "would erase"})
        return report
    report["places"] += erase_store(store, ident)
    for p in files:
        res = erase_file(p, ident, ident.records.get(export_ds.get(p.resolve(), export_ds.get(p, ""))))
        if res:
            report["places"].append(res)
            if p in exports or p.resolve() in exports:
                store.share.register_export(**_reexport_row(store, p))
    audit.record(store, actor=actor, action="erase", dataset="*", purpose=purpose,
                 records=sum(int(x["rows"] or 0) for x in report["places"]),
                 detail={"places": len(report["places"])}, now=now)
    return report


def _reexport_row(store, path: Path) -> dict:
    row = next(e for e in store.share.exports() if Path(e["path"]) == path.resolve() or Path(e["path"]) == path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"path": row["path"], "dataset": row["dataset"], "fmt": row["format"], "audience": row["audience"],
            "rows": row["rows"], "sha256": digest, "key_id": row["key_id"], "actor": row["actor"]}


def compact_store_file(path: str | Path) -> dict:
    """Rewrite the DuckDB file so that erased values do not survive in freed blocks.

    DuckDB reuses freed blocks but does not zero them, so deleted or overwritten strings
    can stay readable in the file until overwritten. Copying the live database into a
    fresh file and swapping it in leaves nothing behind. The store must be closed (DuckDB
    lets one process open the file); ``cityvitals erase`` does this after the erasure.
    """
    import os

    import duckdb

    path = Path(path)
    tmp = path.with_name(path.name + ".compact")
    if tmp.exists():
        tmp.unlink()
    before = path.stat().st_size
    con = duckdb.connect(str(tmp))
    try:
        con.execute(f"ATTACH '{str(path).replace(chr(39), chr(39) * 2)}' AS old (READ_ONLY)")
        name = con.execute("SELECT current_database()").fetchall()[0][0]
        con.execute(f'COPY FROM DATABASE old TO "{name}"')
        con.execute("DETACH old")
    finally:
        con.close()
    os.replace(tmp, path)
    wal = path.with_name(path.name + ".wal")
    if wal.exists():
        wal.unlink()
    return {"file": str(path), "bytes_before": before, "bytes_after": path.stat().st_size}
