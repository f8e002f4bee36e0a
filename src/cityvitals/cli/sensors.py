"""CLI for the sensor registry (filled in below by the registry)."""

import typer

app = typer.Typer(help="The sensor registry.", no_args_is_help=True)
