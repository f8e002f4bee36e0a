"""Stage ``diagnose``: group alerts, sensor-health findings and citizen reports into incidents
and rank their probable root causes.

The pure core (:mod:`symptoms`, :mod:`group`, :mod:`rank`) works on arrays and a graph;
:mod:`run` reads the store and writes incidents through ``store.incidents``;
:mod:`evaluate` scores the result against the simulator's ground truth.
"""

from __future__ import annotations

from cityvitals.diagnose.graph import AssetGraph
from cityvitals.diagnose.group import link
from cityvitals.diagnose.rank import (
    SENSOR_FAULT,
    UNKNOWN,
    WEATHER,
    Cause,
    Diagnosis,
    diagnose_symptoms,
)
from cityvitals.diagnose.symptoms import Symptoms, build_symptoms, read_reports


def diagnose(store, **kwargs):
    """Update the stored incidents from the alerts and reports; see :func:`cityvitals.diagnose.run.diagnose_store`."""
    from cityvitals.diagnose.run import diagnose_store

    return diagnose_store(store, **kwargs)


def evaluate(store, truth: dict, **kwargs) -> dict:
    """Stored incidents against a simulator ``truth.json``; see :mod:`cityvitals.diagnose.evaluate`."""
    from cityvitals.diagnose.evaluate import evaluate as _evaluate

    return _evaluate(store, truth, **kwargs)


__all__ = [
    "SENSOR_FAULT",
    "UNKNOWN",
    "WEATHER",
    "AssetGraph",
    "Cause",
    "Diagnosis",
    "Symptoms",
    "build_symptoms",
    "diagnose",
    "diagnose_symptoms",
    "evaluate",
    "link",
    "read_reports",
]
