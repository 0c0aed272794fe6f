"""Runs the pipelines: worker threads, FIFO queue, concurrency limit, cancel,
graceful shutdown and recovery after a crash."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..engines import DockerEngine, EngineFactory
from ..errors import Conflict, DiskFull, NotFound, QueueFull, ShuttingDown
from ..events import EventType, now_rfc3339
from ..models import Phase, RunCreate, RunError, RunLinks, RunRecord, RunSpec, RunStatus
from ..settings import Settings
from ..storage.eventlog import EventLog, RunFeed, Subscribers
from ..storage.reader import read_events
from ..storage.retention import Retention
from ..storage.space import DataDirSpace
from ..storage.store import RunStore
from .pipeline import RunPipeline, done_data
from .policy import apply_policy, kept_spec_data, redact

log = logging.getLogger(__name__)

SHUTDOWN_REASON = "server shutting down"
CANCEL_REASON = "canceled by request"
_CACHED_LOGS = 128

# on_expire(run_id, why): told of each run retention deleted (the audit trail).
ExpireHook = Callable[[str, str], None]


def new_run_id() -> str:
    return secrets.token_hex(6)


def links_for(run_id: str) -> RunLinks:
    return RunLinks(
        self=f"/api/runs/{run_id}",
        events=f"/api/runs/{run_id}/events",
        logs=f"/api/runs/{run_id}/logs",
        page=f"/runs/{run_id}",
    )


@dataclass
class ActiveRun:
    pipeline: RunPipeline
    claimed: bool = False  # a worker has taken it off the queue
    finished: threading.Event = field(default_factory=threading.Event)


class Runner:
    def __init__(
        self,
        settings: Settings,
        store: RunStore,
        feed: RunFeed,
        loop: asyncio.AbstractEventLoop,
        engine_factory: EngineFactory = DockerEngine,
        *,
        on_expire: ExpireHook | None = None,
    ) -> None:
        self.settings = settings
        self.on_expire = on_expire
        self.store = store
        self.feed = feed
        self._loop = loop
        self._engine_factory = engine_factory
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._queue: deque[str] = deque()
        self._active: dict[str, ActiveRun] = {}
        self._logs: OrderedDict[str, EventLog] = OrderedDict()
        self._closing = False
        self._shut = asyncio.Event()
        self.subscribers = Subscribers()  # run event streams
        self.feed_subscribers = Subscribers()  # GET /api/events
        # Ended, but the disk was too full to save the record: served from here
        # until a retention sweep (or the next start's recovery) saves it.
        self._unsaved: dict[str, RunRecord] = {}
        self.space = DataDirSpace(settings.data_dir, settings.min_free_bytes)
        self.space.prepare()  # the data dir and events/ 0700, their files 0600
        self.retention = Retention(
            settings, store, self.space, self._expire, before_sweep=self._save_unsaved
        )
        self.retention.start()
        self.retention.poke()  # settings may have changed since the last start
        self._workers = [
            threading.Thread(target=self._work_loop, name=f"pullrun-worker-{n}", daemon=True)
            for n in range(settings.max_concurrent_runs)
        ]
        for worker in self._workers:
            worker.start()

    # -- queries -------------------------------------------------------------------

    def get(self, run_id: str) -> RunRecord:
        active = self._active.get(run_id)
        if active is not None:
            return active.pipeline.record
        record = self._unsaved.get(run_id) or self.store.get(run_id)
        if record is None:
            raise NotFound(f"no run with id {run_id!r}")
        return record

    def page(
        self, statuses: list[RunStatus] | None, cursor: str | None, limit: int
    ) -> tuple[list[RunRecord], str | None]:
        records, next_cursor = self.store.page(statuses, cursor, limit)
        live = [self._active.get(r.id) for r in records]
        return [
            a.pipeline.record if a else self._unsaved.get(r.id, r)
            for a, r in zip(live, records, strict=True)
        ], next_cursor

    def events(self, run_id: str) -> EventLog:
        """The run's event log (live for active runs, loaded for finished ones)."""
        active = self._active.get(run_id)
        if active is not None:
            return active.pipeline.events
        log_ = self._logs.get(run_id)
        if log_ is None:
            self.get(run_id)  # 404 for unknown runs
            log_ = EventLog.load(self.settings.events_file(run_id), self._loop)
            self._logs[run_id] = log_
            while len(self._logs) > _CACHED_LOGS:
                self._logs.popitem(last=False)
        else:
            self._logs.move_to_end(run_id)
        return log_

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- commands ------------------------------------------------------------------

    def submit(self, request: RunCreate, created_by: str | None) -> RunRecord:
        """Accept a run; `created_by`: the name of the user or token starting it.

        The run policy decides first: a refused run leaves nothing behind."""
        request = apply_policy(request, self.settings)
        spec = RunSpec.model_validate(kept_spec_data(request))
        run_id = new_run_id()
        record = RunRecord(
            id=run_id,
            status=RunStatus.QUEUED,
            spec=spec,
            created_at=now_rfc3339(),
            created_by=created_by,
            links=links_for(run_id),
        )
        events = EventLog(self.settings.events_file(run_id), self._loop, self.space)
        pipeline = RunPipeline(
            record,
            events,
            self.settings,
            auth=request.registry_auth,
            secret_env=request.secret_env,
            engine_factory=self._engine_factory,
            save=self._save,
        )
        with self._lock:
            if self._closing:
                raise ShuttingDown("the server is shutting down; no new runs are accepted")
            busy = sum(1 for a in self._active.values() if a.claimed)
            idle = len(self._workers) - busy
            if len(self._queue) - idle >= self.settings.max_queued_runs:
                raise QueueFull(
                    f"{len(self._queue)} runs are already queued (max_queued_runs); try again later"
                )
            self.space.check_new_run()  # DiskFull: 507
            try:  # (DiskFull here too when the room just went: nothing is left behind)
                events.append(EventType.STATUS, {"status": "queued", "at": record.created_at})
                record.last_event_id = events.last_id
                self.store.insert(record)
            except BaseException:
                events.discard()
                raise
            self._active[run_id] = ActiveRun(pipeline)
            self._queue.append(run_id)
            # A copy as accepted: a worker may change the live record at once.
            accepted = record.model_copy(deep=True)
            self._work.notify()
        self._publish(accepted)
        return accepted

    def cancel(self, run_id: str, reason: str = CANCEL_REASON) -> RunRecord:
        with self._lock:
            active = self._active.get(run_id)
            if active is None:
                self.get(run_id)  # 404 when unknown
                raise Conflict(f"run {run_id} has already finished")
            unclaimed = not active.claimed
            if unclaimed:
                active.claimed = True  # no worker will start it now
                self._queue.remove(run_id)
        active.pipeline.cancel(reason)
        if unclaimed:
            self._run_pipeline(run_id, active)  # ends at once with `done`
        return active.pipeline.record

    def delete(self, run_id: str) -> None:
        with self._lock:
            if run_id in self._active:
                raise Conflict(f"run {run_id} is still active; cancel it first")
        record = self.get(run_id)
        if record.container_id:
            try:
                with self._engine_factory() as engine:
                    engine.remove(record.container_id)
            except Exception as exc:
                log.warning("could not remove container of %s: %s", run_id, exc)
        path = self.settings.events_file(run_id)
        try:
            self.store.delete(run_id)
        except DiskFull:  # not even room to delete: free the log's room first
            self.space.remove(path)
            self.store.delete(run_id)
        self._unsaved.pop(run_id, None)
        self._logs.pop(run_id, None)
        self.space.remove(path)
        # Called from a threadpool thread: the feed lives on the loop.
        self._loop.call_soon_threadsafe(self.feed.publish, {"id": run_id}, EventType.DELETED)

    # -- workers -------------------------------------------------------------------

    def _work_loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._work.wait()
                if self._closing:
                    # Runs still queued are shutdown's to cancel (it claims each
                    # one and ends it at once): never start one now.
                    return
                run_id = self._queue.popleft()
                active = self._active[run_id]
                active.claimed = True
            self._run_pipeline(run_id, active)

    def _run_pipeline(self, run_id: str, active: ActiveRun) -> None:
        pipeline = active.pipeline
        try:
            pipeline.execute()
        except BaseException:
            # execute() handles every failure it knows; this keeps the worker
            # alive and the run's promise of a `done` for anything else.
            log.exception("run %s: unexpected failure", run_id)
            try:
                pipeline.abort("internal error: see the server log")
            except BaseException:
                log.exception("run %s: could not record its end", run_id)
        finally:
            with self._lock:
                self._active.pop(run_id, None)
            active.finished.set()
            self.retention.poke()

    def _expire(self, run_id: str, why: str) -> bool:
        """Retention's deleter: a finished run goes, and the server log (and
        `on_expire`, the audit trail) says why."""
        try:
            self.delete(run_id)
        except (Conflict, NotFound):
            return False
        log.info("retention deleted run %s: %s", run_id, why)
        if self.on_expire is not None:
            try:
                self.on_expire(run_id, why)
            except Exception:  # the deletion is done; a sweep goes on
                log.exception("run %s: could not report its deletion by retention", run_id)
        return True

    def _save(self, record: RunRecord) -> None:
        try:
            self.store.save(record)
        except DiskFull:
            if not record.status.terminal:
                raise  # the run ends with the error
            log.error("run %s ended but the data dir is too full to save it", record.id)
            self._unsaved[record.id] = record
        self._publish(record)

    def _save_unsaved(self) -> None:
        for run_id, record in list(self._unsaved.items()):
            try:
                self.store.save(record)
            except DiskFull:
                return
            self._unsaved.pop(run_id, None)

    def _publish(self, record: RunRecord) -> None:
        # One encoding for every subscriber of the feed: env values never in it.
        data = redact(record).model_dump(mode="json")
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self._loop.call_soon_threadsafe(self.feed.publish, data)

    # -- life cycle ----------------------------------------------------------------

    async def shutdown(self, reason: str = SHUTDOWN_REASON) -> None:
        """Cancel everything in flight, wait (one deadline for all) for every
        `done`, stop the workers. A second call waits for the first."""
        with self._lock:
            first = not self._closing
            self._closing = True
            run_ids = list(self._active)
            self._work.notify_all()
        if not first:
            await self._shut.wait()
            return
        deadline = self._loop.time() + self.settings.shutdown_grace
        for run_id in run_ids:
            with contextlib.suppress(Conflict, NotFound):
                await asyncio.to_thread(self.cancel, run_id, reason)
        for active in list(self._active.values()):
            remaining = max(0.0, deadline - self._loop.time())
            await asyncio.to_thread(active.finished.wait, remaining)
        await asyncio.to_thread(self.retention.stop)
        await asyncio.to_thread(self._save_unsaved)
        self.feed.close()
        self._shut.set()

    async def wait_for_subscribers(self, timeout: float) -> None:
        """Let run streams send what they have (their `done`) before the server stops."""
        deadline = self._loop.time() + timeout
        while self.subscribers.open and self._loop.time() < deadline:
            await asyncio.sleep(0.05)

    def recover(self) -> list[str]:
        """After a crash: end runs left unfinished and clean up their containers."""
        recovered: list[str] = []
        for record in self.store.unfinished():
            was = record.status.value
            path = self.settings.events_file(record.id)
            events = EventLog.load(path, self._loop, self.space)
            done = None
            if events.finished:
                last = read_events(path, offset=events.offset(events.last_id))
                done = next(last).data
            record.finished_at = record.finished_at or now_rfc3339()
            if done is not None:
                # It ended (its log says how) but the crash came before the save.
                record.status = RunStatus(done["status"])
                record.exit_code = done["exit_code"]
                record.oom_killed = done["oom_killed"]
                record.error = RunError(**done["error"]) if done["error"] else None
                record.last_event_id = events.last_id
            else:
                record.status = RunStatus.ERROR
                record.error = RunError(
                    phase=Phase.INTERRUPTED, message=f"the server stopped while this run was {was}"
                )
                try:
                    record.last_event_id = events.append(EventType.DONE, done_data(record))
                except DiskFull as exc:
                    log.error("run %s: its `done` could not be written: %s", record.id, exc)
            try:
                self.store.save(record)
            except DiskFull:
                self._unsaved[record.id] = record
            events.close()
            recovered.append(record.id)
        if recovered:
            threading.Thread(target=self._remove_containers, args=(recovered,), daemon=True).start()
        return recovered

    def _remove_containers(self, run_ids: list[str]) -> None:
        try:
            with self._engine_factory() as engine:
                for run_id in run_ids:
                    for container_id in engine.managed_containers(run_id):
                        engine.remove(container_id)
        except Exception as exc:
            log.warning("could not clean up containers of interrupted runs: %s", exc)
