"""Sign-in through the web app, in-process: the /login page and form, the
session cookie and its flags, CSRF for cookie requests (not for bearer
tokens), sign out, who may cancel or delete which run, `created_by`, the
audit trail and PULLRUN_AUTH=off. The same against the real server:
tests/integration/test_auth.py."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.auth.accounts import Accounts
from backend.auth.roles import Role
from backend.auth.store import AuthStore
from backend.engines.fake import FakeDocker
from backend.settings import Settings
from backend.web.app import create_app
from backend.web.signin import safe_next
from tests.unit.conftest import BASE, bearer, make_token, wait_until

pytestmark = pytest.mark.usefixtures("fast_passwords")

BASE_URL = "http://127.0.0.1"
PASSWORD = "correct horse battery"
COOKIE = "pullrun_session"

Clients = Callable[..., TestClient]


@pytest.fixture
def users(settings: Settings) -> dict[str, str]:
    """Users alice (operator), bob (operator), vera (viewer), and API tokens per role."""
    with AuthStore(settings.auth_db_path) as store:
        accounts = Accounts(store)
        for name, role in (("alice", "operator"), ("bob", "operator"), ("vera", "viewer")):
            accounts.add_user(name, Role(role), PASSWORD)
    return {role: make_token(settings, f"{role}-token", role) for role in Role}


@pytest.fixture
def clients(settings: Settings, daemon: FakeDocker, users: dict[str, str]) -> Iterator[Clients]:
    """clients(base_url=...) -> another TestClient of the same app (its own cookies)."""
    app = create_app(settings, engine_factory=daemon)
    opened: list[TestClient] = []

    def make(base_url: str = BASE_URL) -> TestClient:
        client = TestClient(app, base_url=base_url, follow_redirects=False)
        if not opened:
            client.__enter__()  # the lifespan: once, for the app
        opened.append(client)
        return client

    try:
        yield make
    finally:
        daemon.close()
        opened[0].__exit__(None, None, None)


def sign_in(client: TestClient, next_path: str = "/", **form: str) -> Any:
    return client.post("/login", data={"next": next_path, **form})


def signed_in(clients: Clients, username: str) -> tuple[TestClient, str]:
    """A client with alice's (or another user's) session; its CSRF token."""
    client = clients()
    response = sign_in(client, username=username, password=PASSWORD)
    assert response.status_code == 303, response.text
    page = client.get("/")
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert match, page.text[:500]
    return client, match.group(1)


def body(**extra: Any) -> dict[str, Any]:
    return {"image": BASE, "command": ["true"], **extra}


def wait_finished(client: TestClient, run_id: str, headers: dict[str, str]) -> None:
    wait_until(
        lambda: client.get(f"/api/runs/{run_id}", headers=headers).json()["finished_at"],
        f"run {run_id} to finish",
    )


# -- the sign-in page -------------------------------------------------------------------


def test_the_login_page_has_its_labelled_fields_and_no_inline_script(
    clients: Clients,
) -> None:
    page = clients().get("/login?next=/runs/abc")
    assert page.status_code == 200
    for label in ("Username", "Password", "Token"):
        assert re.search(rf"<label for=\"f-\w+\">{label}</label>", page.text), label
    assert re.search(r"<button type=\"submit\"[^>]*>Sign in</button>", page.text)
    assert 'name="next" value="/runs/abc"' in page.text
    assert '<form id="login-form" method="post" action="/login">' in page.text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    for attributes, content in scripts:
        assert "src=" in attributes or 'type="application/json"' in attributes, attributes
        assert "src=" not in attributes or not content.strip()
    assert '<script type="module" src="/static/js/login.js"></script>' in page.text


def test_a_page_without_a_session_redirects_to_login_and_back(clients: Clients) -> None:
    client = clients()
    response = client.get("/runs/abc?x=1")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fruns%2Fabc%3Fx%3D1"
    signed = sign_in(client, "/runs/abc?x=1", username="alice", password=PASSWORD)
    assert signed.status_code == 303 and signed.headers["location"] == "/runs/abc?x=1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/runs/abc?x=1", "/runs/abc?x=1"),
        ("/", "/"),
        (None, "/"),
        ("", "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
        ("/login?next=/x", "/"),
        ("runs/abc", "/"),
    ],
)
def test_next_is_only_ever_a_local_path(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected


def test_the_session_cookie_flags(clients: Clients, users: dict[str, str]) -> None:
    response = sign_in(clients(), token=users["viewer"])
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=lax", "path=/"} <= flags
    assert "secure" not in flags  # plain http: a Secure cookie would never come back
    secure = sign_in(clients("https://127.0.0.1"), token=users["viewer"])
    assert "secure" in {p.strip().lower() for p in secure.headers["set-cookie"].split(";")}


def test_wrong_credentials_get_the_form_again_with_an_error_and_no_cookie(
    clients: Clients,
) -> None:
    client = clients()
    response = sign_in(client, username="alice", password="wrong password")
    assert response.status_code == 401
    assert "Wrong username or password." in response.text
    assert 'value="alice"' in response.text  # the username stays, the password does not
    assert "set-cookie" not in response.headers
    token = sign_in(client, token="pullrun_" + "B" * 43)
    assert token.status_code == 401 and "Unknown or revoked token." in token.text


def test_failed_sign_ins_are_rate_limited_with_retry_after(
    clients: Clients, settings: Settings
) -> None:
    client = clients()
    for _ in range(settings.signin_max_failures):
        assert sign_in(client, username="alice", password="nope nope").status_code == 401
    limited = sign_in(client, username="alice", password=PASSWORD)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert "set-cookie" not in limited.headers


# -- cookies and CSRF -----------------------------------------------------------------------


def test_cookie_requests_that_change_something_need_the_csrf_token(clients: Clients) -> None:
    client, csrf = signed_in(clients, "alice")
    assert client.get("/api/runs").status_code == 200  # reading needs none
    refused = client.post("/api/runs", json=body())
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
    wrong = client.post("/api/runs", json=body(), headers={"X-CSRF-Token": csrf[:-1] + "x"})
    assert wrong.status_code == 403
    made = client.post("/api/runs", json=body(), headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201, made.text
    assert made.json()["created_by"] == "alice"


def test_bearer_requests_need_no_csrf_token(clients: Clients, users: dict[str, str]) -> None:
    made = clients().post("/api/runs", json=body(), headers=bearer(users["operator"]))
    assert made.status_code == 201
    assert made.json()["created_by"] == "operator-token"


def test_another_sessions_csrf_token_does_not_do(clients: Clients) -> None:
    alice, _ = signed_in(clients, "alice")
    _, bobs = signed_in(clients, "bob")
    assert alice.post("/api/runs", json=body(), headers={"X-CSRF-Token": bobs}).status_code == 403


def test_pages_show_who_is_signed_in_and_a_sign_out_form(clients: Clients) -> None:
    client, csrf = signed_in(clients, "vera")
    page = client.get("/").text
    assert '<strong id="signed-in-name">vera</strong>' in page
    assert '<form class="signout" method="post" action="/logout">' in page
    assert f'<input type="hidden" name="csrf_token" value="{csrf}">' in page


def test_sign_out_needs_the_csrf_token_and_ends_the_session(clients: Clients) -> None:
    client, csrf = signed_in(clients, "vera")
    assert client.post("/logout", data={}).status_code == 403
    assert client.get("/api/runs").status_code == 200  # still signed in
    out = client.post("/logout", data={"csrf_token": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert 'pullrun_session=""' in out.headers["set-cookie"]
    assert client.get("/api/runs").status_code == 401
    assert client.get("/").status_code == 303


def test_a_session_cookie_that_was_never_issued_gets_nowhere(clients: Clients) -> None:
    client = clients()
    client.cookies.set(COOKIE, "chosen-by-an-attacker")
    assert client.get("/api/runs").status_code == 401
    response = sign_in(client, username="alice", password=PASSWORD)
    assert "chosen-by-an-attacker" not in response.headers["set-cookie"]  # a new id


# -- roles and runs -----------------------------------------------------------------------


def test_operators_cancel_and_delete_only_their_own_runs_admins_any(
    clients: Clients, users: dict[str, str], daemon: FakeDocker, settings: Settings
) -> None:
    client = clients()
    alice, alice_csrf = signed_in(clients, "alice")
    bob, bob_csrf = signed_in(clients, "bob")
    daemon.program(["hang"], _hang(daemon))
    run = alice.post("/api/runs", json=body(command=["hang"]), headers={"X-CSRF-Token": alice_csrf})
    run_id = run.json()["id"]
    admin = bearer(users["admin"])

    denied = bob.post(f"/api/runs/{run_id}/cancel", headers={"X-CSRF-Token": bob_csrf})
    assert denied.status_code == 403 and "someone else" in denied.json()["error"]["message"]
    viewer = client.post(f"/api/runs/{run_id}/cancel", headers=bearer(users["viewer"]))
    assert viewer.status_code == 403
    mine = alice.post(f"/api/runs/{run_id}/cancel", headers={"X-CSRF-Token": alice_csrf})
    assert mine.status_code == 202
    wait_finished(client, run_id, admin)
    deleted = bob.delete(f"/api/runs/{run_id}", headers={"X-CSRF-Token": bob_csrf})
    assert deleted.status_code == 403
    assert client.delete(f"/api/runs/{run_id}", headers=admin).status_code == 204

    other = bob.post("/api/runs", json=body(), headers={"X-CSRF-Token": bob_csrf}).json()["id"]
    wait_finished(client, other, admin)
    assert client.delete(f"/api/runs/{other}", headers=admin).status_code == 204  # admin: any


def _hang(daemon: FakeDocker) -> Any:
    from backend.engines.fake import Program, stdout

    return Program(output=[stdout(b"started\n"), daemon.gate("forever")])


def test_created_by_is_in_the_api_the_runs_table_and_the_run_page(
    clients: Clients,
) -> None:
    alice, csrf = signed_in(clients, "alice")
    run = alice.post("/api/runs", json=body(), headers={"X-CSRF-Token": csrf}).json()
    assert run["created_by"] == "alice"
    assert alice.get(f"/api/runs/{run['id']}").json()["created_by"] == "alice"
    assert [r["created_by"] for r in alice.get("/api/runs").json()["runs"]] == ["alice"]
    assert '<td class="c-by">alice</td>' in alice.get("/").text
    assert '<dd id="created-by">alice</dd>' in alice.get(f"/runs/{run['id']}").text


def test_the_audit_trail_records_runs_and_sign_ins_for_admins_only(
    clients: Clients, users: dict[str, str]
) -> None:
    client = clients()
    sign_in(client, username="alice", password="wrong password")
    alice, csrf = signed_in(clients, "alice")
    run_id = alice.post("/api/runs", json=body(), headers={"X-CSRF-Token": csrf}).json()["id"]
    alice.post(f"/api/runs/{run_id}/cancel", headers={"X-CSRF-Token": csrf})
    assert client.get("/api/audit", headers=bearer(users["operator"])).status_code == 403
    page = client.get("/api/audit", headers=bearer(users["admin"])).json()
    entries = [(e["actor"], e["action"], e["target"], e["outcome"]) for e in page["entries"]]
    assert ("alice", "signin", None, "failed") in entries
    assert ("alice", "signin", None, "ok") in entries
    assert ("alice", "run.start", run_id, "ok") in entries
    assert ("cli", "user.add", "alice", "ok") in entries
    ids = [e["id"] for e in page["entries"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    assert all(e["client"] for e in page["entries"] if e["action"] == "signin")

    first = client.get("/api/audit?limit=2", headers=bearer(users["admin"])).json()
    assert len(first["entries"]) == 2 and first["next_cursor"] == first["entries"][1]["id"]
    second = client.get(
        f"/api/audit?limit=2&cursor={first['next_cursor']}", headers=bearer(users["admin"])
    ).json()
    assert second["entries"][0]["id"] < first["entries"][1]["id"]
    only = client.get("/api/audit?action=run.start", headers=bearer(users["admin"])).json()
    assert {e["action"] for e in only["entries"]} == {"run.start"}


def test_run_starts_refused_by_policy_or_validation_are_audited_as_denied(
    clients: Clients, users: dict[str, str], settings: Settings
) -> None:
    settings.allowed_images = ["127.0.0.1:5000/*"]  # not BASE
    operator = clients()
    headers = bearer(users["operator"])
    refused = operator.post("/api/runs", json=body(), headers=headers)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "policy_denied"
    too_big = body(image="127.0.0.1:5000/x", memory=str(64 * 1024**3))
    assert operator.post("/api/runs", json=too_big, headers=headers).status_code == 422
    invalid = operator.post("/api/runs", json={"command": ["true"]}, headers=headers)
    assert invalid.status_code == 422
    malformed = operator.post(
        "/api/runs", content=b"{", headers={**headers, "Content-Type": "application/json"}
    )
    assert malformed.status_code == 422
    # Neither a viewer's refused start nor an anonymous caller's bad body is a run.start.
    assert (
        operator.post("/api/runs", json=body(), headers=bearer(users["viewer"])).status_code == 403
    )
    assert clients().post("/api/runs", json={}).status_code in (401, 422)

    page = operator.get("/api/audit?action=run.start", headers=bearer(users["admin"])).json()
    entries = [(e["actor"], e["target"], e["outcome"], e["detail"]) for e in page["entries"]]
    assert len(entries) == 4, entries
    assert all(e[:3] == ("operator-token", None, "denied") for e in entries), entries
    details = [e[3] for e in reversed(entries)]
    assert details[0].startswith(f"{BASE}: ") and "not allowed" in details[0], details
    assert details[1].startswith("127.0.0.1:5000/x: ") and "memory" in details[1], details
    assert "image" in details[2], details
    assert details[3], details


def test_runs_deleted_by_retention_are_in_the_audit_trail(
    clients: Clients, users: dict[str, str]
) -> None:
    client = clients()
    headers = bearer(users["operator"])
    run_id = client.post("/api/runs", json=body(), headers=headers).json()["id"]
    wait_finished(client, run_id, headers)
    runner = client.app.state.runner  # type: ignore[attr-defined]
    runner.settings.max_disk_bytes = 1  # nothing fits: every finished run goes
    runner.retention.sweep()  # (or the one that followed the run's end, if it comes first)
    assert client.get(f"/api/runs/{run_id}", headers=headers).status_code == 404
    page = client.get("/api/audit?action=run.delete", headers=bearer(users["admin"])).json()
    [entry] = page["entries"]
    assert (entry["actor"], entry["target"], entry["outcome"]) == ("retention", run_id, "ok")
    assert "PULLRUN_MAX_DISK_BYTES" in entry["detail"]
    assert entry["client"] is None


def test_api_me_says_who_is_calling(clients: Clients, users: dict[str, str]) -> None:
    me = clients().get("/api/me", headers=bearer(users["viewer"])).json()
    assert me == {"name": "viewer-token", "role": "viewer", "via": "token"}
    alice, _ = signed_in(clients, "alice")
    assert alice.get("/api/me").json() == {"name": "alice", "role": "operator", "via": "session"}


# -- PULLRUN_AUTH=off -----------------------------------------------------------------------


def test_auth_off_is_refused_on_a_host_that_is_not_loopback(settings: Settings) -> None:
    with pytest.raises(RuntimeError, match="PULLRUN_AUTH=off is refused"):
        create_app(settings.model_copy(update={"auth": "off", "host": "0.0.0.0"}))


def test_auth_off_on_loopback_lets_everyone_in_as_anonymous(
    settings: Settings, daemon: FakeDocker
) -> None:
    app = create_app(settings.model_copy(update={"auth": "off"}), engine_factory=daemon)
    with TestClient(app, base_url=BASE_URL, follow_redirects=False) as client:
        made = client.post("/api/runs", json=body())
        assert made.status_code == 201 and made.json()["created_by"] == "anonymous"
        assert client.get("/api/audit").status_code == 200
        assert client.get("/").status_code == 200
        assert client.get("/login?next=/runs/x").headers["location"] == "/runs/x"
        daemon.close()
