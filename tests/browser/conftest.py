"""Browser tests: Debian's Chromium, headless, driven by Playwright, against the
real server (`pullrun serve` as a subprocess), engine and registries.

`make test` provisions the engine and registries and exports PULLRUN_TEST_*
(scripts/test-env.sh). Playwright cannot download browsers here: it drives
/usr/bin/chromium (scripts/deps.sh installs it). Every test leaves a
screenshot in tests/artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.browser.helpers import PageProblems, screenshot
from tests.support.server import ServerProcess

CHROMIUM = os.environ.get("PULLRUN_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("browser-server"), max_concurrent_runs=4) as proc:
        yield proc


# Module scope, not session: Playwright's sync API keeps its event loop current
# while it runs, and the tests after these (asyncio.run in tests/unit) need none.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: scripts/deps.sh installs Debian's chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _context(browser: Browser, **options: Any) -> BrowserContext:
    defaults: dict[str, Any] = {"viewport": {"width": 1280, "height": 900}, "color_scheme": "light"}
    defaults.update(options)
    return browser.new_context(**defaults)


@pytest.fixture
def new_page(
    browser: Browser, server: ServerProcess, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """new_page(**context_options) -> (page, problems); screenshots each page at the end."""
    opened: list[tuple[BrowserContext, Page, PageProblems]] = []

    def make(**options: Any) -> tuple[Page, PageProblems]:
        context = _context(browser, base_url=server.base_url, **options)
        page = context.new_page()
        page.set_default_timeout(20_000)
        problems = PageProblems()
        page.on("console", problems.on_console)
        page.on("pageerror", problems.on_page_error)
        opened.append((context, page, problems))
        return page, problems

    yield make
    test_name = re.sub(r"[^\w.-]+", "_", request.node.name)
    for index, (context, page, _) in enumerate(opened):
        suffix = "" if index == 0 else f"-{index + 1}"
        try:
            screenshot(page, f"{test_name}{suffix}")
        finally:
            context.close()


@pytest.fixture
def page(new_page: Any) -> Iterator[Page]:
    """A 1280x900 light-scheme page; the test fails on page or console errors."""
    page, problems = new_page()
    yield page
    assert problems.errors == [], problems.errors
