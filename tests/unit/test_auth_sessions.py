"""Browser sessions: idle and absolute expiry (an injectable clock), sign out,
and the end of every session of a removed user or a revoked token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.auth.accounts import Accounts
from backend.auth.roles import Role
from backend.auth.service import AuthService
from backend.auth.store import AuthStore

pytestmark = pytest.mark.usefixtures("fast_passwords")

IDLE = 600.0
MAX_AGE = 3600.0
PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuthStore]:
    with AuthStore(tmp_path / "auth.db") as store:
        Accounts(store).add_user("alice", Role.OPERATOR, PASSWORD)
        yield store


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(store: AuthStore, clock: Clock) -> AuthService:
    return AuthService(
        store, session_idle_timeout=IDLE, session_max_age=MAX_AGE, max_failures=3, clock=clock
    )


def sign_in(auth: AuthService) -> str:
    result = auth.sign_in("alice", PASSWORD, "", "10.0.0.1")
    assert result.session_id is not None, result
    return result.session_id


def test_a_password_sign_in_makes_a_session_with_a_csrf_token(auth: AuthService) -> None:
    result = auth.sign_in("alice", PASSWORD, "", "10.0.0.1")
    assert result.error is None and result.session_id and result.csrf_token
    session = auth.by_session(result.session_id)
    assert session is not None
    assert (session.identity.name, session.identity.role, session.identity.via) == (
        "alice",
        Role.OPERATOR,
        "session",
    )
    assert session.csrf_token == result.csrf_token
    assert auth.by_session("made-up") is None
    assert auth.by_session(None) is None


def test_wrong_credentials_say_nothing_about_which_part_was_wrong(auth: AuthService) -> None:
    unknown = auth.sign_in("mallory", PASSWORD, "", "10.0.0.2")
    wrong = auth.sign_in("alice", "wrong password", "", "10.0.0.3")
    assert unknown.session_id is None and wrong.session_id is None
    assert unknown.error == wrong.error == "Wrong username or password."
    assert auth.sign_in("", "", "", "10.0.0.4").error


def test_the_session_id_is_kept_only_as_a_hash(auth: AuthService, store: AuthStore) -> None:
    session_id = sign_in(auth)
    on_disk = b"".join(p.read_bytes() for p in store.path.parent.iterdir() if p.is_file())
    assert session_id.encode() not in on_disk


def test_a_session_unused_for_the_idle_timeout_ends(auth: AuthService, clock: Clock) -> None:
    session_id = sign_in(auth)
    clock.now += IDLE - 1
    assert auth.by_session(session_id) is not None  # used: the idle clock restarts
    clock.now += IDLE - 1
    assert auth.by_session(session_id) is not None
    clock.now += IDLE
    assert auth.by_session(session_id) is None
    clock.now -= IDLE  # and it is gone for good, not only expired
    assert auth.by_session(session_id) is None


def test_a_session_ends_at_its_absolute_age_however_much_it_is_used(
    auth: AuthService, clock: Clock
) -> None:
    session_id = sign_in(auth)
    start = clock.now
    while clock.now + IDLE / 2 < start + MAX_AGE:
        clock.now += IDLE / 2
        assert auth.by_session(session_id) is not None
    clock.now = start + MAX_AGE
    assert auth.by_session(session_id) is None


def test_sign_out_ends_the_session(auth: AuthService) -> None:
    session_id = sign_in(auth)
    session = auth.by_session(session_id)
    assert session is not None
    auth.sign_out(session_id, session.identity, "10.0.0.1")
    assert auth.by_session(session_id) is None


def test_removing_the_user_or_revoking_the_token_ends_their_sessions(
    auth: AuthService, store: AuthStore
) -> None:
    accounts = Accounts(store)
    session_id = sign_in(auth)
    token = accounts.create_token("ci", Role.VIEWER)
    by_token = auth.sign_in("", "", token, "10.0.0.1")
    assert by_token.session_id is not None
    token_session = auth.by_session(by_token.session_id)
    assert token_session is not None and token_session.identity.name == "ci"
    accounts.remove_user("alice")
    accounts.revoke_token("ci")
    assert auth.by_session(session_id) is None
    assert auth.by_session(by_token.session_id) is None


def test_a_role_change_takes_effect_in_live_sessions(auth: AuthService, store: AuthStore) -> None:
    session_id = sign_in(auth)
    store._db.execute("UPDATE users SET role = 'viewer' WHERE name = 'alice'")
    session = auth.by_session(session_id)
    assert session is not None and session.identity.role is Role.VIEWER


def test_expired_sessions_are_purged(auth: AuthService, clock: Clock) -> None:
    first, second = sign_in(auth), sign_in(auth)
    clock.now += IDLE
    assert auth.sessions.purge() == 2
    assert auth.by_session(first) is None and auth.by_session(second) is None


def test_failed_sign_ins_are_limited_per_client_and_audited(
    auth: AuthService, store: AuthStore
) -> None:
    for _ in range(3):
        assert auth.sign_in("alice", "wrong password", "", "10.0.0.9").retry_after is None
    limited = auth.sign_in("alice", PASSWORD, "", "10.0.0.9")  # right, but too late
    assert limited.session_id is None and limited.retry_after is not None
    assert "Too many" in (limited.error or "")
    assert auth.sign_in("alice", PASSWORD, "", "10.0.0.10").session_id  # another client
    outcomes = [(e["action"], e["outcome"], e["client"]) for e in store.audit_page(None, 10)]
    assert outcomes[:2] == [("signin", "ok", "10.0.0.10"), ("signin", "rate_limited", "10.0.0.9")]
    assert outcomes.count(("signin", "failed", "10.0.0.9")) == 3
