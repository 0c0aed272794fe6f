"""The `pullrun` console script. The client commands (`run`, `logs`, `ps`,
...) start without loading the server's modules (settings, models, sign-in:
a third of a second); everything else is `backend.cli`."""

from __future__ import annotations

import argparse
import sys

from .client import CLIENT_COMMANDS, add_client_commands, run_client_command


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in CLIENT_COMMANDS:
        parser = argparse.ArgumentParser(prog="pullrun")
        add_client_commands(parser.add_subparsers(dest="command", required=True))
        sys.exit(run_client_command(parser.parse_args(args)))
    from .cli import main as server_main

    server_main(args)
