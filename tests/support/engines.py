"""The three engines of the placement tests, and what the tests do to them.

`local` is the default engine; `two` and `three` are the dockerds of
scripts/engines.sh (engine 3 on tcp://127.0.0.1:PORT with TLS), found through
the PULLRUN_TEST_ENGINE* variables of scripts/test-env.sh. The tests write an
engines file naming them (`write_engines_file`), check where runs landed with
each engine's own API (`EngineSet.api`), kill engine 2's dockerd by its pid
and start it again with the script.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from backend.storage.reader import EventSplitter, parse_event
from tests.support.server import ServerProcess
from tests.support.sse import Event
from tests.support.wait import DEADLINE, READ_TIMEOUT, Deadline, wait_until

NAMES = ("local", "two", "three")
START_ENGINE_TIMEOUT = 120  # seconds for scripts/engines.sh start: it waits up to 60 s itself


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the tests with `make test` (scripts/test-env.sh)")
    return value


@dataclass(frozen=True)
class EngineSet:
    two_host: str
    two_pidfile: Path
    three_host: str
    three_admin_host: str  # engine 3's own unix socket, for the test's checks
    three_tls: Path  # ca.pem, cert.pem, key.pem
    script: Path

    @classmethod
    def from_env(cls) -> EngineSet:
        return cls(
            two_host=_env("PULLRUN_TEST_ENGINE2_HOST"),
            two_pidfile=Path(_env("PULLRUN_TEST_ENGINE2_PIDFILE")),
            three_host=_env("PULLRUN_TEST_ENGINE3_HOST"),
            three_admin_host=_env("PULLRUN_TEST_ENGINE3_ADMIN_HOST"),
            three_tls=Path(_env("PULLRUN_TEST_ENGINE3_TLS_DIR")),
            script=Path(_env("PULLRUN_TEST_ENGINES_SCRIPT")),
        )

    def tables(
        self, slots: dict[str, int] | None = None, labels: dict[str, dict[str, str]] | None = None
    ) -> dict[str, dict[str, Any]]:
        """The engines file's tables for all three (`local` from DOCKER_HOST or
        the default socket, as the tests' own docker client finds it)."""
        slots = slots or {}
        labels = labels or {}
        tables: dict[str, dict[str, Any]] = {
            "local": {},
            "two": {"host": self.two_host},
            "three": {
                "host": self.three_host,
                "tls_ca": str(self.three_tls / "ca.pem"),
                "tls_cert": str(self.three_tls / "cert.pem"),
                "tls_key": str(self.three_tls / "key.pem"),
            },
        }
        for name, table in tables.items():
            table["max_concurrent_runs"] = slots.get(name, 4)
            if name in labels:
                table["labels"] = labels[name]
        return tables

    def api(self, name: str) -> docker.APIClient:
        """A client of that engine for the test's own checks (close it)."""
        if name == "local":
            return docker.APIClient(version="auto")
        if name == "two":
            return docker.APIClient(base_url=self.two_host, version="auto")
        if name == "three":
            return docker.APIClient(base_url=self.three_admin_host, version="auto")
        raise ValueError(name)

    # -- engine 2's dockerd ---------------------------------------------------------------

    def two_pid(self) -> int | None:
        """The pid of engine 2's dockerd, when it runs."""
        return dockerd_pid(self.two_pidfile)

    def kill_two(self) -> int:
        """SIGKILL engine 2's dockerd: the engine is gone, as after a crash."""
        pid = self.two_pid()
        assert pid is not None, f"engine 2's dockerd is not running ({self.two_pidfile})"
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: dockerd_pid(self.two_pidfile) is None, f"dockerd pid {pid} to die")
        return pid

    def start_two(self) -> None:
        """Start engine 2 again (scripts/engines.sh start 2) and wait until it answers."""
        done = subprocess.run(
            [str(self.script), "start", "2"],
            capture_output=True,
            text=True,
            timeout=START_ENGINE_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, f"engines.sh start 2: exit {done.returncode}: {done.stderr}"


def dockerd_pid(pidfile: Path) -> int | None:
    """The pid in `pidfile` when it names a live dockerd (not a zombie)."""
    try:
        pid = int(pidfile.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    state = stat.rpartition(")")[2].split()[0]
    return pid if comm == "dockerd" and state != "Z" else None


def toml_value(value: Any) -> str:
    """A TOML value for the simple things an engines file holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for what the tests write
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(f"no TOML for {value!r}")


def write_engines_file(path: Path, tables: dict[str, dict[str, Any]]) -> Path:
    lines: list[str] = []
    for name, table in tables.items():
        lines.append(f"[engines.{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in table.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def containers_on(api: docker.APIClient, run_id: str) -> list[dict[str, Any]]:
    """`docker ps -a --filter label=pullrun.run=RUN` on that engine."""
    return list(api.containers(all=True, filters={"label": f"pullrun.run={run_id}"}))


def remove_containers(api: docker.APIClient, run_ids: list[str]) -> None:
    """Remove what runs left on an engine (after a fault, nobody else will)."""
    for run_id in run_ids:
        for container in containers_on(api, run_id):
            with contextlib.suppress(docker.errors.APIError):
                api.remove_container(container["Id"], force=True)


def engine_views(client: httpx.Client) -> dict[str, dict[str, Any]]:
    """GET /api/engines, by name."""
    response = client.get("/api/engines")
    assert response.status_code == 200, response.text
    return {view["name"]: view for view in response.json()["engines"]}


def wait_for_engine(
    client: httpx.Client, name: str, state: str, timeout: float = DEADLINE
) -> dict[str, Any]:
    """Poll GET /api/engines until engine `name` is in `state`; its view."""
    seen: list[dict[str, Any]] = []

    def view() -> dict[str, Any] | None:
        got = engine_views(client)[name]
        seen[:] = [got]
        return got if got["state"] == state else None

    try:
        return wait_until(view, f"engine {name} to be {state} in /api/engines", timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last view: {seen}") from None


class FeedRecorder:
    """Reads GET /api/events in a thread, keeping every event, until closed."""

    def __init__(self, server: ServerProcess) -> None:
        self.events: list[Event] = []
        self.failure: BaseException | None = None
        self._client = server.client(timeout=READ_TIMEOUT)
        self._stop = threading.Event()
        self._open = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> FeedRecorder:
        self._thread.start()
        assert self._open.wait(DEADLINE), "the /api/events feed did not open"
        return self

    def _read(self) -> None:
        try:
            with self._client.stream("GET", "/api/events") as response:
                assert response.status_code == 200, response.read()
                splitter = _splitter()
                for chunk in Deadline("the end of the test", 10 * DEADLINE).chunks(response):
                    self._open.set()
                    for event in splitter(chunk):
                        self.events.append(event)
                    if self._stop.is_set():
                        return
        except BaseException as exc:
            if not self._stop.is_set():  # closed under it when stopped: fine
                self.failure = exc
        finally:
            self._open.set()

    def wait_for(self, predicate: Callable[[Event], bool], what: str) -> Event:
        """The first event (of all so far) that matches, waiting for it."""

        def found() -> Event | None:
            assert self.failure is None, f"the feed failed: {self.failure!r}"
            return next((e for e in list(self.events) if predicate(e)), None)

        return wait_until(found, what)

    def engine_states(self, name: str) -> list[str]:
        """The states of engine `name` in its `engine` events, in order."""
        return [e.data["state"] for e in list(self.events) if is_engine_event(e, name)]

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._client.close()
        self._thread.join(DEADLINE)


def is_engine_event(event: Event, name: str, state: str | None = None) -> bool:
    return (
        event.type == "engine"
        and event.data.get("name") == name
        and (state is None or event.data.get("state") == state)
    )


def _splitter() -> Callable[[bytes], list[Event]]:
    splitter = EventSplitter()

    def feed(chunk: bytes) -> list[Event]:
        events = (parse_event(block) for block in splitter.feed(chunk))
        return [e for e in events if e is not None]

    return feed


@contextlib.contextmanager
def engine_two_restored(engines: EngineSet) -> Iterator[None]:
    """Whatever the test did to engine 2, it runs again afterwards."""
    try:
        yield
    finally:
        if engines.two_pid() is None:
            engines.start_two()
