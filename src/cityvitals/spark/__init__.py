"""The pipeline on Apache Spark Structured Streaming (``cityvitals run --engine spark``).

Spark moves the data and keeps the books: it discovers files (or reads Kafka
offsets), cuts the stream into micro-batches, checkpoints its offsets and replays a
micro-batch after a crash with the same batch id. Every stage is the product's own code,
the same as the local runner's: each micro-batch goes through ``ingest_stream`` (the
validation core, locate by the sensor registry), then ``Downstream`` (signs, levels,
health, watch detectors, and diagnose/dispose where the store has them). The store
commit of a micro-batch and its row in ``stream_batches`` are one PostgreSQL
transaction, so a replayed batch is recognised and skipped: a restart neither loses nor
duplicates results.

See docs/scaling.md for what runs where today (the stage cores run on the driver) and
how a deployment for a city of 11 million sensors is sized.
"""

from cityvitals.spark.job import batch_job, kafka_options, session, stream_job
from cityvitals.spark.sink import StoreSink

__all__ = ["StoreSink", "batch_job", "kafka_options", "session", "stream_job"]
