"""What a container prints reaches subscribers exactly, live, in order."""

from __future__ import annotations

import docker
import httpx

from tests.support.runs import containers_of, gate, open_gate, run_to_end, start
from tests.support.sse import Event, log_lines
from tests.support.wait import Deadline


def test_hello_world_succeeds_and_removes_its_container(
    client: httpx.Client, image: str, docker_api: docker.APIClient
) -> None:
    run, events = run_to_end(client, image=image, command=["echo", "hello"])
    assert run["status"] == "succeeded"
    assert run["exit_code"] == 0
    statuses = [e.data["status"] for e in events if e.type == "status"]
    assert statuses == ["queued", "creating", "starting", "running"]
    assert log_lines(events) == ["hello"]
    done = events[-1].data
    assert done["status"] == "succeeded" and done["log_lines"] == 1 and done["log_bytes"] == 6
    assert done["error"] is None
    assert containers_of(docker_api, run["id"]) == []


def test_stdout_and_stderr_stay_apart_in_order(client: httpx.Client, image: str) -> None:
    script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done"
    run, events = run_to_end(client, image=image, command=["sh", "-c", script])
    assert log_lines(events, "stdout") == [f"out{i}" for i in range(1, 6)]
    assert log_lines(events, "stderr") == [f"err{i}" for i in range(1, 6)]
    numbers = [e.data["first"] for e in events if e.type == "log"]
    assert numbers == sorted(numbers)
    assert run["log_lines"] == 10


def test_carriage_returns_and_invalid_utf8(client: httpx.Client, image: str) -> None:
    script = r"printf 'a\rb\r\nc\xff\xfed\nlast-no-newline'"
    run, events = run_to_end(client, image=image, command=["sh", "-c", script])
    assert log_lines(events) == ["a\rb", "c\ufffd\ufffdd", "last-no-newline"]
    assert run["log_lines"] == 3


def test_partial_line_is_sent_before_its_newline(
    client: httpx.Client, image: str, docker_api: docker.APIClient
) -> None:
    # The rest of the line is printed only once the test has the fragment.
    script = f"printf 'prompt> '; {gate()}; echo answer; echo next"
    record = start(client, image=image, command=["sh", "-c", script])
    url = record["links"]["events"]
    events: list[Event] = []
    with client.stream("GET", url) as response:
        for event in Deadline(f"the partial line, then `done`, on {url}").events(response):
            events.append(event)
            if event.type == "log" and len([e for e in events if e.type == "log"]) == 1:
                # The fragment arrived live, before the rest of its line existed.
                assert {k: v for k, v in event.data.items() if k != "at"} == {
                    "stream": "stdout",
                    "first": 1,
                    "lines": ["prompt> "],
                    "partial": True,
                }
                open_gate(docker_api, record["id"])
            if event.type == "done":
                break
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    logs = [e for e in events if e.type == "log"]
    prompt = dict(logs[0].data)
    assert prompt.pop("at") <= logs[1].data["at"]  # when each was read
    assert prompt == {"stream": "stdout", "first": 1, "lines": ["prompt> "], "partial": True}
    assert logs[1].data["first"] == 1 and logs[1].data["lines"][0] == "answer"
    assert log_lines(events) == ["prompt> answer", "next"]
    run = client.get(record["links"]["self"]).json()
    assert run["log_lines"] == 2


def test_tty_run_has_one_stream_and_no_carriage_returns(client: httpx.Client, image: str) -> None:
    run, events = run_to_end(
        client, image=image, command=["sh", "-c", "echo one; echo two >&2"], tty=True
    )
    assert {e.data["stream"] for e in events if e.type == "log"} == {"tty"}
    assert log_lines(events) == ["one", "two"]
    assert run["status"] == "succeeded"


def test_non_zero_exit_is_failed(client: httpx.Client, image: str) -> None:
    run, events = run_to_end(client, image=image, command=["sh", "-c", "echo bye; exit 3"])
    assert run["status"] == "failed"
    assert run["exit_code"] == 3
    assert events[-1].data["exit_code"] == 3
    assert run["error"] is None


def test_oom_kill_is_reported(client: httpx.Client, image: str) -> None:
    script = 'x=$(head -c 80000000 /dev/zero | tr "\\0" a); echo ${#x}'
    run, events = run_to_end(client, image=image, command=["sh", "-c", script], memory="16m")
    assert run["status"] == "failed"
    assert run["oom_killed"] is True
    assert events[-1].data["oom_killed"] is True
    assert run["exit_code"] == 137


def test_many_lines_arrive_once_each_in_order(client: httpx.Client, image: str) -> None:
    run, events = run_to_end(client, image=image, command=["seq", "1", "200000"])
    assert log_lines(events) == [str(i) for i in range(1, 200001)]
    assert run["log_lines"] == 200000
    # Fast output is batched: far fewer events than lines.
    assert sum(1 for e in events if e.type == "log") < 2000


def test_logs_endpoint_returns_the_text(
    client: httpx.Client, image: str, docker_api: docker.APIClient
) -> None:
    # stdout and stderr are copied by separate engine goroutines: only the
    # order within a stream is guaranteed, hence each piece waits (a gate)
    # until the test has seen the one before it on the event stream.
    script = f"echo a; {gate('b')}; echo b >&2; {gate('c')}; printf 'c'; {gate('d')}; echo d"
    record = start(client, image=image, command=["sh", "-c", script])
    url = record["links"]["events"]
    after = {"a": "b", "b": "c", "c": "d"}  # when this text has arrived, open that gate
    events: list[Event] = []
    with client.stream("GET", url) as response:
        for event in Deadline(f"`a`, `b`, `c` (partial), then `done`, on {url}").events(response):
            events.append(event)
            if event.type == "log":
                for text in event.data["lines"]:
                    if text in after:
                        open_gate(docker_api, record["id"], after.pop(text))
            if event.type == "done":
                break
    assert after == {}
    assert events[-1].type == "done"
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    run = client.get(record["links"]["self"]).json()
    text = client.get(run["links"]["logs"])
    assert text.status_code == 200
    assert text.headers["content-type"].startswith("text/plain")
    assert text.text == "a\nb\ncd\n"
    assert client.get(run["links"]["logs"], params={"stream": "stderr"}).text == "b\n"
    assert client.get(run["links"]["logs"], params={"stream": "stdout"}).text == "a\ncd\n"
