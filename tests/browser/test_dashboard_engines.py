"""The dashboard's engines: the panel on the runs page (state, version, load,
kept live from GET /api/events), the engine of each run in the runs table and
on its page, and the new-run form's engine choice."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
from playwright.sync_api import Browser, BrowserContext, Page, Request, expect

from tests.browser.helpers import (
    WAIT_MS,
    PageProblems,
    new_context,
    screenshot,
    sign_in,
    wait_finished,
)
from tests.support.engines import write_engines_file
from tests.support.runs import gate, open_gate, run_to_end, start
from tests.support.server import ServerFactory, ServerProcess
from tests.support.unix_proxy import UnixProxy
from tests.support.wait import TERMINAL, wait_for_status

BASE_IMAGE = "pullrun/busybox:base"
DOCKER_SOCKET = "/var/run/docker.sock"


def is_start(request: Request) -> bool:
    return request.method == "POST" and request.url.endswith("/api/runs")


def test_engines_panel_the_engine_column_and_the_engine_choice(
    page: Page, client: httpx.Client
) -> None:
    earlier, _ = run_to_end(client, image=BASE_IMAGE, command=["echo", "anywhere"])
    assert earlier["engine"] == "local"
    page.goto("/")
    expect(page.locator("#feed-state")).to_have_attribute("data-state", "live")

    # The panel: the one engine of the shared server, up, with what it is.
    local = page.locator("#engines-body tr[data-engine='local']")
    expect(local.locator(".engine-state")).to_have_attribute("data-state", "up")
    expect(local.locator(".engine-state")).to_have_text("up")
    expect(local.locator(".engine-error")).to_have_count(0)
    expect(local.locator(".c-version")).to_have_text(re.compile(r"^\d+\.\d+.* \(API \d+\.\d+\)$"))
    expect(local.locator(".c-platform")).to_have_text(re.compile(r"^linux/\w+$"))
    expect(local.locator(".c-cpus")).to_have_text(re.compile(r"^\d+$"))
    expect(local.locator(".c-memory")).to_have_text(re.compile(r"^\d+(\.\d)? [KMGT]iB$"))
    expect(local.locator(".engine-load")).to_have_text(re.compile(r"^\d+/4$"))
    expect(local.locator(".engine-queued")).to_have_text(re.compile(r"^\d+ queued$"))
    expect(page.locator("#engines-summary")).to_have_text("1 of 1 up")

    # The runs table names the engine of each run.
    expect(page.locator(f"tr[data-run='{earlier['id']}'] .c-engine")).to_have_text("local")

    # The form's choice: "Any", then each engine; choosing one posts `engine`.
    choice = page.locator("#f-engine")
    expect(choice).to_have_value("")
    assert choice.locator("option").all_text_contents() == ["Any", "local"]
    page.fill("#f-image", BASE_IMAGE)
    page.fill("#f-command", "echo picked")
    choice.select_option("local")
    with page.expect_request(is_start) as posted:
        page.click("#start-run")
    assert json.loads(posted.value.post_data or "{}")["engine"] == "local"
    page.wait_for_url(re.compile(r"/runs/\w+$"))
    wait_finished(page)
    expect(page.locator("#run-engine")).to_have_text("local")
    run_id = page.url.rsplit("/", 1)[1]
    assert client.get(f"/api/runs/{run_id}").json()["spec"]["engine"] == "local"
    screenshot(page, "run-engine")

    # "Run again" chooses the same engine.
    page.click("#run-again")
    expect(page.locator("#f-engine")).to_have_value("local")
    expect(page.locator("#f-image")).to_have_value(BASE_IMAGE)

    # Back on the runs page, the new run's row names its engine too.
    page.goto("/")
    expect(page.locator(f"tr[data-run='{run_id}'] .c-engine")).to_have_text("local")

    # Validation: labels no engine has, next to their field ("Any" posts no `engine`).
    page.fill("#f-image", BASE_IMAGE)
    page.locator("details.advanced summary").click()
    page.fill("#f-engine_labels", "gpu=true")
    with page.expect_request(is_start) as posted:
        page.click("#start-run")
    body = json.loads(posted.value.post_data or "{}")
    assert "engine" not in body and body["engine_labels"] == {"gpu": "true"}
    expect(page.locator("#f-engine_labels-error")).to_contain_text("no engine has all")
    expect(page.locator("#f-engine_labels")).to_have_attribute("aria-invalid", "true")
    page.fill("#f-engine_labels", "not a label")
    page.click("#start-run")
    expect(page.locator("#f-engine_labels-error")).to_have_text("line 1: expected KEY=value")

    # An engine gone since the page was drawn: the server's 422, next to the choice.
    page.fill("#f-engine_labels", "")
    page.eval_on_selector("#f-engine", "s => s.add(new Option('gone', 'gone', true, true))")
    page.click("#start-run")
    expect(page.locator("#f-engine-error")).to_contain_text("no engine named 'gone'")
    expect(page.locator("#f-engine")).to_have_attribute("aria-invalid", "true")
    screenshot(page, "index-engines")


@contextlib.contextmanager
def signed_in(browser: Browser, server: ServerProcess) -> Iterator[BrowserContext]:
    """A browser context of this server (not the shared one), signed in."""
    context = new_context(browser, base_url=server.base_url)
    try:
        sign_in(context, token=server.token)
        yield context
    finally:
        context.close()


def open_page(context: BrowserContext, problems: PageProblems) -> Page:
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("console", problems.on_console)
    page.on("pageerror", problems.on_page_error)
    return page


@contextlib.contextmanager
def forwarder(path: Path, target: str) -> Iterator[UnixProxy]:
    fwd = UnixProxy(path, target)
    try:
        yield fwd
    finally:
        fwd.close()


def test_the_panel_follows_engines_and_load_and_the_run_page_its_placement(
    browser: Browser, server_factory: ServerFactory, tmp_path: Path, docker_api: docker.APIClient
) -> None:
    spare_socket = tmp_path / "spare.sock"  # nothing listens there yet: down
    engines_file = write_engines_file(
        tmp_path / "engines.toml",
        {
            "local": {"max_concurrent_runs": 1},
            "spare": {"host": f"unix://{spare_socket}", "labels": {"zone": "b"}},
        },
    )
    server = server_factory(max_concurrent_runs=4, engines_file=engines_file)
    problems = PageProblems()
    with (
        server.client() as client,
        forwarder(spare_socket, DOCKER_SOCKET) as spare,
        signed_in(browser, server) as context,
    ):
        page = open_page(context, problems)
        page.goto("/")
        expect(page.locator("#feed-state")).to_have_attribute("data-state", "live")
        spare_row = page.locator("#engines-body tr[data-engine='spare']")
        expect(spare_row.locator(".engine-state")).to_have_attribute("data-state", "down")
        expect(spare_row.locator(".engine-error")).not_to_be_empty()
        expect(spare_row.locator(".engine-labels")).to_have_text("zone=b")
        expect(spare_row.locator(".engine-host")).to_contain_text("spare.sock")
        expect(page.locator("#engines-summary")).to_have_text("1 of 2 up")
        expect(page.locator("#f-engine option[value='spare']")).to_have_text("spare (down)")
        local_row = page.locator("#engines-body tr[data-engine='local']")
        expect(local_row.locator(".engine-load")).to_have_text("0/1")

        # Load, live: one run holds local's only slot, a second waits for it.
        holder = start(
            client, image=BASE_IMAGE, command=["sh", "-c", f"{gate()}; echo held"], engine="local"
        )
        waiting = start(client, image=BASE_IMAGE, command=["echo", "waited"], engine="local")
        wait_for_status(client, holder["id"], ("running",))
        expect(local_row.locator(".engine-load")).to_have_text("1/1")
        expect(local_row.locator(".engine-queued")).to_have_text("1 queued")
        waiting_row = page.locator(f"tr[data-run='{waiting['id']}']")
        expect(waiting_row.locator(".badge")).to_have_text("queued")
        expect(waiting_row.locator(".c-engine")).to_have_text("")
        screenshot(page, "index-engines-load")

        # The waiting run's page: no engine yet, then the one it leaves the queue for.
        run_page = open_page(context, problems)
        run_page.goto(waiting["links"]["page"])
        expect(run_page.locator("#conn-state")).to_have_attribute("data-state", "live")
        expect(run_page.locator("#run-engine")).to_have_text("\u2013")  # none yet
        run_page.evaluate("window.__sameDocument = true")
        open_gate(docker_api, holder["id"])
        wait_finished(run_page)
        expect(run_page.locator("#run-engine")).to_have_text("local")
        assert run_page.evaluate("window.__sameDocument") is True  # no reload
        expect(waiting_row.locator(".c-engine")).to_have_text("local")
        expect(local_row.locator(".engine-load")).to_have_text("0/1")
        expect(local_row.locator(".engine-queued")).to_have_text("0 queued")

        # The spare engine starts answering: its `engine` event turns the row up.
        page.evaluate("window.__sameDocument = true")
        spare.start()
        expect(spare_row.locator(".engine-state")).to_have_attribute("data-state", "up")
        expect(spare_row.locator(".engine-state")).to_have_text("up")
        expect(spare_row.locator(".engine-error")).to_have_count(0)
        expect(spare_row.locator(".c-version")).to_have_text(re.compile(r"^\d"))
        expect(page.locator("#engines-summary")).to_have_text("2 of 2 up")
        expect(page.locator("#f-engine option[value='spare']")).to_have_text("spare")
        assert page.evaluate("window.__sameDocument") is True
        screenshot(page, "index-engines-up")
        screenshot(run_page, "run-engine-placed")

        for run in (holder, waiting):
            wait_for_status(client, run["id"], TERMINAL)
    assert problems.errors == [], problems.errors
