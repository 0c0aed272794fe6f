"""AuthService: what the web layer asks of this package (one per app)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .audit import Audit, now_rfc3339
from .identity import Identity
from .passwords import hash_password, needs_rehash, verify_password
from .ratelimit import FailureLimiter
from .roles import Role
from .sessions import COOKIE_NAME, Clock, Session, Sessions
from .store import AuthStore
from .tokens import looks_like_token, new_token, token_hash

log = logging.getLogger(__name__)

BOOTSTRAP_TOKEN_NAME = "admin"
TOKEN_TOUCH_EVERY = 60.0  # seconds between writes of a token's last_used_at


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in attempt through /login."""

    identity: Identity | None = None
    session_id: str | None = None
    csrf_token: str | None = None
    error: str | None = None  # what to tell the person (never which part was wrong)
    retry_after: int | None = None  # set when rate limited


class AuthService:
    def __init__(
        self,
        store: AuthStore,
        *,
        required: bool = True,
        session_idle_timeout: float = 12 * 3600,
        session_max_age: float = 7 * 24 * 3600,
        max_failures: int = 5,
        failure_window: float = 60,
        clock: Clock = time.time,
    ) -> None:
        self.store = store
        self.required = required
        self.cookie_name = COOKIE_NAME
        self.sessions = Sessions(store, session_idle_timeout, session_max_age, clock)
        self.limiter = FailureLimiter(max_failures, failure_window)
        self.audit = Audit(store)
        self._token_touched: dict[str, float] = {}

    def close(self) -> None:
        self.store.close()

    # -- each request ------------------------------------------------------------------

    def by_token(self, token: str) -> Identity | None:
        """The identity of a bearer token, or None (unknown, revoked, malformed)."""
        if not looks_like_token(token):
            return None
        found = self.store.token(token_hash(token))
        if found is None:
            return None
        name, role, _ = found
        now = time.monotonic()
        if now - self._token_touched.get(name, -TOKEN_TOUCH_EVERY) >= TOKEN_TOUCH_EVERY:
            self._token_touched[name] = now
            self.store.touch_token(name, now_rfc3339())
        return Identity(name=name, role=role, via="token")

    def by_session(self, session_id: str | None) -> Session | None:
        return self.sessions.get(session_id)

    # -- /login and /logout --------------------------------------------------------------

    def sign_in(self, username: str, password: str, token: str, client: str) -> SignIn:
        """A password (username + password) or a token; a session when right."""
        wait = self.limiter.retry_after(client)
        if wait is not None:
            self.audit.record(
                username or "(token)", "signin", outcome="rate_limited", client=client
            )
            return SignIn(
                error=f"Too many failed sign-ins: try again in {wait} s.", retry_after=wait
            )
        identity: Identity | None = None
        kind = "token" if token else "user"
        if token:
            found = self.by_token(token)
            identity = Identity(found.name, found.role, "session") if found else None
            failure = "Unknown or revoked token."
        elif username and password:
            user = self.store.user(username)
            if verify_password(user[1] if user else None, password) and user is not None:
                identity = Identity(username, user[0], "session")
                if needs_rehash(user[1]):
                    self.store.set_password_hash(username, hash_password(password))
            failure = "Wrong username or password."
        else:
            return SignIn(error="Enter a username and a password, or a token.")
        actor = identity.name if identity else (username or "(token)")
        if identity is None:
            self.limiter.failed(client)
            self.audit.record(actor, "signin", outcome="failed", client=client, detail=kind)
            return SignIn(error=failure)
        self.limiter.succeeded(client)
        session_id, csrf = self.sessions.create(kind, identity.name)
        self.audit.record(actor, "signin", client=client, detail=kind)
        return SignIn(identity=identity, session_id=session_id, csrf_token=csrf)

    def sign_out(self, session_id: str | None, identity: Identity, client: str) -> None:
        self.sessions.end(session_id)
        self.audit.record(identity.name, "signout", client=client)

    # -- first start ---------------------------------------------------------------------

    def bootstrap(self) -> str | None:
        """With no user and no token yet: a new admin token (returned once), else None."""
        if not self.store.is_empty():
            return None
        token = new_token()
        self.store.add_token(BOOTSTRAP_TOKEN_NAME, Role.ADMIN, token_hash(token), now_rfc3339())
        self.audit.record(
            "system", "token.create", BOOTSTRAP_TOKEN_NAME, detail="first start: role admin"
        )
        return token
