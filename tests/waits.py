"""Bounded waits for tests that watch another process (a server, a broker) reach a state."""

from __future__ import annotations

import time


def wait_for(pred, timeout: float, what: str) -> None:
    """Poll ``pred`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
