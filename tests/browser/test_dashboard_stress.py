"""A run that prints a million lines leaves the run page responsive."""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.helpers import artifact, log_lines, screenshot, wait_finished
from tests.support.runs import start

pytestmark = [pytest.mark.browser, pytest.mark.integration]

LINES = 1_000_000
DOM_CAP = 5000  # static/js/logview.js: at most this many lines in the DOM
LIMIT_MS = 200

# Long tasks (main thread busy > 50 ms) and DOM size, recorded in the page.
OBSERVERS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longTasks.push([entry.startTime, entry.duration]);
}).observe({ type: 'longtask', buffered: true });
// A heartbeat: how late a 20 ms timer fires tells how long the main thread was busy.
window.__heartbeat = [];
let last = performance.now();
setInterval(() => {
  const now = performance.now();
  window.__heartbeat.push([now, now - last - 20]);
  last = now;
}, 20);
window.__maxDomLines = 0;
setInterval(() => {
  const n = document.querySelectorAll('#log-body .ln').length;
  if (n > window.__maxDomLines) window.__maxDomLines = n;
}, 20);
"""


def test_a_million_lines_keep_the_page_responsive(page: Page, client: httpx.Client) -> None:
    page.add_init_script(OBSERVERS)
    # The sleep lets the page subscribe first: every line then streams to it live.
    run = start(
        client, image="pullrun/busybox:base", command=["sh", "-c", f"sleep 2; seq 1 {LINES}"]
    )
    page.goto(run["links"]["page"])
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live")
    page.wait_for_function("window.pullrun.logs.total > 0", polling=10, timeout=30_000)
    streaming_since = page.evaluate("performance.now()")

    # While lines stream: scripted interactions, each timed.
    round_trips: list[float] = []
    click_delays: list[float] = []
    dom_counts: list[int] = []
    page.evaluate(
        """() => {
        window.__clickDelays = [];
        document.getElementById('logs-title').addEventListener('click', (e) => {
          window.__clickDelays.push(performance.now() - e.timeStamp);
        });
    }"""
    )
    box = page.locator("#logs-title").bounding_box()
    assert box is not None
    x, y = box["x"] + 5, box["y"] + box["height"] / 2
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        began = time.monotonic()
        done, count = page.evaluate(
            "[Boolean(window.pullrun.state.done),"
            " document.querySelectorAll('#log-body .ln').length]"
        )
        round_trips.append((time.monotonic() - began) * 1000)
        dom_counts.append(count)
        if done:
            break
        page.mouse.click(x, y)  # a real input event, through the browser's input pipeline
        time.sleep(0.02)
    else:
        pytest.fail("the run did not finish in 120 s")
    streaming_ms = page.evaluate("performance.now()") - streaming_since
    click_delays = page.evaluate("window.__clickDelays")

    wait_finished(page)
    page.wait_for_function("!window.pullrun.logs.busy", timeout=30_000)
    long_tasks: list[list[float]] = page.evaluate(
        f"window.__longTasks.filter(([start]) => start >= {streaming_since})"
    )
    heartbeat_late: list[float] = page.evaluate(
        f"window.__heartbeat.filter(([t]) => t >= {streaming_since}).map(([, late]) => late)"
    )
    max_dom = page.evaluate("window.__maxDomLines")
    stats: dict[str, Any] = page.evaluate("window.pullrun.logs.stats")

    figures = {
        "lines": LINES,
        "streaming_ms": round(streaming_ms),
        "evaluate_round_trips": len(round_trips),
        "round_trip_ms_max": round(max(round_trips), 1),
        "round_trip_ms_median": round(statistics.median(round_trips), 1),
        "round_trip_ms_p95": round(statistics.quantiles(round_trips, n=20)[-1], 1),
        "heartbeat_late_ms_max": round(max(heartbeat_late, default=0), 1),
        "clicks": len(click_delays),
        "click_delay_ms_max": round(max(click_delays, default=0), 1),
        "long_tasks_during_stream": len(long_tasks),
        "long_task_ms_max": round(max((d for _, d in long_tasks), default=0), 1),
        "max_dom_lines": max_dom,
        "log_view": stats,
    }
    artifact("million-lines.json").write_text(json.dumps(figures, indent=2))
    print("\n1M-line run:", json.dumps(figures))

    # Responsive while streaming.
    assert len(round_trips) >= 3 and click_delays, figures
    # Clicks and long tasks are timed inside the page: every one is held to the
    # limit. A round trip also times this test process and Playwright's pipe,
    # which a busy 2-core CI machine can delay: its p95 is held to the limit.
    assert figures["round_trip_ms_p95"] < LIMIT_MS, figures
    assert max(click_delays) < LIMIT_MS, figures
    assert figures["long_task_ms_max"] < LIMIT_MS, figures
    # A bounded DOM.
    assert 0 < max_dom <= DOM_CAP and max(dom_counts) <= DOM_CAP, figures
    # The last line shown is the run's last line, and the counts agree.
    lines = log_lines(page)
    assert lines[-1][0] == LINES and lines[-1][2] == str(LINES)
    assert [n for n, _, _ in lines] == list(range(lines[0][0], LINES + 1))
    assert all(text == str(n) for n, _, text in lines)
    first = lines[0][0]
    expect(page.locator("#log-marker")).to_be_visible()
    expect(page.locator("#log-marker-text")).to_have_text(
        f"{first - 1:,} earlier lines are not shown"
    )
    expect(page.locator("#log-info")).to_contain_text(f"{LINES:,} lines")
    expect(page.locator("#line-total")).to_have_text(f"{LINES:,}")
    assert client.get(run["links"]["self"]).json()["log_lines"] == LINES
    screenshot(page, "run-million-lines", full_page=False)


def test_a_reader_scrolled_up_is_left_alone_by_a_flood(page: Page, client: httpx.Client) -> None:
    run = start(
        client,
        image="pullrun/busybox:base",
        command=["sh", "-c", "seq 1 300; sleep 2; seq 301 600000; sleep 1; echo the end"],
    )
    page.goto(run["links"]["page"])
    page.wait_for_function("document.querySelectorAll('#log-body .ln').length >= 300")
    page.locator("#log").hover()
    page.mouse.wheel(0, -2000)
    expect(page.locator("#log-follow")).to_have_attribute("aria-pressed", "false")
    page.wait_for_timeout(200)
    shown = "[...document.querySelectorAll('#log-body .ln')].slice(0, 5).map(el => el.dataset.n)"
    before = page.evaluate(shown)
    top = page.eval_on_selector("#log", "el => el.scrollTop")

    page.wait_for_function("window.pullrun.logs.total > 300000", timeout=30_000)
    page.wait_for_timeout(300)
    assert page.evaluate(shown) == before  # what they read stays
    assert page.eval_on_selector("#log", "el => el.scrollTop") == top
    assert page.evaluate("document.querySelectorAll('#log-body .ln').length") <= DOM_CAP
    expect(page.locator("#log-info")).to_contain_text("newer not shown while you read")

    wait_finished(page)
    page.click("#log-follow")
    expect(page.locator("#log-follow")).to_have_attribute("aria-pressed", "true")
    page.wait_for_function("!window.pullrun.logs.busy")
    lines = log_lines(page)
    assert lines[-1] == (600_001, "stdout", "the end")
    assert len(lines) <= DOM_CAP
    gap = page.eval_on_selector("#log", "el => el.scrollHeight - el.scrollTop - el.clientHeight")
    assert gap <= 8
    expect(page.locator("#log-marker")).to_be_visible()
