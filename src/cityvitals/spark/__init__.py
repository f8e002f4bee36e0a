"""The pipeline on Apache Spark Structured Streaming (``cityvitals run --engine spark``).

Spark moves the data and keeps the books: it discovers files (or reads Kafka
offsets), cuts the stream into micro-batches, checkpoints its offsets and replays a
micro-batch after a crash with the same batch id. Every stage is the product's own code,
the same as the local runner's: the executors take each micro-batch through
``ingest_stream`` with a ``Checker`` (validation and locate against the broadcast sensor
registry, ``executors.py``); the driver stores the validated batches and runs
``Downstream`` (signs, levels, health, watch detectors, and diagnose/dispose where the
store has them). The store commit of a micro-batch and its row in ``stream_batches`` are
one PostgreSQL transaction, so a replayed batch is recognised and skipped: a restart
neither loses nor duplicates results.

See docs/scaling.md for what runs where (and why signs and watch still run in the
driver) and how a deployment for a city of 11 million sensors is sized.
"""

from cityvitals.spark.job import batch_job, kafka_options, session, stream_job
from cityvitals.spark.sink import StoreSink

__all__ = ["StoreSink", "batch_job", "kafka_options", "session", "stream_job"]
