"""Secret environment in the browser: the form sends it, the run shows only its
keys, and "Run again" asks for the values again instead of sending `***`."""

from __future__ import annotations

import hashlib
import re

import httpx
from playwright.sync_api import Page, expect

from tests.browser.helpers import wait_finished

BASE_IMAGE = "pullrun/busybox:base"
SECRET = "browser-secret-61f0a2"
DIGEST = hashlib.sha256(SECRET.encode()).hexdigest()


def test_secret_env_from_the_form_is_never_shown_or_refilled(
    page: Page, client: httpx.Client
) -> None:
    page.goto("/")
    page.fill("#f-image", BASE_IMAGE)
    # The container prints the value's digest: its output never holds the value.
    page.fill("#f-command", """sh -c 'printf %s "$TOKEN" | sha256sum | cut -c1-64'""")
    page.click("details.advanced summary")
    page.fill("#f-secret_env", f"TOKEN={SECRET}")
    page.fill("#f-pids_limit", "77")
    page.click("#start-run")
    page.wait_for_url(re.compile(r"/runs/[0-9a-f]{12}$"))
    run_id = page.url.rsplit("/", 1)[1]
    wait_finished(page)
    expect(page.locator("#log-body .ln")).to_have_text(DIGEST)
    run = client.get(f"/api/runs/{run_id}").json()
    assert run["spec"]["secret_env"] == {"TOKEN": "***"} and run["spec"]["pids_limit"] == 77
    assert SECRET not in page.content()

    page.click("#run-again")
    page.wait_for_url(re.compile(rf"/\?from={run_id}"))
    expect(page.locator("#f-secret_env")).to_have_value("TOKEN=***")
    expect(page.locator("#f-pids_limit")).to_have_value("77")
    page.click("#start-run")
    expect(page.locator("#f-secret_env-error")).to_contain_text("enter the value again")
    assert page.url.endswith(f"/?from={run_id}#new-run")  # nothing was started
    assert SECRET not in page.content()
    page.fill("#f-secret_env", f"TOKEN={SECRET}")
    page.click("#start-run")
    page.wait_for_url(re.compile(r"/runs/[0-9a-f]{12}$"))
    wait_finished(page)
    expect(page.locator("#log-body .ln")).to_have_text(DIGEST)
