"""Working time: deadlines (处置时限) count working hours, not wall-clock hours.

A :class:`WorkCalendar` knows the working periods of a working day, the weekend, public
holidays and make-up working days (调休), all as data (``calendar.yaml``). It adds a
number of working hours to an instant and measures the working hours between two
instants; a :class:`Limit` says whether a category's limit counts working or natural
hours. Everything is computed in the calendar's zone and returned in UTC.

>>> from datetime import datetime, timezone
>>> cal = WorkCalendar.load()
>>> fri = datetime(2026, 5, 8, 8, 0, tzinfo=timezone.utc)   # Friday 16:00 in Shanghai
>>> cal.add(fri, 4).isoformat()                            # 2 h Friday, Saturday 9 May is a make-up day
'2026-05-09T03:00:00+00:00'
>>> cal.between(fri, cal.add(fri, 4))
4.0
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from cityvitals.errors import InputError

_LIMIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(wh|wd|h|d)\s*$")
_MAX_DAYS = 3660  # no deadline is ten years away; a bad calendar must not loop forever


@dataclass(frozen=True)
class Limit:
    """A time limit: ``hours`` of working time (``natural`` False) or wall-clock time."""

    hours: float
    natural: bool = False

    @classmethod
    def parse(cls, text: str, hours_per_day: float, where: str = "limit") -> "Limit":
        m = _LIMIT.match(str(text))
        if not m:
            raise InputError(f"{where}: {text!r} is not a time limit (use e.g. 4wh, 1wd, 2h, 3d)")
        n, unit = float(m.group(1)), m.group(2)
        return {"wh": cls(n), "wd": cls(n * hours_per_day), "h": cls(n, True), "d": cls(n * 24, True)}[unit]

    def scaled(self, factor: float, natural: bool | None = None) -> "Limit":
        return Limit(self.hours * factor, self.natural if natural is None else (natural or self.natural))


def _day(v, where: str) -> date:
    if isinstance(v, date):
        return v
    try:
        return date.fromisoformat(str(v))
    except ValueError:
        raise InputError(f"{where}: {v!r} is not a date (YYYY-MM-DD)") from None


@dataclass
class WorkCalendar:
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    periods: tuple[tuple[time, time], ...] = ((time(9), time(12)), (time(13), time(18)))
    weekend: frozenset[int] = frozenset({5, 6})
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()

    @classmethod
    def from_dict(cls, doc: dict, where: str = "calendar") -> "WorkCalendar":
        try:
            tz = ZoneInfo(doc.get("timezone", "Asia/Shanghai"))
        except Exception:
            raise InputError(f"{where}: timezone {doc.get('timezone')!r} is unknown") from None
        periods = []
        for i, p in enumerate(doc.get("periods") or []):
            try:
                a, b = time.fromisoformat(p[0]), time.fromisoformat(p[1])
            except (ValueError, TypeError, IndexError):
                raise InputError(f"{where}: periods[{i}] {p!r} is not a pair of HH:MM times") from None
            if b <= a:
                raise InputError(f"{where}: periods[{i}] ends before it starts")
            periods.append((a, b))
        holidays: set[date] = set()
        for i, h in enumerate(doc.get("holidays") or []):
            if isinstance(h, list):
                d0, d1 = _day(h[0], f"{where}: holidays[{i}]"), _day(h[1], f"{where}: holidays[{i}]")
                holidays.update(d0 + timedelta(days=k) for k in range((d1 - d0).days + 1))
            else:
                holidays.add(_day(h, f"{where}: holidays[{i}]"))
        workdays = {_day(w, f"{where}: workdays[{i}]") for i, w in enumerate(doc.get("workdays") or [])}
        return cls(tz, tuple(sorted(periods)) or cls.periods, frozenset(doc.get("weekend", [5, 6])),
                   frozenset(holidays), frozenset(workdays))

    @classmethod
    def load(cls, path: str | Path | None = None) -> "WorkCalendar":
        """The shipped calendar, or one from ``path``."""
        if path is None:
            return _default()
        try:
            doc = yaml.safe_load(Path(path).read_text("utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"{path}: cannot read the calendar: {exc}") from None
        return cls.from_dict(doc or {}, str(path))

    @property
    def hours_per_day(self) -> float:
        return sum((_secs(b) - _secs(a)) for a, b in self.periods) / 3600

    def is_workday(self, d: date) -> bool:
        if d in self.workdays:
            return True
        return d not in self.holidays and d.weekday() not in self.weekend

    def _spans(self, d: date):
        if self.is_workday(d):
            for a, b in self.periods:
                yield datetime.combine(d, a, self.tz), datetime.combine(d, b, self.tz)

    def add(self, start: datetime, hours: float, natural: bool = False) -> datetime:
        """The instant ``hours`` of working (or natural) time after ``start``, in UTC."""
        if natural:
            return (start + timedelta(hours=hours)).astimezone(timezone.utc)
        left = timedelta(hours=hours)
        t = start.astimezone(self.tz)
        d = t.date()
        for _ in range(_MAX_DAYS):
            for a, b in self._spans(d):
                s = max(a, t)
                if s >= b:
                    continue
                if left <= b - s:
                    return (s + left).astimezone(timezone.utc)
                left -= b - s
            d += timedelta(days=1)
        raise InputError(f"no working time within {_MAX_DAYS} days of {start.isoformat()}: check the calendar")

    def between(self, a: datetime, b: datetime, natural: bool = False) -> float:
        """Working (or natural) hours from ``a`` to ``b``; 0 if ``b`` is not after ``a``."""
        if b <= a:
            return 0.0
        if natural:
            return (b - a).total_seconds() / 3600
        a, b = a.astimezone(self.tz), b.astimezone(self.tz)
        total = timedelta()
        d = a.date()
        for _ in range(_MAX_DAYS + 1):
            if d > b.date():
                break
            for s, e in self._spans(d):
                lo, hi = max(s, a), min(e, b)
                if hi > lo:
                    total += hi - lo
            d += timedelta(days=1)
        return total.total_seconds() / 3600


def _secs(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


@lru_cache(maxsize=1)
def _default() -> WorkCalendar:
    text = resources.files("cityvitals.dispose").joinpath("calendar.yaml").read_text("utf-8")
    return WorkCalendar.from_dict(yaml.safe_load(text), "calendar.yaml")
