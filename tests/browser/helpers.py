"""Helpers for the browser tests (Chromium, screenshots, page problems, reading
the pages); benchmark 9 (bench/) drives Chromium with them too."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright

from tests.support.server import ROOT

ARTIFACTS = ROOT / "tests" / "artifacts"

CHROMIUM = os.environ.get("PULLRUN_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Playwright's deadline (ms) for every wait and expect(): generous, it only
# turns a hang into a failure.
WAIT_MS = 60_000


def chromium_missing() -> str:
    """Why Chromium cannot be launched ("" when it can)."""
    if shutil.which(CHROMIUM) or Path(CHROMIUM).exists():
        return ""
    return f"{CHROMIUM} not found: scripts/deps.sh installs Debian's chromium"


def launch_chromium(pw: Playwright) -> Browser:
    """Debian's Chromium, headless (Playwright cannot download browsers here)."""
    return pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def new_context(browser: Browser, **options: Any) -> BrowserContext:
    """A 1280x900 light-scheme context unless `options` say otherwise."""
    defaults: dict[str, Any] = {"viewport": {"width": 1280, "height": 900}, "color_scheme": "light"}
    defaults.update(options)
    return browser.new_context(**defaults)


def sign_in(
    context: BrowserContext,
    *,
    token: str | None = None,
    username: str = "",
    password: str = "",
) -> None:
    """Sign the context in through /login, as its form does (a POST that sets
    the session cookie, which the context's pages then send)."""
    form = {"username": username, "password": password, "token": token or "", "next": "/"}
    response = context.request.post("/login", form=form, max_redirects=0)
    assert response.status == 303, f"sign-in failed: {response.status} {response.text()[:300]}"
    assert any(c["name"] == "pullrun_session" for c in context.cookies()), context.cookies()


class PageProblems:
    """Uncaught page errors and console errors: a test fails when there are any."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    # The browser reports API answers the page expects and handles (a 422 for a
    # bad form, a 409 for a late cancel) as failed loads: not a problem.
    EXPECTED = re.compile(r"Failed to load resource: .* status of (409|422) ")

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not self.EXPECTED.search(message.text):
            self.errors.append(f"console: {message.text}")

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"page error: {error}")


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


def screenshot(page: Page, name: str, full_page: bool = True) -> Path:
    path = artifact(f"{name}.png")
    page.screenshot(path=str(path), full_page=full_page)
    return path


def log_lines(page: Page) -> list[tuple[int, str, str]]:
    """(number, stream class, visible text) of every log line in the DOM, in order."""
    rows: list[list[Any]] = page.evaluate(
        """() => [...document.querySelectorAll('#log-body .ln')].map((el) => [
            Number(el.dataset.n),
            ['stdout', 'stderr', 'tty'].find((s) => el.classList.contains(s)) || '',
            el.textContent,
        ])"""
    )
    return [(int(n), str(stream), str(text)) for n, stream, text in rows]


def wait_finished(page: Page, timeout: float = 2 * WAIT_MS) -> None:
    """The run page got `done` (its connection state says finished)."""
    page.wait_for_selector("#conn-state[data-state='finished']", timeout=timeout)


def wait_settled(page: Page, selector: str, frames: int = 5) -> None:
    """Wait until the element's scroll position has stayed the same for
    `frames` animation frames in a row (a wheel scroll may be animated)."""
    page.wait_for_function(
        """([selector, frames]) => {
            const top = document.querySelector(selector).scrollTop;
            const s = (window.__settle ||= { top: null, same: 0 });
            s.same = top === s.top ? s.same + 1 : 0;
            s.top = top;
            if (s.same < frames) return false;
            window.__settle = null;
            return true;
        }""",
        arg=[selector, frames],
        polling="raf",
    )
