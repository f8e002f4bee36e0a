"""CLI for the `signs` commands (to be filled in by the stage that owns them)."""

import typer

app = typer.Typer(help="signs commands.", no_args_is_help=True)
