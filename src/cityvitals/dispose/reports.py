"""Citizen and enterprise reports (the simulator's ``reports.ndjson``, a hotline export) into cases.

Each line has ``id``, ``reported_at``, ``channel``, ``reporter_type``, ``service_code`` or
``category``, ``text``, ``lon``/``lat``, ``unit_code`` and a ``reporter`` object with
personal data (name, mobile, resident_id, enterprise). The service code goes through the
code table's aliases; the personal data goes to the reporters table only; importing the
same file twice opens nothing new (reports are keyed by their id).
"""

from __future__ import annotations

import json
from pathlib import Path

from cityvitals.errors import InputError


def read_reports(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file (load a simulated city first: cityvitals simulate load)")
    out = []
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: line {n}: not JSON ({exc.msg})") from None
        if not isinstance(doc, dict):
            raise InputError(f"{path}: line {n}: not a JSON object")
        out.append((n, doc))
    return [_to_report(path, n, d) for n, d in out]


def _to_report(path: Path, n: int, d: dict) -> dict:
    code = d.get("category_code") or d.get("service_code") or d.get("category")
    if not code:
        raise InputError(f"{path}: line {n}: no service_code or category")
    who = d.get("reporter") or {}
    return {
        "ref": str(d.get("id") or f"{path.name}:{n}"), "category": str(code), "reported_at": d.get("reported_at"),
        "channel": d.get("channel"), "source": "enterprise" if d.get("reporter_type") == "enterprise" else "public",
        "text": d.get("text") or "", "lon": d.get("lon"), "lat": d.get("lat"), "unit_code": d.get("unit_code"),
        "reporter": {"name": who.get("name"), "phone": who.get("mobile") or who.get("phone"),
                     "email": who.get("email"), "id_number": who.get("resident_id") or who.get("id_number"),
                     "enterprise": who.get("enterprise")},
        "actor": "hotline", "role": "operator",
    }


def import_reports(desk, path: str | Path, *, batch: int = 500) -> dict:
    """Open (or attach) a case for every report in ``path``; returns counts."""
    reps = read_reports(path)
    opened = attached = skipped = 0
    for i in range(0, len(reps), batch):
        for r in desk.report_many(reps[i:i + batch]):
            if r.get("skipped"):
                skipped += 1
            elif r["attached"]:
                attached += 1
            else:
                opened += 1
    return {"reports": len(reps), "opened": opened, "attached": attached, "skipped": skipped}
