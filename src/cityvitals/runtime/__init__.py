"""The local runner: one process that feeds sources through the stages on an injected clock.

``SimClock`` runs simulated time at a speed factor; ``ReplaySource`` releases a simulated
folder's readings as their time comes; ``FileSource`` releases a directory's reading files
one batch at a time, in the order Spark's file source takes them; ``LocalRunner`` takes
each due batch through ingest and ``Downstream`` (signs, watch, and the later stages present
in this install and store), which the Spark job (``cityvitals.spark``) runs too. The API is
served from the same process, so the dashboard shows the city as it lives.
"""

from cityvitals.runtime.clock import SimClock
from cityvitals.runtime.files import FileSource
from cityvitals.runtime.local import LocalRunner
from cityvitals.runtime.replay import ReplaySource
from cityvitals.runtime.stages import Downstream

__all__ = ["Downstream", "FileSource", "LocalRunner", "ReplaySource", "SimClock"]
