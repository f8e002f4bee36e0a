"""CLI for the `space` commands (to be filled in by the stage that owns them)."""

import typer

app = typer.Typer(help="space commands.", no_args_is_help=True)
