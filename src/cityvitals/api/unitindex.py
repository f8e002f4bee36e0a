"""An in-memory index of the unit tree: parents, children, names, levels.

Scope checks, breadcrumbs and the map's drill-down ask tree questions on every request;
answering them from dicts avoids a recursive query each time. The index reloads itself
when the units table changes (a cheap fingerprint checked at most once a second).
"""

from __future__ import annotations

import threading
import time
from collections import deque


class UnitIndex:
    def __init__(self, store, *, check_every_s: float = 1.0):
        self.store = store
        self.check_every_s = check_every_s
        self._lock = threading.Lock()
        self._fingerprint: tuple | None = None
        self._checked = 0.0
        self.info: dict[str, dict] = {}
        self.children: dict[str | None, list[str]] = {}

    def _load(self) -> None:
        with self.store.lock:
            fp = tuple(self.store.con.execute(
                "SELECT count(*), coalesce(sum(hash(code, parent_code, name, level)), 0) FROM units"
            ).fetchall()[0])
            if fp == self._fingerprint:
                return
            rows = self.store.con.execute(
                "SELECT code, name, level, depth, parent_code, centroid_lon, centroid_lat FROM units ORDER BY depth, code"
            ).fetchall()
        info, children = {}, {}
        for code, name, level, depth, parent, lon, lat in rows:
            info[code] = {"code": code, "name": name, "level": level, "depth": depth, "parent_code": parent,
                          "centroid_lon": lon, "centroid_lat": lat}
        for code, u in info.items():
            parent = u["parent_code"] if u["parent_code"] in info else None
            children.setdefault(parent, []).append(code)
        self.info, self.children, self._fingerprint = info, children, fp

    def refresh(self, force: bool = False) -> "UnitIndex":
        now = time.monotonic()
        if force or now - self._checked >= self.check_every_s:
            with self._lock:
                self._load()
                self._checked = now
        return self

    # ---- questions ----------------------------------------------------------
    @property
    def fingerprint(self) -> tuple | None:
        """Changes whenever the unit tree does (count and a hash of codes, parents, names, levels)."""
        return self._fingerprint

    def roots(self) -> list[str]:
        return list(self.refresh().children.get(None, []))

    def get(self, code: str) -> dict | None:
        return self.refresh().info.get(code)

    def ancestors(self, code: str) -> list[str]:
        """The unit and its ancestors, root first."""
        self.refresh()
        out, seen = [], set()
        while code in self.info and code not in seen:
            seen.add(code)
            out.append(code)
            code = self.info[code]["parent_code"]
        return out[::-1]

    def descendants(self, code: str, *, include_self: bool = True) -> list[str]:
        """Breadth-first: the unit, its children, their children, ..."""
        self.refresh()
        out = [code] if include_self else []
        todo = deque(self.children.get(code, []))
        while todo:
            c = todo.popleft()
            out.append(c)
            todo.extend(self.children.get(c, []))
        return out

    def at_depth(self, code: str, depth: int) -> list[str]:
        """Descendants of ``code`` at absolute ``depth`` (or the deepest leaves above it)."""
        self.refresh()
        out, todo = [], deque([code])
        while todo:
            c = todo.popleft()
            kids = self.children.get(c, [])
            if self.info[c]["depth"] >= depth or not kids:
                if c != code:
                    out.append(c)
                continue
            todo.extend(kids)
        return out

    def within(self, code: str, area: str | None) -> bool:
        """Is ``code`` the area itself or below it? (No area: everything is within.)"""
        if area is None:
            return True
        return area in self.ancestors(code)
