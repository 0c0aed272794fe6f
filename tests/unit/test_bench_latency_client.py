"""Benchmark 15's readers (bench/latency_client.py): each line once, in
order, with the stamp of the read that completed it, however the bytes are
cut; anything else is reported."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from backend.events import encode_event
from bench.latency_client import parse_attach, parse_sse

AT = "2026-01-01T00:00:00.250Z"


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(payload)) + payload


def cut(raw: bytes, sizes: list[int]) -> list[tuple[float, bytes]]:
    """`raw` in reads of the given sizes (the rest in one), stamped 1.0, 2.0, ..."""
    reads: list[tuple[float, bytes]] = []
    pos = 0
    for size in [*sizes, len(raw)]:
        if pos >= len(raw):
            break
        reads.append((float(len(reads) + 1), raw[pos : pos + size]))
        pos += size
    return reads


def test_attach_lines_stamped_by_the_read_that_ends_them() -> None:
    head = b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n"
    body = frame(1, b"0\n1") + frame(1, b"\n2\n") + frame(2, b"err\n")
    # Head and the first frame's header in read 1, the rest byte by byte.
    reads = cut(head + body, [len(head) + 8, *([1] * len(body))])
    got = parse_attach(reads)
    assert got.errors == []
    assert got.texts == ["0", "1", "2", "err"]
    # A frame counts when whole: "0" with the first frame's last byte, read 4
    # (its header came with the head in read 1, then "0", "\n", "1").
    assert got.times == sorted(got.times)
    assert got.times[0] == 4.0
    assert got.times[-1] == float(len(reads))


def test_attach_refused_or_unterminated_is_reported() -> None:
    assert parse_attach([(1.0, b"HTTP/1.1 404 Not Found\r\n\r\n")]).errors
    head = b"HTTP/1.1 101 UPGRADED\r\n\r\n"
    assert parse_attach([(1.0, head + frame(1, b"0\n1"))]).errors


def sse(events: list[tuple[str, dict[str, object]]]) -> bytes:
    body = b"".join(encode_event(i, kind, data) for i, (kind, data) in enumerate(events, 1))
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked


def log(first: int, lines: list[str], **extra: object) -> tuple[str, dict[str, object]]:
    return ("log", {"stream": "stdout", "at": AT, "first": first, "lines": lines, **extra})


def test_sse_lines_in_order_with_their_event_time() -> None:
    raw = sse([("status", {"status": "running"}), log(1, ["0", "1"]), log(3, ["2"]), ("done", {})])
    got = parse_sse(cut(raw, [5] * 200))
    assert got.errors == []
    assert got.texts == ["0", "1", "2"]
    assert got.times == sorted(got.times) and got.times[0] < got.times[2]
    # `at` on the monotonic clock: the same offset for every line of an event.
    at = datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=UTC).timestamp()
    offsets = {round(at - r, 3) for r in got.read_at}
    assert len(offsets) == 1


def test_sse_gaps_partial_lines_and_no_done_are_reported() -> None:
    gap = sse([log(1, ["0"]), ("done", {})]).replace(b"id: 1\n", b"id: 2\n")
    assert any("expected 1" in e for e in parse_sse(cut(gap, [])).errors)
    partial = sse([log(1, ["0"], partial=True), ("done", {})])
    assert parse_sse(cut(partial, [])).errors
    skipped = sse([log(1, ["0"]), log(3, ["2"]), ("done", {})])
    assert parse_sse(cut(skipped, [])).errors
    undone = sse([log(1, ["0"])])
    assert "no done event" in parse_sse(cut(undone, [])).errors
