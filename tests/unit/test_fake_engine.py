"""The in-memory engine against its recordings and the real engine's threading
contract: what the pipeline's tests rely on it for."""

from __future__ import annotations

import threading
from typing import Any

import docker.errors
import pytest

from backend.engines import Engine, engine_message
from backend.engines.fake import (
    FakeDocker,
    Program,
    PullScript,
    recorded_attach,
    recorded_containers,
    recorded_error,
    recorded_errors,
    recorded_pull,
    recorded_version,
    stderr,
    stdout,
)
from backend.engines.frames import FrameDecoder
from backend.errors import EngineUnavailable
from backend.models import RunSpec
from tests.unit.conftest import BASE, LAYERS

PLACEHOLDERS = {
    key: "{" + key + "}"
    for key in (
        "image",
        "repository",
        "repository_quoted",
        "path",
        "tag",
        "registry",
        "container",
        "name",
        "socket",
    )
}
ERRORS = sorted(name for name, entry in recorded_errors().items() if entry.get("exception"))


def spec(command: list[str] | None = None, **fields: Any) -> RunSpec:
    return RunSpec(image=BASE, command=command or ["true"], **fields)


def started(daemon: FakeDocker, program: Program, **fields: Any) -> tuple[Engine, str]:
    daemon.program(["prog"], program)
    engine = daemon()
    container = engine.create("r1", spec(["prog"], **fields), name="pullrun-r1")
    return engine, container


def read_to_end(output: Any) -> bytes:
    data = bytearray()
    while chunk := output.read(None):
        data += chunk
    return bytes(data)


# -- recordings ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ERRORS)
def test_recorded_errors_are_rebuilt_as_the_engine_raised_them(name: str) -> None:
    entry = recorded_errors()[name]
    exc = recorded_error(name, **PLACEHOLDERS)
    cls = type(exc)
    assert f"{cls.__module__}.{cls.__qualname__}" == entry["exception"]
    assert str(exc) == entry["text"]
    shown = exc.message if isinstance(exc, EngineUnavailable) else engine_message(exc)
    assert shown == entry["message"]
    if "status_code" in entry:
        assert isinstance(exc, docker.errors.APIError)
        assert exc.status_code == entry["status_code"]


def test_placeholders_are_filled_with_the_call_values() -> None:
    exc = recorded_error(
        "pull-unauthorized", registry="127.0.0.1:5001", path="pullrun/private", tag="latest"
    )
    assert engine_message(exc) == (
        'Head "http://127.0.0.1:5001/v2/pullrun/private/manifests/latest": '
        "no basic auth credentials"
    )


def test_frames_are_encoded_exactly_as_the_engine_sends_them() -> None:
    raw = recorded_attach("multiplexed")
    frames = []
    pos = 0
    while pos < len(raw):  # one frame at a time (the decoder would merge neighbours)
        size = int.from_bytes(raw[pos + 4 : pos + 8], "big")
        frames.append((raw[pos], raw[pos + 8 : pos + 8 + size]))
        pos += 8 + size
    assert frames == [(1, b"out\n"), (2, b"err\n"), (1, b"out2\nno newline")]
    rebuilt = b"".join((stdout if s == 1 else stderr)(payload) for s, payload in frames)
    assert rebuilt == raw
    assert FrameDecoder().feed(raw) == [(1, b"out\n"), (2, b"err\n"), (1, b"out2\nno newline")]


# -- containers ---------------------------------------------------------------------------


def test_attach_gets_the_program_output_then_eof_and_wait_the_exit(daemon: FakeDocker) -> None:
    raw = recorded_attach("multiplexed")
    engine, container = started(daemon, Program(output=[raw]))
    output = engine.attach(container)
    engine.start(container)
    assert read_to_end(output) == raw
    assert output.read(None) == b""
    assert engine.wait(container) == (0, None)
    state = engine.inspect(container)["State"]
    assert (state["Status"], state["ExitCode"], state["Running"]) == ("exited", 0, False)


def test_small_reads_split_frames_anywhere(daemon: FakeDocker) -> None:
    daemon.read_size = 3
    raw = recorded_attach("multiplexed")
    engine, container = started(daemon, Program(output=[raw]))
    output = engine.attach(container)
    engine.start(container)
    chunks = []
    while chunk := output.read(None):
        chunks.append(chunk)
    assert b"".join(chunks) == raw
    assert max(len(c) for c in chunks) == 3


def test_a_quiet_container_times_the_read_out_and_close_unblocks_a_reader(
    daemon: FakeDocker,
) -> None:
    gate = daemon.gate("quiet")
    engine, container = started(daemon, Program(output=[stdout(b"hi\n"), gate]))
    output = engine.attach(container)
    engine.start(container)
    assert output.read(None) == stdout(b"hi\n")
    gate.wait_reached()
    assert output.read(0) is None
    got: list[bytes | None] = []
    reader = threading.Thread(target=lambda: got.append(output.read(None)))
    reader.start()
    output.close()  # from this thread, while the reader is blocked
    reader.join(10)
    assert got == [b""]


def test_a_gate_holds_the_output_until_released(daemon: FakeDocker) -> None:
    gate = daemon.gate("prompt")
    engine, container = started(
        daemon, Program(output=[stdout(b"name? "), gate, stdout(b"bye\n")], exit_code=3)
    )
    output = engine.attach(container)
    engine.start(container)
    assert output.read(None) == stdout(b"name? ")
    gate.wait_reached()
    gate.release()
    assert read_to_end(output) == stdout(b"bye\n")
    assert engine.wait(container) == (recorded_containers()["exit-3"]["wait"]["StatusCode"], None)


@pytest.mark.parametrize(
    ("recording", "term_exit", "grace"),
    [("stop-term-handled", 143, 10.0), ("stop-term-ignored", None, 0.0)],
)
def test_stop_from_another_engine_ends_a_running_container(
    daemon: FakeDocker, recording: str, term_exit: int | None, grace: float
) -> None:
    gate = daemon.gate("forever")
    engine, container = started(daemon, Program(output=[gate], term_exit=term_exit))
    output = engine.attach(container)
    engine.start(container)
    gate.wait_reached()
    waited: list[tuple[int, str | None]] = []
    waiter = threading.Thread(target=lambda: waited.append(engine.wait(container)))
    waiter.start()
    assert waited == []  # it cannot exit before the stop: nothing releases the gate
    with daemon() as other:
        other.stop(container, grace)
    waiter.join(10)
    expected = recorded_containers()[recording]["wait"]["StatusCode"]
    assert waited == [(expected, None)]
    assert output.read(None) == b""
    assert engine.inspect(container)["State"]["ExitCode"] == expected


def test_oom_is_in_the_state_as_recorded(daemon: FakeDocker) -> None:
    recorded = recorded_containers()["oom"]
    engine, container = started(daemon, Program(exit_code=137, oom_killed=True))
    engine.start(container)
    assert engine.wait(container) == (recorded["wait"]["StatusCode"], None)
    state = engine.inspect(container)["State"]
    assert state["OOMKilled"] is recorded["state"]["OOMKilled"] is True
    assert set(state) == set(recorded["state"])


def test_a_failed_start_leaves_the_container_as_the_engine_does(daemon: FakeDocker) -> None:
    recorded = recorded_containers()["start-failed"]
    engine, container = started(daemon, Program(start_error="start-no-such-command"))
    with pytest.raises(docker.errors.APIError) as raised:
        engine.start(container)
    assert engine_message(raised.value) == recorded_errors()["start-no-such-command"]["message"]
    assert engine.inspect(container)["State"]["Status"] == recorded["state"]["Status"]
    assert list(engine.wait(container)) == recorded["engine_wait"]


def test_wait_on_a_container_never_started_answers_at_once(daemon: FakeDocker) -> None:
    engine, container = started(daemon, Program())
    recorded = recorded_containers()["created-never-started"]["wait"]
    assert engine.wait(container) == (recorded["StatusCode"], None)


def test_calls_on_a_gone_container_raise_the_engine_not_found(daemon: FakeDocker) -> None:
    engine, container = started(daemon, Program())
    engine.remove(container)
    engine.remove(container)  # gone already is fine
    for call in (engine.attach, engine.start, engine.wait, engine.inspect, engine.stop):
        with pytest.raises(docker.errors.NotFound, match="No such container"):
            call(container)


def test_create_fails_for_a_missing_image_and_a_taken_name(daemon: FakeDocker) -> None:
    engine = daemon()
    with pytest.raises(docker.errors.ImageNotFound) as missing:
        engine.create("r1", RunSpec(image="nosuch/image"), name="a")
    assert engine_message(missing.value) == "No such image: nosuch/image:latest"
    first = engine.create("r1", spec(), name="a")
    with pytest.raises(docker.errors.APIError) as taken:
        engine.create("r2", spec(), name="a")
    assert f'"/a" is already in use by container "{first}"' in engine_message(taken.value)


def test_remove_kills_a_running_container_and_can_fail_as_recorded(daemon: FakeDocker) -> None:
    gate = daemon.gate("forever")
    engine, container = started(daemon, Program(output=[gate]))
    engine.start(container)
    daemon.fail("remove", "remove-in-progress")
    with pytest.raises(docker.errors.APIError, match="already in progress"):
        engine.remove(container)
    assert engine.managed_containers("r1") == [container]
    engine.remove(container)
    assert engine.managed_containers("r1") == []
    assert engine.managed_containers() == []


# -- pulls ------------------------------------------------------------------------------------


def test_a_pull_replays_its_recording_and_leaves_the_image(daemon: FakeDocker) -> None:
    messages = recorded_pull("recorded-layers-one-cached")
    daemon.script_pull(LAYERS, PullScript(messages))
    engine = daemon()
    assert not engine.image_present(LAYERS)
    stream = engine.pull(LAYERS, platform=None, auth=None, stall_timeout=300)
    assert list(stream) == messages
    digest = next(m["status"] for m in messages if m.get("status", "").startswith("Digest: "))
    assert engine.image_digest(LAYERS) == digest.removeprefix("Digest: ")


def test_a_pull_of_an_unknown_image_is_refused_as_recorded(daemon: FakeDocker) -> None:
    with pytest.raises(docker.errors.NotFound) as refused:
        daemon().pull("127.0.0.1:5000/nosuch:1", platform=None, auth=None, stall_timeout=1)
    assert engine_message(refused.value) == (
        "manifest for 127.0.0.1:5000/nosuch:1 not found: manifest unknown: manifest unknown"
    )


def test_pull_close_from_another_thread_unblocks_the_reader(daemon: FakeDocker) -> None:
    messages = recorded_pull("recorded-layers-throttled")
    pause = daemon.gate("mid-pull")
    daemon.script_pull(LAYERS, PullScript(messages, pauses={5: pause}))
    stream = daemon().pull(LAYERS, platform=None, auth=None, stall_timeout=300)
    got: list[dict[str, Any]] = []
    failure: list[BaseException] = []

    def read() -> None:
        try:
            got.extend(stream)
        except Exception as exc:
            failure.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    pause.wait_reached()
    stream.close()
    reader.join(10)
    assert got == messages[:5]
    recorded = recorded_errors()["pull-stream-closed"]
    assert [f"{type(e).__module__}.{type(e).__qualname__}" for e in failure] == [
        recorded["exception"]
    ]


def test_a_pull_closed_before_the_first_read_just_ends(daemon: FakeDocker) -> None:
    daemon.script_pull(LAYERS, PullScript(recorded_pull("recorded-layers-one-cached")))
    stream = daemon().pull(LAYERS, platform=None, auth=None, stall_timeout=300)
    stream.close()
    assert list(stream) == []
    assert recorded_errors()["pull-stream-closed-before-read"]["exception"] is None


def test_the_pull_answer_waits_for_its_gate(daemon: FakeDocker) -> None:
    answer = daemon.gate("manifest")
    daemon.script_pull(
        LAYERS, PullScript(recorded_pull("recorded-layers-up-to-date"), answer=answer)
    )
    streams: list[Any] = []
    puller = threading.Thread(
        target=lambda: streams.append(
            daemon().pull(LAYERS, platform=None, auth=None, stall_timeout=300)
        )
    )
    puller.start()
    answer.wait_reached()
    assert streams == []
    answer.release()
    puller.join(10)
    assert len(list(streams[0])) == 3


def test_a_stalled_pull_raises_the_recorded_timeout_after_its_messages(daemon: FakeDocker) -> None:
    recorded = recorded_errors()["pull-stream-stall"]
    daemon.script_pull(LAYERS, PullScript(recorded["messages"], then="pull-stream-stall"))
    stream = daemon().pull(LAYERS, platform=None, auth=None, stall_timeout=300)
    got: list[dict[str, Any]] = []
    with pytest.raises(Exception, match="Read timed out") as raised:
        got.extend(stream)
    assert got == recorded["messages"]
    assert type(raised.value).__name__ == "ReadTimeoutError"


# -- the daemon -------------------------------------------------------------------------------


def test_a_daemon_that_is_down_fails_every_new_engine(daemon: FakeDocker) -> None:
    daemon.down = True
    with pytest.raises(EngineUnavailable) as raised:
        daemon()
    assert raised.value.message == recorded_errors()["engine-unreachable"]["message"]
    daemon.down = False
    with daemon() as engine:
        assert engine.version() == recorded_version()
    assert daemon.engines_open == 0


def test_hold_and_fail_apply_to_the_next_call_only(daemon: FakeDocker) -> None:
    engine = daemon()
    gate = daemon.hold("version")
    answers: list[dict[str, Any]] = []
    caller = threading.Thread(target=lambda: answers.append(engine.version()))
    caller.start()
    gate.wait_reached()
    assert answers == []
    gate.release()
    caller.join(10)
    assert answers[0]["Version"] == recorded_version()["Version"]
    daemon.fail("image_present", "engine-unreachable")
    with pytest.raises(EngineUnavailable):
        engine.image_present(BASE)
    assert engine.image_present(BASE)
    assert [c.op for c in daemon.calls] == ["version", "image_present", "image_present"]


def test_close_ends_whatever_is_still_blocked(daemon: FakeDocker) -> None:
    gate = daemon.gate("forever")
    engine, container = started(daemon, Program(output=[gate], term_exit=None))
    engine.start(container)
    gate.wait_reached()
    daemon.close()
    assert engine.wait(container)[0] == 137
