"""Dense integer keys for the stage's hot paths.

Joining, grouping and sorting on unit codes (strings) was most of the stage's time. The
cores therefore map each key column to dense integers once (``factorize``: codes
0..m-1 in the sorted order of the distinct values, so sorting by code is sorting by the
original value) and aggregate with NumPy (``group_ids`` + ``np.bincount`` /
``np.maximum.at``), which costs a few nanoseconds per row instead of a hash lookup on a
string. String columns are factorised through Polars' Categorical physical ids, so a
column that is already Categorical (the engine keeps unit codes and indicator ids that
way) costs nothing to encode.

>>> import polars as pl
>>> codes, values = factorize(pl.Series(["b", "a", "b", "c"]))
>>> codes.tolist(), values.to_list()
([1, 0, 1, 2], ['a', 'b', 'c'])
>>> inv, keys = group_ids(np.array([7, 3, 7, 9]))
>>> inv.tolist(), keys.tolist()
([1, 0, 1, 2], [3, 7, 9])
"""

from __future__ import annotations

import numpy as np
import polars as pl


def _physical(s: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """Integer physical ids of a string-like column and the column as Categorical/Enum."""
    if s.dtype == pl.String:
        s = s.cast(pl.Categorical)
    return s.to_physical().to_numpy().astype(np.int64, copy=False), s


def factorize(s: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """Dense int64 codes of ``s`` (no nulls) and its distinct values in sorted order.

    The distinct values keep ``s``'s dtype (String stays String, Categorical stays
    Categorical), so gathering them by code gives back the original column. Strings and
    numbers are ordered by value; a Categorical column by its physical (encounter)
    order, which needs no string sort: that is what makes it free for the engine.
    """
    n = len(s)
    if n == 0:
        return np.zeros(0, np.int64), s.clear()
    if s.dtype.is_integer() and not s.null_count():  # hash the distinct values, then a binary search per row (no full sort)
        uniq = s.unique().sort()
        return np.searchsorted(uniq.to_numpy(), s.to_numpy()).astype(np.int64), uniq
    if s.dtype.is_integer() or s.dtype.is_float() or s.dtype == pl.Boolean:
        uniq, inv = np.unique(s.to_numpy(), return_inverse=True)
        return inv.astype(np.int64).reshape(-1), pl.Series(s.name, uniq, dtype=s.dtype)
    if s.dtype not in (pl.String, pl.Categorical) and not isinstance(s.dtype, pl.Enum):
        s = s.cast(pl.String)
    lexical = s.dtype == pl.String
    phys, _ = _physical(s)
    top = int(phys.max()) + 1
    rep = np.empty(top, np.int64)
    rep[phys] = np.arange(n)
    present = np.flatnonzero(np.bincount(phys, minlength=top))
    distinct = s.gather(rep[present])
    if lexical:
        order = distinct.arg_sort().to_numpy()
        present, distinct = present[order], distinct.gather(order)
    lut = np.empty(top, np.int64)
    lut[present] = np.arange(len(present))
    return lut[phys], distinct


def partition(frame: pl.DataFrame, col: str, *, include_key: bool = True) -> dict[str, pl.DataFrame]:
    """``frame`` split by the values of ``col`` (String or Categorical): {value: rows}, in
    order of first appearance, rows in their order, as ``partition_by(as_dict=True)``.

    The stage's frames are concatenations of per-indicator (per-kind) parts, so the groups
    are usually contiguous runs and the parts are zero-copy slices; otherwise one stable
    argsort of the integer codes. Polars' own partition_by on a Categorical column cost
    more than levelling the rows it split.
    """
    if frame.is_empty():
        return {}
    phys, s = _physical(frame[col])
    starts = np.flatnonzero(np.r_[True, phys[1:] != phys[:-1]])
    out = frame if include_key else frame.drop(col)
    if len(np.unique(phys[starts])) != len(starts):  # not contiguous: sort by code, keep first-appearance order
        uniq, first = np.unique(phys, return_index=True)
        rank = np.empty(int(uniq.max()) + 1, np.int64)
        rank[uniq[np.argsort(first, kind="stable")]] = np.arange(len(uniq))
        order = np.argsort(rank[phys], kind="stable")
        out, s, phys = out[order], s.gather(order), phys[order]
        starts = np.flatnonzero(np.r_[True, phys[1:] != phys[:-1]])
    ends = np.r_[starts[1:], len(phys)]
    names = s.gather(starts).cast(pl.String).to_list()
    return {name: out.slice(int(a), int(b - a)) for name, a, b in zip(names, starts, ends)}


def codes_in(s: pl.Series, vocabulary: list[str]) -> np.ndarray:
    """Index of each value of ``s`` in ``vocabulary`` (-1 where absent)."""
    if len(s) == 0:
        return np.zeros(0, np.int64)
    if s.dtype != pl.Categorical:
        s = s.cast(pl.String)
    phys, _ = _physical(s)
    voc = pl.Series(vocabulary, dtype=pl.String).cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
    top = max(int(phys.max()), int(voc.max()) if len(voc) else 0) + 1
    lut = np.full(top, -1, np.int64)
    lut[voc] = np.arange(len(voc))
    return lut[phys]


def group_ids(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group of each row, the distinct keys ascending) for non-negative int64 keys.

    A lookup table when the key range is within a few times the row count (no sort),
    else a sort (``np.unique``).
    """
    if key.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lo = int(key.min())
    span = int(key.max()) - lo + 1
    if span <= 4 * key.size + 4096:
        present = np.zeros(span, bool)
        present[key - lo] = True
        lut = np.cumsum(present) - 1
        return lut[key - lo], np.flatnonzero(present) + lo
    uniq, inv = np.unique(key, return_inverse=True)
    return inv.reshape(-1), uniq


def reduce_max(inv: np.ndarray, values: np.ndarray, m: int) -> np.ndarray:
    out = np.full(m, -np.inf)
    np.maximum.at(out, inv, values)
    return out


def reduce_min(inv: np.ndarray, values: np.ndarray, m: int) -> np.ndarray:
    out = np.full(m, np.inf)
    np.minimum.at(out, inv, values)
    return out


def reduce_sum(inv: np.ndarray, values: np.ndarray, m: int) -> np.ndarray:
    return np.bincount(inv, weights=values, minlength=m)


def reduce_count(inv: np.ndarray, m: int) -> np.ndarray:
    return np.bincount(inv, minlength=m).astype(np.int64)
