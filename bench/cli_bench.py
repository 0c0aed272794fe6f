"""Benchmark 12 (issue 11): `pullrun run` of `seq 1 1000000` (the console
script, as a person types it) against `docker run` of the same, both with
stdout to a file: the same bytes, and the time."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .driver import BenchError, Row, alternate, bench_server, docker, median, seconds

if TYPE_CHECKING:
    from .benchmarks import Config

IMAGE = "pullrun/busybox:base"  # present locally: no pull on either side
SEQ = ["seq", "1", "1000000"]
PULLRUN = str(Path(sys.executable).parent / "pullrun")


def _timed(argv: list[str], out: Path, env: dict[str, str] | None = None) -> float:
    with out.open("wb") as sink:
        t0 = time.monotonic()
        done = subprocess.run(argv, stdout=sink, stderr=subprocess.PIPE, env=env)
        elapsed = time.monotonic() - t0
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr!r}")
    return elapsed


def cli(cfg: Config) -> list[Row]:
    reps = cfg.reps(5, 2)
    work = Path(tempfile.mkdtemp(prefix="pullrun-bench-12-"))
    ours, theirs = work / "pullrun.out", work / "docker.out"
    with bench_server("12", profile=cfg.profile) as server:
        env = dict(os.environ, PULLRUN_URL=server.base_url, PULLRUN_TOKEN=server.token or "")
        same: list[bool] = []

        def a() -> float:
            return _timed([PULLRUN, "run", IMAGE, *SEQ], ours, env)

        def b() -> float:
            elapsed = _timed(["docker", "run", "--rm", IMAGE, *SEQ], theirs)
            same.append(ours.read_bytes() == theirs.read_bytes())
            return elapsed

        docker("image", "inspect", IMAGE)  # present: neither side pulls
        samples_a, samples_b = alternate(a, b, reps, label="cli")
    ma, mb = median(samples_a), median(samples_b)
    ratio = ma / mb
    return [
        Row(
            "12",
            "CLI: `pullrun run` of seq 1 1000000, stdout to a file",
            seconds(ma),
            seconds(mb) + " (docker run, stdout to a file)",
            f"{ratio:.2f}",
            "<= 1.25; the same bytes",
            ratio <= 1.25 and all(same),
            {"pullrun": samples_a, "reference": samples_b, "same_bytes": same},
        )
    ]
