"""Benchmark 15 (issue 12, its number 11): line latency.

A container prints a line every 20 ms (`echo $i; usleep 20000`, 1,000 lines,
about 20 s). Two readers on this machine stamp each line's arrival with
`time.monotonic()` (CLOCK_MONOTONIC, one clock for every process): a docker
attach of the container (the engine's attach stream, as `docker attach` reads
it, from a process of its own) and pullrun SSE subscribers of the run (another
process). Added latency per line: a subscriber's arrival minus docker's.

The container waits at a gate (tests/support/runs.gate) until both readers are
connected; the bench opens it with `docker exec ... touch`. Every line is
checked on both sides: all of them, each once, in order.

Three cases, one server: one subscriber; 100 subscribers (every subscriber's
arrivals count); one subscriber while `seq 1 1000000` runs stream one after
another on the same server, each followed by a parsing subscriber (the noisy
neighbour), for the whole time the lines are printed.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from typing import TYPE_CHECKING, Any

from tests.support.runs import gate

from .driver import BenchError, ClientProcess, Row, bench_server, docker, log
from .heavy_bench import LiveClient

if TYPE_CHECKING:
    from .benchmarks import Config

IMAGE = "pullrun/busybox:base"  # present locally: no pull
INTERVAL_US = 20_000
SEQ = 1_000_000
P50_TARGET = 0.005
P99_TARGET = 0.025
P99_LOADED_TARGET = 0.050


class LatencyReaders(ClientProcess):
    """`python -m bench.latency_client`: the readers of one side."""

    MODULE = "bench.latency_client"


def _command(lines: int) -> list[str]:
    loop = f"i=0; while [ $i -lt {lines} ]; do echo $i; usleep {INTERVAL_US}; i=$((i + 1)); done"
    return ["sh", "-c", f"{gate()}; {loop}"]


def quantile(values: list[float], q: float) -> float:
    """The smallest value with at least q of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


class Neighbour:
    """`seq 1 1000000` runs one after another, each with a parsing subscriber
    (bench.live_client's SeqSink, a process of its own: every event id and
    every line checked as it arrives, at ~8 ms of CPU per million lines where
    bench.client's EventSink keeps and parses them all, ~0.3 s), until stopped."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.client = LiveClient()
        self.spans: list[tuple[float, float]] = []  # (POST, done), time.monotonic()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="neighbour", daemon=True)

    def _loop(self) -> None:
        body = {"image": IMAGE, "command": ["seq", "1", str(SEQ)]}
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                # (it checks the run's `done`: succeeded, SEQ lines, none dropped)
                self.client.call("heavy", base=self.base, body=body, count=1, seq=SEQ)
            except BenchError as exc:
                self.errors.append(str(exc))
                return
            self.spans.append((t0, time.monotonic()))

    def __enter__(self) -> Neighbour:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)
        self.client.close()

    def busy(self, t: float) -> bool:
        return any(a <= t <= b for a, b in self.spans)


def _container(client: Any, run_id: str) -> str:
    """The run's container id once it runs (it waits at the gate then)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        record = client.get(f"/api/runs/{run_id}").json()
        if record["status"] == "running" and record.get("container_id"):
            return str(record["container_id"])
        if record["status"] not in ("queued", "pulling", "creating", "starting"):
            raise BenchError(f"run {run_id} ended before its gate: {record['status']}")
        time.sleep(0.05)
    raise BenchError(f"run {run_id}'s container did not start within 60 s")


def _check(side: str, got: dict[str, Any], lines: int) -> None:
    if got["errors"]:
        raise BenchError(f"{side}: " + "; ".join(got["errors"]))
    expected = [str(i) for i in range(lines)]
    if got["lines"] != expected:
        n = len(got["lines"])
        bad = next((i for i in range(min(n, lines)) if got["lines"][i] != expected[i]), n)
        raise BenchError(f"{side}: {n} lines, line {bad} differs from {lines} expected")


def measure(
    server: Any,
    sides: tuple[LatencyReaders, LatencyReaders, LatencyReaders],
    lines: int,
    *,
    subscribers: int = 1,
    noisy: bool = False,
) -> dict[str, Any]:
    """One run of `lines` lines read by docker and `subscribers` subscribers,
    and by a second docker attach reader (the measurement's own noise: its
    arrival minus the first reader's, as for a subscriber)."""
    docker_side, sse_side, control_side = sides
    label = f"{subscribers} subscriber(s)" + (", noisy neighbour" if noisy else "")
    with server.client() as client:
        response = client.post("/api/runs", json={"image": IMAGE, "command": _command(lines)})
        if response.status_code != 201:
            raise BenchError(f"POST /api/runs: {response.status_code} {response.text[:300]}")
        run_id = response.json()["id"]
        sse_side.call(
            "subscribe", base=server.base_url, run_id=run_id, count=subscribers, token=server.token
        )
        container = _container(client, run_id)
    docker_side.call("attach", container=container)
    control_side.call("attach", container=container)
    neighbour = Neighbour(server.base_url) if noisy else None
    try:
        if neighbour is not None:
            neighbour.__enter__()
            time.sleep(1.0)  # its first run streaming
        docker("exec", container, "touch", "/tmp/gate")
        timeout = lines * INTERVAL_US / 1e6 * 3 + 60
        theirs = docker_side.call("collect", timeout=timeout)["attached"][0]
        control = control_side.call("collect", timeout=60)["attached"][0]
        ours = sse_side.call("collect", timeout=60)["subscribers"]
    finally:
        if neighbour is not None:
            neighbour.__exit__()
    _check("docker attach", theirs, lines)
    _check("second docker attach", control, lines)
    noise = [t - d for t, d in zip(control["times"], theirs["times"], strict=True)]
    added: list[float] = []
    for i, sub in enumerate(ours):
        _check(f"subscriber {i}", sub, lines)
        added += [t - d for t, d in zip(sub["times"], theirs["times"], strict=True)]
    result: dict[str, Any] = {
        "lines": lines,
        "subscribers": subscribers,
        "p50": quantile(added, 0.50),
        "p99": quantile(added, 0.99),
        "max": max(added),
        "min": min(added),
        "mean": statistics.fmean(added),
        "docker_p50": quantile(noise, 0.50),
        "docker_p99": quantile(noise, 0.99),
        "printing": theirs["times"][-1] - theirs["times"][0],
    }
    if neighbour is not None:
        if neighbour.errors:
            raise BenchError("noisy neighbour: " + "; ".join(neighbour.errors))
        busy = [neighbour.busy(t) for t in theirs["times"]]
        result["neighbour_runs"] = len(neighbour.spans)
        result["lines_beside_neighbour"] = sum(busy) / len(busy)
        beside = [a for a, b in zip(added, busy * subscribers, strict=True) if b]
        if beside:
            result["p99_beside_neighbour"] = quantile(beside, 0.99)
    log(
        f"  {label}: p50 {ms(result['p50'])}  p99 {ms(result['p99'])}  "
        f"max {ms(result['max'])}  min {ms(result['min'])}  second docker reader: p50 "
        f"{ms(result['docker_p50'])} p99 {ms(result['docker_p99'])}  "
        f"load {os.getloadavg()[0]:.1f}  "
        + (
            f"neighbour runs {result['neighbour_runs']}, "
            f"{result['lines_beside_neighbour']:.0%} of lines beside one"
            if noisy
            else ""
        )
    )
    return result


def line_latency(cfg: Config) -> list[Row]:
    lines = 250 if cfg.quick else 1000
    span = f"{lines} lines, one per 20 ms"
    with (
        bench_server("15", profile=cfg.profile, max_concurrent_runs=4) as server,
        LatencyReaders() as docker_side,
        LatencyReaders() as sse_side,
        LatencyReaders() as control_side,
    ):
        docker("image", "inspect", IMAGE)  # present: no pull
        sides = (docker_side, sse_side, control_side)
        plain = measure(server, sides, lines)
        many = measure(server, sides, lines, subscribers=100)
        noisy = measure(server, sides, lines, noisy=True)

    def ref(result: dict[str, Any], q: str) -> str:
        return f"{ms(result['docker_' + q])} (a second docker attach reader)"

    return [
        Row(
            "15",
            f"line latency: {span}, SSE arrival minus docker attach's, p50",
            ms(plain["p50"]),
            ref(plain, "p50"),
            "-",
            "<= 5 ms; every line, both sides",
            plain["p50"] <= P50_TARGET,
            plain,
        ),
        Row(
            "15",
            f"line latency: the same, p99 (max {ms(plain['max'])})",
            ms(plain["p99"]),
            ref(plain, "p99"),
            "-",
            "<= 25 ms",
            plain["p99"] <= P99_TARGET,
        ),
        Row(
            "15",
            f"line latency: 100 subscribers (all arrivals), p99 (p50 {ms(many['p50'])})",
            ms(many["p99"]),
            ref(many, "p99"),
            "-",
            "<= 50 ms",
            many["p99"] <= P99_LOADED_TARGET,
            many,
        ),
        Row(
            "15",
            f"line latency: beside seq 1 1000000 runs streaming ({noisy['neighbour_runs']} "
            f"runs, {noisy['lines_beside_neighbour']:.0%} of lines), p99 "
            f"(p50 {ms(noisy['p50'])})",
            ms(noisy["p99"]),
            ref(noisy, "p99"),
            "-",
            "<= 50 ms",
            noisy["p99"] <= P99_LOADED_TARGET,
            noisy,
        ),
    ]
