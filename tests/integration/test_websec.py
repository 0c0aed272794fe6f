"""Browser attacks against the real server (backend/web/security.py): DNS
rebinding (the Host check), cross-origin requests (the Origin check), bodies
that are not JSON, bodies over the limit, the response headers, /docs served
from the server itself, and a run page that output cannot make heavy.

The same rules in-process: tests/unit/test_security.py; in Chromium:
tests/browser/test_cross_origin.py, test_csp.py, test_hostile_output.py.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.runs import run_to_end, start
from tests.support.server import ServerProcess
from tests.support.wait import Deadline

EVIL = "http://evil.example"


def error_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) >= {"code", "message"}, body
    code: str = body["error"]["code"]
    return code


def run_ids(client: httpx.Client) -> set[str]:
    return {run["id"] for run in client.get("/api/runs", params={"limit": 100}).json()["runs"]}


@pytest.fixture(scope="module")
def finished(server: ServerProcess, image: str) -> dict[str, Any]:
    """A run that has ended, for the routes that name one."""
    with server.client() as c:
        run, _ = run_to_end(c, image=image, command=["echo", "hi"], auto_remove=False)
    return run


# -- DNS rebinding ------------------------------------------------------------------------


def routes(run: dict[str, Any]) -> list[tuple[str, str]]:
    """A route of every kind: pages, API, both SSE streams, static, docs, health."""
    rid = run["id"]
    return [
        ("GET", "/"),
        ("GET", f"/runs/{rid}"),
        ("GET", "/login"),
        ("GET", "/api/runs"),
        ("GET", f"/api/runs/{rid}"),
        ("GET", f"/api/runs/{rid}/logs"),
        ("GET", f"/api/runs/{rid}/events"),
        ("GET", f"/api/runs/{rid}/snapshot"),
        ("GET", f"/api/runs/{rid}/lines?before=2"),
        ("GET", "/api/events"),
        ("GET", "/api/stats"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/static/app.css"),
        ("GET", "/static/swagger-ui/swagger-ui.css"),
        ("POST", "/api/runs"),
        ("POST", f"/api/runs/{rid}/cancel"),
        ("DELETE", f"/api/runs/{rid}"),
    ]


def test_another_host_is_400_on_every_kind_of_route(
    server: ServerProcess, client: httpx.Client, finished: dict[str, Any], image: str
) -> None:
    before = run_ids(client)
    for method, path in routes(finished):
        for host in (f"evil.example:{server.port}", "evil.example", "127.0.0.1.nip.io"):
            body = {"image": image} if method == "POST" else None
            response = client.request(method, path, json=body, headers={"Host": host})
            assert error_code(response, 400) == "host_not_allowed", (method, path, host)
            assert "PULLRUN_ALLOWED_HOSTS" in response.json()["error"]["message"]
    assert run_ids(client) == before
    assert client.get(finished["links"]["self"]).status_code == 200  # not deleted


def test_the_loopback_names_are_answered(server: ServerProcess, client: httpx.Client) -> None:
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "localhost", "[::1]"):
        assert client.get("/api/runs", headers={"Host": host}).status_code == 200, host


def raw_request(port: int, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (no Host header added) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        deadline = Deadline("the answer to a raw request", 30)
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            deadline.check(repr(data))
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


def test_a_missing_host_is_400(server: ServerProcess) -> None:
    request = b"GET /api/runs HTTP/1.1\r\nConnection: close\r\n\r\n"
    status, body = raw_request(server.port, request)
    assert status == 400
    assert b'"code":"bad_request"' in body and b"Host" in body


def test_a_listed_host_is_answered(server_factory: Any) -> None:
    srv = server_factory(allowed_hosts="pullrun.test,*.lan.test")
    with srv.client() as c:
        for host in ("pullrun.test", f"pullrun.test:{srv.port}", "box.lan.test:443"):
            assert c.get("/api/runs", headers={"Host": host}).status_code == 200, host
        assert error_code(c.get("/api/runs", headers={"Host": "lan.test"}), 400)


# -- cross-origin requests ------------------------------------------------------------------


def test_a_cross_origin_post_or_delete_is_403(
    server: ServerProcess, client: httpx.Client, finished: dict[str, Any], image: str
) -> None:
    before = run_ids(client)
    for origin in (EVIL, "null", "http://127.0.0.1:1", f"https://127.0.0.1:{server.port}"):
        headers = {"Origin": origin}
        posted = client.post("/api/runs", json={"image": image}, headers=headers)
        assert error_code(posted, 403) == "cross_origin", origin
        deleted = client.delete(finished["links"]["self"], headers=headers)
        assert error_code(deleted, 403) == "cross_origin", origin
        canceled = client.post(f"{finished['links']['self']}/cancel", headers=headers)
        assert error_code(canceled, 403) == "cross_origin", origin
    assert run_ids(client) == before
    assert client.get(finished["links"]["self"]).status_code == 200


def test_a_cross_origin_sign_in_is_403_and_makes_no_session(
    server: ServerProcess, client: httpx.Client
) -> None:
    def sign_ins() -> int:
        page = client.get("/api/audit", params={"action": "signin", "limit": 500}).json()
        return len(page["entries"])

    before = sign_ins()
    form = {"token": server.token or "", "next": "/"}
    for headers in ({"Origin": EVIL}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        with server.anonymous() as browser:
            refused = browser.post("/login", data=form, headers=headers)
            assert error_code(refused, 403) == "cross_origin", headers
            assert "set-cookie" not in refused.headers
            assert "pullrun_session" not in browser.cookies
            assert browser.get("/api/me").status_code == 401
    assert sign_ins() == before  # refused before the form was read: no sign-in at all
    # The same form from the server's own origin signs in: the token was good.
    with server.anonymous() as browser:
        own = browser.post("/login", data=form, headers={"Origin": server.base_url})
        assert own.status_code == 303, own.text
        assert browser.get("/api/me").json()["via"] == "session"


def test_same_origin_and_tools_without_origin_pass(
    server: ServerProcess, client: httpx.Client, image: str
) -> None:
    own = start(client, image=image, command=["true"])  # httpx sends no Origin, as curl
    same = client.post(
        "/api/runs", json={"image": image, "command": ["true"]}, headers={"Origin": server.base_url}
    )
    assert same.status_code == 201, same.text
    by_name = client.post(
        "/api/runs",
        json={"image": image, "command": ["true"]},
        headers={"Origin": f"http://localhost:{server.port}", "Host": f"localhost:{server.port}"},
    )
    assert by_name.status_code == 201, by_name.text
    assert {own["id"], same.json()["id"], by_name.json()["id"]} <= run_ids(client)


def test_a_listed_origin_may_post(server_factory: Any, image: str) -> None:
    srv = server_factory(allowed_origins='["https://ci.example"]')
    with srv.client() as c:
        body = {"image": image, "command": ["true"]}
        listed = c.post("/api/runs", json=body, headers={"Origin": "https://ci.example"})
        assert listed.status_code == 201, listed.text
        other = c.post("/api/runs", json=body, headers={"Origin": "https://other.example"})
        assert error_code(other, 403) == "cross_origin"


# -- JSON bodies only ---------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_is_415(
    client: httpx.Client, image: str, content_type: str | None
) -> None:
    before = run_ids(client)
    body = b'{"image": "%s", "command": ["true"]}' % image.encode()
    request = client.build_request("POST", "/api/runs", content=body)
    assert "content-type" not in request.headers  # httpx adds none for bytes
    if content_type is not None:
        request.headers["content-type"] = content_type
    response = client.send(request)
    assert error_code(response, 415) == "unsupported_media_type"
    assert "application/json" in response.json()["error"]["message"]
    assert run_ids(client) == before


# -- the body limit -----------------------------------------------------------------------


TWO_MIB = 2 * 1024 * 1024


def test_a_2_mib_body_is_413_by_content_length(client: httpx.Client, image: str) -> None:
    before = run_ids(client)
    body = b'{"image": "%s", "env": {"A": "' % image.encode() + b"x" * TWO_MIB + b'"}}'
    response = client.post("/api/runs", content=body, headers={"content-type": "application/json"})
    assert error_code(response, 413) == "payload_too_large"
    assert run_ids(client) == before


def test_a_2_mib_chunked_body_is_413(client: httpx.Client, image: str) -> None:
    before = run_ids(client)

    def chunks() -> Iterator[bytes]:
        yield b'{"image": "%s", "env": {"A": "' % image.encode()
        for _ in range(TWO_MIB // 65536):
            yield b"x" * 65536
        yield b'"}}'

    response = client.post(
        "/api/runs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers  # it was sent chunked
    assert error_code(response, 413) == "payload_too_large"
    assert run_ids(client) == before


def test_the_limit_is_a_setting(server_factory: Any, image: str) -> None:
    srv = server_factory(max_body_bytes=2000)
    with srv.client() as c:
        small = {"image": image, "command": ["true"], "env": {"A": "x" * 1000}}
        assert c.post("/api/runs", json=small).status_code == 201
        large = {"image": image, "command": ["true"], "env": {"A": "x" * 3000}}
        assert error_code(c.post("/api/runs", json=large), 413) == "payload_too_large"


# -- response headers --------------------------------------------------------------------


def test_pages_and_api_answers_carry_the_browser_headers(
    client: httpx.Client, finished: dict[str, Any]
) -> None:
    pages = ["/", finished["links"]["page"], "/docs", "/login"]
    for path in pages:
        response = client.get(path, headers={"Accept": "text/html"}, follow_redirects=True)
        assert response.status_code == 200, (path, response.status_code)
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
    for path in [*pages, "/api/runs", finished["links"]["logs"], "/healthz", "/static/app.css"]:
        response = client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["referrer-policy"] == "same-origin", path
        assert response.headers["x-frame-options"] == "DENY", path
        assert "content-security-policy" in response.headers, path


def test_a_stream_carries_the_headers_and_is_not_buffered(client: httpx.Client) -> None:
    with client.stream("GET", "/api/events", timeout=httpx.Timeout(30)) as response:
        assert response.status_code == 200
        assert response.headers["x-content-type-options"] == "nosniff"
        deadline = Deadline("the first bytes of /api/events (a stream that never ends)", 30)
        for chunk in response.iter_raw():  # something arrives while the stream stays open
            deadline.check()
            if chunk:
                break
        else:
            raise AssertionError("/api/events ended")


# -- /docs, offline ------------------------------------------------------------------------


def test_docs_are_served_by_the_server_itself(client: httpx.Client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "<script>" not in page.text  # no inline script: the policy forbids it
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert {"/static/swagger-ui/swagger-ui-bundle.js", "/static/swagger-ui/swagger-ui.css"} <= set(
        sources
    )
    for source in sources:
        assert source.startswith("/") and not source.startswith("//"), source
        assert client.get(source).status_code == 200, source
    assert client.get("/openapi.json").json()["openapi"].startswith("3.")
    assert client.get("/redoc").status_code == 404


# -- output that would make the page heavy --------------------------------------------------


HOSTILE = (
    r"printf 'a\033[2147483647Gb\n'; printf 'c\033[99999999Cd\n'; printf 'e\033[50000000Gf\n';"
    r" head -c 10000000 /dev/zero | tr '\0' x"
)


def test_a_10_mb_line_is_bounded_in_the_page_and_whole_in_the_download(
    client: httpx.Client, image: str
) -> None:
    run, _ = run_to_end(client, image=image, command=["sh", "-c", HOSTILE])
    assert run["status"] == "succeeded"
    page = client.get(run["links"]["page"])
    assert page.status_code == 200
    assert 1_000_000 < len(page.content) < 2_000_000  # the line's first MAX_LINE_CHARS, not 10 MB
    logs = client.get(run["links"]["logs"]).content
    assert logs.endswith(b"x" * 1000 + b"\n") and logs.count(b"x") == 10_000_000
    assert b"\x1b[2147483647G" in logs
