"""Detection quality: NAB-style scoring (``nab``), the corpus runner (``harness``) and
synthetic labelled corpora for tests (``synthetic``)."""
