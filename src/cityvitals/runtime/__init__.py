"""The local runner: one process that feeds sources through the stages on an injected clock.

``SimClock`` runs simulated time at a speed factor; ``ReplaySource`` releases a simulated
folder's readings as their time comes; ``LocalRunner`` takes each due batch through ingest,
signs and watch (and the later stages present in this install). The API is served from the
same process, so the dashboard shows the city as it lives.
"""

from cityvitals.runtime.clock import SimClock
from cityvitals.runtime.local import LocalRunner
from cityvitals.runtime.replay import ReplaySource

__all__ = ["LocalRunner", "ReplaySource", "SimClock"]
