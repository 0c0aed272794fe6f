"""What the benchmarks drive: the server under test, the client process, the
docker CLI, and the bookkeeping (A/B alternation, medians, table rows)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20


class BenchError(RuntimeError):
    """A benchmark could not be measured (or a correctness check failed)."""


# -- the server under test -------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM / Threads of a process, in bytes (threads as a count)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) * 1024
            elif name == "Threads":
                out[name] = int(value)
    return out


# The benchmarks start the server exactly as the tests do.
BenchServer = ServerProcess


SERVER_ROOT: Path | None = None  # set by --server-root
# The admin token of each server started (by base URL): ClientProcess.call
# sends it along with every command aimed at that server.
TOKENS: dict[str, str] = {}


@contextlib.contextmanager
def bench_server(
    name: str, data_dir: Path | None = None, profile: Path | None = None, **settings: Any
) -> Iterator[BenchServer]:
    """A real `pullrun serve` (127.0.0.1, own temp data dir), stopped at the end.

    With `profile`, py-spy records the server (all threads, idle stacks left
    out) into `profile/<name>.txt` (collapsed stacks) until it stops.
    """
    root = Path(tempfile.mkdtemp(prefix=f"pullrun-bench-{name}-"))
    server = BenchServer(data_dir or (root / "data"), root=SERVER_ROOT, **settings)
    server.log_path = root / "server.log"
    spy: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        if server.token:
            TOKENS[server.base_url] = server.token
        if profile is not None:
            spy = start_py_spy(server.pid, profile / f"{name}.txt")
        yield server
    finally:
        server.stop()
        if spy is not None:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.send_signal(signal.SIGINT)
                spy.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def start_py_spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    spy_bin = Path(sys.executable).with_name("py-spy")
    if not spy_bin.exists():
        raise BenchError("--profile needs py-spy in the venv: .venv/bin/pip install py-spy")
    output.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [
            str(spy_bin),
            "record",
            "--pid",
            str(pid),
            "--threads",
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # let it attach
    return spy


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the client process ----------------------------------------------------------------


class ClientProcess:
    """`python -m bench.client` (or another client module): subscribers and
    HTTP requests, out of process, asked and answered a JSON line each."""

    MODULE = "bench.client"

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.MODULE],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        self.send(cmd, **args)
        return self.receive(cmd)

    def send(self, cmd: str, **args: Any) -> None:
        """Ask, without waiting for the answer (several processes at once)."""
        assert self.proc.stdin is not None
        if args.get("base") in TOKENS:
            args.setdefault("token", TOKENS[args["base"]])
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()

    def receive(self, what: str | None = None) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError(f"the client process {self.MODULE} exited ({self.proc.poll()})")
        result: dict[str, Any] = json.loads(line)
        if result.get("errors"):
            raise BenchError(f"{what or self.MODULE}: " + "; ".join(result["errors"][:5]))
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the docker CLI --------------------------------------------------------------------


def docker(*args: str, stdout: int | None = subprocess.DEVNULL) -> tuple[float, int, bytes]:
    """Run the docker CLI; (seconds, exit code, stdout when captured)."""
    t0 = time.monotonic()
    proc = subprocess.run(["docker", *args], stdout=stdout, stderr=subprocess.PIPE)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        raise BenchError(f"docker {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
    return elapsed, proc.returncode, proc.stdout or b""


def docker_quiet(*args: str) -> None:
    """Set-up calls whose failure does not matter (rmi of an absent image)."""
    subprocess.run(["docker", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def engine_version() -> str:
    out = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "unknown"


def machine() -> dict[str, str]:
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    os_name = ""
    with contextlib.suppress(OSError), open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                os_name = line.partition("=")[2].strip().strip('"')
    return {
        "cores": str(os.cpu_count()),
        "cpu": model,
        "memory": f"{mem / (1 << 30):.1f} GiB",
        "os": os_name,
        "kernel": os.uname().release,
        "engine": engine_version(),
        "python": sys.version.split()[0],
    }


# -- bookkeeping -----------------------------------------------------------------------


def alternate(
    a: Callable[[], float], b: Callable[[], float], reps: int, warmup: int = 1, label: str = ""
) -> tuple[list[float], list[float]]:
    """A, B, A, B, ... `reps` times after `warmup` unrecorded pairs."""
    samples_a: list[float] = []
    samples_b: list[float] = []
    for i in range(warmup + reps):
        ta = a()
        tb = b()
        tag = "warm-up" if i < warmup else f"{i - warmup + 1}/{reps}"
        log(f"  {label} {tag}: pullrun {ta:.3f}  reference {tb:.3f}")
        if i >= warmup:
            samples_a.append(ta)
            samples_b.append(tb)
    return samples_a, samples_b


def median(values: list[float]) -> float:
    return statistics.median(values)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Row:
    number: str
    what: str
    pullrun: str
    reference: str
    ratio: str
    target: str
    passed: bool
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def result(self) -> str:
        return "pass" if self.passed else "MISS"


HEADER = ("#", "what", "pullrun (median)", "reference (median)", "ratio", "target", "result")


def format_table(rows: list[Row], markdown: bool = False) -> str:
    cells = [list(HEADER)] + [
        [r.number, r.what, r.pullrun, r.reference, r.ratio, r.target, r.result] for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(c) + " |" for c in cells]
        lines.insert(1, "|" + "|".join("---" for _ in HEADER) + "|")
        return "\n".join(lines)
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(HEADER))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.3f} s"


def mib(value: float) -> str:
    return f"{value / MiB:.1f} MiB"
