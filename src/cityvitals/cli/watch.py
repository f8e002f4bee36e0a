"""``cityvitals watch``: run the detectors over new readings and keep alerts up to date."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cityvitals.cli._common import Home, Store, Json, console, emit_json, open_store_cli, progress
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
    thresholds: Annotated[Optional[str], typer.Option(help="YAML of levels per sensor kind (kind: {levels: [a, w, al], direction}); overrides the indicator catalogue's levels for those kinds.")] = None,
    escalate_after: Annotated[int, typer.Option(help="Minutes an unacknowledged alarm waits before it escalates.")] = 15,
    resolve_after: Annotated[int, typer.Option(help="Minutes a condition must stay clear before its alert auto-resolves.")] = 10,
    warmup: Annotated[int, typer.Option(help="Seconds of the oldest new readings learnt without alerting (history loaded in bulk).")] = 0,
    signs: Annotated[bool, typer.Option("--signs/--no-signs", help="Also watch indicator series (sign_values) for level crossings.")] = True,
    anomaly_alerts: Annotated[bool, typer.Option(help="Raise level-shift and seasonal alerts too (noisier; they always learn).")] = False,
    home: Home = None,
    store_url: Store = None,
    json: Json = False,
) -> None:
    """Run every detector over readings (and indicator values) not yet watched and raise, update or resolve alerts.

    Levels per sensor kind come from the indicator catalogue and the sensors' assets; a
    --thresholds YAML overrides them per kind.
    """
    from datetime import timedelta

    from cityvitals.watch.alerts import AlertPolicy
    from cityvitals.watch.runner import watch_readings

    th = load_thresholds(thresholds)
    policy = AlertPolicy(escalate_after=timedelta(minutes=escalate_after), resolve_after=timedelta(minutes=resolve_after))
    with open_store_cli(home, store_url) as store:
        from cityvitals.live import StagesBusy, hold_stages_lock

        try:  # a server's live watch on this store would raise the same alerts: one watch at a time
            hold_stages_lock(store, 0, holder="`cityvitals watch run`")
        except StagesBusy as exc:
            raise InputError(str(exc)) from exc
        with progress("watching readings", None, enabled=not json) as bar:
            res = watch_readings(store, thresholds=th, policy=policy, progress=bar.advance, warmup=warmup,
                                 anomaly_alerts=anomaly_alerts)
        if signs:
            from cityvitals.watch.signs import watch_signs

            res["signs"] = watch_signs(store, policy=policy)
        res["open_alerts"] = store.alerts.status()["alerts_open"]
    if json:
        emit_json(res)
        return
    a = res["alerts"]
    console.print(
        f"watched {res['points']:,} readings of {res['series']:,} series: {a.get('raised', 0)} alerts raised, "
        f"{a.get('reopened', 0)} reopened, {a.get('resolved', 0)} resolved, {res['escalated']} escalated; "
        f"{res['open_alerts']} open"
        + (f"; indicator values watched: {res['signs']['rows']:,}" if "signs" in res else "")
    )


@app.command("eval-sim")
def eval_sim(
    sim: Annotated[str, typer.Option("--sim", help="Simulator output folder (with truth.json).")],
    thresholds: Annotated[Optional[str], typer.Option(help="YAML of levels per sensor kind, over the catalogue's.")] = None,
    warmup: Annotated[int, typer.Option(help="Seconds of the oldest readings learnt without alerting (history).")] = 0,
    home: Home = None,
    json: Json = False,
) -> None:
    """Watch a simulated city and score the alerts against its ground truth (the issue's quality bar).

    Without --home a temporary home is made, loaded and removed; with it the city is used as
    loaded (``simulate load``), loading it first if the home has no readings.
    """
    from cityvitals.watch.eval.truth import evaluate_sim_folder

    th = load_thresholds(thresholds) or None
    with progress("watching the simulated city", None, enabled=not json) as bar:
        res = evaluate_sim_folder(sim, home=home, warmup=warmup, thresholds=th, progress=bar.advance)
    out = {
        "share_detected": res["incident_detection"], "false_alerts_per_100_sensor_days": res["false_alerts_per_100_sensor_days"],
        "faults_as_faults": res["faults_as_faults"], "median_lead_time_s": res["median_lead_time_s"], **res,
    }
    if json:
        emit_json(out)
        return

    def pct(v):
        return "-" if v is None else f"{100 * v:.0f}%"

    lead = res["median_lead_time_s"]
    console.print(
        f"incidents detected {res['incidents_detected']}/{res['incidents']} ({pct(res['incident_detection'])})"
        + (f" ({len(res['incidents_unobservable'])} touching no sensor left out)" if res["incidents_unobservable"] else "")
        + "; "
        f"false alerts {res['false_alerts_per_100_sensor_days']:.2f} per 100 sensor-days; "
        f"faults as faults {pct(res['faults_as_faults'])}; "
        f"median lead time {'-' if lead is None else f'{lead / 60:.1f} min'} ({len(res['lead_times_s'])} warnings)"
    )
