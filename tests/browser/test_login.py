"""Signing in from the browser: the /login form with a password and with a
token, the link the first start prints (token in the fragment), starting and
canceling a run as the signed-in user (the session cookie and its CSRF
token), `created_by` in the table and on the run page, and sign out."""

from __future__ import annotations

import re
import secrets
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.support.server import ServerProcess
from tests.support.wait import wait_for_status

BASE_IMAGE = "pullrun/busybox:base"
PASSWORD = "correct horse battery"


def test_sign_in_with_a_password_start_a_run_and_see_who_started_it(
    new_page: Any, server: ServerProcess, client: httpx.Client
) -> None:
    name = f"paula-{secrets.token_hex(3)}"
    server.create_user(name, "operator", PASSWORD)
    page, problems = new_page(signed_in=False)
    earlier = client.post("/api/runs", json={"image": BASE_IMAGE, "command": ["true"]}).json()

    page.goto(f"/runs/{earlier['id']}?x=1")  # not signed in: to /login, and back afterwards
    expect(page).to_have_url(re.compile(rf"/login\?next=%2Fruns%2F{earlier['id']}%3Fx%3D1$"))
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_have_text("Wrong username or password.")
    assert [e for e in problems.errors if "status of 401" in e] != []  # the form's answer
    problems.errors.clear()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(rf"/runs/{earlier['id']}\?x=1$"))  # back where it was
    expect(page.locator("#created-by")).to_have_text(client.get("/api/me").json()["name"])

    page.goto("/")
    expect(page.locator("#signed-in-name")).to_have_text(name)
    expect(page.locator("#feed-state")).to_have_attribute("data-state", "live")  # EventSource
    page.locator("#f-image").fill(BASE_IMAGE)
    page.locator("#f-command").fill("sh -c 'echo signed in; sleep 300'")
    page.get_by_role("button", name="Start run").click()  # fetch POST with the CSRF header
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f]+$"))
    run_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#created-by")).to_have_text(name)
    assert client.get(f"/api/runs/{run_id}").json()["created_by"] == name
    wait_for_status(client, run_id, "running")
    expect(page.locator("#status-badge")).to_have_text("running")

    page.get_by_role("button", name="Cancel").click()  # another fetch POST with the token
    expect(page.locator("#status-badge")).to_have_text("canceled")
    assert client.get(f"/api/runs/{run_id}").json()["status"] == "canceled"

    page.goto("/")
    row = page.locator(f"tr[data-run='{run_id}']")
    expect(row.locator(".c-by")).to_have_text(name)

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login\?next=%2F$"))
    assert problems.errors == [], problems.errors


def test_sign_in_with_a_token_in_the_form_or_in_the_link_fragment(
    new_page: Any, server: ServerProcess
) -> None:
    name = f"tina-{secrets.token_hex(3)}"
    token = server.create_token("viewer", name)

    page, problems = new_page(signed_in=False)
    page.goto("/login")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator("#signed-in-name")).to_have_text(name)
    assert problems.errors == [], problems.errors

    linked, problems = new_page(signed_in=False)
    requests: list[str] = []
    linked.on("request", lambda request: requests.append(request.url))
    linked.goto(f"/login#token={token}")  # as printed on the first start
    expect(linked.locator("#signed-in-name")).to_have_text(name)
    assert token not in linked.url  # taken out of the address bar
    assert not [url for url in requests if token in url]  # and never sent in a URL
    assert problems.errors == [], problems.errors
