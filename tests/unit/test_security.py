"""backend/web/security.py in-process: the Host check, the Origin check, JSON
bodies only, the body limit and the response headers; /docs self-hosted; the
run page's snapshot bounded however long a line is.

The real server is tested in tests/integration/test_websec.py; the browser
side in tests/browser/test_cross_origin.py and test_hostile_output.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.engines.fake import FakeDocker
from backend.events import encode_event
from backend.settings import Settings
from backend.web import snapshot
from backend.web.app import create_app
from backend.web.security import (
    PAGE_CSP,
    BodyLimit,
    HostCheck,
    HostPolicy,
    host_name,
    is_json,
    origin_of,
)
from tests.unit.conftest import BASE

ROOT = Path(__file__).resolve().parents[2]
URL = "http://127.0.0.1:8000"  # the in-process client's base: Host 127.0.0.1:8000
RUN = {"image": BASE, "command": ["true"]}


@pytest.fixture
def client(settings: Settings, daemon: FakeDocker) -> Iterator[TestClient]:
    # Sign-in is not what this file tests: auth off (allowed on a loopback host).
    open_settings = settings.model_copy(update={"auth": "off", "allowed_hosts": []})
    with TestClient(create_app(open_settings, engine_factory=daemon), base_url=URL) as c:
        try:
            yield c
        finally:
            daemon.close()


def assert_error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    message: str = body["error"]["message"]
    return message


# -- the Host check -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8000", "127.0.0.1"),
        ("LocalHost", "localhost"),
        ("example.com.:443", "example.com"),
        ("[::1]:8000", "[::1]"),
        ("[::1]", "[::1]"),
        ("[::1]x8000", None),
        ("host:", "host"),
        ("evil.example:8000", "evil.example"),
        ("[::1", None),
        ("a:b", None),
        ("a:80:90", None),
        ("user@host", None),
        ("", None),
        (":8000", None),
    ],
)
def test_host_names_are_read_without_their_port(header: str, name: str | None) -> None:
    assert host_name(header) == name


def test_the_default_hosts_are_loopback_and_the_listen_address() -> None:
    policy = HostPolicy([], listen_host="127.0.0.1")
    for name in ("localhost", "127.0.0.1", "[::1]"):
        assert policy.allows(name)
    for name in ("evil.example", "127.0.0.2", "10.0.0.1", "localhost.evil.example"):
        assert not policy.allows(name), name
    assert HostPolicy([], listen_host="192.168.1.10").allows("192.168.1.10")
    assert HostPolicy([], listen_host="::1").allows("[::1]")


def test_listed_hosts_wildcards_and_any() -> None:
    policy = HostPolicy(["pullrun.example.com", "*.ci.example", "[fd00::1]", "Other:8000"], "::1")
    assert policy.allows("pullrun.example.com") and policy.allows("other")
    assert policy.allows("a.ci.example") and policy.allows("a.b.ci.example")
    assert not policy.allows("ci.example") and not policy.allows("evilci.example")
    assert policy.allows("[fd00::1]")
    assert HostPolicy(["*"], "127.0.0.1").allows("anything.example")


def test_listening_on_every_address_allows_addresses_never_other_names() -> None:
    policy = HostPolicy([], listen_host="0.0.0.0")
    assert (
        policy.allows("192.168.1.10") and policy.allows("[fe80::1]") and policy.allows("localhost")
    )
    assert not policy.allows("evil.example")  # DNS rebinding needs a name


@pytest.mark.parametrize(
    "path", ["/", "/api/runs", "/api/events", "/runs/abc", "/healthz", "/docs", "/static/app.css"]
)
def test_another_host_is_400_on_every_kind_of_route(client: TestClient, path: str) -> None:
    response = client.get(path, headers={"host": "evil.example:8000"})
    message = assert_error(response, 400, "host_not_allowed")
    assert "PULLRUN_ALLOWED_HOSTS" in message
    assert response.headers["x-content-type-options"] == "nosniff"


def test_a_listed_host_is_answered(settings: Settings, daemon: FakeDocker) -> None:
    listed = settings.model_copy(update={"auth": "off", "allowed_hosts": ["pullrun.test"]})
    with TestClient(create_app(listed, engine_factory=daemon), base_url=URL) as c:
        assert c.get("/api/runs", headers={"host": "pullrun.test:8000"}).status_code == 200
        assert_error(c.get("/api/runs", headers={"host": "other.test"}), 400, "host_not_allowed")
        daemon.close()


def call(app: Any, scope: dict[str, Any], body: list[bytes] | None = None) -> list[dict[str, Any]]:
    """Run an ASGI app on one request; return the messages it sent."""
    sent: list[dict[str, Any]] = []
    chunks = list(body or [b""])

    async def receive() -> dict[str, Any]:
        if chunks:
            part = chunks.pop(0)
            return {"type": "http.request", "body": part, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def scope(headers: list[tuple[bytes, bytes]], version: str = "1.1", **extra: Any) -> dict[str, Any]:
    base = {"type": "http", "http_version": version, "method": "GET", "scheme": "http"}
    return {**base, "path": "/", "headers": headers, **extra}


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_missing_or_doubled_host_is_400_on_http_1_1() -> None:
    app = HostCheck(ok_app, HostPolicy([], "127.0.0.1"))
    assert call(app, scope([]))[0]["status"] == 400
    two = [(b"host", b"127.0.0.1"), (b"host", b"evil.example")]
    assert call(app, scope(two))[0]["status"] == 400
    assert call(app, scope([], version="1.0"))[0]["status"] == 200  # HTTP/1.0 has no Host
    assert call(app, scope([(b"host", b"127.0.0.1:1")]))[0]["status"] == 200


# -- cross-origin requests --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "origin"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("HTTPS://Example.com:443", "https://example.com"),
        ("http://example.com:80/", "http://example.com"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("null", None),
        ("file://", None),
        ("http://x:notaport", None),
    ],
)
def test_origins_are_compared_normalized(value: str, origin: str | None) -> None:
    assert origin_of(value) == origin


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:9999"])
def test_a_state_changing_request_from_another_origin_is_403(
    client: TestClient, origin: str
) -> None:
    message = assert_error(
        client.post("/api/runs", json=RUN, headers={"origin": origin}), 403, "cross_origin"
    )
    assert "PULLRUN_ALLOWED_ORIGINS" in message
    assert client.get("/api/runs").json()["runs"] == []  # nothing started
    assert_error(client.delete("/api/runs/x", headers={"origin": origin}), 403, "cross_origin")
    assert_error(client.post("/api/runs/x/cancel", headers={"origin": origin}), 403, "cross_origin")


def test_same_origin_and_no_origin_pass(client: TestClient) -> None:
    own = client.post("/api/runs", json=RUN, headers={"origin": URL})
    assert own.status_code == 201, own.text
    assert client.post("/api/runs", json=RUN).status_code == 201  # curl, scripts
    # Reading is not state-changing: an Origin on a GET is no reason to refuse.
    assert client.get("/api/runs", headers={"origin": "http://evil.example"}).status_code == 200


def test_a_hidden_origin_with_cross_site_fetch_metadata_is_403(client: TestClient) -> None:
    response = client.post("/api/runs", json=RUN, headers={"sec-fetch-site": "cross-site"})
    assert_error(response, 403, "cross_origin")
    same = client.post("/api/runs", json=RUN, headers={"sec-fetch-site": "same-origin"})
    assert same.status_code == 201


def test_listed_origins_may_post(settings: Settings, daemon: FakeDocker) -> None:
    listed = settings.model_copy(
        update={"auth": "off", "allowed_hosts": [], "allowed_origins": ["https://ci.example/"]}
    )
    with TestClient(create_app(listed, engine_factory=daemon), base_url=URL) as c:
        response = c.post("/api/runs", json=RUN, headers={"origin": "https://ci.example"})
        assert response.status_code == 201, response.text
        other = c.post("/api/runs", json=RUN, headers={"origin": "http://ci.example"})
        assert_error(other, 403, "cross_origin")
        daemon.close()


def test_list_settings_read_json_or_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULLRUN_ALLOWED_HOSTS", "a.example, *.b.example")
    monkeypatch.setenv("PULLRUN_ALLOWED_ORIGINS", '["https://ci.example"]')
    got = Settings()
    assert got.allowed_hosts == ["a.example", "*.b.example"]
    assert got.allowed_origins == ["https://ci.example"]
    assert got.max_body_bytes == 1024 * 1024


# -- JSON bodies only ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
     "multipart/form-data; boundary=x", "application/jsonx"],
)  # fmt: skip
def test_a_body_that_is_not_json_is_415(client: TestClient, content_type: str | None) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = client.post("/api/runs", content=b'{"image": "%s"}' % BASE.encode(), headers=headers)
    message = assert_error(response, 415, "unsupported_media_type")
    assert "application/json" in message
    assert client.get("/api/runs").json()["runs"] == []


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/x+json"]
)
def test_json_bodies_pass(client: TestClient, content_type: str) -> None:
    response = client.post(
        "/api/runs",
        content=b'{"image": "%s"}' % BASE.encode(),
        headers={"content-type": content_type},
    )
    assert response.status_code == 201, response.text


def test_posts_without_a_body_need_no_content_type(client: TestClient) -> None:
    run = client.post("/api/runs", json={"image": BASE, "command": ["sleep", "1"]}).json()
    assert client.post(f"/api/runs/{run['id']}/cancel").status_code in (200, 202, 409)


def test_is_json() -> None:
    assert is_json("application/json") and is_json("Application/JSON; charset=utf-8")
    assert is_json("application/problem+json")
    assert not is_json("") and not is_json("text/json") and not is_json("application/jsonx")


# -- the body limit -----------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_by_its_length(client: TestClient) -> None:
    big = b'{"image": "' + b"x" * (2 << 20) + b'"}'
    response = client.post("/api/runs", content=big, headers={"content-type": "application/json"})
    assert "1048576" in assert_error(response, 413, "payload_too_large")


def test_a_chunked_body_over_the_limit_is_413_once_read_past_it(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"image": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    response = client.post(
        "/api/runs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "payload_too_large")

    def small() -> Iterator[bytes]:
        yield b'{"image": '
        yield b'"%s"}' % BASE.encode()

    ok = client.post("/api/runs", content=small(), headers={"content-type": "application/json"})
    assert ok.status_code == 201, ok.text


def test_the_limit_is_a_setting_and_the_app_never_sees_a_cut_body() -> None:
    seen: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        seen.append(message["body"])
        await ok_app(scope, receive, send)

    limit = BodyLimit(app, max_bytes=10)
    chunked = [(b"transfer-encoding", b"chunked")]
    post = {"method": "POST"}
    assert call(limit, scope(chunked, **post), [b"12345", b"67890"])[0]["status"] == 200
    assert seen == [b"1234567890"]  # handed over whole
    assert call(limit, scope(chunked, **post), [b"12345", b"678901"])[0]["status"] == 413
    assert call(limit, scope([(b"content-length", b"11")], **post))[0]["status"] == 413
    assert call(limit, scope([(b"content-length", b"x")], **post))[0]["status"] == 400
    assert seen == [b"1234567890"]


# -- response headers -------------------------------------------------------------------------


def test_pages_get_the_content_security_policy(client: TestClient) -> None:
    run = client.post("/api/runs", json=RUN).json()
    for path in ("/", f"/runs/{run['id']}", "/docs", "/runs/nothing"):
        response = client.get(path, headers={"accept": "text/html"})
        assert response.headers["content-type"].startswith("text/html"), path
        csp = response.headers["content-security-policy"]
        assert csp == PAGE_CSP
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["x-content-type-options"] == "nosniff"


def test_every_answer_gets_the_other_headers(client: TestClient) -> None:
    for path in ("/api/runs", "/healthz", "/static/app.css", "/openapi.json", "/api/runs/none"):
        response = client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert response.headers["cross-origin-resource-policy"] == "same-origin"


def test_an_unhandled_exception_is_a_json_500_with_the_headers(
    settings: Settings, daemon: FakeDocker
) -> None:
    # Starlette's ServerErrorMiddleware answers it, outside every add_middleware:
    # the headers must still be there, and no stack trace in the body.
    app = create_app(settings.model_copy(update={"auth": "off"}), engine_factory=daemon)

    @app.get("/api/test-boom")
    @app.get("/test-boom")
    def boom() -> None:
        raise RuntimeError("secret detail /srv/pullrun/boom.py")

    try:
        with TestClient(app, base_url=URL, raise_server_exceptions=False) as c:
            for path in ("/api/test-boom", "/test-boom"):
                response = c.get(path)
                assert response.status_code == 500, path
                assert response.json() == {
                    "error": {
                        "code": "internal_error",
                        "message": "internal error: see the server log",
                    }
                }
                assert response.headers["content-type"].startswith("application/json")
                assert response.headers["content-security-policy"].startswith("default-src 'none'")
                assert response.headers["x-content-type-options"] == "nosniff"
                assert response.headers["x-frame-options"] == "DENY"
                assert response.headers["cross-origin-resource-policy"] == "same-origin"
            page = c.get("/test-boom", headers={"accept": "text/html"})
            assert page.status_code == 500
            assert page.headers["content-security-policy"] == PAGE_CSP
            assert page.headers["x-content-type-options"] == "nosniff"
            for response in (page, c.get("/api/test-boom")):
                assert "Traceback" not in response.text and "secret detail" not in response.text
    finally:
        daemon.close()


def test_the_pages_have_no_inline_script_or_handler() -> None:
    """Only `<script type="application/json">` data blocks and `<script src>`."""
    for template in sorted((ROOT / "templates").glob("*.html")):
        text = template.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert 'type="application/json"' in tag or "src=" in tag, (template.name, tag)
        assert not re.search(r"\son[a-z]+\s*=", text), template.name
        assert "javascript:" not in text.lower(), template.name
        assert not re.search(r"\sstyle\s*=", text), template.name
    for script in sorted((ROOT / "static" / "js").glob("*.js")):
        text = script.read_text()
        assert not re.search(r"\beval\(|new Function\(|innerHTML|insertAdjacentHTML", text), script


# -- /docs, self-hosted ------------------------------------------------------------------------


def test_docs_load_their_assets_from_the_server(client: TestClient) -> None:
    page = client.get("/docs").text
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/") and not s.startswith("//") for s in sources), sources
    assert "<script>" not in page  # no inline script
    for source in sources:
        assert client.get(source).status_code == 200, source
    bundle = client.get("/static/swagger-ui/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert len(bundle.content) > 100_000
    assert client.get("/static/swagger-ui/index.html").status_code == 404  # only what /docs loads
    assert client.get("/redoc").status_code == 404  # ReDoc would need a CDN: not served


# -- hostile output: the snapshot is bounded ------------------------------------------------


def write_events(path: Path, events: list[tuple[str, Any]]) -> None:
    path.write_bytes(b"".join(encode_event(i, t, d) for i, (t, d) in enumerate(events, 1)))


def log(first: int, lines: list[str], partial: bool = False, stream: str = "stdout") -> Any:
    return ("log", {"stream": stream, "first": first, "lines": lines, "partial": partial})


def test_the_snapshot_sends_no_more_of_a_line_than_the_page_lays_out(tmp_path: Path) -> None:
    path = tmp_path / "r.events"
    huge = "x" * (3 * snapshot.MAX_LINE_CHARS)
    part = "y" * 100_000
    events = [log(1, ["a\x1b[2147483647Gb", huge]), log(3, [part], partial=True)]
    events += [log(3, [part], partial=True) for _ in range(30)]  # one line sent in 31 parts
    write_events(path, events)
    lines = snapshot.build_snapshot(path).as_dict()["lines"]
    assert [(line["n"], len(line["text"])) for line in lines] == [
        (1, 15),
        (2, snapshot.MAX_LINE_CHARS),
        (3, snapshot.MAX_LINE_CHARS),
    ]
    assert lines[2]["partial"] is True and lines[1]["text"] == huge[: snapshot.MAX_LINE_CHARS]


def test_the_snapshot_lines_add_up_to_a_bounded_page(tmp_path: Path) -> None:
    path = tmp_path / "r.events"
    line = "z" * 500_000
    count = 2 * snapshot.MAX_PAGE_CHARS // len(line)
    write_events(path, [log(1, [line] * count), log(count + 1, ["last"])])
    lines = snapshot.build_snapshot(path).as_dict()["lines"]
    assert sum(len(x["text"]) for x in lines) <= snapshot.MAX_PAGE_CHARS
    assert lines[-1]["text"] == "last" and lines[-1]["n"] == count + 1
    numbers = [x["n"] for x in lines]
    assert numbers == list(range(numbers[0], count + 2)) and numbers[0] > 1  # the newest, in order


def test_the_snapshot_cap_is_one_more_than_term_js_lays_out() -> None:
    term = (ROOT / "static" / "js" / "term.js").read_text()
    scan = re.search(r"export const MAX_SCAN = (\d+);", term)
    assert scan is not None
    assert int(scan.group(1)) + 1 == snapshot.MAX_LINE_CHARS
