"""The uvicorn server `pullrun serve` runs, with pullrun's graceful shutdown."""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn
from fastapi import FastAPI
from sse_starlette.sse import AppStatus

from ..runs.runner import Runner


class Server(uvicorn.Server):
    """On SIGTERM/SIGINT, first cancel the runs in flight and let their
    subscribers receive `done`, then stop as uvicorn does. A second signal
    stops at once."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        runner: Runner | None = getattr(self.app.state, "runner", None)
        if self._draining or runner is None:
            AppStatus.should_exit = True
            self.force_exit = self._draining
            self.should_exit = True
            return
        self._draining = True
        loop = asyncio.get_event_loop()
        # Signal handlers interrupt the loop; only call_soon_threadsafe is safe here.
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain(runner)))

    async def _drain(self, runner: Runner) -> None:
        try:
            await runner.shutdown()
            await runner.wait_for_subscribers(timeout=5)
        finally:
            AppStatus.should_exit = True
            self.should_exit = True
