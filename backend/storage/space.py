"""The data dir on disk: private modes, what its files use, the room kept free.

- Modes: the data dir and `events/` are 0700, every file in them 0600
  (`private_dir`, `private_file`; `DataDirSpace.prepare` also tightens what
  an older version or another tool left looser).
- Use: a running total of the event files' sizes, their indexes included
  (counted once at start, in the background for a server, then kept up to
  date by every append and every delete, so retention never walks the
  folder), plus the databases beside them.
- Room: `min_free_bytes` stay free on the filesystem. Output that would go
  below it is refused with `DiskFull` (the run ends with `error`), so the
  `done` of every run and the final save of its record always have room (see
  EventLog). A new run is refused below twice that: it would have no room
  for output.
  The free figure (statvfs) is not taken at every event: `free()` answers
  the last figure less what was claimed since (`check`) while that figure is
  younger than FREE_TTL and the estimate is more than FREE_SLACK above twice
  min_free_bytes; `check` takes a new one whenever the estimate leaves less
  than FREE_SLACK above min_free_bytes past what it is asked for. Near the
  limit every check is exact, as before; far from it, what other writers
  took in the last FREE_TTL goes unseen until then (their ENOSPC is still
  caught, and the reserve still holds each run's `done`).
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
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from ..errors import DiskFull

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
DB_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal")
COUNT_FILE = "events.count"  # the total at a clean stop (DataDirSpace.save_count)
INDEX_SUFFIX = ".idx"  # a run's event index, beside its event file (storage/eventlog.py)
_FALLOC_FL_KEEP_SIZE = 1
# The count in the background pauses this long every _WALK_BATCH files: a walk
# that never pauses takes the GIL from the requests served meanwhile (the p95
# of GET / went from ~6 ms to ~60-130 ms during a walk of a million files).
_WALK_BATCH = 256
_WALK_PAUSE = 0.0005
# The free figure (module docstring: Room): one statvfs a second at most while
# far from min_free_bytes (each drops and retakes the GIL: beside a busy run,
# a delay for every line of a quiet one).
FREE_TTL = 1.0
FREE_SLACK = 16 * 1024**2


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


def index_path(events_file: Path) -> Path:
    """The event index of the event file `events_file` (`<run>.idx` beside it)."""
    return events_file.with_suffix(INDEX_SUFFIX)


def _tighten(path: Path, mode: int, st: os.stat_result | None = None) -> None:
    try:
        st = st or os.stat(path)
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(st.st_mode) & mode)
    except OSError as exc:  # not ours, or gone: say so, never fail the server for it
        log.warning("could not make %s private: %s", path, exc)


def _folder_state(folder: Path) -> list[int]:
    """What changes when a file is added to, deleted from or renamed in `folder`
    (or the folder is replaced or its mode changed)."""
    st = os.stat(folder)
    return [st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


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
        self._counted = threading.Event()  # the walk of events/ is done (or never began)
        self._counted.set()
        self._counting: dict[str, int] | None = None  # during the walk: growth per file
        self._stamped = False  # the total is saved in COUNT_FILE (until the next change)
        self.events_written = 0  # events appended to run logs (GET /metrics)
        self._folders = [self.data_dir]  # one per filesystem: events/ may be a mount
        # The last free figure taken (None: take one), when, and what `check`
        # let writers claim since (under `lock`).
        self._seen_free: int | None = None
        self._seen_at = 0.0
        self._claimed = 0
        self._estimated = False  # the last free() answered an estimate

    def prepare(self, background: bool = False) -> None:
        """Make the data dir and events/ private, then count the event files (and
        tighten any file an older version left readable): now, or with
        `background` in a thread of its own, so that a server with a long
        history (a million runs: a million files) does not wait for the walk
        to start. Until the count is done, `events_bytes` and `used()` wait for
        it, and so does `remove()`; appends go on (each file's growth during
        the walk is noted, so what the walk saw of it is not counted twice).

        After a clean stop there is no walk: the total saved then
        (`save_count`) is taken instead, when events/ is as it was left (its
        modification and change times: a file added, deleted or renamed there
        since, by hand, means a walk; nothing is tightened then: this version
        writes every file 0600). It is taken once: a crash after this start
        finds none, and walks."""
        private_dir(self.data_dir)
        private_dir(self.events_dir)
        if self.events_dir.stat().st_dev != self.data_dir.stat().st_dev:
            self._folders = [self.data_dir, self.events_dir]
        saved = self._take_saved_count()
        if saved is not None:
            with self._count_lock:
                self._events_bytes = saved
            return
        with self._count_lock:
            self._counted.clear()
            self._counting = {}
            self._events_bytes = 0  # from here: the growth since the walk began
        if not background:
            self._count()
            return
        threading.Thread(
            target=self._count, args=(True,), name="pullrun-space-count", daemon=True
        ).start()

    def _count(self, background: bool = False) -> None:
        """The walk: each file's size when it is seen, less what it grew by since
        the walk began (`grew` notes that per file), so the total is the files
        as they were at its start plus every change since. (A write seen by
        the walk in the instant between its bytes and its `grew` counts twice:
        at most that one event.)"""
        counting = self._counting
        assert counting is not None
        total = 0
        try:
            for folder in (self.data_dir, self.events_dir):
                events = folder is self.events_dir
                with os.scandir(folder) as entries:
                    for n, entry in enumerate(entries):
                        if background and n % _WALK_BATCH == _WALK_BATCH - 1:
                            time.sleep(_WALK_PAUSE)  # the GIL to the requests meanwhile
                        with self._count_lock:
                            try:
                                st = entry.stat(follow_symlinks=False)
                            except FileNotFoundError:
                                continue
                            grown = counting.get(entry.name, 0) if events else 0
                        if not stat.S_ISREG(st.st_mode):
                            continue
                        if stat.S_IMODE(st.st_mode) & 0o077:
                            _tighten(Path(entry.path), FILE_MODE, st)
                        if events:
                            total += st.st_size - grown  # its size when the walk began
        except OSError:
            log.exception("could not count the event files in %s", self.events_dir)
        finally:
            with self._count_lock:
                self._events_bytes += total
                self._counting = None
            self._counted.set()

    def _take_saved_count(self) -> int | None:
        """The total saved at the last clean stop, if events/ is as it was then;
        the file is removed either way (it holds for one start only)."""
        path = self.data_dir / COUNT_FILE
        try:
            saved = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("%s is unreadable (%s): the event files are counted again", path, exc)
            saved = None
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if not isinstance(saved, dict) or saved.get("events_dir") != _folder_state(self.events_dir):
            return None
        total = saved.get("events_bytes")
        return total if isinstance(total, int) and total >= 0 else None

    def save_count(self) -> bool:
        """At a clean stop, once nothing writes to events/ any more: save the
        total for the next start (`prepare`). Any append or delete after it
        removes the file again. False when there is no total to save (the
        count at start is not done) or it could not be written."""
        path = self.data_dir / COUNT_FILE
        with self._count_lock:
            if not self._counted.is_set():
                return False
            body = orjson.dumps(
                {"events_bytes": self._events_bytes, "events_dir": _folder_state(self.events_dir)}
            )
            partial = path.with_name(COUNT_FILE + ".partial")
            try:
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
                try:
                    os.write(fd, body)
                finally:
                    os.close(fd)
                os.replace(partial, path)
            except OSError as exc:
                log.warning("could not save the event files' total in %s: %s", path, exc)
                return False
            self._stamped = True
            return True

    def _changed(self) -> None:
        """An append or a delete after save_count: the saved total is stale (under
        `_count_lock`)."""
        self._stamped = False
        with contextlib.suppress(OSError):
            (self.data_dir / COUNT_FILE).unlink()

    # -- use ---------------------------------------------------------------------------

    @property
    def events_bytes(self) -> int:
        """The event files' total size, as counted (no walk; waits for the
        count at start)."""
        self._counted.wait()
        return self._events_bytes

    def grew(self, n: int, events: int = 1, path: Path | None = None) -> None:
        """An event of `n` bytes was written to a run's log, the file `path`
        (`events` 0: `n` bytes of its index)."""
        with self._count_lock:
            self._events_bytes += n
            self.events_written += events
            if self._counting is not None and path is not None:
                self._counting[path.name] = self._counting.get(path.name, 0) + n
            if self._stamped:
                self._changed()

    def remove(self, path: Path) -> int:
        """Delete an event file and its index; the bytes freed (0 when neither
        was there)."""
        self._counted.wait()  # (the walk may have counted it, or not yet)
        size = 0
        for file in (path, index_path(path)):
            try:
                freed = file.stat().st_size
                file.unlink()
            except FileNotFoundError:
                continue
            size += freed
        if not size:
            return 0
        self._seen_free = None  # room again: the next check takes a new figure
        with self._count_lock:
            self._events_bytes = max(0, self._events_bytes - size)
            if self._stamped:
                self._changed()
        return size

    def used(self) -> int:
        """Event files (counted) plus the databases beside them (`*.db` and
        their -wal, -shm, -journal: a few stats)."""
        total = self.events_bytes
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
        (the smaller figure when events/ is a filesystem of its own): the last
        figure taken less what was claimed since, while that is recent and far
        above the limit (module docstring: Room), else a new figure."""
        seen = self._seen_free
        if seen is not None:
            estimate = seen - self._claimed
            if (
                estimate - 2 * self.min_free >= FREE_SLACK
                and time.monotonic() - self._seen_at < FREE_TTL
            ):
                self._estimated = True
                return estimate
        return self._take_free()

    def _take_free(self) -> int:
        free = min(_free(folder) for folder in self._folders)
        self._seen_free, self._seen_at, self._claimed = free, time.monotonic(), 0
        self._estimated = False
        return free

    def check(self, need: int) -> None:
        """DiskFull unless `need` bytes can be written leaving min_free_bytes
        free; when they can, they count as claimed (under `lock`)."""
        if not self.min_free:
            return
        self._estimated = False  # (free() says when its answer is an estimate)
        free = self.free()
        if self._estimated and free - need < self.min_free + FREE_SLACK:
            free = self._take_free()  # near the limit: exact (a figure of now)
        if free - need < self.min_free:
            raise DiskFull(
                f"the data dir is full: {human(free)} free, not enough for {human(need)} "
                f"more while {human(self.min_free)} stay free (PULLRUN_MIN_FREE_BYTES); "
                "delete runs or make room"
            )
        self._claimed += need

    def check_new_run(self) -> None:
        """DiskFull unless a new run has room for its log: twice min_free_bytes
        free (half of it stays free, half is for its output)."""
        if not self.min_free:
            return
        with self.lock:  # (the figure and what was claimed since: as `check` sees them)
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
