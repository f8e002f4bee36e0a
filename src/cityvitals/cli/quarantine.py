import typer

app = typer.Typer(help="Quarantined records.", no_args_is_help=True)
