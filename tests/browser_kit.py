"""What the browser tests share: Debian's Chromium, a live server in a thread, a page.

The server runs uvicorn on a free loopback port in a daemon thread and is waited for with a
bound; the page is headless Chromium driven by Playwright, with the flags this closed network
needs, collecting page errors so a test can assert there were none.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import httpx
import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

requires_chromium = pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                                       reason=f"{CHROMIUM} is not installed (CI installs chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(app, *, ready_within: float = 20.0) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 until the block ends; yields its base URL once it answers."""
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
        pytest.fail(f"the server did not start within {ready_within:g} s")
    try:
        yield url
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@contextmanager
def browser_page(width: int = 1280, height: int = 800):
    """A headless Chromium page; ``page.errors`` collects the page's uncaught errors."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            pg = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.errors = errors
            yield pg
        finally:
            browser.close()
