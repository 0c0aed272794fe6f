"""Fixtures for the unit tests of the pipeline, the runner and the API, which run
against the in-memory engine (backend/engines/fake.py), never a real one.

- `daemon`: a `FakeDocker` with `pullrun/busybox:base` present; it is also the
  engine factory. Closed at the end (every gate opened, containers killed).
- `loop`: an asyncio loop running in a thread of its own, as uvicorn's would
  (the runner and the event logs hop to it with call_soon_threadsafe).
- `settings`: a fresh data dir, short partial-line delay.
- `make_runner(**settings)`: a `Runner` on that loop and daemon, shut down at
  the end.

Helpers (import them from here): `wait_until` waits for a state with a
deadline and names what it waited for; `events_of` reads a run's events back
from its file (`lines_of` joins their log lines); `assert_ended` checks the
promise of every accepted run: one `done`, last, matching the saved record;
`on_loop` runs a coroutine (Runner.shutdown) on the loop thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from fastapi.testclient import TestClient

from backend.auth.accounts import Accounts
from backend.auth.roles import Role
from backend.auth.store import AuthStore
from backend.engines.fake import FakeDocker
from backend.models import RunRecord
from backend.runs.pipeline import done_data
from backend.runs.runner import Runner
from backend.settings import Settings
from backend.storage.eventlog import RunFeed
from backend.storage.reader import Event, join_lines, read_events
from backend.storage.store import RunStore
from backend.web.app import create_app
from tests.support.wait import wait_until as wait_for

T = TypeVar("T")

BASE = "pullrun/busybox:base"  # present in every fake daemon
LAYERS = "127.0.0.1:5000/pullrun/layers:latest"  # the image the recorded pulls pulled
DEADLINE = 30.0  # seconds; only turns a hang into a failure naming what was awaited


def wait_until(predicate: Callable[[], T], what: str, timeout: float = DEADLINE) -> T:
    """tests.support.wait.wait_until, polling often: everything here is in memory."""
    return wait_for(predicate, what, timeout, interval=0.001)


@pytest.fixture
def fast_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2id with the least cost it allows: tests that sign in many times
    need not spend 64 MiB and tens of milliseconds on each
    (tests/unit/test_auth_passwords.py checks the real parameters)."""
    from argon2 import PasswordHasher

    from backend.auth import passwords

    monkeypatch.setattr(
        passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


def make_token(settings: Settings, name: str = "admin-test", role: str = "admin") -> str:
    """A new API token in the settings' data dir (as `pullrun token create` makes one)."""
    with AuthStore(settings.auth_db_path) as store:
        return Accounts(store).create_token(name, Role(role))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def events_of(settings: Settings, run_id: str) -> list[Event]:
    return list(read_events(settings.events_file(run_id)))


def lines_of(events: list[Event]) -> list[tuple[str, str]]:
    """(stream, text) of every log line, a partial last line included."""
    return [(line.stream, line.text) for line in join_lines(events)]


def assert_ended(settings: Settings, record: RunRecord) -> Event:
    """The run's log: ids 1..n, exactly one `done`, the last event, whose data is
    the record's; the record is terminal and points at it. Returns `done`."""
    events = events_of(settings, record.id)
    assert [e.number for e in events] == list(range(1, len(events) + 1)), events
    dones = [e for e in events if e.type == "done"]
    assert len(dones) == 1, f"run {record.id}: {len(dones)} done events: {events}"
    assert events[-1].type == "done", f"run {record.id}: done is not last: {events[-3:]}"
    assert record.status.terminal, record
    assert dones[0].data == done_data(record), (dones[0].data, done_data(record))
    assert record.last_event_id == events[-1].number
    assert record.finished_at is not None
    return dones[0]


@pytest.fixture
def daemon() -> Iterator[FakeDocker]:
    fake = FakeDocker(images=[BASE])
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        asyncio.run_coroutine_threadsafe(loop.shutdown_default_executor(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def on_loop(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float = DEADLINE
) -> T:
    """Run a coroutine on the loop thread and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        max_concurrent_runs=2,
        max_queued_runs=10,
        partial_line_delay=0.02,
        shutdown_grace=5,
        allowed_hosts=["testserver"],  # the Host Starlette's TestClient sends
    )


MakeRunner = Callable[..., Runner]


@pytest.fixture
def make_runner(
    settings: Settings, daemon: FakeDocker, loop: asyncio.AbstractEventLoop
) -> Iterator[MakeRunner]:
    made: list[tuple[Runner, RunStore]] = []

    def make(**overrides: Any) -> Runner:
        runner_settings = settings.model_copy(update=overrides) if overrides else settings
        store = RunStore(runner_settings.db_path)
        runner = Runner(runner_settings, store, RunFeed(boot="test"), loop, daemon)
        made.append((runner, store))
        return runner

    try:
        yield make
    finally:
        daemon.close()  # nothing stays blocked on a gate
        for runner, store in made:
            on_loop(loop, runner.shutdown(), 30)
            store.close()


@pytest.fixture
def runner(make_runner: MakeRunner) -> Runner:
    return make_runner()


@pytest.fixture
def client(settings: Settings, daemon: FakeDocker) -> Iterator[TestClient]:
    """The app in process on the fake engine, signed in as an admin (an API
    token). Modules that need another client define their own."""
    headers = bearer(make_token(settings))
    with TestClient(create_app(settings, engine_factory=daemon), headers=headers) as test_client:
        try:
            yield test_client
        finally:
            daemon.close()  # nothing blocked on a gate when the lifespan shuts down
