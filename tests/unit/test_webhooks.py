"""Webhooks (backend/runs/webhooks.py): signing, the backoff schedule, the
bookkeeping of deliveries (delivered, retried, failed, bounded), what is
shown, and the policy of `notify_url`. No threads: `run_due` makes the due
attempts here, against httpx's MockTransport and a clock the test moves."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from backend.cli import build_parser
from backend.errors import PolicyViolation
from backend.models import RunCreate, RunRecord, RunSpec, RunStatus, WebhookDelivery
from backend.runs.policy import apply_policy
from backend.runs.runner import links_for
from backend.runs.webhooks import (
    FINISHED,
    STARTED,
    WebhookSender,
    backoff,
    payload,
    shown_url,
    sign,
    verify,
)
from backend.settings import Settings

SECRET = "whsec-unit-4f1d9a7e"
URL = "http://127.0.0.1:9/hook"


def record(status: RunStatus = RunStatus.SUCCEEDED, run_id: str = "abc123def456") -> RunRecord:
    return RunRecord(
        id=run_id,
        status=status,
        spec=RunSpec(image="busybox", env={"TOKEN": "not-for-receivers"}),
        created_at="2026-11-30T00:00:00.000Z",
        created_by="alice",
        links=links_for(run_id),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """A sender with a scripted receiver: `answers` is a list of status codes
    or exceptions, one per attempt (the last one repeats)."""

    def __init__(self, answers: list[int | Exception], **settings: Any) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []
        self.changes: list[tuple[str, list[WebhookDelivery]]] = []
        self.clock = Clock()
        values: dict[str, Any] = {"webhooks": [URL], "webhook_secret": SECRET}
        values.update(settings)
        self.settings = Settings(**values)
        self.sender = WebhookSender(
            self.settings,
            lambda run_id, deliveries: self.changes.append((run_id, deliveries)),
            transport=httpx.MockTransport(self.handle),
            clock=self.clock,
            autostart=False,
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)

    @property
    def last(self) -> list[WebhookDelivery]:
        return self.changes[-1][1]

    def drive(self, limit: int = 50) -> None:
        """Attempt whatever is due, moving the clock to each next attempt."""
        for _ in range(limit):
            self.sender.run_due()
            if not self.sender._heap:
                return
            self.clock.now = self.sender._heap[0][0]
        raise AssertionError("deliveries never settled")


# -- signing, schedule, what is shown --------------------------------------------------


def test_the_signature_is_githubs_hmac_sha256() -> None:
    # The example of GitHub's "Validating webhook deliveries".
    body = b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign(b"It's a Secret to Everybody", body) == expected
    assert verify(b"It's a Secret to Everybody", body, expected)
    assert not verify(b"It's a Secret to Everybody", body + b" ", expected)
    assert not verify(b"another secret", body, expected)
    assert not verify(b"It's a Secret to Everybody", body, None)


def test_the_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff(n) for n in range(1, 11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert [backoff(n, first=0.1, cap=0.5) for n in range(1, 5)] == [0.1, 0.2, 0.4, 0.5]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://user:pw@hooks.example.com/a/b?key=s3cret&x=1",
            "https://hooks.example.com/a/b?key=***&x=***",
        ),
        ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"),
        ("http://token@[::1]:9/x", "http://[::1]:9/x"),
        ("https://example.com/p#frag", "https://example.com/p"),
    ],
)
def test_urls_are_shown_without_credentials(url: str, shown: str) -> None:
    assert shown_url(url) == shown


def test_the_body_is_what_an_admin_less_viewer_sees_plus_the_event() -> None:
    body = json.loads(payload(record(), FINISHED))
    assert body["event"] == "run.finished"
    assert body["id"] == "abc123def456" and body["status"] == "succeeded"
    assert body["spec"]["env"] == {"TOKEN": "***"}
    assert "webhooks" not in body


# -- bookkeeping -------------------------------------------------------------------------


def test_a_delivery_is_signed_and_recorded_delivered() -> None:
    h = Harness([204])
    h.sender.finished(record())
    assert [d.status for d in h.last] == ["pending"]
    h.drive()
    (request,) = h.requests
    assert verify(SECRET.encode(), request.content, request.headers["X-Pullrun-Signature"])
    assert request.headers["X-Pullrun-Event"] == "run.finished"
    assert request.headers["X-Pullrun-Delivery"] == h.last[0].id
    assert request.headers["X-Pullrun-Timestamp"].isdigit()
    assert request.headers["Content-Type"] == "application/json"
    (delivery,) = h.last
    assert (delivery.status, delivery.attempts, delivery.last_status) == ("delivered", 1, 204)
    assert delivery.finished_at is not None and delivery.event == "run.finished"


def test_5xx_and_429_are_retried_with_the_same_body_then_delivered() -> None:
    h = Harness([500, 429, 503, 200])
    h.sender.finished(record())
    h.sender.run_due()
    assert h.last[0].status == "pending" and h.last[0].next_attempt_at is not None
    assert h.last[0].last_status == 500
    h.drive()
    assert len(h.requests) == 4
    assert len({r.content for r in h.requests}) == 1
    assert len({r.headers["X-Pullrun-Delivery"] for r in h.requests}) == 1
    (delivery,) = h.last
    assert (delivery.status, delivery.attempts, delivery.last_status) == ("delivered", 4, 200)
    assert delivery.last_error is None


def test_a_4xx_fails_at_once() -> None:
    h = Harness([404])
    h.sender.finished(record())
    h.drive()
    (delivery,) = h.last
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("failed", 1, "HTTP 404")


def test_a_redirect_is_not_followed() -> None:
    h = Harness([302])
    h.sender.finished(record())
    h.drive()
    assert (h.last[0].status, h.last[0].attempts) == ("failed", 1)
    assert len(h.requests) == 1


def test_timeouts_are_retried_until_the_retry_window_ends() -> None:
    h = Harness([httpx.ReadTimeout("slow")], webhook_retry_for=10, webhook_max_attempts=100)
    h.sender.finished(record())
    h.drive()
    (delivery,) = h.last
    # attempts at 0, 1, 3, 7 s; the next (15 s) would start past the 10 s window
    assert (delivery.status, delivery.attempts, delivery.last_status) == ("failed", 4, None)
    assert delivery.last_error is not None and delivery.last_error.startswith("timed out")
    assert h.clock.now - 1000.0 <= 10


def test_attempts_are_bounded() -> None:
    h = Harness([httpx.ConnectError("refused")], webhook_max_attempts=3)
    h.sender.finished(record())
    h.drive()
    assert (h.last[0].status, h.last[0].attempts) == ("failed", 3)
    assert h.last[0].last_error == "ConnectError: refused"


def test_started_is_sent_once_and_kept_with_finished() -> None:
    h = Harness([200], webhook_events=["finished", "started"])
    running = record(RunStatus.RUNNING)
    h.sender.started(running)
    h.sender.started(running)  # saved again while running: still once
    h.drive()
    running.webhooks = h.last
    h.sender.started(running)
    running.status = RunStatus.SUCCEEDED
    h.sender.finished(running)
    h.drive()
    assert [(d.event, d.status) for d in h.last] == [
        (STARTED, "delivered"),
        (FINISHED, "delivered"),
    ]
    events = [json.loads(r.content)["event"] for r in h.requests]
    assert events == ["run.started", "run.finished"]


def test_only_finished_by_default_and_nothing_without_urls() -> None:
    h = Harness([200])
    h.sender.started(record(RunStatus.RUNNING))
    assert h.changes == []
    quiet = Harness([200], webhooks=[])
    quiet.sender.finished(record())
    assert quiet.changes == [] and quiet.sender.pending() == 0


def test_a_runs_notify_url_is_called_too_and_shown_without_credentials() -> None:
    h = Harness([200])
    h.sender.watch("abc123def456", "http://me:pw@127.0.0.1:9/mine?t=tok")
    h.sender.finished(record())
    h.drive()
    assert [str(r.url) for r in h.requests] == [URL, "http://me:pw@127.0.0.1:9/mine?t=tok"]
    assert [d.url for d in h.last] == [URL, "http://127.0.0.1:9/mine?t=***"]
    assert "pw" not in json.dumps([d.model_dump() for d in h.last])


def test_unsigned_without_a_secret() -> None:
    h = Harness([200], webhook_secret=None)
    h.sender.finished(record())
    h.drive()
    assert "X-Pullrun-Signature" not in h.requests[0].headers


def test_pending_deliveries_of_a_stopped_server_are_recorded_failed() -> None:
    h = Harness([500])
    h.sender.finished(record())
    h.sender.run_due()
    h.sender.stop()
    assert h.last[0].status == "failed"
    assert h.last[0].last_error == "the server stopped before it was delivered"


def test_the_secret_is_never_logged_or_recorded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    h = Harness([500], webhook_max_attempts=2)
    h.sender.finished(record())
    h.drive()
    assert h.last[0].status == "failed" and "failed after 2 attempt(s)" in caplog.text
    assert SECRET not in caplog.text
    assert SECRET not in json.dumps([d.model_dump() for d in h.last])
    assert SECRET not in repr(h.settings) and SECRET not in str(h.settings.model_dump())


# -- settings and policy ------------------------------------------------------------------


def test_webhook_settings_are_checked() -> None:
    assert Settings(webhooks="http://a/x, https://b/y").webhooks == ["http://a/x", "https://b/y"]
    assert Settings(webhook_events='["started", "finished"]').webhook_events == [
        "started",
        "finished",
    ]
    with pytest.raises(ValidationError, match="http:// or https://"):
        Settings(webhooks="ftp://a/x")
    with pytest.raises(ValidationError, match="unknown event"):
        Settings(webhook_events="ended")


def test_notify_url_needs_the_policy() -> None:
    request = RunCreate(image="busybox", notify_url="http://127.0.0.1:9/mine")
    with pytest.raises(PolicyViolation) as info:
        apply_policy(request, Settings())
    assert info.value.fields[0]["field"] == "notify_url"
    assert "PULLRUN_ALLOW_NOTIFY_URL" in info.value.fields[0]["message"]
    allowed = apply_policy(request, Settings(allow_notify_url=True))
    assert allowed.notify_url == "http://127.0.0.1:9/mine"


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "javascript:alert(1)", "http:///nohost", "http://a/" + "x" * 2048]
)
def test_notify_url_must_be_a_bounded_http_url(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        RunCreate(image="busybox", notify_url=url)
    assert url not in str(info.value)


def test_a_stop_lets_attempts_due_now_happen_first() -> None:
    sent: list[httpx.Request] = []
    changes: list[list[WebhookDelivery]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    sender = WebhookSender(
        Settings(webhooks=[URL]),
        lambda run_id, deliveries: changes.append(deliveries),
        transport=httpx.MockTransport(handle),
    )
    sender.finished(record(RunStatus.CANCELED))
    sender.stop()
    assert len(sent) == 1
    assert [d.status for d in changes[-1]] == ["delivered"]


def test_the_secret_has_no_command_line_flag() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--webhook-secret", SECRET])
    assert build_parser().parse_args(["serve", "--webhooks", URL]).webhooks == URL
