"""A page of another origin cannot start, cancel or delete runs, nor read
them, in a browser that is signed in to pullrun.

The attacker's page is served by a second HTTP server on another port of
127.0.0.1: another origin, but the same site, so the browser does send the
SameSite=Lax session cookie with its requests (the hardest case). It tries
form posts (urlencoded, and text/plain with a JSON-looking body), `fetch`
POSTs in no-cors mode (a Blob with no Content-Type, a text/plain string) and
in cors mode (JSON, with credentials), a cross-origin DELETE, and reads of
/api/runs (cors and no-cors). Afterwards /api/runs, asked by the test, holds
no new run, the old one is still there, and no attempt read anything.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from playwright.sync_api import Request, Response, expect

from tests.support.runs import run_to_end
from tests.support.server import ServerProcess
from tests.support.wait import wait_until

BASE_IMAGE = "pullrun/busybox:base"

ATTACK = """<!doctype html>
<html><head><meta charset="utf-8"><title>a page of another origin</title></head>
<body>
<iframe name="f-urlencoded"></iframe>
<iframe name="f-plain"></iframe>
<form id="urlencoded" target="f-urlencoded" method="post" action="__TARGET__/api/runs">
  <input name="image" value="__IMAGE__"><input name="command" value="true">
</form>
<form id="plain" target="f-plain" method="post" enctype="text/plain" action="__TARGET__/api/runs">
  <input name='__PLAIN_NAME__' value='"}'>
</form>
<script>
const target = "__TARGET__";
const body = JSON.stringify({ image: "__IMAGE__", command: ["true"] });
window.results = {};
async function attempt(name, run) {
  try {
    window.results[name] = await run();
  } catch (error) {
    window.results[name] = `refused by the browser: ${error.name}`;
  }
}
async function describe(response) {
  const text = await response.text();
  return `type ${response.type} status ${response.status} body ${text}`;
}
(async () => {
  document.getElementById("urlencoded").submit();
  document.getElementById("plain").submit();
  await attempt("no-cors blob", async () => describe(await fetch(`${target}/api/runs`, {
    method: "POST", mode: "no-cors", credentials: "include", body: new Blob([body]),
  })));
  await attempt("no-cors text", async () => describe(await fetch(`${target}/api/runs`, {
    method: "POST", mode: "no-cors", credentials: "include", body,
  })));
  await attempt("cors json", async () => describe(await fetch(`${target}/api/runs`, {
    method: "POST", mode: "cors", credentials: "include",
    headers: { "content-type": "application/json" }, body,
  })));
  await attempt("cors delete", async () => describe(await fetch(`${target}/api/runs/__RUN__`, {
    method: "DELETE", mode: "cors", credentials: "include",
  })));
  const cancel = `${target}/api/runs/__RUN__/cancel`;
  await attempt("no-cors cancel", async () => describe(await fetch(cancel, {
    method: "POST", mode: "no-cors", credentials: "include",
  })));
  await attempt("read cors", async () => describe(await fetch(`${target}/api/runs`, {
    credentials: "include",
  })));
  await attempt("read no-cors", async () => describe(await fetch(`${target}/api/runs`, {
    mode: "no-cors", credentials: "include",
  })));
  window.done = true;
})();
</script>
</body></html>
"""


class AttackServer:
    """http.server in a thread on 127.0.0.1 (another port): serves one page."""

    def __init__(self, page: str) -> None:
        body = page.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> AttackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


def attack_page(server: ServerProcess, run_id: str) -> str:
    # text/plain form: name={"image":...,"pad":"  value="}  ->  {"image":...,"pad":"="}
    plain_name = json.dumps({"image": BASE_IMAGE, "command": ["true"]})[:-1] + ', "pad": "'
    return (
        ATTACK.replace("__PLAIN_NAME__", plain_name.replace("'", "&#39;"))
        .replace("__TARGET__", server.base_url)
        .replace("__IMAGE__", BASE_IMAGE)
        .replace("__RUN__", run_id)
    )


@pytest.fixture
def victim_run(client: httpx.Client) -> Iterator[dict[str, Any]]:
    run, _ = run_to_end(client, image=BASE_IMAGE, command=["echo", "secret output"])
    yield run


def run_ids(client: httpx.Client) -> set[str]:
    return {run["id"] for run in client.get("/api/runs", params={"limit": 100}).json()["runs"]}


def test_a_page_of_another_origin_can_neither_start_nor_read_runs(
    new_page: Any, server: ServerProcess, client: httpx.Client, victim_run: dict[str, Any]
) -> None:
    page, problems = new_page()  # signed in: the context holds the session cookie
    page.goto("/")
    expect(page.locator("#signed-in-name")).to_be_visible()  # the cookie works here
    assert any(c["name"] == "pullrun_session" for c in page.context.cookies())
    before = run_ids(client)
    assert victim_run["id"] in before

    answers: list[tuple[str, str, int]] = []  # what pullrun answered, as the browser saw it
    sent: list[tuple[str, str]] = []  # requests to pullrun the browser sent

    def on_request(request: Request) -> None:
        if request.url.startswith(server.base_url + "/api/"):
            sent.append((request.method, request.url))

    def on_response(response: Response) -> None:
        if response.url.startswith(server.base_url + "/api/"):
            answers.append((response.request.method, response.url, response.status))

    page.context.on("request", on_request)
    page.context.on("response", on_response)
    with AttackServer(attack_page(server, victim_run["id"])) as attacker:
        page.goto(attacker.url)
        page.wait_for_function("() => window.done === true")

        def form_answers() -> list[tuple[str, str, int]] | None:
            page.evaluate("1")  # lets Playwright deliver the network events
            got = [a for a in answers if a[0] == "POST" and a[1].endswith("/api/runs")]
            return got if len(got) >= 2 else None

        # The two forms navigate their frames: the browser shows pullrun's answer.
        forms = wait_until(form_answers, "pullrun's answers to the attacker's two form posts")
        results: dict[str, str] = page.evaluate("window.results")

    assert [status for _, _, status in forms] == [403, 403], forms
    assert all(status >= 400 for _, _, status in answers), answers
    posts = [url for method, url in sent if method == "POST" and url.endswith("/api/runs")]
    assert len(posts) >= 4, sent  # the forms and the no-cors fetches went out, with the cookie
    assert run_ids(client) == before  # nothing started
    assert client.get(victim_run["links"]["self"]).status_code == 200  # nor deleted

    # What the page could see: refusals (CORS, Cross-Origin-Resource-Policy)
    # or opaque answers, never a run.
    assert set(results) == {
        "no-cors blob", "no-cors text", "cors json", "cors delete", "no-cors cancel",
        "read cors", "read no-cors",
    }  # fmt: skip
    for name, result in results.items():
        refused = result.startswith("refused by the browser")
        assert refused or result == "type opaque status 0 body ", (name, result)
    for name in ("cors json", "cors delete", "read cors"):  # no CORS: not even sent, or unread
        assert results[name].startswith("refused by the browser"), (name, results[name])
    assert all(victim_run["id"] not in text and "secret" not in text for text in results.values())
    problems.errors.clear()  # the attacker's page logs its refusals: expected here
