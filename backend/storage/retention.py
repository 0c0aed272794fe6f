"""Retention: the oldest finished runs are deleted, by age and by disk use.

- `PULLRUN_RETENTION_DAYS`: runs that finished more than that many days ago
  go (0, the default: runs are kept at any age).
- `PULLRUN_MAX_DISK_BYTES`: while the data dir's event logs and databases
  take more than that (10 GiB by default; 0: no limit), the oldest finished
  runs go, one at a time, until they fit.

A sweep runs in a thread of its own after each run ends (`poke`) and at least
every minute. It is cheap: the event logs' total is counted as they are
written (DataDirSpace), never by walking the folder, and the store lists only
the finished runs old enough to matter. It never deletes an active run: only
runs whose saved record is terminal, and the deleter (the runner's) refuses
active ones. Each deletion removes the record, the event log and any container
left, and is announced on the feed (`deleted`) and in the server log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ..settings import Settings
from .space import DataDirSpace
from .store import RunStore

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 60.0  # seconds between sweeps at most
BATCH = 100  # records read from the store at a time

# delete(run_id, why) -> True when the run was deleted (False: active, or gone)
Deleter = Callable[[str, str], bool]


def _rfc3339(moment: datetime) -> str:
    """The form of events.now_rfc3339, so stored times compare as strings."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sweep_interval(settings: Settings) -> float:
    """Every minute, or ten times per retention period when that is shorter."""
    if not settings.retention_days:
        return SWEEP_INTERVAL
    return min(SWEEP_INTERVAL, max(1.0, settings.retention_days * 86400 / 10))


class Retention:
    def __init__(
        self,
        settings: Settings,
        store: RunStore,
        space: DataDirSpace,
        delete: Deleter,
        *,
        before_sweep: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.space = space
        self._delete = delete
        self._before_sweep = before_sweep
        self.interval = sweep_interval(settings)
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._sweep_lock = threading.Lock()
        self._over_cap_warned = False
        self.sweeps = 0  # completed sweeps
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)  # (tests move it)

    # -- the thread ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pullrun-retention", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """A run has ended: sweep soon (in the retention thread)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stopping:
                return
            try:
                self.sweep()
            except Exception:
                log.exception("retention sweep failed")

    # -- a sweep -----------------------------------------------------------------------

    def sweep(self) -> list[str]:
        """Delete what the settings say must go; the ids deleted."""
        with self._sweep_lock:
            if self._before_sweep is not None:
                self._before_sweep()
            deleted = self._by_age() + self._by_size()
            self.sweeps += 1
            return deleted

    def _by_age(self) -> list[str]:
        days = self.settings.retention_days
        if not days:
            return []
        cutoff = _rfc3339(self.now() - timedelta(days=days))
        why = f"finished more than {days:g} days ago (PULLRUN_RETENTION_DAYS)"
        deleted: list[str] = []
        after = 0
        # Only runs created before the cutoff can have finished before it.
        while batch := self.store.finished_oldest_first(BATCH, after, created_before=cutoff):
            for seq, record in batch:
                after = seq
                if (record.finished_at or record.created_at) < cutoff and self._delete(
                    record.id, why
                ):
                    deleted.append(record.id)
        return deleted

    def _by_size(self) -> list[str]:
        cap = self.settings.max_disk_bytes
        if not cap:
            return []
        used = self.space.used()
        if used <= cap:
            self._over_cap_warned = False
            return []
        why = f"the data dir is over PULLRUN_MAX_DISK_BYTES ({cap} bytes)"
        deleted: list[str] = []
        after = 0
        while used > cap:
            batch = self.store.finished_oldest_first(BATCH, after)
            if not batch:
                if not self._over_cap_warned:
                    self._over_cap_warned = True
                    log.warning(
                        "the data dir uses %d bytes, over PULLRUN_MAX_DISK_BYTES (%d), "
                        "and no finished run is left to delete",
                        used,
                        cap,
                    )
                break
            for seq, record in batch:
                after = seq
                if self._delete(record.id, why):
                    deleted.append(record.id)
                    used = self.space.used()
                    if used <= cap:
                        break
        return deleted
