"""``cityvitals ingest`` (filled in by the ingest stage)."""


def ingest() -> None:
    """Ingest readings from a file."""
