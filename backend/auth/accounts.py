"""Managing users and API tokens (the `pullrun user` and `pullrun token` commands).

Each change is audited with the actor `cli`: whoever can run these commands
can read the data dir, which is already everything.
"""

from __future__ import annotations

from typing import Any

from .audit import Audit, now_rfc3339
from .names import check_name
from .passwords import check_password, hash_password
from .roles import Role
from .store import AuthStore
from .tokens import new_token, token_hash

ACTOR = "cli"


class Accounts:
    def __init__(self, store: AuthStore) -> None:
        self.store = store
        self.audit = Audit(store)

    def create_token(self, name: str, role: Role) -> str:
        """A new token, returned once (only its hash is kept). ValueError when
        the name is invalid or taken."""
        check_name(name)
        token = new_token()
        self.store.add_token(name, role, token_hash(token), now_rfc3339())
        self.audit.record(ACTOR, "token.create", name, detail=f"role {role.value}")
        return token

    def revoke_token(self, name: str) -> bool:
        gone = self.store.revoke_token(name)
        if gone:
            self.audit.record(ACTOR, "token.revoke", name)
        return gone

    def tokens(self) -> list[dict[str, Any]]:
        return list(self.store.tokens())

    def add_user(self, name: str, role: Role, password: str) -> None:
        check_name(name)
        check_password(password)
        self.store.add_user(name, role, hash_password(password), now_rfc3339())
        self.audit.record(ACTOR, "user.add", name, detail=f"role {role.value}")

    def remove_user(self, name: str) -> bool:
        gone = self.store.remove_user(name)
        if gone:
            self.audit.record(ACTOR, "user.remove", name)
        return gone

    def users(self) -> list[dict[str, Any]]:
        return list(self.store.users())
