"""FastAPI dependency aliases."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request

from ..auth import Identity, Role
from ..auth.identity import OPEN_IDENTITY
from ..auth.service import AuthService
from ..engines.pool import EnginePool
from ..errors import Forbidden, Unauthorized
from ..runs.runner import Runner
from ..settings import Settings


def get_runner(request: Request) -> Runner:
    runner: Runner = request.app.state.runner
    return runner


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engines(request: Request) -> EnginePool:
    engines: EnginePool = request.app.state.engines
    return engines


EnginesDep = Annotated[EnginePool, Depends(get_engines)]
RunnerDep = Annotated[Runner, Depends(get_runner)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


# --- who is calling -------------------------------------------------------------

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"


def get_auth(request: Request) -> AuthService | None:
    """The app's AuthService (set by the lifespan); None before it ran."""
    auth: AuthService | None = getattr(request.app.state, "auth", None)
    return auth


def client_address(request: Request) -> str:
    """The client's address (a trusted proxy's X-Forwarded-For already applied
    by uvicorn: see PULLRUN_TRUSTED_PROXIES)."""
    return request.client.host if request.client else "unknown"


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthorized("the Authorization header must be `Bearer TOKEN`")
    return credentials.strip()


async def _check_csrf(request: Request, expected: str) -> None:
    """A state-changing request made with the session cookie must carry the
    session's CSRF token: header `X-CSRF-Token`, or the form field `csrf_token`."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden("missing or wrong CSRF token (send the X-CSRF-Token header)")


async def get_identity(request: Request) -> Identity:
    """The caller: a bearer token, else the session cookie; 401 when neither.

    With PULLRUN_AUTH=off everyone is the "open" identity (admin). Without an
    AuthService (the lifespan has not run) nobody gets in. Cached on
    `request.state` (with `request.state.session` for cookie requests).
    """
    cached: Identity | None = getattr(request.state, "identity", None)
    if cached is not None:
        return cached
    settings = get_settings(request)
    auth = get_auth(request)
    if settings.auth == "off":
        identity = OPEN_IDENTITY
    elif auth is None:
        raise Unauthorized("the server is not ready to sign anyone in")
    else:
        token = _bearer(request)
        if token is not None:
            found = auth.by_token(token)
            if found is None:
                raise Unauthorized("unknown, revoked or malformed API token")
            identity = found
        else:
            session = auth.by_session(request.cookies.get(auth.cookie_name))
            if session is None:
                raise Unauthorized(
                    "sign in: send `Authorization: Bearer TOKEN` or sign in at /login"
                )
            if request.method not in SAFE_METHODS:
                await _check_csrf(request, session.csrf_token)
            request.state.session = session
            identity = session.identity
    request.state.identity = identity
    return identity


def require(role: Role) -> Callable[[Request], Coroutine[Any, Any, Identity]]:
    """A dependency: the caller's Identity, 403 when its role does not allow `role`."""

    async def dependency(request: Request) -> Identity:
        identity = await get_identity(request)
        if not identity.allows(role):
            raise Forbidden(
                f"this needs the {role.value} role; {identity.name} is {identity.role.value}"
            )
        return identity

    dependency.__name__ = f"require_{role.value}"
    return dependency


class RequestAudit:
    """`audit("run.cancel", run_id)`: an audit entry by the caller, from its address."""

    def __init__(self, request: Request) -> None:
        self._request = request

    def __call__(
        self, action: str, target: str | None = None, *, outcome: str = "ok", detail: str = ""
    ) -> None:
        identity: Identity | None = getattr(self._request.state, "identity", None)
        auth = get_auth(self._request)
        if auth is None:
            return
        auth.audit.record(
            identity.name if identity else "anonymous",
            action,
            target,
            outcome=outcome,
            client=client_address(self._request),
            detail=detail or None,
        )


IdentityDep = Annotated[Identity, Depends(get_identity)]
ViewerDep = Annotated[Identity, Depends(require(Role.VIEWER))]
OperatorDep = Annotated[Identity, Depends(require(Role.OPERATOR))]
AdminDep = Annotated[Identity, Depends(require(Role.ADMIN))]
AuditDep = Annotated[RequestAudit, Depends(RequestAudit)]
