"""RunPipeline with the in-memory engine: every phase, its failures with the
real engine's words, cancel in each phase, timeout, and one `done` always."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from backend.engines import engine_message
from backend.engines.fake import (
    FakeDocker,
    Program,
    PullScript,
    image_values,
    recorded_attach,
    recorded_containers,
    recorded_error,
    recorded_errors,
    recorded_pull,
    stdout,
)
from backend.events import now_rfc3339
from backend.models import RegistryAuth, RunRecord, RunSpec, RunStatus
from backend.runs import pipeline as pipeline_module
from backend.runs.pipeline import RunPipeline
from backend.runs.runner import CANCEL_REASON, links_for, new_run_id
from backend.settings import Settings
from backend.storage.eventlog import EventLog
from backend.storage.reader import Event
from tests.unit.conftest import (
    BASE,
    DEADLINE,
    LAYERS,
    assert_ended,
    events_of,
    lines_of,
    wait_until,
)

PULLS = Path(__file__).resolve().parents[1] / "fixtures" / "pulls"
PULL_STREAMS = sorted(p.stem for p in PULLS.glob("*.jsonl"))
HANG = ["hang"]  # a command the tests script as a container that runs until stopped


@dataclass
class Run:
    pipeline: RunPipeline
    settings: Settings
    daemon: FakeDocker
    saved: list[RunRecord] = field(default_factory=list)
    thread: threading.Thread | None = None

    @property
    def record(self) -> RunRecord:
        return self.pipeline.record

    @property
    def id(self) -> str:
        return self.pipeline.record.id

    def execute(self) -> Run:
        """Run in this thread, to the end."""
        self.pipeline.execute()
        return self.ended()

    def start(self) -> Run:
        """Run in a worker thread (for tests that act while it runs)."""
        self.thread = threading.Thread(target=self.pipeline.execute, name=f"run-{self.id}")
        self.thread.start()
        return self

    def join(self) -> Run:
        assert self.thread is not None
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive(), f"run {self.id} did not end: {self.record.status}"
        return self.ended()

    def ended(self) -> Run:
        done = assert_ended(self.settings, self.record)
        assert self.saved[-1].model_dump() == self.record.model_dump()
        assert self.saved[-1].status == RunStatus(done.data["status"])
        assert self.daemon.engines_open == 0, "an engine was left open"
        return self

    @property
    def events(self) -> list[Event]:
        return events_of(self.settings, self.id)

    def of_type(self, event_type: str) -> list[Event]:
        return [e for e in self.events if e.type == event_type]

    @property
    def statuses(self) -> list[str]:
        return [e.data["status"] for e in self.of_type("status")]

    @property
    def notices(self) -> list[str]:
        return [e.data["message"] for e in self.of_type("notice")]

    @property
    def error(self) -> tuple[str, str] | None:
        error = self.record.error
        return (error.phase.value, error.message) if error else None

    def wait_for_done(self) -> Event:
        return wait_until(
            lambda: next((e for e in self.events if e.type == "done"), None),
            f"run {self.id} to append its done",
        )


MakeRun = Callable[..., Run]


@pytest.fixture
def make_run(
    settings: Settings, daemon: FakeDocker, loop: asyncio.AbstractEventLoop
) -> Iterator[MakeRun]:
    settings.events_dir.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []

    def make(
        *, auth: RegistryAuth | None = None, settings_: Settings | None = None, **spec: Any
    ) -> Run:
        spec.setdefault("image", BASE)
        spec.setdefault("command", ["true"])
        run_id = new_run_id()
        record = RunRecord(
            id=run_id,
            status=RunStatus.QUEUED,
            spec=RunSpec(**spec),
            created_at=now_rfc3339(),
            links=links_for(run_id),
        )
        use = settings_ or settings
        events = EventLog(use.events_file(run_id), loop)
        events.append("status", {"status": "queued", "at": record.created_at})  # as submit does
        record.last_event_id = events.last_id
        saved: list[RunRecord] = []
        pipeline = RunPipeline(
            record,
            events,
            use,
            auth=auth,
            engine_factory=daemon,
            save=lambda r: saved.append(r.model_copy(deep=True)),
        )
        run = Run(pipeline, use, daemon, saved)
        runs.append(run)
        return run

    yield make
    daemon.close()
    for run in runs:
        if run.thread is not None:
            run.thread.join(DEADLINE)


def hang(daemon: FakeDocker, *, term_exit: int | None = 143, before: bytes = b"") -> Any:
    """Script HANG: print `before`, then run until stopped; returns the gate it waits at."""
    gate = daemon.gate("running")
    output: list[Any] = [stdout(before)] if before else []
    daemon.program(HANG, Program(output=[*output, gate], term_exit=term_exit))
    return gate


def pull_error_text(messages: list[dict[str, Any]]) -> str | None:
    for message in messages:
        if message.get("error") or message.get("errorDetail"):
            return str(message.get("error") or message["errorDetail"]["message"])
    return None


# -- pull ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", PULL_STREAMS)
def test_every_recorded_pull_stream_is_relayed_to_its_end(
    make_run: MakeRun, daemon: FakeDocker, stream: str
) -> None:
    messages = recorded_pull(stream)
    daemon.script_pull(LAYERS, PullScript(messages))
    run = make_run(image=LAYERS, pull="always").execute()
    pulls = run.of_type("pull")
    failure = pull_error_text(messages)
    if failure is not None:
        assert run.record.status == RunStatus.ERROR
        assert run.error == ("pull", failure)
        assert pulls[-1].data["error"] is True and pulls[-1].data["message"] == failure
        assert len(pulls) == next(
            i + 1 for i, m in enumerate(messages) if m.get("error") or m.get("errorDetail")
        )
        assert daemon.calls_of("create") == []
        return
    assert run.record.status == RunStatus.SUCCEEDED, run.error
    assert len(pulls) == len(messages)
    assert [p.data["status"] for p in pulls] == [m.get("status", "") for m in messages]
    assert pulls[-1].data["overall"]["fraction"] == 1.0
    summary = run.record.pull
    assert summary is not None and summary["pulled"] is True
    assert summary["messages"] == len(messages)
    digests = [m["status"][8:] for m in messages if m.get("status", "").startswith("Digest: ")]
    assert run.record.image_digest == (digests[0] if digests else daemon.images[LAYERS])
    assert run.record.durations.pull is not None
    assert run.statuses == ["queued", "pulling", "creating", "starting", "running"]
    retries = [m for m in messages if str(m.get("status", "")).startswith("Retrying in")]
    assert run.notices == [f"pull of layer {m['id']}: {m['status']}" for m in retries]


def test_policy_missing_skips_the_pull_of_a_present_image(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    run = make_run(image=BASE, pull="missing").execute()
    assert run.record.status == RunStatus.SUCCEEDED
    assert daemon.calls_of("pull") == []
    assert run.record.pull == {"policy": "missing", "pulled": False}
    assert run.record.durations.pull is None
    assert run.record.image_digest == daemon.images[f"{BASE}"]
    assert run.statuses == ["queued", "creating", "starting", "running"]


def test_policy_missing_pulls_an_absent_image(make_run: MakeRun, daemon: FakeDocker) -> None:
    daemon.script_pull(LAYERS, PullScript(recorded_pull("recorded-layers-one-cached")))
    run = make_run(image=LAYERS, pull="missing").execute()
    assert run.record.status == RunStatus.SUCCEEDED
    assert run.record.pull is not None and run.record.pull["layers_cached"] == 1
    assert len(daemon.calls_of("pull")) == 1


def test_policy_always_pulls_a_present_image(make_run: MakeRun, daemon: FakeDocker) -> None:
    daemon.add_image(LAYERS)
    daemon.script_pull(LAYERS, PullScript(recorded_pull("recorded-layers-up-to-date")))
    run = make_run(image=LAYERS, pull="always").execute()
    assert run.record.status == RunStatus.SUCCEEDED
    assert run.record.pull is not None and run.record.pull["pulled"] is True
    assert [c.op for c in daemon.calls][:2] == ["pull", "create"]


def test_policy_never_runs_a_present_image_and_refuses_an_absent_one(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    assert make_run(image=BASE, pull="never").execute().record.status == RunStatus.SUCCEEDED
    run = make_run(image=LAYERS, pull="never").execute()
    assert run.error == ("pull", f"image {LAYERS} is not present and the pull policy is never")
    assert daemon.calls_of("pull") == []


@pytest.mark.parametrize(
    "refusal",
    [
        "pull-manifest-unknown",
        "pull-unauthorized",
        "pull-bad-credentials",
        "pull-registry-unreachable",
        "pull-no-answer",
    ],
)
def test_a_pull_refused_before_its_stream_ends_the_run_with_the_engine_words(
    make_run: MakeRun, daemon: FakeDocker, refusal: str
) -> None:
    daemon.script_pull(LAYERS, PullScript(refuse=refusal))
    run = make_run(image=LAYERS, pull="always").execute()
    expected = engine_message(recorded_error(refusal, **image_values(LAYERS)))
    assert "{" not in expected
    if refusal == "pull-no-answer":  # the read timeout is the stall detector here too
        stall = run.settings.pull_stall_timeout
        expected = f"no pull progress for {stall:g}s: pull abandoned"
    assert run.record.status == RunStatus.ERROR
    assert run.error == ("pull", expected)
    assert run.of_type("pull") == []
    assert run.statuses == ["queued", "pulling"]
    assert run.record.durations.pull is not None


def test_an_unknown_repository_is_the_engine_manifest_unknown(make_run: MakeRun) -> None:
    image = "127.0.0.1:5000/pullrun/nosuch:1.0"
    run = make_run(image=image).execute()
    assert run.error == (
        "pull",
        f"manifest for {image} not found: manifest unknown: manifest unknown",
    )


def test_a_stalled_pull_is_abandoned_with_the_stall_timeout_in_its_message(
    make_run: MakeRun, daemon: FakeDocker, settings: Settings
) -> None:
    recorded = recorded_errors()["pull-stream-stall"]
    daemon.script_pull(LAYERS, PullScript(recorded["messages"], then="pull-stream-stall"))
    run = make_run(image=LAYERS).execute()
    assert run.error == (
        "pull",
        f"no pull progress for {settings.pull_stall_timeout:g}s: pull abandoned",
    )
    assert len(run.of_type("pull")) == len(recorded["messages"])


def test_a_pull_stream_broken_by_the_engine_is_an_error_with_its_words(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    messages = recorded_pull("recorded-layers-throttled")[:10]
    daemon.script_pull(LAYERS, PullScript(messages, then="pull-stream-closed"))
    run = make_run(image=LAYERS).execute()
    assert run.error == ("pull", recorded_errors()["pull-stream-closed"]["message"])


def test_a_pull_stream_that_ends_before_its_status_line_is_not_a_pull(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    messages = recorded_pull("recorded-layers-one-cached")[:-1]
    daemon.script_pull(LAYERS, PullScript(messages))
    run = make_run(image=LAYERS).execute()
    assert run.error == ("pull", "the pull stream ended before the pull completed")
    assert daemon.calls_of("create") == []


def test_an_engine_failing_the_image_check_fails_the_pull(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    daemon.fail("image_present", "engine-unreachable")
    run = make_run(image=LAYERS).execute()
    assert run.error == ("pull", recorded_errors()["engine-unreachable"]["message"])


def test_registry_credentials_reach_the_pull_and_nothing_else(
    make_run: MakeRun, daemon: FakeDocker, settings: Settings
) -> None:
    daemon.script_pull(LAYERS, PullScript(recorded_pull("recorded-layers-one-cached")))
    auth = RegistryAuth(username="pullrun", password="s3cret-pw-xyz")
    run = make_run(image=LAYERS, auth=auth).execute()
    assert daemon.calls_of("pull")[0].kwargs["auth"] == {
        "username": "pullrun",
        "password": "s3cret-pw-xyz",
    }
    assert b"s3cret-pw-xyz" not in settings.events_file(run.id).read_bytes()
    assert "s3cret-pw-xyz" not in run.record.model_dump_json()


def test_an_unreachable_engine_ends_the_run_before_any_phase(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    daemon.down = True
    run = make_run().execute()
    assert run.error == ("queue", recorded_errors()["engine-unreachable"]["message"])
    assert run.statuses == ["queued"]
    assert daemon.engines_made == 0


# -- create, attach, start ---------------------------------------------------------------------


def test_create_fails_with_the_engine_words_and_leaves_nothing(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    daemon.fail("create", "create-no-such-image")
    run = make_run().execute()
    assert run.error == ("create", f"No such image: {BASE}")
    assert run.statuses == ["queued", "creating"]
    assert run.record.container_id is None
    assert daemon.live_containers() == []
    assert run.record.durations.create is not None


def test_a_container_name_in_use_fails_the_create(make_run: MakeRun, daemon: FakeDocker) -> None:
    run = make_run()
    other = daemon.add_container(run.id, RunSpec(image=BASE))
    run.execute()
    assert run.error == (
        "create",
        f'Conflict. The container name "/pullrun-{run.id}" is already in use by container '
        f'"{other}". You have to remove (or rename) that container to be able to reuse that name.',
    )
    assert [c.id for c in daemon.live_containers()] == [other]


def test_attach_fails_and_the_container_is_removed(make_run: MakeRun, daemon: FakeDocker) -> None:
    daemon.fail("attach", "attach-no-such-container")
    run = make_run().execute()
    container = run.record.container_id
    assert run.error == ("start", f"No such container: {container}")
    assert daemon.calls_of("start") == []
    assert daemon.live_containers() == []


@pytest.mark.parametrize("failure", ["start-no-such-command", "start-no-such-user"])
@pytest.mark.parametrize("auto_remove", [True, False])
def test_start_fails_with_the_engine_words(
    make_run: MakeRun, daemon: FakeDocker, failure: str, auto_remove: bool
) -> None:
    daemon.program(["broken"], Program(start_error=failure))
    run = make_run(command=["broken"], auto_remove=auto_remove).execute()
    assert run.error == ("start", recorded_errors()[failure]["message"])
    assert run.statuses == ["queued", "creating", "starting"]
    assert run.record.started_at is None and run.record.exit_code is None
    left = daemon.live_containers()
    assert [c.id for c in left] == ([] if auto_remove else [run.record.container_id])
    assert all(c.state == "created" for c in left)


# -- run --------------------------------------------------------------------------------------


def test_multiplexed_output_becomes_numbered_lines_per_stream(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    raw = recorded_attach("multiplexed")
    daemon.program(["talk"], Program(output=[raw]))
    run = make_run(command=["talk"]).execute()
    assert run.record.status == RunStatus.SUCCEEDED and run.record.exit_code == 0
    assert lines_of(run.events) == [
        ("stdout", "out"),
        ("stderr", "err"),
        ("stdout", "out2"),
        ("stdout", "no newline"),
    ]
    assert (run.record.log_lines, run.record.log_bytes) == (4, len("out\nerr\nout2\nno newline"))
    assert run.statuses == ["queued", "creating", "starting", "running"]
    assert run.record.started_at is not None
    assert all(
        getattr(run.record.durations, p) is not None
        for p in ("queue", "create", "start", "run", "total")
    )


def test_tty_output_is_one_stream_of_raw_bytes(make_run: MakeRun, daemon: FakeDocker) -> None:
    raw = recorded_attach("tty")
    daemon.program(["talk"], Program(output=[raw]))
    run = make_run(command=["talk"], tty=True).execute()
    assert lines_of(run.events) == [("tty", "one"), ("tty", "two\r"), ("tty", "threeerr")]
    assert run.record.log_bytes == len(raw)


def test_a_partial_line_is_sent_while_the_container_waits(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    gate = daemon.gate("prompt")
    daemon.program(["ask"], Program(output=[stdout(b"name? "), gate, stdout(b"bob\n")]))
    run = make_run(command=["ask"]).start()
    partial = wait_until(
        lambda: [e.data for e in run.of_type("log") if e.data["partial"]],
        "the prompt as a partial line",
    )
    at = partial[0].pop("at")  # when it was read (tests/unit/test_log_times.py)
    assert partial == [{"stream": "stdout", "first": 1, "lines": ["name? "], "partial": True}]
    assert isinstance(at, str) and at.endswith("Z")
    gate.release()
    run.join()
    assert lines_of(run.events) == [("stdout", "name? bob")]


def test_a_non_zero_exit_fails_the_run(make_run: MakeRun, daemon: FakeDocker) -> None:
    code = recorded_containers()["exit-3"]["wait"]["StatusCode"]
    daemon.program(["exit"], Program(exit_code=code))
    run = make_run(command=["exit"]).execute()
    assert (run.record.status, run.record.exit_code, run.error) == (RunStatus.FAILED, 3, None)


def test_an_oom_kill_fails_the_run(make_run: MakeRun, daemon: FakeDocker) -> None:
    recorded = recorded_containers()["oom"]
    daemon.program(["eat"], Program(exit_code=recorded["wait"]["StatusCode"], oom_killed=True))
    run = make_run(command=["eat"], memory="6m").execute()
    assert run.record.status == RunStatus.FAILED
    assert (run.record.exit_code, run.record.oom_killed) == (137, True)
    assert run.events[-1].data["oom_killed"] is True


def test_an_error_in_the_wait_answer_is_a_notice(make_run: MakeRun, daemon: FakeDocker) -> None:
    message = recorded_containers()["start-failed"]["wait"]["Error"]["Message"]
    daemon.program(["odd"], Program(wait_error=message))
    run = make_run(command=["odd"]).execute()
    assert run.record.status == RunStatus.SUCCEEDED
    assert run.notices == [f"engine: {message}"]


@pytest.mark.parametrize("op", ["wait", "inspect"])
def test_a_container_gone_under_the_run_is_an_error_of_the_run_phase(
    make_run: MakeRun, daemon: FakeDocker, op: Any
) -> None:
    daemon.fail(op, f"{op}-no-such-container")
    run = make_run().execute()
    assert run.error == ("run", f"No such container: {run.record.container_id}")


@pytest.mark.parametrize("auto_remove", [True, False])
def test_the_container_is_removed_after_the_run_unless_kept(
    make_run: MakeRun, daemon: FakeDocker, auto_remove: bool
) -> None:
    run = make_run(auto_remove=auto_remove).execute()
    container = run.record.container_id
    assert container is not None
    assert [c.id for c in daemon.live_containers()] == ([] if auto_remove else [container])
    assert len(daemon.calls_of("remove")) == (1 if auto_remove else 0)


def test_a_failed_remove_is_a_notice_and_the_run_keeps_its_status(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    daemon.fail("remove", "remove-in-progress")
    run = make_run().execute()
    assert run.record.status == RunStatus.SUCCEEDED
    assert run.notices == [
        "could not remove the container: removal of container "
        f"{run.record.container_id} is already in progress"
    ]


def test_output_past_max_log_bytes_is_counted_not_kept(
    make_run: MakeRun, daemon: FakeDocker, settings: Settings
) -> None:
    lines = b"".join(b"line %d\n" % i for i in range(1, 11))
    daemon.program(["flood"], Program(output=[stdout(lines)]))
    small = settings.model_copy(update={"max_log_bytes": 21})
    run = make_run(command=["flood"], settings_=small).execute()
    assert lines_of(run.events) == [
        ("stdout", "line 1"),
        ("stdout", "line 2"),
        ("stdout", "line 3"),
    ]
    assert (run.record.log_lines, run.record.dropped_lines) == (10, 7)
    assert run.record.dropped_bytes == len(lines) - 21
    assert run.notices[0].startswith("output past max_log_bytes (21 bytes) is being dropped")


# -- cancel -----------------------------------------------------------------------------------


def test_cancel_before_it_starts_ends_it_without_an_engine(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    run = make_run()
    run.pipeline.cancel(CANCEL_REASON)
    run.execute()
    assert run.record.status == RunStatus.CANCELED
    assert run.error == ("queue", CANCEL_REASON)
    assert daemon.engines_made == 0


def test_cancel_before_the_engine_answers_the_pull_ends_the_run_at_once(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    answer = daemon.gate("manifest")
    daemon.script_pull(
        LAYERS, PullScript(recorded_pull("recorded-layers-one-cached"), answer=answer)
    )
    run = make_run(image=LAYERS).start()
    answer.wait_reached()
    run.pipeline.cancel(CANCEL_REASON)
    # `done` is there while the engine still has not answered
    assert run.events[-1].type == "done"
    assert run.record.status == RunStatus.CANCELED and run.error == ("pull", CANCEL_REASON)
    assert run.thread is not None and run.thread.is_alive()
    answer.release()  # the engine answers at last: the stream is dropped unread
    run.join()
    assert run.of_type("pull") == []
    assert daemon.calls_of("create") == []


def test_cancel_during_the_image_check_ends_the_run_before_the_pull_answers(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    """The cancel lands while the worker asks the engine whether the image is
    there (phase still `queue`): the pull that follows must not keep the run
    waiting for the engine's answer."""
    answer = daemon.gate("manifest")  # never released by the test
    daemon.script_pull(
        LAYERS, PullScript(recorded_pull("recorded-layers-one-cached"), answer=answer)
    )
    checking = daemon.hold("image_present")
    run = make_run(image=LAYERS, pull="missing").start()
    checking.wait_reached()
    run.pipeline.cancel(CANCEL_REASON)
    checking.release()
    run.wait_for_done()
    run.join()
    assert run.record.status == RunStatus.CANCELED
    assert not answer.reached.is_set(), "the pull was started after the cancel"


def test_cancel_mid_pull_closes_the_stream(make_run: MakeRun, daemon: FakeDocker) -> None:
    pause = daemon.gate("mid-pull")
    messages = recorded_pull("recorded-layers-throttled")
    daemon.script_pull(LAYERS, PullScript(messages, pauses={20: pause}))
    run = make_run(image=LAYERS).start()
    pause.wait_reached()
    run.pipeline.cancel(CANCEL_REASON)
    run.join()
    assert run.record.status == RunStatus.CANCELED
    assert run.error == ("pull", CANCEL_REASON)
    assert len(run.of_type("pull")) == 20
    assert daemon.calls_of("create") == []
    assert LAYERS not in daemon.images


def test_cancel_during_create_removes_the_new_container(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    creating = daemon.hold("create")
    hang(daemon)
    run = make_run(command=HANG).start()
    creating.wait_reached()
    run.pipeline.cancel(CANCEL_REASON)
    creating.release()
    run.join()
    assert run.record.status == RunStatus.CANCELED
    assert run.error == ("create", CANCEL_REASON)
    assert daemon.calls_of("start") == []
    assert daemon.live_containers() == []


def test_cancel_during_start_stops_the_container_it_started(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    starting = daemon.hold("start")
    hang(daemon)
    run = make_run(command=HANG).start()
    starting.wait_reached()
    run.pipeline.cancel(CANCEL_REASON)
    starting.release()
    run.join()
    assert run.record.status == RunStatus.CANCELED
    assert run.error == ("start", CANCEL_REASON)
    assert "running" not in run.statuses
    assert daemon.calls_of("stop")
    assert daemon.live_containers() == []


@pytest.mark.parametrize(("term_exit", "code"), [(143, 143), (None, 137)])
def test_cancel_while_running_stops_the_container_and_keeps_its_output(
    make_run: MakeRun,
    daemon: FakeDocker,
    monkeypatch: pytest.MonkeyPatch,
    term_exit: int | None,
    code: int,
) -> None:
    if term_exit is None:  # SIGTERM ignored: SIGKILL after the grace, made 0 here
        monkeypatch.setattr(pipeline_module, "STOP_GRACE", 0.0)
    running = hang(daemon, term_exit=term_exit, before=b"started\n")
    run = make_run(command=HANG).start()
    running.wait_reached()
    run.pipeline.cancel(CANCEL_REASON)
    run.join()
    assert run.record.status == RunStatus.CANCELED
    assert run.error == ("run", CANCEL_REASON)
    assert run.record.exit_code == code
    assert lines_of(run.events) == [("stdout", "started")]
    assert daemon.live_containers() == []


def test_cancel_twice_and_after_the_end_changes_nothing(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    running = hang(daemon)
    run = make_run(command=HANG).start()
    running.wait_reached()
    run.pipeline.cancel(CANCEL_REASON)
    run.pipeline.cancel("again")
    run.join()
    run.pipeline.cancel("after the end")
    run.pipeline.abort("after the end")
    run.ended()
    assert run.error == ("run", CANCEL_REASON)
    assert len(daemon.calls_of("stop")) == 1


def test_a_cancel_after_the_container_exited_on_its_own_changes_nothing(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    wrapping_up = daemon.hold("inspect")  # after wait: the run is only being wrapped up
    run = make_run(command=["echo", "hi"]).start()
    wrapping_up.wait_reached()
    run.pipeline.cancel(CANCEL_REASON)
    wrapping_up.release()
    run.join()
    assert run.record.status == RunStatus.SUCCEEDED
    assert run.error is None
    assert daemon.calls_of("stop") == []


# -- timeout ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("term_exit", "code"), [(143, 143), (None, 137)])
def test_a_timeout_stops_the_container(
    make_run: MakeRun,
    daemon: FakeDocker,
    monkeypatch: pytest.MonkeyPatch,
    term_exit: int | None,
    code: int,
) -> None:
    if term_exit is None:
        monkeypatch.setattr(pipeline_module, "STOP_GRACE", 0.0)
    hang(daemon, term_exit=term_exit)
    run = make_run(command=HANG, timeout=0.001).start().join()
    assert run.record.status == RunStatus.TIMED_OUT
    assert (run.record.exit_code, run.error) == (code, None)
    assert run.notices == ["timeout of 0.001s reached: stopping the container"]
    assert daemon.live_containers() == []


def test_a_timer_that_fires_after_the_exit_does_nothing(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    run = make_run().execute()
    container = run.record.container_id
    assert container is not None
    run.pipeline._on_timeout(container)  # the timer thread losing the race with the exit
    run.ended()
    assert run.record.status == RunStatus.SUCCEEDED
    assert run.notices == [] and daemon.calls_of("stop") == []


# -- the end ----------------------------------------------------------------------------------


def test_abort_records_an_internal_error_once(make_run: MakeRun) -> None:
    run = make_run()
    run.pipeline.abort("internal error: see the server log")
    run.pipeline.abort("twice")
    assert run.pipeline.finished
    run.ended()
    assert run.error == ("queue", "internal error: see the server log")


def test_a_failing_final_save_still_leaves_done_in_the_log(make_run: MakeRun) -> None:
    run = make_run()

    def save(record: RunRecord) -> None:
        if record.status.terminal:
            raise OSError("disk full (simulated)")

    run.pipeline._save = save
    run.pipeline.execute()  # does not raise
    events = run.events
    assert [e.type for e in events].count("done") == 1 and events[-1].type == "done"
    assert events[-1].data["status"] == "succeeded"


def test_an_unexpected_failure_in_a_phase_is_an_error_of_that_phase(
    make_run: MakeRun, daemon: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("relay exploded")

    monkeypatch.setattr(pipeline_module.OutputRelay, "run", explode)
    run = make_run().execute()
    assert run.error == ("run", "relay exploded")
    assert daemon.live_containers() == []


def test_the_phase_of_an_error_is_where_the_run_was(make_run: MakeRun, daemon: FakeDocker) -> None:
    """Every phase's own failure, one run each: the error names that phase."""
    cases: dict[str, Callable[[], None]] = {
        "pull": lambda: daemon.fail("image_present", "engine-unreachable"),
        "create": lambda: daemon.fail("create", "create-no-such-image"),
        "start": lambda: daemon.fail("start", "start-no-such-container"),
        "run": lambda: daemon.fail("wait", "wait-no-such-container"),
    }
    for phase, arrange in cases.items():
        arrange()
        run = make_run().execute()
        assert run.error is not None and run.error[0] == phase, (phase, run.error)
        assert run.record.status == RunStatus.ERROR


def test_a_cancel_while_the_timeout_stops_the_container_adds_no_second_stop(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    hang(daemon)
    stopping = daemon.hold("stop")  # the timeout's stopper waits here, alive
    run = make_run(command=HANG, timeout=0.001).start()
    stopping.wait_reached()
    run.pipeline.cancel(CANCEL_REASON)  # a stop is under way: nothing more to do
    stopping.release()
    run.join()
    assert run.record.status == RunStatus.TIMED_OUT
    assert len(daemon.calls_of("stop")) == 1


def test_a_stop_that_fails_leaves_the_container_to_end_by_itself(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    running = hang(daemon)
    daemon.fail("stop", "engine-unreachable")  # the cancel's stop does not get through
    run = make_run(command=HANG).start()
    running.wait_reached()
    run.pipeline.cancel(CANCEL_REASON)
    wait_until(lambda: daemon.calls_of("stop"), "the stop to be tried")
    running.release()  # the container ends on its own
    run.join()
    assert run.record.status == RunStatus.CANCELED
    assert (run.record.exit_code, run.error) == (0, ("run", CANCEL_REASON))


def test_an_engine_that_goes_away_mid_run_ends_it_with_its_words(
    make_run: MakeRun, daemon: FakeDocker
) -> None:
    creating = daemon.hold("create")
    run = make_run().start()
    creating.wait_reached()
    daemon.down = True
    creating.release()
    run.join()
    assert run.error == ("create", recorded_errors()["engine-gone"]["message"])
    assert run.error[1].startswith("cannot reach the Docker engine: ")


def test_a_cancel_while_starting_never_joins_a_stopper_not_yet_started(
    make_run: MakeRun, daemon: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel's stopper thread is published before it is started: the worker,
    back from the engine's start, must not find it half made. The stopper's
    start() is held here until the worker has stopped the container itself."""
    starting = daemon.hold("start")
    hang(daemon)
    run = make_run(command=HANG).start()
    starting.wait_reached()
    in_start = threading.Event()
    go = threading.Event()

    class HeldStart(threading.Thread):
        def start(self) -> None:
            in_start.set()
            go.wait(DEADLINE)
            super().start()

    monkeypatch.setattr(
        pipeline_module,
        "threading",
        type("Threading", (), {"Thread": HeldStart, "Timer": threading.Timer}),
    )
    canceler = threading.Thread(target=run.pipeline.cancel, args=(CANCEL_REASON,))
    canceler.start()
    try:
        assert in_start.wait(DEADLINE)
        starting.release()
        wait_until(lambda: daemon.calls_of("stop"), "the worker to stop the container", 3.0)
    finally:
        go.set()
        canceler.join(DEADLINE)
    run.join()
    assert run.record.status == RunStatus.CANCELED, run.error
    assert run.error == ("start", CANCEL_REASON)
    assert daemon.live_containers() == []
