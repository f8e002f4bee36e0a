"""Where cityvitals keeps its data: the home directory and what is in it.

Resolved once per command from ``--home``, then ``CITYVITALS_HOME``, then
``./.cityvitals``, so scripts and the CLI always agree on which store they touch.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = ".cityvitals"
STORE_FILE = "cityvitals.duckdb"


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The data directory, created if missing."""
    chosen = Path(home or os.environ.get("CITYVITALS_HOME") or DEFAULT_HOME)
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen
