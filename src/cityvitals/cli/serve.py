"""``cityvitals serve``: the HTTP API and the dashboard over the store in --home.

The server process owns the DuckDB file while it runs (DuckDB lets one process open it),
so other commands that need the store talk to the running server or wait for it to stop.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cityvitals.cli._common import Home, err_console, open_store_cli


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", min=0.01, help="Largest request body accepted.")] = 4.0,
    home: Home = None,
) -> None:
    """Serve the API (/api/v1) and the live dashboard (/) until interrupted."""
    import uvicorn

    from cityvitals.api import Limits, create_app

    store = open_store_cli(home)
    try:
        if not store.users.list():
            err_console.print("[yellow]no users yet: create one with `cityvitals users add NAME --role admin`[/yellow]")
        app = create_app(store, limits=Limits(max_body_bytes=int(max_body_mb * 1024 * 1024)))
        err_console.print(f"dashboard: http://{host}:{port}/   API: http://{host}:{port}/api/v1/docs")
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
    finally:
        store.close()
