"""Runs the pipelines: a FIFO queue placed onto engines (a slot limit per
engine), a thread per placed run, cancel, graceful shutdown and recovery
after a crash."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..engines import LOCAL, DockerEngine, EngineConfig, EngineFactory
from ..engines.pool import EngineHandle, EnginePool, probe_of
from ..errors import Conflict, DiskFull, NotFound, QueueFull, ShuttingDown
from ..events import EventType, now_rfc3339
from ..models import (
    Phase,
    RunCreate,
    RunError,
    RunLinks,
    RunRecord,
    RunSpec,
    RunStatus,
    WebhookDelivery,
)
from ..settings import Settings
from ..storage.eventlog import EventLog, RunFeed, Subscribers
from ..storage.reader import read_events
from ..storage.retention import Retention
from ..storage.space import DataDirSpace
from ..storage.store import RunStore
from .metrics import RunMetrics
from .pipeline import RunPipeline, Unplaced, done_data
from .placement import candidates, check_placeable, choose, fits
from .policy import apply_policy, kept_spec_data, redact
from .reattach import ReattachPipeline, Recorded
from .webhooks import WebhookSender

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
    claimed: bool = False  # placed (or canceled) and off the queue
    finished: threading.Event = field(default_factory=threading.Event)
    # Since when none of its engines is up (monotonic), and whether a notice said so.
    stranded_since: float | None = None
    stranded_notice: bool = False


def single_engine(settings: Settings, factory: EngineFactory) -> EnginePool:
    """The pool of one engine, `local`, made by `factory` (no engines file)."""
    config = EngineConfig(name=LOCAL, max_concurrent_runs=settings.max_concurrent_runs)
    pair = (config, factory, probe_of(factory))
    return EnginePool([pair], interval=settings.engine_check_interval)


class Runner:
    def __init__(
        self,
        settings: Settings,
        store: RunStore,
        feed: RunFeed,
        loop: asyncio.AbstractEventLoop,
        engines: EnginePool | EngineFactory = DockerEngine,
        *,
        on_expire: ExpireHook | None = None,
    ) -> None:
        self.settings = settings
        self.on_expire = on_expire
        self.store = store
        self.feed = feed
        self._loop = loop
        if not isinstance(engines, EnginePool):
            engines = single_engine(settings, engines)
        self.engines = engines
        engines.on_change = self._engine_changed
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._queue: deque[str] = deque()
        self._placements = 0  # placed runs so far: the round-robin clock
        self._dirty = False  # something changed since the last placement pass
        self._active: dict[str, ActiveRun] = {}
        self._logs: OrderedDict[str, EventLog] = OrderedDict()
        self._closing = False
        self._shut = asyncio.Event()
        self.subscribers = Subscribers()  # run event streams
        self.feed_subscribers = Subscribers()  # GET /api/events
        self.metrics = RunMetrics(self)  # GET /metrics
        # Ended, but the disk was too full to save the record: served from here
        # until a retention sweep (or the next start's recovery) saves it.
        self._unsaved: dict[str, RunRecord] = {}
        self.space = DataDirSpace(settings.data_dir, settings.min_free_bytes)
        # The data dir and events/ 0700, their files 0600 and counted (in a thread:
        # a long history is a million files).
        self.space.prepare(background=True)
        self.retention = Retention(
            settings, store, self.space, self._expire, before_sweep=self._save_unsaved
        )
        self.retention.start()
        self.retention.poke()  # settings may have changed since the last start
        self._threads: set[threading.Thread] = set()
        self.webhooks = WebhookSender(settings, self._webhooks_changed)
        self.engines.start()
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name="pullrun-placement", daemon=True
        )
        self._dispatcher.start()

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
            log_ = EventLog.load(self.settings.events_file(run_id), self._loop, self.space)
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
        check_placeable(self.engines, spec)  # 422 when no engine could ever take it
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
            save=self._save,
        )
        pipeline.on_unreachable = self.engines.suspect
        pipeline.engine_of_node = self.engine_of_node
        self.webhooks.watch(run_id, request.notify_url)
        with self._lock:
            if self._closing:
                raise ShuttingDown("the server is shutting down; no new runs are accepted")
            idle = sum(h.free for h in self.engines if h.up)
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
            # Counted before a worker can end it (and count it `finished`).
            one = self.engines.first.name if len(self.engines) == 1 else ""
            self.metrics.started(spec.engine or one)
            # A copy as accepted: a worker may change the live record at once.
            accepted = record.model_copy(deep=True)
            self._changed()
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
                with self.factory_for(record.engine)() as engine:
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

    # -- placement -----------------------------------------------------------------

    def factory_for(self, engine: str | None) -> EngineFactory:
        """Clients for a run's engine (its record's `engine`; None: a run from
        before engines had names, on the first engine)."""
        handle = self.engines.get(engine) if engine else self.engines.first
        if handle is None:
            raise NotFound(f"engine {engine!r} is not in the engines file any more")
        return handle.factory

    def engine_of_node(self, node_id: str) -> tuple[str, EngineFactory] | None:
        """The docker engine (of the engines file) that is this swarm node's own."""
        for handle in self.engines:
            if handle.config.kind == "docker" and handle.up and handle.swarm_node_id == node_id:
                return handle.name, handle.factory
        return None

    def queued_for(self, handle: EngineHandle) -> int:
        """Runs waiting that this engine could take."""
        with self._lock:
            specs = [self._active[r].pipeline.record.spec for r in self._queue]
        return sum(1 for spec in specs if handle in candidates(self.engines, spec))

    def _changed(self) -> None:
        """Under the lock: something placement depends on changed."""
        self._dirty = True
        self._work.notify()

    def _engine_changed(self, handle: EngineHandle) -> None:
        with self._lock:
            self._changed()  # an engine up again may take queued runs
        self._publish_engine(handle)

    def _publish_engine(self, handle: EngineHandle) -> None:
        """An `engine` event on the feed: the engine as `/api/engines` shows it now."""
        view = handle.view(self.queued_for(handle))
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self._loop.call_soon_threadsafe(self.feed.publish, view, EventType.ENGINE)

    def _dispatch_loop(self) -> None:
        """Place queued runs, in order, whenever something changes (a run is
        queued or ends, an engine comes up) and at least once a second (the
        deadlines of runs whose engines are all down)."""
        while True:
            with self._lock:
                if self._closing:
                    # Runs still queued are shutdown's to cancel (it claims each
                    # one and ends it at once): never start one now.
                    return
                self._dirty = False
                waiting = list(self._queue)
            try:
                placed_any = self._place(waiting)
            except Exception:  # keep placing; one bad run must not stop the queue
                log.exception("placement failed")
                placed_any = False
            with self._lock:
                if not placed_any and not self._dirty and not self._closing:
                    self._work.wait(1.0)

    def _place(self, waiting: list[str]) -> bool:
        """One pass over the queue, oldest first. True when a run was placed."""
        placed_any = False
        has_image: dict[tuple[str, str], bool] = {}
        for run_id in waiting:
            with self._lock:
                active = self._active.get(run_id)
                if active is None or active.claimed:
                    continue  # canceled meanwhile
            spec = active.pipeline.record.spec
            allowed = candidates(self.engines, spec)
            up = [h for h in allowed if h.up and fits(h, spec)]
            if not up:
                self._stranded(run_id, active, allowed)
                continue
            active.stranded_since = None
            free = [h for h in up if h.free > 0]
            if not free:
                continue  # waits for a slot, in order

            def image_there(handle: EngineHandle, image: str = spec.image) -> bool:
                key = (handle.name, image)
                if key not in has_image:
                    has_image[key] = self._has_image(handle, image)
                return has_image[key]

            handle = choose(free, image_there)
            if handle is None:
                continue
            with self._lock:
                if active.claimed or handle.free <= 0 or self._closing:
                    continue
                active.claimed = True
                self._queue.remove(run_id)
                handle.active += 1
                self._placements += 1
                handle.placed_seq = self._placements
                active.pipeline.assign(handle.name, handle.factory, handle.config)
                thread = threading.Thread(
                    target=self._run_placed,
                    args=(run_id, active, handle),
                    name=f"pullrun-run-{run_id}",
                    daemon=True,
                )
                self._threads.add(thread)
            thread.start()
            placed_any = True
        return placed_any

    def _has_image(self, handle: EngineHandle, image: str) -> bool:
        try:
            with handle.probe() as engine:  # a short timeout: placement waits for it
                return engine.image_present(image)
        except Exception:
            return False

    def _stranded(self, run_id: str, active: ActiveRun, allowed: list[EngineHandle]) -> None:
        """None of the run's engines is up: say so once, and end it when that
        lasts past the placement timeout."""
        now = time.monotonic()
        if active.stranded_since is None:
            active.stranded_since = now
        names = ", ".join(h.name for h in allowed) or "none"
        if not active.stranded_notice:
            active.stranded_notice = True
            message = f"waiting for an engine: none of the engines this run may use is up ({names})"
            with self._lock:
                if not active.claimed:  # (a cancel may have ended it just now)
                    with contextlib.suppress(DiskFull, RuntimeError):
                        active.pipeline.events.append(EventType.NOTICE, {"message": message})
        if now - active.stranded_since < self.settings.placement_timeout:
            return
        with self._lock:
            if active.claimed:
                return
            active.claimed = True
            self._queue.remove(run_id)
        timeout = self.settings.placement_timeout
        active.pipeline.fail_queued(
            f"no engine for this run came up within {timeout:g}s (PULLRUN_PLACEMENT_TIMEOUT); "
            f"engines it may use: {names}"
        )
        self._run_pipeline(run_id, active)

    def _run_placed(self, run_id: str, active: ActiveRun, handle: EngineHandle) -> None:
        try:
            self._run_pipeline(run_id, active)
        except Unplaced as exc:
            # Its engine went away before anything of the run happened there:
            # mark it down now (so it is not chosen again) and queue the run
            # again, first in line.
            log.warning("run %s: engine %s unreachable, queued again: %s", run_id, handle.name, exc)
            active.pipeline.unassign()
            self.engines.check(handle)
            with self._lock:
                # A cancel (or shutdown) that came meanwhile found it claimed and
                # only told the pipeline: end it now instead of queueing it.
                requeue = active.pipeline.cancel_reason is None and not self._closing
                if requeue:
                    active.claimed = False
                    self._queue.appendleft(run_id)
            if not requeue:
                active.pipeline.cancel(active.pipeline.cancel_reason or SHUTDOWN_REASON)
                self._run_pipeline(run_id, active)
        finally:
            with self._lock:
                handle.active -= 1
                self._threads.discard(threading.current_thread())
                self._changed()  # a slot is free
            # Its load: the run's last `run` event went out while it held the slot.
            self._publish_engine(handle)

    def _run_pipeline(self, run_id: str, active: ActiveRun) -> None:
        pipeline = active.pipeline
        try:
            pipeline.execute()
        except Unplaced:
            raise  # not ended: `_run_placed` queues it again
        except BaseException:
            # execute() handles every failure it knows; this keeps the thread's
            # promise of a `done` for anything else.
            log.exception("run %s: unexpected failure", run_id)
            try:
                pipeline.abort("internal error: see the server log")
            except BaseException:
                log.exception("run %s: could not record its end", run_id)
        try:
            self.metrics.finished(pipeline.record)
        except Exception:  # a metric never costs a run its end
            log.exception("run %s: could not count its end", run_id)
        with self._lock:
            self._active.pop(run_id, None)
        self.webhooks.finished(pipeline.record)  # never waits for a delivery
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
        if record.status == RunStatus.RUNNING:
            self.webhooks.started(record)  # once per run; never waits for a delivery

    def _webhooks_changed(self, run_id: str, deliveries: list[WebhookDelivery]) -> None:
        """The webhook sender's news: the run's deliveries, into its record."""
        with self._lock:
            active = self._active.get(run_id)
        if active is not None:  # its pipeline saves the record (at the latest, at its end)
            active.pipeline.record.webhooks = deliveries
            self._publish(active.pipeline.record)
            return
        record = self._unsaved.get(run_id) or self.store.get(run_id)
        if record is not None:
            record.webhooks = deliveries
            self._save(record)

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
        await asyncio.to_thread(self.webhooks.stop)
        self.engines.stop()
        await asyncio.to_thread(self.retention.stop)
        await asyncio.to_thread(self._save_unsaved)
        if all(active.finished.is_set() for active in list(self._active.values())):
            # Nothing writes to events/ any more: the next start need not count it.
            await asyncio.to_thread(self.space.save_count)
        self.feed.close()
        self._shut.set()

    async def wait_for_subscribers(self, timeout: float) -> None:
        """Let run streams send what they have (their `done`) before the server stops."""
        deadline = self._loop.time() + timeout
        while self.subscribers.open and self._loop.time() < deadline:
            await asyncio.sleep(0.05)

    def recover(self) -> list[str]:
        """After a crash (or a kill), every run left unfinished; their ids.

        One whose log has its `done` gets its record back from it; one still
        queued waits in the queue again (unless it has `secret_env`, whose
        values are gone); one pulling ends `error`/`interrupted` here; the others are taken
        up again on their engines (runs/reattach.py: re-attached to their
        containers, or their exits recorded, or `interrupted` when their create
        or start was cut), each holding a slot of its engine as a placed run does.
        A swarm run whose service was made is taken up whatever its phase
        (runs/swarm.py, `SwarmRun.resume`).
        """
        recovered: list[str] = []
        cut: list[RunRecord] = []

        def take_up(record: RunRecord, events: EventLog, recorded: Recorded) -> None:
            pipeline = ReattachPipeline(record, events, self.settings, recorded, save=self._save)
            pipeline.on_unreachable = self.engines.suspect
            handle = self.engines.get(record.engine) if record.engine else self.engines.first
            if handle is None:
                pipeline.no_engine(f"its engine {record.engine} is not in the engines file")
            active = ActiveRun(pipeline, claimed=True)
            if handle is None:
                thread = threading.Thread(target=self._run_pipeline, args=(record.id, active))
            else:
                thread = threading.Thread(target=self._run_placed, args=(record.id, active, handle))
            thread.name, thread.daemon = f"pullrun-run-{record.id}", True
            with self._lock:
                self._active[record.id] = active
                if handle is not None:
                    handle.active += 1
                    pipeline.assign(handle.name, handle.factory, handle.config)
                    self._threads.add(thread)
            thread.start()

        for record in self.store.unfinished():
            if record.id in self._active:
                continue  # taken up already
            recovered.append(record.id)
            path = self.settings.events_file(record.id)
            events = EventLog.load(path, self._loop, self.space)
            done = None
            was = record.status.value
            if events.finished:
                last = read_events(path, offset=events.offset(events.last_id))
                done = next(last).data
            else:
                recorded = Recorded.read(path, was)
                # (a swarm run has its service, in its record, from `queued` on)
                if recorded.phase not in (Phase.QUEUE, Phase.PULL) or record.container_id:
                    take_up(record, events, recorded)
                    continue
                was = recorded.was
                if was == RunStatus.QUEUED.value and not record.spec.secret_env:
                    self._queue_again(record, events)
                    continue
            record.finished_at = record.finished_at or now_rfc3339()
            if done is not None:
                # It ended (its log says how) but the crash came before the save.
                record.status = RunStatus(done["status"])
                record.exit_code = done["exit_code"]
                record.oom_killed = done["oom_killed"]
                record.error = RunError(**done["error"]) if done["error"] else None
                record.last_event_id = events.last_id
            else:
                message = f"the server stopped while this run was {was}"
                if was == RunStatus.QUEUED.value:  # (queued again, but for its secrets)
                    message += ": the values of its secret_env are never kept, so it cannot start"
                record.status = RunStatus.ERROR
                record.error = RunError(phase=Phase.INTERRUPTED, message=message)
                try:
                    record.last_event_id = events.append(EventType.DONE, done_data(record))
                except DiskFull as exc:
                    log.error("run %s: its `done` could not be written: %s", record.id, exc)
                cut.append(record)
            try:
                self.store.save(record)
            except DiskFull:
                self._unsaved[record.id] = record
            events.close()
        if cut:
            threading.Thread(target=self._remove_containers, args=(cut,), daemon=True).start()
        return recovered

    def _queue_again(self, record: RunRecord, events: EventLog) -> None:
        """A run the restart caught in the queue waits again, in its old order
        (nothing of it ran anywhere). Its `registry_auth`, never kept, is gone."""
        pipeline = RunPipeline(record, events, self.settings, save=self._save)
        pipeline.on_unreachable = self.engines.suspect
        message = "pullrun restarted: the run is queued again"
        with contextlib.suppress(DiskFull):
            record.last_event_id = events.append(EventType.NOTICE, {"message": message})
        with self._lock:
            self._active[record.id] = ActiveRun(pipeline)
            self._queue.append(record.id)
            self._changed()

    def _remove_containers(self, records: list[RunRecord]) -> None:
        """Containers of runs ended while queued or pulling: there should be
        none; whatever a crash left is removed, on each run's engine."""
        by_engine: dict[str | None, list[str]] = {}
        for record in records:
            by_engine.setdefault(record.engine, []).append(record.id)
        for name, run_ids in by_engine.items():
            try:
                with self.factory_for(name)() as engine:
                    for run_id in run_ids:
                        for container_id in engine.managed_containers(run_id):
                            engine.remove(container_id)
            except Exception as exc:
                log.warning("could not clean up containers of interrupted runs: %s", exc)
