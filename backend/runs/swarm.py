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

from ..engines import Engine, OutputStream, engine_message, unreachable
from ..engines.swarm import ENDED_STATES, SwarmEngine
from ..errors import PipelineError
from ..events import EventType, now_rfc3339
from ..models import PIPELINE_PHASES, Phase, PullPolicy, RunStatus
from .progress import PullProgress
from .reattach import NoOutput, Recorded, ResumedRelay, count_kept, plan, rfc3339, timestamp
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
        self.node_lost: str | None = None  # why the task's node is gone, if it is

    # -- the flow ------------------------------------------------------------------------

    def run(self) -> RunStatus:
        try:
            self._create()
            return self._through_task()
        finally:
            self._remove()

    def _through_task(self) -> RunStatus:
        """Follow the task through its states (from wherever it is), then its output."""
        p = self.p
        state = self._until(lambda s: s not in ("new", "allocated", "pending"))
        if state in PREPARING:
            self._node()
            self._reach(Phase.PULL)
            self._node_pull()
            state = self._until(lambda s: s not in PREPARING)
        if state == "starting":
            self._node()
            self._reach(Phase.START)
            state = self._until(lambda s: s != "starting")
        if state in ENDED_STATES and not self._container_ran():
            # It may have gone from `pending` to its end between two looks (a
            # node's failed pull takes 0.1 s): its node and the phase it failed
            # in come from the task itself.
            self._node()
            phase = self._failed_in()
            if phase is not None:
                self._reach(phase)
            raise PipelineError(p._phase, self._task_error())
        self._node()
        self._reach(Phase.START)
        p.record.started_at = now_rfc3339()
        p._enter(Phase.RUN)
        return self._follow()

    def _reach(self, phase: Phase) -> None:
        """Enter `phase` unless the run is there or past it (taken up after a restart)."""
        if PIPELINE_PHASES.index(self.p._phase) < PIPELINE_PHASES.index(phase):
            self.p._enter(phase)

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
        self._own(service_id)
        p._save(p.record)  # its service id: a restart takes it up from here
        p._check_canceled()

    def _own(self, service_id: str) -> None:
        p = self.p
        self.service_id = service_id
        p.record.container_id = service_id
        # Cancel and timeout remove the service (the pipeline's stop action).
        p.stop_action = lambda engine, target: engine.remove_service(target)  # type: ignore[attr-defined]
        with p._lock:
            p._container_id = service_id

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

    def _follow(
        self,
        relay: OutputRelay | None = None,
        stream: OutputStream | None = None,
        remaining: float | None = None,
    ) -> RunStatus:
        """Relay the task's log (`stream`: its follow stream) until the task
        ends; its exit. `remaining`: of its timeout (all of it by default);
        none left, the service is removed once `stream` is relayed."""
        p = self.p
        timeout = p.record.spec.timeout or p.settings.default_timeout
        remaining = timeout if remaining is None else remaining
        timer = threading.Timer(max(0.0, remaining), p._on_timeout, args=(self.service_id,))
        timer.daemon = True
        if remaining > 0:
            timer.start()
        if stream is None:
            stream = self.engine.task_logs(str(self.task.get("ID")), follow=True)
        ended, stop = threading.Event(), threading.Event()
        watcher = threading.Thread(
            target=self._watch_end, args=(ended, stop), daemon=True, name="swarm-watch"
        )
        watcher.start()
        try:
            p._relay(relay or OutputRelay(p.events, p.settings), EndsWhenQuiet(stream, ended))
            if remaining <= 0:
                p._on_timeout(self.service_id or "")
            # (A task whose node died stays `running` for a long while.)
            state = self._until(lambda s: s in ENDED_STATES or self.node_lost is not None)
            with p._lock:
                p._exited = True
        finally:
            stop.set()
            timer.cancel()
            stream.close()
        p._mark_end(Phase.RUN)
        return self._ended(state)

    def _ended(self, state: str) -> RunStatus:
        """The task has ended (`state`) and its output is relayed: how the run ends."""
        p = self.p
        stopped_by_us = p._cancel_reason is not None or p._timed_out or state == "remove"
        if not stopped_by_us and not self._container_ran():
            # Its node died: the task may still say `running`, or the cluster
            # may have rejected it ("assigned node no longer meets
            # constraints"); the node's state says why, in the cluster's words.
            if self.node_lost is None and self.task:
                self.node_lost = self._node_down([self.task])
            if self.node_lost is not None:
                raise PipelineError(Phase.RUN, f"swarm: {self.node_lost}")
        container = self._status().get("ContainerStatus") or {}
        exit_code = container.get("ExitCode") if state in ("complete", "failed") else None
        p.record.exit_code = int(exit_code) if exit_code is not None else None
        p.record.oom_killed = self._oom_killed(container)
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
            down = self._node_down(tasks)
            if down is not None:
                self.node_lost = down
                ended.set()
                return

    def _node_down(self, tasks: list[dict[str, Any]]) -> str | None:
        """A node that died under its task leaves the task `running` for a long
        while; its node turns `down` sooner (heartbeat failure): why, if so."""
        node_id = str(tasks[-1].get("NodeID") or "")
        if not node_id:
            return None
        state, message = self.engine_for_watch().node_state(node_id)
        if state in ("down", "disconnected"):
            name = self.p.record.node or node_id[:12]
            return f"node {name} is {state}" + (f": {message}" if message else "")
        return None

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

    # -- after a restart of pullrun -------------------------------------------------------

    def resume(self, recorded: Recorded) -> RunStatus:
        """Go on with a run a restart caught, whose event log holds `recorded`:
        its service found by label; its task followed from the state it is in
        now (waiting or preparing: as `run` does), its output caught up without
        a gap or a duplicate (runs/reattach.py); the service removed at the end."""
        p = self.p
        was = p.record.status.value
        try:
            service_id = self._find()
            if service_id is None:
                raise PipelineError(
                    Phase.INTERRUPTED,
                    f"the server stopped while this run was {was}, and its service is gone",
                )
            self._own(service_id)
            self._check_canceled()  # canceled before its service was found
            tasks = self.engine.tasks(service_id)
            if tasks:
                self.task = max(tasks, key=lambda t: str(t.get("CreatedAt", "")))
            created = timestamp(self.task.get("CreatedAt"))
            if created is not None:  # the placement timeout counts from the task's creation
                self._created = time.monotonic() - max(0.0, time.time() - created)
            state = self._state()
            ran = self._container_ran() or (state in ENDED_STATES and p._phase == Phase.RUN)
            if state != "running" and not ran:
                self._notice("pullrun restarted: following its task again")
                return self._through_task()
            return self._take_up(recorded, state)
        finally:
            self._remove()

    def _find(self) -> str | None:
        """The run's service, found by its label (the record may not name it)."""
        found = self.engine.managed_services(self.p.record.id)
        if self.p.record.container_id in found:
            return self.p.record.container_id
        return found[0] if found else None

    def _take_up(self, recorded: Recorded, state: str) -> RunStatus:
        """The task runs, or ran while pullrun was down: its output caught up
        and followed, its timeout counted from its start; its end."""
        p = self.p
        running = state == "running"
        started = self._started(running)
        self._node()
        self._reach(Phase.START)
        if p.record.started_at is None and started is not None:
            p.record.started_at = rfc3339(started)
        self._reach(Phase.RUN)
        elapsed = max(0.0, time.time() - started) if started is not None else 0.0
        p._marks[Phase.RUN] = time.monotonic() - elapsed
        what = "re-attached to its task" if running else "its task ended meanwhile"
        self._notice(f"pullrun restarted: {what}")
        timeout = p.record.spec.timeout or p.settings.default_timeout
        remaining = timeout - elapsed
        # Its deadline gone, the service is removed once the log is caught up:
        # the log read to its end, not followed (the removal would cut it).
        relay, stream = self._caught_up(recorded, follow=running and remaining > 0)
        if running:
            return self._follow(relay, stream, remaining)
        try:
            p._relay(relay, stream)
        finally:
            stream.close()
        with p._lock:
            p._exited = True
        finished = timestamp(self._status().get("Timestamp"))  # of its last state
        if started is not None and finished is not None:
            ran = max(0.0, finished - started)
            p.record.durations.run = round(ran, 4)
            if ran > timeout:
                p._timed_out = True
                self._notice(
                    f"timeout of {timeout:g}s passed while pullrun was down: "
                    f"the task ran {ran:.1f}s and ended by itself"
                )
        return self._ended(state)

    def _started(self, running: bool) -> float | None:
        """When the task started: the time of its `running` state while it is
        in it (once ended, the task keeps only the time of its end), else
        when pullrun saw it start."""
        if running:
            at = timestamp(self._status().get("Timestamp"))
            if at is not None:
                return at
        return timestamp(self.p.record.started_at)

    def _caught_up(self, recorded: Recorded, *, follow: bool) -> tuple[ResumedRelay, OutputStream]:
        """The task's log less what the run's log has: counted once to its end
        (`task_logs` without follow), then one stream from its first line
        through the skip (ResumedRelay), followed or read to its end."""
        p = self.p
        task_id = str(self.task.get("ID"))
        try:
            logged = self.engine.task_logs(task_id, follow=False)
            kept = count_kept(logged, recorded, p.record.spec.tty)
        except Exception as exc:
            if unreachable(exc):
                raise
            self._notice(
                f"the cluster keeps no log of this task ({engine_message(exc)}): what it "
                "printed while pullrun was down is missing (how many lines is not known)"
            )
            closed = list(recorded.streams)
            relay = ResumedRelay(
                p.events, p.settings, recorded, {}, closed=closed, raw_bytes=recorded.kept_bytes
            )
            return relay, NoOutput()
        resume = plan(recorded, kept)
        for message in resume.notices:
            self._notice(message)
        relay = ResumedRelay(p.events, p.settings, recorded, resume.skips, closed=resume.closed)
        return relay, self.engine.task_logs(task_id, follow=follow)

    def _notice(self, message: str) -> None:
        self.p.events.append(EventType.NOTICE, {"message": message})

    # -- what the task says ---------------------------------------------------------------

    def _status(self) -> dict[str, Any]:
        return dict(self.task.get("Status") or {})

    def _state(self) -> str:
        return str(self._status().get("State") or "new")

    def _failed_in(self) -> Phase | None:
        """The phase an ended task failed in, by what its status says it was doing."""
        if not self.task.get("NodeID"):
            return None  # no node ever took it: still the queue
        said = str(self._status().get("Message") or "").lower()
        if "start" in said:
            return Phase.START
        if "prepar" in said or "pull" in said or "No such image" in self._task_error():
            return Phase.PULL
        return None

    def _oom_killed(self, container: dict[str, Any]) -> bool:
        """The task status carries no OOM fact (only "non-zero exit (137)"); the
        node's own engine does, where pullrun has it and the container is still
        there. Never guessed from 137 alone."""
        p = self.p
        node_id = str(self.task.get("NodeID") or "")
        container_id = str(container.get("ContainerID") or "")
        if container.get("ExitCode") != 137 or not container_id or not p.engine_of_node:
            return False
        found = p.engine_of_node(node_id)
        if found is None:
            return False
        try:
            with found[1]() as engine:
                return bool(engine.inspect(container_id).get("State", {}).get("OOMKilled"))
        except Exception:
            return False

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

    def _node_pull(self) -> None:
        """Where the task's node is also one of pullrun's engines, the real
        per-layer progress of its pull: the same pull asked of that engine
        joins the node's own (the engine shares the layers' downloads). Only
        progress: the task's states still decide the run."""
        p = self.p
        node_id = str(self.task.get("NodeID") or "")
        found = p.engine_of_node(node_id) if node_id and p.engine_of_node else None
        if found is None:
            return
        name, factory = found
        spec = p.record.spec
        try:
            with factory() as engine:
                if spec.pull != PullPolicy.ALWAYS and engine.image_present(spec.image):
                    return  # the node has it: preparing is quick
                stream = p.start_pull(engine)
                p.events.append(
                    EventType.NOTICE,
                    {"message": f"swarm: the node pulls the image; progress from engine {name}"},
                )
                progress = PullProgress()
                p.relay_pull(stream, progress)
                if progress.complete:
                    p.record.pull = {
                        "policy": spec.pull.value,
                        "pulled": True,
                        **progress.summary(),
                    }
        except Exception as exc:  # (a cancel closes the stream: the flow sees it next)
            if p._cancel_reason is None:
                message = exc.message if isinstance(exc, PipelineError) else engine_message(exc)
                p.events.append(
                    EventType.NOTICE,
                    {"message": f"swarm: no pull progress from engine {name}: {message}"},
                )


def run_on_swarm(pipeline: RunPipeline, engine: Engine) -> RunStatus:
    if not isinstance(engine, SwarmEngine):
        raise PipelineError(Phase.QUEUE, "this engine is not a swarm manager")
    return SwarmRun(pipeline, engine).run()


def resume_on_swarm(pipeline: RunPipeline, engine: Engine, recorded: Recorded) -> RunStatus:
    """A swarm run taken up after a restart (runs/reattach.py)."""
    if not isinstance(engine, SwarmEngine):
        raise PipelineError(Phase.INTERRUPTED, "this engine is not a swarm manager")
    return SwarmRun(pipeline, engine).resume(recorded)
