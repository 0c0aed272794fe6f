"""RunFeed: the global run-change stream, `<boot>-<n>` ids, resume or `reset`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from backend.storage.eventlog import RunFeed
from backend.storage.reader import decode_events

T = TypeVar("T")
BOOT = "1a2b3c4d"


def run_async(make: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    async def main() -> T:
        return await asyncio.wait_for(make(), timeout)

    return asyncio.run(main())


def publish(feed: RunFeed, count: int, start: int = 1) -> None:
    for n in range(start, start + count):
        feed.publish({"id": f"run{n}"})


def events_of(raw: bytes) -> list[tuple[str, str, Any]]:
    """Decode a chunk, leaving out SSE comment blocks (lines starting with ':')."""
    blocks = [
        b
        for b in raw.split(b"\n\n")
        if b and not all(line.startswith(b":") for line in b.split(b"\n"))
    ]
    return decode_events(b"".join(block + b"\n\n" for block in blocks))


async def next_events(agen: AsyncIterator[bytes]) -> list[tuple[str, str, Any]]:
    """The events of the next chunk that has any (comments are skipped)."""
    while True:
        events = events_of(await anext(agen))
        if events:
            return events


async def take(agen: AsyncIterator[bytes], count: int) -> list[tuple[str, str, Any]]:
    """The next `count` events, whatever the chunking of the stream."""
    events: list[tuple[str, str, Any]] = []
    while len(events) < count:
        events += await asyncio.wait_for(next_events(agen), 60)
    assert len(events) == count, events
    return events


async def nothing_ready(
    agen: AsyncIterator[bytes],
) -> asyncio.Future[list[tuple[str, str, Any]]]:
    """Start reading and check no event is ready; return the pending read.

    The feed lives on this loop: a few turns of it let the read run until it
    waits for a publish, whatever the machine's speed.
    """
    pending = asyncio.ensure_future(next_events(agen))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not pending.done()
    return pending


def runs(events: list[tuple[str, str, Any]]) -> list[tuple[str, str]]:
    return [(event_id, data["id"]) for event_id, kind, data in events if kind == "run"]


def test_new_subscriber_gets_only_live_events() -> None:
    async def main() -> None:
        feed = RunFeed(BOOT)
        publish(feed, 3)
        agen = feed.follow(None)
        pending = await nothing_ready(agen)
        publish(feed, 2, start=4)
        events = await pending
        if len(events) < 2:
            events += await take(agen, 2 - len(events))
        assert runs(events) == [(f"{BOOT}-4", "run4"), (f"{BOOT}-5", "run5")]
        await agen.aclose()

    run_async(main)


@pytest.mark.parametrize("last", [0, 1, 2, 4])
def test_resume_within_the_ring_gets_what_was_missed(last: int) -> None:
    async def main() -> None:
        feed = RunFeed(BOOT, keep=10)
        publish(feed, 5)
        agen = feed.follow(f"{BOOT}-{last}")
        events = await take(agen, 5 - last)
        assert runs(events) == [(f"{BOOT}-{n}", f"run{n}") for n in range(last + 1, 6)]
        pending = await nothing_ready(agen)
        publish(feed, 1, start=6)
        assert runs(await pending) == [(f"{BOOT}-6", "run6")]
        await agen.aclose()

    run_async(main)


def test_resume_at_the_latest_id_gets_nothing_until_new() -> None:
    async def main() -> None:
        feed = RunFeed(BOOT)
        publish(feed, 3)
        agen = feed.follow(f"{BOOT}-3")
        pending = await nothing_ready(agen)
        publish(feed, 1, start=4)
        assert runs(await pending) == [(f"{BOOT}-4", "run4")]
        await agen.aclose()

    run_async(main)


def test_oldest_kept_boundary() -> None:
    """keep=3 after 10 events holds 8, 9, 10: an id of 7 misses nothing, 6 does."""

    async def main() -> None:
        feed = RunFeed(BOOT, keep=3)
        publish(feed, 10)
        agen = feed.follow(f"{BOOT}-7")
        events = await take(agen, 3)
        assert [kind for _, kind, _ in events] == ["run"] * 3
        assert runs(events) == [(f"{BOOT}-{n}", f"run{n}") for n in (8, 9, 10)]
        await agen.aclose()

        agen = feed.follow(f"{BOOT}-6")
        (event_id, kind, data), *_ = await take(agen, 1)
        assert (event_id, kind) == (f"{BOOT}-10", "reset")
        assert isinstance(data, dict)
        await agen.aclose()

    run_async(main)


@pytest.mark.parametrize(
    "last_event_id",
    [
        "0badb00t-3",  # another boot
        f"{BOOT}-99",  # from the future
        f"{BOOT}-",
        f"{BOOT}-x",
        f"{BOOT}--1",
        f"{BOOT}-3 ",
        "3",
        "",
        "garbage",
    ],
)
def test_unknown_ids_get_reset_first_then_live_events(last_event_id: str) -> None:
    async def main() -> None:
        feed = RunFeed(BOOT)
        publish(feed, 5)
        agen = feed.follow(last_event_id)
        (event_id, kind, data), *_ = await take(agen, 1)
        assert kind == "reset"
        assert event_id == f"{BOOT}-5"  # a valid resume point for the next reconnect
        assert "reason" in data
        pending = await nothing_ready(agen)  # the missed history is not replayed
        publish(feed, 1, start=6)
        assert runs(await pending) == [(f"{BOOT}-6", "run6")]
        await agen.aclose()

    run_async(main)


def test_non_ascii_digits_in_id_get_reset_not_an_error() -> None:
    # str.isdigit() accepts "²", which int() rejects.
    async def main() -> None:
        feed = RunFeed(BOOT)
        publish(feed, 2)
        agen = feed.follow(f"{BOOT}-²")
        (_, kind, _), *_ = await take(agen, 1)
        assert kind == "reset"
        await agen.aclose()

    run_async(main)


def test_boot_with_dashes_is_recognised() -> None:
    async def main() -> None:
        feed = RunFeed("boot-with-dashes")
        publish(feed, 3)
        agen = feed.follow("boot-with-dashes-1")
        assert runs(await take(agen, 2)) == [
            ("boot-with-dashes-2", "run2"),
            ("boot-with-dashes-3", "run3"),
        ]
        await agen.aclose()

    run_async(main)


def test_reset_id_is_a_valid_resume_point() -> None:
    async def main() -> None:
        feed = RunFeed(BOOT)
        publish(feed, 4)
        agen = feed.follow("otherboot-4")
        (reset_id, kind, _), *_ = await take(agen, 1)
        assert kind == "reset"
        await agen.aclose()
        publish(feed, 2, start=5)
        agen = feed.follow(reset_id)
        assert runs(await take(agen, 2)) == [(f"{BOOT}-5", "run5"), (f"{BOOT}-6", "run6")]
        await agen.aclose()

    run_async(main)


def test_subscriber_that_falls_behind_the_ring_gets_reset() -> None:
    async def main() -> None:
        feed = RunFeed(BOOT, keep=3)
        agen = feed.follow(None)
        pending = await nothing_ready(agen)
        publish(feed, 10)  # more than the ring holds before the subscriber runs
        (event_id, kind, _), *_ = await pending
        assert (event_id, kind) == (f"{BOOT}-10", "reset")
        pending = await nothing_ready(agen)
        publish(feed, 1, start=11)
        assert runs(await pending) == [(f"{BOOT}-11", "run11")]
        await agen.aclose()

    run_async(main)


def test_every_subscriber_sees_each_event_once_in_order() -> None:
    async def main() -> None:
        feed = RunFeed(BOOT, keep=1000)
        agens = [feed.follow(None) for _ in range(3)]
        firsts = [await nothing_ready(agen) for agen in agens]  # all subscribed now
        for n in range(1, 51):
            feed.publish({"id": f"run{n}"})
            if n % 7 == 0:
                await asyncio.sleep(0)
        for agen, first in zip(agens, firsts, strict=True):
            events = await first
            events += await take(agen, 50 - len(events))
            assert runs(events) == [(f"{BOOT}-{n}", f"run{n}") for n in range(1, 51)]
            await agen.aclose()

    run_async(main)


def test_close_ends_followers() -> None:
    async def main() -> None:
        feed = RunFeed(BOOT)
        agen = feed.follow(None)
        pending = await nothing_ready(agen)
        feed.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(pending, 2)

    run_async(main)
