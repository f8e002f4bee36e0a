"""The simulator: a digital-twin city that knows the truth about itself.

- ``generate_city`` / ``write_city`` / ``load_city``: districts → streets → communities,
  population, infrastructure assets with their dependency graph, sensors of every kind.
- ``run_simulation``: scenarios (incidents, sensor faults, background events) streamed
  as readings in the ingest format, reports, and ``truth.json``.
- ``load_folder``: a simulated folder into a store through the normal import paths.

The simulator sits beside the flow, not in it: no stage imports it.
"""

from cityvitals.sim.city import City, generate_city, load_city, write_city
from cityvitals.sim.load import load_folder
from cityvitals.sim.run import run_simulation
from cityvitals.sim.scenarios import FAULT_TYPES, INCIDENT_TYPES

__all__ = ["FAULT_TYPES", "INCIDENT_TYPES", "City", "generate_city", "load_city", "load_folder", "run_simulation", "write_city"]
