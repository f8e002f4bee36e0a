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


# ---- the server that holds the store ------------------------------------------------------
# DuckDB lets one process open the file. While `cityvitals serve` (or `demo`) runs, it notes
# its address here, so another command that finds the file locked can say which server holds
# it and how to do the same through that server's API, instead of a raw lock error.
SERVER_FILE = "server.json"


def announce_server(home: str | os.PathLike[str] | None, url: str) -> Path:
    """Record that this process serves the store in ``home`` at ``url``."""
    import json
    import time

    path = resolve_home(home) / SERVER_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "url": url, "started": time.time()}))
    tmp.replace(path)
    return path


def withdraw_server(home: str | os.PathLike[str] | None) -> None:
    """Remove this process's record (a record another process wrote is left alone)."""
    found = running_server(home, check_alive=False)
    if found is not None and found["pid"] == os.getpid():
        (resolve_home(home) / SERVER_FILE).unlink(missing_ok=True)


def running_server(home: str | os.PathLike[str] | None, *, check_alive: bool = True) -> dict | None:
    """``{"pid", "url", "started"}`` of the server holding the store in ``home``, or None
    (no record, an unreadable one, or one left by a process that is gone)."""
    import json

    path = Path(home or os.environ.get("CITYVITALS_HOME") or DEFAULT_HOME) / SERVER_FILE
    try:
        found = json.loads(path.read_text())
        pid, url = int(found["pid"]), str(found["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if check_alive:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # alive, owned by another user
            pass
    return {"pid": pid, "url": url, "started": found.get("started")}
