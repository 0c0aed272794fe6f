"""Output cannot make the run page hang: a run that printed huge cursor moves
(`ESC[2147483647G`, `ESC[99999999C`, `ESC[50000000G`) and a 10 MB line
without a newline. Its page opens and answers (a click is handled, an
evaluate answered), the long lines end with the cut marker, nothing throws
("Invalid array length": the `page` fixture fails on any console error), and
the download still has every byte.

(static/js/term.js caps the columns and the line width it builds;
backend/web/snapshot.py caps what the page is sent; Node's tests:
tests/js/term.test.mjs, the server's: tests/unit/test_security.py.)
"""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.browser.helpers import WAIT_MS, wait_finished
from tests.support.runs import gate, open_gate, run_to_end, start
from tests.support.wait import wait_for_status

BASE_IMAGE = "pullrun/busybox:base"
MOVES = r"printf 'a\033[2147483647Gb\n'; printf 'c\033[99999999Cd\n'; printf 'e\033[50000000Gf\n'"
TEN_MB = r"head -c 10000000 /dev/zero | tr '\0' x"
MAX_COLUMNS = 10000  # static/js/term.js


def assert_answers(page: Page) -> None:
    """The page is not hung: an evaluate comes back and a click is handled."""
    assert page.evaluate("() => 6 * 7") == 42
    wrap = page.locator("#log-wrap")
    wrap.click()
    expect(wrap).to_be_checked()
    expect(page.locator("#log")).to_have_class("log wrap")
    wrap.click()
    expect(wrap).not_to_be_checked()


def assert_cut(page: Page) -> None:
    """Each hostile line is shown cut, with the marker, and no wider than the cap."""
    lines = page.locator("#log-body .ln")
    expect(lines).to_have_count(4)
    expect(page.locator("#log-body .ln .line-cut")).to_have_count(4)
    marker = page.locator("#log-body .ln .line-cut").first
    expect(marker).to_contain_text("line cut at")
    expect(marker).to_contain_text("the full text is in the download")
    widths = page.evaluate(
        """() => [...document.querySelectorAll('#log-body .ln')].map((el) => {
            const cut = el.querySelector('.line-cut');
            return el.textContent.length - (cut ? cut.textContent.length : 0);
        })"""
    )
    assert widths[:3] == [1, 1, 1]  # a, c, e: what came after the move fell past the cap
    assert widths[3] == MAX_COLUMNS


def test_a_finished_run_with_hostile_output_opens_and_answers(
    page: Page, client: httpx.Client
) -> None:
    run, _ = run_to_end(client, image=BASE_IMAGE, command=["sh", "-c", f"{MOVES}; {TEN_MB}"])
    assert run["status"] == "succeeded"
    page.goto(run["links"]["page"], timeout=WAIT_MS)
    wait_finished(page)
    assert_cut(page)
    assert_answers(page)
    download = client.get(run["links"]["logs"]).content
    assert download.count(b"x") == 10_000_000  # the full text stays in the download


def test_hostile_output_arriving_live_keeps_the_page_answering(
    page: Page, client: httpx.Client, docker_api: object
) -> None:
    script = f"{gate()}; {MOVES}; {TEN_MB}; echo; echo after"
    run = start(client, image=BASE_IMAGE, command=["sh", "-c", script])
    wait_for_status(client, run["id"], "running")
    page.goto(run["links"]["page"])
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live")
    open_gate(docker_api, run["id"])  # type: ignore[arg-type]
    wait_finished(page)
    expect(page.locator("#log-body .ln").last).to_have_text("after")
    expect(page.locator("#log-body .ln .line-cut")).to_have_count(4)
    assert_answers(page)
