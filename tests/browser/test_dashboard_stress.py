"""A run that prints a million lines leaves the run page responsive.

How responsive (long tasks, click delays, round trips) depends on the machine:
benchmark 9 (`python -m bench 9`) measures that. The tests check what must
always hold.
"""

from __future__ import annotations

import json

import docker
import httpx
from playwright.sync_api import Page, expect

from tests.browser.helpers import artifact, log_lines, screenshot, wait_finished, wait_settled
from tests.browser.million import DOM_CAP, LINES, watch_million_lines
from tests.support.runs import gate, open_gate, start


def test_a_million_lines_keep_the_page_responsive(
    page: Page, client: httpx.Client, docker_api: docker.APIClient
) -> None:
    watch = watch_million_lines(page, client, docker_api)
    figures = watch.figures()
    artifact("million-lines.json").write_text(json.dumps(figures, indent=2))
    print("\n1M-line run:", json.dumps(figures))

    # The page answered while the lines streamed: a click was handled, the
    # page was asked for its state and answered (however long each took).
    assert watch.clicks_sent >= 1 and watch.click_delays, figures
    assert watch.round_trips, figures
    # A bounded DOM.
    assert 0 < watch.max_dom_lines <= DOM_CAP and max(watch.dom_counts) <= DOM_CAP, figures
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
    assert client.get(watch.run["links"]["self"]).json()["log_lines"] == LINES
    # Still answering once it is all in.
    assert page.evaluate("window.pullrun.state.done")
    screenshot(page, "run-million-lines", full_page=False)


def test_a_reader_scrolled_up_is_left_alone_by_a_flood(
    page: Page, client: httpx.Client, docker_api: docker.APIClient
) -> None:
    # The flood waits (at a gate) until the reader has scrolled up; the end
    # waits until the page has taken in the whole flood.
    run = start(
        client,
        image="pullrun/busybox:base",
        command=[
            "sh",
            "-c",
            f"seq 1 300; {gate('flood')}; seq 301 600000; {gate('end')}; echo the end",
        ],
    )
    page.goto(run["links"]["page"])
    page.wait_for_function("() => document.querySelectorAll('#log-body .ln').length >= 300")
    page.locator("#log").hover()
    page.mouse.wheel(0, -2000)
    expect(page.locator("#log-follow")).to_have_attribute("aria-pressed", "false")
    wait_settled(page, "#log")
    shown = "[...document.querySelectorAll('#log-body .ln')].slice(0, 5).map(el => el.dataset.n)"
    before = page.evaluate(shown)
    top = page.eval_on_selector("#log", "el => el.scrollTop")

    open_gate(docker_api, run["id"], "flood")
    # The whole flood has arrived and the page has done all it will with it.
    page.wait_for_function(
        "() => window.pullrun.logs.total >= 600000 && !window.pullrun.logs.busy", polling=50
    )
    assert page.evaluate(shown) == before  # what they read stays
    assert page.eval_on_selector("#log", "el => el.scrollTop") == top
    assert page.evaluate("document.querySelectorAll('#log-body .ln').length") <= DOM_CAP
    expect(page.locator("#log-info")).to_contain_text("newer not shown while you read")

    open_gate(docker_api, run["id"], "end")
    wait_finished(page)
    page.click("#log-follow")
    expect(page.locator("#log-follow")).to_have_attribute("aria-pressed", "true")
    page.wait_for_function("() => !window.pullrun.logs.busy")
    lines = log_lines(page)
    assert lines[-1] == (600_001, "stdout", "the end")
    assert len(lines) <= DOM_CAP
    gap = page.eval_on_selector("#log", "el => el.scrollHeight - el.scrollTop - el.clientHeight")
    assert gap <= 8
    expect(page.locator("#log-marker")).to_be_visible()
