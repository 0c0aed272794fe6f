"""The fixtures that keep the pages' scripts (static/js) in step with the server.

Each JSON file under tests/js/fixtures/ is what the Python side says for a
given input; the Node tests (tests/js/*.test.mjs) feed the same input to the
scripts and expect the same answer, and tests/unit/test_js_parity.py fails
when a file here is stale (the server changed, the fixture was not rebuilt):

    .venv/bin/python -m tests.js.make_fixtures      (or: make js-fixtures)

- vocabulary.json: statuses, phases and labels as the pages get them
  (backend/web/pages.py `vocabulary()`, embedded in every page).
- pulls/<stream>.json: for each recorded pull in tests/fixtures/pulls, the
  `pull` events the pipeline sends (backend/runs/pipeline.py) and, after each,
  backend/runs/progress.py's figures for the event's layer; the run page's
  snapshot (backend/web/snapshot.py) after each event, for a page (re)loaded
  mid-pull.
- lines.json: `log` event streams and the lines backend/storage/reader.py's
  joiner makes of them; the snapshot's lines after each event.
- phases.json: the run page's timeline (backend/web/pages.py `timeline()`).
- format.json: durations and sizes as the templates write them.
- engines.json: engine objects (backend/engines/pool.py `EngineHandle.view`, as
  `GET /api/engines` and `engine` events carry them) and how the engines panel
  words them (backend/web/pages.py `engine_facts`, `engines_summary`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from backend.engines import DockerEngine
from backend.engines.config import EngineConfig
from backend.engines.pool import EngineHandle
from backend.events import encode_event, rfc3339_at
from backend.runs.lines import LineAssembler, LogBatch
from backend.runs.progress import Layer, PullProgress
from backend.storage.reader import Event, join_lines
from backend.web import pages
from backend.web.snapshot import build_snapshot

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PULLS = ROOT / "tests" / "fixtures" / "pulls"

# The Python side of the line joining: one line to switch.
JOIN_LINES: Callable[[Iterable[Event]], list[Any]] = join_lines


def dump(value: Any) -> str:
    """JSON with one element per line down to the lists' items: diffable, not huge."""

    def text(value: Any, depth: int) -> str:
        pad = " " * depth
        if depth < 3 and isinstance(value, dict) and value:
            items = [f"{pad} {json.dumps(k)}: {text(v, depth + 1)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + f"\n{pad}}}"
        nested = isinstance(value, list) and any(isinstance(v, dict | list) for v in value)
        if (depth < 3 and nested and any(isinstance(v, dict) for v in value)) or (
            depth < 2 and nested
        ):
            items = [f"{pad} {text(v, depth + 1)}" for v in value]
            return "[\n" + ",\n".join(items) + f"\n{pad}]"
        return json.dumps(value, ensure_ascii=False)

    return text(value, 0) + "\n"


def write_events(path: Path, events: list[tuple[str, dict[str, Any]]]) -> None:
    path.write_bytes(
        b"".join(encode_event(n, kind, data) for n, (kind, data) in enumerate(events, 1))
    )


# -- pulls -----------------------------------------------------------------------------


def pull_event(progress: PullProgress, message: dict[str, Any]) -> dict[str, Any]:
    """The `pull` event data for one engine message, as RunPipeline._pull sends it."""
    data = progress.update(message)
    if message.get("error") or message.get("errorDetail"):
        detail = message.get("errorDetail") or {}
        data["status"] = data["status"] or "error"
        data["error"] = True
        data["message"] = str(message.get("error") or detail.get("message") or "pull failed")
    return data


def layer_figures(layer_id: str, layer: Layer) -> dict[str, Any]:
    """What the page draws a layer's row from: its state, bytes and fractions."""
    return {
        "id": layer_id,
        "state": layer.state,
        "total": layer.total,
        "downloaded": layer.downloaded,
        "extracted": layer.extracted,
        "download": layer.download,
    }


# Engine messages no recording has, for what the `pull` events must carry.
EDGE_PULLS: dict[str, list[dict[str, Any]]] = {
    name: [
        {"status": "Pulling fs layer", "progressDetail": {}, "id": "a1b2c3d4e5f6"},
        {
            "status": "Downloading",
            "progressDetail": {"current": 100, "total": 100},
            "id": "a1b2c3d4e5f6",
        },
        {"status": "Download complete", "progressDetail": {}, "id": "a1b2c3d4e5f6"},
        {"status": "Extracting", "progressDetail": detail, "id": "a1b2c3d4e5f6"},
        {"status": "Pull complete", "progressDetail": {}, "id": "a1b2c3d4e5f6"},
        {"status": "Status: Downloaded newer image for x:latest"},
    ]
    for name, detail in {
        "edge-units-empty": {"current": 60, "total": 100, "units": ""},
        "edge-units-null": {"current": 60, "total": 100, "units": None},
    }.items()
}


def pull_fixture(source: str, messages: list[dict[str, Any]], scratch: Path) -> dict[str, Any]:
    progress = PullProgress()
    events: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    for message in messages:
        data = pull_event(progress, message)
        events.append(data)
        layer = data["layer"]
        after.append(
            {
                "layer": layer_figures(layer, progress.layers[layer]) if layer else None,
                "complete": progress.complete,
            }
        )
        if data.get("error"):
            break  # the pipeline stops reading the pull there
    file = scratch / "pull.events"
    write_events(file, [("pull", data) for data in events])
    snapshots = []
    for upto in range(1, len(events)):
        snap = build_snapshot(file, upto=upto).as_dict()
        snapshots.append(
            {
                "after": upto,
                "layers": snap["layers"],
                "pull_overall": snap["pull_overall"],
                "pull_error": snap["pull_error"],
            }
        )
    return {
        "source": source,
        "events": events,
        "after": after,
        "layers": [layer_figures(i, layer) for i, layer in progress.layers.items()],
        "snapshots": snapshots,
    }


# -- lines -----------------------------------------------------------------------------


AT0 = 1_795_995_601.0  # 2026-11-29T23:40:01Z: when the fixtures' output is read


def log(
    stream: str, first: int, lines: list[str], partial: bool = False, at: float | None = None
) -> dict[str, Any]:
    # The key order of the server's events (logmodel.js reads it on a fast path);
    # without `at`, an event of a log written before events had it.
    data: dict[str, Any] = {"stream": stream}
    if at is not None:
        data["at"] = rfc3339_at(AT0 + at)
    return {**data, "first": first, "lines": lines, "partial": partial}


def batch_event(batch: LogBatch) -> dict[str, Any]:
    at = batch.at - AT0 if batch.at is not None else None
    return log(batch.stream, batch.first, batch.lines, batch.partial, at)


def assembled(script: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """`log` events as backend/runs/lines.py makes them from output bytes.

    Steps: ("out", stream, bytes, time), ("flush", time) for the partial-line
    timer, ("end",) for the end of the output.
    """
    assembler = LineAssembler(partial_delay=0.25)
    events: list[dict[str, Any]] = []
    for step in script:
        if step[0] == "out":
            batches = assembler.feed(step[1], step[2], step[3], AT0 + step[3])
        elif step[0] == "flush":
            batches = assembler.flush_due(step[1])
        else:
            batches = assembler.finish()
        events.extend(batch_event(batch) for batch in batches)
    return events


def seq_with_meter(count: int) -> list[tuple[Any, ...]]:
    """`seq` on stdout in bursts, a progress meter on stderr left open between them."""
    script: list[tuple[Any, ...]] = []
    t = 0.0
    n = 1
    while n <= count:
        burst = b"".join(b"%d\n" % i for i in range(n, min(n + 137, count + 1)))
        script.append(("out", "stdout", burst, t))
        n += 137
        script.append(("out", "stderr", b"\r%d%%" % (100 * min(n, count) // count), t))
        t += 0.3
        script.append(("flush", t))
    script.append(("out", "stderr", b" done\n", t))
    script.append(("end",))
    return script


LINE_CASES: dict[str, list[dict[str, Any]]] = {
    "one-line-per-event": [log("stdout", n, [f"line {n}"]) for n in range(1, 6)],
    "streams-interleaved": [
        log("stdout", 1, ["out 1", "out 2"], at=0.001),
        log("stderr", 3, ["err 3"], at=0.25),
        log("stdout", 4, ["out 4", "out 5", "out 6"], at=1.5),
        log("stderr", 7, ["err 7", "err 8"], at=61.999),
    ],
    "prompt-completed": [
        log("stdout", 1, ["Password: "], True, at=0.0),
        log("stdout", 1, ["hunter2", "welcome"], at=4.2),
    ],
    "partial-continued-still-partial": [
        log("tty", 1, ["downloading  10%"], True, at=0.0),
        log("tty", 1, ["\r downloading  50%"], True, at=0.3),
        log("tty", 1, ["\r downloading 100%"], True, at=0.6),
        log("tty", 1, ["", "next"], at=0.9),
    ],
    "several-lines-the-last-open": [
        log("stdout", 1, ["a", "b", "c-"], True),
        log("stdout", 3, ["continued", "d"]),
        log("stdout", 5, ["e"]),
    ],
    "open-line-while-another-stream-prints": [
        log("stdout", 1, ["Continue? [y/N] "], True),
        log("stderr", 2, ["warning: one", "warning: two"]),
        log("stdout", 1, ["y"]),
        log("stdout", 4, ["ok"]),
    ],
    "both-streams-open": [
        log("stdout", 1, ["out-"], True),
        log("stderr", 2, ["err-"], True),
        log("stderr", 2, ["tail", "err 3"]),
        log("stdout", 1, ["tail"], True),
        log("stdout", 1, [""]),
    ],
    "open-at-the-end-closed-empty": [
        log("stdout", 1, ["first"]),
        log("stdout", 2, ["no newline at the end"], True),
        log("stdout", 2, [""]),
    ],
    "empty-and-odd-lines": [
        log("stdout", 1, ["", "  ", "\t tab", "\x1b[1;31mred\x1b[0m", "trailing\r", "é😀"]),
        log("stderr", 7, ["", ""]),
    ],
    "escapes-in-an-open-line": [
        log("stdout", 1, ["\x1b[32mgreen "], True),
        log("stdout", 1, ["still green\x1b[0m", "plain"]),
    ],
    "assembled-crlf-utf8-partials": assembled(
        [
            ("out", "stdout", b"hello\r\nwor", 0.0),
            ("out", "stdout", b"ld\n", 0.1),
            ("out", "stderr", b"caf\xc3", 0.1),
            ("out", "stderr", b"\xa9 bad \xff byte\n", 0.2),
            ("out", "stdout", b"prompt> ", 0.2),
            ("flush", 0.5),
            ("out", "stderr", b"meanwhile\n", 0.6),
            ("out", "stdout", b"answer\nbye", 0.7),
            ("flush", 1.0),
            ("end",),
        ]
    ),
    "assembled-progress-meter": assembled(
        [
            ("out", "stdout", b"step 1\n", 0.0),
            ("out", "stdout", b"\r 10%", 0.0),
            ("flush", 0.3),
            ("out", "stdout", b"\r 60%", 0.4),
            ("flush", 0.7),
            ("out", "stdout", b"\r100%\r", 0.8),
            ("flush", 1.1),
            ("out", "stdout", b"\n", 1.2),
            ("out", "stdout", b"step 2\n", 1.2),
            ("end",),
        ]
    ),
    "assembled-seq-with-meter": assembled(seq_with_meter(1200)),
}


def lines_fixture(scratch: Path) -> dict[str, Any]:
    cases = []
    for name, events in LINE_CASES.items():
        lines = JOIN_LINES(Event(str(n), "log", data) for n, data in enumerate(events, 1))
        case: dict[str, Any] = {
            "name": name,
            "events": events,
            "lines": [line.as_dict() for line in lines],
        }
        if len(lines) <= 50:
            # The run page (re)loaded after each event: the snapshot's lines.
            file = scratch / f"{name}.events"
            write_events(file, [("log", data) for data in events])
            case["snapshots"] = [
                {
                    "after": upto,
                    "lines": [line.as_dict() for line in snap.lines],
                    "total": snap.total_lines,
                }
                for upto in range(1, len(events))
                for snap in [build_snapshot(file, upto=upto)]
            ]
        cases.append(case)
    return {"cases": cases}


# -- the run page's timeline -----------------------------------------------------------

T0 = "2026-11-27T21:57:15.000Z"


def at(*pairs: tuple[str, str]) -> dict[str, str]:
    return dict(pairs)


def done(status: str, phase: str | None = None, **durations: float | None) -> dict[str, Any]:
    return {
        "status": status,
        "exit_code": 0 if status == "succeeded" else None,
        "error": {"phase": phase, "message": "x"} if phase else None,
        "durations": {"queue": None, "pull": None, "create": None, "start": None, "run": None}
        | durations,
    }


QUEUED = ("queued", "2026-11-27T21:57:15.000Z")
PULLING = ("pulling", "2026-11-27T21:57:15.250Z")
CREATING = ("creating", "2026-11-27T21:57:17.339Z")
STARTING = ("starting", "2026-11-27T21:57:17.360Z")
RUNNING = ("running", "2026-11-27T21:57:17.431Z")

PHASE_CASES: dict[str, tuple[dict[str, str], dict[str, Any] | None]] = {
    "queued": (at(QUEUED), None),
    "pulling": (at(QUEUED, PULLING), None),
    "running-no-pull": (at(QUEUED, CREATING, STARTING, RUNNING), None),
    "running-after-pull": (at(QUEUED, PULLING, CREATING, STARTING, RUNNING), None),
    "succeeded": (
        at(QUEUED, PULLING, CREATING, STARTING, RUNNING),
        done("succeeded", queue=0.25, pull=2.089, create=0.021, start=0.071, run=1.5),
    ),
    "failed-exit-code": (
        at(QUEUED, CREATING, STARTING, RUNNING),
        done("failed", queue=0.01, create=0.02, start=0.07, run=0.2),
    ),
    "pull-error": (at(QUEUED, PULLING), done("error", "pull", queue=0.25, pull=1.0)),
    "canceled-while-queued": (at(QUEUED), done("canceled", "queue", queue=3.0)),
    "interrupted": (at(QUEUED, PULLING), done("error", "interrupted", queue=0.25)),
    "timed-out": (
        at(QUEUED, CREATING, STARTING, RUNNING),
        done("timed_out", queue=0.0, create=0.01, start=0.05, run=10.0),
    ),
    "no-durations": (at(QUEUED, RUNNING), {"status": "succeeded", "error": None}),
}


def phases_fixture() -> dict[str, Any]:
    cases = []
    for name, (status_at, run_done) in PHASE_CASES.items():
        timeline = pages.timeline(status_at, run_done)
        cases.append(
            {
                "name": name,
                "status_at": status_at,
                "done": run_done,
                "timeline": [
                    {"phase": p["name"], "state": p["state"], "seconds": p["seconds"]}
                    for p in timeline
                ],
            }
        )
    return {"cases": cases}


# -- formatting ------------------------------------------------------------------------

DURATIONS = [
    0,
    0.0004,
    0.0005,
    0.0015,
    0.0025,
    0.25,
    0.5,
    0.9994,
    0.9995,
    0.9996,
    1,
    1.05,
    1.25,
    1.35,
    2.5,
    9.94,
    9.95,
    9.96,
    10,
    10.5,
    11.5,
    58.5,
    59.4,
    59.5,
    59.6,
    60,
    61.5,
    119.5,
    3599.4,
    3599.5,
    3600,
    86399.5,
    90061,
]
SIZES = [
    0,
    1,
    1023,
    1024,
    1075,
    1126,
    1280,
    1536,
    1792,
    2097991,
    3146893,
    6291456,
    10**12,
    2**50 * 3,
]


def format_fixture() -> dict[str, Any]:
    return {
        "durations": [[s, pages.format_duration(s)] for s in DURATIONS],
        "bytes": [[n, pages.format_bytes(n)] for n in SIZES],
    }


# -- engines ---------------------------------------------------------------------------


def engine_view(config: dict[str, Any], queued: int = 0, **found: Any) -> dict[str, Any]:
    """An engine object: `config` as in the engines file, `found` what its health
    checks found and the runner keeps (state, version, ..., active)."""
    handle = EngineHandle(EngineConfig(**config), DockerEngine, DockerEngine)
    for key, value in found.items():
        setattr(handle, key, value)
    return handle.view(queued)


ENGINES = [
    engine_view(
        {"name": "local", "host": "unix:///var/run/docker.sock", "labels": {"zone": "a"}},
        state="up",
        version="20.10.24+dfsg1",
        api_version="1.41",
        os="linux",
        arch="amd64",
        cpus=2,
        memory=25276502016,
        active=1,
        checked_at="2026-11-29T23:40:01.000Z",
    ),
    engine_view(
        {
            "name": "gpu1",
            "host": "tcp://10.1.2.3:2376",
            "tls_verify": False,  # (no TLS files in a fixture)
            "labels": {"gpu": "true", "zone": "b"},
            "max_concurrent_runs": 2,
        },
        queued=3,
        state="down",
        version="24.0.7",
        api_version="1.43",
        os="linux",
        arch="arm64",
        cpus=64,
        memory=1536 * 1024**2,
        last_error="Error while fetching server API version: ('Connection aborted.', <b>x</b>)",
        checked_at="2026-11-29T23:40:02.500Z",
    ),
    engine_view({"name": "builder", "context": "builder", "max_concurrent_runs": 1}),
    engine_view(
        {"name": "old.box_1"},
        state="up",
        version="19.03",
        os="linux",
        cpus=1,
        memory=1023,
        active=4,
        checked_at="2026-11-29T23:40:03Z",
    ),
]


def engines_fixture() -> dict[str, Any]:
    return {
        "cases": [{"engine": e, "facts": pages.engine_facts(e)} for e in ENGINES],
        "summaries": [
            [[e["name"] for e in some], pages.engines_summary(some)]
            for some in (ENGINES, ENGINES[:1], ENGINES[1:3], [])
        ],
    }


# -- all -------------------------------------------------------------------------------


def build() -> dict[Path, str]:
    """Every fixture file and its content."""
    files: dict[Path, str] = {FIXTURES / "vocabulary.json": dump(pages.vocabulary())}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for path in sorted(PULLS.glob("*.jsonl")):
            messages = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            source = str(path.relative_to(ROOT))
            files[FIXTURES / "pulls" / f"{path.stem}.json"] = dump(
                pull_fixture(source, messages, scratch)
            )
        for name, messages in EDGE_PULLS.items():
            source = f"tests/js/make_fixtures.py EDGE_PULLS[{name!r}]"
            files[FIXTURES / "pulls" / f"{name}.json"] = dump(
                pull_fixture(source, messages, scratch)
            )
        files[FIXTURES / "lines.json"] = dump(lines_fixture(scratch))
    files[FIXTURES / "phases.json"] = dump(phases_fixture())
    files[FIXTURES / "format.json"] = dump(format_fixture())
    files[FIXTURES / "engines.json"] = dump(engines_fixture())
    return files


def main() -> None:
    files = build()
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    for path in FIXTURES.rglob("*.json"):
        if path not in files:
            path.unlink()
            print(f"removed {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
