"""`pullrun run`: docker-run options -> a run request; then the run's event
stream -> the pull on stderr, the container's output on stdout and stderr,
and the exit code `docker run` would give."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from .api import Api, Event
from .render import PullView

EXIT_NOT_STARTED = 125  # as `docker run`: the container never ran
EXIT_INTERRUPTED = 130  # Ctrl-C
PHASES_BEFORE_START = ("queue", "pull", "create", "start", "interrupted")


def _pairs(items: Iterable[str], what: str, from_environ: bool) -> dict[str, str]:
    """`KEY=VALUE` items; a bare `KEY` takes the caller's value (env) or "" (labels)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise ValueError(f"{what}: {item!r} is not KEY=VALUE")
        if not sep and from_environ:
            if key not in os.environ:
                continue  # as docker: an unset variable is left out
            value = os.environ[key]
        out[key] = value
    return out


def env_file_lines(path: Path) -> list[str]:
    """An `--env-file` as docker reads it: KEY=VALUE lines, `#` comments, blanks."""
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.lstrip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /api/runs body for these `pullrun run` options."""
    body: dict[str, Any] = {"image": args.image}
    if args.cmd:
        body["command"] = list(args.cmd)
    if args.entrypoint is not None:
        body["entrypoint"] = [args.entrypoint] if args.entrypoint else []
    env_items: list[str] = []
    for path in args.env_file or []:
        env_items.extend(env_file_lines(Path(path)))
    env_items.extend(args.env or [])
    env = _pairs(env_items, "-e", from_environ=True)
    if env:
        body["env"] = env
    labels = _pairs(args.label or [], "-l", from_environ=False)
    if labels:
        body["labels"] = labels
    for field, value in (
        ("workdir", args.workdir),
        ("user", args.user),
        ("pull", args.pull),
        ("platform", args.platform),
        ("memory", args.memory),
        ("cpus", args.cpus),
        ("timeout", args.timeout),
        ("engine", args.engine),
        ("volumes", args.volume),  # docker's strings: the server reads them
        ("network", args.network),
        ("ports", args.publish),
        ("gpus", args.gpus),
    ):
        if value is not None:
            body[field] = value
    if args.tty:
        body["tty"] = True
    return body


def exit_code(done: dict[str, Any]) -> int:
    """The code `docker run` would exit with for this `done` event."""
    code = done.get("exit_code")
    if done.get("status") == "error":
        phase = (done.get("error") or {}).get("phase")
        if phase in PHASES_BEFORE_START or code is None:
            return EXIT_NOT_STARTED
    if code is not None:
        return int(code)
    if done.get("status") == "succeeded":
        return 0
    if done.get("status") == "canceled":
        return EXIT_INTERRUPTED
    return EXIT_NOT_STARTED


class OutputWriter:
    """`log` events -> bytes on stdout / stderr, exactly as the container wrote
    them (text the server took as valid UTF-8 lines ended by LF). A partial
    line is written at once, without its end; its continuation follows it."""

    def __init__(self, stdout: BinaryIO, stderr: BinaryIO, timestamps: bool = False) -> None:
        self.outs = {"stdout": stdout, "stderr": stderr, "tty": stdout}
        self.timestamps = timestamps
        self.open: dict[str, int] = {}  # stream -> the number of its line left open

    def write(self, data: dict[str, Any]) -> None:
        stream = str(data["stream"])
        out = self.outs.get(stream, self.outs["stdout"])
        lines: list[str] = data["lines"]
        text = "\n".join(lines)
        if self.timestamps and data.get("at"):
            stamp = f"{data['at']} "
            continues = self.open.get(stream) == data["first"]
            text = "\n".join(
                (line if i == 0 and continues else stamp + line) for i, line in enumerate(lines)
            )
        if data.get("partial"):
            self.open[stream] = int(data["first"]) + len(lines) - 1
        else:
            self.open.pop(stream, None)
            if data.get("eol", True):
                text += "\n"
        out.write(text.encode())
        out.flush()


def _say(err: TextIO, message: str) -> None:
    err.write(f"pullrun: {message}\n")
    err.flush()


def follow(api: Api, run_id: str, after: int = 0, pull_view: PullView | None = None) -> int:
    """Relay the run's events from `after` to the terminal; its exit code."""
    writer = OutputWriter(sys.stdout.buffer, sys.stderr.buffer)
    view = pull_view or PullView(sys.stderr, sys.stderr.isatty())
    done: dict[str, Any] | None = None
    for event in api.run_events(run_id, after, on_retry=lambda m: _say(sys.stderr, m)):
        done = handle(event, writer, view)
    if done is None:  # already seen: ask the record
        done = api.run(run_id)
    return report(done)


def handle(event: Event, writer: OutputWriter, view: PullView) -> dict[str, Any] | None:
    if event.type == "log":
        writer.write(event.data)
    elif event.type == "pull":
        view.show(event.data)
    elif event.type == "notice":
        _say(sys.stderr, str(event.data.get("message", "")))
    elif event.type == "done":
        return event.data
    return None


def report(done: dict[str, Any]) -> int:
    """Say on stderr why a run did not end as its container did; the exit code."""
    error = done.get("error")
    if done.get("status") == "error" and error:
        _say(sys.stderr, f"error in phase {error.get('phase')}: {error.get('message')}")
    elif done.get("status") in ("canceled", "timed_out"):
        _say(sys.stderr, f"the run was {str(done['status']).replace('_', ' ')}")
    elif done.get("oom_killed"):
        _say(sys.stderr, "the container was killed for lack of memory")
    return exit_code(done)
