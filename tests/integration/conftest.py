"""Fixtures for tests against the real engine, registries and server.

`make test` provisions them (scripts/engine.sh, registry.sh, images.sh) and
exports the PULLRUN_TEST_* variables from scripts/test-env.sh.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration


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


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("server"), max_concurrent_runs=4) as proc:
        yield proc


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        yield c


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
