"""FastAPI dependency aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..engines import EngineFactory
from ..runs.runner import Runner
from ..settings import Settings


def get_runner(request: Request) -> Runner:
    runner: Runner = request.app.state.runner
    return runner


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine_factory(request: Request) -> EngineFactory:
    factory: EngineFactory = request.app.state.engine_factory
    return factory


EngineFactoryDep = Annotated[EngineFactory, Depends(get_engine_factory)]
RunnerDep = Annotated[Runner, Depends(get_runner)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
