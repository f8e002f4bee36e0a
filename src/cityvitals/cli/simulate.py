"""CLI for the `simulate` commands (to be filled in by the stage that owns them)."""

import typer

app = typer.Typer(help="simulate commands.", no_args_is_help=True)
