"""SQLite storage for run records (the event logs live in files beside it)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import orjson

from ..models import RunRecord, RunStatus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, seq);
"""


class RunStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the loop and worker threads, behind a lock.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @staticmethod
    def _encode(record: RunRecord) -> bytes:
        return orjson.dumps(record.model_dump(mode="json"))

    def insert(self, record: RunRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO runs (id, status, created_at, record) VALUES (?, ?, ?, ?)",
                (record.id, record.status.value, record.created_at, self._encode(record)),
            )

    def save(self, record: RunRecord) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE runs SET status = ?, record = ? WHERE id = ?",
                (record.status.value, self._encode(record), record.id),
            )

    def get(self, run_id: str) -> RunRecord | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM runs WHERE id = ?", (run_id,)).fetchone()
        return RunRecord.model_validate_json(row[0]) if row else None

    def delete(self, run_id: str) -> None:
        with self._lock:
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
        terminal = [s.value for s in RunStatus if s.terminal]
        with self._lock:
            rows = self._db.execute(
                f"SELECT record FROM runs WHERE status NOT IN ({','.join('?' * len(terminal))})",
                terminal,
            ).fetchall()
        return [RunRecord.model_validate_json(row[0]) for row in rows]
