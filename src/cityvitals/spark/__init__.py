"""The pipeline on Apache Spark Structured Streaming (``cityvitals run --engine spark``).

Spark moves the data and keeps the books: it discovers files (or reads Kafka
offsets), cuts the stream into micro-batches, checkpoints its offsets and its operators'
state, and replays a micro-batch after a crash with the same batch id. Every stage is the
product's own code, the same as the local runner's. Two chained queries:

- *ingest*: the executors take each micro-batch through ``ingest_stream`` with a
  ``Checker`` (validation and locate against the broadcast sensor registry,
  ``executors.py``); the driver stores the validated batches, runs signs (levels, health)
  and writes the batch's handoff file for the watch (``handoff.py``).
- *watch*: the handoff files, one per micro-batch, grouped by sensor kind through a
  stateful operator that holds each kind's detector state in Spark's state store
  (``watch.py``: ``advance_series``); the driver applies the verdicts to the alerts and runs
  diagnose and dispose.

Each query's sink commits a micro-batch and its row in ``stream_batches`` in one PostgreSQL
transaction, so a replayed batch is recognised and skipped: a restart neither loses nor
duplicates results.

See docs/scaling.md for what runs where (and why signs stay in the driver) and how a
deployment for a city of 11 million sensors is sized.
"""

from cityvitals.spark.job import batch_job, kafka_options, session, stream_job
from cityvitals.spark.sink import StoreSink
from cityvitals.spark.watch import WatchSink

__all__ = ["StoreSink", "WatchSink", "batch_job", "kafka_options", "session", "stream_job"]
