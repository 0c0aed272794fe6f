"""Identities and sign-in: roles, users, API tokens, sessions, CSRF, the audit trail.

This package sits beside `storage`: it imports nothing from `web` or `runs`.
"""

from __future__ import annotations

from .identity import Identity
from .roles import Role

__all__ = ["Identity", "Role"]
