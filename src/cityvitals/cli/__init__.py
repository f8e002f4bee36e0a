"""The ``cityvitals`` command line: one sub-command group per stage of the flow.

Usage errors exit 2 (typer/click), failures exit 1 with a one-line message; no
traceback reaches the user unless CITYVITALS_DEBUG is set.
"""

from __future__ import annotations

import os
import sys

import typer

from cityvitals import __version__
from cityvitals.cli import (
    alerts, bench, cases, catalog, db, demo, health, incidents, ingest, quarantine, run, sensors, serve, share, signs, simulate, space,
    status, users, watch,
)
from cityvitals.cli.eval import eval_cmd
from cityvitals.errors import CityvitalsError

app = typer.Typer(
    name="cityvitals",
    help="Watch a city's vital signs: ingest, locate, measure, warn, diagnose and dispose.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cityvitals {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """cityvitals command line."""


app.add_typer(space.app, name="space")
app.add_typer(sensors.app, name="sensors")
app.command("ingest")(ingest.ingest)
app.add_typer(quarantine.app, name="quarantine")
app.command("status")(status.status)
app.add_typer(simulate.app, name="simulate")
app.add_typer(catalog.app, name="catalog")
app.add_typer(signs.app, name="signs")
app.command("health")(health.health)
app.add_typer(watch.app, name="watch")
app.add_typer(alerts.app, name="alerts")
# `eval` scores detectors on labelled series by itself and diagnosis with `eval diagnose`
# (the same command as `diagnose eval`).
eval_app = typer.Typer(invoke_without_command=True, help="Measure detection and diagnosis quality.")
eval_app.callback()(eval_cmd)
eval_app.command("diagnose")(incidents.eval_)
app.add_typer(eval_app, name="eval")
app.command("serve")(serve.serve)
app.add_typer(users.app, name="users")
app.add_typer(incidents.app, name="incidents")
app.add_typer(incidents.diagnose_app, name="diagnose")
app.add_typer(cases.app, name="cases")
app.add_typer(db.app, name="db")
catalog.app.command("datasets")(share.datasets)
app.command("export")(share.export_cmd)
app.add_typer(share.audit_app, name="audit")
app.command("erase")(share.erase_cmd)
app.add_typer(bench.app, name="bench")
app.command("demo")(demo.demo)
app.command("run")(run.run)


def main() -> None:
    try:
        app(standalone_mode=True)
    except CityvitalsError as exc:
        if os.environ.get("CITYVITALS_DEBUG"):
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
