"""Identities and sign-in against the real server: 401/403 per role on every
kind of route (both SSE streams included), API tokens and passwords, the
session cookie and its flags, CSRF for cookie requests (never for bearer
tokens), the link the first start prints (and the access log that never
sees its token), PULLRUN_AUTH=off refused on a public address, operators and
other people's runs, rate-limited sign-ins, and the audit trail."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests.support.runs import SLEEPER, run_to_end, start
from tests.support.server import ROOT, ServerFactory, ServerProcess, free_port
from tests.support.wait import collect, wait_for_status, wait_until

PASSWORD = "correct horse battery"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
LINK = re.compile(r"http://127\.0\.0\.1:\d+/login#token=(pullrun_[A-Za-z0-9_-]+)")


@pytest.fixture(scope="module")
def tokens(server: ServerProcess) -> dict[str, str]:
    """A token per role on the shared server (made with `pullrun token create`
    while it runs)."""
    return {role: server.create_token(role) for role in ("viewer", "operator", "admin")}


def as_role(server: ServerProcess, token: str) -> httpx.Client:
    return server.client(token=token)


@contextlib.contextmanager
def session_client(server: ServerProcess, **form: str) -> Iterator[tuple[httpx.Client, str]]:
    """A client signed in through /login like a browser (cookie); its CSRF token."""
    with server.anonymous() as client:
        response = client.post("/login", data={"next": "/", **form})
        assert response.status_code == 303, response.text
        assert "pullrun_session" in client.cookies
        page = client.get("/")
        assert page.status_code == 200
        match = CSRF_META.search(page.text)
        assert match, page.text[:300]
        yield client, match.group(1)


def first_bytes(client: httpx.Client, url: str) -> tuple[int, bytes]:
    """Open a stream, read its first chunk, close it: (status, chunk)."""
    with client.stream("GET", url, timeout=30) as response:
        chunk = next(response.iter_raw(), b"") if response.status_code == 200 else b""
        return response.status_code, chunk


# -- who gets what ---------------------------------------------------------------------------


def test_anonymous_callers_get_401_on_the_api_and_both_streams(
    server: ServerProcess, client: httpx.Client, image: str
) -> None:
    run = start(client, image=image, command=["true"])
    with server.anonymous() as anonymous:
        for method, url in [
            ("GET", "/api/runs"),
            ("GET", f"/api/runs/{run['id']}"),
            ("GET", f"/api/runs/{run['id']}/logs"),
            ("GET", f"/api/runs/{run['id']}/events"),
            ("GET", f"/api/runs/{run['id']}/snapshot"),
            ("GET", f"/api/runs/{run['id']}/lines"),
            ("GET", "/api/events"),
            ("GET", "/api/stats"),
            ("GET", "/api/audit"),
            ("POST", "/api/runs"),
            ("POST", f"/api/runs/{run['id']}/cancel"),
            ("DELETE", f"/api/runs/{run['id']}"),
        ]:
            response = anonymous.request(
                method, url, json={"image": image} if method == "POST" else None
            )
            assert response.status_code == 401, (method, url, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["error"]["code"] == "unauthorized"
            assert run["spec"]["image"] not in response.text
        page = anonymous.get(f"/runs/{run['id']}")
        assert page.status_code == 303
        assert page.headers["location"] == f"/login?next=%2Fruns%2F{run['id']}"
        assert anonymous.get("/").headers["location"] == "/login?next=%2F"


def test_health_checks_stay_open_and_reveal_nothing_more(server: ServerProcess) -> None:
    with server.anonymous() as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        ready = anonymous.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ok"}  # the engine's version only when signed in
    with server.client() as signed_in:
        assert set(signed_in.get("/readyz").json()) == {"status", "engine", "api"}


def test_each_role_reads_and_does_what_it_may_and_gets_403_past_that(
    server: ServerProcess, tokens: dict[str, str], image: str
) -> None:
    with (
        as_role(server, tokens["viewer"]) as viewer,
        as_role(server, tokens["operator"]) as operator,
        as_role(server, tokens["admin"]) as admin,
    ):
        # The viewer reads runs, logs and both streams...
        run, _ = run_to_end(operator, image=image, command=["echo", "hello"])
        assert viewer.get("/api/runs").status_code == 200
        assert viewer.get(f"/api/runs/{run['id']}").json()["created_by"] == run["created_by"]
        assert viewer.get(f"/api/runs/{run['id']}/logs").text == "hello\n"
        lines = viewer.get(f"/api/runs/{run['id']}/lines").json()["lines"]
        assert [line["text"] for line in lines] == ["hello"]
        assert viewer.get(f"/api/runs/{run['id']}/snapshot").json()["lines"] == lines
        events = collect(viewer, f"/api/runs/{run['id']}/events")
        assert events[-1].type == "done"
        status, chunk = first_bytes(viewer, "/api/events")
        assert status == 200 and chunk.startswith(b":")
        # ...and may change nothing.
        for method, url in [
            ("POST", "/api/runs"),
            ("POST", f"/api/runs/{run['id']}/cancel"),
            ("DELETE", f"/api/runs/{run['id']}"),
        ]:
            response = viewer.request(
                method, url, json={"image": image} if method == "POST" else None
            )
            assert response.status_code == 403, (method, url, response.text)
            assert response.json()["error"]["code"] == "forbidden"
        # Users, tokens and the audit trail are the admin's.
        assert viewer.get("/api/audit").status_code == 403
        assert operator.get("/api/audit").status_code == 403
        assert admin.get("/api/audit").status_code == 200
        assert operator.delete(f"/api/runs/{run['id']}").status_code == 204  # their own


def test_operators_cancel_and_delete_only_the_runs_they_started(
    server: ServerProcess, tokens: dict[str, str], image: str, docker_api: docker.APIClient
) -> None:
    other = server.create_token("operator")
    with (
        as_role(server, tokens["operator"]) as owner,
        as_role(server, other) as stranger,
        as_role(server, tokens["admin"]) as admin,
    ):
        run = start(owner, image=image, command=SLEEPER)
        assert run["created_by"] == owner.get("/api/me").json()["name"]
        wait_for_status(owner, run["id"], "running")
        refused = stranger.post(f"/api/runs/{run['id']}/cancel")
        assert refused.status_code == 403
        assert owner.get(f"/api/runs/{run['id']}").json()["status"] == "running"
        assert owner.post(f"/api/runs/{run['id']}/cancel").status_code == 202
        assert wait_for_status(owner, run["id"], "canceled")["status"] == "canceled"
        assert stranger.delete(f"/api/runs/{run['id']}").status_code == 403
        assert admin.delete(f"/api/runs/{run['id']}").status_code == 204
        entries = admin.get("/api/audit", params={"limit": 500}).json()["entries"]
        actions = {(e["action"], e["outcome"]) for e in entries if e["target"] == run["id"]}
        assert {
            ("run.start", "ok"),
            ("run.cancel", "denied"),
            ("run.cancel", "ok"),
            ("run.delete", "denied"),
            ("run.delete", "ok"),
        } <= actions


def test_a_revoked_token_stops_working_at_once(server: ServerProcess) -> None:
    token = server.create_token("viewer", "short-lived")
    with as_role(server, token) as client:
        assert client.get("/api/me").json() == {
            "name": "short-lived",
            "role": "viewer",
            "via": "token",
        }
        server.cli("token", "revoke", "short-lived")
        assert client.get("/api/me").status_code == 401
    listed = server.cli("token", "list")
    assert "short-lived" not in listed and token not in listed


# -- browsers: passwords, tokens, cookies, CSRF ----------------------------------------------


def test_sign_in_with_a_password_or_a_token_and_the_cookie_flags(
    server: ServerProcess, tokens: dict[str, str]
) -> None:
    server.create_user("pat", "operator", PASSWORD)
    with server.anonymous() as browser:
        wrong = browser.post("/login", data={"username": "pat", "password": "not it at all"})
        assert wrong.status_code == 401 and "Wrong username or password." in wrong.text
        assert "pullrun_session" not in browser.cookies
        right = browser.post(
            "/login", data={"username": "pat", "password": PASSWORD, "next": "/runs/x"}
        )
        assert right.status_code == 303 and right.headers["location"] == "/runs/x"
        flags = [p.strip().lower() for p in right.headers["set-cookie"].split(";")]
        assert flags[0].startswith("pullrun_session=")
        assert {"httponly", "samesite=lax", "path=/"} <= set(flags[1:])
        assert "secure" not in flags  # plain http here
        me = browser.get("/api/me").json()
        assert me == {"name": "pat", "role": "operator", "via": "session"}
    with session_client(server, token=tokens["viewer"]) as (client, _):
        assert client.get("/api/me").json()["role"] == "viewer"


def test_cookie_requests_need_the_csrf_token_and_bearer_requests_do_not(
    server: ServerProcess, tokens: dict[str, str], image: str
) -> None:
    server.create_user("csrf-user", "operator", PASSWORD)
    with session_client(server, username="csrf-user", password=PASSWORD) as (browser, csrf):
        body = {"image": image, "command": ["true"]}
        refused = browser.post("/api/runs", json=body)
        assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
        made = browser.post("/api/runs", json=body, headers={"X-CSRF-Token": csrf})
        assert made.status_code == 201 and made.json()["created_by"] == "csrf-user"
        # Pages, their EventSources and fetches work with the cookie alone.
        assert browser.get(made.json()["links"]["page"]).status_code == 200
        assert collect(browser, made.json()["links"]["events"])[-1].type == "done"
        status, _ = first_bytes(browser, "/api/events")
        assert status == 200
        # Sign out: with its CSRF token only.
        assert browser.post("/logout").status_code == 403
        assert browser.post("/logout", data={"csrf_token": csrf}).status_code == 303
        assert browser.get("/api/runs").status_code == 401
    with as_role(server, tokens["operator"]) as tool:
        assert tool.post("/api/runs", json={"image": image, "command": ["true"]}).status_code == 201


def test_the_cookie_is_secure_behind_a_trusted_proxy_that_says_https(
    server_factory: ServerFactory,
) -> None:
    trusting = server_factory(trusted_proxies="127.0.0.1")
    token = trusting.token
    assert token is not None
    with trusting.anonymous() as proxied:
        over_https = proxied.post(
            "/login", data={"token": token}, headers={"X-Forwarded-Proto": "https"}
        )
        assert over_https.status_code == 303
        assert "secure" in over_https.headers["set-cookie"].lower().split("; ")
    # A server that trusts no proxy ignores what any client says about https.
    plain = server_factory()
    with plain.anonymous() as client:
        claimed = client.post(
            "/login", data={"token": plain.token}, headers={"X-Forwarded-Proto": "https"}
        )
        assert claimed.status_code == 303
        assert "secure" not in claimed.headers["set-cookie"].lower().split("; ")


def test_failed_sign_ins_are_limited_per_client(server_factory: ServerFactory) -> None:
    limited = server_factory(signin_max_failures=3, signin_window=600)
    with limited.anonymous() as client:
        for _ in range(3):
            assert client.post("/login", data={"token": "pullrun_nope"}).status_code == 401
        blocked = client.post("/login", data={"token": limited.token})
        assert blocked.status_code == 429
        assert 1 <= int(blocked.headers["retry-after"]) <= 600
        assert "set-cookie" not in blocked.headers
    with limited.client() as admin:
        entries = admin.get("/api/audit", params={"action": "signin"}).json()["entries"]
        assert [e["outcome"] for e in entries] == ["rate_limited", "failed", "failed", "failed"]
    assert "audit action=signin" in limited.log()  # and in the server log


# -- the first start -------------------------------------------------------------------------


def test_the_first_start_prints_a_sign_in_link_once_and_its_token_never_reaches_the_log(
    server_factory: ServerFactory,
) -> None:
    first = server_factory(token=False, log_level="info")
    log = first.log()
    links = LINK.findall(log)
    assert len(links) == 1, log
    token = links[0]
    with first.anonymous() as browser:
        # What the page's script does with the fragment: a POST, the token in the body.
        assert browser.get("/login").status_code == 200
        signed = browser.post("/login", data={"token": token})
        assert signed.status_code == 303
        assert browser.get("/api/me").json() == {"name": "admin", "role": "admin", "via": "session"}
    with first.client(token=token) as admin:
        assert admin.get("/api/runs").status_code == 200
    access = [line for line in first.log().splitlines() if '"GET /' in line or '"POST /' in line]
    assert any('"POST /login HTTP/1.1" 303' in line for line in access), access
    assert first.log().count(token) == 1  # the printed link, and nothing else
    first.terminate()
    again = server_factory(data_dir=first.data_dir, token=False, log_level="info")
    assert LINK.search(again.log().split(log)[-1]) is None  # never twice
    with again.client(token=token) as admin:
        assert admin.get("/api/me").status_code == 200


def test_auth_off_is_refused_on_a_public_address_before_anything_listens(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = dict(os.environ)
    env.update(
        PULLRUN_HOST="0.0.0.0",
        PULLRUN_PORT=str(port),
        PULLRUN_AUTH="off",
        PULLRUN_DATA_DIR=str(tmp_path / "data"),
    )
    done = subprocess.run(
        [sys.executable, "-m", "backend.cli", "serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "PULLRUN_AUTH=off is refused" in done.stderr and "'0.0.0.0'" in done.stderr
    assert "Uvicorn running" not in done.stderr + done.stdout
    assert not (tmp_path / "data").exists()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_auth_off_on_loopback_needs_no_credentials(
    server_factory: ServerFactory, image: str
) -> None:
    open_server = server_factory(auth="off", token=False)
    assert LINK.search(open_server.log()) is None  # no token needed, none made
    with open_server.anonymous() as anyone:
        assert anyone.get("/api/me").json() == {
            "name": "anonymous",
            "role": "admin",
            "via": "open",
        }
        run = start(anyone, image=image, command=["true"])
        assert run["created_by"] == "anonymous"


# -- the audit trail -------------------------------------------------------------------------


@pytest.fixture
def audited(server_factory: ServerFactory) -> Iterator[ServerProcess]:
    yield server_factory(log_level="info")


def test_the_audit_trail_is_in_the_log_and_paged_for_admins(
    audited: ServerProcess, image: str
) -> None:
    audited.create_user("ann", "operator", PASSWORD)
    with session_client(audited, username="ann", password=PASSWORD) as (browser, csrf):
        run = browser.post(
            "/api/runs", json={"image": image, "command": ["true"]}, headers={"X-CSRF-Token": csrf}
        ).json()
        wait_until(
            lambda: browser.get(f"/api/runs/{run['id']}").json()["finished_at"],
            f"run {run['id']} to finish",
        )
        assert browser.post("/logout", data={"csrf_token": csrf}).status_code == 303
    with audited.client() as admin:
        first = admin.get("/api/audit", params={"limit": 2}).json()
        assert [e["action"] for e in first["entries"]] == ["signout", "run.start"]
        assert first["entries"][1] | {"id": 0, "at": ""} == {
            "id": 0,
            "at": "",
            "actor": "ann",
            "action": "run.start",
            "target": run["id"],
            "outcome": "ok",
            "client": "127.0.0.1",
            "detail": image,
        }
        rest = admin.get("/api/audit", params={"cursor": first["next_cursor"]}).json()
        actions = [(e["actor"], e["action"]) for e in rest["entries"]]
        assert ("ann", "signin") in actions and ("cli", "user.add") in actions
        assert rest["next_cursor"] is None
    log = audited.log()
    assert f"audit action=run.start target='{run['id']}' actor='ann'" in log
    assert "audit action=signin target=None actor='ann'" in log
    assert PASSWORD not in log


def test_refused_starts_and_deletions_by_retention_are_in_the_audit_trail(
    server_factory: ServerFactory, image: str
) -> None:
    # Only pullrun/* images; finished runs go after 1.7 s (swept every second).
    server = server_factory(
        allowed_images="docker.io/pullrun/*", retention_days=0.00002, log_level="info"
    )
    server.create_user("ann", "operator", PASSWORD)
    with session_client(server, username="ann", password=PASSWORD) as (browser, csrf):
        headers = {"X-CSRF-Token": csrf}
        refused = browser.post(
            "/api/runs", json={"image": "evil.example/miner", "command": ["x"]}, headers=headers
        )
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "policy_denied"
        too_big = {"image": image, "command": ["true"], "memory": "64g"}
        assert browser.post("/api/runs", json=too_big, headers=headers).status_code == 422
        no_image = browser.post("/api/runs", json={"command": ["true"]}, headers=headers)
        assert no_image.status_code == 422
        browser.headers["X-CSRF-Token"] = csrf
        run = start(browser, image=image, command=["true"])  # it goes once it has ended
    with server.client() as admin:

        def deleted_by_retention() -> list[dict[str, object]]:
            page = admin.get("/api/audit", params={"action": "run.delete"}).json()
            return [e for e in page["entries"] if e["target"] == run["id"]]

        [deletion] = wait_until(deleted_by_retention, f"run {run['id']} to go by retention")
        assert (deletion["actor"], deletion["outcome"]) == ("retention", "ok")
        assert "PULLRUN_RETENTION_DAYS" in str(deletion["detail"])
        assert admin.get(f"/api/runs/{run['id']}").status_code == 404

        starts = admin.get("/api/audit", params={"action": "run.start"}).json()["entries"]
        seen = [(e["actor"], e["target"], e["outcome"]) for e in reversed(starts)]
        assert seen == [("ann", None, "denied")] * 3 + [("ann", run["id"], "ok")], seen
        details = [str(e["detail"]) for e in reversed(starts)]
        assert details[0].startswith("evil.example/miner: "), details
        assert details[1].startswith(f"{image}: ") and "memory" in details[1], details
        assert "image" in details[2], details
        assert all(e["client"] == "127.0.0.1" for e in starts)
    log = server.log()
    assert f"audit action=run.delete target='{run['id']}' actor='retention'" in log
    assert "audit action=run.start target=None actor='ann' client=127.0.0.1 outcome=denied" in log


# -- session expiry --------------------------------------------------------------------------


def signed_in_cookie(server: ServerProcess) -> str:
    """The session cookie a sign-in with the admin token gets (sent by hand
    from then on: the client's own jar would drop it at its Max-Age)."""
    with server.anonymous() as browser:
        response = browser.post("/login", data={"token": server.token or "", "next": "/"})
        assert response.status_code == 303, response.text
        return str(browser.cookies["pullrun_session"])


def with_cookie(server: ServerProcess, cookie: str, path: str = "/api/me") -> httpx.Response:
    with server.anonymous() as client:
        return client.get(path, headers={"Cookie": f"pullrun_session={cookie}"})


def wait_past(moment: float, what: str) -> None:
    """Wait for the monotonic clock to pass `moment` (a state: time gone by)."""
    wait_until(lambda: time.monotonic() > moment, what)


def test_a_session_left_unused_past_the_idle_timeout_ends(
    server_factory: ServerFactory,
) -> None:
    idle = 5.0  # a request at least every 1.25 s keeps it alive, even on a busy machine
    server = server_factory(session_idle_timeout=idle, session_max_age=3600)
    signed = time.monotonic()
    cookie = signed_in_cookie(server)
    # Used more often than the idle timeout, it lasts well past it.
    used = [with_cookie(server, cookie).status_code]
    while time.monotonic() < signed + 2 * idle:
        wait_past(time.monotonic() + idle / 4, "a quarter of the idle timeout")
        used.append(with_cookie(server, cookie).status_code)
    assert set(used) == {200}, used
    assert with_cookie(server, cookie).json()["via"] == "session"

    # Then left alone (the server is asked only anonymous questions meanwhile)
    # until the idle timeout has passed: one request finds it ended.
    last_use = time.monotonic()
    with server.anonymous() as anonymous:
        wait_until(
            lambda: (
                anonymous.get("/healthz").status_code == 200
                and time.monotonic() > last_use + idle + 1.0
            ),
            "the idle timeout to pass",
            interval=0.2,
        )
    ended = with_cookie(server, cookie)
    assert ended.status_code == 401, ended.text
    page = with_cookie(server, cookie, "/")
    assert page.status_code == 303 and page.headers["location"].startswith("/login"), page


def test_a_session_ends_at_its_max_age_even_while_it_is_used(
    server_factory: ServerFactory,
) -> None:
    max_age = 3.0
    server = server_factory(session_idle_timeout=3600, session_max_age=max_age)
    signed = time.monotonic()
    cookie = signed_in_cookie(server)
    statuses: list[int] = []

    def ended() -> bool:
        statuses.append(with_cookie(server, cookie).status_code)
        return statuses[-1] == 401

    wait_until(ended, "the session to reach its max age", interval=0.1)
    assert time.monotonic() - signed >= max_age  # not before (a lower bound only)
    assert len(statuses) > 5 and set(statuses[:-1]) == {200}, statuses
    page = with_cookie(server, cookie, "/")
    assert page.status_code == 303 and page.headers["location"].startswith("/login"), page


# -- HTTPS -----------------------------------------------------------------------------------


def test_serve_passes_its_certificate_to_uvicorn_and_the_cookie_is_secure(
    tmp_path: Path,
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        capture_output=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    port = free_port()
    env = dict(os.environ)
    env.update(
        PULLRUN_HOST="127.0.0.1", PULLRUN_PORT=str(port), PULLRUN_DATA_DIR=str(tmp_path / "d")
    )
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "backend.cli", "serve", "--log-level", "warning"),
                *("--ssl-certfile", str(cert), "--ssl-keyfile", str(key)),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"https://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, log_path.read_text()
            try:
                return httpx.get(base + "/healthz", verify=str(cert), timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, "the HTTPS server to answer /healthz")
        https_link = re.search(
            rf"https://127\.0\.0\.1:{port}/login#token=(pullrun_[\w-]+)", log_path.read_text()
        )
        assert https_link, log_path.read_text()
        with httpx.Client(base_url=base, verify=str(cert), timeout=30) as browser:
            signed = browser.post("/login", data={"token": https_link.group(1)})
            assert signed.status_code == 303
            assert "secure" in signed.headers["set-cookie"].lower().split("; ")
            assert browser.get("/api/me").json()["name"] == "admin"
    finally:
        proc.terminate()
        proc.wait(60)
