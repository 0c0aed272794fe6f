"""The run page's snapshot: state as of an event id, rebuilt from the event file."""

from __future__ import annotations

import json
from pathlib import Path

from backend.events import encode_event
from backend.web.snapshot import build_snapshot

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pulls"


def write(path: Path, events: list[tuple[str, object]]) -> None:
    path.write_bytes(b"".join(encode_event(i, t, d) for i, (t, d) in enumerate(events, 1)))


def log(stream: str, first: int, lines: list[str], partial: bool = False) -> tuple[str, object]:
    return ("log", {"stream": stream, "first": first, "lines": lines, "partial": partial})


def test_lines_are_joined_numbered_and_tail_bounded(tmp_path: Path) -> None:
    path = tmp_path / "r.events"
    write(
        path,
        [
            ("status", {"status": "running", "at": "t"}),
            log("stdout", 1, ["a", "b"]),
            log("stdout", 3, ["pro"], partial=True),
            log("stderr", 4, ["err"]),
            log("stdout", 3, ["mpt> ok"]),
            log("stdout", 5, ["c"]),
            log("stdout", 6, ["half"], partial=True),
        ],
    )
    snap = build_snapshot(path)
    texts = [(line.n, line.stream, line.text, line.partial) for line in snap.lines]
    assert texts == [
        (1, "stdout", "a", False),
        (2, "stdout", "b", False),
        (3, "stdout", "prompt> ok", False),
        (4, "stderr", "err", False),
        (5, "stdout", "c", False),
        (6, "stdout", "half", True),
    ]
    assert snap.total_lines == 6 and snap.last_event_id == 7 and snap.status == "running"
    tail = build_snapshot(path, tail_lines=2)
    assert [line.n for line in tail.lines] == [5, 6]
    assert tail.total_lines == 6


def test_upto_stops_at_that_event(tmp_path: Path) -> None:
    path = tmp_path / "r.events"
    write(
        path,
        [
            ("status", {"status": "queued", "at": "t"}),
            log("stdout", 1, ["x"]),
            log("stdout", 2, ["y"]),
        ],
    )
    snap = build_snapshot(path, upto=2)
    assert snap.last_event_id == 2
    assert [line.text for line in snap.lines] == ["x"]


def test_torn_final_write_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "r.events"
    write(path, [log("stdout", 1, ["x"])])
    with path.open("ab") as f:
        f.write(
            encode_event(
                2, "log", {"stream": "stdout", "first": 2, "lines": ["y"], "partial": False}
            )[:20]
        )
    snap = build_snapshot(path)
    assert snap.last_event_id == 1 and [line.text for line in snap.lines] == ["x"]


def test_missing_file_is_an_empty_snapshot(tmp_path: Path) -> None:
    snap = build_snapshot(tmp_path / "nope.events")
    assert snap.last_event_id == 0 and not snap.lines and snap.done is None


def test_pull_layers_from_a_recorded_stream(tmp_path: Path) -> None:
    from backend.runs.progress import PullProgress

    progress = PullProgress()
    events: list[tuple[str, object]] = []
    for raw in (FIXTURES / "recorded-layers-throttled.jsonl").read_text().splitlines():
        events.append(("pull", progress.update(json.loads(raw))))
    path = tmp_path / "r.events"
    write(path, events)
    snap = build_snapshot(path)
    assert snap.pull_overall is not None and snap.pull_overall["fraction"] == 1
    states = {layer["state"] for layer in snap.layers.values()}
    assert states <= {"done", "exists"} and "done" in states
    assert all(
        layer["download"] == 1 and layer["extract"] == 1
        for layer in snap.layers.values()
        if layer["state"] == "done"
    )
    # Mid-pull: some layer is part-way through its download.
    mid = next(
        i
        for i, (_, d) in enumerate(events, 1)
        if isinstance(d, dict)
        and d["status"] == "Downloading"
        and d["current"]
        and d["total"]
        and d["current"] < d["total"]
    )
    partway = build_snapshot(path, upto=mid)
    assert any(0 < layer["download"] < 1 for layer in partway.layers.values())
    assert partway.pull_overall is not None and partway.pull_overall["fraction"] < 1


def test_done_and_notices(tmp_path: Path) -> None:
    path = tmp_path / "r.events"
    write(
        path, [("notice", {"message": "dropping"}), ("done", {"status": "failed", "exit_code": 2})]
    )
    snap = build_snapshot(path)
    assert snap.notices == ["dropping"]
    assert snap.done == {"status": "failed", "exit_code": 2}
    assert snap.as_dict()["done"]["exit_code"] == 2
