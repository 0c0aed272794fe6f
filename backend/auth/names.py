"""Names of users and API tokens: one namespace (a run's `created_by` is a name)."""

from __future__ import annotations

import re

NAME_RULE = "1-64 characters: letters, digits and . _ @ -, starting with a letter or digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
RESERVED = frozenset({"anonymous", "cli", "system"})


def check_name(name: str) -> str:
    """`name` when it is a valid user or token name, else ValueError saying why."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid name {name!r}: {NAME_RULE}")
    if name.lower() in RESERVED:
        raise ValueError(f"the name {name!r} is reserved")
    return name
