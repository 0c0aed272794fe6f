"""create_app(settings) -> FastAPI; the lifespan starts and stops the runner."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sse_starlette.sse import AppStatus
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..auth.audit import RETENTION_ACTOR
from ..auth.mode import refuse_auth_off
from ..auth.service import AuthService
from ..auth.store import AuthStore
from ..engines import DockerEngine, EngineConfig, EngineFactory, load_engines
from ..engines.pool import EnginePool, probe_of
from ..engines.swarm import SwarmEngine
from ..errors import PolicyViolation, PullrunError, TooManyRequests, Unauthorized
from ..runs.runner import Runner
from ..settings import Settings
from ..storage.eventlog import RunFeed
from ..storage.store import RunStore
from . import admin, api, docs, lines, metrics, pages, security, signin, stream
from .connections import StreamLimits, raise_open_file_limit

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parents[2] / "static"
PROBE_TIMEOUT = 5  # seconds a health check waits for an engine


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


def _text(value: object) -> str:
    """Text that can be sent: a lone surrogate (from JSON's \\ud800) escaped."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def _field_name(loc: tuple[object, ...]) -> str:
    parts = [_text(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PullrunError)
    async def pullrun_error(request: Request, exc: PullrunError) -> Response:
        if isinstance(exc, Unauthorized) and signin.wants_sign_in_page(request):
            return signin.redirect_to_login(request)
        extra = {"fields": exc.fields} if isinstance(exc, PolicyViolation) else {}
        response = _error_response(request, exc.status_code, exc.code, exc.message, **extra)
        if isinstance(exc, Unauthorized):
            response.headers["WWW-Authenticate"] = 'Bearer realm="pullrun"'
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        fields = []
        for err in exc.errors():
            rule = _text(err.get("msg", "invalid")).removeprefix("Value error, ")
            fields.append({"field": _field_name(tuple(err.get("loc", ()))), "message": rule})
        message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        await api.audit_refused_start(request, message)
        return _error_response(request, 422, "invalid_request", message, fields=fields)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_response(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        # Starlette's ServerErrorMiddleware calls this for an exception no other
        # handler took, then re-raises it: the server logs the traceback; the
        # client gets the one error shape and no trace (SecuredApp adds the headers).
        message = "internal error: see the server log"
        try:
            return _error_response(request, 500, "internal_error", message)
        except Exception:  # the error page itself failed: plain JSON
            return JSONResponse(
                {"error": {"code": "internal_error", "message": message}}, status_code=500
            )


def engine_parts(
    settings: Settings,
    engine_factory: EngineFactory | None = None,
    engines: Sequence[tuple[EngineConfig, EngineFactory]] | None = None,
) -> list[tuple[EngineConfig, EngineFactory, EngineFactory]]:
    """The engines to drive, each with its run and health-check factories:
    `engines` as given (tests), else the engines file (or the single `local`
    engine), each reached by `engine_factory` (tests) or a `DockerEngine` of
    its own config."""
    if engines is not None:
        return [(config, factory, probe_of(factory)) for config, factory in engines]
    configs = load_engines(settings.engines_file, settings.max_concurrent_runs)
    if engine_factory is not None:
        return [(config, engine_factory, probe_of(engine_factory)) for config in configs]
    parts: list[tuple[EngineConfig, EngineFactory, EngineFactory]] = []
    for config in configs:
        kind = SwarmEngine if config.kind == "swarm" else DockerEngine
        parts.append(
            (
                config,
                functools.partial(kind, config),
                functools.partial(kind, config, timeout=PROBE_TIMEOUT),
            )
        )
    return parts


def create_app(
    settings: Settings | None = None,
    engine_factory: EngineFactory | None = None,
    *,
    engines: Sequence[tuple[EngineConfig, EngineFactory]] | None = None,
) -> FastAPI:
    """The app. A bad engines file raises `EnginesFileError` here, before
    anything starts."""
    settings = settings or Settings()
    refused = refuse_auth_off(settings.auth, settings.host)
    if refused:
        raise RuntimeError(refused)
    parts = engine_parts(settings, engine_factory, engines)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Whatever the process creates while it serves is private to its user:
        # the data dir 0700, its files (both databases, their -wal/-shm, event
        # logs) 0600, even where a module does not set a mode itself.
        umask = os.umask(0o077)
        try:  # before anything opens: the open files the stream limits need
            raise_open_file_limit(settings)
        except RuntimeError as exc:
            log.critical("pullrun cannot start: %s", exc)
            raise
        auth = AuthService(
            AuthStore(settings.auth_db_path),
            required=settings.auth == "required",
            session_idle_timeout=settings.session_idle_timeout,
            session_max_age=settings.session_max_age,
            max_failures=settings.signin_max_failures,
            failure_window=settings.signin_window,
        )
        auth.sessions.purge()
        loop = asyncio.get_running_loop()
        store = RunStore(settings.db_path)
        feed = RunFeed(boot=secrets.token_hex(4))

        def audit_expired(run_id: str, why: str) -> None:
            auth.audit.record(RETENTION_ACTOR, "run.delete", run_id, detail=why)

        pool = EnginePool(parts, interval=settings.engine_check_interval)
        app.state.engines = pool
        runner = Runner(
            settings,
            store,
            feed,
            loop,
            pool,
            on_expire=audit_expired,
        )
        recovered = runner.recover()
        if recovered:
            log.warning("recovered %d unfinished run(s): %s", len(recovered), recovered)
        app.state.runner = runner
        app.state.auth = auth
        try:
            yield
        finally:
            await runner.shutdown()
            store.close()
            auth.close()
            os.umask(umask)

    # sse-starlette logs every chunk it sends at debug level: that would copy
    # every run's output (whatever it holds) into the server log.
    logging.getLogger("sse_starlette").setLevel(max(logging.INFO, log.getEffectiveLevel()))
    # We end run streams ourselves (each ends after its `done`), so sse-starlette
    # must not cut them at the first signal: see web/server.py, Server.handle_exit.
    AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]
    # SecuredApp: the security headers on every answer, a 500 included.
    app = security.SecuredApp(
        title="pullrun",
        summary="Pull and run containers; live pull progress and logs over SSE.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served by docs.router, self-hosted (no CDN, no inline script)
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.stream_limits = StreamLimits.from_settings(settings)
    install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(stream.router)
    app.include_router(lines.router)
    app.include_router(pages.router)
    app.include_router(signin.router)
    app.include_router(admin.router)
    app.include_router(metrics.router)
    signin.install_openapi_auth(app)
    app.include_router(docs.router)  # before /static: it serves /static/swagger-ui/
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    security.install(app, settings)
    return app
