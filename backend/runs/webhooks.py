"""Webhooks: a run's end (and, where asked, its start) POSTed as JSON to the
URLs of PULLRUN_WEBHOOKS and to the run's own `notify_url` (when the policy
allows it), signed, retried, and recorded on the run.

- Body: the run as `GET /api/runs/{id}` shows it to a viewer who is neither
  its creator nor an admin (`env` values `***`), without its `webhooks`, plus
  `event` (`run.started` or `run.finished`). The same bytes on every attempt.
- Headers: `X-Pullrun-Signature: sha256=<hex>` (HMAC-SHA256 of the body with
  PULLRUN_WEBHOOK_SECRET; none without a secret), `X-Pullrun-Event`,
  `X-Pullrun-Delivery` (an id, the same on every attempt) and
  `X-Pullrun-Timestamp` (Unix seconds of this attempt).
- Retries: after a connection error, a timeout, a 5xx, 408 or 429, with
  exponential backoff (`backoff`), while attempts stay under
  PULLRUN_WEBHOOK_MAX_ATTEMPTS and the next one would start within
  PULLRUN_WEBHOOK_RETRY_FOR of the first; any other answer ends it
  (2xx: `delivered`, else `failed`). Redirects are not followed.
- Never in the run's way: a few worker threads take due deliveries from a
  bounded heap; a run's `done` never waits for them. Each change of a
  delivery goes to `on_change(run_id, deliveries)` (the runner puts the list
  in the run's record).
- What is shown (`WebhookDelivery.url`, errors): the URL without user info and
  with query values `***`. The secret is never logged, shown or written.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import orjson

from ..events import now_rfc3339
from ..models import REDACTED, RunRecord, WebhookDelivery
from ..settings import Settings
from .policy import redact

log = logging.getLogger(__name__)

STARTED = "run.started"
FINISHED = "run.finished"
WORKERS = 4  # attempts in flight at once
MAX_PENDING = 1000  # deliveries waiting or in flight; past it a new one fails at once
BACKOFF_FIRST = 1.0  # seconds before the second attempt
BACKOFF_MAX = 300.0  # the longest wait between two attempts
MAX_ERROR_LENGTH = 200
STOP_WAIT = 2.0  # seconds `stop` waits for attempts in flight
SIGNATURE_HEADER = "X-Pullrun-Signature"

OnChange = Callable[[str, list[WebhookDelivery]], None]


def sign(secret: bytes, body: bytes) -> str:
    """The `X-Pullrun-Signature` value of `body`: `sha256=<hex HMAC-SHA256>`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """What a receiver does: the header matches the body's signature (constant time)."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


def backoff(attempts: int, first: float = BACKOFF_FIRST, cap: float = BACKOFF_MAX) -> float:
    """Seconds to wait after `attempts` failed attempts: first, 2 x first, 4 x ... up to cap."""
    return float(min(cap, first * 2 ** max(0, attempts - 1)))


def retryable(status: int) -> bool:
    """An answer worth another attempt: the receiver is overloaded or broken for now."""
    return status >= 500 or status in (408, 429)


def shown_url(url: str) -> str:
    """`url` as it may be shown: no user info, query values `***`."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
        query = urlencode([(k, REDACTED) for k, _ in parse_qsl(parts.query, True)], safe="*")
    except ValueError:
        return REDACTED
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def payload(record: RunRecord, event: str) -> bytes:
    """The body of `event` for `record`: what an admin-less viewer sees, plus `event`."""
    data = redact(record).model_dump(mode="json", exclude={"webhooks"})
    data["event"] = event
    return orjson.dumps(data)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Delivery:
    run_id: str
    url: str  # as given, credentials and all: only ever sent to
    body: bytes
    view: WebhookDelivery
    deadline: float  # clock(): no attempt starts after this
    due: float = 0.0


@dataclass
class _Run:
    deliveries: list[WebhookDelivery] = field(default_factory=list)
    pending: int = 0
    finished: bool = False


class WebhookSender:
    """Deliveries of one server: `started(record)`, `finished(record)`, `watch`
    (a run's `notify_url`), `stop()`. `autostart=False` (tests): no worker
    threads; `run_due()` makes the due attempts in the caller's thread."""

    def __init__(
        self,
        settings: Settings,
        on_change: OnChange,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        autostart: bool = True,
        workers: int = WORKERS,
    ) -> None:
        self._urls = list(settings.webhooks)
        secret = settings.webhook_secret
        self._secret = secret.get_secret_value().encode() if secret is not None else None
        self._events = {f"run.{name}" for name in settings.webhook_events}
        self._retry_for = settings.webhook_retry_for
        self._max_attempts = settings.webhook_max_attempts
        self._timeout = settings.webhook_timeout
        self._on_change = on_change
        self._clock = clock
        self._autostart = autostart
        self._workers = workers
        self._client = httpx.Client(
            timeout=httpx.Timeout(settings.webhook_timeout),
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": "pullrun-webhook", "Content-Type": "application/json"},
        )
        self._cond = threading.Condition()
        self._publishing = threading.Lock()  # before _cond: one list at a time, in order
        self._heap: list[tuple[float, int, Delivery]] = []
        self._seq = itertools.count()
        self._in_flight = 0
        self._runs: dict[str, _Run] = {}
        self._notify: dict[str, str] = {}  # run id -> its notify_url, until it finishes
        self._started: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._closing = False

    # -- what the runner tells it ----------------------------------------------------

    def watch(self, run_id: str, notify_url: str | None) -> None:
        """A run's own `notify_url` (already allowed by the policy)."""
        if notify_url:
            with self._cond:
                self._notify[run_id] = notify_url

    def started(self, record: RunRecord) -> None:
        """The run is running: `run.started` deliveries (once per run)."""
        if STARTED not in self._events:
            return
        with self._cond:
            if record.id in self._started or any(d.event == STARTED for d in record.webhooks):
                return
            self._started.add(record.id)
        self._enqueue(record, STARTED)

    def finished(self, record: RunRecord) -> None:
        """The run ended (its `done` is written): `run.finished` deliveries."""
        if FINISHED in self._events:
            self._enqueue(record, FINISHED)
        with self._cond:
            self._notify.pop(record.id, None)
            self._started.discard(record.id)
            run = self._runs.get(record.id)
            if run is None:
                return
            run.finished = True
            if run.pending == 0:
                del self._runs[record.id]
        self._publish(record.id, run)  # the whole list, in the record it now has

    def _enqueue(self, record: RunRecord, event: str) -> None:
        urls = list(self._urls)
        with self._cond:
            own = self._notify.get(record.id)
        if own:
            urls.append(own)
        if not urls:
            return
        body = payload(record, event)
        now = self._clock()
        with self._cond:
            run = self._runs.get(record.id)
            if run is None:
                run = self._runs[record.id] = _Run(deliveries=self._earlier(record))
            for url in urls:
                view = WebhookDelivery(
                    id=secrets.token_hex(8),
                    url=shown_url(url),
                    event=event,
                    status="pending",
                    created_at=now_rfc3339(),
                )
                run.deliveries.append(view)
                if len(self._heap) + self._in_flight >= MAX_PENDING:
                    view.status = "failed"
                    view.last_error = f"too many deliveries pending (more than {MAX_PENDING})"
                    view.finished_at = view.created_at
                    log.warning("run %s: webhook %s dropped: queue full", record.id, view.url)
                    continue
                delivery = Delivery(record.id, url, body, view, deadline=now + self._retry_for)
                delivery.due = now
                run.pending += 1
                heapq.heappush(self._heap, (now, next(self._seq), delivery))
            self._cond.notify_all()
            self._start_workers()
        self._publish(record.id, run)

    def _earlier(self, record: RunRecord) -> list[WebhookDelivery]:
        """Deliveries the record has from before (this server's earlier life):
        one still pending there will never be tried again."""
        kept = [d.model_copy() for d in record.webhooks]
        for d in kept:
            if d.status == "pending":
                d.status, d.next_attempt_at = "failed", None
                d.last_error = "the server stopped before it was delivered"
                d.finished_at = now_rfc3339()
        return kept

    # -- workers -----------------------------------------------------------------------

    def _start_workers(self) -> None:
        """Under _cond: the worker threads, on the first delivery."""
        if self._threads or not self._autostart or self._closing:
            return
        for index in range(self._workers):
            thread = threading.Thread(
                target=self._work, name=f"pullrun-webhook-{index}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _next_due(self, block: bool) -> Delivery | None:
        with self._cond:
            while not self._closing:
                if self._heap and self._heap[0][0] <= self._clock():
                    _, _, delivery = heapq.heappop(self._heap)
                    self._in_flight += 1
                    return delivery
                if not block:
                    return None
                wait = self._heap[0][0] - self._clock() if self._heap else None
                self._cond.wait(wait)
        return None

    def _work(self) -> None:
        while True:
            delivery = self._next_due(block=True)
            if delivery is None:
                return
            self._attempt(delivery)

    def run_due(self) -> int:
        """Make every attempt that is due now, here (tests); how many."""
        count = 0
        while (delivery := self._next_due(block=False)) is not None:
            self._attempt(delivery)
            count += 1
        return count

    def _attempt(self, delivery: Delivery) -> None:
        view = delivery.view
        headers = {"X-Pullrun-Event": view.event, "X-Pullrun-Delivery": view.id}
        headers["X-Pullrun-Timestamp"] = str(int(time.time()))
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, delivery.body)
        status: int | None = None
        error: str | None = None
        at = now_rfc3339()
        try:
            with self._client.stream(
                "POST", delivery.url, content=delivery.body, headers=headers
            ) as response:
                status = response.status_code  # the body is never read
        except httpx.TimeoutException:
            error = f"timed out (PULLRUN_WEBHOOK_TIMEOUT: {self._timeout:g} s)"
        except Exception as exc:
            error = self._error_text(delivery.url, exc)
        self.settle(delivery, status, error, at)

    @staticmethod
    def _error_text(url: str, exc: Exception) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        text = text.replace(url, shown_url(url))
        user = urlsplit(url).netloc.rpartition("@")[0]
        if user:
            text = text.replace(user, REDACTED)
        return text[:MAX_ERROR_LENGTH]

    def settle(self, delivery: Delivery, status: int | None, error: str | None, at: str) -> None:
        """Record one attempt's outcome: delivered, failed, or due again later."""
        view = delivery.view
        with self._cond:
            self._in_flight -= 1
            view.attempts += 1
            view.last_attempt_at = at
            view.last_status = status
            view.last_error = error
            view.next_attempt_at = None
            again = status is None or retryable(status)
            if status is not None and 200 <= status < 300:
                view.status = "delivered"
            elif status is not None and 300 <= status < 400:
                view.last_error = "a redirect (not followed)"
                again = False
            elif status is not None and not again:
                view.last_error = f"HTTP {status}"
            if view.status == "pending" and again:
                delay = backoff(view.attempts)
                due = self._clock() + delay
                if (
                    view.attempts < self._max_attempts
                    and due <= delivery.deadline
                    and not self._closing
                ):
                    delivery.due = due
                    view.next_attempt_at = _iso(datetime.now(UTC) + timedelta(seconds=delay))
                    heapq.heappush(self._heap, (due, next(self._seq), delivery))
                    self._cond.notify_all()
                else:
                    view.status = "failed"
            elif view.status == "pending":
                view.status = "failed"
            run = self._runs.get(delivery.run_id)
            if view.status != "pending":
                view.finished_at = now_rfc3339()
                if run is not None:
                    run.pending -= 1
                    if run.pending == 0 and run.finished:
                        del self._runs[delivery.run_id]
            if view.status == "failed":
                log.warning(
                    "run %s: webhook %s (%s) failed after %d attempt(s): %s",
                    delivery.run_id,
                    view.url,
                    view.event,
                    view.attempts,
                    view.last_error,
                )
        if run is not None:
            self._publish(delivery.run_id, run)

    def _publish(self, run_id: str, run: _Run) -> None:
        with self._publishing:
            with self._cond:
                if self._closing and self._threads:
                    return
                deliveries = [d.model_copy() for d in run.deliveries]
            try:
                self._on_change(run_id, deliveries)
            except Exception:
                log.exception("run %s: could not record its webhook deliveries", run_id)

    def pending(self) -> int:
        with self._cond:
            return len(self._heap) + self._in_flight

    # -- life cycle --------------------------------------------------------------------

    def stop(self) -> None:
        """Stop: attempts due now (the `run.finished` of runs a shutdown just
        canceled) get up to STOP_WAIT seconds; deliveries still waiting then
        are recorded failed (not tried again)."""
        end = time.monotonic() + STOP_WAIT
        with self._cond:
            while self._threads and (
                self._in_flight or (self._heap and self._heap[0][0] <= self._clock())
            ):
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.05))
            waiting = [delivery for _, _, delivery in self._heap]
            self._heap.clear()
            for delivery in waiting:
                view = delivery.view
                view.status, view.next_attempt_at = "failed", None
                view.last_error = "the server stopped before it was delivered"
                view.finished_at = now_rfc3339()
            runs = {d.run_id: self._runs.get(d.run_id) for d in waiting}
        for run_id, run in runs.items():
            if run is not None:
                self._publish(run_id, run)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        end = time.monotonic() + STOP_WAIT
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        self._client.close()
