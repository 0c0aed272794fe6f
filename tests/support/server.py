"""Start the real server (`pullrun serve`) as a subprocess for tests."""

from __future__ import annotations

import os
import secrets
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

    Sign-in: before it starts the server, it creates an admin API token in the
    data dir with `pullrun token create` (`token=False`: none, so the first
    start creates and prints its own). `server.token` is that token and
    `server.client()` sends it; `server.cli(...)` runs other `pullrun`
    commands against the same data dir. A tree without `backend/auth` (an
    older commit, for the benchmarks) needs and gets no token.

    `script=True` starts it with the installed console script next to the
    interpreter (`.venv/bin/pullrun serve`, as `make run` does) instead of
    `python -m backend.cli serve`. Its output (stdout and stderr) goes to
    `log_path`, by default a file in the data dir; given elsewhere, the data
    dir is left for the server to create.
    """

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        root: Path | None = None,
        token: bool = True,
        log_level: str = "warning",
        script: bool = False,
        log_path: Path | None = None,
        **settings: Any,
    ) -> None:
        self.data_dir = data_dir
        self.script = script
        self.root = root or ROOT
        self.extra_env = env or {}
        self.settings = settings
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = log_path or data_dir / f"server-{self.port}.log"
        self.wants_token = token
        self.log_level = log_level
        self.token: str | None = None

    def env(self) -> dict[str, str]:
        """The environment the server (and `cli`) run with."""
        env = dict(os.environ)
        env.update({f"PULLRUN_{k.upper()}": str(v) for k, v in self.settings.items()})
        env["PULLRUN_DATA_DIR"] = str(self.data_dir)
        env["PULLRUN_PORT"] = str(self.port)
        env["PULLRUN_HOST"] = "127.0.0.1"
        env.update(self.extra_env)
        return env

    def cli(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """`pullrun ARGS` on this server's data dir (it may be running); its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "backend.cli", *args],
            cwd=self.root,
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"pullrun {' '.join(args)}: exit {done.returncode}: {done.stderr}")
        return done.stdout

    def create_token(self, role: str, name: str | None = None) -> str:
        """A new API token with this role (`pullrun token create`)."""
        name = name or f"{role}-{secrets.token_hex(4)}"
        return self.cli("token", "create", "--name", name, "--role", role).strip()

    def create_user(self, name: str, role: str, password: str) -> None:
        """A user who signs in with a password (`pullrun user add`, password on stdin)."""
        self.cli("user", "add", name, "--role", role, input=password + "\n")

    @property
    def has_auth(self) -> bool:
        return (self.root / "backend" / "auth").is_dir()

    def headers(self, token: str | None = None) -> dict[str, str]:
        token = token or self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def start(self) -> ServerProcess:
        env = self.env()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.wants_token and self.token is None and self.has_auth:
            self.token = self.create_token("admin", f"tests-{self.port}-{secrets.token_hex(3)}")
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        program = (
            [str(Path(sys.executable).parent / "pullrun")]
            if self.script
            else [sys.executable, "-m", "backend.cli"]
        )
        self.proc = subprocess.Popen(
            [*program, "serve", "--log-level", self.log_level],
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

    def client(self, timeout: float = 30, token: str | None = None) -> httpx.Client:
        """An HTTP client for this server, signed in with `token` (default: the
        admin token `self.token`). Close it, or use it in a `with`."""
        return httpx.Client(base_url=self.base_url, timeout=timeout, headers=self.headers(token))

    def anonymous(self, timeout: float = 30) -> httpx.Client:
        """An HTTP client that sends no credentials."""
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
    """`factory(data_dir=None, env=None, token=True, log_level="warning", **settings)`:
    a started `pullrun serve`
    with those settings (PULLRUN_*), on a fresh data dir (from `new_dir`)
    unless one is given (the same one again: a restart). stop_all() stops
    every server it started (the `server_factory` fixture calls it at the end
    of the test); a test may also stop, terminate or kill one itself."""

    def __init__(self, new_dir: Callable[[], Path]) -> None:
        self._new_dir = new_dir
        self.started: list[ServerProcess] = []

    def __call__(
        self,
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        *,
        token: bool = True,
        log_level: str = "warning",
        **settings: Any,
    ) -> ServerProcess:
        proc = ServerProcess(
            data_dir or self._new_dir(), env, token=token, log_level=log_level, **settings
        )
        self.started.append(proc)
        return proc.start()

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stop()
