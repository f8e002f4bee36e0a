"""Daily and weekly shapes of city life, vectorised over local hour and weekday.

>>> import numpy as np
>>> h = np.array([3.0, 8.0, 18.0]); d = np.array([0, 0, 0])
>>> bool(traffic_demand(h, d)[1] > traffic_demand(h, d)[0])
True
"""

from __future__ import annotations

import numpy as np


def bump(h: np.ndarray, centre: float, width: float) -> np.ndarray:
    """A Gaussian bump on the 24-hour circle."""
    d = (h - centre + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / width) ** 2)


def weekend(dow: np.ndarray) -> np.ndarray:
    return dow >= 5


def traffic_demand(h: np.ndarray, dow: np.ndarray) -> np.ndarray:
    """Road demand in [0, 1]: two commuter peaks on weekdays, one broad hump at weekends."""
    wd = 0.07 + 0.78 * bump(h, 8.2, 1.1) + 0.72 * bump(h, 18.0, 1.4) + 0.42 * bump(h, 13.0, 3.0)
    we = 0.07 + 0.55 * bump(h, 14.5, 3.8)
    return np.clip(np.where(weekend(dow), we, wd), 0, 1)


def water_demand(h: np.ndarray) -> np.ndarray:
    """Household water use in [0, 1]: morning and evening peaks, a night minimum around 3 am."""
    return np.clip(0.18 + 0.62 * bump(h, 7.3, 1.4) + 0.55 * bump(h, 19.8, 1.9) + 0.28 * bump(h, 12.0, 2.0), 0, 1)


def power_profile(h: np.ndarray, dow: np.ndarray) -> np.ndarray:
    """Electric load shape in [0, 1]: office hours plus an evening residential peak."""
    p = 0.22 + 0.38 * bump(h, 11.0, 2.2) + 0.42 * bump(h, 15.0, 2.6) + 0.45 * bump(h, 20.5, 2.2)
    return np.clip(np.where(weekend(dow), 0.9 * p, p), 0, 1)


def activity(h: np.ndarray) -> np.ndarray:
    """Human activity in [0, 1]: quiet at night, busy 7:00–22:00."""
    return 0.15 + 0.85 / (1 + np.exp(-(h - 6.5) * 2.0)) / (1 + np.exp((h - 22.5) * 2.0))


def sun(h: np.ndarray) -> np.ndarray:
    """Photochemical drive for ozone, peaking mid-afternoon."""
    return np.clip(np.sin(np.pi * (h - 6.5) / 13.5), 0, None) ** 1.4
