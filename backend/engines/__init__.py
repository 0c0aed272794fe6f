"""Engines: the seam the pipeline and runner talk to, and its implementations."""

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
