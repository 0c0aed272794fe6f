"""A run's snapshot and its earlier lines, by number, for the run page.

`GET /api/runs/{run_id}/snapshot` is what the run page embeds (web/snapshot.py:
the run's state and its newest lines); `GET /api/runs/{run_id}/lines` pages
back from there ("load earlier"). Both go through the run's event index, so
their cost is that of the lines asked for, never of the whole log. The
contract is in docs/api.md. A viewer reads them, as the event stream.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from ..models import ErrorResponse
from .deps import RunnerDep, ViewerDep
from .pages import TAIL_LINES
from .snapshot import lines_before, tail_snapshot

router = APIRouter()

MAX_LINES = 5000  # lines per page at most
MAX_LINE_NUMBER = 2**53  # larger than any run's (and exact in JSON)

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown run"},
    422: {"model": ErrorResponse, "description": "Invalid input: names the field and the rule"},
}


class LogLine(BaseModel):
    n: int = Field(description="The line's number in the run (1, 2, 3... across streams).")
    stream: str = Field(description="`stdout`, `stderr`, or `tty` (a run with a terminal).")
    text: str = Field(description="Its text, cut at 1,000,001 characters (the download has all).")
    partial: bool = Field(description="Still open: the run has not ended it yet.")
    at: str | None = Field(description="When it was read (RFC 3339); null in older logs.")


class LinesPage(BaseModel):
    lines: list[LogLine] = Field(description="Oldest first.")
    first: int = Field(description="The number of the oldest line returned (`before` when none).")
    earlier: bool = Field(description="Lines numbered below `first` exist.")


class RunSnapshot(BaseModel):
    last_event_id: int = Field(description="Subscribe with ?after= this id: nothing is missed.")
    status: str | None
    status_at: dict[str, str] = Field(description="When it entered each status (RFC 3339).")
    layers: list[dict[str, Any]] = Field(description="The pull's layers, as the page shows them.")
    pull_overall: dict[str, Any] | None
    pull_error: str | None
    notices: list[str]
    lines: list[LogLine] = Field(description="The newest lines (1,000 at most), oldest first.")
    total_lines: int = Field(description="The highest line number so far.")
    first_line: int = Field(description="The oldest line's number (total_lines + 1 when none).")
    earlier: bool = Field(description="Lines numbered below first_line exist.")
    done: dict[str, Any] | None = Field(description="The `done` event's data, once ended.")


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


@router.get(
    "/api/runs/{run_id}/snapshot",
    response_model=None,
    responses={200: {"model": RunSnapshot}, **_ERRORS},
)
def get_snapshot(run_id: str, runner: RunnerDep, _: ViewerDep) -> Response:
    """The run's state as of its last event and its newest lines (what the run page shows)."""
    snapshot = tail_snapshot(runner.events(run_id), tail_lines=TAIL_LINES)
    return _json(snapshot.as_dict(line_objects=True))


@router.get(
    "/api/runs/{run_id}/lines",
    response_model=None,
    responses={200: {"model": LinesPage}, **_ERRORS},
)
def get_lines(
    run_id: str,
    runner: RunnerDep,
    _: ViewerDep,
    before: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_LINE_NUMBER,
            description="Only lines numbered below this (default: all, from the newest).",
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LINES, description="Lines at most (fewer past 4,000,000 chars).")
    ] = 1000,
) -> Response:
    """The newest `limit` lines numbered below `before`, oldest first: page
    back with `before` = the `first` of the last answer while `earlier`."""
    log = runner.events(run_id)
    if before is None:
        before = log.total_lines + 1
    lines, first, earlier = lines_before(log, before, limit)
    return _json({"lines": lines, "first": first, "earlier": earlier})  # (Lines: dataclasses)
