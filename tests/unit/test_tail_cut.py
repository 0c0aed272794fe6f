"""The tail's cut `log` events (storage/tail.py `_cut_log`): the texts of a
large event before the first line asked for are not decoded, and what is
decoded is exactly the event's, whatever its texts hold (quotes, commas,
brackets, backslashes, control characters, empty texts, non-ASCII); an
event not in the relay's form is decoded whole. With every event cut, the
snapshot and the pages are still the full replay's (test_tail_snapshot.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.events import EventType
from backend.storage import tail
from backend.storage.eventlog import EventLog
from backend.web import snapshot
from backend.web.snapshot import build_snapshot, lines_before, tail_snapshot
from tests.unit import test_tail_snapshot as reference

_NASTY = st.text(alphabet=st.sampled_from(['"', ",", "[", "]", "\\", " ", "\t", "a", "é", "\x00"]))


def _data(texts: list[str], first: int, at: str | None, partial: bool, eol: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"stream": "stdout"}
    if at is not None:
        data["at"] = at
    data.update({"first": first, "lines": texts, "partial": partial})
    if eol:
        data["eol"] = False
    return data


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_NASTY, min_size=2, max_size=40),
    st.integers(min_value=1, max_value=10**6),
    st.sampled_from([None, "2026-11-30T03:00:00.000Z"]),
    st.booleans(),
    st.booleans(),
)
def test_a_cut_event_holds_its_own_texts(
    texts: list[str], first: int, at: str | None, partial: bool, eol: bool
) -> None:
    raw = b"xx" + orjson.dumps(_data(texts, first, at, partial, eol)) + b"yy"
    last = first + len(texts) - 1
    for lo in range(first + 1, last + 1):
        got = tail._cut_log(raw, 2, len(raw) - 2, lo, last)
        if got is None:
            continue
        skipped = got["lines"].count(None)
        assert 0 < skipped <= lo - first
        assert got["lines"] == [None] * skipped + texts[skipped:]
        assert got["first"] == first and got["at"] == at and got["partial"] == partial
        assert got["stream"] == "stdout"


def test_plain_texts_are_cut_and_other_forms_are_not() -> None:
    texts = [f"line {k}" for k in range(1000)]
    raw = orjson.dumps(_data(texts, 1, "t", False, False))
    got = tail._cut_log(raw, 0, len(raw), 901, 1000)
    assert got is not None and 800 < got["lines"].count(None) <= 900
    assert got["lines"][900:] == texts[900:]
    other = orjson.dumps({"first": 1, "stream": "stdout", "lines": texts, "partial": False})
    assert tail._cut_log(other, 0, len(other), 901, 1000) is None
    extra = orjson.dumps({**_data(texts, 1, "t", False, False), "x": 1})
    assert tail._cut_log(extra, 0, len(extra), 901, 1000) is None
    assert tail._cut_log(raw, 0, len(raw), 1, 1000) is None  # nothing to skip


@pytest.fixture
def cut_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail, "CUT_BYTES", 0)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(reference._OP, max_size=14),
    st.booleans(),
    st.booleans(),
    st.sampled_from([1, 3, 1000]),
)
def test_the_tail_snapshot_with_every_event_cut_is_the_full_replays(
    cut_all: None, ops: list[tuple[str, str, str]], tty: bool, finished: bool, tail_lines: int
) -> None:
    with pytest.MonkeyPatch.context() as patch:  # test_tail_snapshot.py's small cuts
        patch.setattr(snapshot, "MAX_LINE_CHARS", 6)
        patch.setattr(snapshot, "MAX_PAGE_CHARS", 20)
        patch.setattr(tail, "READ_CHUNK", 300)
        patch.setattr(tail, "WINDOW", 40)
        patch.setattr(tail, "FOLLOW_CHUNK", 50)
        reference.run_case(ops, tty, finished, tail_lines, 0)


def test_big_events_of_nasty_texts_page_as_the_full_replay(tmp_path: Path, cut_all: None) -> None:
    texts = ['a","b', "\\", '"', ",", "", "[", "]", 'x\\"', "é" * 3, "\t"]
    loop = asyncio.new_event_loop()
    try:
        path = tmp_path / "r.events"
        log = EventLog(path, loop)
        n = 1
        for size in (5000, 5000, 1234, 5000, 7):
            lines = [texts[(n + k) % len(texts)] + str(n + k) for k in range(size)]
            log.append(EventType.LOG, _data(lines, n, "t", False, False))
            n += size
        log.append(EventType.DONE, {"status": "succeeded"})
        want = build_snapshot(path, tail_lines=1000).as_dict()
        assert tail_snapshot(log, 1000).as_dict() == want
        every = [line.as_dict() for line in build_snapshot(path, tail_lines=10**9).lines]
        for before in (n, n - 3, 16_000, 10_001, 5002, 2):
            for limit in (1, 999, 5000):
                got, _, _ = lines_before(log, before, limit)
                expected = [x for x in every if x["n"] < before][-limit:]
                assert [line.as_dict() for line in got] == expected
        log.close()
    finally:
        loop.close()
