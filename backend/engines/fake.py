"""An in-memory engine for tests: the `Engine` protocol without Docker.

`FakeDocker` is the fake daemon: images, containers and what they do, shared
by every `FakeEngine` it makes. It is itself the engine factory
(`create_app(settings, engine_factory=daemon)`), so the pipeline, the stopper
thread of a cancel and `/readyz` each get their own engine talking to one
daemon, as with the real engine.

Everything the engine says is replayed from recordings of a real engine,
never made up here:

- pull streams: `tests/fixtures/pulls/*.jsonl` (`recorded_pull(name)`);
- failures (exception type, HTTP status, the engine's own words), wait and
  inspect answers, attach bytes, the version answer, what the logs endpoint
  answers (`logs`: a message per line, `log_messages`): `tests/fixtures/engine/`,
  written by `tests/fixtures/engine/record.py` (see its README).

Timing is in the test's hands, never in sleeps: a `Gate` (from
`daemon.gate()`) is a point where a pull stream, a container's output or any
engine call (`daemon.hold(op)`) stops until the test calls `release()`;
`gate.reached` tells the test it got there. The threading contract of the
real engine holds: `close()` of a pull or attach stream from another thread
unblocks its reader; `stop()` from another engine makes the container exit
(143 when its program handles SIGTERM, else 137 after the grace); `wait()`
blocks until the container exits.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import importlib
import itertools
import json
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import quote

import requests

from ..errors import EngineUnavailable
from ..events import now_rfc3339
from ..models import RunSpec
from ..reference import split_reference
from .docker import MANAGED_LABEL, READ_SIZE, RUN_LABEL
from .frames import FrameDecoder

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
ENGINE_FIXTURES = FIXTURES / "engine"
PULL_FIXTURES = FIXTURES / "pulls"
GATE_DEADLINE = 30.0  # a gate nobody releases fails the engine call instead of hanging

Op = Literal[
    "version",
    "info",
    "image_present",
    "image_digest",
    "pull",
    "create",
    "attach",
    "logs",
    "start",
    "wait",
    "inspect",
    "stop",
    "remove",
    "managed_containers",
]


# -- recordings -----------------------------------------------------------------------


@functools.cache
def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ENGINE_FIXTURES / name).read_text())
    return data


@functools.cache
def recorded_errors() -> dict[str, dict[str, Any]]:
    """errors.json (and the `errors` of logs.json): name -> {op, exception,
    status_code, explanation, text, message}."""
    return {**_load("errors.json"), **_load("logs.json")["errors"]}


def recorded_logs(name: str) -> dict[str, Any]:
    """An answer of the logs endpoint (logs.json `streams`); base64 values are raw bytes."""
    return copy.deepcopy(_load("logs.json")["streams"][name])


def recorded_containers() -> dict[str, dict[str, Any]]:
    """containers.json: wait results and inspect States of real containers."""
    return _load("containers.json")


def recorded_attach(name: str) -> bytes:
    """The raw attach bytes of a recorded container (attach.json)."""
    return base64.b64decode(_load("attach.json")[name]["raw"])


def recorded_version() -> dict[str, Any]:
    return copy.deepcopy(_load("version.json"))


def recorded_info() -> dict[str, Any]:
    return copy.deepcopy(_load("info.json"))


def recorded_pull(name: str) -> list[dict[str, Any]]:
    """A pull stream from tests/fixtures/pulls (name without `.jsonl`)."""
    text = (PULL_FIXTURES / f"{name}.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def image_values(image: str) -> dict[str, str]:
    """Values for the placeholders of the recorded messages about `image`."""
    repository, tag, digest = split_reference(image)
    registry, sep, path = repository.partition("/")
    if not sep or not ("." in registry or ":" in registry or registry == "localhost"):
        registry, path = "docker.io", repository if sep else f"library/{repository}"
    return {
        "image": normalize(image),
        "repository": repository,
        "repository_quoted": quote(repository, safe=""),
        "path": path,
        "tag": digest or tag or "latest",
        "registry": registry,
    }


def normalize(image: str) -> str:
    """`busybox` -> `busybox:latest`, as the engine names images."""
    repository, tag, digest = split_reference(image)
    return f"{repository}@{digest}" if digest else f"{repository}:{tag or 'latest'}"


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def _exception_class(path: str) -> type[BaseException]:
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        raise TypeError(f"{path} is not an exception class")
    return cls


def recorded_error(recording: str, /, **values: str) -> BaseException:
    """The exception the real engine raised in `recording`, placeholders filled.

    The class is the one the recording names (docker.errors.*, requests.*,
    urllib3.*), loaded by that name: the fake calls nothing of docker-py.
    """
    entry = recorded_errors()[recording]
    kind = entry.get("exception")
    if not kind:
        raise ValueError(f"recording {recording!r} is not an exception")
    cls = _exception_class(str(kind))
    if "status_code" in entry:
        # An engine (HTTP) error, made as docker-py makes it from the answer
        # (create_api_error_from_http_exception): cls(HTTPError, response, explanation).
        explanation = _fill(str(entry["explanation"]), values)
        response = requests.Response()
        response.status_code = int(entry["status_code"])
        response.reason = str(entry["reason"])
        response.url = _fill(str(entry["url"]), values)
        response.headers["Content-Type"] = "application/json"
        response._content = json.dumps({"message": explanation}).encode()
        try:
            response.raise_for_status()
        except requests.HTTPError as http_error:
            made: BaseException = cast(Any, cls)(
                http_error, response=response, explanation=explanation
            )
            return made
        raise AssertionError(f"recording {recording!r} is not an HTTP error")
    text = _fill(str(entry["text"]), values)
    if cls is EngineUnavailable:
        return EngineUnavailable(text)
    # Exceptions whose constructors want more than words (urllib3's take a pool):
    # the same class, with the same text.
    made = cls.__new__(cls)
    BaseException.__init__(made, text)
    return made


def _status_code(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


# -- scripts --------------------------------------------------------------------------


def frame(stream: int, payload: bytes) -> bytes:
    """One frame of a multiplexed attach stream (1 stdout, 2 stderr)."""
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def stdout(payload: bytes) -> bytes:
    return frame(1, payload)


def stderr(payload: bytes) -> bytes:
    return frame(2, payload)


class Gate:
    """A point where a script stops until `release()`. `reached` is set when it
    gets there; a stop, a close or `FakeDocker.close()` also ends the wait."""

    def __init__(self, daemon: FakeDocker, name: str) -> None:
        self._daemon = daemon
        self.name = name
        self.reached = threading.Event()
        self.released = False

    def release(self) -> None:
        with self._daemon._cond:
            self.released = True
            self._daemon._cond.notify_all()

    def wait_reached(self, timeout: float = GATE_DEADLINE) -> None:
        """Block until something arrives at the gate; AssertionError after `timeout`."""
        if not self.reached.wait(timeout):
            raise AssertionError(f"nothing reached gate {self.name!r} within {timeout:g}s")

    def __repr__(self) -> str:
        return f"Gate({self.name!r}, reached={self.reached.is_set()}, released={self.released})"


@dataclass
class Program:
    """What a container does once started: write `output` (bytes exactly as the
    attach stream carries them: frames, or raw bytes for a tty; a `Gate` stops
    it there), then exit with `exit_code`.

    `term_exit` is the exit code when SIGTERM arrives (143: a shell that traps
    it, as recorded); None: SIGTERM is ignored (sleep as PID 1) and the stop
    kills it after the grace (137). `start_error` names a recorded failure of
    start (`start-no-such-command`); `wait_error` is the message wait reports.
    """

    output: Sequence[bytes | Gate] = ()
    exit_code: int = 0
    oom_killed: bool = False
    term_exit: int | None = 143
    start_error: str | None = None
    wait_error: str | None = None
    # The engine's log of it (`logs`): `none` cannot be read back (as
    # recorded); `log_kept`: only the newest lines are kept (a rotated json-file).
    log_driver: str = "json-file"
    log_kept: int | None = None


@dataclass
class PullScript:
    """What the engine answers to a pull: `messages` (a recording), streamed.

    `answer`: pull() itself waits there (the engine resolving the manifest:
    no byte yet). `pauses`: the stream waits before message i until released
    or closed. `refuse`: pull() raises that recorded error. `then`: after the
    messages the stream raises that recorded error (`pull-stream-stall`).
    """

    messages: list[dict[str, Any]] = field(default_factory=list)
    answer: Gate | None = None
    pauses: dict[int, Gate] = field(default_factory=dict)
    refuse: str | None = None
    then: str | None = None


@dataclass
class FakeContainer:
    id: str
    name: str
    spec: RunSpec
    labels: dict[str, str]
    program: Program
    state: Literal["created", "running", "exited", "removed"] = "created"
    output: bytearray = field(default_factory=bytearray)
    exit_code: int = 0
    oom_killed: bool = False
    error: str = ""
    wait_error: str | None = None
    signal: Literal["TERM", "KILL"] | None = None
    stops: int = 0
    security_opt: list[str] = field(default_factory=list)
    started_at: str = "0001-01-01T00:00:00Z"
    finished_at: str = "0001-01-01T00:00:00Z"

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass
class Call:
    op: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


# -- the daemon -------------------------------------------------------------------------


class FakeDocker:
    """The fake daemon; calling it makes a `FakeEngine` (the engine factory)."""

    def __init__(self, *, images: Iterable[str] = (), read_size: int = READ_SIZE) -> None:
        self._cond = threading.Condition()
        self.read_size = read_size
        self.images: dict[str, str] = {}
        for image in images:
            self.add_image(image)
        self.containers: dict[str, FakeContainer] = {}
        self.pulls: dict[str, PullScript] = {}
        self.programs: dict[tuple[str, ...], Program] = {}
        self.default_program = Program()
        # The engine does not answer: new engines fail as DockerEngine() does
        # (`engine-unreachable`), calls of existing ones as a client whose engine
        # went away (`engine-gone`).
        self.down = False
        # Another kind of engine (`{"Arch": "arm64"}`, `{"NCPU": 64}`): merged
        # over the recorded answers.
        self.version_overrides: dict[str, Any] = {}
        self.info_overrides: dict[str, Any] = {}
        self.calls: list[Call] = []
        self.engines_made = 0
        self.engines_open = 0
        self._failures: dict[str, deque[str]] = {}
        self._holds: dict[str, deque[Gate]] = {}
        self._gates: list[Gate] = []
        self._threads: list[threading.Thread] = []
        self._ids = itertools.count(1)
        self._closed = False

    def __call__(self) -> FakeEngine:
        with self._cond:
            if self.down:
                raise recorded_error("engine-unreachable")
            self.engines_made += 1
            self.engines_open += 1
        return FakeEngine(self)

    def probe(self) -> FakeProbe:
        """A health-check client (the engine pool's): answers `version` and
        `info` like an engine, and is neither counted nor logged, so a test's
        count of the run's engine calls is not disturbed by the background checks."""
        with self._cond:
            if self.down:
                raise recorded_error("engine-unreachable")
        return FakeProbe(self)

    # -- set-up, from the test ----------------------------------------------------------

    def gate(self, name: str = "gate") -> Gate:
        gate = Gate(self, name)
        with self._cond:
            gate.released = self._closed  # after close() nothing blocks any more
            self._gates.append(gate)
        return gate

    def add_image(self, image: str, digest: str | None = None) -> None:
        ref = normalize(image)
        with self._cond:
            self.images[ref] = digest or "sha256:" + hashlib.sha256(ref.encode()).hexdigest()

    def script_pull(self, image: str, script: PullScript) -> PullScript:
        with self._cond:
            self.pulls[normalize(image)] = script
        return script

    def program(self, command: Sequence[str], program: Program) -> Program:
        """What containers created with `command` do."""
        with self._cond:
            self.programs[tuple(command)] = program
        return program

    def fail(self, op: Op, error: str) -> None:
        """The next `op` call raises recorded error `error` (errors.json)."""
        with self._cond:
            self._failures.setdefault(op, deque()).append(error)

    def hold(self, op: Op) -> Gate:
        """The next `op` call waits at the returned gate before it does anything."""
        gate = self.gate(op)
        with self._cond:
            self._holds.setdefault(op, deque()).append(gate)
        return gate

    # -- inspection, from the test --------------------------------------------------------

    def calls_of(self, op: str) -> list[Call]:
        with self._cond:
            return [call for call in self.calls if call.op == op]

    def live_containers(self) -> list[FakeContainer]:
        with self._cond:
            return [c for c in self.containers.values() if c.state != "removed"]

    def container_of(self, run_id: str) -> FakeContainer | None:
        with self._cond:
            for container in self.containers.values():
                if container.labels.get(RUN_LABEL) == run_id:
                    return container
        return None

    def add_container(self, run_id: str, spec: RunSpec, program: Program | None = None) -> str:
        """A pullrun container left by an earlier server (crash-recovery tests)."""
        with self._cond:
            return self._new_container(run_id, spec, f"pullrun-{run_id}", program).id

    def close(self) -> None:
        """End everything still blocked (test teardown): gates open, containers killed."""
        with self._cond:
            self._closed = True
            for gate in self._gates:
                gate.released = True
            for container in self.containers.values():
                if container.running:
                    container.signal = "KILL"
            self._cond.notify_all()
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)

    # -- the engine's side -------------------------------------------------------------------

    def _wait(self, predicate: Any, what: str) -> None:
        """cond.wait_for under the lock; AssertionError rather than a hang."""
        if not self._cond.wait_for(predicate, GATE_DEADLINE):
            raise AssertionError(f"fake engine: {what} for {GATE_DEADLINE:g}s")

    def _enter(self, op: Op, *args: Any, **kwargs: Any) -> None:
        """Every engine call: logged, held at a gate if asked, failed if asked."""
        with self._cond:
            self.calls.append(Call(op, args, kwargs))
            holds = self._holds.get(op)
            gate = holds.popleft() if holds else None
        if gate is not None:
            gate.reached.set()
            with self._cond:
                self._wait(lambda: gate.released, f"gate {gate.name!r} was not released")
        with self._cond:
            if self.down:  # it went away under a client made while it answered
                raise recorded_error("engine-gone")
            failures = self._failures.get(op)
            error = failures.popleft() if failures else None
        if error is not None:
            raise recorded_error(error, **self._values(op, args, kwargs))

    def _values(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, str]:
        values: dict[str, str] = {}
        if op in ("image_present", "image_digest", "pull") and args:
            values.update(image_values(str(args[0])))
        elif op == "create":
            spec = cast(RunSpec, args[1])
            values.update(image_values(spec.image))
            values["name"] = str(kwargs.get("name") or "")
        elif args and isinstance(args[0], str):
            values["container"] = args[0]
            container = self.containers.get(args[0])
            if container is not None:
                values["name"] = container.name
        return values

    def _container(self, container_id: str, op: str) -> FakeContainer:
        container = self.containers.get(container_id)
        if container is None or container.state == "removed":
            raise recorded_error(f"{op}-no-such-container", container=container_id)
        return container

    def _new_container(
        self, run_id: str, spec: RunSpec, name: str | None, program: Program | None = None
    ) -> FakeContainer:
        container_id = hashlib.sha256(f"fake-{next(self._ids)}".encode()).hexdigest()
        if program is None:
            program = self.programs.get(tuple(spec.command or ()), self.default_program)
        container = FakeContainer(
            id=container_id,
            name=name or f"fake_{container_id[:8]}",
            spec=spec,
            labels={**spec.labels, RUN_LABEL: run_id, MANAGED_LABEL: "true"},
            program=program,
        )
        self.containers[container_id] = container
        return container

    def _start(self, container: FakeContainer) -> None:
        """Run the container's program in a thread of its own (the 'process')."""
        program = container.program
        if program.start_error:
            # As recorded: the container stays `created`, with the start's error
            # in State.Error and in wait's answer, and exit code 127.
            error = recorded_error(program.start_error, container=container.id)
            container.exit_code = int(recorded_containers()["start-failed"]["wait"]["StatusCode"])
            container.error = container.wait_error = str(getattr(error, "explanation", error))
            raise error
        container.state = "running"
        container.started_at = now_rfc3339()
        thread = threading.Thread(
            target=self._run_program, args=(container,), name=f"fake-{container.id[:8]}"
        )
        thread.daemon = True
        self._threads.append(thread)
        thread.start()

    @staticmethod
    def _must_exit(container: FakeContainer) -> bool:
        return container.signal == "KILL" or (
            container.signal == "TERM" and container.program.term_exit is not None
        )

    def _run_program(self, container: FakeContainer) -> None:
        program = container.program
        with self._cond:
            for step in program.output:
                if self._must_exit(container):
                    break
                if isinstance(step, Gate):
                    step.reached.set()

                    def go_on(gate: Gate = step) -> bool:
                        return gate.released or self._must_exit(container)

                    self._cond.wait_for(go_on)
                else:
                    container.output += step
                    self._cond.notify_all()
            if container.signal == "KILL":
                container.exit_code = 137
            elif container.signal == "TERM" and program.term_exit is not None:
                container.exit_code = program.term_exit
            else:
                container.exit_code = program.exit_code
                container.oom_killed = program.oom_killed
                container.wait_error = program.wait_error
            container.state = "exited"
            container.finished_at = now_rfc3339()
            self._cond.notify_all()

    def _stop(self, container: FakeContainer, grace: float) -> None:
        """SIGTERM, and SIGKILL when it has not exited after `grace` seconds."""
        if not container.running:
            return
        container.stops += 1
        container.signal = "TERM"
        self._cond.notify_all()
        if not self._cond.wait_for(lambda: not container.running, max(0.0, grace)):
            container.signal = "KILL"
            self._cond.notify_all()
            self._wait(lambda: not container.running, "a killed container did not exit")

    def _state(self, container: FakeContainer) -> dict[str, Any]:
        state = dict(recorded_containers()["exit-3"]["state"])
        state.update(
            Status="exited" if container.state == "exited" else container.state,
            Running=container.running,
            ExitCode=container.exit_code,
            OOMKilled=container.oom_killed,
            Error=container.error,
            StartedAt=container.started_at,
            FinishedAt=container.finished_at,
            Pid=4242 if container.running else 0,
        )
        return state


# -- the engine and its streams ------------------------------------------------------------


class FakePullStream:
    def __init__(self, daemon: FakeDocker, image: str, script: PullScript) -> None:
        self._daemon = daemon
        self._image = image
        self._script = script
        self.closed = False
        self._read = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        daemon = self._daemon
        digest: str | None = None
        for index, message in enumerate(self._script.messages):
            with daemon._cond:
                gate = self._script.pauses.get(index)
                if gate is not None and not self.closed:
                    gate.reached.set()

                    def go_on(pause: Gate = gate) -> bool:
                        return pause.released or self.closed

                    daemon._wait(go_on, f"pull gate {gate.name!r} was not released")
                if self.closed:
                    if self._read:
                        # Closed under a reader (recorded): the read fails.
                        raise recorded_error("pull-stream-closed")
                    return  # closed before the first read (recorded): no messages
                self._read += 1
            status = str(message.get("status") or "")
            if status.startswith("Digest: "):
                digest = status.removeprefix("Digest: ").strip()
            elif status.startswith("Status: "):
                daemon.add_image(self._image, digest)
            yield copy.deepcopy(message)
        if self._script.then:
            raise recorded_error(self._script.then, **image_values(self._image))

    def close(self) -> None:
        with self._daemon._cond:
            self.closed = True
            self._daemon._cond.notify_all()


class FakeOutput:
    """A container's attach stream: what it writes after the attach, then EOF."""

    def __init__(self, daemon: FakeDocker, container: FakeContainer) -> None:
        self._daemon = daemon
        self._container = container
        self._pos = len(container.output)
        # Attached after it exited: nothing comes, ever (logs.json `attach-exited`).
        self._late = container.state == "exited"
        self.closed = False

    def read(self, timeout: float | None) -> bytes | None:
        daemon = self._daemon
        container = self._container
        with daemon._cond:

            def ready() -> bool:
                return (
                    self.closed
                    or self._pos < len(container.output)
                    or (container.state in ("exited", "removed") and not self._late)
                )

            if not daemon._cond.wait_for(ready, None if timeout is None else max(0.0, timeout)):
                return None
            if self.closed:
                return b""
            if self._pos < len(container.output):
                chunk = bytes(container.output[self._pos : self._pos + daemon.read_size])
                self._pos += len(chunk)
                return chunk
            return b""

    def close(self) -> None:
        with self._daemon._cond:
            self.closed = True
            self._daemon._cond.notify_all()


class FakeProbe:
    """A health check's client of the fake daemon (see `FakeDocker.probe`)."""

    def __init__(self, daemon: FakeDocker) -> None:
        self.daemon = daemon

    def _answering(self) -> None:
        with self.daemon._cond:
            if self.daemon.down:
                raise recorded_error("engine-gone")

    def version(self) -> dict[str, Any]:
        self._answering()
        return {**recorded_version(), **self.daemon.version_overrides}

    def info(self) -> dict[str, Any]:
        self._answering()
        return {**recorded_info(), **self.daemon.info_overrides}

    def image_present(self, image: str) -> bool:
        self._answering()
        with self.daemon._cond:
            return normalize(image) in self.daemon.images

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def log_messages(output: bytes, *, tty: bool, exited: bool) -> list[tuple[int, bytes]]:
    """What a json-file log driver keeps of attach bytes `output`: a message
    per line per stream (1 stdout, 2 stderr; 1 for a tty), in the order the
    lines ended; an unterminated last line only once the container exited.
    (logs.json: `multiplexed`, `split-line` and `tty` from their attach bytes.)"""
    if tty:
        pieces = [(1, output)]
    else:
        decoder = FrameDecoder()
        pieces = decoder.feed(output)
    messages: list[tuple[int, bytes]] = []
    pending: dict[int, bytes] = {}
    for stream, payload in pieces:
        *lines, rest = (pending.pop(stream, b"") + payload).split(b"\n")
        messages.extend((stream, line + b"\n") for line in lines)
        if rest:
            pending[stream] = rest
    if exited:
        messages.extend(pending.items())
    return messages


class FakeLogs:
    """A container's log from the logs endpoint: the driver's messages so far
    (framed unless tty), then, with `follow`, new ones until it exits."""

    def __init__(self, daemon: FakeDocker, container: FakeContainer, follow: bool) -> None:
        self._daemon = daemon
        self._container = container
        # As recorded (`created`): follow on a container not yet started ends at once.
        self._follow = follow and container.state == "running"
        self._sent = 0
        kept = container.program.log_kept
        if kept is not None:  # rotated: the oldest lines are gone
            self._sent = max(0, len(self._messages()) - kept)
        self.closed = False

    def _messages(self) -> list[tuple[int, bytes]]:
        container = self._container
        return log_messages(
            bytes(container.output),
            tty=container.spec.tty,
            exited=container.state in ("exited", "removed"),
        )

    def read(self, timeout: float | None) -> bytes | None:
        daemon = self._daemon
        container = self._container
        with daemon._cond:
            messages: list[tuple[int, bytes]] = []

            def ready() -> bool:
                nonlocal messages
                if self.closed:
                    return True
                messages = self._messages()
                return len(messages) > self._sent or not self._follow or not container.running

            if not daemon._cond.wait_for(ready, None if timeout is None else max(0.0, timeout)):
                return None
            if self.closed or len(messages) <= self._sent:
                return b""
            new, self._sent = messages[self._sent :], len(messages)
        if container.spec.tty:
            return b"".join(payload for _, payload in new)
        return b"".join(frame(stream, payload) for stream, payload in new)

    def close(self) -> None:
        with self._daemon._cond:
            self.closed = True
            self._daemon._cond.notify_all()


class FakeEngine:
    """One client of the fake daemon (the pipeline's, a stopper's, /readyz's)."""

    def __init__(self, daemon: FakeDocker) -> None:
        self.daemon = daemon
        self.closed = False

    def close(self) -> None:
        with self.daemon._cond:
            if not self.closed:
                self.closed = True
                self.daemon.engines_open -= 1

    def __enter__(self) -> FakeEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def version(self) -> dict[str, Any]:
        self.daemon._enter("version")
        return {**recorded_version(), **self.daemon.version_overrides}

    def info(self) -> dict[str, Any]:
        self.daemon._enter("info")
        return {**recorded_info(), **self.daemon.info_overrides}

    def image_present(self, image: str) -> bool:
        self.daemon._enter("image_present", image)
        with self.daemon._cond:
            return normalize(image) in self.daemon.images

    def image_digest(self, image: str) -> str | None:
        self.daemon._enter("image_digest", image)
        with self.daemon._cond:
            return self.daemon.images.get(normalize(image))

    def pull(
        self,
        image: str,
        *,
        platform: str | None,
        auth: dict[str, str] | None,
        stall_timeout: float,
        lend_credentials: bool = False,
    ) -> FakePullStream:
        daemon = self.daemon
        daemon._enter(
            "pull",
            image,
            platform=platform,
            auth=auth,
            stall_timeout=stall_timeout,
            lend_credentials=lend_credentials,
        )
        with daemon._cond:
            script = daemon.pulls.get(normalize(image))
        if script is None:
            raise recorded_error("pull-manifest-unknown", **image_values(image))
        if script.answer is not None:
            gate = script.answer
            gate.reached.set()
            with daemon._cond:
                daemon._wait(lambda: gate.released, f"pull answer {gate.name!r} was not released")
        if script.refuse:
            raise recorded_error(script.refuse, **image_values(image))
        return FakePullStream(daemon, image, script)

    def create(
        self,
        run_id: str,
        spec: RunSpec,
        name: str | None = None,
        *,
        no_new_privileges: bool = True,
    ) -> str:
        daemon = self.daemon
        daemon._enter("create", run_id, spec, name=name, no_new_privileges=no_new_privileges)
        with daemon._cond:
            if normalize(spec.image) not in daemon.images:
                raise recorded_error("create-no-such-image", **image_values(spec.image))
            for other in daemon.containers.values():
                if name and other.name == name and other.state != "removed":
                    raise recorded_error("create-name-conflict", name=name, container=other.id)
            container = daemon._new_container(run_id, spec, name)
            container.security_opt = ["no-new-privileges"] if no_new_privileges else []
            return container.id

    def attach(self, container_id: str) -> FakeOutput:
        daemon = self.daemon
        daemon._enter("attach", container_id)
        with daemon._cond:
            return FakeOutput(daemon, daemon._container(container_id, "attach"))

    def logs(self, container_id: str, *, follow: bool) -> FakeLogs:
        daemon = self.daemon
        daemon._enter("logs", container_id, follow=follow)
        with daemon._cond:
            container = daemon._container(container_id, "logs")
            if container.program.log_driver == "none":
                raise recorded_error("logs-driver-none", container=container_id)
            return FakeLogs(daemon, container, follow)

    def start(self, container_id: str) -> None:
        daemon = self.daemon
        daemon._enter("start", container_id)
        with daemon._cond:
            container = daemon._container(container_id, "start")
            if container.state == "created":
                daemon._start(container)

    def wait(self, container_id: str) -> tuple[int, str | None]:
        daemon = self.daemon
        daemon._enter("wait", container_id)
        with daemon._cond:
            container = daemon._container(container_id, "wait")
            daemon._cond.wait_for(lambda: not container.running)
            return container.exit_code, container.wait_error

    def inspect(self, container_id: str) -> dict[str, Any]:
        daemon = self.daemon
        daemon._enter("inspect", container_id)
        with daemon._cond:
            container = daemon._container(container_id, "inspect")
            return {
                "Id": container.id,
                "Name": "/" + container.name,
                "State": daemon._state(container),
                "Config": {
                    "Image": container.spec.image,
                    "Cmd": container.spec.command,
                    "Env": [f"{k}={v}" for k, v in container.spec.env.items()],
                    "Tty": container.spec.tty,
                    "Labels": dict(container.labels),
                },
                "HostConfig": {
                    "Memory": container.spec.memory or 0,
                    "NanoCpus": int(container.spec.cpus * 1e9) if container.spec.cpus else 0,
                    "PidsLimit": container.spec.pids_limit,
                    "SecurityOpt": list(container.security_opt) or None,
                    "LogConfig": {"Type": container.program.log_driver, "Config": {}},
                },
            }

    def stop(self, container_id: str, grace: float = 10) -> None:
        daemon = self.daemon
        daemon._enter("stop", container_id, grace)
        with daemon._cond:
            daemon._stop(daemon._container(container_id, "stop"), grace)

    def remove(self, container_id: str) -> None:
        daemon = self.daemon
        try:
            daemon._enter("remove", container_id)
        except Exception as exc:
            if _status_code(exc) == 404:
                return  # gone already is fine, as for DockerEngine
            raise
        with daemon._cond:
            container = daemon.containers.get(container_id)
            if container is None or container.state == "removed":
                return
            if container.running:  # force: SIGKILL
                container.signal = "KILL"
                daemon._cond.notify_all()
                daemon._wait(lambda: not container.running, "a removed container did not exit")
            container.state = "removed"
            daemon._cond.notify_all()

    def managed_containers(self, run_id: str | None = None) -> list[str]:
        daemon = self.daemon
        daemon._enter("managed_containers", run_id)
        with daemon._cond:
            return [
                c.id
                for c in daemon.containers.values()
                if c.state != "removed"
                and (
                    c.labels.get(RUN_LABEL) == run_id
                    if run_id
                    else c.labels.get(MANAGED_LABEL) == "true"
                )
            ]
