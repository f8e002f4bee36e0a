"""``cityvitals run``: the whole pipeline over a stream, on the local engine or on Spark.

Both engines take the same source the same way (a directory of NDJSON or Parquet files,
oldest first, ``--files-per-batch`` files per batch) through the same stage code, so a
run on one can be checked against the other. Spark adds Kafka, checkpointed offsets and
an exactly-once commit per micro-batch to a PostgreSQL store.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from cityvitals.cli._common import (
    Home,
    Json,
    Store,
    emit_json,
    err_console,
    open_store_cli,
)
from cityvitals.errors import InputError


class Engine(str, Enum):
    local = "local"
    spark = "spark"


def _when(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InputError(f"{name} {text!r}: not an ISO 8601 date or time") from exc
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def run(
    source: Annotated[str, typer.Option("--source", help="A directory of NDJSON or Parquet reading files, or "
                                        "kafka://host:port/topic[?shards=0,1] (Spark only).")],
    engine: Annotated[Engine, typer.Option(help="local: this process; spark: Spark Structured Streaming.")] = Engine.local,
    master: Annotated[str, typer.Option(help="Spark master URL (spark engine).")] = "local[2]",
    checkpoint: Annotated[Optional[str], typer.Option(help="Spark checkpoint directory (spark engine; required).")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="ndjson or parquet (default: told by the files).")] = None,
    files_per_batch: Annotated[int, typer.Option(min=1, help="Files per batch (micro-batch).")] = 1,
    watch_groups: Annotated[Optional[int], typer.Option(min=1, help="Spark engine: groups of sensor kinds the watch's "
                                                        "state is kept in (default: the shuffle partitions; fixed by "
                                                        "the checkpoint's first run).")] = None,
    query: Annotated[str, typer.Option(help="Streaming query name: its committed batches are kept under it.")] = "cityvitals",
    once: Annotated[bool, typer.Option("--once", "--available-now", help="Take what the source holds now, then stop.")] = False,
    batch: Annotated[bool, typer.Option("--batch", help="Recompute history from a Parquet archive over --from/--to.")] = False,
    start: Annotated[Optional[str], typer.Option("--from", help="Batch mode: first instant (ISO 8601).")] = None,
    end: Annotated[Optional[str], typer.Option("--to", help="Batch mode: end instant, exclusive (ISO 8601).")] = None,
    store: Store = None,
    home: Home = None,
    json: Json = False,
) -> None:
    """Run ingest → signs → watch (→ diagnose → dispose) over a stream of reading files or Kafka."""
    say = (lambda msg: None) if json else (lambda msg: err_console.print(f"[dim]{msg}[/dim]"))
    if batch:
        lo, hi = _when(start, "--from"), _when(end, "--to")
        if lo is None or hi is None:
            raise InputError("--batch needs --from and --to")
        out = _batch(engine, source, store, home, lo, hi, master)
    elif engine is Engine.spark:
        out = _spark(source, store, home, master, checkpoint, fmt, files_per_batch, query, once, say, watch_groups)
    else:
        out = _local(source, store, home, fmt, files_per_batch, once, say)
    if json:
        emit_json(out)
    else:
        for k, v in out.items():
            typer.echo(f"{k}: {v}")


def _local(source, store_url, home, fmt, files_per_batch, once, say) -> dict:
    import time

    from cityvitals.runtime import LocalRunner
    from cityvitals.runtime.files import FileSource

    if source.startswith("kafka://"):
        raise InputError("the local engine reads a directory of files; Kafka needs --engine spark")
    src = FileSource(source, fmt, files_per_batch=files_per_batch)
    out = {"engine": "local", "batches": 0, "accepted": 0, "quarantined": 0}
    started, cpu0 = time.perf_counter(), time.process_time()
    with open_store_cli(home, store_url) as st:
        runner = LocalRunner(st, src, lambda: datetime.now(timezone.utc), event_time=True)
        try:
            while True:
                if src.done():
                    if once:
                        break
                    time.sleep(2.0)
                    continue
                rep = runner.step()
                out["batches"] += 1
                out["accepted"] += rep.accepted
                out["quarantined"] += rep.quarantined
                say(f"batch {out['batches']}: {rep.accepted:,} accepted, {rep.quarantined:,} quarantined, {rep.seconds:.1f} s")
        except KeyboardInterrupt:
            pass
    out["seconds"] = round(time.perf_counter() - started, 3)
    out["cpu_seconds"] = round(time.process_time() - cpu0, 3)
    return out


def _store_url(store_url: str | None, home: str | None) -> str:
    """The Spark sink needs a server store: the URL given, or the one configured for the home."""
    if store_url:
        return store_url
    from cityvitals.store import open_store

    with open_store(home) as st:
        url = getattr(st, "url", None)
    if not url or not str(url).startswith("postgresql"):
        raise InputError("the Spark engine writes to PostgreSQL: pass --store postgresql://... (or set CITYVITALS_STORE)")
    return url


def _spark(source, store_url, home, master, checkpoint, fmt, files_per_batch, query, once, say, watch_groups) -> dict:
    from cityvitals.spark import session, stream_job

    if not checkpoint:
        raise InputError("--engine spark needs --checkpoint DIR (where Spark keeps its offsets, commits and the "
                         "watch's state)")
    url = _store_url(store_url, home)
    spark = session(master, kafka=source.startswith("kafka://"))
    try:
        result = stream_job(spark, source, url, str(Path(checkpoint)), fmt=fmt, files_per_batch=files_per_batch,
                            query=query, available_now=once, home=home, watch_groups=watch_groups,
                            on_batch=lambda b: say(f"micro-batch {b.batch_id}: "
                                                   + ("committed before a restart, skipped" if b.skipped else
                                                      f"{b.accepted:,} accepted, {b.quarantined:,} quarantined, {b.seconds:.1f} s")),
                            on_watch=lambda w: say(f"watch of micro-batch {w.batch_id}: "
                                                   + ("committed before a restart, skipped" if w.skipped else
                                                      f"{w.points:,} readings, {w.series:,} series, {w.seconds:.1f} s")))
    finally:
        spark.stop()
    return {"engine": "spark", "master": master, **result.to_dict()}


def _batch(engine, source, store_url, home, lo, hi, master) -> dict:
    if engine is Engine.spark:
        from cityvitals.spark import batch_job, session

        spark = session(master)
        try:
            return {"engine": "spark", **batch_job(spark, source, _store_url(store_url, home), lo, hi, home=home)}
        finally:
            spark.stop()
    import time

    from cityvitals.ingest import IngestReport, ingest_file
    from cityvitals.signs import compute_signs

    files = sorted(Path(source).rglob("*.parquet"))
    if not files:
        raise InputError(f"{source}: no Parquet files to recompute from")
    total = IngestReport()
    started = time.perf_counter()
    with open_store_cli(home, store_url) as st:
        for f in files:
            total.merge(ingest_file(st, f, "parquet"))
        signs = compute_signs(st, lo, hi)
    return {"engine": "local", "ingest": total.to_dict(), "signs": signs.to_dict(),
            "seconds": round(time.perf_counter() - started, 3)}
