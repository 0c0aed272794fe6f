"""Container output for unit tests: what a stream's lines are, and the batches
LineAssembler makes of a sequence of writes and flushes."""

from __future__ import annotations

from backend.runs.lines import LineAssembler, LogBatch

# (stream or "flush", bytes written, seconds since the previous operation)
Operation = tuple[str, bytes, float]


def whole_lines(data: bytes) -> list[str]:
    """The lines of a complete stream, decoded in one go (the spec's definition)."""
    text = data.decode("utf-8", "replace")
    *complete, last = text.split("\n")
    lines = [s[:-1] if s.endswith("\r") else s for s in complete]
    if last:
        lines.append(last)
    return lines


def assemble(
    operations: list[Operation], *, finished: bool = True, delay: float = 0.25
) -> tuple[list[LogBatch], dict[str, bytes], LineAssembler]:
    """Batches of the writes (with partial-line flushes as time passes) and
    the bytes each stream got; an unfinished run is flushed a second later."""
    assembler = LineAssembler(delay)
    batches: list[LogBatch] = []
    printed: dict[str, bytes] = {"stdout": b"", "stderr": b""}
    now = 0.0
    for kind, data, dt in operations:
        now += dt
        if kind == "flush":
            batches += assembler.flush_due(now)
        else:
            printed[kind] = printed.get(kind, b"") + data
            batches += assembler.feed(kind, data, now)
    batches += assembler.finish() if finished else assembler.flush_due(now + 1.0)
    return batches, printed, assembler
