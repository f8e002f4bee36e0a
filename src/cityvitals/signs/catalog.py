"""The indicator catalogue: what each vital sign is, where it comes from and when it is bad.

The catalogue is data (``catalogue.yaml`` shipped with the package, optionally overlaid by
a city's own file) so thresholds, windows and weights change without code. Parsing keeps
each field's line number (YAML node marks) so ``cityvitals catalog check`` can point at the
exact line of every problem, and checking collects *all* problems instead of stopping at
the first, because a data team fixes a catalogue file in one pass.

>>> cat = load_catalog()
>>> cat["env.aqi"].derived_fn, cat["env.pm25"].kinds, cat["env.pm25"].window.size
('max_of', ('pm25',), datetime.timedelta(seconds=3600))
>>> len(cat) >= 60 and len(cat.categories()) >= 8
True
"""

from __future__ import annotations

import copy

import re
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import yaml

from cityvitals.errors import InputError
from cityvitals.registry.kinds import KindTable, load_kinds

LEVELS = ("normal", "attention", "warning", "alarm")
"""Level names by code 0..3; blue/yellow/orange/red colour grades are a presentation of 1..3."""
COLOURS = {"normal": "green", "attention": "blue", "warning": "yellow/orange", "alarm": "red"}
CATEGORIES = ("weather", "traffic", "safety", "environment", "facilities", "supply", "livelihood", "sentiment", "governance")
DIRECTIONS = ("higher_is_worse", "lower_is_worse", "band", "categorical")
AGGS = ("mean", "max", "min", "sum", "last", "count", "leq")
AGG_FNS = ("share_ge", "share_le", "count_eq", "count_ge")
"""Parametrised aggregations: ``{share_ge: x}`` is the percentage of readings >= x, etc."""
COUNT_AGGS = ("count", "share_ge", "share_le", "count_eq", "count_ge")
COMBINES = ("max", "mean", "min", "sum")
ROLLUPS = ("max", "min", "mean", "sum", "mean_population", "mean_area", "share_at_level")
DERIVED_FNS = ("piecewise", "max_of", "sum", "weighted_sum", "ratio", "per_capita")
OPS = ("gte", "gt", "lte", "lt", "outside", "in")
REQUIRED = ("id", "name_en", "category", "unit", "window", "direction", "thresholds", "source")

_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")
_PARAM_EXPR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:([+-])\s*(\d+(?:\.\d*)?|\.\d+))?\s*$")


def parse_duration(text: Any) -> timedelta:
    """ISO-8601 day/time durations (``PT5M``, ``PT1H``, ``P1D``); months and years are refused.

    >>> parse_duration("PT1H30M")
    datetime.timedelta(seconds=5400)
    """
    m = _DURATION.match(str(text))
    if not m or str(text) in ("P", "PT"):
        raise ValueError(f"{text!r} is not an ISO-8601 duration such as PT5M, PT1H or P1D")
    d, h, mi, s = (int(x or 0) for x in m.groups())
    return timedelta(days=d, hours=h, minutes=mi, seconds=s)


@dataclass(frozen=True)
class Bound:
    """A threshold bound: a number, or a named parameter plus an offset (``limit + 5``)."""

    value: float = 0.0
    param: str | None = None

    @staticmethod
    def parse(raw: Any) -> "Bound":
        if isinstance(raw, bool):
            raise ValueError(f"{raw!r} is not a number")
        if isinstance(raw, (int, float)):
            return Bound(float(raw))
        m = _PARAM_EXPR.match(str(raw))
        if not m:
            raise ValueError(f"{raw!r} is neither a number nor 'param [+|-] number'")
        name, sign, num = m.groups()
        off = float(num) if num else 0.0
        return Bound(-off if sign == "-" else off, name)


@dataclass(frozen=True)
class Condition:
    op: str
    bounds: tuple[Bound, ...] = ()
    members: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Window:
    size: timedelta
    slide: timedelta

    @property
    def k(self) -> int:
        """Number of slide steps in one window (1 = tumbling)."""
        return max(1, self.size // self.slide)


@dataclass
class Indicator:
    id: str
    name_en: str
    name_zh: str
    category: str
    unit: str
    direction: str
    window: Window
    thresholds: dict[str, Condition]
    source: str
    kinds: tuple[str, ...] = ()
    derived_fn: str | None = None
    derived_args: Any = None
    feed: str | None = None
    agg: str = "mean"
    agg_arg: float | None = None
    sensor_combine: str | None = None
    min_count: int = 1
    hours: tuple[int, int] | None = None
    rollup: str = "max"
    rollup_level: int = 2
    rollup_thresholds: dict[str, Condition] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    hysteresis: float = 0.0
    min_duration: timedelta = timedelta(0)
    lateness: timedelta = timedelta(hours=2)
    weight: float = 1.0
    basis: str = ""
    confidence: str = ""
    description: str = ""
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def input_kind(self) -> str:
        return "sensor" if self.kinds else "derived" if self.derived_fn else "feed"

    def inputs(self) -> list[str]:
        """Indicator ids a derived indicator reads."""
        return derived_inputs(self.derived_fn, self.derived_args)

    @property
    def min_windows(self) -> int:
        """min_duration expressed in whole windows (slides) that must hold a raised level."""
        if self.min_duration <= timedelta(0):
            return 1
        return max(1, -(-self.min_duration // self.window.slide))

    def to_dict(self) -> dict:
        out = dict(self.raw)
        out["input"] = self.input_kind
        return out


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a catalogue file, located by indicator id, field and line."""

    indicator: str | None
    field: str
    line: int | None
    message: str
    file: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.indicator or '-'}: {self.field}: {self.message}"

    def to_dict(self) -> dict:
        return {"indicator": self.indicator, "field": self.field, "line": self.line, "message": self.message, "file": self.file}


class Catalog(dict[str, Indicator]):
    """Indicators by id, plus the catalogue-wide settings (health penalties, seasons, offset)."""

    def __init__(self, *args: Any, settings: dict | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.settings = settings or {}

    def categories(self) -> list[str]:
        return sorted({i.category for i in self.values()})

    @property
    def utc_offset_hours(self) -> float:
        return float(self.settings.get("utc_offset_hours", 0))

    @property
    def penalty(self) -> dict[str, float]:
        p = (self.settings.get("health") or {}).get("penalty") or {}
        return {lvl: float(p.get(lvl, d)) for lvl, d in zip(LEVELS, (0, 30, 60, 100))}

    @property
    def category_weights(self) -> dict[str, float]:
        w = (self.settings.get("health") or {}).get("category_weights") or {}
        return {c: float(w.get(c, 1.0)) for c in self.categories()}

    @property
    def seasons(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for name, months in (self.settings.get("seasons") or {}).items():
            for m in months:
                out[int(m)] = str(name)
        return out

    def computable(self) -> list[Indicator]:
        """Indicators with a source, in dependency order (inputs before what they feed)."""
        ready: dict[str, Indicator] = {i.id: i for i in self.values() if i.input_kind == "sensor"}
        pending = [i for i in self.values() if i.input_kind == "derived"]
        progressed = True
        while pending and progressed:  # a fixed point: cycles and feed-fed inputs never become ready
            progressed = False
            for ind in list(pending):
                if all(d in ready for d in ind.inputs()):
                    ready[ind.id] = ind
                    pending.remove(ind)
                    progressed = True
        return list(ready.values())

    def no_source(self) -> list[str]:
        """Indicators kept in the catalogue but not computed: nothing produces their input yet."""
        ok = {i.id for i in self.computable()}
        return sorted(i for i in self if i not in ok)


def derived_inputs(fn: str | None, args: Any) -> list[str]:
    if fn is None:
        return []
    if fn in ("max_of", "sum") and isinstance(args, list):
        return [str(a) for a in args]
    if fn == "weighted_sum" and isinstance(args, dict):
        return [str(a) for a in args]
    if fn in ("piecewise", "per_capita") and isinstance(args, dict) and "input" in args:
        return [str(args["input"])]
    if fn == "ratio" and isinstance(args, dict):
        return [str(args[k]) for k in ("num", "den") if k in args]
    return []


# ---------------------------------------------------------------- YAML with line numbers

def _load_yaml(text: str, origin: str) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML and return (data, {path tuple: line}) using the composed node marks."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)  # the C loader keeps marks and is ~10x faster
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise InputError(f"{origin}:{line} is not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    finally:
        loader.dispose()
    lines: dict[tuple, int] = {}

    def walk(n: yaml.Node, path: tuple) -> None:
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                p = path + (str(k.value),)
                lines[p] = k.start_mark.line + 1
                walk(v, p)
                lines[p] = k.start_mark.line + 1
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, path + (i,))

    walk(node, ())
    return data, lines


@dataclass
class _Entry:
    raw: dict
    file: str
    lines: dict[str, int]  # dotted field -> line, "" -> the item's line


def _entries(data: Any, lines: dict[tuple, int], origin: str, problems: list[Problem]) -> tuple[dict, list[_Entry]]:
    if data is None:
        return {}, []
    if not isinstance(data, dict) or not isinstance(data.get("indicators", []), list):
        problems.append(Problem(None, "indicators", lines.get((), 1), "the file must be a mapping with an 'indicators:' list", origin))
        return {}, []
    settings = {k: v for k, v in data.items() if k != "indicators"}
    out = []
    for i, item in enumerate(data.get("indicators") or []):
        base = ("indicators", i)
        item_lines = {".".join(str(x) for x in p[2:]): ln for p, ln in lines.items() if p[:2] == base}
        if not isinstance(item, dict):
            problems.append(Problem(None, f"indicators[{i}]", item_lines.get(""), "each indicator must be a mapping", origin))
            continue
        out.append(_Entry(item, origin, item_lines))
    return settings, out


# ---------------------------------------------------------------- building and checking

def _cond(raw: Any, direction: str, fld: str, err: list[tuple[str, str]]) -> Condition | None:
    if not isinstance(raw, dict) or len(raw) != 1:
        err.append((fld, f"must be one condition such as {{gte: 50}} or {{outside: [lo, hi]}}, got {raw!r}"))
        return None
    op, arg = next(iter(raw.items()))
    if op not in OPS:
        err.append((f"{fld}.{op}", f"unknown function {op!r}; use one of {', '.join(OPS)}"))
        return None
    try:
        if op == "outside":
            if not isinstance(arg, list) or len(arg) != 2:
                raise ValueError("outside needs [lo, hi]")
            lo, hi = Bound.parse(arg[0]), Bound.parse(arg[1])
            if lo.param is None and hi.param is None and lo.value > hi.value:
                raise ValueError(f"outside [{lo.value}, {hi.value}]: lo is above hi")
            return Condition(op, (lo, hi))
        if op == "in":
            return Condition(op, (), tuple(arg if isinstance(arg, list) else [arg]))
        return Condition(op, (Bound.parse(arg),))
    except ValueError as exc:
        err.append((f"{fld}.{op}", str(exc)))
        return None


def _check_order(conds: dict[str, Condition], direction: str, fld: str, err: list[tuple[str, str]]) -> None:
    """Thresholds must tighten from attention to alarm in the indicator's direction."""
    present = [(lvl, conds[lvl]) for lvl in LEVELS[1:] if lvl in conds]
    for (l1, c1), (l2, c2) in zip(present, present[1:]):
        if c1.op == "in" or c2.op == "in":
            continue
        if (c1.op == "outside") != (c2.op == "outside"):
            err.append((f"{fld}.{l2}", f"mixes {c1.op} and {c2.op} between levels"))
            continue
        b1, b2 = c1.bounds, c2.bounds
        if any(b.param != b1[0].param for b in b1 + b2):
            if not all(b.param for b in b1 + b2):
                continue  # mixed literal/param: cannot order statically
        if c1.op == "outside":
            if not (b2[0].value <= b1[0].value and b2[1].value >= b1[1].value):
                err.append((f"{fld}.{l2}", f"out of order for direction band: {l2} band {[b.value for b in b2]} must contain {l1} band {[b.value for b in b1]}"))
            continue
        v1, v2 = b1[0].value, b2[0].value
        up = c1.op in ("gte", "gt")
        if up != (c2.op in ("gte", "gt")):
            err.append((f"{fld}.{l2}", f"{l1} uses {c1.op} but {l2} uses {c2.op}"))
        elif direction == "higher_is_worse" and not up:
            err.append((f"{fld}.{l2}", f"direction higher_is_worse needs gte/gt, got {c2.op}"))
        elif direction == "lower_is_worse" and up:
            err.append((f"{fld}.{l2}", f"direction lower_is_worse needs lte/lt, got {c2.op}"))
        elif up and v2 < v1:
            err.append((f"{fld}.{l2}", f"out of order for direction {direction}: {l2} {v2:g} is below {l1} {v1:g}"))
        elif not up and v2 > v1:
            err.append((f"{fld}.{l2}", f"out of order for direction {direction}: {l2} {v2:g} is above {l1} {v1:g}"))


def _build(entry: _Entry, kinds: KindTable, defaults: dict, problems: list[Problem]) -> Indicator | None:
    r = entry.raw
    iid = str(r.get("id")) if r.get("id") is not None else None
    err: list[tuple[str, str]] = []
    for f in REQUIRED:
        if r.get(f) in (None, "", {}):
            err.append((f, "missing required field"))
    sources = [k for k in ("kinds", "derived", "feed") if r.get(k) is not None]
    if len(sources) != 1:
        err.append(("kinds" if not sources else sources[1], "exactly one of kinds, derived or feed is required" if not sources else f"has both {sources[0]} and {sources[1]}"))
    if r.get("category") and r["category"] not in CATEGORIES:
        err.append(("category", f"unknown category {r['category']!r}; use one of {', '.join(CATEGORIES)}"))
    direction = r.get("direction", "higher_is_worse")
    if direction not in DIRECTIONS:
        err.append(("direction", f"unknown direction {direction!r}; use one of {', '.join(DIRECTIONS)}"))
    window = None
    w = r.get("window")
    if isinstance(w, dict):
        try:
            size = parse_duration(w.get("size"))
            slide = parse_duration(w.get("slide", w.get("size")))
            if size <= timedelta(0) or slide <= timedelta(0) or size % slide:
                raise ValueError(f"size {w.get('size')} must be a positive whole multiple of slide {w.get('slide')}")
            window = Window(size, slide)
        except ValueError as exc:
            err.append(("window", str(exc)))
    elif w is not None:
        err.append(("window", "must be a mapping {size: PT1H, slide: PT5M}"))
    kinds_l = r.get("kinds")
    agg, agg_arg = r.get("agg", "mean"), None
    if isinstance(agg, dict) and len(agg) == 1:
        agg, agg_arg = next(iter(agg.items()))
        if agg not in AGG_FNS:
            err.append(("agg", f"unknown function {agg!r}; use one of {', '.join(AGGS + AGG_FNS)}"))
        try:
            agg_arg = float(agg_arg)
        except (TypeError, ValueError):
            err.append(("agg", f"{agg} needs a number"))
    elif agg not in AGGS:
        err.append(("agg", f"unknown function {agg!r}; use one of {', '.join(AGGS + AGG_FNS)}"))
    if kinds_l is not None:
        if not isinstance(kinds_l, list) or not kinds_l:
            err.append(("kinds", "must be a non-empty list of sensor kind ids"))
            kinds_l = []
        for kid in kinds_l:
            kind = kinds.get(str(kid))
            if kind is None:
                err.append(("kinds", f"unknown sensor kind {kid!r} (see registry/kinds.yaml)"))
            elif agg not in COUNT_AGGS and r.get("unit") and str(r["unit"]) != kind.unit:
                err.append(("unit", f"unit mismatch: {r['unit']!r} but sensor kind {kid!r} is stored in {kind.unit!r}"))
    fn, args = None, None
    d = r.get("derived")
    if d is not None:
        if not isinstance(d, dict) or len(d) != 1:
            err.append(("derived", "must be one function such as {max_of: [a, b]}"))
        else:
            fn, args = next(iter(d.items()))
            if fn not in DERIVED_FNS:
                err.append((f"derived.{fn}", f"unknown function {fn!r}; use one of {', '.join(DERIVED_FNS)}"))
            else:
                err.extend(_check_derived(fn, args))
    combine = r.get("sensor_combine")
    if combine is not None and combine not in COMBINES:
        err.append(("sensor_combine", f"unknown function {combine!r}; use one of {', '.join(COMBINES)}"))
    roll = r.get("rollup", "max")
    roll_level, roll_thr = 2, None
    if isinstance(roll, dict):
        rule = roll.get("rule")
        if rule == "share_at_level":
            if roll.get("level") not in LEVELS[1:]:
                err.append(("rollup.level", f"level must be one of {', '.join(LEVELS[1:])}"))
            else:
                roll_level = LEVELS.index(roll["level"])
            roll_thr = {}
            for lvl, c in (roll.get("thresholds") or {}).items():
                cond = _cond(c, "higher_is_worse", f"rollup.thresholds.{lvl}", err)
                if cond:
                    roll_thr[lvl] = cond
            if not roll_thr:
                err.append(("rollup.thresholds", "share_at_level needs thresholds for the share (percent)"))
            _check_order(roll_thr, "higher_is_worse", "rollup.thresholds", err)
        roll = rule
    if roll not in ROLLUPS:
        err.append(("rollup", f"unknown function {roll!r}; use one of {', '.join(ROLLUPS)}"))
    conds: dict[str, Condition] = {}
    thr = r.get("thresholds")
    if isinstance(thr, dict):
        for lvl, c in thr.items():
            if lvl not in LEVELS[1:]:
                err.append((f"thresholds.{lvl}", f"unknown level {lvl!r}; use attention, warning, alarm"))
                continue
            cond = _cond(c, direction, f"thresholds.{lvl}", err)
            if cond is None:
                continue
            want = {"higher_is_worse": ("gte", "gt"), "lower_is_worse": ("lte", "lt"), "band": ("outside",),
                    "categorical": ("in",)}.get(direction, OPS)
            if cond.op not in want:
                err.append((f"thresholds.{lvl}", f"direction {direction} needs {' or '.join(want)}, got {cond.op}"))
                continue
            conds[lvl] = cond
        _check_order(conds, direction, "thresholds", err)
    elif thr is not None:
        err.append(("thresholds", "must map levels to conditions"))
    params = r.get("params") or {}
    for lvl, cond in conds.items():
        for b in cond.bounds:
            if b.param and b.param not in params:
                err.append((f"thresholds.{lvl}", f"refers to parameter {b.param!r} which params does not define"))
    for name, spec in params.items():
        if isinstance(spec, dict) and ("by" not in spec or "default" not in spec):
            err.append((f"params.{name}", "a parameter table needs 'by', 'values' and 'default'"))
    hours = r.get("hours")
    if hours is not None and not (isinstance(hours, list) and len(hours) == 2 and all(isinstance(h, int) and 0 <= h <= 24 for h in hours)):
        err.append(("hours", "must be [from_hour, to_hour] in local time"))
    num: dict[str, float] = {}
    for f in ("hysteresis", "weight", "min_count"):
        v = r.get(f, defaults.get(f, {"hysteresis": 0, "weight": 1, "min_count": 1}[f]))
        try:
            num[f] = float(v)
            if num[f] < 0:
                raise ValueError
        except (TypeError, ValueError):
            err.append((f, f"must be a non-negative number, got {v!r}"))
            num[f] = 0.0
    durs: dict[str, timedelta] = {}
    for f, dflt in (("min_duration", "PT0S"), ("lateness", "PT2H")):
        try:
            durs[f] = parse_duration(r.get(f, defaults.get(f, dflt)))
        except ValueError as exc:
            err.append((f, str(exc)))
            durs[f] = parse_duration(dflt)
    for fld, msg in err:
        line = entry.lines.get(fld) or entry.lines.get(fld.split(".")[0]) or entry.lines.get("")
        problems.append(Problem(iid, fld, line, msg, entry.file))
    if err:
        return None
    return Indicator(
        id=iid, name_en=str(r["name_en"]), name_zh=str(r.get("name_zh", "")), category=str(r["category"]),
        unit=str(r["unit"]), direction=direction, window=window, thresholds=conds, source=str(r["source"]),
        kinds=tuple(str(k) for k in kinds_l or ()), derived_fn=fn, derived_args=args,
        feed=str(r["feed"]) if r.get("feed") is not None else None, agg=agg, agg_arg=agg_arg,
        sensor_combine=combine, min_count=int(num["min_count"]), hours=tuple(hours) if hours else None,
        rollup=roll, rollup_level=roll_level, rollup_thresholds=roll_thr, params=params,
        hysteresis=num["hysteresis"], min_duration=durs["min_duration"], lateness=durs["lateness"],
        weight=num["weight"], basis=str(r.get("basis", "")), confidence=str(r.get("confidence", "")),
        description=str(r.get("description", "")), raw=dict(r),
    )


def _check_derived(fn: str, args: Any) -> list[tuple[str, str]]:
    f = f"derived.{fn}"
    if fn in ("max_of", "sum"):
        if not isinstance(args, list) or not args:
            return [(f, "needs a non-empty list of indicator ids")]
    elif fn == "weighted_sum":
        if not isinstance(args, dict) or not args or not all(isinstance(v, (int, float)) for v in args.values()):
            return [(f, "needs a mapping {indicator id: weight}")]
    elif fn == "ratio":
        if not isinstance(args, dict) or not {"num", "den"} <= set(args):
            return [(f, "needs {num: id, den: id[, scale: x]}")]
    elif fn == "per_capita":
        if not isinstance(args, dict) or "input" not in args:
            return [(f, "needs {input: id, per: 10000}")]
    elif fn == "piecewise":
        if not isinstance(args, dict) or "input" not in args or not isinstance(args.get("breakpoints"), list):
            return [(f, "needs {input: id, breakpoints: [[x, y], ...]}")]
        bps = args["breakpoints"]
        try:
            xs = [float(p[0]) for p in bps]
            [float(p[1]) for p in bps]
        except (TypeError, ValueError, IndexError):
            return [(f"{f}.breakpoints", "each breakpoint must be [x, y]")]
        if len(xs) < 2 or any(b <= a for a, b in zip(xs, xs[1:])):
            return [(f"{f}.breakpoints", "needs at least two breakpoints with strictly increasing x")]
        if args.get("round", "none") not in ("none", "ceil", "floor", "round"):
            return [(f"{f}.round", "round must be none, ceil, floor or round")]
        if args.get("above", "clamp") not in ("clamp", "null", "extrapolate"):
            return [(f"{f}.above", "above must be clamp, null or extrapolate")]
    return []


def _graph_problems(cat: dict[str, Indicator], entries: dict[str, _Entry], problems: list[Problem]) -> None:
    """Unknown inputs, window mismatches and cycles between derived indicators."""
    for ind in cat.values():
        e = entries[ind.id]
        line = e.lines.get(f"derived.{ind.derived_fn}") or e.lines.get("derived")
        for dep in ind.inputs():
            if dep not in cat:
                problems.append(Problem(ind.id, f"derived.{ind.derived_fn}", line, f"unknown input indicator {dep!r}", e.file))
            elif cat[dep].window != ind.window:
                problems.append(Problem(ind.id, "window", e.lines.get("window") or line,
                                        f"window differs from its input {dep!r}; derived values pair windows one to one", e.file))
    state: dict[str, int] = {}
    reported: set[frozenset] = set()

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        stack.append(n)
        for dep in cat[n].inputs():
            if dep not in cat:
                continue
            if state.get(dep) == 1:
                cyc = stack[stack.index(dep):]
                key = frozenset(cyc)
                if key not in reported:
                    reported.add(key)
                    e = entries[cyc[0]]
                    problems.append(Problem(cyc[0], "derived", e.lines.get("derived"),
                                            "cycle between derived indicators: " + " -> ".join(cyc + [cyc[0]]), e.file))
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[n] = 2

    for n in sorted(cat):
        if n not in state:
            visit(n, [])


def _shipped_text() -> str:
    return resources.files("cityvitals.signs").joinpath("catalogue.yaml").read_text("utf-8")


def check_catalog(extra: str | Path | None = None, *, kinds: KindTable | None = None) -> tuple[Catalog, list[Problem]]:
    """The shipped catalogue overlaid by ``extra``, and every problem found (empty = valid).

    An overlay entry whose id exists replaces the shipped entry field by field; a new id
    adds an indicator. Problems in the shipped file are reported against it too.
    """
    kinds = kinds or load_kinds()
    problems: list[Problem] = []
    data, lines = _load_yaml(_shipped_text(), "catalogue.yaml")
    settings, entries = _entries(data, lines, "catalogue.yaml", problems)
    merged: dict[str, _Entry] = {}
    for e in entries:
        merged[str(e.raw.get("id"))] = e
    if extra is not None:
        path = Path(extra)
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise InputError(f"cannot read catalogue {path}: {exc.strerror}") from exc
        udata, ulines = _load_yaml(text, str(path))
        usettings, uentries = _entries(udata, ulines, str(path), problems)
        for k, v in usettings.items():
            settings[k] = {**settings[k], **v} if isinstance(v, dict) and isinstance(settings.get(k), dict) else v
        seen: dict[str, int] = {}
        for e in uentries:
            iid = e.raw.get("id")
            if iid is None:
                problems.append(Problem(None, "id", e.lines.get(""), "missing required field", e.file))
                continue
            iid = str(iid)
            if iid in seen:
                problems.append(Problem(iid, "id", e.lines.get("id"), f"duplicate id (first at line {seen[iid]})", e.file))
            seen[iid] = e.lines.get("id", 0)
            if iid in merged and merged[iid].file != e.file:
                base = merged[iid]
                raw = {**base.raw, **e.raw}
                # a new input replaces the old one; a new condition set replaces the old one
                for a, b in (("kinds", ("derived", "feed")), ("derived", ("kinds", "feed")), ("feed", ("kinds", "derived"))):
                    if a in e.raw:
                        for x in b:
                            if x not in e.raw:
                                raw.pop(x, None)
                merged[iid] = _Entry(raw, e.file, {**{k: e.lines.get("", 0) for k in base.lines}, **e.lines})
            else:
                merged[iid] = e
    defaults = settings.get("defaults") or {}
    cat = Catalog(settings=settings)
    for iid, e in merged.items():
        ind = _build(e, kinds, defaults, problems)
        if ind is not None:
            cat[iid] = ind
    _graph_problems(cat, merged, problems)
    problems.sort(key=lambda p: (p.file != "catalogue.yaml", p.file, p.line or 0))
    return cat, problems


_SHIPPED_CACHE: dict[str, Catalog] = {}
"""The validated shipped catalogue by its text: parsing and checking it costs ~0.3 s, which
every ``recompute`` / ``compute_signs`` call without a catalogue used to pay."""


def load_catalog(extra: str | Path | None = None) -> Catalog:
    """The catalogue to compute with; raises InputError naming the first problem if invalid.

    Without ``extra`` the shipped catalogue is parsed once per process (keyed by its text,
    so an edited file is re-read); each call gets its own ``Catalog`` so a caller that
    adds or removes entries does not change another's (the Indicator objects are shared:
    nothing modifies them after checking).
    """
    if extra is None:
        text = _shipped_text()
        cached = _SHIPPED_CACHE.get(text)
        if cached is None:
            cached, problems = check_catalog(None)
            if problems:
                raise InputError(f"catalogue has {len(problems)} problem(s); first: {problems[0]} (run `cityvitals catalog check`)")
            _SHIPPED_CACHE.clear()
            _SHIPPED_CACHE[text] = cached
        return Catalog(cached, settings=copy.deepcopy(cached.settings))
    cat, problems = check_catalog(extra)
    if problems:
        raise InputError(f"catalogue has {len(problems)} problem(s); first: {problems[0]} (run `cityvitals catalog check`)")
    return cat


def iter_levels() -> Iterator[tuple[int, str]]:
    return enumerate(LEVELS)
