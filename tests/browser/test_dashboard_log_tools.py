"""The run page's log toolbar in a real browser: the "Timestamps" toggle (each
line's time, from its `log` event's `at`, live and after a reload) and the
filter's "Regex" toggle, an invalid pattern reported next to the field."""

from __future__ import annotations

import re

import docker
import httpx
from playwright.sync_api import Page, expect

from tests.browser.helpers import screenshot, wait_finished
from tests.support.runs import gate, open_gate, start
from tests.support.wait import collect

BASE_IMAGE = "pullrun/busybox:base"
VISIBLE = (
    "() => [...document.querySelectorAll('#log-body .ln')]"
    ".filter(el => el.offsetParent !== null).map(el => el.textContent)"
)
TIMES = (
    "() => [...document.querySelectorAll('#log-body .ln')]"
    ".map(el => [el.textContent, el.dataset.at])"
)


def shown_times(page: Page) -> dict[str, str]:
    return {text: at for text, at in page.evaluate(TIMES)}


def test_timestamps_toggle_and_regex_filter(
    page: Page, client: httpx.Client, docker_api: docker.APIClient
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    script = (
        "echo alpha 1; echo beta 22; echo gamma x; "
        f"printf 'Name? '; {gate()}; echo bob; echo 'a (paren)' >&2"
    )
    run = start(client, image=BASE_IMAGE, command=["sh", "-c", script])
    page.goto(run["links"]["page"])
    expect(page.locator("#log-body .ln.partial")).to_have_text("Name? ")
    open_gate(docker_api, run["id"])
    wait_finished(page)
    events = collect(client, run["links"]["events"])
    logs = [e.data for e in events if e.type == "log"]
    prompt_at = next(d["at"] for d in logs if d["partial"])
    expected = {"alpha 1": logs[0]["at"], "Name? bob": prompt_at}
    expected["a (paren)"] = next(d["at"] for d in logs if d["stream"] == "stderr")

    # Timestamps: off by default; each line carries its time all the same.
    log = page.locator("#log")
    expect(page.locator("#log-times")).not_to_be_checked()
    expect(log).not_to_have_class(re.compile(r"\btimes\b"))
    live = shown_times(page)
    assert {text: live[text] for text in expected} == expected  # a line in parts: its first part's
    page.check("#log-times")
    expect(log).to_have_class(re.compile(r"\btimes\b"))
    before = page.eval_on_selector(
        "#log-body .ln[data-n='1']", "el => getComputedStyle(el, '::before').content"
    )
    assert before == f'"{expected["alpha 1"]}  1"'
    screenshot(page, "run-log-timestamps", full_page=False)

    # After a reload (the lines come from the page's snapshot): the same times,
    # and the toggle is remembered.
    page.reload()
    wait_finished(page)
    page.wait_for_function("() => document.querySelectorAll('#log-body .ln').length === 5")
    expect(page.locator("#log-times")).to_be_checked()
    expect(log).to_have_class(re.compile(r"\btimes\b"))
    assert shown_times(page) == live
    page.uncheck("#log-times")
    expect(log).not_to_have_class(re.compile(r"\btimes\b"))

    # Regex filter.
    field = page.locator("#log-filter")
    message = page.locator("#log-filter-error")
    page.check("#log-regex")
    field.fill(r"^(alpha|beta) \d+$")
    page.wait_for_function(f"() => ({VISIBLE})().length === 2")
    assert page.evaluate(VISIBLE) == ["alpha 1", "beta 22"]
    expect(page.locator("#log-info")).to_contain_text("2 matching")
    expect(field).not_to_have_attribute("aria-invalid", "true")
    expect(message).to_be_hidden()

    # An invalid pattern: said next to the field, nothing filtered, nothing thrown.
    field.fill("(")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(message).to_be_visible()
    expect(message).to_contain_text("Invalid regular expression")
    page.wait_for_function(f"() => ({VISIBLE})().length === 5")
    assert "log-filter-error" in (field.get_attribute("aria-describedby") or "")

    # Without the toggle the same text is a plain substring.
    page.uncheck("#log-regex")
    expect(field).not_to_have_attribute("aria-invalid", "true")
    expect(message).to_be_hidden()
    page.wait_for_function(f"() => ({VISIBLE})().length === 1")
    assert page.evaluate(VISIBLE) == ["a (paren)"]

    # Fixed: the error goes.
    page.check("#log-regex")
    field.fill(r"\(paren\)|^gamma")
    page.wait_for_function(f"() => ({VISIBLE})().length === 2")
    assert page.evaluate(VISIBLE) == ["gamma x", "a (paren)"]
    expect(message).to_be_hidden()
    assert errors == []
