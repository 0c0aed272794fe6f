"""Followers of one event log share their reads (backend/storage/fanout.py):
every follower still gets every byte, in order, whatever its pace."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from backend.storage import fanout
from backend.storage.eventlog import EventLog
from backend.storage.fanout import Fanout
from backend.storage.reader import decode_events

T = TypeVar("T")


def run_async(make: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    async def main() -> T:
        return await asyncio.wait_for(make(), timeout)

    return asyncio.run(main())


def ids_of(raw: bytes) -> list[int]:
    return [int(event_id) for event_id, _, _ in decode_events(raw)]


def log_event(log: EventLog, n: int, width: int = 40) -> None:
    log.append("log", {"stream": "stdout", "first": n, "lines": [str(n).rjust(width, "x")]})


@pytest.fixture
def small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps of 1 KiB, so a few hundred events make many of them."""
    monkeypatch.setattr(fanout, "STEP", 1024)


# -- the cache itself ------------------------------------------------------------------


def following(count: int, limit: int | None = None) -> Fanout:
    cache = Fanout(limit)
    for _ in range(count):
        cache.join()
    return cache


def test_a_kept_span_is_given_for_its_start_as_it_is() -> None:
    cache = following(10, limit=1000)
    data = b"x" * 10
    cache.put(0, 4, data)  # events 1-4
    kept = cache.get(0)
    assert kept is not None and kept[0] == 4 and kept[1] is data
    assert cache.get(10) is None  # the next span: nobody read it yet
    assert cache.get(5) is None
    bigger = b"y" * 20
    cache.put(0, 7, bigger)  # (a follower whose span was dropped reads its own)
    assert cache.get(0) == (7, bigger)
    assert (len(cache), cache.bytes) == (1, 20)


def test_a_span_every_follower_took_is_dropped() -> None:
    cache = following(3)
    data = b"abc"
    cache.put(0, 1, data)  # the first follower read it
    assert cache.get(0) == (1, data)  # the second
    assert (len(cache), cache.bytes) == (1, 3)
    assert cache.get(0) == (1, data)  # the third and last: nobody needs it any more
    assert (len(cache), cache.bytes) == (0, 0)
    assert cache.get(0) is None


def test_the_cache_keeps_at_most_its_limit_oldest_out() -> None:
    cache = following(10, limit=100)
    for start in range(0, 300, 30):
        cache.put(start, start // 30 + 1, bytes(30))
        assert cache.bytes <= 100
    assert cache.bytes == 90
    assert cache.get(270) is not None  # the newest are kept
    assert cache.get(0) is None
    cache.put(1000, 50, bytes(500))  # one span past the limit is still kept, alone
    assert (len(cache), cache.bytes) == (1, 500)


def test_the_cache_empties_when_fewer_than_two_follow() -> None:
    cache = Fanout()
    cache.join()
    assert not cache.shared
    cache.join()
    assert cache.shared
    cache.put(0, 1, b"abc")
    cache.leave()
    assert not cache.shared
    assert (len(cache), cache.bytes) == (0, 0)


# -- followers of a log ------------------------------------------------------------------


async def follow_all(
    log: EventLog, after: int = 0, pace: float = 0.0, chunks: list[bytes] | None = None
) -> list[bytes]:
    chunks = [] if chunks is None else chunks
    async for chunk in log.follow(after):
        chunks.append(chunk)
        await asyncio.sleep(pace)
    return chunks


def test_followers_at_the_same_place_get_the_same_bytes_object(
    tmp_path: Path, small_steps: None
) -> None:
    async def main() -> None:
        log = EventLog(tmp_path / "r.events", asyncio.get_running_loop())
        followers = [asyncio.ensure_future(follow_all(log)) for _ in range(5)]
        await asyncio.sleep(0.01)  # all of them wait for the first event
        for n in range(1, 201):
            log_event(log, n)
            if n % 20 == 0:
                await asyncio.sleep(0)  # followers read some while it is live
        log.append("done", {"status": "succeeded"})
        results = await asyncio.gather(*followers)
        whole = log.path.read_bytes()
        for chunks in results:
            assert b"".join(chunks) == whole
            assert ids_of(b"".join(chunks)) == list(range(1, 202))
        # In step: the very same objects, read once for all five.
        first = results[0]
        for chunks in results[1:]:
            assert len(chunks) == len(first)
            assert all(a is b for a, b in zip(chunks, first, strict=True))
        assert log._fanout is not None
        assert len(log._fanout) == 0  # emptied once they had all gone
        assert log._fanout.followers == 0

    run_async(main)


def test_steps_meet_at_the_same_ends(tmp_path: Path, small_steps: None) -> None:
    """Followers from different places read whole steps once they meet a
    step's end: the same spans, read once."""

    async def main() -> None:
        log = EventLog(tmp_path / "r.events", asyncio.get_running_loop())
        for n in range(1, 301):
            log_event(log, n)
        # One follower at the live end, waiting: the log is shared from here on.
        holder = asyncio.ensure_future(follow_all(log, log.last_id))
        await asyncio.sleep(0.01)
        got_a: list[bytes] = []
        got_b: list[bytes] = []
        a = asyncio.ensure_future(follow_all(log, 0, 0.001, got_a))
        await asyncio.sleep(0.005)
        b = asyncio.ensure_future(follow_all(log, 37, 0.001, got_b))
        # Both at the live end (the test's timeout bounds the wait), then the end.
        while sum(map(len, got_a)) < log.size or sum(map(len, got_b)) < log.size - log.offset(38):
            await asyncio.sleep(0.005)
        log.append("done", {"status": "succeeded"})
        chunks_a, chunks_b, last = await asyncio.gather(a, b, holder)
        whole = log.path.read_bytes()
        assert b"".join(chunks_a) == whole
        assert b"".join(chunks_b) == whole[log.offset(38) :]
        assert b"".join(last) == whole[log.offset(301) :]
        for chunk in chunks_a + chunks_b:  # steps of 1 KiB (or one event)
            assert len(chunk) <= 1024 or len(ids_of(chunk)) == 1
        shared = {id(chunk) for chunk in chunks_a} & {id(chunk) for chunk in chunks_b}
        assert len(shared) >= len(chunks_b) - 1  # all but perhaps b's first (to a step's end)

    run_async(main)


@pytest.mark.parametrize("seed", range(6))
def test_followers_at_any_pace_get_every_event_once(
    tmp_path: Path, small_steps: None, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Early, late and slow followers of a live log, the cache kept small:
    each gets exactly the file's bytes from where it started."""
    monkeypatch.setattr(fanout, "CACHE_BYTES", 4096)
    rng = random.Random(seed)

    async def main() -> None:
        log = EventLog(tmp_path / "r.events", asyncio.get_running_loop())
        followers: list[tuple[int, asyncio.Future[list[bytes]]]] = []
        peak = 0

        def start(after: int) -> None:
            pace = rng.choice([0.0, 0.0, 0.0005, 0.002])
            followers.append((after, asyncio.ensure_future(follow_all(log, after, pace))))

        for _ in range(4):
            start(0)  # before the first event
        total = 400
        for n in range(1, total + 1):
            log_event(log, n, width=rng.randrange(1, 300))
            if rng.random() < 0.05:
                start(rng.randrange(0, log.last_id + 1))  # late, from anywhere
            if rng.random() < 0.3:
                await asyncio.sleep(rng.choice([0, 0, 0.001]))
            if log._fanout is not None:
                peak = max(peak, log._fanout.bytes)
        log.append("done", {"status": "succeeded"})
        start(rng.randrange(0, log.last_id))  # after the end
        whole = log.path.read_bytes()
        for after, future in followers:
            chunks = await future
            got = b"".join(chunks)
            assert got == whole[log.offset(after + 1) :]
            assert ids_of(got) == list(range(after + 1, total + 2))
        assert log._fanout is not None
        assert log._fanout.hits > 0
        # Bounded: the limit, or one span alone (one event can be larger).
        assert peak <= 4096 + 1024 + 400

    run_async(main)


def test_a_single_follower_keeps_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        log = EventLog(tmp_path / "r.events", asyncio.get_running_loop())
        for n in range(1, 51):
            log_event(log, n)
        log.append("done", {"status": "succeeded"})
        chunks = await follow_all(log)
        assert b"".join(chunks) == log.path.read_bytes()
        assert len(chunks) == 1  # READ_CHUNK at a time, as before
        assert log._fanout is not None
        assert (len(log._fanout), log._fanout.reads) == (0, 0)

    run_async(main)


def test_a_follower_alone_in_catching_up_reads_as_a_single_one(tmp_path: Path) -> None:
    """One late subscriber of a watched run (benchmark 18): it reads as a
    lone follower does, and keeps nothing that no other follower would take."""

    async def main() -> None:
        log = EventLog(tmp_path / "r.events", asyncio.get_running_loop())
        for n in range(1, 301):
            log_event(log, n, width=2000)  # 600 KB: more than a step behind
        holder = asyncio.ensure_future(follow_all(log, log.last_id))  # at the live end
        await asyncio.sleep(0.01)
        late = await asyncio.wait_for(asyncio.ensure_future(first_chunk(log)), 10)
        assert late == log.path.read_bytes()  # one read to the end, not 1 KiB steps
        assert log._fanout is not None and len(log._fanout) == 0
        log.append("done", {"status": "succeeded"})
        await holder

    async def first_chunk(log: EventLog) -> bytes:
        async for chunk in log.follow(0):
            return chunk
        raise AssertionError("no chunk")

    run_async(main)


def test_a_kept_span_is_taken_as_it_is_when_more_was_written_since(tmp_path: Path) -> None:
    """Followers at the live edge woken between two appends still share one
    span: the later one takes what the first read, then the rest."""

    async def main() -> None:
        log = EventLog(tmp_path / "r.events", asyncio.get_running_loop())
        holder = log.follow(10**6)  # a follower that reads nothing: the log is shared
        waiting = asyncio.ensure_future(holder.__anext__())
        await asyncio.sleep(0)
        log_event(log, 1)
        first = log.follow(0)
        got_first = await first.__anext__()
        log_event(log, 2)  # more written before the next follower reads
        second = log.follow(0)
        assert await second.__anext__() is got_first  # the same bytes, not a read to event 2
        rest = await second.__anext__()
        assert ids_of(got_first) == [1] and ids_of(rest) == [2]
        assert await first.__anext__() is rest
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        for gen in (first, second):
            await gen.aclose()

    run_async(main)
