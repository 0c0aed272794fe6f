"""The run page in a real browser: pull bars, logs, reload, escaping, controls."""

from __future__ import annotations

import re
from typing import Any

import docker
import httpx
from playwright.sync_api import Page, expect

from tests.browser.helpers import log_lines, screenshot, wait_finished, wait_settled
from tests.support.runs import gate, open_gate, remove_image, start
from tests.support.throttle_proxy import ThrottleProxy
from tests.support.wait import wait_until

BASE_IMAGE = "pullrun/busybox:base"  # always present locally
RATE = 1024 * 1024  # the layers image is ~6 MiB: several seconds of Downloading

# Runs in the page every 25 ms from the moment it loads: what each layer row shows.
LAYER_RECORDER = """
window.__layerSamples = [];
setInterval(() => {
  for (const row of document.querySelectorAll('#layers li.layer')) {
    const bar = row.querySelector('progress');
    window.__layerSamples.push([row.dataset.layer, row.dataset.state, bar ? bar.value : null]);
  }
}, 25);
"""


def test_form_starts_a_multi_layer_pull_and_shows_it_live(
    page: Page, registry: str, docker_api: docker.APIClient, client: httpx.Client
) -> None:
    page.context.add_init_script(LAYER_RECORDER)
    with ThrottleProxy(registry, rate=RATE) as proxy:
        ref = f"{proxy.address}/pullrun/layers:latest"
        remove_image(docker_api, ref)
        try:
            page.goto("/")
            page.fill("#f-image", ref)
            page.fill(
                "#f-command",
                'sh -c \'echo pulled and running; printf "\\033[1;32mall layers here\\033[0m\\n";'
                " echo to stderr >&2; exit 3'",
            )
            page.select_option("#f-pull", "always")
            page.click("#start-run")
            page.wait_for_url(re.compile(r"/runs/[0-9a-f]{12}$"))
            run_id = page.url.rsplit("/", 1)[1]

            # Mid-pull: bars are moving.
            page.wait_for_selector("#layers li.layer-downloading")
            expect(page.locator("#status-badge")).to_have_text("pulling")
            expect(page.locator("#conn-state")).to_have_attribute("data-state", "live")
            page.wait_for_function("() => document.getElementById('pull-progress').value >= 0.2")
            screenshot(page, "run-mid-pull")
            wait_finished(page)
        finally:
            remove_image(docker_api, ref)

    samples: list[list[Any]] = page.evaluate("window.__layerSamples")
    downloading: dict[str, set[float]] = {}
    for layer, state, value in samples:
        if state == "downloading" and value is not None:
            downloading.setdefault(layer, set()).add(round(value, 4))
    moving = {layer: values for layer, values in downloading.items() if len(values) >= 2}
    assert moving, f"no layer bar seen at two values while downloading: {downloading}"
    assert any(0 < v < 1 for values in moving.values() for v in values)

    rows = page.locator("#layers li.layer")
    assert rows.count() >= 4
    states = page.eval_on_selector_all(
        "#layers li.layer",
        "rows => rows.map(r => [r.dataset.state, r.querySelector('progress').value,"
        " r.querySelector('.layer-state').textContent])",
    )
    pulled = [s for s in states if s[0] != "exists"]
    assert len(pulled) >= 3 and all(s[0] == "done" and s[1] == 1 for s in pulled), states
    # The base layer is already present locally (pullrun/busybox:base): marked as such.
    cached = [s for s in states if s[0] == "exists"]
    assert cached and all(s[2] == "already exists" and s[1] == 1 for s in cached), states
    assert page.eval_on_selector("#pull-progress", "el => el.value") == 1
    expect(page.locator("#pull-figures")).to_contain_text("100%")
    expect(page.locator("#pull-figures")).to_contain_text("4/4 layers")

    # Logs, final badge, exit code, phases.
    lines = log_lines(page)
    assert any(stream == "stdout" and text == "pulled and running" for _, stream, text in lines)
    assert any(stream == "stderr" and text == "to stderr" for _, stream, text in lines), lines
    expect(page.locator("#log-body span.fg-2.sgr-bold")).to_have_text("all layers here")
    expect(page.locator("#status-badge")).to_have_text("failed")
    expect(page.locator("#exit-code")).to_have_text("3")
    pull_phase = page.locator("#timeline [data-phase='pull']")
    expect(pull_phase).to_have_attribute("data-state", "done")
    expect(pull_phase.locator(".phase-duration")).to_have_text(re.compile(r"^\d+(\.\d)? s$"))
    # Exit code 3: the run phase is marked as the one that failed.
    expect(page.locator("#timeline [data-phase='run']")).to_have_attribute("data-state", "failed")
    expect(page.locator("#cancel-run")).to_be_hidden()
    record = client.get(f"/api/runs/{run_id}").json()
    assert record["status"] == "failed" and record["exit_code"] == 3
    screenshot(page, "run-finished")


def test_reload_mid_run_shows_every_line_once_in_order(
    page: Page, client: httpx.Client, docker_api: docker.APIClient
) -> None:
    count, held = 150, 60
    # Line `held` waits at a gate until the test has scrolled up: lines then
    # stream in while the reader is scrolled up, whatever the machine's speed.
    run = start(
        client,
        image=BASE_IMAGE,
        command=[
            "sh",
            "-c",
            f"for i in $(seq 1 {count}); do echo line $i;"
            f" if [ $i = {held} ]; then {gate()}; fi; sleep 0.02; done",
        ],
    )
    page.goto(run["links"]["page"])
    page.wait_for_function("() => document.querySelectorAll('#log-body .ln').length >= 20")
    page.reload()
    # The new page starts from its snapshot and follows from its last event id.
    after = page.evaluate("window.pullrun.source && new URL(window.pullrun.source.url).search")
    assert after and re.fullmatch(r"\?after=\d+", after) and after != "?after=0", after
    page.wait_for_function(f"() => document.querySelectorAll('#log-body .ln').length >= {held}")

    # Scrolled up while lines stream in: follow lets go and never pulls back.
    log = page.locator("#log")
    log.hover()
    page.mouse.wheel(0, -5000)
    expect(page.locator("#log-follow")).to_have_attribute("aria-pressed", "false")
    wait_settled(page, "#log")
    open_gate(docker_api, run["id"])
    page.wait_for_function(
        f"() => document.querySelectorAll('#log-body .ln').length >= {held + 40}"
    )
    top = page.eval_on_selector("#log", "el => el.scrollTop")
    assert top < 50, top
    expect(page.locator("#log-follow")).to_have_attribute("aria-pressed", "false")
    page.click("#log-follow")
    expect(page.locator("#log-follow")).to_have_attribute("aria-pressed", "true")

    wait_finished(page)
    # Closed on `done`, so the browser does not reconnect.
    assert page.evaluate("window.pullrun.source.readyState") == 2  # EventSource.CLOSED
    page.wait_for_function(f"() => document.querySelectorAll('#log-body .ln').length >= {count}")
    lines = log_lines(page)
    assert [n for n, _, _ in lines] == list(range(1, count + 1))
    assert [text for _, _, text in lines] == [f"line {i}" for i in range(1, count + 1)]
    # Following again: at the bottom.
    gap = page.eval_on_selector("#log", "el => el.scrollHeight - el.scrollTop - el.clientHeight")
    assert gap <= 8
    expect(page.locator("#log-info")).to_have_text(f"{count} lines")


# Resolves once an image fetched from the server now, which is not an image,
# has failed (a request, like an injected `<img src=x>`, but no console error).
BROKEN_IMAGE_LOADED = """() => new Promise((resolve) => {
    const img = new Image();
    img.onerror = () => resolve(true);
    img.onload = () => resolve(false);
    img.src = '/healthz?image-marker=' + Date.now();
})"""


def test_container_output_is_shown_as_text_never_as_html(page: Page, client: httpx.Client) -> None:
    payload = "<img src=x onerror=\"window.__xss='img'\">"
    script = "<script>window.__xss='script'</script>"
    shell = 'echo "$IMG"; echo "$SCRIPT" >&2; echo "<b>not bold</b>"'
    command = ["sh", "-c", f"{shell} # {payload}"]
    run = start(client, image=BASE_IMAGE, command=command, env={"IMG": payload, "SCRIPT": script})
    page.goto(run["links"]["page"])
    wait_finished(page)
    page.wait_for_function("() => document.querySelectorAll('#log-body .ln').length >= 3")
    texts = [text for _, _, text in log_lines(page)]
    assert sorted(texts[:3]) == sorted([payload, script, "<b>not bold</b>"]), texts
    assert page.locator("#log-body img, #log-body script, #log-body b").count() == 0
    assert page.evaluate("window.__xss") is None
    # The command in the header is text too.
    expect(page.locator("#run-command")).to_contain_text("<img src=x")
    assert page.locator(".run-head img").count() == 0
    # And in the runs table (rows rendered by the server and by the script).
    page.goto("/")
    page.wait_for_selector(f"tr[data-run='{run['id']}']")
    expect(page.locator("#feed-state")).to_have_attribute("data-state", "live")
    assert page.locator("#runs-body img, #runs-body script").count() == 0
    # An image requested now has failed and fired its error handler: an injected
    # one, requested before it, would have fired its own (setting __xss) by then.
    assert page.evaluate(BROKEN_IMAGE_LOADED)
    assert page.evaluate("window.__xss") is None


def test_streams_colours_carriage_returns_and_partial_lines(
    page: Page, client: httpx.Client, docker_api: docker.APIClient
) -> None:
    script = (
        "echo plain out; "
        "echo oops on stderr >&2; "
        r"printf '\033[31mred\033[0m and \033[1;32mbold green\033[0m and ';"
        r"printf '\033[38;5;208morange\033[0m\n'; "
        r"printf 'progress 10%%\rprogress 55%%\rprogress 100%%\n'; "
        f"printf 'prompt> '; {gate()}; echo answered; "
        "echo last"
    )
    run = start(client, image=BASE_IMAGE, command=["sh", "-c", script])
    page.goto(run["links"]["page"])

    # The prompt shows as an open line (the rest is held at a gate) ...
    partial = page.locator("#log-body .ln.partial")
    expect(partial).to_have_text("prompt> ")
    number = partial.get_attribute("data-n")
    assert page.locator("#status-badge").text_content() == "running"
    # ... and is completed in place.
    open_gate(docker_api, run["id"])
    wait_finished(page)
    completed = page.locator(f"#log-body .ln[data-n='{number}']")
    expect(completed).to_have_count(1)
    expect(completed).to_have_text("prompt> answered")
    expect(completed).not_to_have_class(re.compile(r"\bpartial\b"))

    lines = {text: (n, stream) for n, stream, text in log_lines(page)}
    assert lines["plain out"][1] == "stdout"
    assert lines["oops on stderr"][1] == "stderr"
    stderr_style = page.eval_on_selector(
        "#log-body .ln.stderr", "el => getComputedStyle(el).borderLeftColor"
    )
    stdout_style = page.eval_on_selector(
        "#log-body .ln.stdout", "el => getComputedStyle(el).borderLeftColor"
    )
    assert stderr_style != stdout_style
    # SGR colours: spans with classes (and the 256-colour one as a colour).
    expect(page.locator("#log-body span.fg-1")).to_have_text("red")
    bold_green = page.locator("#log-body span.fg-2.sgr-bold")
    expect(bold_green).to_have_text("bold green")
    assert page.eval_on_selector("#log-body span.fg-1", "el => getComputedStyle(el).color") != (
        page.eval_on_selector("#log-body .ln.stdout", "el => getComputedStyle(el).color")
    )
    orange = page.eval_on_selector_all(
        "#log-body span",
        "spans => spans.filter(s => s.textContent === 'orange').map(s => s.style.color)",
    )
    assert orange == ["rgb(255, 135, 0)"]
    assert "red and bold green and orange" in lines
    # "\r": what a terminal would show.
    assert "progress 100%" in lines
    assert not any("10%" in text for text in lines)

    # Filter and wrap.
    page.fill("#log-filter", "STDERR")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#log-body .ln')]"
        ".filter(el => el.offsetParent !== null).length === 1"
    )
    expect(page.locator("#log-info")).to_contain_text("1 matching")
    page.fill("#log-filter", "")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#log-body .ln')]"
        ".every(el => el.offsetParent !== null)"
    )
    page.check("#log-wrap")
    expect(page.locator("#log")).to_have_class(re.compile(r"\bwrap\b"))
    download = page.locator("#log-download")
    expect(download).to_have_attribute("href", run["links"]["logs"])


def test_cancel_then_run_again_with_the_form_prefilled(page: Page, client: httpx.Client) -> None:
    run = start(
        client,
        image=BASE_IMAGE,
        command=["sh", "-c", "trap 'exit 143' TERM; echo waiting; sleep 300 & wait"],
        env={"GREETING": "hello there"},
        timeout=120,
        memory="64m",
    )
    page.goto(run["links"]["page"])
    expect(page.locator("#log-body .ln")).to_have_text("waiting")
    cancel = page.locator("#cancel-run")
    expect(cancel).to_be_visible()
    cancel.click()
    wait_finished(page)
    expect(page.locator("#status-badge")).to_have_text("canceled")
    expect(cancel).to_be_hidden()
    expect(page.locator("#run-error")).to_contain_text("canceled by request")
    assert client.get(run["links"]["self"]).json()["status"] == "canceled"

    page.click("#run-again")
    page.wait_for_url(re.compile(rf"/\?from={run['id']}"))
    expect(page.locator("#f-image")).to_have_value(BASE_IMAGE)
    expect(page.locator("#f-command")).to_have_value(
        "sh -c 'trap '\"'\"'exit 143'\"'\"' TERM; echo waiting; sleep 300 & wait'"
    )
    expect(page.locator("#f-env")).to_have_value("GREETING=hello there")
    expect(page.locator("#f-timeout")).to_have_value("120")
    expect(page.locator("#f-memory")).to_have_value("64m")
    expect(page.locator("#f-auto_remove")).to_be_checked()
    # The prefilled form starts the same run again.
    page.click("#start-run")
    page.wait_for_url(re.compile(r"/runs/[0-9a-f]{12}$"))
    again_id = page.url.rsplit("/", 1)[1]
    assert again_id != run["id"]
    again = client.get(f"/api/runs/{again_id}").json()
    assert again["spec"]["command"] == run["spec"]["command"]
    assert again["spec"]["env"] == {"GREETING": "hello there"}
    assert again["spec"]["memory"] == 64 * 1024 * 1024
    expect(page.locator("#log-body .ln")).to_have_text("waiting")
    wait_until(
        lambda: client.post(f"/api/runs/{again_id}/cancel").status_code in (202, 409),
        f"a cancel of run {again_id} to be accepted",
    )
    wait_finished(page)
