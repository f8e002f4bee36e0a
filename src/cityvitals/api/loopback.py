"""Serve the API in a thread on a free loopback port, for benchmarks and browser tests.

Both drive a real uvicorn server from the same process (so they can read its state) and
must not race it: the server is waited for with a bound, and the block's end stops it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# Headless Debian Chromium on a closed network: without the background-networking flags it
# keeps trying (and failing) to reach Google's hosts.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_in_thread(app, *, ready_within: float = 20.0) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 until the block ends; yields its base URL once it answers.

    Raises ``TimeoutError`` when the public health endpoint does not answer within
    ``ready_within`` seconds.
    """
    import httpx
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_within
    while time.monotonic() < deadline:  # bounded wait for readiness
        try:
            if httpx.get(url + "/api/v1/public/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    else:
        srv.should_exit = True
        raise TimeoutError(f"the server did not start within {ready_within:g} s")
    try:
        yield url
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
