"""A run that prints a million lines, watched on its run page in Chromium.

One watch serves two masters: the stress test
(tests/browser/test_dashboard_stress.py) checks what must always hold (every
line counted, the DOM capped, the page still answering), and benchmark 9
(bench/benchmarks.py) measures how responsive the page stayed (long tasks,
click delays, round trips), which depends on the machine.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import docker
import httpx
from playwright.sync_api import Page, expect

from tests.browser.helpers import WAIT_MS, log_lines, wait_finished
from tests.support.runs import gate, open_gate, start
from tests.support.wait import DEADLINE, Deadline

IMAGE = "pullrun/busybox:base"  # present locally
LINES = 1_000_000
DOM_CAP = 5000  # static/js/logview.js: at most this many lines in the DOM

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

# Each click on the log title: how long from the input event to its handler.
CLICK_RECORDER = """() => {
    window.__clickDelays = [];
    document.getElementById('logs-title').addEventListener('click', (e) => {
      window.__clickDelays.push(performance.now() - e.timeStamp);
    });
}"""


@dataclass
class Watch:
    """What one watch of a million-line run saw. Times in ms."""

    run: dict[str, Any]
    lines: int
    streaming_ms: float = 0.0
    round_trips: list[float] = field(default_factory=list)  # page.evaluate, from Python
    clicks_sent: int = 0
    click_delays: list[float] = field(default_factory=list)  # input event to handler
    long_tasks: list[float] = field(default_factory=list)  # durations, while streaming
    heartbeat_late: list[float] = field(default_factory=list)
    dom_counts: list[int] = field(default_factory=list)  # sampled from Python
    max_dom_lines: int = 0  # sampled in the page every 20 ms
    log_view: dict[str, Any] = field(default_factory=dict)  # window.pullrun.logs.stats

    def figures(self) -> dict[str, Any]:
        trips = self.round_trips
        return {
            "lines": self.lines,
            "streaming_ms": round(self.streaming_ms),
            "evaluate_round_trips": len(trips),
            "round_trip_ms_max": round(max(trips, default=0), 1),
            "round_trip_ms_median": round(statistics.median(trips), 1) if trips else None,
            "round_trip_ms_p95": round(p95(trips), 1) if len(trips) >= 2 else None,
            "heartbeat_late_ms_max": round(max(self.heartbeat_late, default=0), 1),
            "clicks": len(self.click_delays),
            "click_delay_ms_max": round(max(self.click_delays, default=0), 1),
            "long_tasks_during_stream": len(self.long_tasks),
            "long_task_ms_max": round(max(self.long_tasks, default=0), 1),
            "max_dom_lines": self.max_dom_lines,
            "log_view": self.log_view,
        }


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def watch_million_lines(
    page: Page,
    client: httpx.Client,
    docker_api: docker.APIClient,
    lines: int = LINES,
    timeout: float = DEADLINE,
) -> Watch:
    """Start a run printing `lines` lines, open its page, and while they stream
    click the log title and ask the page for its state, over and over; return
    once the page has shown the end and rendered what it will.

    The container waits at a gate until the page is live, so every line
    streams to the page. The page's base URL must be `client`'s server.
    """
    page.add_init_script(OBSERVERS)
    run = start(client, image=IMAGE, command=["sh", "-c", f"{gate()}; seq 1 {lines}"])
    watch = Watch(run=run, lines=lines)
    page.goto(run["links"]["page"])
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    page.evaluate(CLICK_RECORDER)
    box = page.locator("#logs-title").bounding_box()
    assert box is not None
    x, y = box["x"] + 5, box["y"] + box["height"] / 2
    open_gate(docker_api, run["id"])
    page.wait_for_function("() => window.pullrun.logs.total > 0", polling=10)
    streaming_since = page.evaluate("performance.now()")

    deadline = Deadline(f"the page to get `done` of a {lines:,}-line run", timeout)
    while True:
        began = time.monotonic()
        done, count = page.evaluate(
            "[Boolean(window.pullrun.state.done),"
            " document.querySelectorAll('#log-body .ln').length]"
        )
        watch.round_trips.append((time.monotonic() - began) * 1000)
        watch.dom_counts.append(count)
        if done and watch.clicks_sent:
            break
        deadline.check(f"{watch.clicks_sent} clicks so far")
        page.mouse.click(x, y)  # a real input event, through the browser's input pipeline
        watch.clicks_sent += 1
        time.sleep(0.02)  # pacing the clicks, not waiting for anything
    watch.streaming_ms = page.evaluate("performance.now()") - streaming_since

    wait_finished(page)
    page.wait_for_function("() => !window.pullrun.logs.busy")
    page.wait_for_function("() => window.__clickDelays.length > 0")  # a click was handled
    watch.click_delays = page.evaluate("window.__clickDelays")
    watch.long_tasks = page.evaluate(
        f"window.__longTasks.filter(([start]) => start >= {streaming_since}).map(([, d]) => d)"
    )
    watch.heartbeat_late = page.evaluate(
        f"window.__heartbeat.filter(([t]) => t >= {streaming_since}).map(([, late]) => late)"
    )
    watch.max_dom_lines = page.evaluate("window.__maxDomLines")
    watch.log_view = page.evaluate("window.pullrun.logs.stats")
    return watch


def last_line(page: Page) -> tuple[int, str, str] | None:
    """(number, stream, text) of the last log line in the DOM."""
    shown = log_lines(page)
    return shown[-1] if shown else None
