"""The `pullrun` client commands (`run`, `logs`, `ps`, `inspect`, `cancel`,
`rm`, `wait`, `events`): a server's public API over HTTP, nothing else.

Nothing here imports the server's stack (FastAPI, uvicorn, docker-py) or
another backend layer: the client talks to a server as any other tool would.
"""

from __future__ import annotations

from .commands import COMMANDS, add_client_commands, run_client_command

CLIENT_COMMANDS = frozenset(COMMANDS)

__all__ = ["CLIENT_COMMANDS", "add_client_commands", "run_client_command"]
