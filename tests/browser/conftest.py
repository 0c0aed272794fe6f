"""Browser tests: Debian's Chromium, headless, driven by Playwright, against the
real server (`pullrun serve` as a subprocess: tests/conftest.py's `server`),
engine and registries.

`make test` provisions the engine and registries and exports PULLRUN_TEST_*
(scripts/test-env.sh). Playwright cannot download browsers here: it drives
/usr/bin/chromium (scripts/deps.sh installs it). Every test leaves a
screenshot in tests/artifacts/ (git-ignored) for a person to look at.

Waits are for conditions (expect(), wait_for_function), never for a time;
their deadline, WAIT_MS, only turns a hang into a failure.

Every context is signed in as a browser would be (unless `signed_in=False`):
it posts the server's admin token to /login and keeps the session cookie, so
pages, their EventSources and fetches use the cookie and the CSRF token.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.browser.helpers import (
    WAIT_MS,
    PageProblems,
    chromium_missing,
    launch_chromium,
    new_context,
    screenshot,
    sign_in,
)
from tests.support.server import ServerProcess

expect.set_options(timeout=WAIT_MS)


# Module scope, not session: Playwright's sync API keeps its event loop current
# while it runs, and the tests after these (asyncio.run in tests/unit) need none.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    missing = chromium_missing()
    if missing:
        pytest.fail(missing)
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        yield browser
        browser.close()


@pytest.fixture
def new_page(
    browser: Browser, server: ServerProcess, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """new_page(signed_in=True, **context_options) -> (page, problems), in a
    context of its own, signed in with the server's admin token unless
    `signed_in=False`; screenshots each page at the end."""
    opened: list[tuple[BrowserContext, Page, PageProblems]] = []

    def make(signed_in: bool = True, **options: Any) -> tuple[Page, PageProblems]:
        context = new_context(browser, base_url=server.base_url, **options)
        if signed_in:
            sign_in(context, token=server.token)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
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
