"""The client subcommands of `pullrun`, their options named as docker's."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .api import Api, ApiError
from .run import EXIT_INTERRUPTED, EXIT_NOT_STARTED, OutputWriter, build_request, follow, report

ACTIVE = ["queued", "pulling", "creating", "starting", "running"]
STATUSES = [*ACTIVE, "succeeded", "failed", "error", "canceled", "timed_out"]
PAGE = 100
EXIT_BROKEN_PIPE = 141  # as a shell reports a process ended by SIGPIPE


def _connection(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--url", help="the server (PULLRUN_URL; default http://127.0.0.1:8000)")
    parser.add_argument("--token", help="an API token (PULLRUN_TOKEN)")
    return parser


def add_client_commands(sub: Any) -> None:
    """Add `run`, `logs`, `ps`, `inspect`, `cancel`, `rm`, `wait`, `events`."""
    run = _connection(
        sub.add_parser(
            "run",
            help="run a container on the server, as `docker run` does here",
            usage="pullrun run [options] IMAGE [COMMAND [ARG...]]",
        )
    )
    run.add_argument("-d", "--detach", action="store_true", help="print the run id and return")
    run.add_argument("-e", "--env", action="append", metavar="KEY[=VALUE]")
    run.add_argument("--env-file", action="append", metavar="FILE")
    run.add_argument("-w", "--workdir")
    run.add_argument("-u", "--user")
    run.add_argument("--entrypoint")
    run.add_argument("-t", "--tty", action="store_true")
    run.add_argument("--pull", choices=["missing", "always", "never"])
    run.add_argument("--platform")
    run.add_argument("-m", "--memory")
    run.add_argument("--cpus", type=float)
    run.add_argument("-l", "--label", action="append", metavar="KEY[=VALUE]")
    run.add_argument("-v", "--volume", action="append", metavar="SOURCE:TARGET[:ro]")
    run.add_argument("--network", help="a network in PULLRUN_ALLOWED_NETWORKS")
    run.add_argument("-p", "--publish", action="append", metavar="[HOST_IP:][HOST_PORT:]PORT[/udp]")
    run.add_argument("--gpus", help="all, a count, or device=ID[,ID...]")
    run.add_argument("--timeout", type=float, help="seconds from the container's start")
    run.add_argument("--engine", help="one of the server's engines (GET /api/engines)")
    run.add_argument("image")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")

    logs = _connection(sub.add_parser("logs", help="a run's output"))
    logs.add_argument("-f", "--follow", action="store_true", help="until the run ends")
    logs.add_argument("-t", "--timestamps", action="store_true")
    which = logs.add_mutually_exclusive_group()
    which.add_argument("--stdout", action="store_true", help="stdout only")
    which.add_argument("--stderr", action="store_true", help="stderr only")
    logs.add_argument("id")

    ps = _connection(sub.add_parser("ps", help="recent runs (the last 20)"))
    ps.add_argument("-a", "--all", action="store_true", help="every run")
    ps.add_argument("--status", action="append", choices=STATUSES)
    ps.add_argument("-n", "--last", type=int, default=20, help="how many (default 20)")
    ps.add_argument("-q", "--quiet", action="store_true", help="ids only")

    for name, text in (
        ("inspect", "runs as JSON"),
        ("cancel", "cancel runs"),
        ("rm", "delete finished runs"),
    ):
        _connection(sub.add_parser(name, help=text)).add_argument("ids", nargs="+", metavar="ID")
    wait = _connection(sub.add_parser("wait", help="wait for a run; exit with its code"))
    wait.add_argument("id")
    _connection(sub.add_parser("events", help="every change of any run, a line each"))


def run_client_command(args: argparse.Namespace) -> int | None:
    """Run a client subcommand; None when `args` is not one."""
    command = COMMANDS.get(args.command)
    if command is None:
        return None
    api = Api(args.url, args.token)
    try:
        return command(api, args)
    except ApiError as exc:
        code = EXIT_NOT_STARTED if args.command == "run" else 1
        print(f"pullrun: {exc.message}", file=sys.stderr)
        return code
    except BrokenPipeError:  # `pullrun logs ID | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    finally:
        api.close()


def run_command(api: Api, args: argparse.Namespace) -> int:
    try:
        body = build_request(args)
    except (ValueError, OSError) as exc:
        print(f"pullrun: {exc}", file=sys.stderr)
        return EXIT_NOT_STARTED
    run = api.create_run(body)
    if args.detach:
        print(run["id"], flush=True)
        return 0
    try:
        return follow(api, run["id"])
    except KeyboardInterrupt:
        try:
            api.cancel(run["id"])
            print(f"\npullrun: canceled the run {run['id']}", file=sys.stderr)
        except ApiError as exc:
            print(f"\npullrun: {exc.message}", file=sys.stderr)
        return EXIT_INTERRUPTED


def logs_command(api: Api, args: argparse.Namespace) -> int:
    wanted = "stdout" if args.stdout else "stderr" if args.stderr else None
    until = None if args.follow else int(api.run(args.id)["last_event_id"] or 0)
    writer = OutputWriter(sys.stdout.buffer, sys.stdout.buffer, timestamps=args.timestamps)
    if wanted is None:
        writer = OutputWriter(sys.stdout.buffer, sys.stderr.buffer, timestamps=args.timestamps)
    if until == 0:
        return 0
    try:
        for event in api.run_events(args.id):
            if event.type == "log" and wanted in (None, event.data["stream"]):
                writer.write(event.data)
            if until is not None and int(event.id) >= until:
                break
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return 0


def _runs(api: Api, args: argparse.Namespace) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    cursor = None
    while True:
        want = PAGE if args.all else min(PAGE, args.last - len(runs))
        page = api.runs(args.status or [], max(want, 1), cursor)
        runs.extend(page["runs"])
        cursor = page.get("next_cursor")
        if not cursor or (not args.all and len(runs) >= args.last):
            return runs if args.all else runs[: args.last]


def _status(run: dict[str, Any]) -> str:
    status = str(run["status"])
    if run.get("exit_code") is not None and status in ("succeeded", "failed"):
        return f"{status} ({run['exit_code']})"
    return status


def _command(run: dict[str, Any]) -> str:
    command = run["spec"].get("command")
    text = " ".join(command) if isinstance(command, list) else str(command or "")
    return text if len(text) <= 30 else text[:29] + "…"


def ps_command(api: Api, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    runs = _runs(api, args)
    if args.quiet:
        for run in runs:
            print(run["id"])
        return 0
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("RUN ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "ENGINE"):
        table.add_column(column, no_wrap=True, overflow="fold")
    for run in runs:
        table.add_row(
            run["id"],
            run["spec"]["image"],
            _command(run),
            str(run["created_at"]),
            _status(run),
            run.get("engine") or "",
        )
    Console(width=10_000 if not sys.stdout.isatty() else None, soft_wrap=True).print(table)
    return 0


def inspect_command(api: Api, args: argparse.Namespace) -> int:
    print(json.dumps([api.run(run_id) for run_id in args.ids], indent=2))
    return 0


def cancel_command(api: Api, args: argparse.Namespace) -> int:
    for run_id in args.ids:
        api.cancel(run_id)
        print(run_id)
    return 0


def rm_command(api: Api, args: argparse.Namespace) -> int:
    for run_id in args.ids:
        api.delete(run_id)
        print(run_id)
    return 0


def wait_command(api: Api, args: argparse.Namespace) -> int:
    run = api.run(args.id)
    done: dict[str, Any] = run
    if run["status"] in ACTIVE:
        for event in api.run_events(args.id, int(run["last_event_id"] or 0)):
            if event.type == "done":
                done = event.data
    if done["status"] in ACTIVE:  # the stream had ended already: the record has it
        done = api.run(args.id)
    code = report(done)
    print(code)
    return code


def _feed_line(event_type: str, data: dict[str, Any]) -> str:
    if event_type == "run":
        return f"run {data['id']} {_status(data)} {data['spec']['image']}"
    if event_type == "deleted":
        return f"deleted {data['id']}"
    if event_type == "engine":
        return f"engine {data['name']} {data['state']}"
    return f"{event_type} {json.dumps(data)}"


def events_command(api: Api, args: argparse.Namespace) -> int:
    try:
        for event in api.feed(on_retry=lambda m: print(f"pullrun: {m}", file=sys.stderr)):
            print(_feed_line(event.type, event.data), flush=True)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return 0


COMMANDS = {
    "run": run_command,
    "logs": logs_command,
    "ps": ps_command,
    "inspect": inspect_command,
    "cancel": cancel_command,
    "rm": rm_command,
    "wait": wait_command,
    "events": events_command,
}
