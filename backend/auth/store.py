"""SQLite tables for users, API tokens, browser sessions and the audit trail.

One file in the data dir (`auth.db`, mode 0600), shared by the server and the
`pullrun token`/`pullrun user` commands while the server runs: WAL journal
(readers never wait for a writer) and a busy timeout (a writer waits for the
other's short transaction instead of failing).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..storage.sqlite import open_database
from .roles import Role

AUDIT_KEEP = 100_000  # rows; the oldest beyond this are dropped
_AUDIT_PRUNE_EVERY = 1_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    hash TEXT UNIQUE NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_name ON sessions (kind, name);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    outcome TEXT NOT NULL,
    client TEXT,
    detail TEXT
);
"""


class NameTaken(ValueError):
    pass


@dataclass(frozen=True)
class SessionRow:
    kind: str  # "user" | "token"
    name: str
    role: Role
    csrf: str
    created: float
    last_seen: float


class AuthStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_database(path, _SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AuthStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: checks and writes that must not interleave."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- principals ------------------------------------------------------------------

    def is_empty(self) -> bool:
        """No user and no token: the first start creates an admin token."""
        rows = self._read("SELECT (SELECT COUNT(*) FROM users) + (SELECT COUNT(*) FROM tokens)")
        return int(rows[0][0]) == 0

    @staticmethod
    def _check_free(db: sqlite3.Connection, name: str) -> None:
        for table, what in (("users", "a user"), ("tokens", "a token")):
            if db.execute(f"SELECT 1 FROM {table} WHERE name = ?", (name,)).fetchone():
                raise NameTaken(f"{what} named {name!r} exists already")

    def add_user(self, name: str, role: Role, password_hash: str, at: str) -> None:
        with self._write() as db:
            self._check_free(db, name)
            db.execute(
                "INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)",
                (name, role.value, password_hash, at),
            )

    def remove_user(self, name: str) -> bool:
        with self._write() as db:
            gone = db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount > 0
            db.execute("DELETE FROM sessions WHERE kind = 'user' AND name = ?", (name,))
        return gone

    def user(self, name: str) -> tuple[Role, str] | None:
        """(role, password hash) of a user, or None."""
        rows = self._read("SELECT role, password_hash FROM users WHERE name = ?", (name,))
        return (Role(rows[0][0]), str(rows[0][1])) if rows else None

    def set_password_hash(self, name: str, password_hash: str) -> None:
        with self._write() as db:
            db.execute("UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name))

    def users(self) -> list[dict[str, str]]:
        rows = self._read("SELECT name, role, created_at FROM users ORDER BY name")
        return [{"name": n, "role": r, "created_at": c} for n, r, c in rows]

    def add_token(self, name: str, role: Role, token_hash: str, at: str) -> None:
        with self._write() as db:
            self._check_free(db, name)
            db.execute(
                "INSERT INTO tokens (name, role, hash, created_at) VALUES (?, ?, ?, ?)",
                (name, role.value, token_hash, at),
            )

    def revoke_token(self, name: str) -> bool:
        with self._write() as db:
            gone = db.execute("DELETE FROM tokens WHERE name = ?", (name,)).rowcount > 0
            db.execute("DELETE FROM sessions WHERE kind = 'token' AND name = ?", (name,))
        return gone

    def token(self, token_hash: str) -> tuple[str, Role, str | None] | None:
        """(name, role, last_used_at) of the token with this hash, or None."""
        rows = self._read(
            "SELECT name, role, last_used_at FROM tokens WHERE hash = ?", (token_hash,)
        )
        return (str(rows[0][0]), Role(rows[0][1]), rows[0][2]) if rows else None

    def touch_token(self, name: str, at: str) -> None:
        with self._lock:
            self._db.execute("UPDATE tokens SET last_used_at = ? WHERE name = ?", (at, name))

    def tokens(self) -> list[dict[str, str | None]]:
        rows = self._read("SELECT name, role, created_at, last_used_at FROM tokens ORDER BY name")
        return [{"name": n, "role": r, "created_at": c, "last_used_at": u} for n, r, c, u in rows]

    # -- sessions --------------------------------------------------------------------

    def add_session(self, id_hash: str, kind: str, name: str, csrf: str, now: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO sessions (id_hash, kind, name, csrf, created, last_seen)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (id_hash, kind, name, csrf, now, now),
            )

    def session(self, id_hash: str) -> SessionRow | None:
        """The session and its principal's current role; None when either is gone."""
        rows = self._read(
            "SELECT s.kind, s.name, s.csrf, s.created, s.last_seen, COALESCE(u.role, t.role)"
            " FROM sessions s"
            " LEFT JOIN users u ON s.kind = 'user' AND u.name = s.name"
            " LEFT JOIN tokens t ON s.kind = 'token' AND t.name = s.name"
            " WHERE s.id_hash = ?",
            (id_hash,),
        )
        if not rows or rows[0][5] is None:
            return None
        kind, name, csrf, created, last_seen, role = rows[0]
        return SessionRow(kind, name, Role(role), csrf, float(created), float(last_seen))

    def touch_session(self, id_hash: str, now: float) -> None:
        with self._lock:
            self._db.execute("UPDATE sessions SET last_seen = ? WHERE id_hash = ?", (now, id_hash))

    def delete_session(self, id_hash: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,))

    def purge_sessions(self, idle_before: float, created_before: float) -> int:
        with self._lock:
            return self._db.execute(
                "DELETE FROM sessions WHERE last_seen <= ? OR created <= ?",
                (idle_before, created_before),
            ).rowcount

    # -- audit -----------------------------------------------------------------------

    def add_audit(
        self,
        at: str,
        actor: str,
        action: str,
        target: str | None,
        outcome: str,
        client: str | None,
        detail: str | None,
    ) -> int:
        with self._lock:
            seq = self._db.execute(
                "INSERT INTO audit (at, actor, action, target, outcome, client, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (at, actor, action, target, outcome, client, detail),
            ).lastrowid
            assert seq is not None
            if seq % _AUDIT_PRUNE_EVERY == 0:
                self._db.execute("DELETE FROM audit WHERE seq <= ?", (seq - AUDIT_KEEP,))
        return seq

    def audit_page(
        self, before: int | None, limit: int, action: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; `before`: only entries older than that seq."""
        where: list[str] = []
        args: list[object] = []
        if before is not None:
            where.append("seq < ?")
            args.append(before)
        if action:
            where.append("action = ?")
            args.append(action)
        sql = "SELECT seq, at, actor, action, target, outcome, client, detail FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        keys = ("id", "at", "actor", "action", "target", "outcome", "client", "detail")
        return [dict(zip(keys, row, strict=True)) for row in self._read(sql, tuple(args))]
