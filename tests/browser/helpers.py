"""Helpers for the browser tests (screenshots, page problems, reading the pages)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import ConsoleMessage, Page

from tests.support.server import ROOT

ARTIFACTS = ROOT / "tests" / "artifacts"


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


def wait_finished(page: Page, timeout: float = 60_000) -> None:
    """The run page got `done` (its connection state says finished)."""
    page.wait_for_selector("#conn-state[data-state='finished']", timeout=timeout)


def poll(check: Callable[[], Any], timeout: float = 20, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {check}")
        time.sleep(interval)
