"""The docker-run options in the new-run form ("Advanced"): a refusal of the
run policy shown next to its field, a named volume that two runs share, and
"Run again" refilling volumes, ports, network and GPUs."""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator

import docker
import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.helpers import wait_finished

BASE_IMAGE = "pullrun/busybox:base"


@pytest.fixture
def volume(docker_api: docker.APIClient) -> Iterator[str]:
    name = f"pullrun-test-form-{secrets.token_hex(4)}"
    yield name
    for container in docker_api.containers(all=True, filters={"volume": name}):
        docker_api.remove_container(container["Id"], force=True)
    with contextlib.suppress(docker.errors.NotFound):
        docker_api.remove_volume(name)


def test_options_from_the_form_refused_next_to_their_field_and_refilled(
    page: Page, client: httpx.Client, volume: str
) -> None:
    page.goto("/")
    page.fill("#f-image", BASE_IMAGE)
    page.fill("#f-command", "sh -c 'echo shared > /v/note; cat /v/note'")
    page.click("details.advanced summary")
    page.fill("#f-volumes", f"{volume}:/v")
    page.fill("#f-ports", "127.0.0.1::8080")
    page.fill("#f-network", "host")
    page.fill("#f-gpus", "all")
    page.click("#start-run")
    expect(page.locator("#f-ports-error")).to_contain_text("PULLRUN_ALLOW_PORTS")
    expect(page.locator("#f-network-error")).to_contain_text("PULLRUN_ALLOWED_NETWORKS")
    expect(page.locator("#f-gpus-error")).to_contain_text("PULLRUN_ALLOW_GPUS")
    expect(page.locator("#f-volumes-error")).to_be_hidden()
    assert page.url.endswith("/")  # nothing was started

    page.fill("#f-ports", "")
    page.fill("#f-network", "")
    page.fill("#f-gpus", "")
    page.click("#start-run")
    page.wait_for_url(re.compile(r"/runs/[0-9a-f]{12}$"))
    run_id = page.url.rsplit("/", 1)[1]
    wait_finished(page)
    expect(page.locator("#log-body .ln")).to_have_text("shared")
    run = client.get(f"/api/runs/{run_id}").json()
    assert run["spec"]["volumes"] == [{"source": volume, "target": "/v", "read_only": False}]

    page.click("#run-again")
    page.wait_for_url(re.compile(rf"/\?from={run_id}"))
    expect(page.locator("#f-volumes")).to_have_value(f"{volume}:/v")
    page.fill("#f-command", "cat /v/note")
    page.fill("#f-volumes", f"{volume}:/v:ro")
    page.click("#start-run")
    page.wait_for_url(re.compile(r"/runs/[0-9a-f]{12}$"))
    wait_finished(page)
    expect(page.locator("#log-body .ln")).to_have_text("shared")
