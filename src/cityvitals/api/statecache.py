"""Map states computed once and served to every client that asks for the same view.

Fifty duty officers looking at the city ask for the same layer; computing health, readings
counts and open alerts for it per request, one request at a time under the store lock, made
the city map take seconds under load. A state is computed once per key (the view and the
caller's area scope: a district user's answer is never served to another scope), encoded to
JSON and gzipped once, and served as bytes while it is valid:

- the data version it was computed at is still current. The version is the unit tree's
  fingerprint and the id of the last event the change watcher published; the watcher runs
  after every write the API makes and on a timer for writes made elsewhere in the process
  (simulator, signs, watch), and publishes for new readings, alerts, health, incidents and
  cases, so any change the map shows moves the version;
- it is younger than ``ttl_s``: the backstop for a write the watcher has not seen yet and for
  "now" moving on (a view without ``at`` counts the last hour's readings up to now).

Only one thread computes a key at a time (the others wait for its result rather than
computing it too). When an entry is only too old (same version), one thread recomputes it
while the others are still served the old bytes, so a busy map never stalls every client
at once; when the version moved, nobody is served the old state.

>>> c = StateCache(ttl_s=60)
>>> made = []
>>> def make(): made.append(1); return {"n": len(made)}
>>> c.get(("map", "C", None), 1, make).body, c.get(("map", "C", None), 1, make).body, len(made)
(b'{"n":1}', b'{"n":1}', 1)
>>> c.get(("map", "C", None), 2, make).body  # the data changed: computed again
b'{"n":2}'
>>> c.get(("map", "C", "D1"), 2, make).body  # another scope never shares an answer
b'{"n":3}'
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class Entry:
    body: bytes
    version: Any
    made_at: float
    _gz: bytes | None = field(default=None, repr=False)
    _gz_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def gzipped(self) -> bytes:
        """The body gzipped, made once on first use (level 5: a fifth of the CPU of level 9 for
        nearly the same size on map JSON)."""
        if self._gz is None:
            with self._gz_lock:
                if self._gz is None:
                    self._gz = gzip.compress(self.body, compresslevel=5, mtime=0)
        return self._gz


def encode(content: Any) -> bytes:
    """JSON bytes of ``content`` (bytes are taken as already encoded)."""
    if isinstance(content, bytes):
        return content
    return orjson.dumps(content, default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


class StateCache:
    def __init__(self, *, ttl_s: float = 2.0, max_entries: int = 64, max_bytes: int = 128 * 2**20,
                 monotonic: Callable[[], float] = time.monotonic):
        """``max_entries``/``max_bytes``: the oldest entries go first beyond either (a whole-city
        grid layer is about 5 MB, and each look-back moment is an entry of its own)."""
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.monotonic = monotonic
        self._entries: dict[Hashable, Entry] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = self.stale_served = 0

    def _key_lock(self, key: Hashable) -> threading.Lock:
        with self._lock:
            lk = self._locks.get(key)
            if lk is None:
                lk = self._locks[key] = threading.Lock()
            return lk

    def _fresh(self, e: Entry | None, version: Any) -> bool:
        return e is not None and e.version == version and self.monotonic() - e.made_at < self.ttl_s

    def get(self, key: Hashable, version: Any, make: Callable[[], Any]) -> Entry:
        """The entry for ``key`` at data ``version``, computing ``make()`` (content for
        :func:`encode`) when there is none that is valid. ``version`` must be read before the
        state is computed, so a write landing during the computation invalidates the result."""
        if self.ttl_s <= 0:
            return Entry(encode(make()), version, self.monotonic())
        e = self._entries.get(key)
        if self._fresh(e, version):
            self.hits += 1
            return e
        lk = self._key_lock(key)
        if e is not None and e.version == version:  # only too old: one thread refreshes, the rest get it meanwhile
            if not lk.acquire(blocking=False):
                self.stale_served += 1
                return e
        else:
            lk.acquire()
        try:
            e = self._entries.get(key)  # another thread may have made it while this one waited
            if self._fresh(e, version):
                self.hits += 1
                return e
            self.misses += 1
            e = Entry(encode(make()), version, self.monotonic())
            with self._lock:
                self._entries.pop(key, None)
                self._entries[key] = e
                while len(self._entries) > 1 and (len(self._entries) > self.max_entries or self.nbytes() > self.max_bytes):
                    old = next(iter(self._entries))  # oldest inserted first
                    self._entries.pop(old)
                    self._locks.pop(old, None)
            return e
        finally:
            lk.release()

    def nbytes(self) -> int:
        """Bytes held: bodies and the gzipped copies made so far."""
        return sum(len(e.body) + len(e._gz or b"") for e in list(self._entries.values()))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
