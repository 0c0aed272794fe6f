"""Defences against browser attacks, as pure ASGI middleware.

Pure ASGI, not Starlette's BaseHTTPMiddleware: answers, the SSE streams above
all, pass through message by message as the app sends them, never buffered.
From the outside in:

- `SecurityHeaders`: a Content-Security-Policy (no inline script, no framing)
  and the other browser headers on every answer, the refusals below included.
  `SecuredApp` puts it outside even Starlette's ServerErrorMiddleware (which
  `add_middleware` cannot wrap), so a 500 carries the headers too.

`install` adds the three below, in this order:

- `HostCheck`: a `Host` that is not one of the server's names gets 400 before
  any route runs (DNS rebinding: a page whose name was re-pointed at this
  server must not become same-origin with it).
- `CrossOriginCheck`: a state-changing request (POST, PUT, PATCH, DELETE) from
  a page of another origin gets 403; a body sent to /api that is not JSON
  gets 415 (a form post or a `fetch` in no-cors mode can send only
  urlencoded, multipart or text/plain bodies, or none typed at all).
- `BodyLimit`: a body over `max_body_bytes` gets 413, by its Content-Length or,
  for a chunked body, as soon as the bytes read pass the limit.

Refusals use the API's one error shape, `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    PullrunError,
    UnsupportedMediaType,
)
from ..settings import Settings

# The pages load their scripts, styles and images from the server itself;
# `<script type="application/json">` data blocks are not scripts. Inline
# styles set from a script (element.style) are not inline markup either.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# Anything else (JSON, logs, SSE, static files) is no document to run anything in.
OTHER_CSP = "default-src 'none'; frame-ancestors 'none'"

# Not `no-referrer`: under it a browser sends `Origin: null` on the pages' own
# POSTs, which the origin check below would refuse.
COMMON_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::", "[::]", "*"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443}


class HostNotAllowed(BadRequest):
    code = "host_not_allowed"


class CrossOriginRefused(Forbidden):
    code = "cross_origin"


async def refuse(error: PullrunError, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer with the error's status and the API's error body."""
    body = {"error": {"code": error.code, "message": error.message}}
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})
        return
    await JSONResponse(body, status_code=error.status_code)(scope, receive, send)


# -- hosts --------------------------------------------------------------------------------


def _bracketed(name: str) -> str:
    """An IPv6 address as a Host header writes it: `[::1]`."""
    return f"[{name}]" if name.count(":") >= 2 and not name.startswith("[") else name


def host_name(value: str) -> str | None:
    """The name in a Host header (`Example.COM.:8000` -> `example.com`,
    `[::1]:8000` -> `[::1]`), without its port; None when it is malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
    else:
        name, colon, after = value.partition(":")
        rest = colon + after
    port = rest.removeprefix(":")
    if rest and (not rest.startswith(":") or (port and not port.isdigit())):
        return None  # after the name only `:PORT` (or a lone `:`) may come
    name = name.rstrip(".")
    if not name or any(c in name for c in "/?#@ \t\\"):
        return None
    return name


class HostPolicy:
    """Which `Host` names the server answers to (any port).

    Always the loopback names and the address it listens on; `allowed` adds
    names, `*.example.com` (any name under example.com) or `*` (any). When it
    listens on every address (0.0.0.0, ::), any IP address is a name of its
    own too, and so are the machine's host names: DNS rebinding needs a name,
    a Host that is an address is the address the browser connected to.
    """

    def __init__(self, allowed: Iterable[str], listen_host: str) -> None:
        self.names: set[str] = set(LOOPBACK_HOSTS)
        self.suffixes: list[str] = []
        self.any = False
        self.any_address = listen_host.strip().lower() in WILDCARD_ADDRESSES
        extra = list(allowed)
        if self.any_address:
            extra += [socket.gethostname(), socket.getfqdn()]
        else:
            extra.append(listen_host)
        for entry in extra:
            entry = entry.strip().lower()
            if entry == "*":
                self.any = True
            elif entry.startswith("*."):
                self.suffixes.append(entry[1:])
            elif entry:
                name = host_name(_bracketed(entry))
                if name:
                    self.names.add(name)

    def allows(self, name: str) -> bool:
        if self.any or name in self.names or any(name.endswith(s) for s in self.suffixes):
            return True
        if self.any_address:
            try:
                ipaddress.ip_address(name.strip("[]"))
            except ValueError:
                return False
            return True
        return False


class HostCheck:
    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        hosts = Headers(scope=scope).getlist("host")
        if len(hosts) > 1:
            await refuse(BadRequest("more than one Host header"), scope, receive, send)
            return
        if not hosts:
            if scope.get("http_version") == "1.0":  # no Host in HTTP/1.0: nothing to check
                await self.app(scope, receive, send)
                return
            await refuse(BadRequest("the Host header is missing"), scope, receive, send)
            return
        name = host_name(hosts[0])
        if name is None or not self.policy.allows(name):
            shown = hosts[0][:200]
            error = HostNotAllowed(
                f"this server does not answer to the host {shown!r}: add its name to "
                "PULLRUN_ALLOWED_HOSTS to allow it"
            )
            await refuse(error, scope, receive, send)
            return
        await self.app(scope, receive, send)


# -- origins ------------------------------------------------------------------------------


def origin_of(value: str) -> str | None:
    """`scheme://host[:port]`, lower case, without a default port; None when
    `value` is no http(s) origin (`null`, a malformed one)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = _bracketed(parts.hostname.lower().rstrip("."))
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def own_origin(scope: Scope, headers: Headers) -> str | None:
    """The origin the request came to: its scheme (https behind a proxy that
    uvicorn trusts) and its Host."""
    scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope.get("scheme"))
    host = headers.get("host")
    return origin_of(f"{scheme}://{host}") if host else None


def is_json(content_type: str) -> bool:
    """application/json or application/*+json (what FastAPI parses as JSON)."""
    media = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in headers


class CrossOriginCheck:
    def __init__(self, app: ASGIApp, allowed_origins: Iterable[str]) -> None:
        self.app = app
        self.allowed = {o for o in (origin_of(v) for v in allowed_origins) if o}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in STATE_CHANGING:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        error = self.check(scope, headers)
        if error is not None:
            await refuse(error, scope, receive, send)
            return
        await self.app(scope, receive, send)

    def check(self, scope: Scope, headers: Headers) -> PullrunError | None:
        sent = headers.get("origin")
        if sent is not None:
            origin = origin_of(sent)
            if origin is None or (
                origin != own_origin(scope, headers) and origin not in self.allowed
            ):
                return CrossOriginRefused(
                    f"cross-origin request refused: {sent[:200]!r} is not this server's origin "
                    "(PULLRUN_ALLOWED_ORIGINS lists the others allowed)"
                )
        elif headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            # A browser that sends Sec-Fetch-Site sends Origin too: this one hid it.
            return CrossOriginRefused("cross-origin request refused (Sec-Fetch-Site)")
        path: str = scope["path"]
        if (
            path.startswith("/api/")
            and scope["method"] != "DELETE"
            and has_body(headers)
            and not is_json(headers.get("content-type", ""))
        ):
            sent_type = headers.get("content-type")
            what = f"Content-Type {sent_type[:100]!r}" if sent_type else "no Content-Type"
            return UnsupportedMediaType(
                f"the body must be JSON, sent with Content-Type: application/json ({what} was sent)"
            )
        return None


# -- body size ----------------------------------------------------------------------------


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body is larger than {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                await refuse(BadRequest("the Content-Length is not a number"), scope, receive, send)
                return
            if size > self.max_bytes:
                await refuse(self.too_large(), scope, receive, send)
                return
            # The server reads no more than Content-Length says: nothing to count.
            await self.app(scope, receive, send)
            return
        if "transfer-encoding" not in headers:
            await self.app(scope, receive, send)
            return
        # A chunked body: read it (up to the limit) before the app sees it, so a
        # route never gets half of one, then hand it over in one message.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body: bytes = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await refuse(self.too_large(), scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole: Message | None = {
            "type": "http.request",
            "body": b"".join(chunks),
            "more_body": False,
        }

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()

        await self.app(scope, replay, send)


# -- response headers ---------------------------------------------------------------------


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_security_headers(list(message.get("headers", [])))
            await send(message)

        await self.app(scope, receive, send_with_headers)


def with_security_headers(headers: list[Any]) -> list[Any]:
    """The answer's headers plus those it does not set itself."""
    present = {bytes(name).lower() for name, _ in headers}
    content_type = next((bytes(v) for n, v in headers if bytes(n).lower() == b"content-type"), b"")
    csp = PAGE_CSP if content_type.startswith(b"text/html") else OTHER_CSP
    for name, value in ((b"content-security-policy", csp.encode()), *COMMON_HEADERS):
        if name not in present:
            headers.append((name, value))
    return headers


class SecuredApp(FastAPI):
    """FastAPI with `SecurityHeaders` around its whole middleware stack: outside
    ServerErrorMiddleware, whose 500 (from an exception no handler took) would
    otherwise go out without them. Pure ASGI as well: nothing is buffered."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


def install(app: FastAPI, settings: Settings) -> None:
    """Add the middleware; the last added runs first (Starlette's order).
    `SecurityHeaders` is not among them: `SecuredApp` wraps it around everything."""
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(CrossOriginCheck, allowed_origins=settings.allowed_origins)
    app.add_middleware(
        HostCheck, policy=HostPolicy(settings.allowed_hosts, listen_host=settings.host)
    )
