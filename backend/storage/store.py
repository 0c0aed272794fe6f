"""SQLite storage for run records (the event logs live in files beside it).

The database file is created 0600 (its -wal and -shm copy that mode). A write
that finds the filesystem full raises DiskFull (507), never a bare sqlite3
error.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson

from ..errors import DiskFull
from ..models import RunRecord, RunStatus
from .sqlite import open_database

_TERMINAL = [s.value for s in RunStatus if s.terminal]
_UNFINISHED = [s.value for s in RunStatus if not s.terminal]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, seq);
CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at);
"""


@contextlib.contextmanager
def _writing() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            raise DiskFull(
                f"the data dir is full: the run database answered {exc}; delete runs or make room"
            ) from exc
        raise


class RunStore:
    def __init__(self, path: Path) -> None:
        # One connection shared by the loop and worker threads, behind a lock.
        self._db = open_database(path, _SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @staticmethod
    def _encode(record: RunRecord) -> bytes:
        return orjson.dumps(record.model_dump(mode="json"))

    def insert(self, record: RunRecord) -> None:
        with self._lock, _writing():
            self._db.execute(
                "INSERT INTO runs (id, status, created_at, record) VALUES (?, ?, ?, ?)",
                (record.id, record.status.value, record.created_at, self._encode(record)),
            )

    def save(self, record: RunRecord) -> None:
        with self._lock, _writing():
            self._db.execute(
                "UPDATE runs SET status = ?, record = ? WHERE id = ?",
                (record.status.value, self._encode(record), record.id),
            )

    def get(self, run_id: str) -> RunRecord | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM runs WHERE id = ?", (run_id,)).fetchone()
        return RunRecord.model_validate_json(row[0]) if row else None

    def delete(self, run_id: str) -> None:
        with self._lock, _writing():
            self._db.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    def page(
        self, statuses: list[RunStatus] | None, cursor: str | None, limit: int
    ) -> tuple[list[RunRecord], str | None]:
        """Newest first; `cursor` is the id of the last run of the previous page."""
        where: list[str] = []
        args: list[object] = []
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args.extend(s.value for s in statuses)
        if cursor:
            where.append("seq < COALESCE((SELECT seq FROM runs WHERE id = ?), -1)")
            args.append(cursor)
        sql = "SELECT id, record FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit + 1)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        records = [RunRecord.model_validate_json(row[1]) for row in rows[:limit]]
        next_cursor = rows[limit - 1][0] if len(rows) > limit else None
        return records, next_cursor

    def unfinished(self) -> list[RunRecord]:
        """Runs not in a terminal status, oldest first. (`status IN` the others:
        a search of the status index, never a walk of the whole table.)"""
        with self._lock:
            rows = self._db.execute(
                f"SELECT record FROM runs WHERE status IN ({','.join('?' * len(_UNFINISHED))}) "
                "ORDER BY seq",
                _UNFINISHED,
            ).fetchall()
        return [RunRecord.model_validate_json(row[0]) for row in rows]

    def finished_oldest_first(
        self, limit: int, after: int = 0, created_before: str | None = None
    ) -> list[tuple[int, RunRecord]]:
        """(seq, record) of finished runs, oldest first, with seq > `after`;
        only those created before `created_before` (an RFC 3339 time) if given.

        Cheap: without a time, a walk of the table in seq order that stops at
        `limit` finished runs (the oldest runs are nearly all finished); with
        one, a range of the created_at index that is empty until runs are that old.
        """
        statuses = f"status IN ({','.join('?' * len(_TERMINAL))})"
        if created_before is None:
            sql = f"SELECT seq, record FROM runs NOT INDEXED WHERE seq > ? AND {statuses}"
            args: list[object] = [after, *_TERMINAL]
        else:
            sql = (
                "SELECT seq, record FROM runs INDEXED BY runs_by_created"
                f" WHERE created_at < ? AND seq > ? AND {statuses}"
            )
            args = [created_before, after, *_TERMINAL]
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [(int(row[0]), RunRecord.model_validate_json(row[1])) for row in rows]
