"""Engines: the seam the pipeline and runner talk to, and its implementations.

`DockerEngine` is the real one. The in-memory engine for tests is imported
from `backend.engines.fake` (`FakeDocker`), never from here: a server never
loads it.
"""

from .config import LOCAL, EngineConfig, EnginesFileError, load_engines
from .docker import DockerEngine, engine_message, unreachable
from .protocol import Engine, EngineFactory, OutputStream, PullStream

__all__ = [
    "LOCAL",
    "DockerEngine",
    "Engine",
    "EngineConfig",
    "EngineFactory",
    "EnginesFileError",
    "OutputStream",
    "PullStream",
    "engine_message",
    "load_engines",
    "unreachable",
]
