"""What the browser tests share: Debian's Chromium, a live server in a thread, a page.

The server runs uvicorn on a free loopback port in a daemon thread and is waited for with a
bound; the page is headless Chromium driven by Playwright, with the flags this closed network
needs, collecting page errors so a test can assert there were none.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager

import pytest

# serve: the API on a free loopback port in a thread, waited for with a bound (a TimeoutError
# fails the test); free_port for tests that start `cityvitals serve` themselves.
from cityvitals.api.loopback import CHROMIUM_ARGS, free_port  # noqa: F401
from cityvitals.api.loopback import serve_in_thread as serve  # noqa: F401

CHROMIUM = "/usr/bin/chromium"
ARGS = CHROMIUM_ARGS

requires_chromium = pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                                       reason=f"{CHROMIUM} is not installed (CI installs chromium)")


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
