"""The run page of a run at max_log_bytes (64 MiB of output kept) in a real
browser: it opens with its last lines visible, and scrolls back through the
earlier ones a page at a time (GET /api/runs/{id}/lines), by scrolling to the
top or with the "Load earlier lines" button, the numbers continuing without
gap or repeat and the reader's place kept; past the page's cap the newest
lines make room, and following again brings the end back (on a live run,
with the output that came meanwhile: none lost, none shown twice). A failed
fetch is said, with a way to try again. Behaviour only, never time."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import docker
import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.helpers import log_lines, screenshot
from tests.support.runs import gate, open_gate, start
from tests.support.server import ServerProcess
from tests.support.wait import TERMINAL, wait_for_status, wait_until

IMAGE = "pullrun/busybox:base"  # present locally
PRINTED = 1_000_000  # lines the big run prints, 71 bytes each with its newline
PAD = "abcdefghijklmnopqrstuvwxyz" * 2 + "0123456789"  # 62 characters
MAX_LOG_BYTES = 64 << 20  # the default setting
KEPT = MAX_LOG_BYTES // (8 + len(PAD) + 1)  # 945,195 lines fit
TAIL = 1000  # lines the page starts with (the server's snapshot)
PAGE = 1000  # lines per "Load earlier lines" (static/js/run.js)
CAP = 5000  # lines the page shows at most (static/js/logview.js)
AWK = f'BEGIN {{ for (i = 1; i <= {PRINTED}; i++) printf "%07d %s\\n", i, "{PAD}" }}'

FIRST_LINE = "() => Number(document.querySelector('#log-body .ln')?.dataset.n ?? 0)"
# Where line `n` is, in px from the top of the log's box (null: not in the DOM).
LINE_TOP = """(n) => {
    const line = document.querySelector(`#log-body .ln[data-n="${n}"]`);
    const log = document.getElementById('log');
    return line ? line.getBoundingClientRect().top - log.getBoundingClientRect().top : null;
}"""


# Line `n` is in the DOM and within the log's box, fully.
IN_LOG_VIEW = """(n) => {
    const line = document.querySelector(`#log-body .ln[data-n="${n}"]`);
    if (!line) return false;
    const a = line.getBoundingClientRect();
    const box = document.getElementById('log').getBoundingClientRect();
    return a.height > 0 && a.top >= box.top - 1 && a.bottom <= box.bottom + 1;
}"""


def text_of(n: int) -> str:
    return f"{n:07d} {PAD}"


@pytest.fixture(scope="module")
def big_run(server: ServerProcess) -> Iterator[dict[str, Any]]:
    """One run printing 71,000,000 bytes: capped at max_log_bytes."""
    with server.client() as client:
        run = start(client, image=IMAGE, command=["awk", AWK])
        record = wait_for_status(client, run["id"], TERMINAL, timeout=300)
    assert record["status"] == "succeeded", record
    assert record["log_lines"] == PRINTED
    assert record["dropped_lines"] == PRINTED - KEPT, "the output was capped"
    yield run


def shown(page: Page) -> list[int]:
    """The numbers of the lines in the DOM, checked against what was printed."""
    lines = log_lines(page)
    bad = [(n, text) for n, stream, text in lines if text != text_of(n) or stream != "stdout"]
    assert not bad, bad[:3]
    return [n for n, _, _ in lines]


def assert_contiguous(numbers: list[int], first: int, last: int) -> None:
    assert numbers == list(range(first, last + 1)), (numbers[:2], numbers[-2:], len(numbers))


def scroll_to_top_and_load(page: Page, first: int) -> int:
    """Scroll the log to its top: the page before `first` comes, and the
    line that was at the top stays where it was. The new first line."""
    page.eval_on_selector("#log", "el => { el.scrollTop = 0; }")
    top = page.evaluate(LINE_TOP, first)
    want = max(1, first - PAGE)
    page.wait_for_function(f"() => ({FIRST_LINE})() === {want}")
    page.wait_for_function("() => !document.getElementById('log-earlier').disabled")
    assert abs(page.evaluate(LINE_TOP, first) - top) <= 2, "the reader's place is kept"
    return want


def test_big_log_opens_at_its_tail_and_scrolls_back(
    new_page: Any, server: ServerProcess, big_run: dict[str, Any]
) -> None:
    page, problems = new_page()
    page.goto(big_run["links"]["page"])

    # The tail, at once, the last line in view.
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "finished")
    page.wait_for_function(f"() => document.querySelectorAll('#log-body .ln').length === {TAIL}")
    page.wait_for_function(IN_LOG_VIEW, arg=KEPT)
    assert_contiguous(shown(page), KEPT - TAIL + 1, KEPT)
    expect(page.locator("#log-marker-text")).to_have_text(
        f"{KEPT - TAIL:,} earlier lines are not shown"
    )
    expect(page.locator("#line-total")).to_have_text(f"{PRINTED:,}")
    earlier = page.locator("#log-earlier")
    expect(earlier).to_be_visible()

    # Scrolling to the top loads the page before, twice; the numbers continue.
    first = KEPT - TAIL + 1
    for _ in range(2):
        first = scroll_to_top_and_load(page, first)
        assert_contiguous(shown(page), first, KEPT)
    expect(page.locator("#log-follow")).to_have_attribute("aria-pressed", "false")

    # The button, from the keyboard: two more pages fill the page to its cap.
    for _ in range(2):
        earlier.focus()
        page.keyboard.press("Enter")
        first -= PAGE
        page.wait_for_function(f"() => ({FIRST_LINE})() === {first}")
        assert_contiguous(shown(page), first, KEPT)
    assert first == KEPT - CAP + 1
    screenshot(page, "big-log-read-back", full_page=False)

    # One more: the newest lines make room (the view no longer reaches the end).
    earlier.focus()
    page.keyboard.press("Enter")
    first -= PAGE
    page.wait_for_function(f"() => ({FIRST_LINE})() === {first}")
    assert_contiguous(shown(page), first, first + CAP - 1)
    expect(page.locator("#log-info")).to_contain_text("newer not shown while you read")
    expect(page.locator(f"#log-body .ln[data-n='{KEPT}']")).to_have_count(0)

    # The filter and the timestamps work on lines loaded back.
    target = first + 10
    page.fill("#log-filter", text_of(target)[:7])
    page.wait_for_function(
        "() => [...document.querySelectorAll('#log-body .ln')]"
        ".filter((el) => el.offsetParent !== null).length === 1"
    )
    expect(page.locator(f"#log-body .ln[data-n='{target}']")).to_be_visible()
    page.fill("#log-filter", "")
    page.wait_for_function("() => !document.querySelector('#log-body .ln.filtered-out')")
    at = page.get_attribute(f"#log-body .ln[data-n='{target}']", "data-at")
    assert at and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", at), at

    # Following again: back at the end, the last line in view.
    page.click("#log-follow")
    expect(page.locator("#log-follow")).to_have_attribute("aria-pressed", "true")
    page.wait_for_function(IN_LOG_VIEW, arg=KEPT)
    page.wait_for_function(f"() => ({FIRST_LINE})() === {KEPT - TAIL + 1}")
    assert_contiguous(shown(page), KEPT - TAIL + 1, KEPT)
    expect(page.locator("#log-error")).to_be_hidden()
    assert problems.errors == [], problems.errors


def test_earlier_lines_down_to_the_first_and_a_failed_fetch(
    new_page: Any, client: httpx.Client
) -> None:
    count = 2500
    run = start(client, image=IMAGE, command=["seq", "1", str(count)])
    wait_for_status(client, run["id"], "succeeded")
    page, problems = new_page()

    # The server fails the first fetch: the page says so and offers to try again.
    failures: list[str] = []

    def fail_once(route: Any) -> None:
        if not failures:
            failures.append(route.request.url)
            route.fulfill(
                status=503,
                content_type="application/json",
                body='{"error": {"code": "unavailable", "message": "try later"}}',
            )
        else:
            route.continue_()

    page.route(re.compile(r"/api/runs/[^/]+/lines\?"), fail_once)
    page.goto(run["links"]["page"])
    page.wait_for_function(f"() => ({FIRST_LINE})() === {count - TAIL + 1}")
    button = page.locator("#log-earlier")
    button.click()
    expect(page.locator("#log-error")).to_be_visible()
    expect(page.locator("#log-error-text")).to_have_text("Could not load earlier lines: try later.")
    assert failures and f"before={count - TAIL + 1}&limit={PAGE}" in failures[0]
    assert page.evaluate(FIRST_LINE) == count - TAIL + 1
    screenshot(page, "run-log-earlier-failed")
    page.click("#log-retry")
    page.wait_for_function(f"() => ({FIRST_LINE})() === {count - TAIL - PAGE + 1}")
    expect(page.locator("#log-error")).to_be_hidden()

    # The last page reaches line 1: no more earlier lines, the marker goes.
    button.click()
    page.wait_for_function(f"() => ({FIRST_LINE})() === 1")
    numbers = [n for n, _, _ in log_lines(page)]
    assert numbers == list(range(1, count + 1))
    assert [text for _, _, text in log_lines(page)] == [str(n) for n in range(1, count + 1)]
    expect(page.locator("#log-marker")).to_be_hidden()
    expect(page.locator("#log-info")).to_have_text(f"{count:,} lines")
    # The only problem is the answer the test made fail.
    assert all("503" in e for e in problems.errors), problems.errors


def test_live_output_while_reading_back_is_neither_lost_nor_shown_twice(
    new_page: Any, client: httpx.Client, docker_api: docker.APIClient
) -> None:
    # 6,000 lines; at a gate 1,000 more, while the reader is detached from the
    # end; at a second gate 1,000 more in bursts, while the reader follows again.
    bursts = "while [ $i -lt {} ]; do seq $((i + 1)) $((i + 50)); i=$((i + 50)); sleep 0.02; done"
    script = f"seq 1 6000; {gate()}; seq 6001 7000; {gate('gate2')}; i=7000; {bursts.format(8000)}"
    run = start(client, image=IMAGE, command=["sh", "-c", script])
    snapshot = f"{run['links']['self']}/snapshot"
    wait_until(
        lambda: client.get(snapshot).json()["total_lines"] == 6000,
        "the run to print its first 6,000 lines",
    )
    page, problems = new_page()
    page.goto(run["links"]["page"])
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live")
    page.wait_for_function(f"() => ({FIRST_LINE})() === {6000 - TAIL + 1}")
    page.wait_for_function(IN_LOG_VIEW, arg=6000)

    # Back past the cap: four pages fill it, the fifth pushes the newest out.
    first = 6000 - TAIL + 1
    for _ in range(5):
        first = scroll_to_top_and_load(page, first)
    assert first == 1
    assert [n for n, _, _ in log_lines(page)] == list(range(1, CAP + 1))
    expect(page.locator("#log-follow")).to_have_attribute("aria-pressed", "false")

    # More output while the view is detached: counted, not drawn.
    open_gate(docker_api, run["id"])
    expect(page.locator("#line-total")).to_have_text("7,000")
    assert [n for n, _, _ in log_lines(page)] == list(range(1, CAP + 1))

    # Following again while the last lines stream: the end, every line once.
    open_gate(docker_api, run["id"], "gate2")
    page.click("#log-follow")
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "finished")
    page.wait_for_function(IN_LOG_VIEW, arg=8000)
    lines = log_lines(page)
    numbers = [n for n, _, _ in lines]
    assert numbers == list(range(numbers[0], 8001)) and len(numbers) <= CAP, numbers[:3]
    assert numbers[0] <= 8000 - TAIL + 1
    assert [text for _, _, text in lines] == [str(n) for n in numbers]
    assert page.evaluate("window.pullrun.logs.stats.resets") == 1
    assert problems.errors == [], problems.errors
