"""Docker's multiplexed attach stream: 8-byte headers, then payload.

Header: [stream, 0, 0, 0, size:uint32 big-endian]; stream 1 = stdout,
2 = stderr (0 = stdin echo, treated as stdout). A frame is not a line and a
read is not a frame: this decoder accepts arbitrary chunk boundaries.
"""

from __future__ import annotations

STDOUT = 1
STDERR = 2
_HEADER = 8


class FrameDecoder:
    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[tuple[int, bytes]]:
        """Return the complete (stream, payload) frames that `chunk` finishes.

        Consecutive frames of the same stream are merged, which keeps the
        per-frame Python work off the hot path for busy containers.
        """
        buf = self._buf
        buf += chunk
        runs: list[tuple[int, list[bytes]]] = []
        pos = 0
        end = len(buf)
        while end - pos >= _HEADER:
            size = int.from_bytes(buf[pos + 4 : pos + 8], "big")
            if end - pos - _HEADER < size:
                break
            stream = STDERR if buf[pos] == STDERR else STDOUT
            payload = bytes(buf[pos + _HEADER : pos + _HEADER + size])
            if runs and runs[-1][0] == stream:
                runs[-1][1].append(payload)
            else:
                runs.append((stream, [payload]))
            pos += _HEADER + size
        del buf[:pos]
        return [(stream, b"".join(parts)) for stream, parts in runs]

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame still held."""
        return len(self._buf)
