"""``cityvitals status``: what the store holds."""

from __future__ import annotations

from rich.table import Table

from cityvitals.cli._common import Home, Store, Json, console, emit_json, open_store_cli


def status(home: Home = None, store_url: Store = None, json: Json = False) -> None:
    """Counts of units by level, sensors, readings and quarantined records by reason."""
    with open_store_cli(home, store_url) as store:
        info = store.status()
    if json:
        emit_json(info)
        return
    table = Table(title=f"cityvitals store ({info['backend']}: {info['path']})", show_header=False)
    for level, n in info.get("units", {}).items():
        table.add_row(f"units · {level}", f"{n:,}")
    table.add_row("sensors", f"{info.get('sensors', 0):,}")
    table.add_row("readings", f"{info.get('readings', 0):,}")
    if info.get("readings_from"):
        table.add_row("readings span", f"{info['readings_from']} → {info['readings_to']}")
    quarantined = info.get("quarantined", {})
    table.add_row("quarantined", f"{sum(quarantined.values()):,}")
    for reason, n in quarantined.items():
        table.add_row(f"  · {reason}", f"{n:,}")
    for key, value in info.items():
        if key in {"backend", "path", "units", "sensors", "sensors_by_kind", "readings", "readings_from", "readings_to", "quarantined"}:
            continue
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)
