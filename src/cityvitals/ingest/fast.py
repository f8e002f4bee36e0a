"""The fast path: prove that a canonical NDJSON reading is valid without SQL.

Almost every line a sensor gateway sends has one shape -- ``{"sensor_id":"S1","ts":
"2026-05-01T08:00:00+08:00","value":0.31}``, optionally followed by ``"unit"`` and/or
``"quality"`` string fields. For such lines the general validator's work (a JSON parser
per line, regular expressions, a join on sensor-id strings, a group-by for duplicates)
mostly re-derives what the shape already tells. ``accept`` walks the raw bytes of a whole
batch once in compiled code (Numba, cached on disk after the first compile): it checks
the shape, looks the sensor up in a hash table of the registry, converts the fixed-form
timestamp (fractions of a second to the microsecond) exactly, parses the number, and applies every rule that can make a record
*valid*. ``dedupe`` then finds duplicates and conflicts on integer sensor codes.

It only ever *accepts*: a line it cannot prove valid -- another key order, an escape, a
sub-microsecond fraction, an exponent, an unknown sensor, a foreign unit, a value out of range,
a timestamp in the future, anything odd -- is handed to the SQL rules (``validate.py``)
unchanged, which decide its fate and write its message. Acceptance here is a strict
subset of acceptance there, with the same values: the timestamp arithmetic is exact; a
number of at most 15 significant digits and 22 decimals is ``mantissa / 10**decimals``,
the correctly rounded double (the one DuckDB's cast gives); the canonical value is
``v * factor + offset`` in the same order. ``tests/test_ingest_fast.py`` checks the
equivalence against the SQL path, line by line and store by store.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

PREFIX = b'{"sensor_id":"'
TS_KEY = b'","ts":"'
VALUE_KEY = b'","value":'
MAX_SENSOR = 64
MAX_TAIL = 64


@dataclass
class Registry:
    """The sensor registry as arrays, indexed by a sensor's row (its integer code)."""

    ids: pa.Array
    units: pa.Array
    kinds: pa.Array
    unit_codes: pa.Array
    factor: np.ndarray  # NaN when the sensor's own unit has no conversion (never fast-accepted)
    offset: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    keys: np.ndarray | None = None  # each sensor's stored key (``sensor_keys``); -1 when it has none
    unit_keys: np.ndarray | None = None  # the stored key of each sensor's unit (``unit_keys``); -1: none

    @classmethod
    def from_table(cls, t: pa.Table) -> Registry:
        """``t``: the ``_sensor_ready`` relation (id, kind, unit, unit_code, factor, offset, min/max
        and, on the DuckDB store, sensor_key)."""

        def num(name: str) -> np.ndarray:
            return t.column(name).combine_chunks().cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)

        def key(name: str) -> np.ndarray | None:
            if name not in t.column_names:
                return None
            return t.column(name).combine_chunks().cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)

        return cls(
            ids=t.column("id").combine_chunks().cast(pa.string()),
            units=t.column("unit").combine_chunks().cast(pa.string()),
            kinds=t.column("kind").combine_chunks().cast(pa.string()),
            unit_codes=t.column("unit_code").combine_chunks().cast(pa.string()),
            factor=num("factor"), offset=num("offset"), lo=num("min_value"), hi=num("max_value"),
            keys=key("sensor_key"), unit_keys=key("unit_key"),
        )

    def __post_init__(self) -> None:
        if self.keys is None:
            self.keys = np.full(len(self.ids), -1, np.int64)
        if self.unit_keys is None:
            self.unit_keys = np.full(len(self.ids), -1, np.int64)
        self._by_key: np.ndarray | None = None
        _, offsets, data = self.ids.buffers()
        n = len(self.ids)
        off = np.frombuffer(offsets, np.int32)[self.ids.offset: self.ids.offset + n + 1].astype(np.int64)
        raw = _readonly(np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8))
        self.table = (raw, off, _build_table(raw, off))
        self.unit_bytes = _string_buffers(self.units)

    def code(self, sensor_ids: pa.Array) -> np.ndarray:
        """Registry row of each id, -1 when unknown (or null)."""
        ids = sensor_ids.cast(pa.string())
        if len(ids) == 0:
            return np.zeros(0, np.int64)
        _, offsets, data = ids.buffers()
        off = np.frombuffer(offsets, np.int32)[ids.offset: ids.offset + len(ids) + 1].astype(np.int64)
        raw = _readonly(np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8))
        codes = _codes(raw, off, *self.table)
        if ids.null_count:
            codes[np.asarray(ids.is_null().to_numpy(zero_copy_only=False))] = -1
        return codes

    def code_of_key(self, keys: np.ndarray) -> np.ndarray:
        """Registry row of each stored sensor key, -1 for a key no registered sensor has:
        a gather through a table indexed by key (keys are small dense integers)."""
        if self._by_key is None:
            known = np.flatnonzero(self.keys >= 0)
            self._by_key = np.full(int(self.keys.max(initial=-1)) + 2, -1, np.int64)
            self._by_key[self.keys[known]] = known
        keys = np.asarray(keys, np.int64)
        out = np.full(len(keys), -1, np.int64)
        inside = (keys >= 0) & (keys < len(self._by_key))
        out[inside] = self._by_key[keys[inside]]
        return out

    def unit_key_array(self, codes: np.ndarray) -> pa.Array:
        """The stored unit key of the given rows' sensors, null for a sensor not located."""
        keys = self.unit_keys[codes]
        none = keys < 0
        if none.any() and self.unit_codes.null_count < len(self.unit_codes):
            located = ~np.asarray(self.unit_codes.is_null().to_numpy(zero_copy_only=False))
            if np.any(none & located[codes]):  # ensure_keys gives every unit one: never store a unit as none
                raise RuntimeError("a sensor's unit has no key in unit_keys")
        return pa.array(keys, pa.int32(), mask=none)

    def strings(self, column: pa.Array, codes: np.ndarray) -> pa.DictionaryArray:
        """A registry column for the given rows, dictionary-encoded: no string is copied."""
        return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), column)


@dataclass
class FastResult:
    """Rows of a batch proven valid (``rows``: positions in the batch) and the rest."""

    rows: np.ndarray  # positions (0-based, into the batch's lines) of accepted records
    sensor: np.ndarray  # registry row
    ts_us: np.ndarray  # UTC microseconds since the epoch
    value: np.ndarray  # canonical unit
    quality: pa.Array  # string, null when absent
    rest: np.ndarray  # positions for the general validator


_POW10 = np.array([10.0 ** k for k in range(23)])  # exact doubles up to 1e22


def _month_starts() -> np.ndarray:
    """Days from 1970-01-01 to the first of each month, years 1900-2999 (13 columns: the
    13th is next January, so a month's length is a difference)."""
    years = np.arange(1900, 3000)
    months = (years[:, None] - 1970) * 12 + np.arange(13)[None, :]
    return months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


_DAYS_BEFORE = _month_starts()


@njit(cache=True, nogil=True)
def _key(buf, at, n) -> tuple:
    """Hash and the first 16 bytes (two little-endian words) of buf[at:at+n]."""
    h = np.uint64(14695981039346656037)
    w0 = np.uint64(0)
    w1 = np.uint64(0)
    for k in range(n):
        c = np.uint64(buf[at + k])
        h = (h ^ c) * np.uint64(1099511628211)
        if k < 8:
            w0 |= c << np.uint64(8 * k)
        elif k < 16:
            w1 |= c << np.uint64(8 * (k - 8))
    return h, w0, w1


@njit(cache=True, nogil=True)
def _build_table(data, offsets):
    """Open-addressing hash table of the registry ids. Each slot holds (row, length, the
    first 16 bytes as two words): one cache line answers a lookup of a short id."""
    n = len(offsets) - 1
    size = 1
    while size < 2 * n + 2:
        size *= 2
    table = np.zeros((size, 4), np.uint64)
    mask = np.uint64(size - 1)
    for r in range(n):
        length = offsets[r + 1] - offsets[r]
        h, w0, w1 = _key(data, offsets[r], length)
        slot = h & mask
        while table[slot, 0] != 0:
            slot = (slot + np.uint64(1)) & mask
        table[slot, 0] = np.uint64(r + 1)
        table[slot, 1] = np.uint64(length)
        table[slot, 2] = w0
        table[slot, 3] = w1
    return table


@njit(cache=True, nogil=True)
def _lookup(buf, at, n, data, offsets, table) -> int:
    """Registry row of the id buf[at:at+n], or -1."""
    mask = np.uint64(len(table) - 1)
    h, w0, w1 = _key(buf, at, n)
    slot = h & mask
    while True:
        r = table[slot, 0]
        if r == 0:
            return -1
        if table[slot, 1] == n and table[slot, 2] == w0 and table[slot, 3] == w1:
            row = np.int64(r) - 1
            if n <= 16:
                return row
            lo = offsets[row]
            same = True
            for k in range(16, n):
                if data[lo + k] != buf[at + k]:
                    same = False
                    break
            if same:
                return row
        slot = (slot + np.uint64(1)) & mask


@njit(cache=True, nogil=True)
def _codes(buf, offsets, data, reg_offsets, table):
    """Registry rows of the strings buf[offsets[i]:offsets[i+1]] (-1 when unknown)."""
    out = np.empty(len(offsets) - 1, np.int64)
    for r in range(len(out)):
        out[r] = _lookup(buf, offsets[r], offsets[r + 1] - offsets[r], data, reg_offsets, table)
    return out


@njit(cache=True, nogil=True)
def _expect(buf, i, end, lit) -> int:
    """Position after literal ``lit`` at ``i``, or -1. Spaces may follow a ``,`` or ``:``
    of the literal (they are structural there: ``json.dumps`` writes ``", "`` and ``": "``)."""
    for k in range(len(lit)):
        if i >= end or buf[i] != lit[k]:
            return -1
        i += 1
        if lit[k] == 44 or lit[k] == 58:
            while i < end and buf[i] == 32:
                i += 1
    return i


@njit(cache=True, nogil=True)
def _string_end(buf, i, end, limit) -> int:
    """Position of the closing quote of a plain string starting at ``i`` (no escapes, no
    control characters, at most ``limit`` bytes), or -1."""
    stop = min(end, i + limit + 1)
    while i < stop:
        c = buf[i]
        if c == 34:
            return i
        if c < 32 or c == 92:
            return -1
        i += 1
    return -1


@njit(cache=True, nogil=True)
def _two(buf, i) -> int:
    a, b = buf[i] - 48, buf[i + 1] - 48
    if a < 0 or a > 9 or b < 0 or b > 9:
        return -1
    return a * 10 + b


@njit(cache=True, nogil=True)
def _ts(buf, i, n, days_before) -> tuple:
    """(ok, UTC microseconds) of ``YYYY-MM-DDTHH:MM:SS``, an optional fraction of 1-6 digits,
    then ``Z`` or ``±HH:MM``, at buf[i:i+n]."""
    if n < 20:
        return False, 0
    hi, lo = _two(buf, i), _two(buf, i + 2)
    month, day = _two(buf, i + 5), _two(buf, i + 8)
    hour, minute, sec = _two(buf, i + 11), _two(buf, i + 14), _two(buf, i + 17)
    if hi < 0 or lo < 0 or month < 0 or day < 0 or hour < 0 or minute < 0 or sec < 0:
        return False, 0
    if buf[i + 4] != 45 or buf[i + 7] != 45 or buf[i + 10] != 84 or buf[i + 13] != 58 or buf[i + 16] != 58:
        return False, 0
    year = hi * 100 + lo
    if year < 1900 or year > 2999 or month < 1 or month > 12 or hour > 23 or minute > 59 or sec > 59:
        return False, 0
    if day < 1 or day > days_before[year - 1900, month] - days_before[year - 1900, month - 1]:
        return False, 0
    frac = 0
    at = i + 19
    if buf[at] == 46:  # '.': microseconds, scaled from 1-6 digits (more: the SQL rules decide)
        at += 1
        digits = 0
        while at < i + n and 48 <= buf[at] <= 57:
            if digits == 6:
                return False, 0
            frac = frac * 10 + (buf[at] - 48)
            digits += 1
            at += 1
        if digits == 0:
            return False, 0
        for _ in range(6 - digits):
            frac *= 10
    shift = 0
    z = buf[at]
    rest = i + n - at
    if rest == 1:
        if z != 90:  # 'Z'
            return False, 0
    elif rest == 6:
        oh, om = _two(buf, at + 1), _two(buf, at + 4)
        if (z != 43 and z != 45) or oh < 0 or om < 0 or oh > 14 or om > 59 or buf[at + 3] != 58:
            return False, 0
        shift = oh * 3600 + om * 60
        if z == 45:
            shift = -shift
    else:
        return False, 0
    secs = days_before[year - 1900, month - 1] * 86400 + (day - 1) * 86400 + hour * 3600 + minute * 60 + sec - shift
    return True, secs * 1_000_000 + frac


@njit(cache=True, nogil=True)
def _number(buf, i, end, pow10) -> tuple:
    """(ok, next position, value) of a JSON number without exponent at ``i``, exact only:
    at most 15 significant digits and 22 decimals, so ``mantissa / 10**decimals`` is the
    correctly rounded value (the same double DuckDB's cast yields)."""
    neg = False
    if i < end and buf[i] == 45:
        neg = True
        i += 1
    if i >= end:
        return False, i, 0.0
    mant = 0
    digits = 0
    c = buf[i]
    if c == 48:
        i += 1
    elif 49 <= c <= 57:
        while i < end and 48 <= buf[i] <= 57:
            mant = mant * 10 + (buf[i] - 48)
            digits += 1
            i += 1
    else:
        return False, i, 0.0
    decimals = 0
    if i < end and buf[i] == 46:
        i += 1
        start = i
        while i < end and 48 <= buf[i] <= 57:
            if mant > 0 or buf[i] != 48:
                digits += 1
            mant = mant * 10 + (buf[i] - 48)
            decimals += 1
            i += 1
        if i == start:
            return False, i, 0.0
    if i < end and (buf[i] == 101 or buf[i] == 69):  # exponent: left to the general path
        return False, i, 0.0
    if digits > 15 or decimals > 22 or (neg and mant == 0):
        return False, i, 0.0
    value = mant / pow10[decimals] if decimals else float(mant)
    return True, i, -value if neg else value


@njit(cache=True, nogil=True)
def _scan(buf, starts, ends, pow10, days_before, prefix, ts_key, value_key, unit_key, quality_key, max_sensor,
          max_tail, reg_data, reg_offsets, reg_table, unit_data, unit_offsets, factor, offset, lo, hi, ts_limit):
    """One pass over the lines: canonical shape, fields, registry row, and the rules that
    make a record valid (own unit or none, convertible, in range, not in the future).

    A line is canonical when it is ``{"sensor_id":"…","ts":"…","value":N`` then optional
    ``,"unit":"…"`` / ``,"quality":"…"`` and ``}``, with plain strings (no escapes or
    control characters) and optional spaces after ``,`` and ``:``."""
    n = len(starts)
    ok = np.zeros(n, np.bool_)
    code = np.full(n, -1, np.int64)
    ts = np.zeros(n, np.int64)
    value = np.zeros(n, np.float64)
    s_at = np.zeros(n, np.int64)
    s_len = np.zeros(n, np.int64)
    u_at = np.full(n, -1, np.int64)
    u_len = np.zeros(n, np.int64)
    q_at = np.full(n, -1, np.int64)
    q_len = np.zeros(n, np.int64)
    for r in range(n):
        i, end = starts[r], ends[r]
        while end > i and (buf[end - 1] == 10 or buf[end - 1] == 13):
            end -= 1
        i = _expect(buf, i, end, prefix)
        if i < 0:
            continue
        e = _string_end(buf, i, end, max_sensor)
        if e <= i:
            continue
        s_at[r], s_len[r] = i, e - i
        code[r] = _lookup(buf, i, e - i, reg_data, reg_offsets, reg_table)
        if code[r] < 0:
            continue
        i = _expect(buf, e, end, ts_key)
        if i < 0:
            continue
        e = _string_end(buf, i, end, 32)
        if e < 0:
            continue
        good, t = _ts(buf, i, e - i, days_before)
        if not good or t > ts_limit:
            continue
        ts[r] = t
        i = _expect(buf, e, end, value_key)
        if i < 0:
            continue
        good, i, v = _number(buf, i, end, pow10)
        if not good:
            continue
        value[r] = v
        closed = False
        while i < end:
            c = buf[i]
            if c == 125:  # '}'
                closed = i + 1 == end
                break
            if c != 44:  # ','
                break
            i += 1
            while i < end and buf[i] == 32:
                i += 1
            j = _expect(buf, i, end, unit_key)
            if j > 0 and u_at[r] < 0:
                e = _string_end(buf, j, end, max_tail)
                if e < 0:
                    break
                u_at[r], u_len[r] = j, e - j
                i = e + 1
                continue
            j = _expect(buf, i, end, quality_key)
            if j > 0 and q_at[r] < 0:
                e = _string_end(buf, j, end, max_tail)
                if e < 0:
                    break
                q_at[r], q_len[r] = j, e - j
                i = e + 1
                continue
            break
        if not closed:
            continue
        c = code[r]
        if u_at[r] >= 0:  # a unit given must be the sensor's own: others are the SQL rules' job
            ul = unit_offsets[c + 1] - unit_offsets[c]
            if u_len[r] != ul:
                continue
            same = True
            for k in range(ul):
                if buf[u_at[r] + k] != unit_data[unit_offsets[c] + k]:
                    same = False
                    break
            if not same:
                continue
        v = value[r] * factor[c] + offset[c]  # NaN factor (no conversion) fails the range test
        if not (v >= lo[c] and v <= hi[c]):
            continue
        value[r] = v
        ok[r] = True
    return ok, code, ts, value, q_at, q_len


@njit(cache=True, nogil=True)
def _gather(buf, at, length):
    """Arrow string buffers (offsets, data) of buf[at:at+length] per row."""
    offsets = np.zeros(len(at) + 1, np.int32)
    for r in range(len(at)):
        offsets[r + 1] = offsets[r] + length[r]
    data = np.empty(offsets[-1], np.uint8)
    for r in range(len(at)):
        data[offsets[r]:offsets[r + 1]] = buf[at[r]:at[r] + length[r]]
    return offsets, data


def _strings(buf: np.ndarray, at: np.ndarray, length: np.ndarray) -> pa.Array:
    offsets, data = _gather(buf, at, length)
    return pa.StringArray.from_buffers(len(at), pa.py_buffer(offsets), pa.py_buffer(data))


def _string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(data, offsets) of a string array with nulls as empty strings, for compiled code."""
    arr = arr.cast(pa.string()).fill_null("")
    if len(arr) == 0:
        return _readonly(np.zeros(0, np.uint8)), np.zeros(1, np.int64)
    _, offsets, data = arr.buffers()
    off = np.frombuffer(offsets, np.int32)[arr.offset: arr.offset + len(arr) + 1].astype(np.int64)
    return _readonly(np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)), off


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view: compiled functions are specialised on writability, so every
    caller passes the same kind of buffer and one compiled version serves them all."""
    a = a.view()
    a.flags.writeable = False
    return a


def _lit(b: bytes) -> np.ndarray:
    return np.frombuffer(b, np.uint8)


def accept(lines: pa.StringArray, registry: Registry, now_us: int, tolerance_us: int) -> FastResult:
    """Split a batch of JSON lines into those proven valid (parsed) and the rest."""
    n = len(lines)
    everything = np.arange(n, dtype=np.int64)
    if n == 0 or len(registry.ids) == 0:
        return FastResult(everything[:0], everything[:0], everything[:0], np.zeros(0), pa.nulls(0, pa.string()), everything)
    lines = lines.cast(pa.string())
    _, off_buf, data_buf = lines.buffers()
    offsets = np.frombuffer(off_buf, np.int32)[lines.offset: lines.offset + n + 1].astype(np.int64)
    buf = _readonly(np.frombuffer(data_buf, np.uint8))
    ok, code, ts_us, value, q_at, q_len = _scan(
        buf, offsets[:-1], offsets[1:], _POW10, _DAYS_BEFORE, _lit(PREFIX), _lit(TS_KEY), _lit(VALUE_KEY),
        _lit(b'"unit":"'), _lit(b'"quality":"'), MAX_SENSOR, MAX_TAIL, *registry.table, *registry.unit_bytes,
        registry.factor, registry.offset, registry.lo, registry.hi, now_us + tolerance_us)
    taken = np.flatnonzero(ok)
    quality = pa.nulls(len(taken), pa.string())
    with_q = np.flatnonzero(q_at[taken] >= 0)
    if len(with_q):
        texts = _strings(buf, q_at[taken][with_q], q_len[taken][with_q])
        slots = np.full(len(taken), -1, np.int64)
        slots[with_q] = np.arange(len(with_q))
        quality = pc.take(texts, pa.array(slots, mask=slots < 0))
    rest = everything[:0] if len(taken) == n else np.flatnonzero(~ok)
    return FastResult(taken, code[taken], ts_us[taken], value[taken], quality, rest)


@njit(cache=True, nogil=True)
def _slot(code, ts, mask) -> np.uint64:
    """Slot of a (sensor, ts) key: the MurmurHash3 finaliser, since timestamps on a minute
    grid share their low bits and a plain product would cluster the probes."""
    x = np.uint64(ts) ^ (np.uint64(code) * np.uint64(0x9E3779B97F4A7C15))
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x & mask


@njit(cache=True, nogil=True)
def dedupe(code, ts, value, order, s_code, s_ts, s_value):
    """Duplicates and conflicts on (sensor, ts), within the batch and against stored rows.

    The first valid record of a key by arrival (first in ``order``) is the candidate; a later
    one with the same value is a duplicate, with another value a conflict; when the key
    is already stored every record of it compares with the stored value instead. The
    same rules as ``validate.DEDUPE_SQL``, on integer sensor codes in one hash pass.
    Returns (outcome: 0 accept, 1 duplicate, 2 conflict; the other value).
    """
    n = len(code)
    size = 1
    while size < 2 * n + 2:
        size *= 2
    mask = np.uint64(size - 1)
    table = np.full(size, -1, np.int64)
    first = np.empty(n, np.int64)
    for r in order:
        slot = _slot(code[r], ts[r], mask)
        while True:
            j = table[slot]
            if j < 0:
                table[slot] = r
                first[r] = r
                break
            if code[j] == code[r] and ts[j] == ts[r]:
                first[r] = j
                break
            slot = (slot + np.uint64(1)) & mask
    stored = np.zeros(n, np.bool_)
    stored_v = np.zeros(n, np.float64)
    for k in range(len(s_code)):
        if s_code[k] < 0:
            continue
        slot = _slot(s_code[k], s_ts[k], mask)
        while True:
            j = table[slot]
            if j < 0:
                break
            if code[j] == s_code[k] and ts[j] == s_ts[k]:
                if not stored[j]:
                    stored[j] = True
                    stored_v[j] = s_value[k]
                break
            slot = (slot + np.uint64(1)) & mask
    outcome = np.zeros(n, np.int8)
    other = np.full(n, np.nan)
    for r in range(n):
        f = first[r]
        if stored[f]:
            outcome[r] = 1 if value[r] == stored_v[f] else 2
            other[r] = stored_v[f]
        elif f != r:
            outcome[r] = 1 if value[r] == value[f] else 2
            other[r] = value[f]
    return outcome, other


@njit(cache=True, nogil=True)
def _records(buf, starts, ends, prefix):
    """The spans of the JSON objects in each payload buf[starts[m]:ends[m]]: a payload
    that is one object, or an array of objects, each beginning with ``prefix`` (the
    canonical ``{"sensor_id":"``). Returns (record starts, record ends, records per
    payload), with -1 records for a payload of any other shape (its caller decodes it in
    full). Strings are skipped with their escapes, so braces inside them do not count;
    the payload must already be known to be valid JSON (the caller parsed it)."""
    n = len(starts)
    count = np.zeros(n, np.int64)
    r_at = np.empty(0, np.int64)
    r_end = np.empty(0, np.int64)
    cap = 0
    total = 0
    for m in range(n):
        i, end = starts[m], ends[m]
        while i < end and (buf[i] == 32 or buf[i] == 9 or buf[i] == 10 or buf[i] == 13):
            i += 1
        array = i < end and buf[i] == 91  # '['
        if array:
            i += 1
        mark = total
        good = True
        while good:
            while i < end and (buf[i] == 32 or buf[i] == 9 or buf[i] == 10 or buf[i] == 13 or buf[i] == 44):
                i += 1
            if i >= end or buf[i] == 93:  # ']' (or the end of a lone object)
                break
            if i + len(prefix) > end:
                good = False
                break
            for k in range(len(prefix)):
                if buf[i + k] != prefix[k]:
                    good = False
                    break
            if not good:
                break
            # walk the object to its closing brace
            depth = 0
            j = i
            in_str = False
            while j < end:
                c = buf[j]
                if in_str:
                    if c == 92:  # backslash: skip the escaped byte
                        j += 1
                    elif c == 34:
                        in_str = False
                elif c == 34:
                    in_str = True
                elif c == 123 or c == 91:
                    depth += 1
                elif c == 125 or c == 93:
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j >= end:
                good = False
                break
            if total == cap:
                cap = max(16, 2 * cap)
                grown_at = np.empty(cap, np.int64)
                grown_end = np.empty(cap, np.int64)
                grown_at[:total] = r_at[:total]
                grown_end[:total] = r_end[:total]
                r_at, r_end = grown_at, grown_end
            r_at[total] = i
            r_end[total] = j + 1
            total += 1
            i = j + 1
            if not array:
                break
        if good:
            count[m] = total - mark
        else:
            count[m] = -1
            total = mark
    return r_at[:total], r_end[:total], count


def split_payloads(payloads: list[bytes]) -> tuple[pa.StringArray, np.ndarray]:
    """Readings of many JSON payloads (MQTT messages) as one string array of records, in
    order, copied once from the payloads' own bytes (no decode and re-encode per record).

    Only payloads of the canonical form are split here -- an object or an array of
    objects that each start with ``"sensor_id"`` -- and each must be valid UTF-8 JSON (the
    caller checked). Returns the records and, per payload, how many it gave (-1: another
    form, which the caller decodes record by record).

    >>> recs, counts = split_payloads([b'[{"sensor_id":"A","v":"}"}, {"sensor_id":"B"}]', b'{"ts":1}'])
    >>> recs.to_pylist(), counts.tolist()
    (['{"sensor_id":"A","v":"}"}', '{"sensor_id":"B"}'], [2, -1])
    """
    lengths = np.fromiter((len(p) for p in payloads), np.int64, len(payloads))
    ends = np.cumsum(lengths)
    buf = _readonly(np.frombuffer(b"".join(payloads), np.uint8))
    at, end, counts = _records(buf, ends - lengths, ends, _lit(b'{"sensor_id":"'))
    return _strings(buf, at, end - at), counts


def warm() -> None:
    """Load (or, on a fresh install, compile) the scanner and the dedupe once, so a caller
    that measures can keep that one-time cost out of its figures and report it apart."""
    registry = Registry.from_table(pa.table({
        "id": ["S"], "kind": ["k"], "unit": ["u"], "unit_code": pa.array([None], pa.string()),
        "factor": [1.0], "offset": [0.0], "min_value": [0.0], "max_value": [1.0],
    }))
    accept(pa.array(['{"sensor_id":"S","ts":"2026-01-01T00:00:00Z","value":1,"unit":"u","quality":"q"}\n']),
           registry, 2**62, 0)
    empty = np.zeros(0, np.int64)
    dedupe(np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1), np.zeros(1, np.int64), empty, empty, np.zeros(0))
    split_payloads([b'[{"sensor_id":"S","ts":"2026-01-01T00:00:00Z","value":1}]'])
