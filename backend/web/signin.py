"""Sign-in for browsers: the /login page (a password or an API token), the
session cookie, sign out, and the redirect of pages to /login and back.

The page is a plain HTML form (it works without JavaScript); its script
(static/js/login.js) only reads a token from the URL fragment
(`/login#token=...`, the link the first start prints), which browsers never
send to the server, and submits the form with it.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi import routing as fastapi_routing
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from ..auth.service import AuthService
from ..auth.sessions import COOKIE_NAME
from ..errors import Unauthorized
from .deps import CSRF_FIELD, IdentityDep, client_address, get_auth, get_settings
from .pages import templates

router = APIRouter(include_in_schema=False)

LOGIN_PATH = "/login"
_FIELD_MAX = 1024  # characters kept of each form field (longer never signs in)


def safe_next(value: str | None) -> str:
    """A local path to go back to after signing in; "/" for anything else
    (another site, a scheme, `//host`, backslashes, control characters)."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return "/"
    if "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or value.startswith(LOGIN_PATH):
        return "/"
    return value


def wants_sign_in_page(request: Request) -> bool:
    """An unauthenticated page request is sent to /login; /api (and /metrics,
    for a scraper) gets a 401."""
    path = request.url.path
    machine = path.startswith("/api") or path == "/metrics"
    return request.method in ("GET", "HEAD") and not machine


def redirect_to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='')}", status_code=303)


def auth_context(request: Request) -> dict[str, Any]:
    """For templates/base.html: who is signed in, and the session's CSRF token."""
    session = getattr(request.state, "session", None)
    return {
        "identity": getattr(request.state, "identity", None),
        "csrf": session.csrf_token if session is not None else None,
    }


templates.env.globals["auth_of"] = auth_context


def _service(request: Request) -> AuthService:
    auth = get_auth(request)
    if auth is None:
        raise Unauthorized("the server is not ready to sign anyone in")
    return auth


def _page(request: Request, next_path: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("error", None)
    context.setdefault("username", "")
    return templates.TemplateResponse(
        request, "login.html", {"next": next_path, **context}, status_code=status
    )


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    next_path = safe_next(request.query_params.get("next"))
    if get_settings(request).auth == "off":
        return RedirectResponse(next_path, status_code=303)
    return _page(request, next_path)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    settings = get_settings(request)
    form = await request.form()

    def field(name: str) -> str:
        value = form.get(name)
        return value.strip()[:_FIELD_MAX] if isinstance(value, str) else ""

    next_path = safe_next(field("next"))
    if settings.auth == "off":
        return RedirectResponse(next_path, status_code=303)
    auth = _service(request)
    username = field("username")
    # Off the loop: a password check takes tens of milliseconds (argon2id).
    result = await asyncio.to_thread(
        auth.sign_in, username, field("password"), field("token"), client_address(request)
    )
    if result.session_id is None:
        status = 429 if result.retry_after else 401
        page = _page(request, next_path, status, error=result.error, username=username)
        if result.retry_after:
            page.headers["Retry-After"] = str(result.retry_after)
        return page
    # A new session every time (never one chosen before signing in); the old one ends.
    auth.sessions.end(request.cookies.get(auth.cookie_name))
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        auth.cookie_name,
        result.session_id,
        max_age=int(settings.session_max_age),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="lax",
    )
    return response


@router.post("/logout")
def logout(request: Request, identity: IdentityDep) -> Response:
    """Sign out (a form with the session's `csrf_token`, or X-CSRF-Token)."""
    auth = get_auth(request)
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    if auth is not None and identity.via == "session":
        auth.sign_out(request.cookies.get(auth.cookie_name), identity, client_address(request))
        response.delete_cookie(
            auth.cookie_name,
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="lax",
        )
    return response


def needed_role(route: BaseRoute) -> str | None:
    """The role a route requires ("viewer", "operator", "admin", "any" for
    IdentityDep), or None for an open route: read from its dependencies."""
    if not isinstance(route, APIRoute):
        return None
    found: list[str] = []

    def walk(dependant: Any) -> None:
        for dep in dependant.dependencies:
            name = getattr(dep.call, "__name__", "")
            if name.startswith("require_"):
                found.append(name.removeprefix("require_"))
            elif name == "get_identity":
                found.append("any")
            walk(dep)

    walk(route.dependant)
    order = ["admin", "operator", "viewer", "any"]
    return min(found, key=order.index) if found else None


def flat_routes(app: FastAPI) -> list[tuple[BaseRoute, str | None, set[str]]]:
    """(route, path, methods) of every route of the app, included routers
    flattened (FastAPI >= 0.16x keeps included routers as one entry each)."""
    iter_contexts = getattr(fastapi_routing, "iter_route_contexts", None)
    out: list[tuple[BaseRoute, str | None, set[str]]] = []
    if iter_contexts is None:
        for route in app.routes:
            out.append((route, getattr(route, "path", None), set(getattr(route, "methods", ()))))
        return out
    for context in iter_contexts(app.routes):
        out.append((context.original_route, context.path, set(context.methods or ())))
    return out


def install_openapi_auth(app: FastAPI) -> None:
    """The OpenAPI schema says how to authenticate, and which role each
    operation needs (`x-required-role`), with its 401 and 403 answers."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        schema = original()
        roles = {
            (method.lower(), path): role
            for route, path, methods in flat_routes(app)
            for method in methods
            if (role := needed_role(route))
        }
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {}).update(
            {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API token"},
                "session": {"type": "apiKey", "in": "cookie", "name": COOKIE_NAME},
            }
        )
        error: dict[str, Any] = (
            {"$ref": "#/components/schemas/ErrorResponse"}
            if "ErrorResponse" in components.get("schemas", {})
            else {"type": "object"}
        )
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                role = roles.get((method, path))
                if role is None or not isinstance(operation, dict):
                    continue
                operation["security"] = [{"bearer": []}, {"session": []}]
                operation["x-required-role"] = role
                answers = operation.setdefault("responses", {})
                for status, text in (
                    ("401", "No valid token or session"),
                    ("403", "The role is not enough, or a cookie request without its CSRF token"),
                ):
                    answers.setdefault(
                        status,
                        {"description": text, "content": {"application/json": {"schema": error}}},
                    )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = ["CSRF_FIELD", "router"]
