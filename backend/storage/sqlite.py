"""Opening pullrun's SQLite databases (runs, and sign-in's): private files,
WAL, one connection shared by threads behind its owner's lock."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .space import private_dir, private_file

BUSY_TIMEOUT_MS = 10_000  # another process (`pullrun token create`) may be writing


def open_database(path: Path, schema: str) -> sqlite3.Connection:
    """The database at `path` with `schema` applied: its folder 0700 and its
    files 0600 (the -wal and -shm files copy the database file's mode, and
    ones left looser by an older version are tightened)."""
    private_dir(path.parent)
    private_file(path)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            private_file(side)
    db = sqlite3.connect(
        path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
    )
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db
