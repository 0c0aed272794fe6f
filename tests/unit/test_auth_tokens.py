"""API tokens: random, prefixed, stored only as SHA-256; shown once."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from backend.auth.accounts import Accounts
from backend.auth.roles import Role
from backend.auth.service import AuthService
from backend.auth.store import AuthStore, NameTaken
from backend.auth.tokens import PREFIX, looks_like_token, new_token, token_hash


def test_tokens_are_random_prefixed_and_high_entropy() -> None:
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    for token in list(tokens)[:20]:
        assert token.startswith(PREFIX) and looks_like_token(token)
        assert len(token) - len(PREFIX) == 43  # 32 random bytes, URL-safe base64


@pytest.mark.parametrize(
    "value", ["", "pullrun_", "pullrun_short", "Bearer pullrun_x", new_token()[:-1], "x" * 51]
)
def test_malformed_tokens_are_recognised_as_such(value: str) -> None:
    assert not looks_like_token(value)


def test_the_store_keeps_only_the_sha256_of_a_token(tmp_path: Path) -> None:
    path = tmp_path / "auth.db"
    with AuthStore(path) as store:
        token = Accounts(store).create_token("ci", Role.OPERATOR)
        assert token_hash(token) == hashlib.sha256(token.encode()).hexdigest()
        assert store.token(token_hash(token)) == ("ci", Role.OPERATOR, None)
        listed = Accounts(store).tokens()
        assert [t["name"] for t in listed] == ["ci"]
        assert token not in repr(listed)
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert token.encode() not in on_disk
    assert token.removeprefix(PREFIX).encode() not in on_disk
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_token_signs_in_until_it_is_revoked(tmp_path: Path) -> None:
    with AuthStore(tmp_path / "auth.db") as store:
        accounts = Accounts(store)
        token = accounts.create_token("ci", Role.VIEWER)
        auth = AuthService(store)
        identity = auth.by_token(token)
        assert identity is not None
        assert (identity.name, identity.role, identity.via) == ("ci", Role.VIEWER, "token")
        assert auth.by_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
        assert store.tokens()[0]["last_used_at"] is not None
        assert accounts.revoke_token("ci")
        assert auth.by_token(token) is None
        assert not accounts.revoke_token("ci")


def test_names_are_one_namespace_for_users_and_tokens(tmp_path: Path) -> None:
    with AuthStore(tmp_path / "auth.db") as store:
        accounts = Accounts(store)
        accounts.create_token("alice", Role.OPERATOR)
        with pytest.raises(NameTaken):
            accounts.create_token("alice", Role.ADMIN)
        with pytest.raises(NameTaken):
            accounts.add_user("alice", Role.VIEWER, "long enough password")
        for bad in ("", "-x", "a b", "x" * 65, "anonymous", "a/b"):
            with pytest.raises(ValueError):
                accounts.create_token(bad, Role.VIEWER)


def test_the_first_start_creates_one_admin_token_only_when_there_is_nobody(
    tmp_path: Path,
) -> None:
    with AuthStore(tmp_path / "auth.db") as store:
        auth = AuthService(store)
        token = auth.bootstrap()
        assert token is not None and looks_like_token(token)
        identity = auth.by_token(token)
        assert identity is not None and identity.role is Role.ADMIN
        assert auth.bootstrap() is None  # once
    with AuthStore(tmp_path / "other.db") as store:
        Accounts(store).add_user("bob", Role.VIEWER, "long enough password")
        assert AuthService(store).bootstrap() is None  # a user exists already
