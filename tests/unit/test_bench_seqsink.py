"""The benchmarks' `seq` subscriber (bench/live_client.py SeqSink): as strict
as decoding every line and comparing it, however the stream is cut."""

from __future__ import annotations

import random
from typing import Any

import pytest

from backend.events import encode_event
from bench.live_client import SeqSink, json_line, json_offset, seq_json, seq_offset

COUNT = 20_000
AT = "2026-01-01T00:00:00.000Z"


def log(first: int, lines: list[str], partial: bool = False) -> dict[str, Any]:
    return {"stream": "stdout", "at": AT, "first": first, "lines": lines, "partial": partial}


def whole(first: int, last: int) -> dict[str, Any]:
    return log(first, [str(n) for n in range(first, last + 1)])


def stream(datas: list[tuple[str, dict[str, Any]]]) -> bytes:
    """A run's stream: status, the given events, done; ids from 1."""
    events = [("status", {"status": "running"}), *datas]
    events.append(("done", {"status": "succeeded", "log_lines": COUNT, "dropped_lines": 0}))
    return b"".join(encode_event(i, kind, data) for i, (kind, data) in enumerate(events, 1))


def good_events(step: int = 997) -> list[tuple[str, dict[str, Any]]]:
    return [("log", whole(n, min(n + step - 1, COUNT))) for n in range(1, COUNT + 1, step)]


def feed(raw: bytes, seed: int = 0, sizes: tuple[int, ...] = (1, 7, 100, 4096, 65536)) -> SeqSink:
    """Feed `raw` cut at random places."""
    sink = SeqSink(COUNT)
    rng = random.Random(seed)
    pos = 0
    while pos < len(raw):
        size = rng.choice(sizes)
        sink.feed(raw[pos : pos + size])
        pos += size
    sink.close()
    return sink


def problems(sink: SeqSink) -> list[str]:
    found = list(sink.summary()["errors"])
    if sink.problem():
        found.append(str(sink.problem()))
    if sink.done is None:
        found.append("no done")
    return found


def test_offsets_agree_with_the_texts() -> None:
    text = "\n".join(map(str, range(1, COUNT + 1))) + "\n"
    items = seq_json(COUNT)
    for n in [1, 2, 9, 10, 11, 99, 100, 101, 999, 1000, 9999, 10000, COUNT]:
        assert text[seq_offset(n) :].startswith(f"{n}\n")
        assert items[json_offset(n) :].startswith(f'"{n}"'.encode())
        assert json_line(json_offset(n)) == n
        assert json_line(json_offset(n) + 1) is None
    assert json_line(len(items) + 1) == COUNT + 1


@pytest.mark.parametrize("seed", range(5))
def test_a_right_stream_passes_on_the_fast_path(seed: int) -> None:
    sink = feed(stream(good_events()), seed)
    assert problems(sink) == []
    assert sink.checked == COUNT
    assert sink.fast == len(good_events())
    assert sink.types == {"status": 1, "log": len(good_events()), "done": 1}


def test_lines_sent_in_parts_pass_on_the_general_path() -> None:
    events = [
        ("log", whole(1, 99)),
        ("log", log(100, ["10"], partial=True)),
        ("log", log(100, ["0", "101", "1"], partial=True)),
        ("log", log(102, ["02"], partial=False)),
        ("log", whole(103, COUNT)),
    ]
    sink = feed(stream(events))
    assert problems(sink) == []
    assert sink.checked == COUNT
    assert sink.fast == 2  # the first and the last


def test_keepalive_comments_pass() -> None:
    raw = stream(good_events())
    cut = raw.index(b"id: 3\n")
    sink = feed(raw[:cut] + b": ping\n\n" + raw[cut:])
    assert problems(sink) == []


Events = list[tuple[str, dict[str, Any]]]


def _third(events: Events, *instead: tuple[str, dict[str, Any]]) -> Events:
    """The events with the third one replaced by `instead`."""
    return [*events[:2], *instead, *events[3:]]


def _lines(events: Events) -> tuple[int, list[str]]:
    return events[2][1]["first"], events[2][1]["lines"]


def _wrong_line(e: Events) -> Events:
    first, lines = _lines(e)
    return _third(e, ("log", log(first, [str(first + 1), *lines[1:]])))


def _line_left_out(e: Events) -> Events:
    first, lines = _lines(e)
    return _third(e, ("log", log(first, lines[:-1])))


def _two_in_one(e: Events) -> Events:
    first, lines = _lines(e)
    return _third(
        e, ("log", log(first, ["\n".join(lines[:2])])), ("log", log(first + 2, lines[2:]))
    )


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda e: [*e[:3], *e[4:]], id="an event left out"),
        pytest.param(lambda e: [*e[:4], *e[3:]], id="an event twice"),
        pytest.param(_wrong_line, id="a wrong line"),
        pytest.param(_line_left_out, id="a line left out"),
        pytest.param(_two_in_one, id="two lines in one"),
        pytest.param(lambda e: e[:-1], id="the last lines left out"),
        pytest.param(
            lambda e: [*e[:-1], ("log", whole(e[-1][1]["first"], COUNT + 1))], id="a line more"
        ),
    ],
)
def test_a_wrong_stream_fails(broken: Any) -> None:
    sink = feed(stream(broken(good_events())))
    assert problems(sink)


def test_a_wrong_id_fails() -> None:
    raw = stream(good_events()).replace(b"id: 5\n", b"id: 6\n", 1)
    assert problems(feed(raw))


def test_a_torn_end_fails() -> None:
    raw = stream(good_events())
    assert problems(feed(raw[:-5]))
