"""``cityvitals watch``: run the detectors over new readings and keep alerts up to date."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cityvitals.cli._common import Home, Json, console, emit_json, open_store_cli, progress
from cityvitals.errors import InputError

app = typer.Typer(help="Early warning: detectors over readings, producing alerts.", no_args_is_help=True)


def load_thresholds(path: str | None) -> dict:
    """YAML ``kind: {levels: [attention, warning, alarm], direction: higher|lower, min_duration: s}``."""
    from cityvitals.watch.runner import Threshold

    if path is None:
        return {}
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"--thresholds {path}: no such file")
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"--thresholds {path}: not YAML ({exc})") from exc
    if not isinstance(doc, dict):
        raise InputError(f"--thresholds {path}: must map sensor kinds to {{levels, direction}}")
    out = {}
    for kind, spec in doc.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("levels"), list) or not 1 <= len(spec["levels"]) <= 3:
            raise InputError(f"--thresholds {path}: {kind}: needs levels: [attention, warning, alarm]")
        direction = spec.get("direction", "higher")
        if direction not in ("higher", "lower"):
            raise InputError(f"--thresholds {path}: {kind}: direction must be higher or lower, not {direction!r}")
        try:
            levels = [float(v) for v in spec["levels"]]
        except (TypeError, ValueError) as exc:
            raise InputError(f"--thresholds {path}: {kind}: levels must be numbers") from exc
        out[str(kind)] = Threshold(levels, direction, int(spec.get("min_duration", 300)))
    return out


@app.command("run")
def run(
    thresholds: Annotated[Optional[str], typer.Option(help="YAML of levels per sensor kind (kind: {levels: [a, w, al], direction}).")] = None,
    escalate_after: Annotated[int, typer.Option(help="Minutes an unacknowledged alarm waits before it escalates.")] = 15,
    resolve_after: Annotated[int, typer.Option(help="Minutes a condition must stay clear before its alert auto-resolves.")] = 10,
    home: Home = None,
    json: Json = False,
) -> None:
    """Run every detector over readings not yet watched and raise, update or resolve alerts."""
    from datetime import timedelta

    from cityvitals.watch.alerts import AlertPolicy
    from cityvitals.watch.runner import watch_readings

    th = load_thresholds(thresholds)
    policy = AlertPolicy(escalate_after=timedelta(minutes=escalate_after), resolve_after=timedelta(minutes=resolve_after))
    with open_store_cli(home) as store:
        with progress("watching readings", None, enabled=not json) as bar:
            res = watch_readings(store, thresholds=th, policy=policy, progress=bar.advance)
        res["open_alerts"] = store.alerts.status()["alerts_open"]
    if json:
        emit_json(res)
        return
    a = res["alerts"]
    console.print(
        f"watched {res['points']:,} readings of {res['series']:,} series: {a.get('raised', 0)} alerts raised, "
        f"{a.get('reopened', 0)} reopened, {a.get('resolved', 0)} resolved, {res['escalated']} escalated; "
        f"{res['open_alerts']} open"
    )
