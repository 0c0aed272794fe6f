"""`pullrun serve`: run the server (settings from PULLRUN_* or flags)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from sse_starlette.sse import AppStatus

from .app import create_app
from .settings import Settings


class Server(uvicorn.Server):
    """On SIGTERM/SIGINT, first cancel runs in flight so that every subscriber
    gets its `done`, then stop as uvicorn does."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app: Any = self.config.loaded_app
        runner = getattr(getattr(app, "state", None), "runner", None)
        if self._draining or runner is None:
            AppStatus.should_exit = True
            super().handle_exit(sig, frame)
            return
        self._draining = True

        async def drain() -> None:
            try:
                await runner.shutdown()
            finally:
                AppStatus.should_exit = True
                super(Server, self).handle_exit(sig, frame)

        asyncio.get_event_loop().create_task(drain())


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
    Server(config).run()


if __name__ == "__main__":
    main()
