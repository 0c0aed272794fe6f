"""The `pullrun` command.

- `pullrun serve`: run the server (settings from PULLRUN_* or flags).
- `pullrun token create|list|revoke`: API tokens.
- `pullrun user add|list|remove`: users who sign in with a password.
- `pullrun run|logs|ps|inspect|cancel|rm|wait|events`: a client of a server
  (PULLRUN_URL, PULLRUN_TOKEN), in backend/client/.

The token and user commands work on the data dir (PULLRUN_DATA_DIR or
`--data-dir`), also while the server runs.
"""

from __future__ import annotations

import argparse
import gc
import getpass
import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from .auth.accounts import Accounts
from .auth.mode import refuse_auth_off
from .auth.names import check_name
from .auth.roles import Role
from .auth.service import AuthService
from .auth.store import AuthStore, NameTaken
from .client import add_client_commands, run_client_command
from .settings import Settings

SWITCH_INTERVAL = 0.001  # seconds: the server's GIL switch interval (serve_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pullrun")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the web server")
    for name, info in Settings.model_fields.items():
        if name == "webhook_secret":
            continue  # a secret in the command line is in `ps`: PULLRUN_WEBHOOK_SECRET only
        flag = "--" + name.replace("_", "-")
        # Values are strings here; Settings validates and converts them (lists:
        # JSON or comma-separated), as it does the PULLRUN_* variables.
        kind = Path if name == "data_dir" else str
        serve.add_argument(
            flag, type=kind, default=None, help=f"{info.description} (PULLRUN_{name.upper()})"
        )
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--ssl-certfile", type=Path, help="serve HTTPS with this certificate (PEM)")
    serve.add_argument("--ssl-keyfile", type=Path, help="the certificate's private key (PEM)")

    roles = [role.value for role in Role]

    def with_data_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--data-dir", type=Path, default=None, help="the server's data dir (PULLRUN_DATA_DIR)"
        )
        return p

    token = sub.add_parser("token", help="API tokens (Authorization: Bearer TOKEN)")
    token_sub = token.add_subparsers(dest="action", required=True)
    create = with_data_dir(
        token_sub.add_parser("create", help="create a token; prints it, and only it, once")
    )
    create.add_argument("--name", required=True, help="who or what uses it (unique)")
    create.add_argument("--role", required=True, choices=roles)
    listing = with_data_dir(token_sub.add_parser("list", help="tokens (never their values)"))
    listing.add_argument("--json", action="store_true", help="as JSON")
    revoke = with_data_dir(token_sub.add_parser("revoke", help="revoke a token at once"))
    revoke.add_argument("name")

    user = sub.add_parser("user", help="users who sign in at /login with a password")
    user_sub = user.add_subparsers(dest="action", required=True)
    add = with_data_dir(
        user_sub.add_parser(
            "add", help="add a user; the password from a prompt, or stdin when not a terminal"
        )
    )
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=roles)
    listing = with_data_dir(user_sub.add_parser("list", help="users"))
    listing.add_argument("--json", action="store_true", help="as JSON")
    remove = with_data_dir(
        user_sub.add_parser("remove", help="remove a user (and end their sessions)")
    )
    remove.add_argument("name")
    add_client_commands(sub)  # run, logs, ps, inspect, cancel, rm, wait, events
    return parser


class CommandError(Exception):
    """A command failed in a way its user can fix: the message says how."""


def _fail(message: str, code: int = 1) -> int:
    print(f"pullrun: {message}", file=sys.stderr)
    return code


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise CommandError(f"invalid settings: {problems}") from exc


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir is not None:
        return Path(args.data_dir)
    return _settings().data_dir


def _accounts(args: argparse.Namespace) -> Accounts:
    return Accounts(AuthStore(_settings(data_dir=_data_dir(args)).auth_db_path))


def _print_rows(rows: list[dict[str, Any]], columns: list[str], *, as_json: bool) -> None:
    """A listing on stdout: JSON for tools, else a table for people."""
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        _table(rows, columns, sys.stdout)


def _table(rows: list[dict[str, Any]], columns: list[str], out: TextIO) -> None:
    cells = [[("" if row.get(c) is None else str(row[c])) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    for line in [[c.upper() for c in columns], *cells]:
        out.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")


def _read_password(name: str) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(f"Password for {name}: ")
        if getpass.getpass("Again: ") != first:
            raise CommandError("the passwords differ")
        return first
    line = sys.stdin.readline()
    return line.removesuffix("\n").removesuffix("\r")


def token_command(args: argparse.Namespace) -> int:
    accounts = _accounts(args)
    try:
        if args.action == "create":
            token = accounts.create_token(args.name, Role(args.role))
            print(token, flush=True)
        elif args.action == "list":
            rows = accounts.tokens()
            _print_rows(rows, ["name", "role", "created_at", "last_used_at"], as_json=args.json)
        elif args.action == "revoke":
            if not accounts.revoke_token(args.name):
                return _fail(f"no token named {args.name!r}")
            print(f"revoked the token {args.name!r}", file=sys.stderr)
    finally:
        accounts.store.close()
    return 0


def user_command(args: argparse.Namespace) -> int:
    accounts = _accounts(args)
    try:
        if args.action == "add":
            check_name(args.name)
            accounts.add_user(args.name, Role(args.role), _read_password(args.name))
            print(f"added the user {args.name!r} ({args.role})", file=sys.stderr)
        elif args.action == "list":
            rows = accounts.users()
            _print_rows(rows, ["name", "role", "created_at"], as_json=args.json)
        elif args.action == "remove":
            if not accounts.remove_user(args.name):
                return _fail(f"no user named {args.name!r}")
            print(f"removed the user {args.name!r}", file=sys.stderr)
    finally:
        accounts.store.close()
    return 0


def _url_host(host: str) -> str:
    """The host for a link to the server: a wildcard address becomes loopback."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def first_start(settings: Settings, scheme: str) -> None:
    """No user and no token yet (auth required): create an admin token and
    print, once, a sign-in link with it in the URL fragment."""
    auth = AuthService(AuthStore(settings.auth_db_path))
    try:
        token = auth.bootstrap()
    finally:
        auth.close()
    if token is None:
        return
    link = f"{scheme}://{_url_host(settings.host)}:{settings.port}/login#token={token}"
    print(
        "\npullrun: no user and no API token yet, so an admin token named 'admin' was created.\n"
        "Sign in with this link (shown this once; the token is after '#', which browsers\n"
        "never send, so it reaches no access log). The token also works as\n"
        "`Authorization: Bearer TOKEN`. More: `pullrun token create`, `pullrun user add`.\n\n"
        f"    {link}\n",
        file=sys.stderr,
        flush=True,
    )


def serve_command(args: argparse.Namespace) -> int:
    overrides = {
        name: getattr(args, name)
        for name in Settings.model_fields
        if getattr(args, name, None) is not None
    }
    settings = _settings(**overrides)
    refused = refuse_auth_off(settings.auth, settings.host)
    if refused:
        return _fail(refused, 2)  # before anything listens
    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        return _fail("--ssl-certfile and --ssl-keyfile go together", 2)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pullrun.audit").setLevel(logging.INFO)  # whatever the log level
    if settings.auth == "required":
        first_start(settings, "https" if args.ssl_certfile else "http")
    import uvicorn  # the server's stack: not loaded by the token and user commands

    from .engines import EnginesFileError
    from .web.app import create_app
    from .web.server import Server

    try:
        app = create_app(settings)
    except (RuntimeError, EnginesFileError) as exc:  # a setting refused: start nothing
        return _fail(str(exc), 2)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_grace) + 10,
        # X-Forwarded-Proto/For only from the trusted proxies (uvicorn would
        # otherwise believe any client on 127.0.0.1).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    )
    # A line's way to its subscribers crosses threads (the run's relay, then
    # the loop), each waiting for the GIL at every blocking call's return; a
    # busy thread (another run's relay, the loop streaming) keeps it for up to
    # the switch interval each time. 1 ms instead of 5 ms halves a line's p99
    # beside a busy run (docs/performance.md, benchmark 15).
    sys.setswitchinterval(SWITCH_INTERVAL)
    # The ~85,000 objects of the loaded code and the app live as long as the
    # process: out of the collector's sight, a full collection (which stops
    # every thread) takes ~4 ms instead of 40-90 ms.
    gc.collect()
    gc.freeze()
    Server(config, app).run()
    return 0


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    commands = {"serve": serve_command, "token": token_command, "user": user_command}
    try:
        client_code = run_client_command(args)
        code = commands[args.command](args) if client_code is None else client_code
    except (CommandError, NameTaken, ValueError) as exc:
        code = _fail(str(exc))
    sys.exit(code)


if __name__ == "__main__":
    main()
