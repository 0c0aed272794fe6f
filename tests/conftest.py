"""Fixtures shared by the integration and browser tests: the real engine,
the local registries, the server under test (`server`, one per session, and
`server_factory` for a test that needs its own, with its own settings) and an
HTTP client for `server`.

`make test` provisions them (scripts/engine.sh, registry.sh, images.sh) and
exports the PULLRUN_TEST_* variables from scripts/test-env.sh.

Markers go by folder: everything under tests/integration is `integration`;
everything under tests/browser is `browser` and `integration` (it needs the
engine and registries too).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests.support.server import ServerFactory, ServerProcess

TESTS = Path(__file__).resolve().parent
MARKERS_BY_FOLDER = {
    "integration": ("integration",),
    "browser": ("browser", "integration"),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            folder = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue
        for name in MARKERS_BY_FOLDER.get(folder, ()):
            item.add_marker(name)


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the tests with `make test` (scripts/test-env.sh)")
    return value


@pytest.fixture(scope="session")
def registry() -> str:
    return _env("PULLRUN_TEST_REGISTRY")


@pytest.fixture(scope="session")
def auth_registry() -> dict[str, str]:
    return {
        "host": _env("PULLRUN_TEST_AUTH_REGISTRY"),
        "username": _env("PULLRUN_TEST_AUTH_USER"),
        "password": _env("PULLRUN_TEST_AUTH_PASSWORD"),
    }


@pytest.fixture(scope="session")
def broken_registry() -> str:
    return _env("PULLRUN_TEST_BROKEN_REGISTRY")


@pytest.fixture(scope="session")
def image(registry: str) -> str:
    """A small busybox image, present locally (pull policy `missing` skips the pull)."""
    return "pullrun/busybox:base"


@pytest.fixture(scope="session")
def docker_api() -> Iterator[docker.APIClient]:
    api = docker.APIClient(version="auto")
    yield api
    api.close()


@contextlib.contextmanager
def _servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    factory = ServerFactory(lambda: tmp_path_factory.mktemp("server") / "data")
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """server_factory(data_dir=None, env=None, **settings) -> a started server
    of the test's own (tests/support/server.py, ServerFactory), stopped at its end."""
    with _servers(tmp_path_factory) as factory:
        yield factory


@pytest.fixture(scope="session")
def session_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    with _servers(tmp_path_factory) as factory:
        yield factory


@pytest.fixture(scope="session")
def server(session_server_factory: ServerFactory) -> ServerProcess:
    """The server most tests share: one per session, 4 runs at once."""
    return session_server_factory(max_concurrent_runs=4)


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c
