"""A run on a swarm engine: a one-task `replicated-job` service, followed
through its task's states, its output from the task's log stream.

The stream keeps the single-engine contract (docs/api.md): `queued` while the
task has no node (a `notice` quotes the cluster's reason), `pulling` while the
node prepares it (it pulls the image there; the cluster reports no byte
progress), `starting`, `running`, then `done` with the exit code from the
task's status. `creating` is skipped: the service is made at once. Cancel and
timeout remove the service; the service is removed when the run ends, always.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from ..engines import Engine, OutputStream
from ..engines.swarm import ENDED_STATES, SwarmEngine
from ..errors import PipelineError
from ..events import EventType, now_rfc3339
from ..models import Phase, RunStatus
from .relay import OutputRelay

if TYPE_CHECKING:
    from .pipeline import RunPipeline

log = logging.getLogger(__name__)

POLL = 0.2  # seconds between looks at the task's state
PREPARING = frozenset({"assigned", "accepted", "preparing", "ready"})
# A task's log stream stays open after the task ended (the manager keeps the
# subscription): once the task has ended, the stream ends at its first quiet
# moment this long, or after LOG_DRAIN in all.
QUIET = 0.3
LOG_DRAIN = 5.0


class EndsWhenQuiet:
    """An output stream that ends once `ended` is set and nothing more comes
    for QUIET seconds (or LOG_DRAIN seconds pass)."""

    def __init__(self, stream: OutputStream, ended: threading.Event) -> None:
        self._stream = stream
        self._ended = ended
        self._since: float | None = None

    def read(self, timeout: float | None) -> bytes | None:
        if self._ended.is_set():
            now = time.monotonic()
            self._since = self._since or now
            if now - self._since > LOG_DRAIN:
                return b""
            data = self._stream.read(QUIET)
            return b"" if data is None else data
        wait = POLL if timeout is None else min(timeout, POLL)
        data = self._stream.read(wait)
        if data is None and timeout is not None and wait < timeout:
            return self.read(timeout - wait)
        return data

    def close(self) -> None:
        self._stream.close()


class SwarmRun:
    def __init__(self, pipeline: RunPipeline, engine: SwarmEngine) -> None:
        self.p = pipeline
        self.engine = engine
        self.service_id: str | None = None
        self.task: dict[str, Any] = {}
        self._notices: set[str] = set()
        self._created = time.monotonic()
        self._watch_engine: SwarmEngine | None = None

    # -- the flow ------------------------------------------------------------------------

    def run(self) -> RunStatus:
        p = self.p
        try:
            self._create()
            state = self._until(lambda s: s not in ("new", "allocated", "pending"))
            if state in PREPARING:
                self._node()
                p._enter(Phase.PULL)
                state = self._until(lambda s: s not in PREPARING)
            if state == "starting":
                self._node()
                p._enter(Phase.START)
                state = self._until(lambda s: s != "starting")
            if state in ENDED_STATES and not self._container_ran():
                raise PipelineError(p._phase, self._task_error())
            self._node()
            if p._phase != Phase.START:
                p._enter(Phase.START)
            p.record.started_at = now_rfc3339()
            p._enter(Phase.RUN)
            return self._follow()
        finally:
            self._remove()

    def _create(self) -> None:
        p = self.p
        config = p.engine_config
        p._check_canceled()
        try:
            service_id = self.engine.create_service(
                p.record.id,
                p.record.spec,
                name=f"pullrun-{p.record.id}",
                constraints=list(config.placement_constraints) if config else [],
                preferences=list(config.placement_preferences) if config else [],
                auth=p.registry_auth(),
                lend_credentials=p.settings.lends_credentials,
                no_new_privileges=p.settings.no_new_privileges,
            )
        except Exception as exc:
            raise PipelineError(Phase.QUEUE, p._engine_error(exc)) from exc
        self.service_id = service_id
        # Cancel and timeout remove the service (the pipeline's stop action).
        p.stop_action = lambda engine, target: engine.remove_service(target)  # type: ignore[attr-defined]
        with p._lock:
            p._container_id = service_id
        p._check_canceled()

    def _until(self, done: Any) -> str:
        """Poll the task until `done(state)`; its state. Cancel, the placement
        timeout (while no node takes it) and a vanished service end the wait."""
        p = self.p
        while True:
            self._check_canceled()
            tasks = self.engine.tasks(self.service_id or "")
            if tasks:
                self.task = max(tasks, key=lambda t: str(t.get("CreatedAt", "")))
            elif self.task:
                return "remove"  # the service is gone (removed by a cancel or a timeout)
            state = self._state()
            if state == "pending" or not tasks:
                self._say_why()
                waited = time.monotonic() - self._created
                if waited > p.settings.placement_timeout:
                    reason = self._status().get("Err") or self._status().get("Message") or ""
                    raise PipelineError(
                        Phase.QUEUE,
                        f"no node took the task within {p.settings.placement_timeout:g}s "
                        f"(PULLRUN_PLACEMENT_TIMEOUT): {reason or 'pending'}",
                    )
            if done(state) or state in ENDED_STATES:
                return state
            time.sleep(POLL)

    def _follow(self) -> RunStatus:
        """Relay the task's log until the task ends; its exit."""
        p = self.p
        spec = p.record.spec
        timeout = spec.timeout or p.settings.default_timeout
        timer = threading.Timer(timeout, p._on_timeout, args=(self.service_id,))
        timer.daemon = True
        timer.start()
        stream = self.engine.task_logs(str(self.task.get("ID")), follow=True)
        ended, stop = threading.Event(), threading.Event()
        watcher = threading.Thread(
            target=self._watch_end, args=(ended, stop), daemon=True, name="swarm-watch"
        )
        watcher.start()
        try:
            relay = OutputRelay(p.events, p.settings)
            try:
                relay.run(EndsWhenQuiet(stream, ended), tty=spec.tty)
            finally:
                counts = relay.counts
                p.record.log_lines = counts.lines
                p.record.log_bytes = counts.bytes
                p.record.dropped_lines = counts.dropped_lines
                p.record.dropped_bytes = counts.dropped_bytes
            state = self._until(lambda s: s in ENDED_STATES)
            with p._lock:
                p._exited = True
        finally:
            stop.set()
            timer.cancel()
            stream.close()
        p._mark_end(Phase.RUN)
        container = self._status().get("ContainerStatus") or {}
        exit_code = container.get("ExitCode") if state in ("complete", "failed") else None
        p.record.exit_code = int(exit_code) if exit_code is not None else None
        if p._timed_out:
            return RunStatus.TIMED_OUT
        if p._cancel_reason is not None:
            from .pipeline import Canceled

            raise Canceled(p._cancel_reason)
        if state == "complete" and p.record.exit_code == 0:
            return RunStatus.SUCCEEDED
        if p.record.exit_code is None or state in ("rejected", "orphaned", "remove", "shutdown"):
            raise PipelineError(Phase.RUN, self._task_error())
        return RunStatus.FAILED

    def _watch_end(self, ended: threading.Event, stop: threading.Event) -> None:
        """Set `ended` once the task has ended (its log stream stays open)."""
        while not stop.wait(POLL):
            try:
                tasks = self.engine_for_watch().tasks(self.service_id or "")
            except Exception:
                if self.p._cancel_reason is not None or self.p._timed_out:
                    ended.set()  # we removed it: nothing more will come
                    return
                continue  # a missed look: the next one
            if not tasks or all(
                str(t.get("Status", {}).get("State")) in ENDED_STATES for t in tasks
            ):
                ended.set()
                return

    def engine_for_watch(self) -> SwarmEngine:
        """The watcher's own client (a docker-py client is not shared between threads)."""
        if self._watch_engine is None:
            engine = self.p._engine_factory()
            assert isinstance(engine, SwarmEngine)
            self._watch_engine = engine
        return self._watch_engine

    def _remove(self) -> None:
        if self.service_id is not None:
            try:
                self.engine.remove_service(self.service_id)
            except Exception as exc:
                log.warning("run %s: removing its service failed: %s", self.p.record.id, exc)
        if self._watch_engine is not None:
            self._watch_engine.close()

    # -- what the task says ---------------------------------------------------------------

    def _status(self) -> dict[str, Any]:
        return dict(self.task.get("Status") or {})

    def _state(self) -> str:
        return str(self._status().get("State") or "new")

    def _container_ran(self) -> bool:
        container = self._status().get("ContainerStatus") or {}
        return self._state() in ("complete", "failed") and container.get("ExitCode") is not None

    def _task_error(self) -> str:
        status = self._status()
        return str(status.get("Err") or status.get("Message") or f"task {self._state()}")

    def _say_why(self) -> None:
        """Why the task waits, in the cluster's words, once per reason."""
        status = self._status()
        reason = str(status.get("Err") or status.get("Message") or "")
        if reason and reason not in self._notices and len(self._notices) < 20:
            self._notices.add(reason)
            self.p.events.append(EventType.NOTICE, {"message": f"swarm: {reason}"})

    def _node(self) -> None:
        node_id = str(self.task.get("NodeID") or "")
        if node_id and self.p.record.node is None:
            name = self.engine.node_name(node_id) or node_id[:12]
            self.p.record.node = name
            self.p.events.append(
                EventType.NOTICE, {"message": f"swarm: the task is on node {name}"}
            )

    def _check_canceled(self) -> None:
        self.p._check_canceled()


def run_on_swarm(pipeline: RunPipeline, engine: Engine) -> RunStatus:
    if not isinstance(engine, SwarmEngine):
        raise PipelineError(Phase.QUEUE, "this engine is not a swarm manager")
    return SwarmRun(pipeline, engine).run()
