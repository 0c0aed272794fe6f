"""Who is calling: a user (through a session), an API token, or anyone (auth off)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .roles import Role

Via = Literal["token", "session", "open"]


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role
    via: Via

    def allows(self, needed: Role) -> bool:
        return self.role.allows(needed)

    def can_manage(self, created_by: str | None) -> bool:
        """May cancel or delete (and see the env of) a run that `created_by` started:
        an admin any run, an operator their own, a viewer none."""
        if self.role is Role.ADMIN:
            return True
        return self.role is Role.OPERATOR and created_by is not None and created_by == self.name


# PULLRUN_AUTH=off: everyone is this identity.
OPEN_IDENTITY = Identity(name="anonymous", role=Role.ADMIN, via="open")
