"""Engines: the seam the pipeline and runner talk to, and its implementations.

`DockerEngine` is the real one. The in-memory engine for tests is imported
from `backend.engines.fake` (`FakeDocker`), never from here: a server never
loads it.
"""

from .docker import DockerEngine, engine_message
from .protocol import Engine, EngineFactory, OutputStream, PullStream

__all__ = [
    "DockerEngine",
    "Engine",
    "EngineFactory",
    "OutputStream",
    "PullStream",
    "engine_message",
]
