"""A unix socket that forwards every connection to another one (an engine's).

It lets a test decide when an engine "answers" (start the proxy later) or
"goes away" (close it under open clients): tests/browser and the recorder of
the fake engine's fixtures (tests/fixtures/engine/record.py) use it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path


class UnixProxy:
    """Forwards `path` to the unix socket `target` from `start()` until `close()`."""

    def __init__(self, path: Path, target: str) -> None:
        self.path = path
        self.target = target
        self.listener = socket.socket(socket.AF_UNIX)
        self.open: list[socket.socket] = []

    def start(self) -> UnixProxy:
        self.listener.bind(str(self.path))
        self.listener.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Stop listening and cut every open connection (both sides see it end)."""
        self.listener.close()
        for sock in self.open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.path.unlink(missing_ok=True)
