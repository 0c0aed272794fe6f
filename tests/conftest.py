"""Fixtures shared by the integration and browser tests: the real engine,
the local registries and an HTTP client for the directory's `server` fixture.

`make test` provisions them (scripts/engine.sh, registry.sh, images.sh) and
exports the PULLRUN_TEST_* variables from scripts/test-env.sh.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import docker
import httpx
import pytest

from tests.support.server import ServerProcess


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


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        yield c
