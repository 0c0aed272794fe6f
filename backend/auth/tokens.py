"""API tokens: random, recognisable by their prefix, stored only as SHA-256.

A token is `pullrun_` and 43 URL-safe characters (256 random bits). The
server keeps its SHA-256 (a fast hash is enough for that much entropy) and
shows the token once, when it is created.
"""

from __future__ import annotations

import hashlib
import re
import secrets

PREFIX = "pullrun_"
_SHAPE = re.compile(re.escape(PREFIX) + r"[A-Za-z0-9_-]{43}")


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def looks_like_token(value: str) -> bool:
    return _SHAPE.fullmatch(value) is not None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
