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


def _metres_rows(lon0, lat0, lon1, lat1):
    """Row-wise equirectangular distance in metres (arrays of the same length)."""
    k = 111_320.0
    dx = (np.asarray(lon1) - np.asarray(lon0)) * k * np.cos(np.radians(np.asarray(lat0)))
    dy = (np.asarray(lat1) - np.asarray(lat0)) * k
    return np.hypot(dx, dy)


def _nearest(a: tuple[float, int] | None, b: tuple[float, int] | None) -> int | None:
    """The closer of two (distance, case id) candidates."""
    if a is None and b is None:
        return None
    if a is None or (b is not None and b[0] < a[0]):
        return b[1]
    return a[1]


class _Buckets:
    """Cases opened earlier in the same batch, hashed into cells as large as the duplicate
    radius, so a report looks at the 3 x 3 cells around it instead of the whole batch."""

    def __init__(self):
        self.cells: dict[tuple, list[tuple[int, float, float, datetime]]] = {}

    @staticmethod
    def _key(cat, lon: float, lat: float) -> tuple[str, int, int]:
        size = max(cat.dup_radius_m, 1.0) / 111_320.0
        return cat.code, int(math.floor(lat / size)), int(math.floor(lon / size))

    def add(self, r: dict, cid: int) -> None:
        self.cells.setdefault(self._key(r["_cat"], r["lon"], r["lat"]), []).append(
            (cid, r["lon"], r["lat"], r["reported_at"]))

    def near(self, r: dict) -> tuple[float, int] | None:
        if not self.cells:
            return None
        cat = r["_cat"]
        code, y, x = self._key(cat, r["lon"], r["lat"])
        since = r["reported_at"] - timedelta(hours=cat.dup_window_h)
        best = None
        # a cell is `radius` wide in degrees; a degree of longitude is shorter by cos(lat)
        span = int(math.ceil(1.0 / max(math.cos(math.radians(r["lat"])), 0.01)))
        for dy in (-1, 0, 1):
            for dx in range(-span, span + 1):
                for cid, lon, lat, at in self.cells.get((code, y + dy, x + dx), ()):
                    if since <= at <= r["reported_at"]:
                        d = float(metres(r["lon"], r["lat"], lon, lat))
                        if d <= cat.dup_radius_m and (best is None or d < best[0]):
                            best = (d, cid)
        return best


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
        self.data_dir = Path(data_dir) if data_dir else Path(store.home)
        self._units: dict[str, tuple[str | None, str]] | None = None
        self._regions: dict[str | None, str | None] = {}
        self._locator = None
        self._polys = None

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
        if unit_code in self._regions:
            return self._regions[unit_code]
        self._regions[unit_code] = r = self._region_of(unit_code)
        return r

    def _region_of(self, unit_code: str | None) -> str | None:
        tree = self._unit_tree()
        path = self.area_path(unit_code)
        for c in path:
            if tree[c][1] == "district":
                return c
        return path[1] if len(path) > 1 else (path[0] if path else None)

    def locate(self, lon: float, lat: float) -> str | None:
        """The deepest unit containing the point (for reports that come without a unit)."""
        return self.locate_many(np.array([lon], float), np.array([lat], float))[0]

    def locate_many(self, lon: np.ndarray, lat: np.ndarray) -> list[str | None]:
        """The deepest unit of each point, in one call: the grid locator when the store has
        one (built once per desk), else the unit polygons (deepest first)."""
        if len(lon) == 0:
            return []
        if self._locator is None:
            try:
                from cityvitals.space import Locator

                self._locator = Locator.from_store(self.store)
            except Exception:  # no units or no grid: remember it, fall back to the polygons
                self._locator = False
        out: list[str | None] = [None] * len(lon)
        if self._locator:
            got = self._locator.locate(np.asarray(lon, float), np.asarray(lat, float))
            out = [None if c is None else str(c) for c in got]
        missing = [i for i, c in enumerate(out) if c is None]
        if not missing:
            return out
        import shapely

        if self._polys is None:
            rows = self.repo._rows("SELECT code, depth, geometry_wkb FROM units WHERE geometry_wkb IS NOT NULL "
                                   "ORDER BY depth DESC")
            self._polys = ([r["code"] for r in rows], shapely.from_wkb([bytes(r["geometry_wkb"]) for r in rows]))
        codes, geoms = self._polys
        if not codes:
            return out
        pts = shapely.points(np.asarray(lon, float)[missing], np.asarray(lat, float)[missing])
        tree = shapely.STRtree(geoms)
        p_idx, g_idx = tree.query(pts, predicate="within")
        best: dict[int, int] = {}
        for pi, gi in zip(p_idx.tolist(), g_idx.tolist()):   # polygons are ordered deepest first
            if pi not in best or gi < best[pi]:
                best[pi] = gi
        for k, i in enumerate(missing):
            if k in best:
                out[i] = codes[best[k]]
        return out

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

    def _crew_picker(self, workload_km: float = 2.0) -> Callable[[str, float | None, float | None, str | None],
                                                                  str | None]:
        """A crew chooser for one batch: workloads are read once (one grouped query, only if
        the store has crews at all) and counted up in memory as the batch assigns cases."""
        from cityvitals.dispose.dispatch import choose_crew

        pools: dict[str, list[dict]] = {}
        any_crews: list[bool] = []

        def pick(department: str, lon, lat, previous: str | None) -> str | None:
            if not any_crews:
                any_crews.append(self.repo.has_crews())
            if not any_crews[0]:
                return None
            if department not in pools:
                pools[department] = self.repo.crew_loads([department])
            crews = pools[department]
            for c in crews:
                if previous is not None and c["id"] == previous and c["workload"] > 0:
                    c["workload"] -= 1          # re-dispatch: the case leaves its old crew's load
            crew = choose_crew(crews, lon, lat, workload_km=workload_km)
            for c in crews:
                if c["id"] == crew:
                    c["workload"] += 1
            return crew

        return pick

    # ---- reports ---------------------------------------------------------
    def report(self, **fields: Any) -> dict:
        """Open one case (or attach to an open duplicate); see :meth:`report_many`."""
        return self.report_many([fields])[0]

    def report_many(self, reports: list[dict], *, check_duplicates: bool = True) -> list[dict]:
        """Open cases for ``reports`` (dicts: category, lon, lat, unit_code, text, source, channel,
        priority, reporter {name, phone, email, id_number, enterprise, account_id, device_id}, ref,
        reported_at, address, media_url, actor, role). Returns per report ``{case_id, attached, token}``.

        Per batch, whatever the size: one locate call, one query for known refs, one join for
        the duplicate search against stored cases, and one Arrow insert per table."""
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
                lon = lat = None
            elif not (-180 <= float(lon) <= 180 and -90 <= float(lat) <= 90):
                raise InputError(f"{where}: lon/lat {lon}, {lat} is not a WGS84 position")
            text = r.get("text") or r.get("description") or ""
            if len(text) > 4000:
                raise InputError(f"{where}: description is longer than 4000 characters")
            at = _as_utc(r.get("reported_at"), f"{where}: reported_at") or now
            prepared.append({**r, "category": cat.code, "reported_at": at, "unit_code": r.get("unit_code"),
                             "_cat": cat, "_text": text,
                             "lon": None if lon is None else float(lon), "lat": None if lat is None else float(lat)})
        need = [k for k, r in enumerate(prepared) if not r["unit_code"] and r["lon"] is not None]
        if need:
            got = self.locate_many(np.array([prepared[k]["lon"] for k in need]),
                                   np.array([prepared[k]["lat"] for k in need]))
            for k, code in zip(need, got):
                prepared[k]["unit_code"] = code
        prepared.sort(key=lambda r: r["reported_at"])
        known = self.repo.case_ids_for_refs(sorted({str(r["ref"]) for r in prepared if r.get("ref")}))
        new_cases, events, reps, people, attach_ev, results = [], [], [], [], [], []
        with self.store.transaction() as con:
            fresh = [k for k, r in enumerate(prepared) if not (r.get("ref") and str(r["ref"]) in known)]
            ids = iter(self.repo.next_ids(con, len(fresh)))
            pids = iter(self.repo.next_ids(con, len(fresh), "case_reporters_id_seq"))
            stored = self._stored_duplicates(con, prepared, fresh) if check_duplicates else {}
            batch_open = _Buckets()
            seen_refs: dict[str, int] = {}
            for k, r in enumerate(prepared):
                ref = str(r["ref"]) if r.get("ref") else None
                if ref is not None and (ref in known or ref in seen_refs):
                    results.append({"ref": r["ref"], "case_id": known.get(ref, seen_refs.get(ref)),
                                    "attached": False, "skipped": True})
                    continue
                cid, pid = next(ids), next(pids)
                who = r.get("reporter") or {}
                text = r["_text"]
                person = {"id": pid, **{f: (None if who.get(f) in (None, "") else str(who[f]))
                                        for f in ("name", "phone", "email", "id_number", "enterprise",
                                                  "account_id", "device_id")}}
                has_person = any(person[f] for f in person if f != "id")
                dup = None
                if check_duplicates and r["lon"] is not None:
                    dup = _nearest(stored.get(k), batch_open.near(r))
                rep = {"ref": r.get("ref"), "reporter_id": pid if has_person else None,
                       "reported_at": r["reported_at"], "channel": r.get("channel"), "text": text}
                if has_person:
                    people.append(person)
                if ref is not None:
                    seen_refs[ref] = cid if dup is None else dup
                if dup is not None:
                    rep.update(case_id=dup, attached=True)
                    reps.append(rep)
                    attach_ev.append((dup, Event("attach_report", r["reported_at"], "system", "system",
                                                 {"ref": r.get("ref")})))
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
                if check_duplicates and r["lon"] is not None:
                    batch_open.add(r, cid)
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
            old_rows = self.repo.get_states(sorted({cid for cid, _ in attach_ev if cid not in new_ids}))
            for cid, ev in attach_ev:
                counts[cid] = counts.get(cid, 0) + 1
                if cid in new_ids:
                    new_seq[cid] += 1
                    events.append({"case_id": cid, "seq": new_seq[cid], "ts": ev.ts, "action": ev.action,
                                   "actor": "system", "role": "system", "from_state": "reported",
                                   "to_state": "reported", "data": json.dumps(ev.data, ensure_ascii=False)})
                    continue
                s0 = upd.get(cid) or state_of(old_rows[cid])
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

    def _stored_duplicates(self, con, prepared: list[dict], fresh: list[int]) -> dict[int, tuple[float, int]]:
        """For each report (index into ``prepared``), the nearest stored open case of its category
        within the category's radius and window: one join for the whole batch."""
        idx = [k for k in fresh if prepared[k]["lon"] is not None]
        if not idx:
            return {}
        rs = [prepared[k] for k in idx]
        lat = np.array([r["lat"] for r in rs])
        lon = np.array([r["lon"] for r in rs])
        rad = np.array([r["_cat"].dup_radius_m for r in rs])
        dlat = rad / 111_320.0
        dlon = dlat / np.maximum(np.cos(np.radians(lat)), 0.01)
        probes = pa.table({
            "i": pa.array(idx, pa.int64()), "category": pa.array([r["category"] for r in rs]),
            "since": pa.array([r["reported_at"] - timedelta(hours=r["_cat"].dup_window_h) for r in rs], _TS),
            "lon0": lon - dlon, "lon1": lon + dlon, "lat0": lat - dlat, "lat1": lat + dlat})
        hits = self.repo.duplicate_candidates(con, probes)
        if not hits:
            return {}
        pos = {k: j for j, k in enumerate(idx)}
        j = np.array([pos[h["i"]] for h in hits])
        d = _metres_rows(lon[j], lat[j], np.array([h["lon"] for h in hits]), np.array([h["lat"] for h in hits]))
        best: dict[int, tuple[float, int]] = {}
        for h, dist, jj in zip(hits, d.tolist(), j.tolist()):
            if dist <= rad[jj] and (h["i"] not in best or dist < best[h["i"]][0]):
                best[h["i"]] = (dist, int(h["id"]))
        return best

    # ---- actions ---------------------------------------------------------
    def act(self, case_id: int, action: str, actor: Actor, *, at: datetime | None = None, **data: Any) -> CaseState:
        """Take one action on one case; TransitionError (an InputError) if it is not allowed."""
        return self.act_many([{"case_id": case_id, "action": action, "actor": actor, "at": at, "data": data}])[0]

    def act_many(self, items: list[dict]) -> list[CaseState]:
        """Take several actions (dicts: case_id, action, actor, at, data) in order, all or nothing.

        One read of the snapshots, the pure state machine in memory, then one Arrow append
        to the log, one UPDATE of the snapshots and one notice insert for the whole batch."""
        if not items:
            return []
        now = self.clock()
        ids = sorted({int(it["case_id"]) for it in items})
        rows = self.repo.get_states(ids)
        states: dict[int, CaseState] = {}
        events, out, closed = [], [], []
        depts = None
        pick = None
        for it in items:
            cid = int(it["case_id"])
            if cid not in rows:
                raise InputError(f"case {cid}: no such case")
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
                    pick = pick or self._crew_picker()
                    data["crew"] = pick(data["department"], rows[cid]["lon"], rows[cid]["lat"], s.crew)
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
                closed.append({"case_id": cid, "ts": at, "kind": "closed",
                               "message": f"您反映的问题（案件 {cid}）已处理结案。Your report (case {cid}) is closed."})
            states[cid] = s1
            out.append(s1)
        with self.store.transaction() as con:
            self.repo.append_events(con, _table(events, events[0].keys()))
            self._write_states(con, states)
            if closed:
                self.repo.notify_many(con, _table(closed, ("case_id", "ts", "kind", "message")))
        return out

    def _write_states(self, con, states: dict[int, CaseState]) -> None:
        cols = ("id",) + STATE_COLUMNS
        vals = [(cid, *(getattr(s, c) for c in STATE_COLUMNS)) for cid, s in states.items()]
        arrays = [pa.array(list(col), type=_TYPES.get(name, pa.string())) for name, col in zip(cols, zip(*vals))]
        self.repo.update_states(con, pa.Table.from_arrays(arrays, names=list(cols)))

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
