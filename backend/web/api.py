"""REST routes under /api, plus /healthz and /readyz."""

from __future__ import annotations

import asyncio
import threading
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse

from ..engines import engine_message
from ..errors import PullrunError
from ..models import ErrorResponse, RunCreate, RunList, RunRecord, RunStatus
from ..storage.logtext import log_text
from .deps import EngineFactoryDep, RunnerDep

router = APIRouter()
READY_TIMEOUT = 5.0

_ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorResponse, "description": "Unknown run"},
    409: {"model": ErrorResponse, "description": "Not allowed in the run's current state"},
    422: {"model": ErrorResponse, "description": "Invalid input: names the field and the rule"},
}


@router.post(
    "/api/runs",
    status_code=201,
    response_model=RunRecord,
    responses={
        422: _ERRORS[422],
        429: {"model": ErrorResponse, "description": "The queue is full"},
        503: {"model": ErrorResponse, "description": "Shutting down"},
    },
)
def create_run(body: RunCreate, runner: RunnerDep, response: Response) -> RunRecord:
    """Accept a run at once; follow it on its `events` link."""
    record = runner.submit(body)
    response.headers["Location"] = record.links.self
    return record


@router.get("/api/runs", response_model=RunList)
def list_runs(
    runner: RunnerDep,
    status: Annotated[
        list[RunStatus] | None, Query(description="Only these statuses (repeat or comma-separate).")
    ] = None,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RunList:
    """Runs, newest first."""
    runs, next_cursor = runner.page(status, cursor, limit)
    return RunList(runs=runs, next_cursor=next_cursor)


@router.get("/api/runs/{run_id}", response_model=RunRecord, responses={404: _ERRORS[404]})
def get_run(run_id: str, runner: RunnerDep) -> RunRecord:
    return runner.get(run_id)


@router.post(
    "/api/runs/{run_id}/cancel",
    status_code=202,
    response_model=RunRecord,
    responses={404: _ERRORS[404], 409: _ERRORS[409]},
)
def cancel_run(run_id: str, runner: RunnerDep) -> RunRecord:
    """Cancel in any phase; the run ends with `done` status `canceled`."""
    return runner.cancel(run_id)


@router.delete(
    "/api/runs/{run_id}", status_code=204, responses={404: _ERRORS[404], 409: _ERRORS[409]}
)
def delete_run(run_id: str, runner: RunnerDep) -> Response:
    """Remove a finished run: its record, its log and any container left."""
    runner.delete(run_id)
    return Response(status_code=204)


@router.get(
    "/api/runs/{run_id}/logs",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {}}}, 404: _ERRORS[404]},
)
def get_logs(
    run_id: str,
    runner: RunnerDep,
    stream: Literal["stdout", "stderr", "tty"] | None = None,
) -> StreamingResponse:
    """The full log as text, one line per line (also while the run is going)."""
    record = runner.get(run_id)
    return StreamingResponse(
        log_text(runner.settings.events_file(run_id), stream),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'inline; filename="pullrun-{record.id}.log"'},
    )


@router.get("/api/stats")
def stats(runner: RunnerDep) -> dict[str, int]:
    """Live counters: runs in flight, runs queued, open event streams, threads."""
    return {
        "active_runs": runner.active,
        "queued_runs": runner.queued,
        "subscribers": runner.subscribers.open + runner.feed_subscribers.open,
        "threads": threading.active_count(),
    }


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorResponse}})
async def readyz(engine_factory: EngineFactoryDep) -> JSONResponse:
    """The engine answers."""

    def ping() -> dict[str, str]:
        with engine_factory() as engine:
            version = engine.version()
        return {
            "status": "ok",
            "engine": str(version.get("Version")),
            "api": str(version.get("ApiVersion")),
        }

    try:
        return JSONResponse(await asyncio.wait_for(asyncio.to_thread(ping), READY_TIMEOUT))
    except PullrunError as exc:
        message = exc.message
    except TimeoutError:
        message = f"the engine did not answer within {READY_TIMEOUT:g}s"
    except Exception as exc:
        message = engine_message(exc)
    return JSONResponse(
        {"error": {"code": "engine_unavailable", "message": message}}, status_code=503
    )
