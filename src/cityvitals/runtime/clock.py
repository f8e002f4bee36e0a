"""Simulated time that runs at a speed factor from a chosen start."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta


class SimClock:
    """``now()`` = start + (wall time since creation) × speed, held at ``end`` if given.

    A replayed city stops at the end of its data; holding the clock there keeps the
    dashboard on the last state instead of drifting into an empty future.

    >>> from datetime import timezone
    >>> clock = SimClock(datetime(2024, 7, 15, tzinfo=timezone.utc), speed=0)
    >>> clock.advance(90).isoformat()
    '2024-07-15T00:01:30+00:00'
    """

    def __init__(self, start: datetime, speed: float = 1.0, *, end: datetime | None = None, wall=time.monotonic):
        self._start = start
        self._end = end
        self._speed = float(speed)
        self._wall = wall
        self._wall0 = wall()
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            elapsed = (self._wall() - self._wall0) * self._speed + self._offset
        now = self._start + timedelta(seconds=elapsed)
        return min(now, self._end) if self._end is not None else now

    @property
    def speed(self) -> float:
        return self._speed

    __call__ = now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._offset += seconds
        return self.now()
