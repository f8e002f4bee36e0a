"""The access log of personal data: append-only, hash-chained, anchored outside the table.

Each row's hash covers its content and the previous row's hash, so editing a row, or
deleting one in the middle, breaks the chain. Deleting the newest rows leaves a valid
shorter chain, so the last (seq, hash) is also written to ``<home>/share/audit.head``
after every append; ``verify`` checks the table against that anchor. (Someone who can
rewrite both the table and the anchor file can still forge history: ship the anchor to
a separate system, e.g. print it into the daily operations report, for that.)

>>> import tempfile
>>> from cityvitals.store import open_store
>>> store = open_store(tempfile.mkdtemp())
>>> _ = record(store, actor="li", action="read", dataset="reports", fields=["reporter_mobile"],
...            purpose="call back about case 12", records=1)
>>> verify(store)["ok"]
True
>>> _ = store.con.execute("UPDATE share_access_log SET purpose = 'curiosity'")
>>> verify(store)["problem"]
'row 1 was edited (hash mismatch)'
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

HEAD_FILE = "audit.head"


def _head_path(store) -> Path:
    d = Path(store.home) / "share"
    d.mkdir(parents=True, exist_ok=True)
    return d / HEAD_FILE


def record(store, *, actor: str, action: str, dataset: str | None = None, fields: list[str] | None = None,
           purpose: str | None = None, records: int | None = None, role: str | None = None, detail: Any = None,
           now: datetime | None = None) -> dict:
    """Append one access (who, what, when, why) and move the anchor to it."""
    row = store.share.log_access(actor=actor, action=action, dataset=dataset, fields=fields, purpose=purpose,
                                 records=records, role=role, detail=detail, now=now)
    _head_path(store).write_text(json.dumps({"seq": row["seq"], "hash": row["hash"]}), encoding="utf-8")
    return row


def head(store) -> tuple[int, str] | None:
    p = _head_path(store)
    if not p.exists():
        return None
    doc = json.loads(p.read_text("utf-8"))
    return int(doc["seq"]), str(doc["hash"])


def verify(store) -> dict:
    """{'ok': bool, 'rows': n, 'seq': first bad row or None, 'problem': text or None}."""
    h = head(store)
    res = store.share.verify_access_log(h)
    if res["ok"] and h is None and res["rows"]:
        return {**res, "ok": False, "seq": None, "problem": "the anchor file is missing"}
    return res


def entries(store, *, limit: int = 100, actor: str | None = None) -> list[dict]:
    return store.share.access_log(limit=limit, actor=actor)
