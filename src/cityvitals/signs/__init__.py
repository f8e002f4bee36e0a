"""Stage ``signs``: the city's vital signs per spatial unit, with levels and a health index.

Readings -> event-time windows per indicator and unit (``windows``) -> derived indicators
from a declared vocabulary (``functions``) -> levels with hysteresis and minimum duration
(``levels``) -> roll-up across the unit tree (``rollup``) -> health index with its
explanation (``health``). ``engine`` is the edge that reads and writes the store; the
other modules are pure and work on Polars frames. The catalogue (``catalog``) says what
to compute; it is data.
"""

from cityvitals.signs.catalog import LEVELS, Catalog, Indicator, Problem, check_catalog, load_catalog
from cityvitals.signs.engine import SignsReport, compute_signs, health, recompute

__all__ = [
    "LEVELS", "Catalog", "Indicator", "Problem", "SignsReport", "check_catalog", "compute_signs", "health",
    "load_catalog", "recompute",
]
