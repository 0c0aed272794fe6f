"""The index page: the runs table kept live, form validation, small screens, access."""

from __future__ import annotations

import re
from typing import Any

import docker
import httpx
from playwright.sync_api import Page, expect

from tests.browser.helpers import screenshot, wait_finished
from tests.support.runs import gate, open_gate, run_to_end, start
from tests.support.wait import TERMINAL, wait_for_status

BASE_IMAGE = "pullrun/busybox:base"


def test_runs_table_updates_live_when_a_run_starts_through_the_api(
    page: Page, client: httpx.Client, docker_api: docker.APIClient
) -> None:
    first, _ = run_to_end(client, image=BASE_IMAGE, command=["echo", "first"])
    page.goto("/")
    expect(page.locator("#feed-state")).to_have_attribute("data-state", "live")
    expect(page.locator(f"tr[data-run='{first['id']}'] .badge")).to_have_text("succeeded")
    page.evaluate("window.__sameDocument = true")

    # It stays running (at its gate) until the page has shown it running.
    script = f"{gate()}; echo second; exit 7"
    second = start(client, image=BASE_IMAGE, command=["sh", "-c", script])
    row = page.locator(f"tr[data-run='{second['id']}']")
    expect(row).to_be_visible()
    # Newest first.
    assert page.locator("#runs-body tr").first.get_attribute("data-run") == second["id"]
    expect(row.locator(".c-command")).to_have_text(f"sh -c '{script}'")
    expect(row.locator(".badge")).to_have_text(re.compile(r"^(queued|creating|starting|running)$"))
    expect(row.locator(".badge")).to_have_text("running")
    open_gate(docker_api, second["id"])
    expect(row.locator(".badge")).to_have_text("failed")
    expect(row.locator(".c-exit")).to_have_text("7")
    expect(row.locator(".c-duration")).to_have_text(re.compile(r"\d"))
    expect(row.locator("a")).to_have_attribute("href", f"/runs/{second['id']}")
    assert page.evaluate("window.__sameDocument") is True  # no reload happened

    # A third one, still running when the screenshot is taken.
    third = start(
        client,
        image=BASE_IMAGE,
        command=["sh", "-c", "trap 'exit 143' TERM; sleep 300 & wait"],
    )
    third_row = page.locator(f"tr[data-run='{third['id']}']")
    expect(third_row.locator(".badge")).to_have_text("running")
    assert page.locator("#runs-body tr").first.get_attribute("data-run") == third["id"]
    # Its duration ticks: it shows a figure, and then another one.
    duration = third_row.locator(".c-duration")
    expect(duration).to_have_text(re.compile(r"^\d"))
    expect(duration).not_to_have_text(duration.text_content() or "")
    expect(duration).to_have_text(re.compile(r"^\d"))
    screenshot(page, "index")
    assert client.post(f"/api/runs/{third['id']}/cancel").status_code == 202
    expect(third_row.locator(".badge")).to_have_text("canceled")


def test_runs_table_pages_with_a_cursor(page: Page, client: httpx.Client) -> None:
    # Enough runs for a second page of 50 (cheap: an image that is present).
    started = [
        start(client, image=BASE_IMAGE, command=["true"])["id"]
        for _ in range(51 - len(client.get("/api/runs", params={"limit": 500}).json()["runs"]))
    ]
    # Let them end, so that they do not slow the tests after this one.
    for run_id in started:
        wait_for_status(client, run_id, TERMINAL)
    page.goto("/")
    expect(page.locator("#runs-body tr")).to_have_count(50)
    first_page = page.eval_on_selector_all("#runs-body tr", "rows => rows.map(r => r.dataset.run)")
    page.click("#older-link")
    page.wait_for_url(re.compile(r"/\?cursor="))
    older = page.eval_on_selector_all("#runs-body tr", "rows => rows.map(r => r.dataset.run)")
    assert older and not set(older) & set(first_page)
    expect(page.locator("#newest-link")).to_be_visible()


def test_validation_errors_are_shown_next_to_their_fields(page: Page) -> None:
    page.goto("/")
    page.click("#start-run")  # nothing filled in
    expect(page.locator("#f-image-error")).to_have_text("an image is required")
    expect(page.locator("#f-image")).to_have_attribute("aria-invalid", "true")
    assert page.evaluate("document.activeElement.id") == "f-image"

    page.fill("#f-image", "Not An Image")
    page.fill("#f-env", "GOOD=1\n1BAD=2")
    page.locator("details.advanced summary").click()
    page.fill("#f-memory", "1k")
    page.fill("#f-username", "someone")  # and no password
    page.click("#start-run")
    expect(page.locator("#f-image-error")).to_contain_text("white space")
    expect(page.locator("#f-env-error")).to_contain_text("1BAD")
    expect(page.locator("#f-memory-error")).to_contain_text("at least")
    expect(page.locator("#f-registry_auth-error")).to_contain_text("username and password")
    for field in ("f-image", "f-env", "f-memory", "f-username", "f-password"):
        expect(page.locator(f"#{field}")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-command-error")).to_be_hidden()
    expect(page.locator("#form-error")).to_be_visible()
    assert page.url.endswith("/")  # still on the form

    # A line that is not KEY=value is caught before asking the server.
    page.fill("#f-image", BASE_IMAGE)
    page.fill("#f-env", "JUSTAWORD")
    page.fill("#f-memory", "")
    page.fill("#f-username", "")
    page.click("#start-run")
    expect(page.locator("#f-env-error")).to_have_text("line 1: expected KEY=value")
    expect(page.locator("#f-image-error")).to_be_hidden()


def test_controls_are_labelled_and_keyboard_reachable(page: Page, client: httpx.Client) -> None:
    run, _ = run_to_end(client, image=BASE_IMAGE, command=["echo", "hi"])
    for url in ("/", run["links"]["page"]):
        page.goto(url)
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea, button, progress')]
                .filter((el) => el.offsetParent !== null || el.closest('details'))
                .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                                && !el.getAttribute('aria-labelledby') && !el.textContent.trim())
                .map((el) => el.outerHTML.slice(0, 80))"""
        )
        assert unlabelled == [], (url, unlabelled)
    expect(page.locator("#run-status")).to_have_attribute("aria-live", "polite")
    # Tab reaches the log controls, and the log itself (a scrollable region).
    reached: list[Any] = []
    for _ in range(30):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id"))
    for control in ("run-again", "log-filter", "log-wrap", "log-follow", "log-download", "log"):
        assert control in reached, reached
    page.goto("/")
    reached = []
    for _ in range(8):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id"))
    assert "f-image" in reached, reached


def test_phone_width_and_dark_scheme(new_page: Any, client: httpx.Client) -> None:
    run, _ = run_to_end(
        client,
        image=BASE_IMAGE,
        command=[
            "sh",
            "-c",
            "echo a fairly long line of output that has to wrap or scroll; echo err >&2",
        ],
    )
    page, problems = new_page(viewport={"width": 390, "height": 844}, color_scheme="dark")
    for url in ("/", run["links"]["page"]):
        page.goto(url)
        if url != "/":
            wait_finished(page)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, (url, overflow)
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        channels = [int(c) for c in re.findall(r"\d+", background)[:3]]
        assert max(channels) < 60, background  # dark
        name = "phone-dark-index" if url == "/" else "phone-dark-run"
        screenshot(page, name)
    # The runs table is laid out as cards: no cell wider than the screen.
    page.goto("/")
    widest = page.eval_on_selector_all(
        "#runs-body td", "cells => Math.max(...cells.map(td => td.getBoundingClientRect().right))"
    )
    assert widest <= 390, widest
    assert problems.errors == []
