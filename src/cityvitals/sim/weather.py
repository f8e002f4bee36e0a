"""The weather process that drives the coupled parts of the city.

City-wide series (temperature, humidity, wind, a pollution mixing factor) are
computed once per run step — a day is 1,440 numbers, cheap — and rain is a field of
moving Gaussian cells evaluated only at the points that need it (gauges, low spots,
road segments, catchments). Scenarios change the weather (a rainstorm adds a strong
cell, a heatwave lifts temperatures, an inversion calms the wind and traps pollution)
and the rest of the model responds: rain → ponding and river levels → road speeds and
drainage pumping; heat → power load; still air → PM2.5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cityvitals.sim._rng import stream


@dataclass
class RainCell:
    start: float  # seconds from run start
    end: float
    peak_mm_h: float
    x0: float
    y0: float
    vx: float  # m/s
    vy: float
    sigma: float  # m

    def envelope(self, t: np.ndarray) -> np.ndarray:
        """0 → 1 → 0 over the cell's life, peaking a third of the way in (convective storms)."""
        u = (t - self.start) / max(self.end - self.start, 1.0)
        rise = np.clip(u / 0.33, 0, 1)
        fall = np.clip((1 - u) / 0.67, 0, 1)
        return np.where((u >= 0) & (u <= 1), np.minimum(rise, fall) ** 1.5, 0.0)


@dataclass
class Weather:
    """City-wide weather per step plus rain cells; arrays have one entry per run step."""

    t: np.ndarray  # seconds from start
    hour: np.ndarray  # local hour of day (float)
    dow: np.ndarray  # local day of week, Monday = 0
    temp: np.ndarray
    humidity: np.ndarray
    wind: np.ndarray
    mixing: np.ndarray  # multiplies primary pollutants (1 = typical)
    heat_offset: np.ndarray
    cells: list[RainCell] = field(default_factory=list)

    def rain(self, steps: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Rain rate in mm/h at points (x, y) for the given step indices: (len(steps), len(x))."""
        out = np.zeros((len(steps), len(x)))
        t = self.t[steps]
        for c in self.cells:
            env = c.envelope(t)
            live = env > 0
            if not live.any():
                continue
            cx = c.x0 + c.vx * (t[live] - c.start)
            cy = c.y0 + c.vy * (t[live] - c.start)
            d2 = (x[None, :] - cx[:, None]) ** 2 + (y[None, :] - cy[:, None]) ** 2
            out[live] += c.peak_mm_h * env[live, None] * np.exp(-d2 / (2 * c.sigma**2))
        return out


def local_time(t_epoch: np.ndarray, utc_offset_h: float) -> tuple[np.ndarray, np.ndarray]:
    """(hour of day as float, day of week with Monday = 0) in local time."""
    loc = t_epoch + utc_offset_h * 3600.0
    hour = (loc % 86400.0) / 3600.0
    dow = ((loc // 86400.0).astype(np.int64) + 3) % 7
    return hour, dow


def make_weather(seed: int, t_epoch: np.ndarray, utc_offset_h: float, radius_m: float) -> Weather:
    """A plausible Shanghai summer: warm, humid, light wind, sometimes a passing shower."""
    rng = stream(seed, "weather")
    n = len(t_epoch)
    t = (t_epoch - t_epoch[0]).astype(float)
    hour, dow = local_time(t_epoch, utc_offset_h)
    dt = float(t[1] - t[0]) if n > 1 else 60.0
    # slow anomalies: AR(1) with a 6-hour memory, computed over the whole run (n is small)
    phi = np.exp(-dt / 21600.0)
    shocks = rng.standard_normal((n, 2))
    anom = np.zeros((n, 2))
    for i in range(1, n):
        anom[i] = phi * anom[i - 1] + np.sqrt(1 - phi**2) * shocks[i]
    temp = 29.0 + 4.2 * np.cos(2 * np.pi * (hour - 15.0) / 24.0) + 1.2 * anom[:, 0]
    wind = np.clip(2.6 + 1.1 * np.sin(2 * np.pi * (hour - 9.0) / 24.0) + 0.8 * anom[:, 1], 0.3, None)
    humidity = np.clip(76.0 - 2.3 * (temp - 29.0), 35, 98)
    mixing = 1.0 + 0.3 * np.cos(2 * np.pi * (hour - 5.0) / 24.0) - 0.08 * (wind - 2.6)
    w = Weather(t, hour, dow, temp, humidity, wind, mixing, np.zeros(n))
    # background showers: light, short, somewhere over the city
    for _ in range(int(rng.poisson(0.8 * max(t[-1], dt) / 86400.0))):
        start = rng.uniform(0, max(t[-1], dt))
        ang = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(3, 9)
        w.cells.append(RainCell(start, start + rng.uniform(1800, 5400), rng.uniform(3, 12),
                                rng.uniform(-radius_m, radius_m), rng.uniform(-radius_m, radius_m),
                                speed * np.cos(ang), speed * np.sin(ang), rng.uniform(2500, 6000)))
    return w


def apply_rain_humidity(w: Weather, city_xy: tuple[float, float] = (0.0, 0.0)) -> None:
    """Rain over the centre cools the air and saturates it (after scenarios added cells)."""
    r = w.rain(np.arange(len(w.t)), np.array([city_xy[0]]), np.array([city_xy[1]]))[:, 0]
    w.humidity = np.clip(w.humidity + 25 * np.tanh(r / 5.0), 0, 99)
    w.temp = w.temp - 3.0 * np.tanh(r / 10.0)
