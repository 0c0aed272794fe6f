"""Webhooks against the real server and engine: receivers on 127.0.0.1 (a
small threaded HTTP server in the test) check the signature, answer 500 twice
before 200, or hang; the run ends regardless, the hanging receiver's
deliveries time out, are retried and end `failed` within the bounded time,
and the run object and page show every delivery. A run's own `notify_url`
needs the policy."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.support.runs import run_to_end
from tests.support.server import ServerFactory, ServerProcess
from tests.support.wait import wait_until

SECRET = "whsec-integration-7c2e90b1"
ENV_VALUE = "for-the-creator-only-41d8"


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """What the receivers saw; `release` lets the hanging one go (at the end)."""

    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path.split("?")[0] == path]


def handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            hit = Hit(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            with receiver.lock:
                receiver.hits.append(hit)
                earlier = [
                    h
                    for h in receiver.hits
                    if h.headers.get("x-pullrun-delivery") == hit.headers.get("x-pullrun-delivery")
                ]
            path = self.path.split("?")[0]
            if path == "/hang":
                receiver.release.wait(60)  # longer than the server's webhook timeout
                status = 200
            elif path == "/flaky" and len(earlier) <= 2:
                status = 500
            else:
                status = 204
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the server gave up on it (the hanging receiver)

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(receiver))
    httpd.daemon_threads = True
    receiver.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        httpd.shutdown()
        httpd.server_close()


def settled(client: httpx.Client, run_id: str, count: int) -> list[dict[str, Any]] | None:
    deliveries: list[dict[str, Any]] = client.get(f"/api/runs/{run_id}").json()["webhooks"]
    if len(deliveries) == count and all(d["status"] != "pending" for d in deliveries):
        return deliveries
    return None


def test_webhooks_are_signed_retried_bounded_and_shown(
    server_factory: ServerFactory, receiver: Receiver, image: str
) -> None:
    urls = [receiver.url("/ok"), receiver.url("/flaky"), receiver.url("/hang")]
    server: ServerProcess = server_factory(
        webhooks=",".join(urls),
        webhook_secret=SECRET,
        webhook_events="finished,started",
        webhook_timeout=0.5,
        webhook_retry_for=5,  # /hang: attempts at about 0, 1.5 and 4 s, then failed
        webhook_max_attempts=5,
        allow_notify_url="true",
    )
    own = f"http://me:pw-9e1f@127.0.0.1:{receiver.port}/own?token=tok-5a7c"
    with server.client() as client:
        final, events = run_to_end(
            client,
            image=image,
            command=["echo", "hi"],
            env={"TOKEN": ENV_VALUE},
            notify_url=own,
        )
        # The run ended (its `done` is written) whatever the receivers do.
        assert final["status"] == "succeeded", final
        assert events[-1].type == "done"
        run_id = final["id"]
        assert "notify_url" not in final["spec"]

        deliveries = wait_until(
            lambda: settled(client, run_id, 8), "the 8 deliveries to be delivered or failed"
        )
        page = client.get(f"/runs/{run_id}")
        assert page.status_code == 200
        answers = json.dumps(deliveries) + page.text + json.dumps(client.get("/api/runs").json())

    by = {(d["url"].split("/")[-1], d["event"]): d for d in deliveries}
    assert len(by) == 8
    for event in ("run.started", "run.finished"):
        ok, flaky, hang = by["ok", event], by["flaky", event], by["hang", event]
        assert (ok["status"], ok["attempts"], ok["last_status"]) == ("delivered", 1, 204)
        assert (flaky["status"], flaky["attempts"], flaky["last_status"]) == ("delivered", 3, 204)
        assert hang["status"] == "failed" and hang["attempts"] >= 2, hang
        assert hang["last_status"] is None and hang["last_error"].startswith("timed out"), hang
        assert hang["finished_at"] is not None and hang["next_attempt_at"] is None
        mine = by["own?token=***", event]
        assert mine["status"] == "delivered"
        assert mine["url"] == f"http://127.0.0.1:{receiver.port}/own?token=***"
    # started before finished, in the record's order
    assert [d["event"] for d in deliveries[:4]] == ["run.started"] * 4

    # Every request: signed over its exact body, the run as an admin-less viewer sees it.
    hits = receiver.at("/ok") + receiver.at("/flaky") + receiver.at("/hang") + receiver.at("/own")
    assert len(receiver.at("/flaky")) == 6 and len(receiver.at("/hang")) >= 4
    for hit in hits:
        expected = "sha256=" + hmac.new(SECRET.encode(), hit.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(hit.headers["x-pullrun-signature"], expected)
        body = json.loads(hit.body)
        assert body["id"] == run_id and body["event"] == hit.headers["x-pullrun-event"]
        assert body["spec"]["env"] == {"TOKEN": "***"}
        assert "webhooks" not in body
        assert hit.headers["content-type"] == "application/json"
        assert hit.headers["x-pullrun-timestamp"].isdigit()
    finished = [json.loads(h.body) for h in receiver.at("/ok") if b"run.finished" in h.body]
    assert finished[0]["status"] == "succeeded" and finished[0]["finished_at"]
    # A retry sends the same delivery id and the same bytes.
    flaky_ids = {h.headers["x-pullrun-delivery"] for h in receiver.at("/flaky")}
    assert len(flaky_ids) == 2
    assert len({h.body for h in receiver.at("/flaky") if b"run.finished" in h.body}) == 1
    assert receiver.at("/own")[0].headers.get("authorization", "").startswith("Basic ")

    # The page lists them; the secret and the URL's credentials are nowhere.
    assert "Webhooks" in page.text and "delivered" in page.text and "timed out" in page.text
    for secret in (SECRET, "pw-9e1f", "tok-5a7c"):
        assert secret not in answers
    server.stop()
    log_text = server.log_path.read_text(errors="replace")
    for secret in (SECRET, "pw-9e1f", "tok-5a7c"):
        assert secret not in log_text
        for path in server.data_dir.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


def test_notify_url_is_refused_unless_the_policy_allows_it(
    client: httpx.Client, image: str
) -> None:
    response = client.post(
        "/api/runs", json={"image": image, "notify_url": "http://127.0.0.1:9/hook"}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["fields"][0]["field"] == "notify_url"
    assert "PULLRUN_ALLOW_NOTIFY_URL" in error["message"]
    bad = client.post("/api/runs", json={"image": image, "notify_url": "file:///etc/passwd"})
    assert bad.status_code == 422 and "file:///etc/passwd" not in bad.text
