"""What every request handler shares: the store, the clock, the unit index, the event hub."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from cityvitals.api.events import ChangeWatcher, EventHub
from cityvitals.api.statecache import StateCache
from cityvitals.api.unitindex import UnitIndex


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Limits:
    max_body_bytes: int = 4 * 1024 * 1024
    max_records: int = 10_000          # readings per POST
    max_raw_range_days: float = 7      # raw readings per request
    max_resampled_range_days: float = 400
    max_buckets: int = 20_000          # time buckets x sensors would be capped by limit anyway
    max_map_units: int = 50_000


@dataclass
class Context:
    store: Any
    clock: Callable[[], datetime] = utcnow
    limits: Limits = field(default_factory=Limits)
    catalog: Any = None
    hub: EventHub = field(default_factory=EventHub)
    units: UnitIndex = None  # type: ignore[assignment]
    watcher: ChangeWatcher = None  # type: ignore[assignment]
    tiles: str | None = None           # a raster tile URL template for the dashboard's map, or None (blank)
    states: StateCache = field(default_factory=StateCache)  # map states, encoded once per view and data version
    _geo_cache: dict = field(default_factory=dict, repr=False)
    _geo_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.units = self.units or UnitIndex(self.store)
        self.watcher = self.watcher or ChangeWatcher(self.store, self.hub)

    def data_version(self) -> tuple:
        """Moves whenever what the map shows may have changed: the unit tree, or anything the
        change watcher published (readings, alerts, health, incidents, cases). A write made
        outside the API shows up at the watcher's next look; until then the cache's short
        time-to-live bounds how old a served map can be."""
        self.units.refresh()
        return (self.units.fingerprint, self.hub.last_id)

    @property
    def has_signs(self) -> bool:
        return hasattr(self.store, "signs")

    @property
    def has_alerts(self) -> bool:
        return hasattr(self.store, "alerts")

    def geometry(self, codes: list[str]) -> dict:
        """The compact geometry of a layer, cached while the unit tree is unchanged.

        Geometry is most of a map response and changes only when units are imported, so a
        whole-city layer is simplified and encoded once, not per request.
        """
        from cityvitals.api.geo import compact_geometry

        self.units.refresh()
        key = (self.units.fingerprint, len(codes), hash(tuple(codes)))
        with self._geo_lock:
            hit = self._geo_cache.get(key)
        if hit is None:
            hit = compact_geometry(self.store, codes)
            with self._geo_lock:
                if len(self._geo_cache) >= 32:
                    self._geo_cache.pop(next(iter(self._geo_cache)))
                self._geo_cache[key] = hit
        return hit

    def get_catalog(self):
        if self.catalog is None:
            from cityvitals.signs import load_catalog

            self.catalog = load_catalog()
        return self.catalog
