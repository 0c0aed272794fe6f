"""Benchmark 16 (issue 12's number 12): eight heavy runs at once.

8 runs of `seq 1 1000000` POSTed together to a server with
`max_concurrent_runs` 8, each followed by a parsing subscriber that checks
every event id and every line as it arrives (bench/live_client.py, SeqSink),
against 8 `docker run --rm IMAGE seq 1 1000000 > /dev/null` started together.
Time: from just before the POSTs (the first `docker run`) to the last `done`
(the last `docker run` exiting). A/B alternated, 3 pairs (1 with --quick)
after an unrecorded `echo hello` on each side (a pair takes 15-35 s on 2
cores); ratio of the medians, target 1.25.

Beside each sample it records, from /proc: the server's CPU, the client
process's, dockerd's, the docker CLIs' (this process's children) and the
whole machine's busy and idle CPU seconds (every session's), plus when each
run's first lines arrived and when each run ended.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .driver import (
    BenchError,
    ClientProcess,
    Row,
    alternate,
    bench_server,
    cpu_seconds,
    docker,
    log,
    median,
    seconds,
)

if TYPE_CHECKING:
    from .benchmarks import Config

IMAGE = "pullrun/busybox:base"  # present locally: no pull on either side
SEQ = 1_000_000
RUNS = 8
TARGET = 1.25
WARM_UP = {"image": IMAGE, "command": ["echo", "hello"]}


class LiveClient(ClientProcess):
    """`python -m bench.live_client` (the commands of bench.client, and more)."""

    MODULE = "bench.live_client"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def engine_pid() -> int | None:
    """The default engine's dockerd (its CPU is reported beside each sample)."""
    try:
        return int(Path("/var/run/docker.pid").read_text())
    except (OSError, ValueError):
        return None


def machine_cpu() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine so far (/proc/stat), all cores."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK"), idle / os.sysconf("SC_CLK_TCK")


class Meter:
    """Per call of a sample function: CPU seconds of the engine (dockerd), of
    this process's children (the docker CLIs), and the machine's busy and idle
    CPU seconds (all processes, every session's)."""

    def __init__(self) -> None:
        self.engine = engine_pid()
        self.samples: list[dict[str, float]] = []

    def wrap(self, fn: Callable[[], float]) -> Callable[[], float]:
        def go() -> float:
            e0 = cpu_seconds(self.engine) if self.engine else 0.0
            k0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            b0, i0 = machine_cpu()
            value = fn()
            b1, i1 = machine_cpu()
            k1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            e1 = cpu_seconds(self.engine) if self.engine else 0.0
            children = k1.ru_utime + k1.ru_stime - k0.ru_utime - k0.ru_stime
            self.samples.append(
                {"dockerd": e1 - e0, "children": children, "busy": b1 - b0, "idle": i1 - i0}
            )
            return value

        return go

    def column(self, name: str) -> str:
        return _list([s[name] for s in self.samples])


def heavy(cfg: Config) -> list[Row]:
    reps = cfg.reps(3, 1)
    body: dict[str, Any] = {"image": IMAGE, "command": ["seq", "1", str(SEQ)]}
    cpu: list[float] = []
    client_cpu: list[float] = []
    events: list[list[int]] = []
    ends: dict[str, list[list[float]]] = {"pullrun": [], "reference": []}
    first_lines: list[list[float]] = []  # when each run's first lines arrived
    loads: list[str] = []
    meter_a, meter_b = Meter(), Meter()
    docker("image", "inspect", IMAGE)  # present: neither side pulls
    with (
        bench_server("16", profile=cfg.profile, max_concurrent_runs=RUNS) as server,
        LiveClient() as client,
    ):

        def a() -> float:
            loads.append(load())
            c0 = cpu_seconds(server.pid)
            result = client.call("heavy", base=server.base_url, body=body, count=RUNS, seq=SEQ)
            cpu.append(cpu_seconds(server.pid) - c0)
            client_cpu.append(result["client_cpu"])
            events.append(result["events"])
            ends["pullrun"].append(sorted(result["ends"]))
            first_lines.append(result["first_lines"])
            return float(result["elapsed"])

        def one(_: int) -> float:
            return docker("run", "--rm", IMAGE, "seq", "1", str(SEQ))[0]

        def b() -> float:
            t0 = time.monotonic()
            with ThreadPoolExecutor(RUNS) as pool:
                ends["reference"].append(sorted(pool.map(one, range(RUNS))))
            return time.monotonic() - t0

        # A light warm-up (each pair takes 15-30 s on 2 cores): the server's
        # first run and a first `docker run`, not recorded.
        client.call("run", base=server.base_url, body=WARM_UP, expect=["hello"])
        docker("run", "--rm", IMAGE, *WARM_UP["command"])
        samples_a, samples_b = alternate(
            meter_a.wrap(a), meter_b.wrap(b), reps, warmup=0, label="heavy"
        )
    log(
        f"  heavy: CPU seconds per sample: server {_list(cpu)}, client {_list(client_cpu)}, "
        f"dockerd {meter_a.column('dockerd')}, machine busy {meter_a.column('busy')} idle "
        f"{meter_a.column('idle')}; docker run: dockerd {meter_b.column('dockerd')}, "
        f"CLIs {meter_b.column('children')}, machine busy {meter_b.column('busy')} idle "
        f"{meter_b.column('idle')}; load averages before each pullrun sample {loads}"
    )
    log(
        "  heavy: runs ended (first-last, s): pullrun "
        + ", ".join(f"{e[0]:.2f}-{e[-1]:.2f}" for e in ends["pullrun"])
        + "; docker run "
        + ", ".join(f"{e[0]:.2f}-{e[-1]:.2f}" for e in ends["reference"])
        + "; pullrun's first lines at "
        + ", ".join(f"{e[0]:.2f}-{e[-1]:.2f}" for e in first_lines)
        + "; events per run "
        + ", ".join(f"{min(e)}-{max(e)}" for e in events)
    )
    if not samples_a:
        raise BenchError("no samples")
    ma, mb = median(samples_a), median(samples_b)
    ratio = ma / mb
    return [
        Row(
            "16",
            f"heavy: {RUNS} runs of seq 1 1000000 at once (max_concurrent_runs {RUNS}), "
            "POST to last done, a parsing subscriber each",
            seconds(ma),
            seconds(mb) + f" ({RUNS} docker run >/dev/null at once)",
            f"{ratio:.2f}",
            f"<= {TARGET}; every line once, in order",
            ratio <= TARGET,
            {
                "pullrun": samples_a,
                "reference": samples_b,
                "server_cpu": cpu,
                "client_cpu": client_cpu,
                "events": events,
                "ends": ends,
                "first_lines": first_lines,
                "cpu_pullrun": meter_a.samples,
                "cpu_reference": meter_b.samples,
                "load": loads,
            },
        )
    ]


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)
