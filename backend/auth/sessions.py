"""Browser sessions, kept on the server.

The cookie holds a random id (256 bits); the table holds only its SHA-256, the
principal (a user or a token signed in through /login), a per-session CSRF
token and two times. A session ends when it has not been used for
`idle_timeout` seconds, `max_age` seconds after it began, on sign out, or when
its user is removed or its token revoked.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from .identity import Identity
from .store import AuthStore

COOKIE_NAME = "pullrun_session"
Clock = Callable[[], float]


@dataclass(frozen=True)
class Session:
    identity: Identity
    csrf_token: str
    created: float
    last_seen: float


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    def __init__(
        self,
        store: AuthStore,
        idle_timeout: float,
        max_age: float,
        clock: Clock = time.time,
    ) -> None:
        self.store = store
        self.idle_timeout = idle_timeout
        self.max_age = max_age
        self.clock = clock
        # last_seen is written at most this often per session (a read per
        # request, not a write): the idle expiry is that much coarser.
        self.touch_every = min(60.0, idle_timeout / 10)

    def create(self, kind: str, name: str) -> tuple[str, str]:
        """A new session for a user (`kind` "user") or a token ("token"):
        (the cookie's session id, its CSRF token)."""
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        self.store.add_session(_hash(session_id), kind, name, csrf, self.clock())
        return session_id, csrf

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id; None (and the row deleted) when it
        is unknown, expired, or its user or token is gone."""
        if not session_id or len(session_id) > 256:
            return None
        id_hash = _hash(session_id)
        row = self.store.session(id_hash)
        if row is None:
            return None
        now = self.clock()
        if now - row.last_seen >= self.idle_timeout or now - row.created >= self.max_age:
            self.store.delete_session(id_hash)
            return None
        last_seen = row.last_seen
        if now - last_seen >= self.touch_every:
            self.store.touch_session(id_hash, now)
            last_seen = now
        identity = Identity(name=row.name, role=row.role, via="session")
        return Session(identity, row.csrf, row.created, last_seen)

    def end(self, session_id: str | None) -> None:
        if session_id:
            self.store.delete_session(_hash(session_id))

    def purge(self) -> int:
        """Delete every expired session (done at start; `get` deletes the rest)."""
        now = self.clock()
        return self.store.purge_sessions(now - self.idle_timeout, now - self.max_age)
