"""Benchmark 13 (issue 12): big log, instant page.

A finished run at `max_log_bytes` (64 MiB of output kept, the default) is
opened as a person opens it: the run page (`GET /runs/{id}`, HTML), the JSON
snapshot the page starts from (`GET /api/runs/{id}/snapshot`) and the run's
record (`GET /api/runs/{id}`). Each is timed against the same request for a
10-line run, a new connection per request, from the client process
(bench/client.py `get`), in rounds that ask every route of both runs (the
big one first, then the small one first: ABBA): ratio <= 3, median of 20.

The first request after a server restart is timed apart (its own rows): the
server is restarted on the same data dir before each such request, so that
request is the very first the server answers (nothing of either run read yet
but the OS page cache). Each route is timed that way for both runs.

One more row, information: the page's "load earlier" (`GET
/api/runs/{id}/lines?before=N&limit=1000`) from the middle of the big log
against the same just before its tail: a page costs the same wherever it is.

Every answer is checked once outside the clock: the page embeds the snapshot,
the snapshot holds the newest kept lines (numbered without gap, each the
line the container printed) and says where they start, the run's `done` says
the output was capped and how many lines were dropped, and the page's "load
earlier" (`GET /api/runs/{id}/lines?before=N`) pages back without gap or
repeat, from the tail and from the start of the log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from .driver import (
    BenchError,
    BenchServer,
    ClientProcess,
    Row,
    bench_server,
    log,
    median,
)

if TYPE_CHECKING:
    from .benchmarks import Config

IMAGE = "pullrun/busybox:base"  # present locally: no pull
LINE = "0123456789" * 7  # 70 characters: 71 bytes a line with its newline
PRINTED = 70_000_000  # bytes the big run prints (`head -c`): past max_log_bytes
MAX_LOG_BYTES = 64 << 20  # the default setting
BIG_COMMAND = ["sh", "-c", f"yes {LINE} | head -c {PRINTED}"]
SMALL_COMMAND = ["seq", "1", "10"]
# What the big run must come to: whole lines of 71 bytes, and the 35 bytes
# `head -c` cut the last one to (an unterminated line, counted and dropped).
PRINTED_LINES = -(-PRINTED // (len(LINE) + 1))  # 985,916
KEPT_LINES = MAX_LOG_BYTES // (len(LINE) + 1)  # 945,195: the whole lines that fit
TAIL = 1000  # lines the page shows at first (backend/web/pages.py TAIL_LINES)
PAGE = 1000  # lines per "load earlier" (static/js/run.js)
RATIO = 3.0

SNAPSHOT = re.compile(r'<script type="application/json" id="snapshot">(.*?)</script>', re.DOTALL)


def _routes(run_id: str) -> dict[str, str]:
    return {
        "page": f"/runs/{run_id}",
        "snapshot": f"/api/runs/{run_id}/snapshot",
        "record": f"/api/runs/{run_id}",
    }


def _lines(run_id: str, before: int) -> str:
    return f"/api/runs/{run_id}/lines?before={before}&limit={PAGE}"


WHAT = {
    "page": "GET /runs/{id} (HTML page)",
    "snapshot": "GET /api/runs/{id}/snapshot (the page's JSON)",
    "record": "GET /api/runs/{id} (record)",
}


# -- the runs --------------------------------------------------------------------------


def _make_runs(server: BenchServer, client: ClientProcess) -> tuple[str, str]:
    """The big run and the 10-line run, both checked: (big id, small id)."""
    big = client.call("run", base=server.base_url, body={"image": IMAGE, "command": BIG_COMMAND})
    done = big["parser"]["done"]
    expected = {
        "status": "succeeded",
        "log_lines": PRINTED_LINES,
        "log_bytes": PRINTED,
        "dropped_lines": PRINTED_LINES - KEPT_LINES,
        # the last line, cut short by `head -c`, counts one byte for its end (the
        # stream's end closes it): docs/api.md `done`
        "dropped_bytes": PRINTED - KEPT_LINES * (len(LINE) + 1) + 1,
    }
    got = {k: done.get(k) for k in expected}
    if got != expected or big["parser"]["lines"] != KEPT_LINES:
        raise BenchError(
            f"the big run {big['run_id']} ended {got}, {big['parser']['lines']} lines streamed;"
            f" expected {expected}, {KEPT_LINES} lines streamed"
        )
    log(
        f"  bigpage: the big run printed {PRINTED:,} bytes in {big['elapsed']:.1f} s:"
        f" {KEPT_LINES:,} lines kept, {expected['dropped_lines']:,} dropped (capped at"
        f" max_log_bytes)"
    )
    small = client.call(
        "run",
        base=server.base_url,
        body={"image": IMAGE, "command": SMALL_COMMAND},
        expect=[str(i) for i in range(1, 11)],
    )
    return big["run_id"], small["run_id"]


# -- content checks (outside the clock) ------------------------------------------------


def _get(http: httpx.Client, path: str, **headers: str) -> httpx.Response:
    response = http.get(path, headers=headers)
    if response.status_code != 200:
        raise BenchError(f"GET {path}: {response.status_code} {response.text[:200]!r}")
    return response


def _check_tail(snap: dict[str, Any], kept: int, text: Callable[[int], str]) -> None:
    lines = snap["lines"]
    numbers = [line["n"] for line in lines]
    want = list(range(max(1, kept - TAIL + 1), kept + 1))
    if numbers != want:
        raise BenchError(f"snapshot lines {numbers[:2]}..{numbers[-2:]}, expected {want[:1]}..")
    bad = [line for line in lines if line["text"] != text(line["n"]) or line["partial"]]
    if bad:
        raise BenchError(f"snapshot line {bad[0]['n']} is {bad[0]!r}")
    if snap["total_lines"] != kept:
        raise BenchError(f"snapshot total_lines {snap['total_lines']}, expected {kept}")
    new_fields = "first_line" in snap or "earlier" in snap
    if new_fields and (snap.get("first_line"), snap.get("earlier")) != (want[0], want[0] > 1):
        raise BenchError(
            f"snapshot first_line {snap.get('first_line')}, earlier {snap.get('earlier')};"
            f" expected {want[0]}, {want[0] > 1}"
        )


def _check_paging(http: httpx.Client, run_id: str, before: int, pages: int) -> None:
    """`pages` pages of "load earlier" from line `before` down: contiguous."""
    for _ in range(pages):
        path = f"/api/runs/{run_id}/lines?before={before}&limit={PAGE}"
        body = _get(http, path).json()
        numbers = [line["n"] for line in body["lines"]]
        want = list(range(max(1, before - PAGE), before))
        if numbers != want or body["first"] != (want[0] if want else before):
            raise BenchError(f"{path}: lines {numbers[:1]}..{numbers[-1:]}, first {body['first']}")
        if any(line["text"] != LINE for line in body["lines"]):
            raise BenchError(f"{path}: a line is not the one printed")
        if body["earlier"] != (want[0] > 1):
            raise BenchError(f"{path}: earlier {body['earlier']}")
        before = body["first"]
        if not body["earlier"]:
            break


def _check_answers(server: BenchServer, big: str, small: str) -> bool:
    """Every route's answer, once; False when the snapshot route is missing."""
    with server.client() as http:
        has_snapshot = http.get(_routes(big)["snapshot"]).status_code != 404
        for run_id, kept, text, total in (
            (big, KEPT_LINES, lambda n: LINE, PRINTED_LINES),
            (small, 10, str, 10),
        ):
            routes = _routes(run_id)
            page = _get(http, routes["page"], accept="text/html").text
            match = SNAPSHOT.search(page)
            if match is None:
                raise BenchError(f"{routes['page']}: no embedded snapshot")
            embedded = json.loads(match.group(1))  # \u escapes only: plain JSON
            _check_tail(embedded, kept, text)
            if has_snapshot:
                snap = _get(http, routes["snapshot"]).json()
                _check_tail(snap, kept, text)
                if snap != embedded:
                    raise BenchError(f"{routes['snapshot']} is not what the page embeds")
            record = _get(http, routes["record"]).json()
            if record["log_lines"] != total or record["status"] != "succeeded":
                raise BenchError(f"{routes['record']}: {record['log_lines']} lines")
        if has_snapshot:
            _check_paging(http, big, KEPT_LINES - TAIL + 1, 3)  # back from the tail
            _check_paging(http, big, PAGE * 2 + 1, 3)  # down to line 1
    return has_snapshot


# -- the benchmark ---------------------------------------------------------------------


def _load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _getter(
    client: ClientProcess, base: str, path: str, sizes: dict[str, int]
) -> Callable[[], float]:
    """One GET of `path` from the client process (a new connection): its
    latency; the answer's size goes into `sizes[path]`."""

    def go() -> float:
        got = client.call("get", base=base, path=path, count=1)
        sizes[path] = got["bytes"]
        return float(got["latencies"][0])

    return go


def _rounds(
    client: ClientProcess,
    base: str,
    routes: dict[str, dict[str, str]],
    names: list[str],
    reps: int,
    sizes: dict[str, tuple[int, int]],
    warmup: int = 1,
) -> dict[str, tuple[list[float], list[float]]]:
    """`reps` rounds (after `warmup`) of one GET per route and run: the
    latencies of the big run's and the small run's, per route."""
    samples: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in names}
    measured: dict[str, int] = {}
    for i in range(warmup + reps):
        for name in names:
            big = _getter(client, base, routes["big"][name], measured)
            small = _getter(client, base, routes["small"][name], measured)
            if i % 2:
                tb = small()
                ta = big()
            else:
                ta = big()
                tb = small()
            if i >= warmup:
                samples[name][0].append(ta)
                samples[name][1].append(tb)
        if i >= warmup:
            shown = ", ".join(
                f"{n} {a[-1] * 1000:.1f}/{b[-1] * 1000:.1f}" for n, (a, b) in samples.items()
            )
            log(f"  bigpage {i - warmup + 1}/{reps}: {shown} ms (big/small)")
    for name in names:
        sizes[name] = (measured[routes["big"][name]], measured[routes["small"][name]])
    return samples


def bigpage(cfg: Config) -> list[Row]:
    reps = cfg.reps(20, 5)
    restarts = cfg.reps(5, 1)  # first requests: per route and run, one restart each
    root = Path(tempfile.mkdtemp(prefix="pullrun-bench-13-"))
    data_dir = root / "data"
    warm: dict[str, tuple[list[float], list[float]]] = {}
    first: dict[str, tuple[list[float], list[float]]] = {
        name: ([], []) for name in ("page", "snapshot", "record")
    }
    sizes: dict[str, tuple[int, int]] = {}
    try:
        with ClientProcess() as client:
            with bench_server("13-make", data_dir=data_dir) as server:
                big, small = _make_runs(server, client)
                has_snapshot = _check_answers(server, big, small)
            if not has_snapshot:
                log("  bigpage: GET /api/runs/{id}/snapshot is 404 in this tree: not measured")
            routes = {"big": _routes(big), "small": _routes(small)}
            names = [n for n in first if has_snapshot or n != "snapshot"]

            # The first request after a restart: one route of one run per start.
            for i in range(restarts):
                for name in names:
                    kinds = ("big", "small") if i % 2 == 0 else ("small", "big")  # ABBA
                    for kind in kinds:
                        samples = first[name][0 if kind == "big" else 1]
                        with bench_server("13-first", data_dir=data_dir) as server:
                            got = client.call(
                                "get", base=server.base_url, path=routes[kind][name], count=1
                            )
                        samples.append(got["latencies"][0])
                log(
                    f"  bigpage: first request after a restart, round {i + 1}/{restarts}: "
                    + ", ".join(
                        f"{name} {first[name][0][-1] * 1000:.0f}/{first[name][1][-1] * 1000:.0f} ms"
                        for name in names
                    )
                    + f" (big/small; {_load()})"
                )

            # Warm: the same server; each round asks every route of both runs,
            # big and small in turn (ABBA: neither is always first), so a busy
            # moment of the machine falls on all of them alike.
            with bench_server("13", data_dir=data_dir, profile=cfg.profile) as server:
                log(f"  bigpage: warm requests ({_load()})")
                if has_snapshot:
                    # "Load earlier" of the big run: a page from the middle of
                    # the log (as "big") against the page just before its tail
                    # (as "small"): information, the cost of a page by number.
                    routes["big"]["earlier"] = _lines(big, KEPT_LINES // 2)
                    routes["small"]["earlier"] = _lines(big, KEPT_LINES - TAIL + 1)
                    names.append("earlier")
                warm = _rounds(client, server.base_url, routes, names, reps, sizes)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return _rows(warm, first, sizes, reps)


def _ms(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _rows(
    warm: dict[str, tuple[list[float], list[float]]],
    first: dict[str, tuple[list[float], list[float]]],
    sizes: dict[str, tuple[int, int]],
    reps: int,
) -> list[Row]:
    rows: list[Row] = []
    for name in ("page", "snapshot", "record"):
        what = f"64 MiB log: {WHAT[name]}"
        if name not in warm:
            rows.append(
                Row("13", what + ", the route is missing", "404", "-", "-", f"<= {RATIO:g}", False)
            )
            continue
        a, b = warm[name]
        ma, mb = median(a), median(b)
        rows.append(
            Row(
                "13",
                f"{what}, median of {reps}",
                _ms(ma),
                _ms(mb) + " (10-line run)",
                f"{ma / mb:.2f}",
                f"<= {RATIO:g}",
                ma / mb <= RATIO,
                {"big": a, "small": b, "bytes": sizes[name]},
            )
        )
    if "earlier" in warm:
        a, b = warm["earlier"]
        ma, mb = median(a), median(b)
        rows.append(
            Row(
                "13",
                f"64 MiB log: load earlier, GET /api/runs/{{id}}/lines?limit={PAGE} at line"
                f" {KEPT_LINES // 2:,} (middle), median of {reps}",
                _ms(ma),
                _ms(mb) + f" (at line {KEPT_LINES - TAIL + 1:,}, before the tail)",
                f"{ma / mb:.2f}",
                "information",
                True,
                {"middle": a, "tail": b, "bytes": sizes["earlier"]},
            )
        )
    for name in ("page", "snapshot", "record"):
        a, b = first[name]
        if not a or not b:
            continue
        ma, mb = median(a), median(b)
        rows.append(
            Row(
                "13",
                f"64 MiB log: {WHAT[name]}, first request after a restart"
                + (f", median of {len(a)}" if len(a) > 1 else ""),
                _ms(ma),
                _ms(mb) + " (10-line run)",
                f"{ma / mb:.2f}",
                f"<= {RATIO:g}",
                ma / mb <= RATIO,
                {"big": a, "small": b},
            )
        )
    return rows
