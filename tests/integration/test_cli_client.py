"""`pullrun run|logs|ps|inspect|cancel|rm|wait|events`: the real console
script as a subprocess against the real server, as a person or a CI job uses it."""

from __future__ import annotations

import json
import os
import pty
import re
import secrets
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import docker
import httpx

from tests.support.runs import SLEEPER, gate, open_gate, remove_image
from tests.support.server import ServerFactory, ServerProcess
from tests.support.throttle_proxy import ThrottleProxy
from tests.support.wait import DEADLINE, wait_for_status, wait_until

PULLRUN = str(Path(sys.executable).parent / "pullrun")


def cli_env(server: ServerProcess) -> dict[str, str]:
    assert server.token is not None
    return dict(os.environ, PULLRUN_URL=server.base_url, PULLRUN_TOKEN=server.token)


def pullrun(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [PULLRUN, *args], env=cli_env(server), capture_output=True, timeout=DEADLINE
    )


class Running:
    """`pullrun ARGS` running in the background; its stdout and stderr read as they come."""

    def __init__(self, server: ServerProcess, *args: str) -> None:
        self.proc = subprocess.Popen(
            [PULLRUN, *args],
            env=cli_env(server),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.out = bytearray()
        self.err = bytearray()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(pipe, buf), daemon=True)
            for pipe, buf in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(pipe: IO[bytes], buf: bytearray) -> None:
        while chunk := os.read(pipe.fileno(), 65536):
            buf.extend(chunk)

    def wait_for(self, what: bytes, stream: str = "out") -> None:
        buf = self.out if stream == "out" else self.err
        wait_until(
            lambda: what in buf,
            f"`pullrun` to write {what!r} to std{stream} (so far: {bytes(buf)[-300:]!r})",
        )

    def wait(self) -> int:
        code = self.proc.wait(DEADLINE)
        for reader in self._readers:
            reader.join(DEADLINE)
        return code


def run_id_labelled(client: httpx.Client, mark: str) -> str:
    def find() -> str | None:
        runs = client.get("/api/runs", params={"limit": 50}).json()["runs"]
        ids = [r["id"] for r in runs if r["spec"]["labels"].get("test") == mark]
        return ids[0] if ids else None

    return wait_until(find, f"the run labelled test={mark}")


def test_exit_codes_and_output_byte_for_byte(server: ServerProcess, image: str) -> None:
    done = pullrun(server, "run", image, "sh", "-c", r'printf "a\nb"; printf "c\n" >&2')
    assert (done.returncode, done.stdout, done.stderr) == (0, b"a\nb", b"c\n")

    script = r'printf "\xc3\xa9t\xc3\xa9\n\n  x\ty\n"; printf "e1\ne2" >&2; exit 3'
    done = pullrun(server, "run", image, "sh", "-c", script)
    assert (done.returncode, done.stdout, done.stderr) == (3, "été\n\n  x\ty\n".encode(), b"e1\ne2")

    done = pullrun(server, "run", "-e", "GREETING=hi there", "-w", "/tmp", image, "sh", "-c",
                   'echo "$GREETING from $(pwd)"')  # fmt: skip
    assert (done.returncode, done.stdout) == (0, b"hi there from /tmp\n")


def test_a_named_volume_and_a_refused_network(
    server: ServerProcess, image: str, docker_api: docker.APIClient
) -> None:
    volume = f"pullrun-cli-test-{secrets.token_hex(4)}"
    try:
        for script in ("echo kept > /data/f", "cat /data/f"):
            done = pullrun(server, "run", "-v", f"{volume}:/data", image, "sh", "-c", script)
            assert done.returncode == 0, done.stderr
        assert done.stdout == b"kept\n"
    finally:
        docker_api.remove_volume(volume, force=True)
    done = pullrun(server, "run", "--network", "host", image, "true")
    assert done.returncode == 125 and b"PULLRUN_ALLOWED_NETWORKS" in done.stderr, done.stderr


def test_a_partial_line_is_written_before_its_end(
    server: ServerProcess, client: httpx.Client, image: str, docker_api: docker.APIClient
) -> None:
    mark = secrets.token_hex(4)
    script = f"printf 'prompt> '; {gate()}; echo answer; printf 'no end'"
    running = Running(server, "run", "-l", f"test={mark}", image, "sh", "-c", script)
    running.wait_for(b"prompt> ")  # written while the rest of its line does not exist yet
    assert bytes(running.out) == b"prompt> "
    open_gate(docker_api, run_id_labelled(client, mark))
    assert running.wait() == 0
    assert bytes(running.out) == b"prompt> answer\nno end"


def test_a_run_that_never_starts_exits_125_with_the_error(
    server: ServerProcess, server_factory: ServerFactory, registry: str, image: str
) -> None:
    done = pullrun(server, "run", f"{registry}/pullrun/no-such-image:latest")
    assert done.returncode == 125 and done.stdout == b""
    assert b"pullrun: error in phase pull: " in done.stderr
    assert b"not found" in done.stderr or b"unknown" in done.stderr

    done = pullrun(server, "run", "-m", "100g", image, "true")  # past PULLRUN_MAX_MEMORY
    assert done.returncode == 125 and b"memory" in done.stderr, done.stderr

    strict = server_factory(allowed_images=f"{registry}/*")
    done = pullrun(strict, "run", "docker.io/library/alpine:latest", "true")
    assert done.returncode == 125 and done.stdout == b""
    assert b"PULLRUN_ALLOWED_IMAGES" in done.stderr or b"not allowed" in done.stderr, done.stderr


def test_ctrl_c_cancels_the_run_and_exits_130(
    server: ServerProcess, client: httpx.Client, image: str
) -> None:
    mark = secrets.token_hex(4)
    running = Running(server, "run", "-l", f"test={mark}", image, *SLEEPER)
    running.wait_for(b"started\n")
    running.proc.send_signal(signal.SIGINT)
    assert running.wait() == 130
    run = wait_for_status(client, run_id_labelled(client, mark), "canceled")
    assert run["status"] == "canceled"


def test_detach_wait_logs_inspect_ps_cancel_rm_events(
    server: ServerProcess, client: httpx.Client, image: str
) -> None:
    feed = Running(server, "events")
    script = r'echo one; printf "two\n" >&2; printf three; exit 4'
    started = pullrun(server, "run", "-d", image, "sh", "-c", script)
    assert started.returncode == 0
    run_id = started.stdout.decode().strip()
    assert len(run_id) == 12

    waited = pullrun(server, "wait", run_id)
    assert (waited.returncode, waited.stdout) == (4, b"4\n")
    logs = pullrun(server, "logs", run_id)
    assert (logs.returncode, logs.stdout, logs.stderr) == (0, b"one\nthree", b"two\n")
    only_err = pullrun(server, "logs", "--stderr", run_id)
    assert only_err.stdout == b"two\n"
    stamped = pullrun(server, "logs", "--timestamps", "--stdout", run_id).stdout.decode()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z one\n\d{4}-\d\d-\d\dT[\d:.]+Z three", stamped)
    inspected = json.loads(pullrun(server, "inspect", run_id).stdout)
    assert inspected[0]["id"] == run_id and inspected[0]["exit_code"] == 4
    assert run_id in pullrun(server, "ps", "-q", "--status", "failed").stdout.decode().split()
    table = pullrun(server, "ps").stdout.decode().splitlines()
    assert table[0].split()[:3] == ["RUN", "ID", "IMAGE"]
    assert any(line.startswith(run_id) and "failed (4)" in line for line in table)

    sleeper = pullrun(server, "run", "-d", image, *SLEEPER).stdout.decode().strip()
    wait_for_status(client, sleeper, "running")
    assert pullrun(server, "cancel", sleeper).returncode == 0
    assert wait_for_status(client, sleeper, "canceled")["status"] == "canceled"

    assert pullrun(server, "rm", run_id).stdout == f"{run_id}\n".encode()
    missing = pullrun(server, "inspect", run_id)
    assert missing.returncode == 1 and b"no run" in missing.stderr

    feed.wait_for(f"run {run_id} failed (4) {image}\n".encode())
    feed.wait_for(f"deleted {run_id}\n".encode())
    feed.proc.send_signal(signal.SIGINT)
    assert feed.wait() == 130


PRINTER = (
    "i=0; while [ ! -e /tmp/gate ]; do i=$((i + 1)); echo out-$i; echo err-$i >&2; "
    "sleep 0.05; done; echo out-end; exit 3"
)


def test_a_server_restart_mid_run_is_resumed_without_a_gap_or_a_repeat(
    server_factory: ServerFactory, image: str, docker_api: docker.APIClient
) -> None:
    server = server_factory(partial_line_delay=0.1)
    mark = secrets.token_hex(4)
    running = Running(server, "run", "-l", f"test={mark}", image, "sh", "-c", PRINTER)
    running.wait_for(b"out-3\n")
    server.kill()  # as a crash: the run goes on, the stream drops
    running.wait_for(b"pullrun: connection lost", "err")
    server.start()  # the same port, data dir and token
    running.wait_for(b"re-attached to its container", "err")
    with server.client() as client:
        open_gate(docker_api, run_id_labelled(client, mark))
    assert running.wait() == 3
    out = bytes(running.out).decode().splitlines()
    assert out[-1] == "out-end"
    assert out[:-1] == [f"out-{k}" for k in range(1, len(out))]
    err = [line for line in bytes(running.err).decode().splitlines() if "pullrun:" not in line]
    assert err == [f"err-{k}" for k in range(1, len(err) + 1)]
    assert len(err) >= 3


def forget_layers_image(api: docker.APIClient) -> None:
    """No tag of the layers image is left (earlier pulls through a proxy's
    port): else the engine has it by its digest and downloads nothing."""
    for found in api.images():
        for tag in found.get("RepoTags") or []:
            if tag.endswith("/pullrun/layers:latest"):
                remove_image(api, tag)


def test_pull_bars_are_redrawn_in_a_terminal(
    server: ServerProcess, registry: str, docker_api: docker.APIClient
) -> None:
    forget_layers_image(docker_api)
    main, child = pty.openpty()
    with ThrottleProxy(registry, rate=2 * 1024 * 1024) as proxy:
        ref = f"{proxy.address}/pullrun/layers:latest"
        proc = subprocess.Popen(
            [PULLRUN, "run", "--pull", "always", ref, "true"],
            env=cli_env(server),
            stdout=subprocess.DEVNULL,
            stderr=child,
        )
        os.close(child)
        screen = bytearray()
        while True:
            ready, _, _ = select.select([main], [], [], DEADLINE)
            assert ready, f"no output from `pullrun run` for {DEADLINE} s: {bytes(screen)!r}"
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not chunk:
                break
            screen.extend(chunk)
        assert proc.wait(DEADLINE) == 0
        remove_image(docker_api, ref)
    os.close(main)
    text = bytes(screen).decode()
    assert "\x1b[" in text and "A\r\x1b[2K" in text  # cursor up, erase, redraw
    assert "Downloading [" in text and "MB" in text  # a bar and its sizes
    assert text.count("Pull complete") >= 3
    assert "Status: Downloaded newer image" in text
