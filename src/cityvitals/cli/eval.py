"""``cityvitals eval``: detection quality on labelled series, scored the way NAB scores."""

from __future__ import annotations

from typing import Annotated

import typer

from cityvitals.cli._common import Json, console, emit_json, progress


def eval_cmd(
    ctx: typer.Context,
    data: Annotated[str | None, typer.Option("--data", help="Folder of CSV files `timestamp,value` (NAB layout).")] = None,
    labels: Annotated[str | None, typer.Option("--labels", help="JSON: each file's relative path -> list of [start, end] windows.")] = None,
    detector: Annotated[str, typer.Option("--detector", help="cityvitals, windowed_gaussian, shift, seasonal or null.")] = "cityvitals",
    scores_out: Annotated[str | None, typer.Option("--scores-out", help="Write each file's scores as CSV timestamp,value,anomaly_score here.")] = None,
    json: Json = False,
) -> None:
    """Score a detector on labelled series: NAB standard / reward-low-FP / reward-low-FN (0 = never fires, 100 = perfect).

    `cityvitals eval diagnose` scores diagnosis on simulator ground truth instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    if data is None or labels is None:
        # Both are needed only when no sub-command is given, so click cannot require them itself.
        missing = "--data" if data is None else "--labels"
        raise typer.BadParameter("required unless a sub-command is given (e.g. `cityvitals eval diagnose`)",
                                 ctx=ctx, param_hint=missing)
    from cityvitals.watch.eval.harness import evaluate

    with progress("scoring files", None, enabled=not json) as bar:
        res = evaluate(data, labels, detector=detector, scores_out=scores_out, progress=bar.advance)
    if json:
        emit_json(res)
        return
    m = res["metrics"]
    console.print(f"detector {res['detector']}: {res['files']} files, {res['points']:,} points, {res['windows']} windows")
    for prof in ("standard", "reward_low_fp", "reward_low_fn"):
        console.print(f"  {prof:<14} {res[prof]:6.1f}   (threshold {res['profiles'][prof]['threshold']:.4g})")
    delay = m["mean_detection_delay_s"]
    console.print(
        f"  at the standard threshold: precision {m['precision']:.2f}, recall {m['recall']:.2f}, F1 {m['f1']:.2f}, "
        f"mean detection delay {'-' if delay is None else f'{delay / 60:.0f} min'}"
    )
