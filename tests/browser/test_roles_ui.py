"""The pages show only what the signed-in identity may do: a viewer gets no
new-run form, no "Run again" and no Cancel (and a line saying so); an operator
gets Cancel on the runs they started only. The server renders this from the
identity it knows; the pages' scripts, following the live events, never bring
the controls back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.helpers import sign_in
from tests.support.server import ServerProcess
from tests.support.wait import wait_for_status

BASE_IMAGE = "pullrun/busybox:base"
LONG = {"image": BASE_IMAGE, "command": ["sh", "-c", "echo started; sleep 300"]}


@pytest.fixture
def started(server: ServerProcess, client: httpx.Client) -> Iterator[list[str]]:
    """Run ids to cancel at the end (with the admin token)."""
    ids: list[str] = []
    yield ids
    for run_id in ids:
        client.post(f"/api/runs/{run_id}/cancel")


def signed_in_as(new_page: Any, server: ServerProcess, role: str) -> tuple[Page, Any, str]:
    token = server.create_token(role)
    page, problems = new_page(signed_in=False)
    sign_in(page.context, token=token)
    return page, problems, token


def start(server: ServerProcess, token: str | None, started: list[str]) -> str:
    with server.client(token=token) as c:
        response = c.post("/api/runs", json=LONG)
        assert response.status_code == 201, response.text
        run_id: str = response.json()["id"]
    started.append(run_id)
    return run_id


def test_a_viewer_sees_no_form_and_no_cancel(
    new_page: Any, server: ServerProcess, client: httpx.Client, started: list[str]
) -> None:
    page, problems, _ = signed_in_as(new_page, server, "viewer")
    page.goto("/")
    expect(page.locator("#feed-state")).to_have_attribute("data-state", "live")
    expect(page.locator("#viewer-note")).to_contain_text("can watch runs")
    expect(page.locator("#run-form")).to_have_count(0)
    expect(page.locator("#start-run")).to_have_count(0)

    run_id = start(server, None, started)  # by the admin, while the viewer watches
    row = page.locator(f"#runs-body tr[data-run='{run_id}']")
    expect(row).to_have_count(1)  # the live row came in
    expect(page.locator("#runs-body button, #runs-body form")).to_have_count(0)
    expect(page.locator("#run-form")).to_have_count(0)

    page.goto(f"/runs/{run_id}")
    wait_for_status(client, run_id, "running")
    expect(page.locator("#status-badge")).to_have_text("running")  # the script followed it
    expect(page.locator("#viewer-note")).to_be_visible()
    expect(page.locator("#cancel-run")).to_have_count(0)
    expect(page.locator("#run-again")).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    assert problems.errors == [], problems.errors


def test_an_operator_sees_cancel_on_their_own_run_only(
    new_page: Any, server: ServerProcess, client: httpx.Client, started: list[str]
) -> None:
    page, problems, token = signed_in_as(new_page, server, "operator")
    own = start(server, token, started)
    other = start(server, None, started)  # the admin's
    for run_id in (own, other):
        wait_for_status(client, run_id, "running")

    page.goto("/")
    expect(page.locator("#run-form")).to_be_visible()
    expect(page.locator("#viewer-note")).to_have_count(0)

    page.goto(f"/runs/{other}")
    expect(page.locator("#status-badge")).to_have_text("running")
    expect(page.locator("#cancel-run")).to_have_count(0)
    expect(page.locator("#run-again")).to_be_visible()  # an operator may start runs

    page.goto(f"/runs/{own}")
    expect(page.locator("#status-badge")).to_have_text("running")
    expect(page.locator("#cancel-run")).to_be_visible()
    page.locator("#cancel-run").click()
    expect(page.locator("#status-badge")).to_have_text("canceled")
    expect(page.locator("#cancel-run")).to_be_hidden()
    assert problems.errors == [], problems.errors
