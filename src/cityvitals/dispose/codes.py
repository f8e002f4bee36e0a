"""The component (部件) / event (事件) code table and the ownership table, as versioned data.

Categories are ``component.SSSS`` or ``event.SSSS`` (major class + subclass, GB/T 30428.2);
the national base and the local extension are lists in ``codes.yaml``, and a city can
pass its own file (or extra entries) to override and extend them. Every case keeps the
table version it was filed under. Aliases map other systems' codes (the simulator's
``SA01`` ...) onto ours. The ownership table (``ownership.yaml``) says which department
handles a category in an area.

>>> t = CodeTable.load()
>>> t.get("SA01").code, t.get("event.0102").zh
('event.0102', '暴露垃圾')
>>> t.limit("event.0102", "normal"), t.limit("event.0102", "urgent")
(Limit(hours=4.0, natural=False), Limit(hours=1.0, natural=True))
>>> Ownership.load().department_for("event.0102", ["C", "D1"])
'sanitation'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from cityvitals.dispose.calendar import Limit, WorkCalendar
from cityvitals.errors import InputError

PRIORITIES = ("urgent", "high", "normal", "low")


def _read(path: str | Path | None, default: str) -> tuple[dict, str]:
    if path is None:
        return yaml.safe_load(resources.files("cityvitals.dispose").joinpath(default).read_text("utf-8")), default
    try:
        return yaml.safe_load(Path(path).read_text("utf-8")) or {}, str(path)
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None


@dataclass(frozen=True)
class Category:
    code: str
    kind: str            # component | event
    zh: str
    en: str
    group: str
    limit: str
    dept: str | None
    keywords: str = ""
    description: str = ""
    aliases: tuple[str, ...] = ()
    dup_radius_m: float = 150.0
    dup_window_h: float = 48.0
    open311_type: str = "realtime"
    local: bool = False

    @property
    def name(self) -> str:
        return f"{self.zh} {self.en}"


@dataclass
class CodeTable:
    version: str
    categories: dict[str, Category]
    groups: dict[str, str]
    priorities: dict[str, dict]
    calendar: WorkCalendar = field(default_factory=WorkCalendar.load)
    _alias: dict[str, str] = field(default_factory=dict, repr=False)
    _limits: dict[tuple[str, str], Limit] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for c in self.categories.values():
            for a in c.aliases:
                self._alias[a] = c.code

    @classmethod
    def from_dict(cls, doc: dict, where: str = "codes", calendar: WorkCalendar | None = None) -> "CodeTable":
        defaults = doc.get("defaults") or {}
        cats: dict[str, Category] = {}
        groups = {str(k): str(v) for k, v in (doc.get("groups") or {}).items()}
        for section in ("national", "local"):
            for i, e in enumerate(doc.get(section) or []):
                at = f"{where}: {section}[{i}]"
                code = str(e.get("code", ""))
                kind, _, sub = code.partition(".")
                if kind not in ("component", "event") or len(sub) != 4 or not sub.isdigit():
                    raise InputError(f"{at}: code {code!r} is not component.SSSS or event.SSSS")
                for k in ("zh", "en"):
                    if not e.get(k):
                        raise InputError(f"{at} ({code}): field {k!r} is missing")
                limit = str(e.get("limit", defaults.get("limit", "1wd")))
                Limit.parse(limit, 8, f"{at} ({code}) limit")
                ot = e.get("open311_type", "realtime")
                if ot not in ("realtime", "batch", "blackbox"):
                    raise InputError(f"{at} ({code}): open311_type {ot!r} is not realtime, batch or blackbox")
                cats[code] = Category(
                    code=code, kind=kind, zh=str(e["zh"]), en=str(e["en"]),
                    group=groups.get(f"{kind}.{sub[:2]}", f"{kind}.{sub[:2]}"), limit=limit, dept=e.get("dept"),
                    keywords=str(e.get("keywords", "")), description=str(e.get("description", "")),
                    aliases=tuple(str(a) for a in e.get("aliases") or ()),
                    dup_radius_m=float(e.get("dup_radius_m", defaults.get("dup_radius_m", 150))),
                    dup_window_h=float(e.get("dup_window_h", defaults.get("dup_window_h", 48))),
                    open311_type=ot, local=section == "local",
                )
        pri = doc.get("priorities") or {p: {"factor": 1.0} for p in PRIORITIES}
        return cls(str(doc.get("version", "0")), cats, groups, pri, calendar or WorkCalendar.load())

    @classmethod
    def load(cls, path: str | Path | None = None, calendar: WorkCalendar | None = None) -> "CodeTable":
        if path is None and calendar is None:
            return _default_codes()
        doc, where = _read(path, "codes.yaml")
        return cls.from_dict(doc, where, calendar)

    def get(self, code: str) -> Category:
        """The category for a code or alias; InputError names the unknown code."""
        c = self.categories.get(code) or self.categories.get(self._alias.get(code, ""))
        if c is None:
            raise InputError(f"category {code!r} is not in the code table (version {self.version})")
        return c

    def find(self, code: str) -> Category | None:
        try:
            return self.get(code)
        except InputError:
            return None

    def limit(self, code: str, priority: str = "normal") -> Limit:
        """The handling limit of a category at a priority (the priority scales it)."""
        key = (code, priority)
        hit = self._limits.get(key)
        if hit is not None:
            return hit
        if priority not in self.priorities:
            raise InputError(f"priority {priority!r} is not one of {', '.join(self.priorities)}")
        p = self.priorities[priority]
        base = Limit.parse(self.get(code).limit, self.calendar.hours_per_day, code)
        self._limits[key] = lim = base.scaled(float(p.get("factor", 1.0)), bool(p.get("natural", False)))
        return lim

    def __iter__(self):
        return iter(self.categories.values())


@lru_cache(maxsize=1)
def _default_codes() -> CodeTable:
    doc, where = _read(None, "codes.yaml")
    return CodeTable.from_dict(doc, where)


@dataclass
class Ownership:
    version: str
    departments: dict[str, dict]
    rules: list[dict]
    codes: CodeTable

    @classmethod
    def load(cls, path: str | Path | None = None, codes: CodeTable | None = None) -> "Ownership":
        doc, where = _read(path, "ownership.yaml")
        codes = codes or CodeTable.load()
        deps = {}
        for i, d in enumerate(doc.get("departments") or []):
            if not d.get("code"):
                raise InputError(f"{where}: departments[{i}] has no code")
            deps[str(d["code"])] = {"code": str(d["code"]), "zh": d.get("zh", d["code"]), "en": d.get("en", d["code"])}
        rules = []
        for i, r in enumerate(doc.get("rules") or []):
            for k in ("category", "department"):
                if not r.get(k):
                    raise InputError(f"{where}: rules[{i}] has no {k!r}")
            rules.append({"category": str(r["category"]), "area": str(r.get("area", "*")),
                          "department": str(r["department"])})
        return cls(str(doc.get("version", "0")), deps, rules, codes)

    def add_rule(self, category: str, area: str, department: str) -> None:
        self.rules.append({"category": category, "area": area, "department": department})

    def department_for(self, category: str, area_path: Iterable[str]) -> str | None:
        """The department for ``category`` at a unit whose ancestry (root first) is ``area_path``.

        Most specific wins: exact category over prefix, longer prefix over shorter, then
        deeper area over shallower, then the later rule (local rules appended last).
        """
        path = list(area_path)
        cat = self.codes.get(category).code
        best: tuple | None = None
        for i, r in enumerate(self.rules):
            pat = r["category"]
            if pat == cat:
                cscore = 10_000
            elif pat.endswith("*") and cat.startswith(pat[:-1]):
                cscore = len(pat)
            else:
                continue
            if r["area"] == "*":
                ascore = 0
            elif r["area"] in path:
                ascore = path.index(r["area"]) + 1
            else:
                continue
            key = (cscore, ascore, i)
            if best is None or key > best[0]:
                best = (key, r["department"])
        return best[1] if best else self.codes.get(category).dept


def plain(obj: Any) -> Any:
    """Categories as plain dicts for JSON output."""
    from dataclasses import asdict

    return asdict(obj)
