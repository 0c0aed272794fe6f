"""Waiting for a state, never for a time.

Tests wait for something to become true (a run's status, an event on a
stream, a count in /api/stats) and assert outcomes; the deadline only turns a
hang into a failure that names what was awaited, long before pytest's own
300 s timeout. Nothing here sleeps a fixed time and then checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import httpx

from tests.support.sse import Event, iter_events

T = TypeVar("T")

DEADLINE = 120.0  # seconds: generous; a busy machine is slow, never this slow
READ_TIMEOUT = 30.0  # seconds without a byte (keepalive comments count) on a stream
TERMINAL = ("succeeded", "failed", "canceled", "timed_out", "error")  # docs/api.md


class Deadline:
    """A point in time after which waiting for `what` is a failure."""

    def __init__(self, what: str, timeout: float = DEADLINE) -> None:
        self.what = what
        self.timeout = timeout
        self.end = time.monotonic() + timeout

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def fail(self, detail: str = "") -> AssertionError:
        extra = f" ({detail})" if detail else ""
        return AssertionError(f"gave up after {self.timeout:g} s waiting for {self.what}{extra}")

    def check(self, detail: str = "") -> None:
        if self.expired():
            raise self.fail(detail)

    def chunks(self, response: httpx.Response) -> Iterator[bytes]:
        """The raw body of a (streamed) response, failing once the deadline passes.

        Checked per chunk: a quiet SSE stream still sends keepalive comments,
        and a silent one ends in httpx's read timeout.
        """
        try:
            for chunk in response.iter_raw():
                self.check()
                yield chunk
        except httpx.TimeoutException as exc:
            raise AssertionError(f"nothing came while waiting for {self.what}: {exc!r}") from exc

    def events(self, response: httpx.Response) -> Iterator[Event]:
        """tests.support.sse.iter_events over `chunks`: the same strict parsing."""
        return iter_events(httpx.Response(200, stream=_Chunks(self.chunks(response))))


def events_of(body: bytes) -> list[Event]:
    """The events of a whole text/event-stream body (tests.support.sse's parsing)."""
    return list(iter_events(httpx.Response(200, stream=_Chunks(iter([body])))))


class _Chunks(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks


def wait_until(
    predicate: Callable[[], T | None], what: str, timeout: float = DEADLINE, interval: float = 0.05
) -> T:
    """Poll `predicate` until it returns something true, and return that.

    Raises AssertionError naming `what` (and the last value seen) after `timeout` s.
    """
    deadline = Deadline(what, timeout)
    while True:
        value = predicate()
        if value:
            return value
        if deadline.expired():
            raise deadline.fail(f"last: {value!r}")
        time.sleep(interval)


def wait_for_status(
    client: httpx.Client, run_id: str, statuses: str | Iterable[str], timeout: float = DEADLINE
) -> dict[str, Any]:
    """Poll GET /api/runs/{id} until the run's status is one of `statuses`; the record."""
    wanted = {statuses} if isinstance(statuses, str) else set(statuses)
    seen: list[str] = []

    def record() -> dict[str, Any] | None:
        got: dict[str, Any] = client.get(f"/api/runs/{run_id}").json()
        if not seen or seen[-1] != got["status"]:
            seen.append(got["status"])
        return got if got["status"] in wanted else None

    try:
        return wait_until(record, f"run {run_id} to be {' or '.join(sorted(wanted))}", timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; statuses seen: {seen}") from None


def collect(
    client: httpx.Client,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    until: str = "done",
    limit: int | None = None,
    timeout: float = DEADLINE,
) -> list[Event]:
    """Events from `url` until an event of type `until` (or `limit` events),
    within `timeout` s."""
    what = f"a `{until}` event from {url}" + (f" (or {limit} events)" if limit else "")
    deadline = Deadline(what, timeout)
    events: list[Event] = []
    with client.stream(
        "GET", url, headers=headers, params=params, timeout=httpx.Timeout(READ_TIMEOUT)
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in deadline.events(response):
            events.append(event)
            if event.type == until or (limit is not None and len(events) >= limit):
                return events
    raise AssertionError(f"{url} ended without {what}: {[e.type for e in events][-10:]}")
