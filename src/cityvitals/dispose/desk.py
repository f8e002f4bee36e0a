"""The case desk: every write to cases goes through here, in batches, one transaction each.

The desk loads each case's current state from the snapshot, applies the workflow's pure
:func:`~cityvitals.dispose.workflow.apply` in memory (so an illegal action anywhere in a
batch refuses the whole batch before anything is written), then appends the events and
writes the new snapshots as Arrow tables. New reports that repeat an open case (same
category, nearby, within the category's time window) are attached to it instead of
opening a new one; when a case closes, every report attached to it gets a notice.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa

from cityvitals.dispose.codes import CodeTable, Ownership
from cityvitals.dispose.pii import redact
from cityvitals.dispose.workflow import (
    ACTIONS, Actor, CaseState, Event, PUBLIC_SOURCES, TransitionError, apply, escalation_level,
)
from cityvitals.errors import InputError
from cityvitals.store.duck.cases import STATE_COLUMNS

UTC = timezone.utc
_TS = pa.timestamp("us", tz="UTC")
_TYPES = {
    "reported_at": _TS, "updated_at": _TS, "filed_at": _TS, "dispatched_at": _TS, "handled_at": _TS,
    "closed_at": _TS, "pause_started": _TS, "due_at": _TS, "ts": _TS,
    "verified": pa.bool_(), "natural_clock": pa.bool_(), "on_time": pa.bool_(),
    "limit_h": pa.float64(), "extra_h": pa.float64(), "paused_h": pa.float64(), "lon": pa.float64(),
    "lat": pa.float64(), "escalation": pa.int32(), "returns": pa.int32(), "reworks": pa.int32(),
    "extensions": pa.int32(), "seq": pa.int32(), "reports": pa.int32(), "id": pa.int64(), "case_id": pa.int64(),
    "reporter_id": pa.int64(), "attached": pa.bool_(), "size": pa.int64(), "added_at": _TS,
}


def _table(rows: list[dict], columns: Iterable[str]) -> pa.Table:
    cols = list(columns)
    return pa.table({c: pa.array([r.get(c) for r in rows], type=_TYPES.get(c, pa.string())) for c in cols})


def utcnow() -> datetime:
    return datetime.now(UTC)


def _as_utc(t: datetime | str | None, where: str) -> datetime | None:
    if t is None:
        return None
    if isinstance(t, str):
        try:
            t = datetime.fromisoformat(t.replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"{where}: {t!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise InputError(f"{where}: give the time with its offset (…Z or +08:00)")
    return t.astimezone(UTC)


def metres(lon0: float, lat0: float, lon1, lat1):
    """Equirectangular distance in metres: exact enough at city scale, and vectorises."""
    k = 111_320.0
    dx = (np.asarray(lon1) - lon0) * k * math.cos(math.radians(lat0))
    dy = (np.asarray(lat1) - lat0) * k
    return np.hypot(dx, dy)


def state_of(row: dict) -> CaseState:
    return CaseState(case_id=row["id"], **{c: row[c] for c in STATE_COLUMNS})


class CaseDesk:
    """Open, act on, escalate and import cases in ``store`` (``clock`` gives 'now')."""

    def __init__(self, store, *, clock: Callable[[], datetime] = utcnow, codes: CodeTable | None = None,
                 ownership: Ownership | None = None, data_dir: Path | str | None = None):
        self.store = store
        self.repo = store.cases
        self.clock = clock
        self.codes = codes or CodeTable.load()
        self.ownership = ownership or Ownership.load(codes=self.codes)
        self.data_dir = Path(data_dir) if data_dir else Path(store.path).parent
        self._units: dict[str, tuple[str | None, str]] | None = None
        self._units_n = -1

    # ---- places ----------------------------------------------------------
    def _unit_tree(self) -> dict[str, tuple[str | None, str]]:
        if self._units is None:
            rows = self.repo._rows("SELECT code, parent_code, level FROM units")
            self._units = {r["code"]: (r["parent_code"], r["level"]) for r in rows}
        return self._units

    def area_path(self, unit_code: str | None) -> list[str]:
        """The unit and its ancestors, root first."""
        tree = self._unit_tree()
        out, c, seen = [], unit_code, set()
        while c and c in tree and c not in seen:
            seen.add(c)
            out.append(c)
            c = tree[c][0]
        return out[::-1]

    def region_of(self, unit_code: str | None) -> str | None:
        """The district the unit lies in (the region of the evaluation), or the top unit found."""
        tree = self._unit_tree()
        path = self.area_path(unit_code)
        for c in path:
            if tree[c][1] == "district":
                return c
        return path[1] if len(path) > 1 else (path[0] if path else None)

    def locate(self, lon: float, lat: float) -> str | None:
        """The deepest unit containing the point (for reports that come without a unit)."""
        try:
            from cityvitals.space import Locator

            if getattr(self, "_locator", None) is None:
                self._locator = Locator.from_store(self.store)
            code = self._locator.locate(np.array([lon]), np.array([lat]))[0]
            if code:
                return str(code)
        except Exception:  # no grid index built: fall back to the unit polygons
            pass
        import shapely

        if getattr(self, "_polys", None) is None:
            rows = self.repo._rows("SELECT code, depth, geometry_wkb FROM units WHERE geometry_wkb IS NOT NULL "
                                   "ORDER BY depth DESC")
            self._polys = ([r["code"] for r in rows], shapely.from_wkb([bytes(r["geometry_wkb"]) for r in rows]))
        codes, geoms = self._polys
        if not codes:
            return None
        hit = np.flatnonzero(shapely.contains_xy(geoms, lon, lat))
        return codes[int(hit[0])] if len(hit) else None

    # ---- departments and crews ------------------------------------------
    def sync_departments(self) -> int:
        """Write the ownership table's departments into the store (idempotent)."""
        with self.store.transaction() as con:
            self.repo.upsert_departments(con, list(self.ownership.departments.values()))
        return len(self.ownership.departments)

    def known_departments(self) -> set[str]:
        return set(self.ownership.departments) | {d["code"] for d in self.repo.departments()}

    def add_crew(self, crew_id: str, department: str, *, name: str | None = None, lon: float | None = None,
                 lat: float | None = None, active: bool = True) -> None:
        if department not in self.known_departments():
            raise InputError(f"crew {crew_id}: department {department!r} is unknown")
        with self.store.transaction() as con:
            self.repo.upsert_crew(con, crew_id, department, name, lon, lat, active)

    def pick_crew(self, department: str, lon: float | None, lat: float | None, *,
                  workload_km: float = 2.0) -> str | None:
        """The department's active crew with the least distance + ``workload_km`` × open cases."""
        from cityvitals.dispose.dispatch import choose_crew

        crews = [c for c in self.repo.crews(department) if c["active"]]
        return choose_crew(crews, lon, lat, workload_km=workload_km)

    # ---- reports ---------------------------------------------------------
    def report(self, **fields: Any) -> dict:
        """Open one case (or attach to an open duplicate); see :meth:`report_many`."""
        return self.report_many([fields])[0]

    def report_many(self, reports: list[dict], *, check_duplicates: bool = True) -> list[dict]:
        """Open cases for ``reports`` (dicts: category, lon, lat, unit_code, text, source, channel,
        priority, reporter {name, phone, email, id_number, enterprise, account_id, device_id}, ref,
        reported_at, address, media_url, actor, role). Returns per report ``{case_id, attached, token}``."""
        now = self.clock()
        prepared = []
        for i, r in enumerate(reports):
            where = f"report {r.get('ref') or i}"
            cat = self.codes.find(str(r.get("category", "")))
            if cat is None:
                raise InputError(f"{where}: category {r.get('category')!r} is not in the code table")
            lon, lat = r.get("lon"), r.get("lat")
            if lon is None or lat is None:
                if not r.get("unit_code") and not r.get("address"):
                    raise InputError(f"{where}: give a location (lon and lat, a unit or an address)")
            elif not (-180 <= float(lon) <= 180 and -90 <= float(lat) <= 90):
                raise InputError(f"{where}: lon/lat {lon}, {lat} is not a WGS84 position")
            at = _as_utc(r.get("reported_at"), f"{where}: reported_at") or now
            unit = r.get("unit_code") or (self.locate(float(lon), float(lat)) if lon is not None else None)
            prepared.append({**r, "category": cat.code, "reported_at": at, "unit_code": unit, "_cat": cat,
                             "lon": None if lon is None else float(lon), "lat": None if lat is None else float(lat)})
        prepared.sort(key=lambda r: r["reported_at"])
        known = self.repo.refs_known([str(r["ref"]) for r in prepared if r.get("ref")])
        new_cases, events, reps, people, attach_ev, results = [], [], [], [], [], []
        batch_open: list[dict] = []
        with self.store.transaction() as con:
            ids = self.repo.next_ids(con, len(prepared))
            pids = self.repo.next_ids(con, len(prepared), "case_reporters_id_seq")
            for r, cid, pid in zip(prepared, ids, pids):
                if r.get("ref") and str(r["ref"]) in known:
                    results.append({"ref": r["ref"], "case_id": self.repo.by_ref(str(r["ref"]))["id"],
                                    "attached": False, "skipped": True})
                    continue
                who = r.get("reporter") or {}
                text = r.get("text") or r.get("description") or ""
                if len(text) > 4000:
                    raise InputError(f"report {r.get('ref') or cid}: description is longer than 4000 characters")
                person = {"id": pid, **{k: (None if who.get(k) in (None, "") else str(who[k]))
                                        for k in ("name", "phone", "email", "id_number", "enterprise",
                                                  "account_id", "device_id")}}
                has_person = any(person[k] for k in person if k != "id")
                dup = self._duplicate_of(r, batch_open) if check_duplicates and r["lon"] is not None else None
                rep = {"ref": r.get("ref"), "reporter_id": pid if has_person else None,
                       "reported_at": r["reported_at"], "channel": r.get("channel"), "text": text}
                if has_person:
                    people.append(person)
                if dup is not None:
                    rep.update(case_id=dup, attached=True)
                    reps.append(rep)
                    ev = Event("attach_report", r["reported_at"], "system", "system", {"ref": r.get("ref")})
                    attach_ev.append((dup, ev))
                    results.append({"ref": r.get("ref"), "case_id": dup, "attached": True, "token": None})
                    continue
                src = r.get("source") or "public"
                st = apply(CaseState(case_id=cid), Event("report", r["reported_at"], r.get("actor") or "system",
                                                        r.get("role") or "system",
                                                        {"category": r["category"], "source": src,
                                                         "priority": r.get("priority") or "normal"}), self.codes)
                if src == "inspector":
                    st.inspector = r.get("actor")
                names = [person.get("name"), person.get("enterprise")]
                token = secrets.token_hex(8)
                row = {**{c: getattr(st, c) for c in STATE_COLUMNS}, "id": cid, "ref": r.get("ref"),
                       "channel": r.get("channel"), "description": redact(text, names), "lon": r["lon"],
                       "lat": r["lat"], "unit_code": r["unit_code"], "region_code": self.region_of(r["unit_code"]),
                       "address": redact(r.get("address"), names) or None, "media_url": r.get("media_url"),
                       "token": token, "codes_version": self.codes.version, "reports": 1}
                new_cases.append(row)
                batch_open.append(row)
                events.append({"case_id": cid, "seq": 1, "ts": r["reported_at"], "action": "report",
                               "actor": r.get("actor") or "system", "role": r.get("role") or "system",
                               "from_state": None, "to_state": "reported",
                               "data": json.dumps({"category": r["category"], "source": src,
                                                   "priority": st.priority, "ref": r.get("ref")}, ensure_ascii=False)})
                rep.update(case_id=cid, attached=False)
                reps.append(rep)
                results.append({"ref": r.get("ref"), "case_id": cid, "attached": False, "token": token})
            # duplicates attached to cases that existed before this batch get an event each
            new_ids = {c["id"] for c in new_cases}
            counts: dict[int, int] = {}
            upd: dict[int, CaseState] = {}
            new_seq: dict[int, int] = {c["id"]: 1 for c in new_cases}
            for cid, ev in attach_ev:
                counts[cid] = counts.get(cid, 0) + 1
                if cid in new_ids:
                    new_seq[cid] += 1
                    events.append({"case_id": cid, "seq": new_seq[cid], "ts": ev.ts, "action": ev.action,
                                   "actor": "system", "role": "system", "from_state": "reported",
                                   "to_state": "reported", "data": json.dumps(ev.data, ensure_ascii=False)})
                    continue
                s0 = upd.get(cid) or state_of(self.repo.get(cid))
                s1 = apply(s0, ev, self.codes)
                s1.updated_at = max(s0.updated_at, ev.ts)
                upd[cid] = s1
                events.append({"case_id": cid, "seq": s1.seq, "ts": ev.ts, "action": ev.action, "actor": "system",
                               "role": "system", "from_state": s0.state, "to_state": s1.state,
                               "data": json.dumps(ev.data, ensure_ascii=False)})
            for c in new_cases:
                c["seq"] = new_seq[c["id"]]
                c["reports"] = 1 + counts.pop(c["id"], 0)
            if new_cases:
                self.repo.insert_cases(con, _table(new_cases, new_cases[0].keys()))
            if events:
                self.repo.append_events(con, _table(events, events[0].keys()))
            if people:
                self.repo.insert_rows(con, "case_reporters", _table(people, people[0].keys()))
            if reps:
                self.repo.insert_rows(con, "case_reports", _table(reps, ("ref", "case_id", "reporter_id",
                                                                         "reported_at", "channel", "text", "attached")))
            if upd:
                self._write_states(con, upd)
            self.repo.add_reports_count(con, counts)
        return results

    def _duplicate_of(self, r: dict, batch_open: list[dict]) -> int | None:
        """An open case of the same category near ``r`` reported within the category's window."""
        cat = r["_cat"]
        since = r["reported_at"] - timedelta(hours=cat.dup_window_h)
        dlat = cat.dup_radius_m / 111_320.0
        dlon = dlat / max(math.cos(math.radians(r["lat"])), 0.01)
        cands = self.repo.open_candidates(cat.code, since, r["lon"] - dlon, r["lat"] - dlat, r["lon"] + dlon,
                                          r["lat"] + dlat)
        cands += [c for c in batch_open if c["category"] == cat.code and c["reported_at"] >= since
                  and c["reported_at"] <= r["reported_at"] and c["lon"] is not None]
        if not cands:
            return None
        d = metres(r["lon"], r["lat"], [c["lon"] for c in cands], [c["lat"] for c in cands])
        j = int(np.argmin(d))
        return int(cands[j]["id"]) if d[j] <= cat.dup_radius_m else None

    # ---- actions ---------------------------------------------------------
    def act(self, case_id: int, action: str, actor: Actor, *, at: datetime | None = None, **data: Any) -> CaseState:
        """Take one action on one case; TransitionError (an InputError) if it is not allowed."""
        return self.act_many([{"case_id": case_id, "action": action, "actor": actor, "at": at, "data": data}])[0]

    def act_many(self, items: list[dict]) -> list[CaseState]:
        """Take several actions (dicts: case_id, action, actor, at, data) in order, all or nothing."""
        now = self.clock()
        ids = sorted({int(it["case_id"]) for it in items})
        rows = self.repo.get_many(ids)
        states: dict[int, CaseState] = {}
        facts: dict[int, dict] = {}
        events, out, closed = [], [], []
        depts = None
        for it in items:
            cid = int(it["case_id"])
            if cid not in rows:
                raise InputError(f"case {cid}: no such case")
            facts[cid] = rows[cid]
            s = states.get(cid) or state_of(rows[cid])
            actor: Actor = it["actor"]
            action = it["action"]
            data = {k: v for k, v in (it.get("data") or {}).items() if v is not None}
            at = _as_utc(it.get("at"), f"case {cid}: at") or now
            if at < s.updated_at:
                at = s.updated_at
            if action == "dispatch":
                if not data.get("department"):
                    data["department"] = self.ownership.department_for(s.category, self.area_path(rows[cid]["unit_code"]))
                depts = depts or self.known_departments()
                if data["department"] not in depts:
                    raise InputError(f"case {cid}: department {data['department']!r} is unknown")
                if data.get("crew", "auto") == "auto":
                    data["crew"] = self.pick_crew(data["department"], rows[cid]["lon"], rows[cid]["lat"])
            if action == "return":
                data["department"] = s.department
            if actor.department is not None:
                data["actor_department"] = actor.department
            if action not in ACTIONS:
                raise TransitionError(f"case {cid}: unknown action {action!r}; one of: {', '.join(ACTIONS)}")
            s1 = apply(s, Event(action, at, actor.name, actor.role, data), self.codes)
            events.append({"case_id": cid, "seq": s1.seq, "ts": at, "action": action, "actor": actor.name,
                           "role": actor.role, "from_state": s.state, "to_state": s1.state,
                           "data": json.dumps(data, ensure_ascii=False, default=str) if data else None})
            if action == "close":
                closed.append((cid, at))
            states[cid] = s1
            out.append(s1)
        with self.store.transaction() as con:
            self.repo.append_events(con, _table(events, events[0].keys()))
            self._write_states(con, states)
            for cid, at in closed:
                self.repo.notify_reporters(con, [cid], at, "closed",
                                           f"您反映的问题（案件 {cid}）已处理结案。Your report (case {cid}) is closed.")
        return out

    def _write_states(self, con, states: dict[int, CaseState]) -> None:
        rows = [{"id": cid, **{c: getattr(s, c) for c in STATE_COLUMNS}} for cid, s in states.items()]
        self.repo.update_states(con, _table(rows, ("id",) + STATE_COLUMNS))

    # ---- timers ----------------------------------------------------------
    def escalate_overdue(self, now: datetime | None = None) -> list[dict]:
        """Escalate (督办) every running case past its deadline, one level per limit overdue."""
        now = now or self.clock()
        items = []
        for row in self.repo.overdue_candidates(now):
            s = state_of(row)
            level = escalation_level(s, now, self.codes.calendar)
            if level > s.escalation:
                items.append({"case_id": row["id"], "action": "escalate", "actor": Actor("timer", "system"),
                              "at": now, "data": {"level": level, "reason": "overdue",
                                                  "due_at": s.due_at.isoformat()}})
        if items:
            self.act_many(items)
        return [{"case_id": it["case_id"], "level": it["data"]["level"]} for it in items]

    # ---- reads -----------------------------------------------------------
    def state(self, case_id: int) -> CaseState:
        row = self.repo.get(case_id)
        if row is None:
            raise InputError(f"case {case_id}: no such case")
        return state_of(row)

    def replay(self, case_id: int) -> CaseState:
        """The state folded from the event log alone (the snapshot must agree with it)."""
        from cityvitals.dispose.workflow import fold

        evs = self.repo.events(case_id)
        if not evs:
            raise InputError(f"case {case_id}: no such case")
        log = [Event(e["action"], e["ts"], e["actor"], e["role"], json.loads(e["data"]) if e["data"] else {})
               for e in evs]
        s = fold(log, self.codes, case_id)
        row = self.repo.get(case_id)
        if row and row["source"] == "inspector":
            s.inspector = row["inspector"]
        return s

    def attach_photo(self, case_id: int, data: bytes, *, stage: str = "report", by: str = "system",
                     name: str = "photo") -> dict:
        from cityvitals.dispose.attachments import store_photo

        if self.repo.get(case_id) is None:
            raise InputError(f"case {case_id}: no such case")
        info = store_photo(self.data_dir, case_id, data, name=name)
        with self.store.transaction() as con:
            aid = self.repo.next_ids(con, 1, "case_attachments_id_seq")[0]
            row = {"id": aid, "case_id": int(case_id), "stage": stage, **info, "added_at": self.clock(),
                   "added_by": by}
            self.repo.insert_rows(con, "case_attachments", _table([row], ("id", "case_id", "stage", "sha256", "mime",
                                                                          "size", "path", "added_at", "added_by")))
        return row


def public_source(source: str) -> bool:
    return source in PUBLIC_SOURCES


def state_dict(s: CaseState) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(s).items()}
