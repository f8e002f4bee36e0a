"""The HTTP API: units, sensors, readings, quarantine, vital signs, alerts, a live event
stream and the public health summary, under /api/v1, with keys, roles and area scope.

``create_app(store)`` returns the FastAPI application; ``cityvitals serve`` runs it.
"""

from cityvitals.api.app import PREFIX, create_app
from cityvitals.api.context import Limits

__all__ = ["PREFIX", "Limits", "create_app"]
