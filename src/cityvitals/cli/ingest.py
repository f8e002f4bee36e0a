"""``cityvitals ingest FILE``: readings from NDJSON, CSV or Parquet into the store."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from cityvitals.cli._common import Home, Store, Json, console, emit_json, open_store_cli, progress


def ingest(
    files: Annotated[list[str], typer.Argument(help="One or more files of readings.")],
    format: Annotated[Optional[str], typer.Option("--format", help="ndjson, csv or parquet (default: by extension).")] = None,
    future_tolerance: Annotated[int, typer.Option(help="Seconds a timestamp may lie ahead of the clock.")] = 300,
    home: Home = None, store_url: Store = None,
    json: Json = False,
) -> None:
    """Validate and store readings; bad records go to quarantine with a reason."""
    from cityvitals.ingest import Ingestor, IngestReport, detect_format, ingest_file
    from pathlib import Path

    total = IngestReport()
    with open_store_cli(home, store_url) as store:
        ingestor = Ingestor(store, future_tolerance_s=future_tolerance)
        for file in files:
            detect_format(Path(file), format)  # fail early on an unknown format
            size = os.path.getsize(file) if os.path.isfile(file) else 0
            with progress(f"ingest {os.path.basename(file)}", size, enabled=not json) as bar:
                report = ingest_file(store, file, format, ingestor=ingestor, on_progress=bar.advance)
            total.merge(report)
            total.seconds += report.seconds
    if json:
        emit_json(total.to_dict())
        return
    q = total.quarantined
    console.print(
        f"accepted {total.accepted:,} · duplicates {total.duplicates:,} · quarantined {sum(q.values()):,}"
        + (" (" + ", ".join(f"{k} {v:,}" for k, v in sorted(q.items())) + ")" if q else "")
        + f" · {total.seconds:.2f} s"
    )
