"""``cityvitals eval``: detection quality on labelled series, scored the way NAB scores."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cityvitals.cli._common import Json, console, emit_json, progress


def eval_cmd(
    data: Annotated[str, typer.Option("--data", help="Folder of CSV files `timestamp,value` (NAB layout).")],
    labels: Annotated[str, typer.Option("--labels", help="JSON: each file's relative path -> list of [start, end] windows.")],
    detector: Annotated[str, typer.Option("--detector", help="cityvitals, windowed_gaussian, shift, seasonal or null.")] = "cityvitals",
    scores_out: Annotated[Optional[str], typer.Option("--scores-out", help="Write each file's scores as CSV timestamp,value,anomaly_score here.")] = None,
    json: Json = False,
) -> None:
    """Score a detector on labelled series: NAB standard / reward-low-FP / reward-low-FN (0 = never fires, 100 = perfect)."""
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
