"""A real ``stageflow serve`` and Debian's chromium, driven by Playwright.

Chromium is ``/usr/bin/chromium`` (``apt-get install chromium``; ``.ci/run`` installs
it), never a browser Playwright downloads. Without it (or without Playwright) the tests
skip, and fail when ``$STAGEFLOW_REQUIRE_BROWSER`` is 1, as in CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import Server, start_server, start_thread_server

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _unavailable(reason: str) -> None:
    if os.environ.get("STAGEFLOW_REQUIRE_BROWSER") == "1":
        pytest.fail(f"STAGEFLOW_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session", params=["process", "thread"])
def web_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A ``stageflow serve`` process of the browser tests, or the same server in a
    thread of this process (where coverage sees the page's routes run)."""
    folder = tmp_path_factory.mktemp(f"browser-{request.param}")
    started = start_server(folder) if request.param == "process" else start_thread_server(folder)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium, headless, from Debian's package.

    Module-scoped: Playwright's sync API keeps an event loop running in this thread
    while it is open, so it must be closed before other test modules call asyncio.run.
    """
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        _unavailable(f"there is no chromium ({CHROMIUM}): apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: pip install playwright")
    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, web_server: Server) -> Iterator[Any]:
    """A fresh page (its own sessionStorage) at the server's ``/``."""
    context = browser.new_context(viewport={"width": 1100, "height": 820})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(f"{web_server.url}/")
    yield opened
    context.close()
    assert errors == [], errors  # the script never threw
