"""What data sharing keeps in the store: privacy budgets, the access log, pseudonym keys, exports.

- ``share_budget`` / ``share_budget_ledger``: each dataset's differential-privacy budget
  (total epsilon) and every release charged against it; :meth:`ShareRepo.spend` checks
  and records in one transaction, so two releases cannot both squeeze under the cap.
- ``share_access_log``: every read of personal data, append-only and hash-chained
  (each row's hash covers its content and the previous hash), so an edited or deleted
  row breaks the chain that :meth:`ShareRepo.verify_access_log` recomputes.
- ``share_keys``: metadata of the pseudonym keys (id, fingerprint, when made, retired);
  the key material itself lives in a file in the data directory, never in a table.
- ``share_exports``: every file written by ``cityvitals export``, so erasure can find
  the files a person reached.
- ``share_releases``: the latest differentially private aggregates, served as-is by the
  open-data API (serving them again spends nothing).

>>> import tempfile
>>> from cityvitals.store import open_store
>>> store = open_store(tempfile.mkdtemp())
>>> store.share.set_budget("reports_by_unit", 1.0)
>>> store.share.spend("reports_by_unit", 0.6, actor="t", query="count")["remaining"]
0.4
>>> store.share.spend("reports_by_unit", 0.6, actor="t", query="count")
Traceback (most recent call last):
...
cityvitals.errors.InputError: dataset 'reports_by_unit': a release of epsilon 0.6 would exceed its privacy budget (spent 0.6 of 1, 0.4 left)
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

from cityvitals.errors import InputError

GENESIS = "0" * 64
ACCESS_FIELDS = ("seq", "ts", "actor", "role", "action", "dataset", "fields", "purpose", "records", "detail")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def chain_hash(prev: str, row: dict) -> str:
    """SHA-256 over the previous hash and a canonical JSON of the row's content."""
    body = {k: row.get(k) for k in ACCESS_FIELDS}
    ts = body["ts"]
    body["ts"] = ts.astimezone(timezone.utc).isoformat() if isinstance(ts, datetime) else ts
    raw = json.dumps(body, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256((prev + raw).encode()).hexdigest()


class ShareRepo:
    DDL = (
        """CREATE TABLE IF NOT EXISTS share_budget (
            dataset VARCHAR PRIMARY KEY,
            epsilon_total DOUBLE NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS share_budget_ledger (
            ts TIMESTAMPTZ NOT NULL,
            dataset VARCHAR NOT NULL,
            epsilon DOUBLE NOT NULL,
            actor VARCHAR,
            query VARCHAR
        )""",
        """CREATE TABLE IF NOT EXISTS share_access_log (
            seq BIGINT PRIMARY KEY,
            ts TIMESTAMPTZ NOT NULL,
            actor VARCHAR NOT NULL,
            role VARCHAR,
            action VARCHAR NOT NULL,
            dataset VARCHAR,
            fields VARCHAR,
            purpose VARCHAR,
            records BIGINT,
            detail VARCHAR,
            prev_hash VARCHAR NOT NULL,
            hash VARCHAR NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS share_keys (
            key_id VARCHAR PRIMARY KEY,
            fingerprint VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            retired_at TIMESTAMPTZ
        )""",
        """CREATE TABLE IF NOT EXISTS share_exports (
            path VARCHAR PRIMARY KEY,
            ts TIMESTAMPTZ NOT NULL,
            dataset VARCHAR NOT NULL,
            format VARCHAR NOT NULL,
            audience VARCHAR NOT NULL,
            rows BIGINT,
            sha256 VARCHAR,
            key_id VARCHAR,
            actor VARCHAR
        )""",
        """CREATE TABLE IF NOT EXISTS share_releases (
            dataset VARCHAR PRIMARY KEY,
            ts TIMESTAMPTZ NOT NULL,
            epsilon DOUBLE,
            body VARCHAR NOT NULL
        )""",
    )

    def __init__(self, store):
        self.store = store

    def _rows(self, sql: str, params: list | None = None) -> list[dict]:
        with self.store.lock:
            cur = self.store.con.execute(sql, params or [])
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]

    # ---- privacy budget --------------------------------------------------
    def set_budget(self, dataset: str, epsilon_total: float) -> None:
        if not epsilon_total > 0:
            raise InputError(f"dataset {dataset!r}: privacy budget must be positive, got {epsilon_total}")
        with self.store.transaction() as con:
            con.execute("INSERT OR REPLACE INTO share_budget VALUES (?, ?)", [dataset, float(epsilon_total)])

    def budget(self, dataset: str) -> dict:
        rows = self._rows("SELECT epsilon_total FROM share_budget WHERE dataset = ?", [dataset])
        spent = self._rows("SELECT coalesce(sum(epsilon), 0) AS s, count(*) AS n FROM share_budget_ledger WHERE dataset = ?",
                           [dataset])[0]
        total = rows[0]["epsilon_total"] if rows else None
        return {"dataset": dataset, "epsilon_total": total, "spent": round(spent["s"], 12), "releases": spent["n"],
                "remaining": None if total is None else round(total - spent["s"], 12)}

    def spend(self, dataset: str, epsilon: float, *, actor: str, query: str, now: datetime | None = None) -> dict:
        """Charge ``epsilon`` to ``dataset``; refuse (InputError) if that would exceed its budget."""
        if not epsilon > 0:
            raise InputError(f"dataset {dataset!r}: epsilon must be positive, got {epsilon}")
        with self.store.transaction() as con:
            tot = con.execute("SELECT epsilon_total FROM share_budget WHERE dataset = ?", [dataset]).fetchall()
            if not tot:
                raise InputError(f"dataset {dataset!r}: no privacy budget set, so no differentially private release is allowed")
            total = tot[0][0]
            spent = con.execute("SELECT coalesce(sum(epsilon), 0) FROM share_budget_ledger WHERE dataset = ?",
                                [dataset]).fetchall()[0][0]
            if spent + epsilon > total + 1e-12:
                raise InputError(f"dataset {dataset!r}: a release of epsilon {epsilon:g} would exceed its privacy budget "
                                 f"(spent {spent:g} of {total:g}, {total - spent:g} left)")
            con.execute("INSERT INTO share_budget_ledger VALUES (?, ?, ?, ?, ?)",
                        [now or _now(), dataset, float(epsilon), actor, query])
        return {"dataset": dataset, "epsilon": epsilon, "spent": round(spent + epsilon, 12),
                "remaining": round(total - spent - epsilon, 12)}

    def save_release(self, dataset: str, body: Any, epsilon: float | None, now: datetime | None = None) -> None:
        with self.store.transaction() as con:
            con.execute("INSERT OR REPLACE INTO share_releases VALUES (?, ?, ?, ?)",
                        [dataset, now or _now(), epsilon, json.dumps(body, ensure_ascii=False, default=str)])

    def release(self, dataset: str) -> dict | None:
        rows = self._rows("SELECT ts, epsilon, body FROM share_releases WHERE dataset = ?", [dataset])
        if not rows:
            return None
        return {"ts": rows[0]["ts"], "epsilon": rows[0]["epsilon"], "body": json.loads(rows[0]["body"])}

    # ---- access log (hash chain) ----------------------------------------
    def log_access(self, *, actor: str, action: str, dataset: str | None = None, fields: list[str] | None = None,
                   purpose: str | None = None, records: int | None = None, role: str | None = None,
                   detail: Any = None, now: datetime | None = None) -> dict:
        """Append one read (or erasure) to the chained log and return the row with its hash."""
        with self.store.transaction() as con:
            last = con.execute("SELECT seq, hash FROM share_access_log ORDER BY seq DESC LIMIT 1").fetchall()
            seq, prev = (last[0][0] + 1, last[0][1]) if last else (1, GENESIS)
            row = {"seq": seq, "ts": (now or _now()).astimezone(timezone.utc).replace(microsecond=0), "actor": actor,
                   "role": role, "action": action, "dataset": dataset,
                   "fields": None if fields is None else ",".join(fields), "purpose": purpose,
                   "records": records, "detail": None if detail is None else json.dumps(detail, ensure_ascii=False,
                                                                                         sort_keys=True, default=str)}
            row["prev_hash"] = prev
            row["hash"] = chain_hash(prev, row)
            con.execute("INSERT INTO share_access_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [row[k] for k in (*ACCESS_FIELDS, "prev_hash", "hash")])
        return row

    def access_log(self, *, limit: int = 100, actor: str | None = None) -> list[dict]:
        sql = "SELECT * FROM share_access_log"
        params: list = []
        if actor:
            sql += " WHERE actor = ?"
            params.append(actor)
        return self._rows(sql + " ORDER BY seq DESC LIMIT ?", [*params, int(limit)])

    def verify_access_log(self, head: tuple[int, str] | None = None) -> dict:
        """Recompute the chain; report the first row that was edited, removed or reordered.

        ``head`` is the (seq, hash) last written outside the table (the anchor file), so
        that deleting the newest rows is caught too.
        """
        rows = self._rows("SELECT * FROM share_access_log ORDER BY seq")
        prev, expect_seq = GENESIS, 1
        for r in rows:
            if r["seq"] != expect_seq:
                return {"ok": False, "rows": len(rows), "seq": expect_seq, "problem": f"row {expect_seq} is missing (next is {r['seq']})"}
            if r["prev_hash"] != prev:
                return {"ok": False, "rows": len(rows), "seq": r["seq"], "problem": f"row {r['seq']} does not follow the row before it"}
            if chain_hash(prev, r) != r["hash"]:
                return {"ok": False, "rows": len(rows), "seq": r["seq"], "problem": f"row {r['seq']} was edited (hash mismatch)"}
            prev, expect_seq = r["hash"], expect_seq + 1
        if head is not None:
            hseq, hhash = head
            if hseq >= expect_seq:
                return {"ok": False, "rows": len(rows), "seq": expect_seq,
                        "problem": f"rows {expect_seq}..{hseq} were deleted (the anchor says the log reached row {hseq})"}
            if hseq > 0 and not any(r["seq"] == hseq and r["hash"] == hhash for r in rows):
                return {"ok": False, "rows": len(rows), "seq": hseq, "problem": f"row {hseq} does not match the anchor"}
        return {"ok": True, "rows": len(rows), "seq": None, "problem": None, "head": prev}

    # ---- keys ----------------------------------------------------------------
    def add_key(self, key_id: str, fingerprint: str, now: datetime | None = None) -> None:
        now = now or _now()
        with self.store.transaction() as con:
            con.execute("UPDATE share_keys SET retired_at = ? WHERE retired_at IS NULL", [now])
            con.execute("INSERT OR REPLACE INTO share_keys VALUES (?, ?, ?, NULL)", [key_id, fingerprint, now])

    def keys(self) -> list[dict]:
        return self._rows("SELECT * FROM share_keys ORDER BY created_at")

    # ---- exports ---------------------------------------------------------------
    def register_export(self, *, path: str, dataset: str, fmt: str, audience: str, rows: int, sha256: str,
                        key_id: str | None, actor: str, now: datetime | None = None) -> None:
        with self.store.transaction() as con:
            con.execute("INSERT OR REPLACE INTO share_exports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [path, now or _now(), dataset, fmt, audience, rows, sha256, key_id, actor])

    def exports(self) -> list[dict]:
        return self._rows("SELECT * FROM share_exports ORDER BY ts")

    def status(self) -> dict:
        n = self._rows("SELECT count(*) AS n FROM share_access_log")[0]["n"]
        e = self._rows("SELECT count(*) AS n FROM share_exports")[0]["n"]
        return {"share_access_log": n, "share_exports": e}
