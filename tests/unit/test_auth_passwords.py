"""Password hashing (argon2id) and the rules for passwords."""

from __future__ import annotations

import pytest

from backend.auth.passwords import (
    MAX_LENGTH,
    check_password,
    hash_password,
    needs_rehash,
    verify_password,
)


def test_a_password_is_hashed_with_argon2id_and_a_salt_of_its_own() -> None:
    first = hash_password("correct horse battery")
    second = hash_password("correct horse battery")
    assert first.startswith("$argon2id$")
    assert "m=65536" in first  # memory-hard: 64 MiB
    assert first != second  # salted
    assert "correct horse" not in first
    assert not needs_rehash(first)


def test_verify_accepts_the_password_and_nothing_else() -> None:
    encoded = hash_password("correct horse battery")
    assert verify_password(encoded, "correct horse battery")
    assert not verify_password(encoded, "correct horse batterY")
    assert not verify_password(encoded, "")
    assert not verify_password(encoded, "x" * (MAX_LENGTH + 1))
    assert not verify_password("not a hash", "correct horse battery")


def test_an_unknown_user_is_never_verified() -> None:
    # No hash: a check still runs (same time), and the answer is always no.
    assert not verify_password(
        None, "no such user: this hash only spends the time a real one would"
    )
    assert not verify_password(None, "anything")


@pytest.mark.parametrize("password", ["short", "", "x" * (MAX_LENGTH + 1)])
def test_passwords_too_short_or_too_long_are_refused(password: str) -> None:
    with pytest.raises(ValueError):
        check_password(password)


def test_a_reasonable_password_is_accepted() -> None:
    assert check_password("eight ch") == "eight ch"
