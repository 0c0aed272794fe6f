"""The server's API over HTTP (httpx) and its event streams (httpx-sse),
resumed with `Last-Event-ID` when a connection drops."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

DEFAULT_URL = "http://127.0.0.1:8000"
RECONNECT_FOR = 120.0  # seconds a dropped stream is retried before giving up
TIMEOUT = httpx.Timeout(30.0, read=60.0)  # the server sends a keepalive every 15 s


class ApiError(Exception):
    """An error answer (`{"error": {"code", "message", "fields"}}`) or no answer."""

    def __init__(self, status: int | None, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    data: dict[str, Any]


def _error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()["error"]
        message = str(body["message"])
        fields = body.get("fields") or []
        detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        if detail and detail not in message:
            message += f" ({detail})"
        code = str(body["code"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", f"HTTP {response.status_code}"
    if response.status_code == 401:
        message += " (set PULLRUN_TOKEN or --token)"
    return ApiError(response.status_code, code, message)


class Api:
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("PULLRUN_URL") or DEFAULT_URL).rstrip("/")
        token = token or os.environ.get("PULLRUN_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=self.url, headers=headers, timeout=TIMEOUT, transport=transport
        )

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(None, "unreachable", f"cannot reach {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise _error(response)
        return response

    def create_run(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", "/api/runs", json=body).json())

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/runs/{run_id}").json())

    def runs(self, statuses: list[str], limit: int, cursor: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"status": statuses, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        return dict(self.request("GET", "/api/runs", params=params).json())

    def cancel(self, run_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/api/runs/{run_id}/cancel").json())

    def delete(self, run_id: str) -> None:
        self.request("DELETE", f"/api/runs/{run_id}")

    def run_events(
        self, run_id: str, after: int = 0, on_retry: Callable[[str], None] | None = None
    ) -> Iterator[Event]:
        """The run's events after `after`, through `done` (none after it)."""
        for event in self._stream(f"/api/runs/{run_id}/events", str(after or ""), on_retry):
            yield event
            if event.type == "done":
                return

    def feed(self, on_retry: Callable[[str], None] | None = None) -> Iterator[Event]:
        """The global run-change feed, live, for ever."""
        return self._stream("/api/events", "", on_retry)

    def _stream(
        self, path: str, last_id: str, on_retry: Callable[[str], None] | None
    ) -> Iterator[Event]:
        """Events from `path`; a dropped connection is reopened with
        `Last-Event-ID`, so nothing is missed and nothing comes twice."""
        failing_since: float | None = None
        delay = 0.2
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with connect_sse(self.http, "GET", path, headers=headers) as source:
                    response = source.response
                    if response.status_code == 204:  # `done` was seen already
                        return
                    if response.status_code >= 400:
                        response.read()
                        error = _error(response)
                        if response.status_code not in (429, 503):
                            raise error
                        raise httpx.TransportError(error.message)
                    failing_since, delay = None, 0.2
                    for sse in source.iter_sse():
                        if sse.id:
                            last_id = sse.id
                        if not sse.event or sse.event == "message":
                            continue
                        yield Event(sse.id, sse.event, json.loads(sse.data) if sse.data else {})
                    # The server ends a run's stream only after `done`; the feed
                    # never: either way an end here is a dropped connection.
                    raise httpx.RemoteProtocolError("the stream ended")
            except (httpx.TransportError, SSEError) as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > RECONNECT_FOR:
                    raise ApiError(None, "unreachable", f"lost {self.url}: {exc}") from exc
                if on_retry is not None and failing_since == now:  # once per outage
                    on_retry(f"connection lost ({exc}); resuming after event {last_id or 0}")
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
