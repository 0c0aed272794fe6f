"""REST routes under /api, plus /healthz and /readyz."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from ..auth import Identity, Role
from ..engines import engine_message
from ..errors import EngineUnavailable, Forbidden, PolicyDenied, PolicyViolation, PullrunError
from ..models import EngineList, EngineView, ErrorResponse, RunCreate, RunList, RunRecord, RunStatus
from ..runs.policy import redact
from ..storage.logtext import log_text
from .deps import (
    AuditDep,
    EnginesDep,
    OperatorDep,
    RequestAudit,
    RunnerDep,
    ViewerDep,
    get_identity,
)

log = logging.getLogger(__name__)
router = APIRouter()
READY_TIMEOUT = 5.0

_ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorResponse, "description": "Unknown run"},
    409: {"model": ErrorResponse, "description": "Not allowed in the run's current state"},
    422: {"model": ErrorResponse, "description": "Invalid input: names the field and the rule"},
}

# OpenAPI links of a new run (201): where its `id` goes next. Swagger UI shows
# them and schemathesis' stateful tests follow them (tests/integration/test_fuzz.py).
# The operation ids are FastAPI's (function name, path, method);
# tests/unit/test_openapi_links.py checks that each names an operation.
_RUN_LINKS = {
    name: {
        "operationId": operation_id,
        "parameters": {"run_id": "$response.body#/id"},
        "description": description,
    }
    for name, operation_id, description in (
        ("GetRun", "get_run_api_runs__run_id__get", "The run, as it is now"),
        ("CancelRun", "cancel_run_api_runs__run_id__cancel_post", "Cancel the run"),
        ("DeleteRun", "delete_run_api_runs__run_id__delete", "Delete the run once it ended"),
        ("GetRunLogs", "get_logs_api_runs__run_id__logs_get", "The run's log as text"),
    )
}


@router.post(
    "/api/runs",
    status_code=201,
    response_model=RunRecord,
    responses={
        201: {"description": "The run, accepted; `Location` is its URL", "links": _RUN_LINKS},
        403: {
            "model": ErrorResponse,
            "description": "`policy_denied`: the image is not allowed (PULLRUN_ALLOWED_IMAGES)",
        },
        422: {
            "model": ErrorResponse,
            "description": "Invalid input, an input limit or a run policy limit: names the field "
            "and the rule",
        },
        429: {"model": ErrorResponse, "description": "The queue is full"},
        503: {"model": ErrorResponse, "description": "Shutting down"},
    },
)
def create_run(
    body: RunCreate, runner: RunnerDep, response: Response, identity: OperatorDep, audit: AuditDep
) -> RunRecord:
    """Accept a run at once; follow it on its `events` link."""
    try:
        record = runner.submit(body, created_by=identity.name)
    except (PolicyDenied, PolicyViolation) as exc:
        audit("run.start", outcome="denied", detail=f"{body.image}: {exc.message}")
        raise
    audit("run.start", record.id, detail=record.spec.image)
    response.headers["Location"] = record.links.self
    return record


async def audit_refused_start(request: Request, message: str) -> None:
    """A run start refused by validation (the 422 handler's: the body never
    reached `create_run`): an audit entry `run.start` `denied`, when the caller
    is one who may start runs (an anonymous or viewer caller is not audited)."""
    if request.method != "POST" or request.url.path != "/api/runs":
        return
    try:
        identity = await get_identity(request)
    except PullrunError:
        return
    if identity.allows(Role.OPERATOR):
        RequestAudit(request)("run.start", outcome="denied", detail=message)


def _statuses(values: list[str] | None) -> list[RunStatus] | None:
    """`?status=a&status=b` or `?status=a,b`: the statuses, or a 422 naming a wrong one."""
    statuses: list[RunStatus] = []
    for value in values or []:
        for name in value.split(","):
            try:
                statuses.append(RunStatus(name.strip()))
            except ValueError:
                known = ", ".join(s.value for s in RunStatus)
                message = f"no status {name.strip()[:40]!r} (one of {known})"
                raise RequestValidationError(
                    [{"loc": ("query", "status"), "msg": message, "type": "value_error"}]
                ) from None
    return statuses or None


@router.get("/api/runs", response_model=RunList)
def list_runs(
    runner: RunnerDep,
    identity: ViewerDep,
    status: Annotated[
        list[str] | None,
        Query(
            max_length=200,
            description="Only these statuses (repeat or comma-separate): "
            + ", ".join(s.value for s in RunStatus),
        ),
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=64, description="`next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RunList:
    """Runs, newest first."""
    runs, next_cursor = runner.page(_statuses(status), cursor, limit)
    return RunList(runs=[redact(run, identity) for run in runs], next_cursor=next_cursor)


@router.get("/api/runs/{run_id}", response_model=RunRecord, responses={404: _ERRORS[404]})
def get_run(run_id: str, runner: RunnerDep, identity: ViewerDep) -> RunRecord:
    """The run; `env` values only for its creator and admins (others see `***`)."""
    return redact(runner.get(run_id), identity)


@router.post(
    "/api/runs/{run_id}/cancel",
    status_code=202,
    response_model=RunRecord,
    responses={404: _ERRORS[404], 409: _ERRORS[409]},
)
def cancel_run(run_id: str, runner: RunnerDep, identity: OperatorDep, audit: AuditDep) -> RunRecord:
    """Cancel in any phase; the run ends with `done` status `canceled`.
    Operators may cancel only the runs they started."""
    _check_owner(identity, runner.get(run_id).created_by, audit, "run.cancel", run_id)
    record = runner.cancel(run_id)
    audit("run.cancel", run_id)
    return redact(record, identity)


@router.delete(
    "/api/runs/{run_id}", status_code=204, responses={404: _ERRORS[404], 409: _ERRORS[409]}
)
def delete_run(run_id: str, runner: RunnerDep, identity: OperatorDep, audit: AuditDep) -> Response:
    """Remove a finished run: its record, its log and any container left.
    Operators may delete only the runs they started."""
    _check_owner(identity, runner.get(run_id).created_by, audit, "run.delete", run_id)
    runner.delete(run_id)
    audit("run.delete", run_id)
    return Response(status_code=204)


@router.get(
    "/api/runs/{run_id}/logs",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {}}}, 404: _ERRORS[404]},
)
def get_logs(
    run_id: str,
    runner: RunnerDep,
    _: ViewerDep,
    stream: Annotated[
        Literal["stdout", "stderr", "tty"] | None,
        Query(description="Only this stream's lines (`tty` for a run with a terminal)."),
    ] = None,
    timestamps: Annotated[
        bool,
        Query(description="Start each line with the time it was read and a space (RFC 3339)."),
    ] = False,
) -> StreamingResponse:
    """The full log as text, one line per line (also while the run is going)."""
    record = runner.get(run_id)
    return StreamingResponse(
        log_text(
            runner.settings.events_file(run_id),
            stream,
            timestamps=timestamps,
            default_at=record.created_at,
        ),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'inline; filename="pullrun-{record.id}.log"'},
    )


@router.get("/api/stats")
def stats(runner: RunnerDep, _: ViewerDep) -> dict[str, int]:
    """Live counters: runs in flight, runs queued, open event streams, threads."""
    return {
        "active_runs": runner.active,
        "queued_runs": runner.queued,
        "subscribers": runner.subscribers.open + runner.feed_subscribers.open,
        "threads": threading.active_count(),
    }


@router.get("/api/engines", response_model=EngineList)
def list_engines(runner: RunnerDep, _: ViewerDep) -> EngineList:
    """The engines runs are placed on: state, version, platform, load."""
    return EngineList(
        engines=[
            EngineView.model_validate(handle.view(runner.queued_for(handle)))
            for handle in runner.engines
        ]
    )


def _check_owner(
    identity: Identity, created_by: str | None, audit: AuditDep, action: str, run_id: str
) -> None:
    if not identity.can_manage(created_by):
        audit(action, run_id, outcome="denied")
        raise Forbidden(f"run {run_id} was started by someone else; only they or an admin may")


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorResponse}})
async def readyz(request: Request, engines: EnginesDep) -> JSONResponse:
    """An engine answers (the first that does, in the engines file's order).
    Open to anyone, so it tells anyone only that: the engine's version and its
    error come to signed-in callers alone."""
    try:
        await get_identity(request)
        detailed = True
    except PullrunError:
        detailed = False

    def ping() -> dict[str, str]:
        failure: Exception | None = None
        for handle in engines:
            try:
                with handle.factory() as engine:
                    version = engine.version()
            except Exception as exc:
                failure = failure or exc
                continue
            return {
                "status": "ok",
                "engine": str(version.get("Version")),
                "api": str(version.get("ApiVersion")),
            }
        assert failure is not None
        if len(engines) > 1:
            raise EngineUnavailable(f"no engine answers ({engine_message(failure)})")
        raise failure

    try:
        answer = await asyncio.wait_for(asyncio.to_thread(ping), READY_TIMEOUT)
        return JSONResponse(answer if detailed else {"status": "ok"})
    except PullrunError as exc:
        message = exc.message
    except TimeoutError:
        message = f"the engine did not answer within {READY_TIMEOUT:g}s"
    except Exception as exc:
        message = engine_message(exc)
    if not detailed:
        log.warning("/readyz: the engine does not answer: %s", message)
        message = "the engine does not answer (sign in for details)"
    return JSONResponse(
        {"error": {"code": "engine_unavailable", "message": message}}, status_code=503
    )
