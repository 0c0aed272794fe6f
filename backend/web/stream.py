"""Server-Sent Events routes: one run's events, and the run-change feed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from sse_starlette import EventSourceResponse

from ..models import ErrorResponse
from .connections import LimitedEventSource, StreamLimitsDep
from .deps import RunnerDep, SettingsDep, ViewerDep

router = APIRouter()


_SSE = {"content": {"text/event-stream": {}}, "description": "The event stream (docs/api.md)."}
MAX_EVENT_ID = 64  # ids are `N` or `<boot>-<n>`: anything longer is not one of ours
_LIMITED = "Too many event streams open (in all, or of this identity); see Retry-After"


def _resume_point(header: str | None, query: int | None) -> int:
    """The header wins over the query (an EventSource reconnect sends it)."""
    if header is not None:
        try:
            return max(0, int(header.strip()))
        except ValueError:
            return 0
    return max(0, query or 0)


@router.get(
    "/api/runs/{run_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: _SSE,
        204: {"description": "Already saw `done`"},
        404: {"model": ErrorResponse},
        429: {"model": ErrorResponse, "description": _LIMITED},
    },
)
async def run_events(
    run_id: str,
    runner: RunnerDep,
    settings: SettingsDep,
    identity: ViewerDep,
    limits: StreamLimitsDep,
    after: Annotated[int | None, Query(ge=0, description="Only events after this id.")] = None,
    last_event_id: Annotated[str | None, Header(max_length=MAX_EVENT_ID)] = None,
) -> Response:
    # Off the loop: a finished run's log is indexed from its file on first use.
    log = await asyncio.to_thread(runner.events, run_id)
    cursor = _resume_point(last_event_id, after)
    if log.finished and cursor >= log.last_id:
        return Response(status_code=204)

    return LimitedEventSource(
        runner.subscribers.track(log.follow(cursor)),
        limits.acquire(identity),  # 429 past the stream limits
        ping=settings.keepalive,
        send_timeout=30,
        sep="\n",
    )


@router.get(
    "/api/events",
    response_class=EventSourceResponse,
    responses={200: _SSE, 429: {"model": ErrorResponse, "description": _LIMITED}},
)
async def run_feed(
    runner: RunnerDep,
    settings: SettingsDep,
    identity: ViewerDep,
    limits: StreamLimitsDep,
    last_event_id: Annotated[str | None, Header(max_length=MAX_EVENT_ID)] = None,
) -> EventSourceResponse:
    """`run` events for every run created or changed; `reset` when history was lost."""

    async def feed() -> AsyncIterator[bytes]:
        # A comment first: the subscriber knows at once that the feed is open,
        # even when no run changes for a while.
        yield b": run feed\n\n"
        async for chunk in runner.feed.follow(last_event_id):
            yield chunk

    slot = limits.acquire(identity)  # 429 past the stream limits
    return LimitedEventSource(
        runner.feed_subscribers.track(feed()),
        slot,
        ping=settings.keepalive,
        send_timeout=30,
        sep="\n",
    )
