"""Re-attach after a restart (backend/runs/reattach.py), with the in-memory engine.

A killed server is played back exactly: the run's log is what a real
`OutputRelay` recorded of the container's first output before it died
(`record_before_crash`), and the container (a `FakeDocker` program) goes on
printing while the server is down and after the restart. What must hold:
every line exactly once per stream, in order, numbered without a gap,
contiguous event ids, the right end.
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.engines.fake import (
    FakeDocker,
    Program,
    log_messages,
    recorded_error,
    recorded_logs,
    stderr,
    stdout,
)
from backend.engines.frames import FrameDecoder
from backend.events import EventType, now_rfc3339
from backend.models import RunRecord, RunSpec, RunStatus
from backend.runs.reattach import (
    KeptLines,
    ReattachPipeline,
    Recorded,
    SkipRecorded,
    plan,
    timestamp,
)
from backend.runs.relay import OutputRelay
from backend.runs.runner import Runner, links_for, new_run_id
from backend.settings import Settings
from backend.storage.eventlog import EventLog
from backend.storage.reader import Event, LineJoiner, join_lines, read_events
from backend.storage.store import RunStore
from tests.unit.conftest import BASE, MakeRunner, assert_ended, events_of, wait_until

LONG_AGO = "2000-01-01T00:00:00.000000000Z"
FLUSHED = 1e-9  # partial_line_delay: a partial line is sent at the next read with nothing


class Crash(Exception):
    """The server was killed here."""


class BeforeCrash:
    """The attach stream the killed server had read: `chunks`, then the kill.
    With `flushes`, a read with nothing after each chunk: its partial lines
    are sent (with a partial_line_delay of FLUSHED, they are due by then)."""

    def __init__(self, chunks: Sequence[bytes], flushes: bool) -> None:
        self._chunks: list[bytes | None] = []
        for chunk in chunks:
            self._chunks += [chunk, None] if flushes else [chunk]

    def read(self, timeout: float | None) -> bytes | None:
        if not self._chunks:
            raise Crash
        return self._chunks.pop(0)

    def close(self) -> None:
        pass


def record_before_crash(
    settings: Settings,
    loop: asyncio.AbstractEventLoop,
    run_id: str,
    chunks: Sequence[bytes],
    *,
    tty: bool,
    flushes: bool = True,
    statuses: Sequence[str] = ("queued", "creating", "starting", "running"),
) -> int:
    """The run's log as the server left it: its statuses, then what its relay
    made of `chunks` before the kill. Its last event id."""
    events = EventLog(settings.events_file(run_id), loop)
    for status in statuses:
        events.append(EventType.STATUS, {"status": status, "at": now_rfc3339()})
    if statuses[-1] == "running":
        with pytest.raises(Crash):
            OutputRelay(events, settings).run(BeforeCrash(chunks, flushes), tty=tty)
    events.close()
    return events.last_id


def expected_lines(output: Sequence[bytes], tty: bool) -> dict[str, list[str]]:
    """Every line of each stream of attach bytes, as docs/api.md defines lines."""
    data: dict[str, bytes] = {}
    pieces = [(0, b"".join(output))] if tty else FrameDecoder().feed(b"".join(output))
    for stream, payload in pieces:
        name = "tty" if tty else ("stderr" if stream == 2 else "stdout")
        data[name] = data.get(name, b"") + payload
    lines: dict[str, list[str]] = {}
    for name, raw in data.items():
        *ended, rest = raw.decode(errors="replace").split("\n")
        lines[name] = [line[:-1] if line.endswith("\r") else line for line in ended]
        if rest:
            lines[name].append(rest)
    return lines


def lines_by_stream(events: list[Event]) -> dict[str, list[str]]:
    joiner = LineJoiner()
    lines = join_lines(events, joiner)
    assert joiner.problems == []
    assert [line.n for line in lines] == list(range(1, len(lines) + 1))
    by_stream: dict[str, list[str]] = {}
    for line in lines:
        by_stream.setdefault(line.stream, []).append(line.text)
    return by_stream


def notices(events: list[Event]) -> list[str]:
    return [e.data["message"] for e in events if e.type == EventType.NOTICE]


# -- every line once, whatever the output and wherever the kill -------------------------------

PIECES = [b"a", b"bc", b"\n", b"\r", b"\r\n", b"\xff", b"\xc3", b"\xa9", "é".encode(), b"\n\n"]
write = st.lists(st.sampled_from(PIECES), min_size=1, max_size=6).map(b"".join)


@settings(max_examples=150, deadline=None)
@given(
    writes=st.lists(st.tuples(st.sampled_from([1, 2]), write), min_size=1, max_size=10),
    tty=st.booleans(),
    crash=st.integers(0, 10),
    down=st.integers(0, 10),
    partial_flushed=st.booleans(),
    exited_before=st.booleans(),
)
def test_every_line_once_in_order_wherever_the_server_was_killed(
    writes: list[tuple[int, bytes]],
    tty: bool,
    crash: int,
    down: int,
    partial_flushed: bool,
    exited_before: bool,
) -> None:
    """Killed after `crash` writes (lines in progress recorded as partial when
    `partial_flushed`), down while the container printed up to `down`, then
    re-attached while it prints the rest (or after it has exited)."""
    crash = min(crash, len(writes))
    down = max(crash, min(down, len(writes)))
    output = [data if tty else (stdout if s == 1 else stderr)(data) for s, data in writes]
    loop = asyncio.new_event_loop()
    daemon = FakeDocker(images=[BASE])
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        config = Settings(
            data_dir=data_dir,
            partial_line_delay=FLUSHED if partial_flushed else 3600,
            max_log_bytes=1 << 20,
        )
        config.events_dir.mkdir(parents=True)
        try:
            spec = RunSpec(image=BASE, command=["print"], tty=tty)
            run_id = new_run_id()
            record_before_crash(
                config, loop, run_id, output[:crash], tty=tty, flushes=partial_flushed
            )
            later = daemon.gate("after the restart")
            program = Program(output=[*output[:down], later, *output[down:]], exit_code=3)
            container_id = daemon.add_container(run_id, spec, program)
            with daemon() as engine:
                engine.start(container_id)
            later.wait_reached()
            if exited_before:
                later.release()
                wait_until(lambda: not daemon.containers[container_id].running, "its exit")
            record = RunRecord(
                id=run_id,
                status=RunStatus.RUNNING,
                spec=spec,
                created_at=now_rfc3339(),
                links=links_for(run_id),
            )
            path = config.events_file(run_id)
            pipeline = ReattachPipeline(
                record, EventLog.load(path, loop), config, Recorded.read(path, "running")
            )
            pipeline.assign("local", daemon)
            releaser = threading.Thread(target=later.release)  # in any order with the catch-up
            releaser.start()
            pipeline.execute()
            releaser.join()
            events = list(read_events(path))
            assert [e.number for e in events] == list(range(1, len(events) + 1))
            assert [e.type for e in events].count("done") == 1
            assert events[-1].type == "done"
            assert events[-1].data["status"] == "failed" and events[-1].data["exit_code"] == 3
            expected = {k: v for k, v in expected_lines(output, tty).items() if v}
            assert lines_by_stream(events) == expected
            assert record.log_lines == sum(len(v) for v in expected.values())
            assert record.log_bytes == len(b"".join(d for _, d in writes))
            # (re-attached, or it exited first: the release races with the catch-up)
            assert [n.split(": ")[0] for n in notices(events)] == ["pullrun restarted"]
        finally:
            daemon.close()
            loop.close()


# -- the parts -----------------------------------------------------------------------------------


def log_events(*batches: tuple[str, int, list[str], bool]) -> Iterator[dict[str, Any]]:
    for stream, first, lines, partial in batches:
        yield {"stream": stream, "first": first, "lines": lines, "partial": partial}


def test_the_recorded_lines_per_stream_and_the_open_ones() -> None:
    recorded = Recorded()
    for data in log_events(
        ("stdout", 1, ["a", "b"], False),
        ("stderr", 3, ["e", "pa"], True),
        ("stdout", 5, ["c"], True),
        ("stderr", 4, ["rt"], True),
        ("stderr", 4, ["ial"], False),  # it goes alone: line 5 was numbered since
        ("stderr", 6, ["f"], False),
    ):
        recorded.add_log(data)
    out, err = recorded.streams["stdout"], recorded.streams["stderr"]
    assert (out.complete, out.last, out.open_number, out.open_text) == (2, "b", 5, "c")
    assert (err.complete, err.last, err.open_number, err.open_text) == (3, "f", None, None)
    assert recorded.last_number == 6


def test_the_phase_is_the_log_s_and_the_word_for_it_the_later_one(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    events = EventLog(tmp_path / "run.events", loop)
    for status in ("queued", "creating", "starting"):
        events.append(EventType.STATUS, {"status": status})
    events.close()
    loop.close()
    for saved, was in (("creating", "starting"), ("running", "running")):
        recorded = Recorded.read(tmp_path / "run.events", saved)
        assert (recorded.phase, recorded.was) == ("start", was)


def skipped(skip: SkipRecorded, chunks: Sequence[bytes]) -> tuple[bytes, int]:
    out = b"".join(skip.feed(chunk) for chunk in chunks)
    rest, short = skip.finish()
    return out + rest, short


def test_a_skip_drops_the_recorded_lines_and_the_recorded_start_of_the_open_one() -> None:
    log = [b"one\ntw", b"o\nthr", b"ee and", b" more\nfour\n"]
    assert skipped(SkipRecorded(2, "thr"), log) == (b"ee and more\nfour\n", 0)
    assert skipped(SkipRecorded(0, None), log) == (b"".join(log), 0)
    assert skipped(SkipRecorded(4, None), log) == (b"", 0)
    assert skipped(SkipRecorded(6, None), log) == (b"", 2)  # fewer lines than recorded
    # the last line, unterminated at the container's end, was recorded whole
    assert skipped(SkipRecorded(2, None), [b"a\nb"]) == (b"", 0)
    # invalid UTF-8, recorded as U+FFFD
    assert skipped(SkipRecorded(0, "x\ufffdy"), [b"x\xffyz\n"]) == (b"z\n", 0)
    # a CR kept back by a partial flush (it may start a CR LF) goes on to the assembler
    assert skipped(SkipRecorded(0, "ab"), [b"ab\r\n"]) == (b"\r\n", 0)


def test_the_kept_lines_say_where_the_last_recorded_line_is() -> None:
    kept = KeptLines("l3", 3)
    for chunk in (b"l1\nl", b"2\r\nl3\nl4\n", b"l5"):
        kept.feed(chunk)
    kept.finish()
    assert (kept.lines, kept.at_matches, kept.match_before) == (5, True, 0)
    rotated = KeptLines("l3", 3)
    rotated.feed(b"l2\nl3\nl4\n")
    rotated.finish()
    assert (rotated.lines, rotated.at_matches, rotated.match_before) == (3, False, 2)


def test_a_plan_skips_by_count_follows_a_rotation_and_says_when_it_lost_track() -> None:
    recorded = Recorded()
    for data in log_events(("stdout", 1, ["l1", "l2", "l3"], False), ("stdout", 4, ["p"], True)):
        recorded.add_log(data)

    def planned(log: bytes) -> tuple[bytes, list[str], list[str]]:
        kept = KeptLines("l3", 3)
        kept.feed(log)
        kept.finish()
        resume = plan(recorded, {"stdout": kept})
        rest, _ = skipped(resume.skips["stdout"], [log])
        return rest, resume.closed, resume.notices

    assert planned(b"l1\nl2\nl3\npq\n") == (b"q\n", [], [])
    assert planned(b"l3\npq\n") == (b"q\n", [], [])  # rotated, the last recorded line kept
    rest, closed, said = planned(b"pq\nl5\n")  # rotated past it
    assert (rest, closed) == (b"pq\nl5\n", ["stdout"])
    assert said == [
        "the engine's log of stdout was rotated: it keeps 2 lines, and no longer the last "
        "of the 3 pullrun had recorded; the lines printed after that one and before the "
        "oldest the engine kept are missing (how many is not known)"
    ]


def test_engine_times_with_nanoseconds_and_the_zero_time() -> None:
    assert timestamp("2024-05-01T12:00:00.123456789Z") == pytest.approx(1714564800.123456789)
    assert timestamp("2024-05-01T14:00:00+02:00") == 1714564800.0
    assert timestamp("0001-01-01T00:00:00Z") is None
    assert timestamp(None) is None


# -- the fake's logs endpoint is the recorded one ---------------------------------------------


def _frames(raw: bytes) -> list[tuple[int, bytes]]:
    frames, pos = [], 0
    while pos < len(raw):
        size = int.from_bytes(raw[pos + 4 : pos + 8], "big")
        frames.append((raw[pos], raw[pos + 8 : pos + 8 + size]))
        pos += 8 + size
    return frames


@pytest.mark.parametrize("name", ["multiplexed", "split-line", "tty"])
def test_the_fake_log_is_what_the_engine_logged_of_the_attach_bytes(name: str) -> None:
    rec = recorded_logs(name)
    attach, raw = base64.b64decode(rec["attach"]), base64.b64decode(rec["raw"])
    assert base64.b64decode(rec["follow"]) == raw
    messages = log_messages(attach, tty=rec["tty"], exited=True)
    if rec["tty"]:
        assert b"".join(payload for _, payload in messages) == raw
    else:
        assert messages == _frames(raw)  # a frame per line
    if "while_running" in rec:  # a line is logged once it ends
        first_two = b"".join(stdout(p) if s == 1 else stderr(p) for s, p in _frames(attach)[:2])
        running = log_messages(first_two, tty=False, exited=False)
        assert running == _frames(base64.b64decode(rec["while_running"]))


def test_the_fake_log_of_driver_none_and_of_a_container_attached_after_its_exit(
    daemon: FakeDocker,
) -> None:
    spec = RunSpec(image=BASE, command=["true"])
    silent = daemon.add_container("r1", spec, Program(log_driver="none"))
    done = daemon.add_container("r2", spec)
    with daemon() as engine:
        with pytest.raises(type(recorded_error("logs-driver-none"))) as refused:
            engine.logs(silent, follow=True)
        assert refused.value.response.status_code == 501  # type: ignore[attr-defined]
        assert engine.logs(done, follow=True).read(None) == b""  # created: nothing, at once
        engine.start(done)
        engine.wait(done)
        assert recorded_logs("attach-exited")["read_within_2s"] is None
        assert engine.attach(done).read(0.01) is None


# -- the runner: recover() takes runs up again ----------------------------------------------------


def crashed(
    settings: Settings,
    loop: asyncio.AbstractEventLoop,
    daemon: FakeDocker,
    printed: Sequence[bytes] = (),
    program: Program | None = None,
    *,
    started: bool = True,
    status: str = "running",
    partial_flushed: bool = True,
    engine: str | None = None,
    **spec: Any,
) -> RunRecord:
    """A run a killed server left `status`, having recorded `printed`; its
    container (unless `program` is None) runs `program`."""
    settings.events_dir.mkdir(parents=True, exist_ok=True)
    run_spec = RunSpec(image=BASE, command=["print"], **spec)
    run_id = new_run_id()
    statuses = ("queued", "creating", "starting", "running")
    delay = FLUSHED if partial_flushed else 3600
    recording = settings.model_copy(update={"partial_line_delay": delay})
    last = record_before_crash(
        recording,
        loop,
        run_id,
        printed,
        tty=run_spec.tty,
        flushes=partial_flushed,
        statuses=statuses[: statuses.index(status) + 1],
    )
    record = RunRecord(
        id=run_id,
        status=RunStatus(status),
        spec=run_spec,
        engine=engine,
        created_at=now_rfc3339(),
        links=links_for(run_id),
        last_event_id=last,
    )
    if program is not None:
        record.container_id = daemon.add_container(run_id, run_spec, program)
        if started:
            with daemon() as fake:
                fake.start(record.container_id)
            record.started_at = now_rfc3339()
    store = RunStore(settings.db_path)
    store.insert(record)
    store.close()
    return record


def ended(runner: Runner, run_id: str) -> tuple[RunRecord, list[Event]]:
    wait_until(lambda: run_id not in runner._active, f"run {run_id} to end")
    record = runner.store.get(run_id)
    assert record is not None
    assert_ended(runner.settings, record)
    return record, events_of(runner.settings, run_id)


def taken_up(runner: Runner, daemon: FakeDocker, follows: int = 1) -> None:
    """Wait until the re-attached run reads the engine's log with follow."""
    wait_until(
        lambda: sum(1 for c in daemon.calls_of("logs") if c.kwargs["follow"]) >= follows,
        "the re-attached run to follow its container",
    )


def test_a_running_container_is_followed_again_with_every_line_once(
    settings: Settings, loop: asyncio.AbstractEventLoop, daemon: FakeDocker, make_runner: MakeRunner
) -> None:
    printed = [stdout(b"one\ntw"), stderr(b"err 1\n")]
    later = daemon.gate("after the restart")
    output = [*printed, stdout(b"o\nthree\n"), stderr(b"err 2\n"), later, stdout(b"four\n")]
    run = crashed(settings, loop, daemon, printed, Program(output=output))
    later.wait_reached()
    runner = make_runner()
    assert runner.recover() == [run.id]
    assert runner.engines.first.active == 1  # it holds a slot of its engine
    taken_up(runner, daemon)
    assert runner.get(run.id).status == RunStatus.RUNNING
    later.release()
    record, events = ended(runner, run.id)
    assert (record.status, record.exit_code, record.engine) == (RunStatus.SUCCEEDED, 0, "local")
    assert lines_by_stream(events) == {
        "stdout": ["one", "two", "three", "four"],
        "stderr": ["err 1", "err 2"],
    }
    assert events[run.last_event_id].type == EventType.NOTICE  # the next id, no gap
    assert notices(events) == ["pullrun restarted: re-attached to its container"]
    assert (record.log_lines, record.log_bytes) == (
        6,
        len(b"one\ntwo\nthree\nfour\nerr 1\nerr 2\n"),
    )
    assert daemon.container_of(run.id).state == "removed"  # auto_remove, as usual
    assert runner.engines.first.active == 0


def test_a_tty_run_with_an_open_line_goes_on_in_that_line(
    settings: Settings, loop: asyncio.AbstractEventLoop, daemon: FakeDocker, make_runner: MakeRunner
) -> None:
    printed = [b"one\r\nprompt: "]
    output = [*printed, b"yes\r\n", b"three"]
    run = crashed(settings, loop, daemon, printed, Program(output=output), tty=True)
    runner = make_runner()
    runner.recover()
    _, events = ended(runner, run.id)
    assert lines_by_stream(events) == {"tty": ["one", "prompt: yes", "three"]}


def test_a_container_that_exited_meanwhile_has_its_lines_and_exit_recorded(
    settings: Settings, loop: asyncio.AbstractEventLoop, daemon: FakeDocker, make_runner: MakeRunner
) -> None:
    printed = [stdout(b"a\n")]
    program = Program(output=[*printed, stdout(b"b\n"), stderr(b"dying\n")], exit_code=137)
    program.oom_killed = True
    run = crashed(settings, loop, daemon, printed, program)
    wait_until(lambda: daemon.container_of(run.id).state == "exited", "the container to exit")
    runner = make_runner()
    runner.recover()
    record, events = ended(runner, run.id)
    assert (record.status, record.exit_code, record.oom_killed) == (RunStatus.FAILED, 137, True)
    assert lines_by_stream(events) == {"stdout": ["a", "b"], "stderr": ["dying"]}
    assert notices(events) == ["pullrun restarted: its container exited meanwhile"]
    assert daemon.calls_of("stop") == []


def test_a_run_whose_start_was_cut_is_interrupted_and_its_container_removed(
    settings: Settings, loop: asyncio.AbstractEventLoop, daemon: FakeDocker, make_runner: MakeRunner
) -> None:
    never_started = crashed(
        settings, loop, daemon, program=Program(), started=False, status="starting"
    )
    no_container = crashed(settings, loop, daemon, status="creating")
    runner = make_runner()
    assert sorted(runner.recover()) == sorted([never_started.id, no_container.id])
    for run, was in ((never_started, "starting"), (no_container, "creating")):
        record, _ = ended(runner, run.id)
        assert record.status == RunStatus.ERROR and record.error is not None
        assert (record.error.phase, record.error.message) == (
            "interrupted",
            f"the server stopped while this run was {was}",
        )
    assert daemon.container_of(never_started.id).state == "removed"


def test_a_log_driver_that_keeps_nothing_gives_the_output_from_now_on_and_a_notice(
    settings: Settings, loop: asyncio.AbstractEventLoop, daemon: FakeDocker, make_runner: MakeRunner
) -> None:
    printed = [stdout(b"a\npar")]
    later = daemon.gate("after the restart")
    output = [*printed, stdout(b"tial\nlost\n"), later, stdout(b"seen\n")]
    run = crashed(settings, loop, daemon, printed, Program(output=output, log_driver="none"))
    later.wait_reached()  # it printed `lost` while the server was down
    runner = make_runner()
    runner.recover()
    # attached (and checked to be still running) before the container goes on
    wait_until(lambda: len(daemon.calls_of("inspect")) >= 2, "the attach")
    later.release()
    record, events = ended(runner, run.id)
    assert lines_by_stream(events) == {"stdout": ["a", "par", "seen"]}
    assert record.status == RunStatus.SUCCEEDED
    assert notices(events)[1] == (
        "the engine keeps no log of this container (configured logging driver does not "
        "support reading): what it printed while pullrun was down is missing (how many "
        "lines is not known); its output: from now on"
    )


@pytest.mark.parametrize(("kept", "lost_track"), [(2, False), (1, True)])
def test_a_rotated_log_is_caught_up_from_the_last_recorded_line_it_still_has(
    settings: Settings,
    loop: asyncio.AbstractEventLoop,
    daemon: FakeDocker,
    make_runner: MakeRunner,
    kept: int,
    lost_track: bool,
) -> None:
    """The engine keeps only its newest `kept` lines: l3 (the last recorded)
    and l4, or l4 alone (rotated past l3: nothing to tell what is missing)."""
    printed = [stdout(b"l1\nl2\nl3\n")]
    later = daemon.gate("after the restart")
    output = [*printed, stdout(b"l4\n"), later, stdout(b"l5\n")]
    run = crashed(settings, loop, daemon, printed, Program(output=output, log_kept=kept))
    later.wait_reached()
    runner = make_runner()
    runner.recover()
    taken_up(runner, daemon)
    later.release()
    _, events = ended(runner, run.id)
    assert lines_by_stream(events) == {"stdout": ["l1", "l2", "l3", "l4", "l5"]}
    assert len(notices(events)) == 1 + lost_track


def test_the_timeout_counts_from_the_container_start(
    settings: Settings, loop: asyncio.AbstractEventLoop, daemon: FakeDocker, make_runner: MakeRunner
) -> None:
    hang = daemon.gate("never")
    run = crashed(
        settings, loop, daemon, [stdout(b"a\n")], Program([stdout(b"a\n"), hang]), timeout=60
    )
    daemon.container_of(run.id).started_at = LONG_AGO  # its 60 s are long gone
    runner = make_runner()
    runner.recover()
    record, events = ended(runner, run.id)
    assert (record.status, record.exit_code) == (RunStatus.TIMED_OUT, 143)
    assert "timeout of 60s reached: stopping the container" in notices(events)


def test_a_container_that_ran_past_its_timeout_while_the_server_was_down_timed_out(
    settings: Settings, loop: asyncio.AbstractEventLoop, daemon: FakeDocker, make_runner: MakeRunner
) -> None:
    run = crashed(settings, loop, daemon, [], Program([stdout(b"done\n")]), timeout=60)
    container = daemon.container_of(run.id)
    wait_until(lambda: container.state == "exited", "the container to exit")
    container.started_at, container.finished_at = LONG_AGO, "2000-01-01T00:02:00Z"
    runner = make_runner()
    runner.recover()
    record, events = ended(runner, run.id)
    assert (record.status, record.exit_code) == (RunStatus.TIMED_OUT, 0)
    assert record.durations.run == 120
    assert notices(events)[-1] == (
        "timeout of 60s passed while pullrun was down: "
        "the container ran 120.0s and exited by itself"
    )


def test_cancel_stops_a_re_attached_run(
    settings: Settings, loop: asyncio.AbstractEventLoop, daemon: FakeDocker, make_runner: MakeRunner
) -> None:
    hang = daemon.gate("never")
    kept = crashed(settings, loop, daemon, [], Program([hang]), auto_remove=False)
    removed = crashed(settings, loop, daemon, [], Program([daemon.gate("never either")]))
    runner = make_runner()
    runner.recover()
    taken_up(runner, daemon, follows=2)
    for run in (kept, removed):
        runner.cancel(run.id)
        record, _ = ended(runner, run.id)
        assert (record.status, record.exit_code) == (RunStatus.CANCELED, 143)
        assert record.error is not None and record.error.phase == "run"
    assert daemon.container_of(kept.id).state == "exited"
    assert daemon.container_of(removed.id).state == "removed"


def test_output_past_max_log_bytes_stays_counted_not_kept(
    settings: Settings, loop: asyncio.AbstractEventLoop, daemon: FakeDocker, make_runner: MakeRunner
) -> None:
    small = settings.model_copy(update={"max_log_bytes": 10})
    printed = [stdout(b"aaaa\nbbbb\ncccc\n")]
    run = crashed(small, loop, daemon, printed, Program([*printed, stdout(b"dddd\n")]))
    runner = make_runner(max_log_bytes=10)
    runner.recover()
    record, events = ended(runner, run.id)
    assert lines_by_stream(events) == {"stdout": ["aaaa", "bbbb"]}
    assert (record.log_lines, record.dropped_lines, record.dropped_bytes) == (4, 2, 10)


def test_without_its_engine_a_run_ends_with_an_error_naming_it(
    settings: Settings, loop: asyncio.AbstractEventLoop, daemon: FakeDocker, make_runner: MakeRunner
) -> None:
    gone = crashed(settings, loop, daemon, [], Program(), engine="gone")
    runner = make_runner()
    runner.recover()
    record, _ = ended(runner, gone.id)
    assert record.error is not None and record.error.phase == "interrupted"
    assert record.error.message == (
        "the server stopped while this run was running; its engine gone is not in the engines file"
    )
    down = crashed(settings, loop, daemon, [], Program())
    daemon.down = True
    runner.recover()
    record, _ = ended(runner, down.id)
    assert record.error is not None and record.error.phase == "run"
    assert record.error.message.startswith("engine local: ")
