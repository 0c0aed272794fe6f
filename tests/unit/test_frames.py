"""FrameDecoder: Docker's 8-byte-header multiplexed attach stream, any chunk boundaries."""

from __future__ import annotations

import struct
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from backend.engines.frames import STDERR, STDOUT, FrameDecoder


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def runs(frames: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Merge consecutive same-stream payloads, dropping empty ones: the byte order
    a reader sees, which any correct decoder must reproduce."""
    out: list[tuple[int, bytes]] = []
    for stream, payload in frames:
        if not payload:
            continue
        if out and out[-1][0] == stream:
            out[-1] = (stream, out[-1][1] + payload)
        else:
            out.append((stream, payload))
    return out


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, prev = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[prev:p])
        prev = p
    return pieces


def test_header_layout() -> None:
    assert frame(2, b"hey") == b"\x02\x00\x00\x00\x00\x00\x00\x03hey"


def test_single_frame_in_one_chunk() -> None:
    d = FrameDecoder()
    assert d.feed(frame(1, b"hello\n")) == [(STDOUT, b"hello\n")]
    assert d.pending == 0


def test_header_split_byte_by_byte() -> None:
    d = FrameDecoder()
    data = frame(2, b"err")
    out = []
    for i in range(len(data)):
        out += d.feed(data[i : i + 1])
        if i < len(data) - 1:
            assert d.pending == i + 1
    assert out == [(STDERR, b"err")]
    assert d.pending == 0


def test_frame_is_not_a_line_and_payload_is_kept_verbatim() -> None:
    d = FrameDecoder()
    payload = b"no newline \r\x00\xff"
    assert d.feed(frame(1, payload)) == [(STDOUT, payload)]


def test_stream_switches_are_kept_in_order() -> None:
    d = FrameDecoder()
    data = frame(1, b"a") + frame(1, b"b") + frame(2, b"c") + frame(1, b"d")
    assert d.feed(data) == [(STDOUT, b"ab"), (STDERR, b"c"), (STDOUT, b"d")]


def test_stdin_echo_stream_zero_counts_as_stdout() -> None:
    d = FrameDecoder()
    assert d.feed(frame(0, b"typed")) == [(STDOUT, b"typed")]


def test_zero_length_frame_is_consumed() -> None:
    d = FrameDecoder()
    out = d.feed(frame(2, b"") + frame(1, b"x"))
    assert runs(out) == [(STDOUT, b"x")]
    assert d.pending == 0


def test_incomplete_frame_is_held() -> None:
    d = FrameDecoder()
    data = frame(1, b"0123456789")
    assert d.feed(data[:12]) == []
    assert d.pending == 12
    assert d.feed(data[12:]) == [(STDOUT, b"0123456789")]
    assert d.pending == 0


def test_large_payload_size_uses_all_four_bytes() -> None:
    d = FrameDecoder()
    payload = bytes(range(256)) * 300  # 76,800 bytes: size needs the third byte
    assert d.feed(frame(2, payload)) == [(STDERR, payload)]


frames_st = st.lists(
    st.tuples(st.sampled_from([STDOUT, STDERR]), st.binary(max_size=40)), max_size=30
)


@settings(max_examples=500, deadline=None)
@given(frames_st, st.lists(st.integers(min_value=0), max_size=30))
def test_any_frames_any_chunking_round_trip(
    frames: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    data = b"".join(frame(s, p) for s, p in frames)
    decoder = FrameDecoder()
    decoded: list[tuple[int, bytes]] = []
    for piece in split_at(data, cuts):
        out = decoder.feed(piece)
        # Consecutive frames of one stream are merged within a feed.
        assert all(a[0] != b[0] for a, b in pairwise(out))
        decoded += out
    assert decoder.pending == 0
    for stream in (STDOUT, STDERR):
        assert b"".join(p for s, p in decoded if s == stream) == b"".join(
            p for s, p in frames if s == stream
        )
    # Same interleaving of the two streams, byte for byte.
    assert runs(decoded) == runs(frames)


@settings(max_examples=200, deadline=None)
@given(frames_st, st.integers(min_value=1, max_value=7))
def test_pending_counts_unfinished_frame_bytes(frames: list[tuple[int, bytes]], extra: int) -> None:
    data = b"".join(frame(s, p) for s, p in frames)
    tail = frame(STDERR, b"tail-payload")[:extra]
    decoder = FrameDecoder()
    decoded = decoder.feed(data + tail)
    assert decoder.pending == extra
    assert runs(decoded) == runs(frames)
