"""Start the real server (`pullrun serve`) as a subprocess for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0  # seconds for /healthz to answer: generous, a busy machine is slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`pullrun serve` on 127.0.0.1 with its own data dir and settings.

    `root` is the source tree the server runs from (this repository by default;
    the benchmarks can point it at a tree exported from another commit).
    """

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        root: Path | None = None,
        **settings: Any,
    ) -> None:
        self.data_dir = data_dir
        self.root = root or ROOT
        self.extra_env = env or {}
        self.settings = settings
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"server-{self.port}.log"

    def start(self) -> ServerProcess:
        env = dict(os.environ)
        env.update({f"PULLRUN_{k.upper()}": str(v) for k, v in self.settings.items()})
        env["PULLRUN_DATA_DIR"] = str(self.data_dir)
        env["PULLRUN_PORT"] = str(self.port)
        env["PULLRUN_HOST"] = "127.0.0.1"
        env.update(self.extra_env)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "serve", "--log-level", "warning"],
            cwd=self.root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log()}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not answer /healthz in {START_TIMEOUT:g} s: {self.log()}")

    def client(self, timeout: float = 30) -> httpx.Client:
        """An HTTP client for this server (close it, or use it in a `with`)."""
        return httpx.Client(base_url=self.base_url, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM (graceful) and wait."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: a crash, as far as the server can tell."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(60)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerFactory:
    """`factory(data_dir=None, env=None, **settings)`: a started `pullrun serve`
    with those settings (PULLRUN_*), on a fresh data dir (from `new_dir`)
    unless one is given (the same one again: a restart). stop_all() stops
    every server it started (the `server_factory` fixture calls it at the end
    of the test); a test may also stop, terminate or kill one itself."""

    def __init__(self, new_dir: Callable[[], Path]) -> None:
        self._new_dir = new_dir
        self.started: list[ServerProcess] = []

    def __call__(
        self, data_dir: Path | None = None, env: dict[str, str] | None = None, **settings: Any
    ) -> ServerProcess:
        proc = ServerProcess(data_dir or self._new_dir(), env, **settings)
        self.started.append(proc)
        return proc.start()

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stop()
