"""CLI for the `catalog` commands (to be filled in by the stage that owns them)."""

import typer

app = typer.Typer(help="catalog commands.", no_args_is_help=True)
