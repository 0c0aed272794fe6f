"""The data dir on disk: private modes, what its files use, the room kept free.

- Modes: the data dir and `events/` are 0700, every file in them 0600
  (`private_dir`, `private_file`; `DataDirSpace.prepare` also tightens what
  an older version or another tool left looser).
- Use: a running total of the event files' sizes (counted once at start, then
  kept up to date by every append and every delete, so retention never walks
  the folder), plus the databases beside them.
- Room: `min_free_bytes` stay free on the filesystem. Output that would go
  below it is refused with `DiskFull` (the run ends with `error`), so the
  `done` of every run and the final save of its record always have room (see
  EventLog). A new run is refused below twice that: it would have no room
  for output.
- Reserve: `reserve()` preallocates room past a file's end without changing
  its size (fallocate KEEP_SIZE, Linux), so a run's `done` has room even when
  something else fills the filesystem.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import DiskFull

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
DB_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal")
_FALLOC_FL_KEEP_SIZE = 1


def private_dir(path: Path) -> None:
    """Create `path` (and its parents) 0700, or tighten it when it exists."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(path, DIR_MODE)


def private_file(path: Path) -> None:
    """Create `path` empty and 0600 unless it exists (then tighten it).

    For SQLite: its -wal and -shm files copy the database file's mode.
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    _tighten(path, FILE_MODE)


def _tighten(path: Path, mode: int, st: os.stat_result | None = None) -> None:
    try:
        st = st or os.stat(path)
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(st.st_mode) & mode)
    except OSError as exc:  # not ours, or gone: say so, never fail the server for it
        log.warning("could not make %s private: %s", path, exc)


def _free(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def human(n: int) -> str:
    """1.5 MiB, 64 KiB, 900 bytes."""
    if n >= 1024**2:
        return f"{n / 1024**2:.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.0f} KiB"
    return f"{n} bytes"


# -- preallocation ---------------------------------------------------------------------


def _load_fallocate() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    fn = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_fallocate = _load_fallocate()


def reserve(fd: int, offset: int, length: int) -> bool:
    """Allocate [offset, offset+length) of `fd` without changing its size.

    True when done; False when the system or filesystem cannot preallocate
    (the caller goes on without a reserve); OSError(ENOSPC) when there is no
    room. Released by truncating the file to its size.
    """
    if _fallocate is None:
        return False
    if _fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in FULL_ERRNOS:
        raise OSError(err, os.strerror(err))
    return False  # EOPNOTSUPP, ENOSYS, EINVAL...: no preallocation here


# -- the data dir ----------------------------------------------------------------------


class DataDirSpace:
    """One per server: the events total, the free-space check, and `lock`,
    under which a writer checks the room and claims it (so concurrent runs
    never go below `min_free_bytes` together)."""

    def __init__(self, data_dir: Path, min_free_bytes: int) -> None:
        self.data_dir = data_dir
        self.events_dir = data_dir / "events"
        self.min_free = min_free_bytes
        self.lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._events_bytes = 0
        self.events_written = 0  # events appended to run logs (GET /metrics)
        self._folders = [self.data_dir]  # one per filesystem: events/ may be a mount

    def prepare(self) -> None:
        """Make the data dir and events/ private, count the event files (and
        tighten any file an older version left readable)."""
        private_dir(self.data_dir)
        private_dir(self.events_dir)
        if self.events_dir.stat().st_dev != self.data_dir.stat().st_dev:
            self._folders = [self.data_dir, self.events_dir]
        total = 0
        for folder in (self.data_dir, self.events_dir):
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        _tighten(Path(entry.path), FILE_MODE, st)
                        if folder is self.events_dir:
                            total += st.st_size
        with self._count_lock:
            self._events_bytes = total

    # -- use ---------------------------------------------------------------------------

    @property
    def events_bytes(self) -> int:
        """The event files' total size, as counted (no walk)."""
        return self._events_bytes

    def grew(self, n: int) -> None:
        """An event of `n` bytes was written to a run's log."""
        with self._count_lock:
            self._events_bytes += n
            self.events_written += 1

    def remove(self, path: Path) -> int:
        """Delete an event file; the bytes freed (0 when it was not there)."""
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        with self._count_lock:
            self._events_bytes = max(0, self._events_bytes - size)
        return size

    def used(self) -> int:
        """Event files (counted) plus the databases beside them (`*.db` and
        their -wal, -shm, -journal: a few stats)."""
        total = self._events_bytes
        with os.scandir(self.data_dir) as entries:
            for entry in entries:
                if not entry.name.endswith(DB_SUFFIXES):
                    continue
                with contextlib.suppress(OSError):
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
        return total

    # -- room --------------------------------------------------------------------------

    def free(self) -> int:
        """Bytes an unprivileged writer may still use on the data dir's filesystem
        (the smaller figure when events/ is a filesystem of its own)."""
        return min(_free(folder) for folder in self._folders)

    def check(self, need: int) -> None:
        """DiskFull unless `need` bytes can be written leaving min_free_bytes free."""
        if not self.min_free:
            return
        free = self.free()
        if free - need < self.min_free:
            raise DiskFull(
                f"the data dir is full: {human(free)} free, not enough for {human(need)} "
                f"more while {human(self.min_free)} stay free (PULLRUN_MIN_FREE_BYTES); "
                "delete runs or make room"
            )

    def check_new_run(self) -> None:
        """DiskFull unless a new run has room for its log: twice min_free_bytes
        free (half of it stays free, half is for its output)."""
        if not self.min_free:
            return
        free = self.free()
        if free < 2 * self.min_free:
            raise DiskFull(
                f"the data dir is full: {human(free)} free, and a new run needs "
                f"{human(2 * self.min_free)} (twice PULLRUN_MIN_FREE_BYTES); "
                "delete runs or make room"
            )


def full_error(exc: OSError) -> DiskFull:
    """The DiskFull for an ENOSPC/EDQUOT that the filesystem answered."""
    return DiskFull(
        f"the data dir is full: the filesystem answered {exc.strerror or exc}; "
        "delete runs or make room"
    )
