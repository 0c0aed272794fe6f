"""The benchmarks: 1-8 of issue 4, 9 of issue 7, 10 of issue 9, 11 of issue 10, 12 of
issue 11 (bench/cli_bench.py), 13-18 of issue 12 (a module each, named in BENCHMARKS).
Each returns its table row(s)."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.server import free_port

from .bigpage_bench import bigpage
from .cli_bench import cli
from .driver import (
    ROOT,
    BenchError,
    BenchServer,
    ClientProcess,
    Row,
    alternate,
    bench_server,
    cpu_seconds,
    docker,
    docker_quiet,
    log,
    median,
    mib,
    proc_status,
    seconds,
)
from .heavy_bench import heavy
from .history_bench import history as long_history
from .late_bench import late
from .latency_bench import line_latency
from .viewers_bench import viewers

IMAGE = "pullrun/busybox:base"  # present locally: no pull on either side
REGISTRY = os.environ.get("PULLRUN_TEST_REGISTRY", "127.0.0.1:5000")
LAYERS = "pullrun/layers:latest"  # busybox + 3 random layers of 3, 2, 1 MiB
SEQ = 1_000_000
SEQ_BYTES = sum(len(str(i)) + 1 for i in range(1, SEQ + 1))  # 6,888,896: `seq 1 1000000 | wc -c`
PROXY_RATE = 4 << 20  # bytes/s through the throttling proxy (benchmark 6)
HISTORY = 10_000  # finished runs in the store (benchmark 7)


@dataclass
class Config:
    quick: bool = False
    profile: Path | None = None

    def reps(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def _seq_run() -> dict[str, Any]:
    return {"image": IMAGE, "command": ["seq", "1", str(SEQ)]}


def _check_seq_done(result: dict[str, Any]) -> None:
    done = result["parser"]["done"]
    if done["status"] != "succeeded" or done["log_lines"] != SEQ or done["dropped_lines"]:
        raise BenchError(f"run {result['run_id']} ended {done}")


# -- 1 ---------------------------------------------------------------------------------


def relay(cfg: Config) -> list[Row]:
    reps = cfg.reps(5, 2)
    cpu: list[float] = []
    with bench_server("1", profile=cfg.profile) as server, ClientProcess() as client:

        def a() -> float:
            c0 = cpu_seconds(server.pid)
            result = client.call("run", base=server.base_url, body=_seq_run(), clients=1, seq=SEQ)
            cpu.append(cpu_seconds(server.pid) - c0)
            _check_seq_done(result)
            return float(result["elapsed"])

        def b() -> float:
            return docker("run", "--rm", IMAGE, "seq", "1", str(SEQ))[0]

        samples_a, samples_b = alternate(a, b, reps, label="relay")
    ma, mb = median(samples_a), median(samples_b)
    ratio = ma / mb
    return [
        Row(
            "1",
            "relay: 1,000,000 lines, POST to done at 1 parsing subscriber",
            seconds(ma),
            seconds(mb) + " (docker run, >/dev/null)",
            f"{ratio:.2f}",
            "<= 1.25; every line once, in order",
            ratio <= 1.25,
            {"pullrun": samples_a, "reference": samples_b, "server_cpu": cpu},
        )
    ]


# -- 2 ---------------------------------------------------------------------------------


def fanout(cfg: Config) -> list[Row]:
    reps = cfg.reps(3, 1)
    subscribers = 100
    cpu: dict[int, list[float]] = {subscribers: [], 1: []}
    with bench_server("2", profile=cfg.profile) as server, ClientProcess() as client:

        def run(clients: int) -> Callable[[], float]:
            def go() -> float:
                c0 = cpu_seconds(server.pid)
                result = client.call(
                    "run", base=server.base_url, body=_seq_run(), clients=clients, seq=SEQ
                )
                cpu[clients].append(cpu_seconds(server.pid) - c0)
                _check_seq_done(result)
                return float(result["elapsed"])

            return go

        samples_a, samples_b = alternate(run(subscribers), run(1), reps, label="fan-out")
        status = proc_status(server.pid)
        time.sleep(2.0)
        settled = proc_status(server.pid)
    log(f"  fan-out: server RSS peak {mib(status['VmHWM'])}, {mib(settled['VmRSS'])} 2 s later")
    ma, mb = median(samples_a), median(samples_b)
    ratio = ma / mb
    peak = status["VmHWM"]
    return [
        Row(
            "2",
            f"fan-out: the same run, {subscribers} subscribers (all get every line)",
            seconds(ma),
            seconds(mb) + " (benchmark 1, 1 subscriber)",
            f"{ratio:.2f}",
            "<= 2.0",
            ratio <= 2.0,
            {"pullrun": samples_a, "reference": samples_b, "server_cpu": cpu},
        ),
        Row(
            "2",
            "fan-out: server peak RSS (VmHWM)",
            mib(peak),
            "-",
            "-",
            "<= 300 MiB",
            peak <= 300 << 20,
            {"status": status, "settled": settled},
        ),
    ]


# -- 3 ---------------------------------------------------------------------------------


def latency(cfg: Config) -> list[Row]:
    reps = cfg.reps(15, 5)
    body = {"image": IMAGE, "command": ["echo", "hello"]}
    with bench_server("3", profile=cfg.profile) as server, ClientProcess() as client:

        def a() -> float:
            result = client.call("run", base=server.base_url, body=body, expect=["hello"])
            if result["parser"]["done"]["status"] != "succeeded":
                raise BenchError(f"echo hello ended {result['parser']['done']}")
            return float(result["elapsed"])

        def b() -> float:
            elapsed, _, out = docker("run", "--rm", IMAGE, "echo", "hello", stdout=subprocess.PIPE)
            if out != b"hello\n":
                raise BenchError(f"docker run printed {out!r}")
            return elapsed

        samples_a, samples_b = alternate(a, b, reps, warmup=2, label="latency")
    ma, mb = median(samples_a), median(samples_b)
    overhead = ma - mb
    return [
        Row(
            "3",
            "short run: echo hello, POST to done",
            seconds(ma),
            seconds(mb) + " (docker run)",
            f"{ma / mb:.2f} ({round(overhead * 1000):+d} ms)",
            "overhead <= 100 ms",
            overhead <= 0.1,
            {"pullrun": samples_a, "reference": samples_b},
        )
    ]


# -- 4 ---------------------------------------------------------------------------------


def concurrency(cfg: Config) -> list[Row]:
    reps = cfg.reps(3, 1)
    count, width = 50, 16
    body = {"image": IMAGE, "command": ["echo", "hello"]}
    with (
        bench_server("4", profile=cfg.profile, max_concurrent_runs=width) as server,
        ClientProcess() as client,
    ):

        def a() -> float:
            result = client.call(
                "many", base=server.base_url, body=body, count=count, expect=["hello"]
            )
            return float(result["elapsed"])

        def one(_: int) -> bytes:
            return docker("run", "--rm", IMAGE, "echo", "hello", stdout=subprocess.PIPE)[2]

        def b() -> float:
            t0 = time.monotonic()
            with ThreadPoolExecutor(width) as pool:
                outputs = list(pool.map(one, range(count)))
            elapsed = time.monotonic() - t0
            bad = [o for o in outputs if o != b"hello\n"]
            if bad:
                raise BenchError(f"{len(bad)} docker runs printed {bad[0]!r}")
            return elapsed

        samples_a, samples_b = alternate(a, b, reps, label="concurrency")
    ma, mb = median(samples_a), median(samples_b)
    ratio = ma / mb
    return [
        Row(
            "4",
            f"concurrency: {count} echo runs at once (max_concurrent_runs {width})",
            seconds(ma),
            seconds(mb) + f" ({count} docker run, {width} at a time)",
            f"{ratio:.2f}",
            "<= 1.5; no errors",
            ratio <= 1.5,
            {"pullrun": samples_a, "reference": samples_b},
        )
    ]


# -- 5 ---------------------------------------------------------------------------------


def replay(cfg: Config) -> list[Row]:
    """Each run is replayed first "cold" (its first read since it finished: the
    server builds the event index from the file), later "warm" (index cached)."""
    reps = cfg.reps(8, 3)
    warmup = 1
    with bench_server("5", profile=cfg.profile) as server, ClientProcess() as client:
        runs: list[tuple[str, Path, int]] = []
        for _ in range(warmup + reps):
            result = client.call("run", base=server.base_url, body=_seq_run(), clients=1, seq=SEQ)
            _check_seq_done(result)
            path = server.data_dir / "events" / f"{result['run_id']}.events"
            runs.append((result["run_id"], path, result["parser"]["crc"]))
        size = statistics.median(p.stat().st_size for _, p, _ in runs)

        def reader(kind: str) -> Callable[[], float]:
            turn = iter(range(len(runs) * 2))

            def go() -> float:
                run_id, path, crc = runs[next(turn) % len(runs)]
                if kind == "replay":
                    got = client.call("replay", base=server.base_url, run_id=run_id)
                else:
                    got = client.call("cat", path=str(path))
                if (got["crc"], got["nbytes"]) != (crc, path.stat().st_size):
                    raise BenchError(f"{kind} of {run_id} differs from its live stream")
                return float(got["elapsed"])

            return go

        replay_, cat = reader("replay"), reader("cat")
        cpu = [cpu_seconds(server.pid)]
        cold_a, cold_b = alternate(replay_, cat, reps, warmup, label="replay (first read)")
        cpu.append(cpu_seconds(server.pid))
        warm_a, warm_b = alternate(replay_, cat, reps, warmup, label="replay (again)")
        cpu.append(cpu_seconds(server.pid))
    per_read = [(cpu[i + 1] - cpu[i]) / (warmup + reps) for i in range(2)]
    log(
        f"  replay: server CPU per read {per_read[0] * 1000:.1f} ms (first), "
        f"{per_read[1] * 1000:.1f} ms (again)"
    )
    rows = []
    for label, samples_a, samples_b, server_cpu in (
        ("first read since it finished", cold_a, cold_b, per_read[0]),
        ("read again (index cached)", warm_a, warm_b, per_read[1]),
    ):
        ma, mb = median(samples_a), median(samples_b)
        ratio = ma / mb
        rows.append(
            Row(
                "5",
                f"replay: late subscriber reads a finished 1M-line run ({mib(size)}), {label}",
                seconds(ma),
                seconds(mb) + " (cat of the event file into a pipe)",
                f"{ratio:.2f}",
                "<= 3",
                ratio <= 3,
                {
                    "pullrun": samples_a,
                    "reference": samples_b,
                    "bytes": size,
                    "server_cpu_per_read": server_cpu,
                },
            )
        )
    return rows


# -- 6 ---------------------------------------------------------------------------------


def _start_proxy(rate: int) -> tuple[subprocess.Popen[bytes], str]:
    """tests/support/throttle_proxy.py in a process of its own, in front of :5000."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests/support/throttle_proxy.py"),
            "--listen",
            f"127.0.0.1:{port}",
            "--target",
            REGISTRY,
            "--rate",
            str(rate),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise BenchError("the throttling proxy did not start")


def pull(cfg: Config) -> list[Row]:
    reps = cfg.reps(3, 1)
    proxy, address = _start_proxy(PROXY_RATE)
    image = f"{address}/{LAYERS}"
    try:
        docker_quiet("rmi", "-f", image)
        with bench_server("6", profile=cfg.profile) as server, ClientProcess() as client:
            body = {"image": image, "pull": "always", "command": ["true"]}

            def a() -> float:
                result = client.call("pull", base=server.base_url, body=body)
                docker_quiet("rmi", "-f", image)
                return float(result["elapsed"])

            def b() -> float:
                elapsed = docker("pull", image)[0]
                docker_quiet("rmi", "-f", image)
                return elapsed

            samples_a, samples_b = alternate(a, b, reps, label="pull")
    finally:
        docker_quiet("rmi", "-f", image)
        proxy.terminate()
        proxy.wait(10)
    ma, mb = median(samples_a), median(samples_b)
    ratio = ma / mb
    return [
        Row(
            "6",
            f"pull relay: 3 layers (6 MiB) via a {PROXY_RATE >> 20} MiB/s proxy, "
            "POST to last layer complete",
            seconds(ma),
            seconds(mb) + " (docker pull, same proxy)",
            f"{ratio:.2f}",
            "<= 1.1",
            ratio <= 1.1,
            {"pullrun": samples_a, "reference": samples_b},
        )
    ]


# -- 7 ---------------------------------------------------------------------------------


def _seed_history(data_dir: Path, template: dict[str, Any], events: bytes, count: int) -> float:
    """`count` finished runs cloned from a real one, written through RunStore.

    Each clone gets its own id, links, timestamps and a copy of the real
    run's (tiny) event file; one in ten is `failed` so status filters have
    something to find.
    """
    from backend.models import RunRecord
    from backend.storage.store import RunStore

    t0 = time.monotonic()
    store = RunStore(data_dir / "pullrun.db")
    events_dir = data_dir / "events"
    try:
        for n in range(count):
            run_id = secrets.token_hex(6)
            clone = dict(template)
            clone.update(
                id=run_id,
                container_id=secrets.token_hex(32),
                links={
                    "self": f"/api/runs/{run_id}",
                    "events": f"/api/runs/{run_id}/events",
                    "logs": f"/api/runs/{run_id}/logs",
                    "page": f"/runs/{run_id}",
                },
            )
            if n % 10 == 9:
                clone.update(status="failed", exit_code=1)
            store.insert(RunRecord.model_validate(clone))
            (events_dir / f"{run_id}.events").write_bytes(events)
    finally:
        store.close()
    return time.monotonic() - t0


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[94]


def history(cfg: Config) -> list[Row]:
    requests = cfg.reps(300, 100)
    root = Path(tempfile.mkdtemp(prefix="pullrun-bench-7-"))
    data_dir = root / "data"
    rows: list[Row] = []
    try:
        # One real run gives the record and event file the history is cloned from.
        with bench_server("7-seed", data_dir=data_dir) as server, ClientProcess() as client:
            body = {"image": IMAGE, "command": ["echo", "hello"]}
            result = client.call("run", base=server.base_url, body=body, expect=["hello"])
            run_id = result["run_id"]
            got = client.call("get", base=server.base_url, path=f"/api/runs/{run_id}", count=1)
        del got
        import orjson

        from backend.storage.store import RunStore

        store = RunStore(data_dir / "pullrun.db")
        record = store.get(run_id)
        store.close()
        assert record is not None
        events = (data_dir / "events" / f"{run_id}.events").read_bytes()
        seeded = _seed_history(
            data_dir,
            orjson.loads(orjson.dumps(record.model_dump(mode="json"))),
            events,
            HISTORY - 1,
        )
        log(f"  history: {HISTORY - 1} runs written through RunStore in {seeded:.1f} s")

        with (
            bench_server("7", data_dir=data_dir, profile=cfg.profile) as server,
            ClientProcess() as client,
        ):
            time.sleep(1.0)
            idle_start = proc_status(server.pid)
            latencies: dict[str, list[float]] = {}
            for path in ("/api/runs", "/"):
                client.call("get", base=server.base_url, path=path, count=20)  # warm-up
                got = client.call("get", base=server.base_url, path=path, count=requests)
                latencies[path] = got["latencies"]
                log(
                    f"  history: GET {path} median {median(got['latencies']) * 1000:.1f} ms, "
                    f"p95 {_p95(got['latencies']) * 1000:.1f} ms, {got['bytes']} bytes"
                )
            listing = client.call("get", base=server.base_url, path="/api/runs?limit=500", count=1)
            time.sleep(1.0)
            idle_end = proc_status(server.pid)
            del listing
        idle = max(idle_start["VmRSS"], idle_end["VmRSS"])
        rows.append(
            Row(
                "7",
                f"idle server RSS ({HISTORY:,} runs in the store)",
                mib(idle),
                "-",
                "-",
                "<= 120 MiB",
                idle <= 120 << 20,
                {"at_start": idle_start, "after_requests": idle_end},
            )
        )
        for path, what in (("/api/runs", "GET /api/runs (50 newest)"), ("/", "GET / (dashboard)")):
            p95 = _p95(latencies[path])
            rows.append(
                Row(
                    "7",
                    f"history: {what}, p95 of {requests}, {HISTORY:,} runs",
                    f"{p95 * 1000:.1f} ms",
                    "-",
                    "-",
                    "p95 <= 50 ms",
                    p95 <= 0.05,
                    {"latencies": latencies[path]},
                )
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


# -- 8 ---------------------------------------------------------------------------------


def storage(cfg: Config) -> list[Row]:
    runs = cfg.reps(2, 1)
    sizes: list[int] = []
    with bench_server("8", profile=cfg.profile) as server, ClientProcess() as client:
        for _ in range(runs):
            result = client.call("run", base=server.base_url, body=_seq_run(), clients=1, seq=SEQ)
            _check_seq_done(result)
            stat = (server.data_dir / "events" / f"{result['run_id']}.events").stat()
            sizes.append(max(stat.st_size, stat.st_blocks * 512))
    on_disk = statistics.median(sizes)
    ratio = on_disk / SEQ_BYTES
    return [
        Row(
            "8",
            "log store: event file of a 1,000,000-line run",
            mib(on_disk),
            mib(SEQ_BYTES) + " (raw text)",
            f"{ratio:.2f}",
            "<= 2.5",
            ratio <= 2.5,
            {"sizes": sizes},
        )
    ]


# -- 9 ---------------------------------------------------------------------------------

PAGE_LIMIT_MS = 200.0  # long tasks and click delays on the run page (benchmark 9)


def _max_ms(value: float) -> str:
    return f"{value:.0f} ms" if value else "none > 50 ms"


def page(cfg: Config) -> list[Row]:
    """The run page in Chromium while a 1,000,000-line run streams to it
    (tests/browser/million.py, as the stress test drives it): the longest
    main-thread task and the slowest click, both timed in the page."""
    import docker as docker_py
    import httpx
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    from tests.browser.helpers import (
        WAIT_MS,
        chromium_missing,
        launch_chromium,
        new_context,
        sign_in,
    )
    from tests.browser.million import DOM_CAP, LINES, last_line, watch_million_lines

    missing = chromium_missing()
    if missing:
        raise BenchError(missing)
    reps = cfg.reps(5, 2)
    warmup = 1
    watches: list[dict[str, Any]] = []
    api = docker_py.APIClient(version="auto")
    try:
        with (
            bench_server("9", profile=cfg.profile) as server,
            httpx.Client(base_url=server.base_url, timeout=30, headers=server.headers()) as client,
            sync_playwright() as pw,
        ):
            browser = launch_chromium(pw)
            for i in range(warmup + reps):
                context = new_context(browser, base_url=server.base_url)
                if server.token:
                    sign_in(context, token=server.token)
                try:
                    tab = context.new_page()
                    tab.set_default_timeout(WAIT_MS)
                    watch = watch_million_lines(tab, client, api)
                    last = last_line(tab)
                finally:
                    context.close()
                figures = watch.figures()
                if last != (LINES, "stdout", str(LINES)) or not (
                    0 < watch.max_dom_lines <= DOM_CAP
                ):
                    raise BenchError(f"the page ended at {last}, {watch.max_dom_lines} DOM lines")
                tag = "warm-up" if i < warmup else f"{i - warmup + 1}/{reps}"
                log(
                    f"  page {tag}: streamed {figures['streaming_ms']} ms, long task max "
                    f"{figures['long_task_ms_max']} ms ({figures['long_tasks_during_stream']}),"
                    f" click max {figures['click_delay_ms_max']} ms ({figures['clicks']}),"
                    f" round trip p95 {figures['round_trip_ms_p95']} ms,"
                    f" heartbeat late max {figures['heartbeat_late_ms_max']} ms"
                )
                if i >= warmup:
                    watches.append(
                        figures
                        | {
                            "round_trips": watch.round_trips,
                            "click_delays": watch.click_delays,
                            "long_tasks": watch.long_tasks,
                        }
                    )
            browser.close()
    except PlaywrightError as exc:
        raise BenchError(f"Chromium: {exc}".splitlines()[0]) from exc
    finally:
        api.close()
    long_task = median([w["long_task_ms_max"] for w in watches])
    click = median([w["click_delay_ms_max"] for w in watches])
    trips = [t for w in watches for t in w["round_trips"]]
    trip_p95 = statistics.quantiles(trips, n=20)[-1]
    what = f"run page: {LINES:,} lines streaming in Chromium"
    return [
        Row(
            "9",
            f"{what}, longest main-thread task (max per run)",
            _max_ms(long_task),
            "-",
            "-",
            f"< {PAGE_LIMIT_MS:.0f} ms",
            long_task < PAGE_LIMIT_MS,
            {"runs": watches},
        ),
        Row(
            "9",
            f"{what}, slowest click, input event to handler (max per run)",
            f"{click:.0f} ms",
            "-",
            "-",
            f"< {PAGE_LIMIT_MS:.0f} ms",
            click < PAGE_LIMIT_MS,
            {"clicks": [w["click_delays"] for w in watches]},
        ),
        Row(
            "9",
            f"{what}, page.evaluate round trip from Python, p95 of {len(trips)}",
            f"{trip_p95:.0f} ms",
            "-",
            "-",
            "information",
            True,
            {"round_trips": [w["round_trips"] for w in watches]},
        ),
    ]


# -- 10 --------------------------------------------------------------------------------

BUSYBOX = f"{REGISTRY}/pullrun/busybox:latest"  # on every engine: pulled before timing


def _engines_file(root: Path, slots: dict[str, int]) -> Path:
    """An engines file naming `local` and engine 2 (scripts/engines.sh)."""
    from tests.support.engines import EngineSet, write_engines_file

    tables = EngineSet.from_env().tables(slots=slots)
    return write_engines_file(root / "engines.toml", {n: tables[n] for n in slots})


def _on_both(*args: str) -> None:
    """The docker CLI on the default engine and on engine 2."""
    two = os.environ.get("PULLRUN_TEST_ENGINE2_HOST")
    if not two:
        raise BenchError("PULLRUN_TEST_ENGINE2_HOST is not set: run `make bench`")
    docker(*args)
    docker("-H", two, *args)


def placement(cfg: Config) -> list[Row]:
    """Two engines of 4 slots against one of 8 for 40 `sleep 2` runs; then 20
    runs of an image only one of the two engines has: none may pull."""
    import httpx

    reps = cfg.reps(3, 1)
    count = 40
    body = {"image": BUSYBOX, "command": ["sh", "-c", "sleep 2; echo done"]}
    root = Path(tempfile.mkdtemp(prefix="pullrun-bench-10-"))
    two = os.environ.get("PULLRUN_TEST_ENGINE2_HOST", "")
    layers = f"{REGISTRY}/{LAYERS}"
    try:
        _on_both("pull", "-q", BUSYBOX)
        spread = _engines_file(root, {"local": 4, "two": 4})
        with (
            bench_server("10-two", profile=cfg.profile, engines_file=spread) as pair,
            bench_server("10-one", profile=cfg.profile, max_concurrent_runs=8) as single,
            ClientProcess() as client,
        ):

            def over(server: BenchServer) -> Callable[[], float]:
                def go() -> float:
                    result = client.call(
                        "many", base=server.base_url, body=body, count=count, expect=["done"]
                    )
                    return float(result["elapsed"])

                return go

            samples_a, samples_b = alternate(over(pair), over(single), reps, label="placement")

            # The image only engine 2 has, run one after another: each goes there.
            docker("-H", two, "pull", "-q", layers)
            docker_quiet("rmi", "-f", layers)
            runs = 20
            pulled: list[str] = []
            elsewhere: list[str] = []
            t0 = time.monotonic()
            with httpx.Client(base_url=pair.base_url, headers=pair.headers()) as http:
                for _ in range(runs):
                    result = client.call(
                        "run", base=pair.base_url, body={"image": layers, "command": ["true"]}
                    )
                    record = http.get(f"/api/runs/{result['run_id']}").json()
                    if record["status"] != "succeeded":
                        raise BenchError(f"run {record['id']} ended {record['status']}")
                    if (record.get("pull") or {}).get("pulled"):
                        pulled.append(record["id"])
                    if record.get("engine") != "two":
                        elsewhere.append(record["id"])
            image_runs = time.monotonic() - t0
    finally:
        docker_quiet("rmi", "-f", layers)
        docker_quiet("rmi", "-f", BUSYBOX)  # the tests expect no local copy (images.sh)
        if two:
            docker_quiet("-H", two, "rmi", "-f", layers)
        shutil.rmtree(root, ignore_errors=True)
    ma, mb = median(samples_a), median(samples_b)
    ratio = ma / mb
    return [
        Row(
            "10",
            f"placement: {count} runs of sleep 2 over two engines of 4 slots",
            seconds(ma),
            seconds(mb) + " (pullrun, one engine of 8 slots)",
            f"{ratio:.2f}",
            "<= 1.2",
            ratio <= 1.2,
            {"pullrun": samples_a, "reference": samples_b},
        ),
        Row(
            "10",
            f"placement: {runs} runs of an image only one of two engines has",
            f"{len(pulled)} pulls, {len(elsewhere)} elsewhere",
            "-",
            "-",
            "no pull",
            not pulled and not elsewhere,
            {"pulled": pulled, "elsewhere": elsewhere, "seconds": image_runs},
        ),
    ]


# -- 11 --------------------------------------------------------------------------------

SWARM_RUNS = 20
# Each task's limits and reservations, the same on both sides: pullrun's
# defaults (1 CPU, 1g) would let 2 tasks at a time onto each 2-CPU node.
SWARM_CPUS, SWARM_MEMORY, SWARM_PIDS = 0.1, "64m", 1024


def swarm(cfg: Config) -> list[Row]:
    """20 `echo hello` runs at once through pullrun on the swarm of
    scripts/swarm.sh, against 20 jobs made, read and removed by the docker CLI
    on the same swarm, 20 at a time on both sides."""
    from tests.support.swarm import Swarm

    cluster = Swarm.from_env()
    if cluster is None:
        raise BenchError("PULLRUN_TEST_SWARM_HOST is not set: run `make bench`")
    reps = cfg.reps(5, 2)
    count = SWARM_RUNS
    tag = f"11-{secrets.token_hex(4)}"  # a container label of this benchmark's tasks
    body = {
        "image": BUSYBOX,
        "command": ["echo", "hello"],
        "cpus": SWARM_CPUS,
        "memory": SWARM_MEMORY,
        "pids_limit": SWARM_PIDS,
        "labels": {"bench": tag},
    }
    root = Path(tempfile.mkdtemp(prefix="pullrun-bench-11-"))

    def tidy() -> None:
        # The engine (20.10) keeps the exited container of a removed job's task
        # (moby/moby#42789): removed after each sample, outside the clock.
        for host in cluster.hosts:
            ids = cluster.cli("ps", "-aq", "--filter", f"label=bench={tag}", host=host).split()
            if ids:
                docker_quiet("-H", host, "rm", "-f", *ids)

    try:
        engines = cluster.engines_file(root / "engines.toml", max_concurrent_runs=count)
        with (
            bench_server("11", profile=cfg.profile, engines_file=engines) as server,
            ClientProcess() as client,
        ):

            def a() -> float:
                result = client.call(
                    "many", base=server.base_url, body=body, count=count, expect=["hello"]
                )
                if result["errors"]:
                    raise BenchError(f"pullrun on the swarm: {result['errors'][:3]}")
                tidy()
                return float(result["elapsed"])

            def one(_: int) -> bytes:
                manager = ("-H", cluster.manager)
                service = docker(
                    *manager,
                    "service",
                    "create",
                    "-q",
                    "--mode",
                    "replicated-job",
                    "--restart-condition",
                    "none",
                    "--limit-cpu",
                    str(SWARM_CPUS),
                    "--reserve-cpu",
                    str(SWARM_CPUS),
                    "--limit-memory",
                    SWARM_MEMORY,
                    "--reserve-memory",
                    SWARM_MEMORY,
                    "--limit-pids",
                    str(SWARM_PIDS),
                    "--container-label",
                    f"bench={tag}",
                    BUSYBOX,
                    "echo",
                    "hello",
                    stdout=subprocess.PIPE,
                )[2]
                service_id = service.decode().strip()
                output = docker(
                    *manager, "service", "logs", "--raw", service_id, stdout=subprocess.PIPE
                )[2]
                docker(*manager, "service", "rm", service_id)
                return output

            def b() -> float:
                t0 = time.monotonic()
                with ThreadPoolExecutor(count) as pool:
                    outputs = list(pool.map(one, range(count)))
                elapsed = time.monotonic() - t0
                bad = [o for o in outputs if o != b"hello\n"]
                if bad:
                    raise BenchError(f"{len(bad)} swarm jobs printed {bad[0]!r}")
                tidy()
                return elapsed

            samples_a, samples_b = alternate(a, b, reps, label="swarm")
    finally:
        tidy()
        shutil.rmtree(root, ignore_errors=True)
    ma, mb = median(samples_a), median(samples_b)
    ratio = ma / mb
    return [
        Row(
            "11",
            f"swarm: {count} echo runs at once on a two-node swarm",
            seconds(ma),
            seconds(mb) + f" ({count} CLI jobs: service create, logs, rm; {count} at a time)",
            f"{ratio:.2f}",
            "<= 1.25; no errors",
            ratio <= 1.25,
            {"pullrun": samples_a, "reference": samples_b},
        )
    ]


BENCHMARKS: dict[str, Callable[[Config], list[Row]]] = {
    "1": relay,
    "2": fanout,
    "3": latency,
    "4": concurrency,
    "5": replay,
    "6": pull,
    "7": history,
    "8": storage,
    "9": page,
    "10": placement,
    "11": swarm,
    "12": cli,  # bench/cli_bench.py
    "13": bigpage,  # bench/bigpage_bench.py
    "14": viewers,  # bench/viewers_bench.py
    "15": line_latency,  # bench/latency_bench.py
    "16": heavy,  # bench/heavy_bench.py
    "17": long_history,  # bench/history_bench.py
    "18": late,  # bench/late_bench.py
}
