"""One run: pull -> create -> attach -> start -> wait -> remove, in a worker thread.

Never touches HTTP. Everything a watcher should see goes into the run's
EventLog; every run ends with exactly one `done` event, whatever happens.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..engines import (
    DockerEngine,
    Engine,
    EngineConfig,
    EngineFactory,
    PullStream,
    engine_message,
    unreachable,
)
from ..engines.protocol import OutputStream
from ..errors import DiskFull, EngineUnavailable, PipelineError
from ..events import EventType, now_rfc3339
from ..models import Phase, PullPolicy, RegistryAuth, RunError, RunRecord, RunStatus
from ..settings import Settings
from ..storage.eventlog import EventLog
from .progress import PullProgress
from .relay import OutputRelay

log = logging.getLogger(__name__)

STOP_GRACE = 10.0


def done_data(record: RunRecord) -> dict[str, Any]:
    """The `done` event of a finished record (docs/api.md)."""
    return {
        "status": record.status.value,
        "exit_code": record.exit_code,
        "oom_killed": record.oom_killed,
        "error": record.error.model_dump() if record.error else None,
        "durations": record.durations.model_dump(),
        "log_lines": record.log_lines,
        "log_bytes": record.log_bytes,
        "dropped_lines": record.dropped_lines,
        "dropped_bytes": record.dropped_bytes,
    }


class Unplaced(Exception):
    """The engine it was placed on could not even be reached: nothing of the
    run happened there, so it goes back to the queue (raised by `execute`)."""


class Canceled(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RunPipeline:
    def __init__(
        self,
        record: RunRecord,
        events: EventLog,
        settings: Settings,
        *,
        auth: RegistryAuth | None = None,
        secret_env: dict[str, str] | None = None,
        engine_factory: EngineFactory = DockerEngine,
        save: Callable[[RunRecord], None] = lambda record: None,
    ) -> None:
        self.record = record
        self.events = events
        self.settings = settings
        self._auth = auth
        # Write-only, like `auth`: merged into the container's env at create, never kept.
        self._secret_env = dict(secret_env or {})
        self._engine_factory = engine_factory
        self._engine_name: str | None = None
        self._engine_kind = "docker"
        self.engine_config: EngineConfig | None = None
        # How a cancel or a timeout stops what runs: the container (SIGTERM, then
        # SIGKILL); on a swarm the flow removes the service instead.
        self.stop_action: Callable[[Engine, str], None] = lambda engine, target: engine.stop(
            target, STOP_GRACE
        )
        # On a swarm: the engine (name, factory) that is a node's own, by node id,
        # for the real pull progress of a task's node (runs/swarm.py).
        self.engine_of_node: Callable[[str], tuple[str, EngineFactory] | None] | None = None
        # Told of a failure that may mean the engine went away (its health check).
        self.on_unreachable: Callable[[str], None] | None = None
        self._save = save
        self._lock = threading.Lock()
        self._cancel_reason: str | None = None
        self._unplaced: str | None = None  # why no engine took it (fail_queued)
        self._timed_out = False
        self._phase = Phase.QUEUE
        self._pull_stream: PullStream | None = None
        self._container_id: str | None = None
        self._stopper: threading.Thread | None = None
        self._marks: dict[Phase, float] = {}
        self._created_mono = time.monotonic()
        self._finished = False
        self._exited = False
        self._disk_full = False  # its log could not be written: stop the container

    def assign(
        self, engine_name: str, engine_factory: EngineFactory, config: EngineConfig | None = None
    ) -> None:
        """Placed: the run goes to this engine (before `execute`)."""
        self._engine_name = engine_name
        self.engine_config = config
        self._engine_kind = config.kind if config is not None else "docker"
        self._engine_factory = engine_factory
        self.record.engine = engine_name

    @property
    def cancel_reason(self) -> str | None:
        return self._cancel_reason

    def unassign(self) -> None:
        """Back to the queue (`Unplaced`): no engine yet."""
        self._engine_name = None
        self.record.engine = None

    def registry_auth(self) -> dict[str, str] | None:
        """This run's registry credentials for the engine (never kept)."""
        return self._auth.model_dump(exclude_none=True) if self._auth else None

    def fail_queued(self, message: str) -> None:
        """No engine took it: `execute` ends it at once with `error` phase queue."""
        self._unplaced = message

    def _engine_error(self, exc: BaseException) -> str:
        """The engine's words; a failure to reach it names the engine."""
        message = engine_message(exc)
        if self._engine_name is None or not unreachable(exc):
            return message
        if self.on_unreachable is not None:
            self.on_unreachable(self._engine_name)
        return f"engine {self._engine_name}: {message}"

    # -- control, from any thread ------------------------------------------------

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self._cancel_reason is not None or self._exited:
                return  # canceled already, or its container has ended on its own
            self._cancel_reason = reason
            pull = self._pull_stream
            waiting_for_pull = self._phase == Phase.PULL and pull is None
            container = self._container_id if self._phase in (Phase.START, Phase.RUN) else None
        if pull is not None:
            pull.close()
        if waiting_for_pull:
            # The engine has not answered the pull yet (it resolves the manifest
            # first) and there is no socket to shut down: end the run now. The
            # worker drops the pull when the engine answers.
            self._finish(RunStatus.CANCELED, RunError(phase=Phase.PULL, message=reason))
        if container is not None:
            self._stop_container_async(container)

    def _check_canceled(self) -> None:
        if self._cancel_reason is not None:
            raise Canceled(self._cancel_reason)

    def _stop_container_async(self, container_id: str) -> None:
        """SIGTERM, grace, SIGKILL on a separate client, so the reader keeps reading."""
        with self._lock:
            if self._stopper is not None and self._stopper.is_alive():
                return

            def stop() -> None:
                try:
                    with self._engine_factory() as engine:
                        self.stop_action(engine, container_id)
                except Exception as exc:  # the run goes on to its wait either way
                    log.warning("stopping %s failed: %s", container_id[:12], exc)

            stopper = threading.Thread(target=stop, name=f"stop-{self.record.id}", daemon=True)
            # Started before it is published: the worker joins `_stopper` without
            # the lock, and joining a thread not yet started raises.
            stopper.start()
            self._stopper = stopper

    # -- the run -------------------------------------------------------------------

    def execute(self) -> None:
        """Run to the end; always appends `done`. Raises only `Unplaced`, before
        anything happened (then there is no `done` yet: the run is queued again)."""
        status = RunStatus.ERROR
        error: RunError | None = None
        engine: Engine | None = None
        if self._unplaced is not None and self._cancel_reason is None:
            self._finish(status, RunError(phase=Phase.QUEUE, message=self._unplaced))
            return
        try:
            self._check_canceled()
            try:
                engine = self._engine_factory()
            except Exception as exc:
                placed = self._engine_name is not None and self._cancel_reason is None
                if placed and unreachable(exc):
                    raise Unplaced(self._engine_error(exc)) from exc
                raise
            swarm = self._engine_kind == "swarm"
            status = self._run_swarm(engine) if swarm else self._run(engine)
        except Unplaced:
            raise
        except Canceled as exc:
            status = RunStatus.CANCELED
            error = RunError(phase=self._phase, message=exc.reason)
        except PipelineError as exc:
            status, error = self._failed(exc.phase, exc.message)
        except EngineUnavailable as exc:
            error = RunError(phase=self._phase, message=self._engine_error(exc))
        except DiskFull as exc:  # the log, or the record, could not be written
            log.error("run %s: %s", self.record.id, exc.message)
            self._disk_full = True
            status, error = self._failed(self._phase, exc.message)
        except Exception as exc:
            log.exception("run %s failed in %s", self.record.id, self._phase)
            status, error = self._failed(self._phase, self._engine_error(exc))
        finally:
            if engine is not None:
                try:
                    self._cleanup(engine)
                except Exception:
                    log.exception("cleaning up run %s failed", self.record.id)
                finally:
                    engine.close()
        self._finish(status, error)

    def _failed(self, phase: Phase, message: str) -> tuple[RunStatus, RunError]:
        """An error, unless a cancel caused it (by closing the pull or stopping
        the container): then the run is canceled in the phase it had reached."""
        if self._cancel_reason is not None:
            return RunStatus.CANCELED, RunError(phase=self._phase, message=self._cancel_reason)
        return RunStatus.ERROR, RunError(phase=phase, message=message)

    def _run(self, engine: Engine) -> RunStatus:
        spec = self.record.spec
        self._pull(engine)
        self._check_canceled()

        self._enter(Phase.CREATE)
        create_spec = spec
        if self._secret_env:
            create_spec = spec.model_copy(update={"env": {**spec.env, **self._secret_env}})
        try:
            container_id = engine.create(
                self.record.id,
                create_spec,
                name=f"pullrun-{self.record.id}",
                no_new_privileges=self.settings.no_new_privileges,
            )
        except Exception as exc:
            raise PipelineError(Phase.CREATE, self._engine_error(exc)) from exc
        finally:
            self._secret_env.clear()  # the container has them now (or never will)
        with self._lock:
            self._container_id = container_id
        self.record.container_id = container_id
        self._check_canceled()

        self._enter(Phase.START)
        try:
            output = engine.attach(container_id)
        except Exception as exc:
            raise PipelineError(Phase.START, self._engine_error(exc)) from exc
        try:
            self._check_canceled()
            try:
                engine.start(container_id)
            except Exception as exc:
                raise PipelineError(Phase.START, self._engine_error(exc)) from exc
            if self._cancel_reason is not None:  # canceled while it was starting
                if self._stopper is not None:
                    self._stopper.join()  # it stopped a container not yet running: quick
                engine.stop(container_id, STOP_GRACE)
                raise Canceled(self._cancel_reason)
            self.record.started_at = now_rfc3339()
            self._enter(Phase.RUN)
            timeout = spec.timeout or self.settings.default_timeout
            timer = threading.Timer(timeout, self._on_timeout, args=(container_id,))
            timer.daemon = True
            timer.start()
            try:
                self._relay(OutputRelay(self.events, self.settings), output)
                exit_code, wait_error = engine.wait(container_id)
                with self._lock:
                    self._exited = True
            finally:
                timer.cancel()
        finally:
            output.close()
        return self._exit_status(engine, container_id, exit_code, wait_error)

    def _run_swarm(self, engine: Engine) -> RunStatus:
        """The run as a swarm service (runs/swarm.py)."""
        from .swarm import run_on_swarm  # (it builds on this module)

        return run_on_swarm(self, engine)

    def _relay(self, relay: OutputRelay, output: OutputStream) -> None:
        """The container's output to `log` events, to its end; the counts to the record."""
        try:
            relay.run(output, tty=self.record.spec.tty)
        finally:  # (also when the log could not be written: what it had)
            counts = relay.counts
            self.record.log_lines = counts.lines
            self.record.log_bytes = counts.bytes
            self.record.dropped_lines = counts.dropped_lines
            self.record.dropped_bytes = counts.dropped_bytes

    def _exit_status(
        self, engine: Engine, container_id: str, exit_code: int, wait_error: str | None
    ) -> RunStatus:
        """The container has exited and its output is relayed: how the run ends."""
        self._mark_end(Phase.RUN)
        state = engine.inspect(container_id).get("State", {})
        self.record.exit_code = exit_code
        self.record.oom_killed = bool(state.get("OOMKilled"))
        if wait_error:
            self.events.append(EventType.NOTICE, {"message": f"engine: {wait_error}"})
        if self._timed_out:
            return RunStatus.TIMED_OUT
        if self._cancel_reason is not None:
            raise Canceled(self._cancel_reason)
        if exit_code == 0 and not self.record.oom_killed:
            return RunStatus.SUCCEEDED
        return RunStatus.FAILED

    def _on_timeout(self, container_id: str) -> None:
        with self._lock:
            if self._exited or self._finished:
                return  # it ended on its own as the timer fired
            self._timed_out = True
            timeout = self.record.spec.timeout or self.settings.default_timeout
            stopping = "its service" if self._engine_kind == "swarm" else "the container"
            self.events.append(
                EventType.NOTICE,
                {"message": f"timeout of {timeout:g}s reached: stopping {stopping}"},
            )
        self._stop_container_async(container_id)

    # -- pull ----------------------------------------------------------------------

    def _pull(self, engine: Engine) -> None:
        spec = self.record.spec
        policy = spec.pull
        summary: dict[str, Any] = {"policy": policy.value, "pulled": False}
        self.record.pull = summary
        if policy != PullPolicy.ALWAYS:
            try:
                present = engine.image_present(spec.image)
            except Exception as exc:
                raise PipelineError(Phase.PULL, self._engine_error(exc)) from exc
            if not present and policy == PullPolicy.NEVER:
                raise PipelineError(
                    Phase.PULL, f"image {spec.image} is not present and the pull policy is never"
                )
            if present:
                self.record.image_digest = engine.image_digest(spec.image)
                return
        self._enter(Phase.PULL)
        progress = PullProgress()
        # A cancel that came before the phase was `pull` (while the engine was
        # made or the image checked) only set the flag: honour it before the
        # engine's answer can keep the run waiting. A later one ends it at once.
        self._check_canceled()
        try:
            stream = self.start_pull(engine)
        except Exception as exc:  # before the first byte: the engine answered an error
            raise self._pull_failed(exc) from exc
        self.relay_pull(stream, progress)
        self._check_canceled()
        if not progress.complete:
            # The stream ended without its closing "Status:" line: the pull did
            # not finish, whatever the daemon said before.
            where = f" from engine {self._engine_name}" if self._engine_name else ""
            raise PipelineError(
                Phase.PULL, f"the pull stream{where} ended before the pull completed"
            )
        summary.update(progress.summary(), pulled=True)
        self.record.image_digest = progress.digest or engine.image_digest(spec.image)
        self._mark_end(Phase.PULL)

    def start_pull(self, engine: Engine) -> PullStream:
        """Ask `engine` to pull the run's image, with this run's credentials
        (or the server's, when lent); errors before its first byte raise here."""
        spec = self.record.spec
        return engine.pull(
            spec.image,
            platform=spec.platform,
            auth=self.registry_auth(),
            stall_timeout=self.settings.pull_stall_timeout,
            lend_credentials=self.settings.lends_credentials,
        )

    def relay_pull(self, stream: PullStream, progress: PullProgress) -> None:
        """The engine's pull messages as `pull` events, to the stream's end; an
        error inside the stream raises PipelineError (phase pull). A cancel
        closes the stream."""
        with self._lock:
            self._pull_stream = stream
        if self._cancel_reason is not None:
            stream.close()
        try:
            for message in stream:
                data = progress.update(message)
                if message.get("error") or message.get("errorDetail"):
                    detail = message.get("errorDetail") or {}
                    text = str(message.get("error") or detail.get("message") or "pull failed")
                    data["status"] = data["status"] or "error"
                    data["error"] = True
                    data["message"] = text
                    self.events.append(EventType.PULL, data)
                    raise PipelineError(Phase.PULL, text)
                self.events.append(EventType.PULL, data)
                if data["status"].startswith("Retrying in"):
                    layer = data["layer"] or "?"
                    self.events.append(
                        EventType.NOTICE, {"message": f"pull of layer {layer}: {data['status']}"}
                    )
        except PipelineError:
            raise
        except Exception as exc:
            raise self._pull_failed(exc) from exc
        finally:
            with self._lock:
                self._pull_stream = None
            stream.close()

    def _pull_failed(self, exc: Exception) -> PipelineError:
        """The read timeout is the stall detector, before the engine's first
        byte as after it: say so rather than quote the HTTP client."""
        if "timed out" in str(exc).lower():
            stall = self.settings.pull_stall_timeout
            return PipelineError(Phase.PULL, f"no pull progress for {stall:g}s: pull abandoned")
        return PipelineError(Phase.PULL, self._engine_error(exc))

    # -- bookkeeping ---------------------------------------------------------------

    def _mark(self, phase: Phase) -> None:
        self._marks[phase] = time.monotonic()

    def _mark_end(self, phase: Phase) -> None:
        started = self._marks.get(phase)
        if started is not None:
            setattr(self.record.durations, phase, round(time.monotonic() - started, 4))

    def _enter(self, phase: Phase) -> None:
        status = phase.status
        leaving_queue = self._phase == Phase.QUEUE
        if leaving_queue:
            self.record.durations.queue = round(time.monotonic() - self._created_mono, 4)
        else:
            self._mark_end(self._phase)
        with self._lock:
            self._phase = phase
        self._mark(phase)
        self.record.status = status
        data: dict[str, Any] = {"status": status.value, "at": now_rfc3339()}
        if leaving_queue and self._engine_name is not None:
            data["engine"] = self._engine_name  # where the run was placed
            if self.record.node is not None:
                data["node"] = self.record.node  # and, on a swarm, the node
        self.events.append(EventType.STATUS, data)
        self.record.last_event_id = self.events.last_id
        self._save(self.record)

    def _cleanup(self, engine: Engine) -> None:
        container_id = self._container_id
        if self._stopper is not None:
            self._stopper.join(STOP_GRACE + 30)
        if container_id and self._disk_full and not self._exited:
            try:  # nobody can keep its output: it must not run on unseen
                engine.stop(container_id, STOP_GRACE)
            except Exception as exc:
                log.warning("stopping %s failed: %s", container_id[:12], exc)
        if container_id and self.record.spec.auto_remove:
            try:
                engine.remove(container_id)
            except Exception as exc:
                self.events.append(
                    EventType.NOTICE,
                    {"message": f"could not remove the container: {engine_message(exc)}"},
                )

    def _finish(self, status: RunStatus, error: RunError | None) -> None:
        """Append `done` (once, whoever calls first), then save the record."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            record = self.record
            if record.durations.queue is None:
                record.durations.queue = round(time.monotonic() - self._created_mono, 4)
            if (
                self._phase in (Phase.PULL, Phase.CREATE, Phase.START)
                and getattr(record.durations, self._phase) is None
            ):
                self._mark_end(self._phase)
            record.durations.total = round(time.monotonic() - self._created_mono, 4)
            finished_at = now_rfc3339()
            final = {"status": status, "error": error, "finished_at": finished_at}
            # Under the lock: no timeout notice can slip in before `done`.
            try:
                done_id = self.events.append(
                    EventType.DONE, done_data(record.model_copy(update=final))
                )
            except DiskFull as exc:  # no reserve here and no room: the record still ends
                log.error("run %s: its `done` could not be written: %s", record.id, exc)
            else:
                record.last_event_id = done_id
            # Only now, and the status last: whoever reads the live record and
            # sees it ended finds its `done` in the log and its id here.
            record.error = error
            record.finished_at = finished_at
            record.status = status
        try:
            self._save(record)
        except Exception:  # the log has its `done`; recovery repairs the record
            log.exception("saving the final record of run %s failed", record.id)

    @property
    def finished(self) -> bool:
        return self._finished

    def abort(self, message: str) -> None:
        """Last resort after an unexpected failure: make sure `done` is there."""
        self._finish(RunStatus.ERROR, RunError(phase=self._phase, message=message))
