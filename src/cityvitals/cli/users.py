"""``cityvitals users``: accounts and their API keys (stored only as hashes).

A key is printed once, when made by ``add`` or ``rotate``; keep it, it cannot be shown again.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from cityvitals.cli._common import Home, Store, Json, console, emit_json, open_store_cli
from cityvitals.store.duck.users import ROLES

app = typer.Typer(help="Users, roles, area scope and API keys.", no_args_is_help=True)


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, _ . @ -).")],
    role: Annotated[str, typer.Option("--role", help=f"One of: {', '.join(ROLES)}.")],
    area: Annotated[Optional[str], typer.Option("--area", help="Unit code: the user sees only this unit and below.")] = None,
    department: Annotated[Optional[str], typer.Option("--department", help="Department id (for department staff).")] = None,
    home: Home = None, store_url: Store = None,
    json: Json = False,
) -> None:
    """Create a user and print its API key once."""
    with open_store_cli(home, store_url) as store:
        key = store.users.add(name, role, area=area, department=department)
    if json:
        emit_json({"name": name, "role": role, "area": area, "department": department, "key": key})
        return
    console.print(f"user [bold]{name}[/bold] ({role}) created. API key (shown once, keep it):")
    typer.echo(key)


@app.command("list")
def list_(home: Home = None, store_url: Store = None, json: Json = False) -> None:
    """Users with role, area, department and key state (never the key)."""
    with open_store_cli(home, store_url) as store:
        users = store.users.list()
    if json:
        emit_json({"users": users})
        return
    t = Table("name", "role", "area", "department", "key id", "created", "rotated", "revoked")
    for u in users:
        t.add_row(u["name"], u["role"], u["area_code"] or "", u["department"] or "", u["key_id"] or "",
                  str(u["created_at"])[:19], str(u["rotated_at"] or "")[:19], str(u["revoked_at"] or "")[:19])
    console.print(t)


@app.command("rotate")
def rotate(name: Annotated[str, typer.Argument(help="User name.")], home: Home = None, store_url: Store = None, json: Json = False) -> None:
    """Give a user a new key (printed once); the old key stops working at once."""
    with open_store_cli(home, store_url) as store:
        key = store.users.rotate(name)
    if json:
        emit_json({"name": name, "key": key})
        return
    console.print(f"new API key for [bold]{name}[/bold] (shown once):")
    typer.echo(key)


@app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="User name.")], home: Home = None, store_url: Store = None, json: Json = False) -> None:
    """Revoke a user's key; the user and its audit history stay."""
    with open_store_cli(home, store_url) as store:
        store.users.revoke(name)
    if json:
        emit_json({"name": name, "revoked": True})
        return
    console.print(f"user [bold]{name}[/bold] revoked")
