"""The text download against the real server and engine: `?timestamps=1`
(each line after the time it was read, a line sent in parts with its first
part's) and `?stream=` (one stream), validated."""

from __future__ import annotations

import re

import docker
import httpx

from tests.support.runs import gate, open_gate, start
from tests.support.wait import collect, wait_until

STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (.*)")


def test_download_with_timestamps_and_one_stream(
    client: httpx.Client, image: str, docker_api: docker.APIClient
) -> None:
    # A prompt left open while the container waits (sent as a partial line),
    # completed once the test opens the gate; stderr in between.
    script = f"echo first; printf 'Name? '; {gate()}; echo oops >&2; echo bob; printf tail"
    run = start(client, image=image, command=["sh", "-c", script])
    logs_url = run["links"]["logs"]

    # the text download has the open line as it stands
    wait_until(
        lambda: client.get(logs_url).text == "first\nName? \n", "the prompt as a partial line"
    )
    open_gate(docker_api, run["id"])
    events = collect(client, run["links"]["events"])
    assert events[-1].type == "done"
    final = client.get(run["links"]["self"]).json()
    logs = [e.data for e in events if e.type == "log"]
    assert logs and all(re.fullmatch(r"\d{4}-.*\.\d{3}Z", d["at"]) for d in logs)
    prompt_at = next(d["at"] for d in logs if d["partial"] and d["lines"] == ["Name? "])
    oops_at = next(d["at"] for d in logs if d["stream"] == "stderr")

    plain = client.get(logs_url)
    assert plain.status_code == 200
    # (a line sent in parts is written once complete; the engine does not keep
    # the order of the two streams' bytes)
    assert sorted(plain.text.splitlines()) == ["Name? bob", "first", "oops", "tail"]
    stamped = client.get(logs_url, params={"timestamps": "1"})
    assert stamped.status_code == 200
    assert stamped.headers["content-type"].startswith("text/plain")
    rows = [STAMP.fullmatch(line) for line in stamped.text.splitlines()]
    assert all(rows), stamped.text
    texts = [row[2] for row in rows if row]
    times = {row[2]: row[1] for row in rows if row}
    assert sorted(texts) == sorted(plain.text.splitlines())
    assert times["Name? bob"] == prompt_at  # the time of its first part
    assert times["oops"] == oops_at
    assert prompt_at < oops_at  # the gate held the container between them
    for when in times.values():
        assert final["created_at"] <= when <= final["finished_at"]

    out = client.get(logs_url, params={"stream": "stdout"})
    assert out.text == "first\nName? bob\ntail\n"
    err = client.get(logs_url, params={"stream": "stderr", "timestamps": "true"})
    assert err.text == f"{oops_at} oops\n"
    assert client.get(logs_url, params={"stream": "stdout", "timestamps": "0"}).text == out.text


def test_bad_log_params_are_refused(client: httpx.Client, image: str) -> None:
    run = start(client, image=image, command=["echo", "hi"])
    collect(client, run["links"]["events"])
    logs_url = run["links"]["logs"]
    for params in (
        {"stream": "both"},
        {"stream": "x" * 5000},
        {"timestamps": "sometimes"},
        {"timestamps": "1" * 100},
    ):
        response = client.get(logs_url, params=params)
        assert response.status_code == 422, (params, response.text)
        assert "pullrun" not in response.headers.get("content-disposition", "")
    assert client.get(logs_url, params={"stream": "stdout"}).text == "hi\n"
