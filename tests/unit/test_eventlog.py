"""EventLog: append-only SSE file per run, written by a thread, followed by asyncio cursors."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.events import encode_event
from backend.storage.eventlog import EventLog
from backend.storage.reader import decode_events

T = TypeVar("T")


def run_async(make: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    async def main() -> T:
        return await asyncio.wait_for(make(), timeout)

    return asyncio.run(main())


async def collect(log: EventLog, after: int = 0) -> bytes:
    return b"".join([raw async for raw in log.follow(after)])


def ids_of(raw: bytes) -> list[int]:
    return [int(event_id) for event_id, _, _ in decode_events(raw)]


def write_events(log: EventLog, count: int, *, done: bool) -> None:
    log.append("status", {"status": "queued"})
    for i in range(count):
        log.append("log", {"stream": "stdout", "first": i + 1, "lines": [f"line {i}"]})
    if done:
        log.append("done", {"status": "succeeded"})


def test_append_returns_consecutive_ids_and_writes_exact_bytes(tmp_path: Path) -> None:
    async def main() -> None:
        log = EventLog(tmp_path / "r.events", asyncio.get_running_loop())
        assert log.last_id == 0
        assert log.append("status", {"status": "queued"}) == 1
        assert log.append("log", {"lines": ["a"]}) == 2
        assert log.last_id == 2
        assert not log.finished
        assert log.append("done", {"status": "succeeded"}) == 3
        assert log.finished
        expected = (
            encode_event(1, "status", {"status": "queued"})
            + encode_event(2, "log", {"lines": ["a"]})
            + encode_event(3, "done", {"status": "succeeded"})
        )
        assert (tmp_path / "r.events").read_bytes() == expected
        with pytest.raises(RuntimeError):
            log.append("log", {"lines": ["late"]})
        assert (tmp_path / "r.events").read_bytes() == expected

    run_async(main)


def test_follow_while_a_thread_appends_yields_every_event_once_in_order(tmp_path: Path) -> None:
    count = 400

    async def main() -> list[bytes]:
        log = EventLog(tmp_path / "r.events", asyncio.get_running_loop())
        log.append("status", {"status": "queued"})  # the runner's first event

        def writer() -> None:
            for i in range(count):
                log.append("log", {"i": i})
                if i % 25 == 0:
                    time.sleep(0.002)  # pacing the writer so reads interleave, not a wait
            log.append("done", {"status": "succeeded"})

        thread = threading.Thread(target=writer)
        consumers = asyncio.gather(collect(log, 0), collect(log, 0), collect(log, 7))
        await asyncio.sleep(0)
        thread.start()
        try:
            return list(await consumers)
        finally:
            thread.join()

    whole, again, after_seven = run_async(main)
    assert whole == again == (tmp_path / "r.events").read_bytes()
    events = decode_events(whole)
    assert [int(e[0]) for e in events] == list(range(1, count + 3))
    assert [e[2]["i"] for e in events[1:-1]] == list(range(count))
    assert events[-1][1] == "done"
    assert ids_of(after_seven) == list(range(8, count + 3))


def test_concurrent_writer_threads_get_unique_consecutive_ids(tmp_path: Path) -> None:
    threads, per_thread = 4, 150

    async def main() -> bytes:
        log = EventLog(tmp_path / "r.events", asyncio.get_running_loop())
        log.append("status", {"status": "queued"})
        returned: list[int] = []

        def writer(name: int) -> None:
            for i in range(per_thread):
                returned.append(log.append("log", {"t": name, "i": i}))

        workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
        consumer = asyncio.ensure_future(collect(log, 0))
        for w in workers:
            w.start()
        while any(w.is_alive() for w in workers):
            await asyncio.sleep(0.005)
        log.append("done", {})
        raw = await consumer
        assert sorted(returned) == list(range(2, threads * per_thread + 2))
        return raw

    raw = run_async(main)
    events = decode_events(raw)
    assert [int(e[0]) for e in events] == list(range(1, threads * per_thread + 3))
    for name in range(threads):
        mine = [e[2]["i"] for e in events if isinstance(e[2], dict) and e[2].get("t") == name]
        assert mine == list(range(per_thread))


@pytest.mark.parametrize("after", [0, 1, 5, 11, 12, 50])
def test_follow_after_k_yields_only_later_events(tmp_path: Path, after: int) -> None:
    async def main() -> bytes:
        log = EventLog(tmp_path / "r.events", asyncio.get_running_loop())
        write_events(log, 10, done=True)  # ids 1..12
        return await collect(log, after)

    assert ids_of(run_async(main)) == list(range(after + 1, 13))


def test_follow_waits_for_live_events_then_ends_on_done(tmp_path: Path) -> None:
    async def main() -> None:
        log = EventLog(tmp_path / "r.events", asyncio.get_running_loop())
        log.append("status", {"status": "queued"})
        agen = log.follow(0)
        assert ids_of(await anext(agen)) == [1]
        pending = asyncio.ensure_future(anext(agen))
        await asyncio.sleep(0.05)
        assert not pending.done()  # nothing new: the cursor waits
        threading.Thread(target=log.append, args=("log", {"lines": ["x"]})).start()
        assert ids_of(await pending) == [2]
        log.append("done", {})
        assert ids_of(await anext(agen)) == [3]
        with pytest.raises(StopAsyncIteration):
            await anext(agen)

    run_async(main)


def test_load_finished_file_reproduces_bytes(tmp_path: Path) -> None:
    path = tmp_path / "r.events"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        log = EventLog(path, loop)
        write_events(log, 20, done=True)
        original = path.read_bytes()
        loaded = EventLog.load(path, loop)
        assert loaded.finished
        assert loaded.last_id == 22
        assert path.read_bytes() == original
        assert await collect(loaded, 0) == original
        assert ids_of(await collect(loaded, 20)) == [21, 22]
        with pytest.raises(RuntimeError):
            loaded.append("log", {})

    run_async(main)


def test_load_unfinished_file_continues_numbering(tmp_path: Path) -> None:
    path = tmp_path / "r.events"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        log = EventLog(path, loop)
        write_events(log, 3, done=False)
        log.close()
        loaded = EventLog.load(path, loop)
        assert not loaded.finished
        assert loaded.last_id == 4
        follower = asyncio.ensure_future(collect(loaded, 2))
        await asyncio.sleep(0.01)
        assert loaded.append("done", {"status": "error"}) == 5
        assert ids_of(await follower) == [3, 4, 5]

    run_async(main)
    assert ids_of(path.read_bytes()) == [1, 2, 3, 4, 5]


def test_load_missing_file_is_empty(tmp_path: Path) -> None:
    async def main() -> None:
        log = EventLog.load(tmp_path / "none.events", asyncio.get_running_loop())
        assert log.last_id == 0
        assert not log.finished

    run_async(main)


@pytest.mark.parametrize("done", [False, True])
def test_load_drops_torn_last_write_at_every_cut(tmp_path: Path, done: bool) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        whole_path = tmp_path / "whole.events"
        log = EventLog(whole_path, loop)
        write_events(log, 3, done=False)  # ids 1..4
        log.close()
        good = whole_path.read_bytes()
        last = encode_event(5, "done" if done else "log", {"lines": ["torn"], "x": "\r\n"})
        for cut in range(len(last)):  # every proper prefix of the last event
            path = tmp_path / f"cut{cut}.events"
            path.write_bytes(good + last[:cut])
            loaded = EventLog.load(path, loop)
            assert loaded.last_id == 4, cut
            assert not loaded.finished, cut
            assert path.read_bytes() == good, cut
            assert await collect_until(loaded, 4) == good
            assert loaded.append("log", {"after": "restart"}) == 5
            assert ids_of(path.read_bytes()) == [1, 2, 3, 4, 5]
            loaded.close()

    run_async(main)


async def collect_until(log: EventLog, last_id: int) -> bytes:
    out = b""
    agen = log.follow(0)
    while not out or ids_of(out)[-1] < last_id:
        out += await anext(agen)
    await agen.aclose()
    return out


def test_append_after_the_loop_closed_does_not_raise(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    log = EventLog(tmp_path / "r.events", loop)
    loop.close()
    assert log.append("status", {"status": "queued"}) == 1
    assert log.append("done", {}) == 2
    assert ids_of((tmp_path / "r.events").read_bytes()) == [1, 2]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.text(max_size=40), min_size=1, max_size=25),
    st.integers(min_value=1, max_value=300),
)
def test_span_always_returns_whole_events(texts: list[str], max_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.events"
        loop = asyncio.new_event_loop()
        try:
            log = EventLog(path, loop)
            for text in texts:
                log.append("log", {"lines": [text]})
            log.close()
            data = path.read_bytes()
            sizes = [len(encode_event(i, "log", {"lines": [t]})) for i, t in enumerate(texts, 1)]
            count = len(texts)
            after, offset = 0, 0
            while after < count:
                start, end, last = log.span(after, max_bytes)
                assert start == offset
                assert last > after  # always progresses, even past a huge event
                assert ids_of(data[start:end]) == list(range(after + 1, last + 1))
                assert end - start == sum(sizes[after:last])
                if last - after > 1:
                    assert end - start <= max_bytes
                if last < count:  # as many whole events as fit
                    assert end - start + sizes[last] > max_bytes
                after, offset = last, end
            assert offset == len(data)
            assert log.span(count, max_bytes) == (0, 0, count)
            assert log.span(count + 3, max_bytes) == (0, 0, count + 3)
        finally:
            loop.close()
