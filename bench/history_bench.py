"""Benchmark 17 (issue 12's 13): a long history, 1,000,000 finished runs in the store.

The history is cloned from one real run, as benchmark 7 clones its 10,000:
each clone has its own id, container id and links, one in ten is `failed`
(exit code 1), the rest are the real run (`succeeded`). How it is written,
so that `make bench` can afford it:

- Records: one `executemany` in a single transaction straight into the
  schema `backend.storage.store.RunStore` creates (RunStore opens the file
  first, so the tables and indexes are the server's own). The JSON of each
  clone is the real record's JSON (RunStore's encoding) with the id,
  container id and links put in; a sample of the clones is checked to
  validate as a RunRecord and re-encode to the same bytes.
- Event files: those of the real run for each clone, `events/<id>.events`
  (and `<id>.idx`, its event index, where the server writes one), each a
  hard link to a copy of the real run's file (a copy per 60,000 links: ext4
  allows 65,000 links to a file). The server sees a million runs' files of
  the real size; the disk holds a few copies. The table reports both.

Then, on the same data dir (kept between the repetitions, deleted at the
end), each repetition starts the server and measures: process start to
`/readyz` 200, idle RSS (a second after, and once the server is idle after
the requests), and the p95 of `GET /api/runs` (the first page; one status;
several statuses; a page 500,000 runs back, by cursor) and `GET /` (the
dashboard). Every answer's content is checked once per start against the
ids written. The reference, alternated with it start by start: the same on
a store of 1,000 runs cloned from the same run.

The first start finds no total of the event files saved by a clean stop
(as after a crash or an upgrade): the server counts them in the background,
during the first repetition's requests. The later starts take the total the
previous one saved; the log says whether each stop left it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from . import driver
from .driver import (
    TOKENS,
    BenchError,
    BenchServer,
    ClientProcess,
    Row,
    bench_server,
    cpu_seconds,
    log,
    median,
    mib,
    proc_status,
    start_py_spy,
)

if TYPE_CHECKING:
    from .benchmarks import Config

IMAGE = "pullrun/busybox:base"  # present locally: no pull
RUNS = 1_000_000  # runs in the store, the real one included
REFERENCE = 1_000  # runs in the reference store
DEEP = 500_000  # the cursor page: this many runs back from the newest
LINKS_PER_FILE = 60_000  # ext4: at most 65,000 links to one inode
FAILED_EVERY = 10  # one clone in ten is `failed`
START_LIMIT = 5.0  # seconds, process start to /readyz 200
RSS_LIMIT = 150 << 20
P95_LIMIT = 0.050
SEVERAL = ("failed", "error", "canceled", "timed_out")  # "what went wrong"
_ID_MARK = "i" * 12
_CID_MARK = "c" * 64
_ID_BYTES, _CID_BYTES = _ID_MARK.encode(), _CID_MARK.encode()


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[94]


def _new_ids(count: int, taken: set[str]) -> list[str]:
    """`count` new run ids of the server's form (12 hex digits), all distinct."""
    digits = os.urandom(6 * count).hex()
    ids = [digits[12 * n : 12 * n + 12] for n in range(count)]
    seen = set(taken)
    for n, run_id in enumerate(ids):
        while run_id in seen:  # (rare: 48 random bits)
            run_id = ids[n] = secrets.token_hex(6)
        seen.add(run_id)
    return ids


def _templates(record: dict[str, Any]) -> dict[str, bytes]:
    """The real record's JSON, with marks where each clone's own values go:
    one for `succeeded` (the real run) and one for `failed`."""
    out: dict[str, bytes] = {}
    for status in ("succeeded", "failed"):
        clone = dict(record)
        clone.update(
            id=_ID_MARK,
            container_id=_CID_MARK,
            links={
                "self": f"/api/runs/{_ID_MARK}",
                "events": f"/api/runs/{_ID_MARK}/events",
                "logs": f"/api/runs/{_ID_MARK}/logs",
                "page": f"/runs/{_ID_MARK}",
            },
        )
        if status == "failed":
            clone.update(status="failed", exit_code=1)
        out[status] = orjson.dumps(clone)
    return out


def _clone(template: bytes, run_id: str, container_id: str) -> bytes:
    return template.replace(_ID_BYTES, run_id.encode()).replace(_CID_BYTES, container_id.encode())


def _status(n: int) -> str:
    return "failed" if n % FAILED_EVERY == FAILED_EVERY - 1 else "succeeded"


def _link_events(data_dir: Path, real_id: str, files: dict[str, bytes], ids: list[str]) -> float:
    """`events/<id><suffix>` for each id and each of the real run's files
    (`.events`, and `.idx` when the server writes one): hard links to a copy
    (a new copy every LINKS_PER_FILE); the seconds it took."""
    t0 = time.monotonic()
    folder = os.open(data_dir / "events", os.O_RDONLY | os.O_DIRECTORY)
    try:
        sources = {suffix: f"{real_id}{suffix}" for suffix in files}
        for n, run_id in enumerate(ids):
            for suffix, content in files.items():
                name = f"{run_id}{suffix}"
                if n % LINKS_PER_FILE == 0:
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=folder)
                    try:
                        os.write(fd, content)
                    finally:
                        os.close(fd)
                    sources[suffix] = name
                else:
                    os.link(sources[suffix], name, src_dir_fd=folder, dst_dir_fd=folder)
    finally:
        os.close(folder)
    return time.monotonic() - t0


def seed(
    data_dir: Path, record: dict[str, Any], files: dict[str, bytes], count: int
) -> dict[str, Any]:
    """Write `count` clones of `record` (and its `files`, by suffix) into `data_dir`;
    their ids, oldest first, and the seconds each part took."""
    from backend.models import RunRecord
    from backend.storage.store import RunStore

    templates = _templates(record)
    for status, template in templates.items():  # the bytes RunStore.insert would write
        check = _clone(template, "0123456789ab", "f" * 64)
        model = RunRecord.model_validate_json(check)
        if RunStore._encode(model) != check or model.status.value != status:
            raise BenchError(f"a {status} clone does not re-encode to its own bytes")
    t0 = time.monotonic()
    ids = _new_ids(count, {record["id"]})
    container_ids = os.urandom(32 * count).hex()
    created_at = record["created_at"]

    def rows() -> Iterator[tuple[str, str, str, bytes]]:
        for n, run_id in enumerate(ids):
            status = _status(n)
            yield (
                run_id,
                status,
                created_at,
                _clone(templates[status], run_id, container_ids[64 * n : 64 * n + 64]),
            )

    # The event files, in a process of their own meanwhile (2 cores: one each).
    pool = ProcessPoolExecutor(1)
    linking = pool.submit(_link_events, data_dir, record["id"], files, ids)
    db_path = data_dir / "pullrun.db"
    RunStore(db_path).close()  # the server's schema (tables and indexes) first
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        # A bulk load: no WAL, no fsync, a big cache; WAL again at the end (as
        # the server leaves it), so the server opens a checkpointed database.
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-1048576")  # 1 GiB
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO runs (id, status, created_at, record) VALUES (?, ?, ?, ?)", rows()
        )
        db.execute("COMMIT")
        db.execute("PRAGMA journal_mode=WAL")
    finally:
        db.close()
        t_db = time.monotonic() - t0
        try:
            t_events = linking.result()
        finally:
            pool.shutdown()

    # A sample of the clones as the store reads them back.
    store = RunStore(db_path)
    try:
        for n in (0, 1, FAILED_EVERY - 1, count // 2, count - 1):
            got = store.get(ids[n])
            if got is None or got.id != ids[n] or got.status.value != _status(n):
                raise BenchError(f"clone {n} ({ids[n]}) reads back as {got}")
    finally:
        store.close()
    return {"ids": ids, "db_seconds": t_db, "events_seconds": t_events}


def sizes(data_dir: Path) -> dict[str, int]:
    """The store on disk: the database (+ -wal, -shm), the event files as the
    server counts them (the sum of their sizes) and as the disk holds them
    (each inode once, in blocks), and the events folder's own size."""
    db = 0
    for name in ("pullrun.db", "pullrun.db-wal", "pullrun.db-shm"):
        path = data_dir / name
        if path.exists():
            db += path.stat().st_size
    apparent = 0
    inodes: dict[int, int] = {}
    files = 0
    with os.scandir(data_dir / "events") as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            files += 1
            apparent += st.st_size
            inodes[st.st_ino] = st.st_blocks * 512
    return {
        "db_bytes": db,
        "event_files": files,
        "events_bytes": apparent,
        "events_disk_bytes": sum(inodes.values()),
        "events_dir_bytes": (data_dir / "events").stat().st_size,
    }


def _real_run(data_dir: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """One real run (echo hello) on a fresh data dir: its record and its files
    in events/ (by suffix: `.events`, and `.idx` where the server writes one)."""
    from backend.storage.store import RunStore

    with bench_server("17-seed", data_dir=data_dir) as server, ClientProcess() as client:
        body = {"image": IMAGE, "command": ["echo", "hello"]}
        result = client.call("run", base=server.base_url, body=body, expect=["hello"])
        run_id = result["run_id"]
    store = RunStore(data_dir / "pullrun.db")
    try:
        record = store.get(run_id)
    finally:
        store.close()
    if record is None or record.status.value != "succeeded":
        raise BenchError(f"the real run {run_id} ended {record}")
    files = {
        path.name[len(run_id) :]: path.read_bytes()
        for path in (data_dir / "events").iterdir()
        if path.name.startswith(run_id)
    }
    if ".events" not in files:
        raise BenchError(f"the real run {run_id} has no event file: {sorted(files)}")
    return orjson.loads(RunStore._encode(record)), files


def _wait_ready(server: BenchServer, t0: float) -> float:
    """Seconds from `t0` (the process started) to /readyz 200."""
    deadline = t0 + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(server.base_url + "/readyz", timeout=5).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise BenchError(f"/readyz did not answer 200 in 60 s: {server.log()}")


def _wait_idle(pid: int, limit: float = 120.0) -> float:
    """Wait until the server uses under 5% of a core over half a second; the
    seconds that took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        c0 = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - c0 < 0.025:
            return time.monotonic() - t0
    raise BenchError(f"the server (pid {pid}) was still busy after {limit:g} s")


def _paths(ids: list[str], older: list[str]) -> dict[str, tuple[str, list[str], str | None]]:
    """What each measured request asks for, in a store of the clones `ids`
    (oldest first) after the runs `older` (succeeded): (path, the ids its
    page must list, newest first, the next cursor it must give; None: not
    checked). The cursor page is DEEP runs back, or half way in a small store."""
    newest_first = [*reversed(ids), *reversed(older)]
    statuses = [_status(len(ids) - 1 - i) for i in range(len(ids))] + ["succeeded"] * len(older)
    failed = [
        run_id for run_id, s in zip(newest_first[:1000], statuses, strict=False) if s == "failed"
    ][:50]
    deep = min(DEEP, len(newest_first) // 2)
    return {
        "first page": ("/api/runs", newest_first[:50], newest_first[49]),
        "status=failed": ("/api/runs?status=failed", failed, failed[-1]),
        "several statuses": (
            "/api/runs?" + "&".join(f"status={s}" for s in SEVERAL),
            failed,
            failed[-1],
        ),
        "a cursor deep in the chain": (
            f"/api/runs?cursor={newest_first[deep - 1]}",
            newest_first[deep : deep + 50],
            newest_first[deep + 49],
        ),
        "dashboard": ("/", newest_first[:50], None),
    }


def _check(server: BenchServer, what: str, path: str, want: list[str], cursor: str | None) -> None:
    headers = {"Accept": "text/html", **server.headers()}
    got = httpx.get(server.base_url + path, headers=headers, timeout=30)
    if got.status_code != 200:
        raise BenchError(f"{what}: GET {path} answered {got.status_code}")
    if path == "/":
        positions = [got.text.find(f"/runs/{run_id}") for run_id in want]
        if min(positions) < 0 or positions != sorted(positions):
            raise BenchError(f"{what}: the dashboard does not list the 50 newest runs in order")
        return
    body = got.json()
    listed = [run["id"] for run in body["runs"]]
    if listed != want or body["next_cursor"] != cursor:
        raise BenchError(
            f"{what}: GET {path} listed {listed[:3]}... cursor {body['next_cursor']}, "
            f"not {want[:3]}... cursor {cursor}"
        )


@dataclass
class Store:
    """A seeded data dir and what is measured on it, start after start."""

    name: str
    data_dir: Path
    paths: dict[str, tuple[str, list[str], str | None]]
    starts: list[float] = field(default_factory=list)
    idle: list[int] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)

    def measure(self, cfg: Config, rep: int, requests: int, log_dir: Path) -> None:
        """Start a server on it, then: /readyz, idle RSS, every answer checked
        once, `requests` GETs of each path; stop it (cleanly)."""
        server = BenchServer(self.data_dir, root=driver.SERVER_ROOT)
        server.log_path = log_dir / f"server-{self.name}-{rep}.log"
        server.token = server.create_token("admin", f"bench-17-{secrets.token_hex(3)}")
        TOKENS[server.base_url] = server.token
        spy = None
        try:
            t_start = time.monotonic()
            server.start()  # (its token exists: nothing else runs first)
            self.starts.append(_wait_ready(server, t_start))
            if cfg.profile is not None and rep == 0 and self.name == "history":
                spy = start_py_spy(server.pid, cfg.profile / "17.txt")
            time.sleep(1.0)
            at_start = proc_status(server.pid)["VmRSS"]
            for what, (path, want, cursor) in self.paths.items():
                _check(server, what, path, want, cursor)
            with ClientProcess() as client:
                for what, (path, _, _) in self.paths.items():
                    client.call("get", base=server.base_url, path=path, count=10)  # warm-up
                    got = client.call("get", base=server.base_url, path=path, count=requests)
                    self.latencies.setdefault(what, []).extend(got["latencies"])
            settled = _wait_idle(server.pid)  # (the count of events/ at a first start)
            after = proc_status(server.pid)["VmRSS"]
            self.idle.append(max(at_start, after))
            log(
                f"  {self.name} {rep + 1}: start to /readyz {self.starts[-1]:.2f} s, "
                f"idle RSS {mib(at_start)} / {mib(after)}; p95 "
                + ", ".join(
                    f"{what} {_p95(lat[-requests:]) * 1000:.1f} ms"
                    for what, lat in self.latencies.items()
                )
                + f"; idle {settled:.1f} s after; load {os.getloadavg()[0]:.1f}"
            )
        finally:
            server.stop()
            if spy is not None:
                spy.wait(30)
        from backend.storage.space import COUNT_FILE

        saved = (self.data_dir / COUNT_FILE).exists()
        log(f"  {self.name} {rep + 1}: stopped; the events total saved for the next start: {saved}")


def history(cfg: Config) -> list[Row]:
    starts = cfg.reps(3, 2)  # the first counts events/, the others do not
    requests = cfg.reps(100, 40)  # per path and start: p95 over starts * requests
    root = Path(tempfile.mkdtemp(prefix="pullrun-bench-17-"))
    rows: list[Row] = []
    try:
        t0 = time.monotonic()
        record, files = _real_run(root / "data")
        seeded = seed(root / "data", record, files, RUNS - 1)
        log(
            f"  history: {RUNS:,} runs: records {seeded['db_seconds']:.1f} s (one transaction), "
            f"event files {seeded['events_seconds']:.1f} s (hard links, another process); "
            f"{time.monotonic() - t0:.1f} s with the real run; load {os.getloadavg()[0]:.1f}"
        )
        disk = sizes(root / "data")
        log(f"  history: store {disk}")
        # The reference: the same, REFERENCE runs (cloned from the same run).
        (root / "reference" / "events").mkdir(parents=True)
        small = seed(root / "reference", record, files, REFERENCE)
        # The store at rest on disk before a server starts (else its first fsync
        # waits for the gigabytes just written).
        t_sync = time.monotonic()
        os.sync()
        log(f"  history: sync {time.monotonic() - t_sync:.1f} s")
        big = Store("history", root / "data", _paths(seeded["ids"], [record["id"]]))
        small_store = Store("reference", root / "reference", _paths(small["ids"], []))
        for rep in range(starts):
            big.measure(cfg, rep, requests, root)
            small_store.measure(cfg, rep, requests, root)
    finally:
        t_rm = time.monotonic()
        shutil.rmtree(root, ignore_errors=True)
        log(f"  history: data dir deleted in {time.monotonic() - t_rm:.1f} s")

    # The first start has no total saved by a clean stop: it counts events/ in
    # the background (as after a crash or an upgrade); the others take the total.
    h, r = big, small_store
    ref = f" ({REFERENCE:,} runs)"

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "-"

    first, restarts = h.starts[0], median(h.starts[1:])
    rows.append(
        Row(
            "17",
            f"long history: first start to /readyz 200, {RUNS:,} runs "
            "(events/ counted in the background)",
            f"{first:.2f} s",
            f"{r.starts[0]:.2f} s" + ref,
            ratio(first, r.starts[0]),
            f"<= {START_LIMIT:g} s",
            first <= START_LIMIT,
            {"starts": h.starts, "reference": r.starts},
        )
    )
    rows.append(
        Row(
            "17",
            f"long history: restart to /readyz 200, {RUNS:,} runs "
            f"(the total saved at the clean stop; median of {len(h.starts) - 1})",
            f"{restarts:.2f} s",
            f"{median(r.starts[1:]):.2f} s" + ref,
            ratio(restarts, median(r.starts[1:])),
            f"<= {START_LIMIT:g} s",
            restarts <= START_LIMIT,
            {"starts": h.starts, "reference": r.starts},
        )
    )
    rss = max(h.idle)
    rows.append(
        Row(
            "17",
            f"long history: idle server RSS, {RUNS:,} runs (max of {starts} starts)",
            mib(rss),
            mib(max(r.idle)) + ref,
            ratio(rss, max(r.idle)),
            f"<= {mib(RSS_LIMIT)}",
            rss <= RSS_LIMIT,
            {"idle_rss": h.idle, "reference": r.idle},
        )
    )
    for what, (path, _, _) in h.paths.items():
        p95, p95_ref = _p95(h.latencies[what]), _p95(r.latencies[what])
        label = f"a cursor {DEEP:,} runs back" if what == "a cursor deep in the chain" else what
        rows.append(
            Row(
                "17",
                f"long history: GET {path.split('?cursor=')[0]} ({label}), "
                f"p95 of {len(h.latencies[what])} over {starts} starts",
                f"{p95 * 1000:.1f} ms",
                f"{p95_ref * 1000:.1f} ms" + ref,
                ratio(p95, p95_ref),
                f"p95 <= {P95_LIMIT * 1000:.0f} ms",
                p95 <= P95_LIMIT,
                {
                    "latencies": h.latencies[what],
                    "reference": r.latencies[what],
                    "median": median(h.latencies[what]),
                },
            )
        )
    rows.append(
        Row(
            "17",
            f"long history: store size, {RUNS:,} runs (database + wal; event files)",
            f"db {mib(disk['db_bytes'])}; events {mib(disk['events_bytes'])} "
            f"in {disk['event_files']:,} files (hard links: {mib(disk['events_disk_bytes'])} "
            f"on disk, the folder {mib(disk['events_dir_bytes'])})",
            "-",
            "-",
            "reported",
            True,
            disk,
        )
    )
    return rows
