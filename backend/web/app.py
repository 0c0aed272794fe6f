"""create_app(settings) -> FastAPI; the lifespan starts and stops the runner."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sse_starlette.sse import AppStatus
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engines import DockerEngine, EngineFactory
from ..errors import PullrunError
from ..runs.runner import Runner
from ..settings import Settings
from ..storage.eventlog import RunFeed
from ..storage.store import RunStore
from . import api, pages, stream

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parents[2] / "static"


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api") or "text/html" not in request.headers.get(
        "accept", ""
    )


def _error_response(
    request: Request, status: int, code: str, message: str, **extra: object
) -> Response:
    if _wants_json(request):
        return JSONResponse(
            {"error": {"code": code, "message": message, **extra}}, status_code=status
        )
    return pages.templates.TemplateResponse(
        request, "error.html", {"status": status, "message": message}, status_code=status
    )


def _field_name(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PullrunError)
    async def pullrun_error(request: Request, exc: PullrunError) -> Response:
        return _error_response(request, exc.status_code, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        fields = []
        for err in exc.errors():
            rule = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            fields.append({"field": _field_name(tuple(err.get("loc", ()))), "message": rule})
        message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return _error_response(request, 422, "invalid_request", message, fields=fields)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_response(request, exc.status_code, code, str(exc.detail))


def create_app(
    settings: Settings | None = None, engine_factory: EngineFactory = DockerEngine
) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        store = RunStore(settings.db_path)
        feed = RunFeed(boot=secrets.token_hex(4))
        runner = Runner(settings, store, feed, loop, engine_factory)
        recovered = runner.recover()
        if recovered:
            log.warning("marked %d interrupted run(s) as error: %s", len(recovered), recovered)
        app.state.runner = runner
        try:
            yield
        finally:
            await runner.shutdown()
            store.close()

    # We end run streams ourselves (each ends after its `done`), so sse-starlette
    # must not cut them at the first signal: see cli.Server.handle_exit.
    AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]
    app = FastAPI(
        title="pullrun",
        summary="Pull and run containers; live pull progress and logs over SSE.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine_factory = engine_factory
    install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(stream.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
