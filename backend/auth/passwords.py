"""Password hashing: argon2id (argon2-cffi, RFC 9106 low-memory profile)."""

from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 8
MAX_LENGTH = 1024  # longer is no safer; it only costs the hash time

_hasher = PasswordHasher()  # argon2id, 64 MiB, 3 passes, 4 lanes


def check_password(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise ValueError(f"a password may have at most {MAX_LENGTH} characters")
    return password


def hash_password(password: str) -> str:
    """An encoded argon2id hash (salt and parameters included)."""
    return _hasher.hash(password)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash("no such user: this hash only spends the time a real one would")


def verify_password(encoded: str | None, password: str) -> bool:
    """True when `password` matches `encoded`; with no hash (unknown user) it
    still spends the time of a check, so answers do not tell users apart."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(encoded or _dummy_hash(), password) and encoded is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(encoded: str) -> bool:
    return _hasher.check_needs_rehash(encoded)
