"""Re-attach after a restart: a run a crash left unfinished goes on where it was.

At start-up `Runner.recover()` gives every unfinished run that had got past
its pull (it was creating, starting or running) to a `ReattachPipeline`, which
finds the run's container on the run's engine by its label and:

- running: follows it again. The engine's log (the logs endpoint from the
  first line, with follow: one stream, catch-up and follow without a gap) is
  relayed less what the run's event log already has: per stream, its complete
  lines and the recorded part of a line still open (partial). The rest goes
  on as `log` events with the next event ids and line numbers; the timeout
  counts from the container's start (State.StartedAt).
- exited while pullrun was down: the same catch-up, then its exit (code, OOM).
- never started (State.StartedAt zero), or no container at all: its create or
  start was cut: `error`, phase `interrupted`, and the container is removed.

Where the engine kept nothing to catch up from (log driver `none`, or a log
rotated past the last line recorded) a `notice` says what may be missing.
Finish, cancel, timeout and auto_remove are RunPipeline's own.

A run on a swarm goes on the same way through `SwarmRun.resume`
(runs/swarm.py), also from `queued` or `pulling` (its service exists then):
its service found by label, its task followed from the state it is in, the
task's log caught up with the same count and skip, the timeout counted from
the task's start, the service removed at the end; gone: `interrupted`.
"""

from __future__ import annotations

import codecs
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..engines import Engine, OutputStream, engine_message, unreachable
from ..engines.frames import FrameDecoder
from ..errors import PipelineError
from ..events import EventType
from ..models import PHASE_STATUS, PIPELINE_PHASES, Phase, RunError, RunRecord, RunStatus
from ..settings import Settings
from ..storage.eventlog import EventLog
from ..storage.reader import read_events
from .lines import LineAssembler, LogBatch
from .pipeline import RunPipeline, Unplaced
from .relay import OutputRelay, stream_pieces

DROPPING = "output past max_log_bytes"  # the relay's notice when it starts dropping
PHASE_OF_STATUS = {status.value: phase for phase, status in PHASE_STATUS.items()}
_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def timestamp(value: object) -> float | None:
    """Seconds since the epoch of an RFC 3339 time (the engine's have nanoseconds);
    None for the engine's zero time (`0001-01-01T00:00:00Z`: never) or none."""
    match = _TIME.fullmatch(str(value or ""))
    if match is None or match[1].startswith("0001-"):
        return None
    zone = "+00:00" if match[3] == "Z" else match[3]
    fraction = int(match[2][:9].ljust(9, "0")) / 1e9 if match[2] else 0.0
    return datetime.fromisoformat(match[1] + zone).timestamp() + fraction


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _text_bytes(lines: list[str], partial: bool) -> int:
    """What the relay counts of a `log` event against max_log_bytes."""
    if not lines:
        return 0
    return len("\n".join(lines).encode()) + (0 if partial else 1)


# -- what the run's event log has ----------------------------------------------------------


@dataclass
class StreamRecord:
    """The lines of one stream (`stdout`, `stderr`, or `tty`) in a run's log."""

    complete: int = 0
    last: str | None = None  # the text of the last complete line
    open_number: int | None = None  # a line sent in part (partial), not ended yet
    open_pieces: list[str] = field(default_factory=list)

    @property
    def open_text(self) -> str | None:
        return "".join(self.open_pieces) if self.open_number is not None else None


@dataclass
class Recorded:
    """What a run's event log holds, read once at recovery."""

    status: str = "queued"  # of its last `status` event
    was: str = "queued"  # the later of that and the record's (the message's word)
    streams: dict[str, StreamRecord] = field(default_factory=dict)
    last_number: int = 0  # the highest line number
    kept_bytes: int = 0  # counted against max_log_bytes
    dropping: bool = False  # past max_log_bytes: further lines are counted only

    @property
    def phase(self) -> Phase:
        return PHASE_OF_STATUS.get(self.status, Phase.QUEUE)

    @classmethod
    def read(cls, path: Path, saved_status: str = "queued") -> Recorded:
        """The log at `path`. Its phase is its last `status` event's (written
        before the record is saved: a record ahead of it is no real crash's);
        `was` the later of that and `saved_status`."""
        recorded = cls()
        for event in read_events(path):
            if event.type == EventType.LOG:
                recorded.add_log(event.data)
            elif event.type == EventType.STATUS:
                recorded.status = str(event.data.get("status"))
            elif event.type == EventType.NOTICE and str(event.data.get("message")).startswith(
                DROPPING
            ):
                recorded.dropping = True
        saved = PHASE_OF_STATUS.get(saved_status, Phase.QUEUE)
        later = PIPELINE_PHASES.index(saved) > PIPELINE_PHASES.index(recorded.phase)
        recorded.was = saved_status if later else recorded.status
        return recorded

    def add_log(self, data: dict[str, Any]) -> None:
        """One `log` event (docs/api.md): lines numbered per run, the first one
        continuing the stream's open line if it has one, the last one open
        when `partial`."""
        name = str(data["stream"])
        lines = [str(text) for text in data["lines"]]
        first = int(data["first"])
        partial = bool(data["partial"])
        stream = self.streams.setdefault(name, StreamRecord())
        self.kept_bytes += _text_bytes(lines, partial)
        if not lines:
            return
        self.last_number = max(self.last_number, first + len(lines) - 1)
        rest = lines
        if stream.open_number is not None:
            stream.open_pieces.append(lines[0])
            rest = lines[1:]
            if partial and not rest:
                return  # still open
            stream.complete += 1
            stream.last = "".join(stream.open_pieces)
            stream.open_number, stream.open_pieces = None, []
        if partial and rest:
            stream.open_number, stream.open_pieces = first + len(lines) - 1, [rest[-1]]
            rest = rest[:-1]
        if rest:
            stream.complete += len(rest)
            stream.last = rest[-1]


# -- what the engine's log has -----------------------------------------------------------------


class KeptLines:
    """One stream of the engine's log, counted: how many lines it keeps, and
    where among them is the last line the run recorded (`last`, recorded as
    line `at` of the stream)."""

    def __init__(self, last: str | None, at: int) -> None:
        self._last = last
        self._target = last.encode() if last is not None else None
        self._at = at
        self.lines = 0
        self.at_matches = False  # line `at` is the recorded last line
        self.match_before = 0  # the last line before `at` that is, 0 if none
        self._line = bytearray()
        self._open = False  # bytes since the last newline (counting only)

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if self._target is None:
            self.lines += data.count(b"\n")
            self._open = not data.endswith(b"\n")
            return
        *ended, rest = data.split(b"\n")
        if ended:
            ended[0] = bytes(self._line) + ended[0]
            self._line = bytearray()
            for line in ended:
                self._ended(line)
        self._line += rest

    def finish(self) -> None:
        """The end of the log: an unterminated last line counts (the container exited)."""
        if self._target is None:
            self.lines += self._open
        elif self._line:
            self._ended(bytes(self._line))
        self._open, self._line = False, bytearray()

    def _ended(self, line: bytes) -> None:
        self.lines += 1
        if not self._same(line):
            return
        if self.lines == self._at:
            self.at_matches = True
        elif self.lines < self._at:
            self.match_before = self.lines

    def _same(self, line: bytes) -> bool:
        target = self._target
        if line == target or (line.endswith(b"\r") and line[:-1] == target):
            return True
        last = self._last or ""
        # invalid UTF-8 was recorded as U+FFFD
        return "\ufffd" in last and line.decode(errors="replace") in (last, last + "\r")


def count_kept(stream: OutputStream, recorded: Recorded, tty: bool) -> dict[str, KeptLines]:
    """Read a (not followed) engine log to its end, counting it per stream."""
    kept = {name: KeptLines(s.last, s.complete) for name, s in recorded.streams.items()}
    frames = FrameDecoder()
    try:
        while chunk := stream.read(None):
            for name, data in stream_pieces(chunk, frames, tty):
                if name in kept:
                    kept[name].feed(data)
    finally:
        stream.close()
    for counter in kept.values():
        counter.finish()
    return kept


# -- from one to the other ---------------------------------------------------------------------


class SkipRecorded:
    """One stream of the engine's log less what the run's log already has: its
    first `lines` lines, then the recorded start (`opened`) of the next one."""

    def __init__(self, lines: int, opened: str | None) -> None:
        self._lines = lines
        self._mid = False  # in a skipped line (bytes since its start)
        self._opened = opened
        self._held = bytearray()  # the start of the open line, until it can be cut

    def feed(self, data: bytes) -> bytes:
        """What of `data` goes on to the line assembler."""
        if self._lines:
            data = self._skip_lines(data)
            if self._lines:
                return b""
        if self._opened is None:
            return data
        self._held += data
        if len(self._held) < len(self._opened.encode()) and b"\n" not in self._held:
            return b""
        return self._cut_open()

    def finish(self) -> tuple[bytes, int]:
        """The log ended: (bytes still for the assembler, recorded lines it did not have)."""
        if self._lines and self._mid:  # its unterminated last line, recorded whole at the end
            self._lines -= 1
        short, self._lines = self._lines, 0
        if self._opened is not None and self._held:
            return self._cut_open(), short
        self._opened = None
        return b"", short

    def _skip_lines(self, data: bytes) -> bytes:
        count = data.count(b"\n")
        if count < self._lines:
            self._lines -= count
            if data:
                self._mid = not data.endswith(b"\n")
            return b""
        end = -1
        for _ in range(self._lines):
            end = data.index(b"\n", end + 1)
        self._lines, self._mid = 0, False
        return data[end + 1 :]

    def _cut_open(self) -> bytes:
        held, opened = bytes(self._held), self._opened or ""
        self._held, self._opened = bytearray(), None
        encoded = opened.encode()
        if held.startswith(encoded):
            return held[len(encoded) :]
        # Invalid UTF-8 was recorded as U+FFFD: decode as the relay did, byte by
        # byte. It had sent all it decoded, less a last CR (it may start a
        # CR LF); the bytes its decoder still held (a sequence begun) go on.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = ""
        for index in range(len(held)):
            text += decoder.decode(held[index : index + 1])
            cut = index + 1 - len(decoder.getstate()[0])
            if text == opened:
                return held[cut:]
            if text == opened + "\r" and held[cut - 1] == 0x0D:
                return held[cut - 1 :]
            if len(text) > len(opened) + 1:
                break
        return held  # not what was recorded: relay it all


@dataclass
class Resume:
    """How the engine's log goes on from the run's event log."""

    skips: dict[str, SkipRecorded]
    closed: list[str]  # streams whose open line cannot be continued: ended as it is
    notices: list[str]


def plan(recorded: Recorded, kept: dict[str, KeptLines]) -> Resume:
    """Per stream, what to skip of the engine's log: the recorded lines, found
    by their count and checked by the text of the last one; after a rotation
    (that line earlier in the log than its count says) where it is now."""
    resume = Resume({}, [], [])
    for name, stream in recorded.streams.items():
        counter = kept[name]
        skip = stream.complete
        if stream.complete and not counter.at_matches and not recorded.dropping:
            skip = counter.match_before
        elif recorded.dropping and counter.lines < stream.complete:
            skip = counter.lines
        if skip == stream.complete or (skip and not recorded.dropping):
            resume.skips[name] = SkipRecorded(skip, stream.open_text)
            continue
        # The engine's log no longer reaches back to the last recorded line.
        resume.skips[name] = SkipRecorded(skip, None)
        if stream.open_number is not None:
            resume.closed.append(name)
        what = "its output" if name == "tty" else name
        resume.notices.append(
            f"the engine's log of {what} was rotated: it keeps {counter.lines} lines, "
            f"and no longer the last of the {stream.complete} pullrun had recorded; "
            "the lines printed after that one and before the oldest the engine kept "
            "are missing (how many is not known)"
        )
    return resume


class ResumedAssembler(LineAssembler):
    """Line numbering that goes on from a run's log: the next number, and the
    lines still open (their continuations keep their numbers)."""

    def __init__(self, partial_delay: float, last_number: int, open_lines: dict[str, int]) -> None:
        super().__init__(partial_delay)
        self._next = last_number + 1
        for stream, number in open_lines.items():
            self._state(stream).open_number = number


class ResumedRelay(OutputRelay):
    """OutputRelay going on from a run's log: its counts and line numbers, each
    stream's bytes less what is recorded (`skips`), open lines that cannot go
    on (`closed`) ended first."""

    def __init__(
        self,
        events: EventLog,
        settings: Settings,
        recorded: Recorded,
        skips: dict[str, SkipRecorded],
        *,
        closed: list[str],
        raw_bytes: int = 0,
    ) -> None:
        super().__init__(events, settings)
        self._skips = skips
        self._kept_bytes = recorded.kept_bytes
        self._kept_through = recorded.last_number
        self._dropping = recorded.dropping
        self._raw_bytes = raw_bytes
        opened = {n: s.open_number for n, s in recorded.streams.items() if s.open_number}
        self._closing = [LogBatch(n, opened.pop(n), [""], False) for n in closed if n in opened]
        self._assembler = ResumedAssembler(
            settings.partial_line_delay, recorded.last_number, opened
        )

    def _start(self) -> LineAssembler:
        assert self._assembler is not None
        self._emit(self._closing)  # open lines that cannot go on are ended first
        return self._assembler

    def _new_bytes(self, stream: str, data: bytes) -> bytes:
        skip = self._skips.get(stream)
        return skip.feed(data) if skip is not None else data

    def _end(self, assembler: LineAssembler) -> None:
        for name, skip in self._skips.items():
            rest, _ = skip.finish()
            if rest:
                self._emit(assembler.feed(name, rest, time.monotonic(), time.time()))


class NoOutput:
    """The output of a container nothing more can be read of."""

    def read(self, timeout: float | None) -> bytes | None:
        return b""

    def close(self) -> None:
        pass


# -- the run ----------------------------------------------------------------------------------


class ReattachPipeline(RunPipeline):
    """A run taken up again after a restart (see the module's docstring)."""

    def __init__(
        self,
        record: RunRecord,
        events: EventLog,
        settings: Settings,
        recorded: Recorded,
        *,
        save: Callable[[RunRecord], None] = lambda record: None,
    ) -> None:
        super().__init__(record, events, settings, save=save)
        self.recorded = recorded
        self._phase = recorded.phase
        record.status = self._phase.status
        created = timestamp(record.created_at)
        if created is not None:  # its total duration counts from its creation
            self._created_mono -= max(0.0, time.time() - created)
        self._no_engine: str | None = None

    def no_engine(self, message: str) -> None:
        """Its engine is not there any more: `execute` ends it at once."""
        self._no_engine = message

    def execute(self) -> None:
        if self._no_engine is not None:
            was = self.record.status.value
            message = f"the server stopped while this run was {was}; {self._no_engine}"
            self._finish(RunStatus.ERROR, RunError(phase=Phase.INTERRUPTED, message=message))
            return
        try:
            super().execute()
        except Unplaced as exc:  # its engine does not answer: nothing to re-attach to
            self._finish(RunStatus.ERROR, RunError(phase=self._phase, message=str(exc)))

    def _run_swarm(self, engine: Engine) -> RunStatus:
        from .swarm import resume_on_swarm  # (it builds on this module)

        return resume_on_swarm(self, engine, self.recorded)

    def _check_canceled(self) -> None:
        # Until its container is found a cancel only marks it: `_run` then
        # stops the container, and the run ends as a canceled one does.
        if self._container_id is not None:
            super()._check_canceled()

    def _run(self, engine: Engine) -> RunStatus:
        record = self.record
        was = record.status.value
        container_id = self._container(engine)
        state: dict[str, Any] = {}
        if container_id is not None:
            state = engine.inspect(container_id).get("State") or {}
        started = timestamp(state.get("StartedAt"))
        if container_id is None or started is None:  # its create or start was cut
            if container_id is not None:
                try:
                    engine.remove(container_id)
                except Exception as exc:
                    message = f"could not remove the container: {engine_message(exc)}"
                    self.events.append(EventType.NOTICE, {"message": message})
            raise PipelineError(Phase.INTERRUPTED, f"the server stopped while this run was {was}")
        running = bool(state.get("Running"))
        record.container_id = container_id
        record.started_at = record.started_at or rfc3339(started)
        with self._lock:
            self._container_id = container_id
            self._exited = not running
        if self._phase != Phase.RUN:
            self._enter(Phase.RUN)
        elapsed = max(0.0, time.time() - started)
        self._marks[Phase.RUN] = time.monotonic() - elapsed
        what = "re-attached to its container" if running else "its container exited meanwhile"
        self.events.append(EventType.NOTICE, {"message": f"pullrun restarted: {what}"})
        if running and self._cancel_reason is not None:  # canceled while it was found
            self._stop_container_async(container_id)

        output, relay = self._output(engine, container_id, running)
        timeout = record.spec.timeout or self.settings.default_timeout
        timer: threading.Timer | None = None
        if running:  # the deadline counts from the container's start
            timer = threading.Timer(max(0.0, timeout - elapsed), self._on_timeout, [container_id])
            timer.daemon = True
            timer.start()
        try:
            try:
                self._relay(relay, output)
                exit_code, wait_error = engine.wait(container_id)
                with self._lock:
                    self._exited = True
            finally:
                if timer is not None:
                    timer.cancel()
        finally:
            output.close()
        finished = None if running else timestamp(state.get("FinishedAt"))
        if finished is not None:
            ran = max(0.0, finished - started)
            if ran > timeout:
                self._timed_out = True
                self.events.append(
                    EventType.NOTICE,
                    {
                        "message": f"timeout of {timeout:g}s passed while pullrun was down: "
                        f"the container ran {ran:.1f}s and exited by itself"
                    },
                )
            status = self._exit_status(engine, container_id, exit_code, wait_error)
            record.durations.run = round(ran, 4)
            return status
        return self._exit_status(engine, container_id, exit_code, wait_error)

    def _container(self, engine: Engine) -> str | None:
        """The run's container, found by its label (the record may not name it yet)."""
        found = engine.managed_containers(self.record.id)
        if self.record.container_id in found:
            return self.record.container_id
        return found[0] if found else None

    def _output(
        self, engine: Engine, container_id: str, running: bool
    ) -> tuple[OutputStream, ResumedRelay]:
        """The engine's log less what is recorded, followed; or, when the log
        cannot be read back, the output from now on, and a notice."""
        recorded = self.recorded
        tty = self.record.spec.tty
        try:
            kept = count_kept(engine.logs(container_id, follow=False), recorded, tty)
        except Exception as exc:
            if unreachable(exc):
                raise
            return self._without_log(engine, container_id, running, engine_message(exc))
        resume = plan(recorded, kept)
        for message in resume.notices:
            self.events.append(EventType.NOTICE, {"message": message})
        relay = ResumedRelay(
            self.events, self.settings, recorded, resume.skips, closed=resume.closed
        )
        return engine.logs(container_id, follow=True), relay

    def _without_log(
        self, engine: Engine, container_id: str, running: bool, why: str
    ) -> tuple[OutputStream, ResumedRelay]:
        recorded = self.recorded
        what = "from now on" if running else "nothing more: it has exited"
        self.events.append(
            EventType.NOTICE,
            {
                "message": f"the engine keeps no log of this container ({why}): what it "
                f"printed while pullrun was down is missing (how many lines is not known); "
                f"its output: {what}"
            },
        )
        relay = ResumedRelay(
            self.events,
            self.settings,
            recorded,
            {},
            closed=list(recorded.streams),
            raw_bytes=recorded.kept_bytes,
        )
        if not running:
            return NoOutput(), relay
        output = engine.attach(container_id)
        # Attached after it exited, nothing would ever come (logs.json `attach-exited`).
        if not (engine.inspect(container_id).get("State") or {}).get("Running"):
            output.close()
            return NoOutput(), relay
        return output, relay
