"""`pullrun serve`: run the server (settings from PULLRUN_* or flags)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI
from sse_starlette.sse import AppStatus

from .runs.runner import Runner
from .settings import Settings
from .web.app import create_app


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pullrun")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the web server")
    defaults = Settings()
    for name, info in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind = Path if name == "data_dir" else type(getattr(defaults, name))
        serve.add_argument(
            flag, type=kind, default=None, help=f"{info.description} (PULLRUN_{name.upper()})"
        )
    serve.add_argument("--log-level", default="info")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    overrides = {
        name: getattr(args, name)
        for name in Settings.model_fields
        if getattr(args, name, None) is not None
    }
    settings = Settings(**overrides)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_grace) + 10,
    )
    Server(config, app).run()


if __name__ == "__main__":
    main()
