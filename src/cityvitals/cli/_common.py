"""What every command shares: the --home, --store and --json options, output and progress."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Annotated, Any, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console()
err_console = Console(stderr=True)

Home = Annotated[
    Optional[str],
    typer.Option("--home", help="Data directory (default: $CITYVITALS_HOME or ./.cityvitals).", envvar="CITYVITALS_HOME"),
]
Store = Annotated[
    Optional[str],
    typer.Option("--store", help="Store URL: postgresql://user@host/db for server mode (default: the DuckDB file "
                 "in --home; also $CITYVITALS_STORE or 'store:' in <home>/config.yaml).", envvar="CITYVITALS_STORE"),
]
Json = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object for scripts.")]


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")


def open_store_cli(home: str | None, store_url: str | None = None, read_only: bool = False):
    """The store for a command; a store that cannot be opened is a one-line error."""
    from cityvitals.store import open_store
    from cityvitals.store.duck import StoreError

    if isinstance(store_url, bool):  # an old positional call: open_store_cli(home, read_only)
        store_url, read_only = None, store_url
    try:
        return open_store(home, url=store_url, read_only=read_only)
    except StoreError as exc:
        from cityvitals.errors import InputError
        from cityvitals.home import running_server

        server = running_server(home)
        if server is not None:
            raise InputError(held_by_server(server)) from exc
        raise InputError(str(exc)) from exc


# What the API offers for commands that write, named in the "held by the server" error.
_API_WAY = {
    "ingest": "POST {url}/api/v1/readings (a JSON array of readings)",
    "alerts ack": "POST {url}/api/v1/alerts/ID/ack",
    "alerts resolve": "POST {url}/api/v1/alerts/ID/resolve",
    "cases": "POST {url}/api/v1/cases/ID/ACTION (or Open311: POST {url}/open311/v2/requests.json)",
}


def held_by_server(server: dict) -> str:
    """One line: which server holds the store, and how to do this command's work through it."""
    words = []
    for arg in sys.argv[1:]:  # the command as typed, up to its first option
        if arg.startswith("-"):
            break
        words.append(arg)
    command = " ".join(words)
    way = next((w for k, w in _API_WAY.items() if command == k or command.startswith(k + " ")),
               "use its API ({url}/api/v1/docs)")
    return (f"the store is held by the running server (cityvitals serve, pid {server['pid']}, {server['url']}) "
            f"and DuckDB lets one process open it: stop the server, or {way.format(url=server['url'])} with an API key")


@contextmanager
def progress(description: str, total: float | None, *, enabled: bool = True) -> Iterator[Any]:
    """A progress bar on stderr (so --json output stays clean); a no-op when disabled."""
    if not enabled or not err_console.is_terminal:
        class _Null:
            def advance(self, *_: Any, **__: Any) -> None: ...
            def update(self, *_: Any, **__: Any) -> None: ...

        yield _Null()
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)

        class _Bar:
            def advance(self, n: float = 1) -> None:
                bar.advance(task, n)

            def update(self, **kw: Any) -> None:
                bar.update(task, **kw)

        yield _Bar()
