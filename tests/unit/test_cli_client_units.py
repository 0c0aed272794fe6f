"""The `pullrun` client's pure parts: docker-run options -> the run request,
`done` -> the exit code, `log` events -> exact bytes, `pull` events -> bars,
a dropped stream resumed with Last-Event-ID; and that it loads nothing of the
server's stack."""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.cli import build_parser
from backend.client.api import Api
from backend.client.render import PullView, human_size, progress_bar
from backend.client.run import OutputWriter, build_request, exit_code
from tests.unit.test_layout import BACKEND, imports_of

CLIENT_MAY_IMPORT = ("httpx", "httpx_sse", "rich", "backend.client", "__future__")


def test_the_client_imports_only_its_libraries() -> None:
    wrong = []
    for path in sorted((BACKEND / "client").glob("*.py")):
        for name in imports_of(path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or name.startswith(CLIENT_MAY_IMPORT):
                continue
            wrong.append(f"{path.name} imports {name}")
    assert wrong == []


SERVER_STACK = "{'fastapi', 'starlette', 'uvicorn', 'docker', 'sse_starlette', 'jinja2'}"


def loaded_after(code: str) -> list[str]:
    """The modules of the server's stack and of the backend loaded by `code`."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys\n{code}\nprint(sorted(m for m in sys.modules "
            f"if m.split('.')[0] in {SERVER_STACK} or m.startswith('backend.')))",
        ],
        cwd=BACKEND.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    loaded: list[str] = ast.literal_eval(done.stdout)
    return loaded


def test_the_client_commands_load_no_server_stack() -> None:
    # The console script's client path: the client package and nothing else.
    loaded = loaded_after(
        "import contextlib; from backend.console import main\n"
        "with contextlib.suppress(SystemExit): main(['ps', '--url', 'http://127.0.0.1:9'])"
    )
    assert {m.split(".")[1] for m in loaded} == {"client", "console"}
    # `python -m backend.cli run`: the sign-in and settings modules, still no server stack.
    loaded = loaded_after("from backend.cli import build_parser; build_parser()")
    assert [m for m in loaded if not m.startswith("backend.")] == []


def test_docker_run_options_become_the_run_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("# a comment\n\nFROM_FILE=1\nSHARED=file\nFROM_CALLER\n")
    monkeypatch.setenv("FROM_CALLER", "caller's")
    monkeypatch.delenv("UNSET_HERE", raising=False)
    args = build_parser().parse_args(
        ["run", "--env-file", str(env_file), "-e", "SHARED=flag", "-e", "UNSET_HERE",
         "-w", "/w", "-u", "1000:1000", "--entrypoint", "/bin/sh", "-t", "--pull", "always",
         "--platform", "linux/amd64", "-m", "256m", "--cpus", "0.5", "-l", "team=a", "-l",
         "flag", "--timeout", "30", "--engine", "e2", "-v", "data:/data", "-v", "/srv:/srv:ro",
         "--network", "backend", "-p", "8080:80", "-p", "53/udp", "--gpus", "all",
         "busybox", "-c", "echo -e x", "-e", "--pull"]
    )  # fmt: skip
    assert build_request(args) == {
        "image": "busybox",
        "command": ["-c", "echo -e x", "-e", "--pull"],  # after the image: the command's
        "entrypoint": ["/bin/sh"],
        "env": {"FROM_FILE": "1", "SHARED": "flag", "FROM_CALLER": "caller's"},
        "labels": {"team": "a", "flag": ""},
        "workdir": "/w",
        "user": "1000:1000",
        "pull": "always",
        "platform": "linux/amd64",
        "memory": "256m",
        "cpus": 0.5,
        "timeout": 30.0,
        "engine": "e2",
        "volumes": ["data:/data", "/srv:/srv:ro"],
        "network": "backend",
        "ports": ["8080:80", "53/udp"],
        "gpus": "all",
        "tty": True,
    }
    assert build_request(build_parser().parse_args(["run", "img"])) == {"image": "img"}


@pytest.mark.parametrize(
    ("done", "code"),
    [
        ({"status": "succeeded", "exit_code": 0}, 0),
        ({"status": "failed", "exit_code": 3}, 3),
        ({"status": "failed", "exit_code": 137, "oom_killed": True}, 137),
        ({"status": "error", "exit_code": None, "error": {"phase": "pull", "message": "x"}}, 125),
        ({"status": "error", "exit_code": None, "error": {"phase": "create", "message": "x"}}, 125),
        ({"status": "error", "exit_code": None, "error": {"phase": "queue", "message": "x"}}, 125),
        ({"status": "canceled", "exit_code": None}, 130),
        ({"status": "canceled", "exit_code": 143}, 143),
        ({"status": "timed_out", "exit_code": 137}, 137),
    ],
)
def test_the_exit_code_is_docker_runs(done: dict[str, Any], code: int) -> None:
    assert exit_code(done) == code


def write_all(events: list[dict[str, Any]], timestamps: bool = False) -> tuple[bytes, bytes]:
    out, err = io.BytesIO(), io.BytesIO()
    writer = OutputWriter(out, err, timestamps=timestamps)
    for data in events:
        writer.write(data)
    return out.getvalue(), err.getvalue()


def log(stream: str, first: int, lines: list[str], partial: bool = False, **more: Any) -> Any:
    return {"stream": stream, "first": first, "lines": lines, "partial": partial, **more}


def test_partial_lines_continue_and_the_streams_stay_apart() -> None:
    out, err = write_all(
        [
            log("stdout", 1, ["prompt> "], partial=True),
            log("stderr", 2, ["warn"]),
            log("stdout", 1, ["yes", "a", "b"], partial=True),
            log("stdout", 3, ["c"]),
            log("stderr", 4, ["tail"], partial=True),
            log("stderr", 4, [""], eol=False),  # the end, without a line end
        ]
    )
    assert out == b"prompt> yes\na\nbc\n"
    assert err == b"warn\ntail"
    assert write_all([log("stdout", 1, ["a", "b"], eol=False)])[0] == b"a\nb"
    assert write_all([log("tty", 1, ["\u00e9\r"])])[0] == "\u00e9\r\n".encode()


def test_timestamps_prefix_each_line_once() -> None:
    at = "2026-11-30T00:00:00.000Z"
    out, _ = write_all(
        [log("stdout", 1, ["a", "par"], partial=True, at=at), log("stdout", 2, ["tial"], at=at)],
        timestamps=True,
    )
    assert out == f"{at} a\n{at} partial\n".encode()


def pull(
    layer: str | None, status: str, current: int | None = None, total: int | None = None
) -> Any:
    return {"layer": layer, "status": status, "current": current, "total": total}


PULL = [
    pull(None, "Pulling from pullrun/layers"),
    pull("aaaaaaaaaaaa", "Already exists"),
    pull("bbbbbbbbbbbb", "Pulling fs layer"),
    pull("cccccccccccc", "Pulling fs layer"),
    pull("bbbbbbbbbbbb", "Downloading", 1_000_000, 3_000_000),
    pull("bbbbbbbbbbbb", "Downloading", 2_000_000, 3_000_000),
    pull("cccccccccccc", "Download complete"),
    pull("bbbbbbbbbbbb", "Pull complete"),
    pull(None, "Digest: sha256:00"),
    pull(None, "Status: Downloaded newer image for x"),
]


def test_a_terminal_gets_a_bar_per_layer_redrawn_in_place() -> None:
    screen = io.StringIO()
    view = PullView(screen, terminal=True)
    for data in PULL:
        view.show(data)
    text = screen.getvalue()
    # bbbb is the second of three layer lines: up 2, erase, redraw, down 2.
    bar = progress_bar(2_000_000, 3_000_000)
    assert f"\x1b[2A\r\x1b[2Kbbbbbbbbbbbb: Downloading {bar}\x1b[2B\r" in text
    assert "\x1b[1A\r\x1b[2Kcccccccccccc: Download complete\x1b[1B\r" in text
    assert text.endswith("Digest: sha256:00\nStatus: Downloaded newer image for x\n")
    assert text.count("\n") == 6  # the image lines and one per layer, never one per message


def test_without_a_terminal_a_line_per_status_change() -> None:
    screen = io.StringIO()
    view = PullView(screen, terminal=False)
    for data in PULL:
        view.show(data)
    assert screen.getvalue() == (
        "Pulling from pullrun/layers\n"
        "aaaaaaaaaaaa: Already exists\n"
        "bbbbbbbbbbbb: Pulling fs layer\n"
        "cccccccccccc: Pulling fs layer\n"
        "cccccccccccc: Download complete\n"
        "bbbbbbbbbbbb: Pull complete\n"
        "Digest: sha256:00\n"
        "Status: Downloaded newer image for x\n"
    )
    assert "\x1b" not in screen.getvalue()


def test_bars_and_sizes_read_as_dockers() -> None:
    assert human_size(999) == "999B"
    assert human_size(1_048_576) == "1.049MB"
    assert progress_bar(1_048_576, 3_145_728) == (
        "[================>                                 ]  1.049MB/3.146MB"
    )
    assert progress_bar(5, 5).startswith("[" + "=" * 50 + "]")
    assert progress_bar(None, None) == ""
    assert progress_bar(3, None, "s") == "3s"


def sse(*events: tuple[int, str, dict[str, Any]]) -> bytes:
    return b"".join(
        f"id: {i}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode() for i, kind, data in events
    )


def test_a_dropped_stream_is_resumed_after_the_last_event_seen() -> None:
    asked: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("last-event-id"))
        if len(asked) == 1:  # two events, then the connection ends before `done`
            body = sse((1, "status", {"status": "running"}), (2, "log", log("stdout", 1, ["a"])))
        elif len(asked) == 2:
            body = sse((3, "log", log("stdout", 2, ["b"])), (4, "done", {"status": "succeeded"}))
        else:
            return httpx.Response(204)
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    api = Api("http://pullrun.test", "t", transport=httpx.MockTransport(answer))
    retries: list[str] = []
    events = list(api.run_events("r1", on_retry=retries.append))
    assert [e.id for e in events] == ["1", "2", "3", "4"]
    assert asked == [None, "2"]
    assert len(retries) == 1 and "resuming after event 2" in retries[0]
    assert list(api.run_events("r1", after=4)) == []  # 204: `done` was seen
    assert asked[-1] == "4"


def test_output_that_ends_without_a_line_end_says_so() -> None:
    from backend.runs.lines import LineAssembler

    ended = LineAssembler()
    ended.feed("stdout", b"a\nb\n", 0.0)
    assert ended.finish() == []  # nothing open: the last `log` event ended its line
    open_end = LineAssembler()
    assert [b.eol for b in open_end.feed("stdout", b"a\nb", 0.0)] == [True]
    assert [(b.lines, b.eol) for b in open_end.finish()] == [(["b"], False)]
    partial = LineAssembler(partial_delay=0.1)
    partial.feed("stderr", b"prompt> ", 0.0)
    assert [b.partial for b in partial.flush_due(1.0)] == [True]
    assert [(b.lines, b.partial, b.eol) for b in partial.finish()] == [([""], False, False)]
