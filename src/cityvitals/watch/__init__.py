"""Stage ``watch``: detectors over reading series, and the alerts they raise.

Every detector implements ``cityvitals.watch.base.Detector`` and lives in its own module;
``DETECTORS`` names them for the runner, ``eval`` and ``bench``. State per series is kept
in NumPy arrays so one batch of points for many series is scored in one pass.
"""

from __future__ import annotations

from cityvitals.watch.anomaly import AnomalyScoreDetector
from cityvitals.watch.base import Detector, VectorDetector
from cityvitals.watch.breach import BreachForecaster
from cityvitals.watch.gaussian import WindowedGaussian
from cityvitals.watch.health import SensorHealthDetector
from cityvitals.watch.seasonal import SeasonalDetector
from cityvitals.watch.shift import LevelShiftDetector
from cityvitals.watch.threshold import ThresholdDetector

DETECTORS: dict[str, type[VectorDetector]] = {
    cls.name: cls
    for cls in (
        ThresholdDetector, LevelShiftDetector, SeasonalDetector, BreachForecaster, SensorHealthDetector,
        AnomalyScoreDetector, WindowedGaussian,
    )
}


def watch_readings(store, **kwargs):
    """Run every detector over readings not yet watched; see ``cityvitals.watch.runner``."""
    from cityvitals.watch.runner import watch_readings as _run

    return _run(store, **kwargs)


__all__ = [
    "DETECTORS", "Detector", "VectorDetector", "ThresholdDetector", "LevelShiftDetector", "SeasonalDetector",
    "BreachForecaster", "SensorHealthDetector", "AnomalyScoreDetector", "WindowedGaussian", "watch_readings",
]
