"""The pull as `docker pull` shows it: one line per layer with a bar, redrawn
in place on a terminal (ANSI cursor-up), or plain lines when stderr is not
one (a line each time a layer's status changes, never per byte)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TextIO

BAR_WIDTH = 50
UP = "\x1b[{n}A"  # cursor up n lines
DOWN = "\x1b[{n}B"  # cursor down n lines
CLEAR = "\x1b[2K"  # erase the line
TICKING = ("Downloading", "Extracting")  # statuses the engine repeats with new counts


def human_size(n: float) -> str:
    """Sizes as docker prints them: decimal units, 4 significant digits."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.4g}{unit}"
        n /= 1000
    raise AssertionError("unreachable")


def progress_bar(current: int | None, total: int | None, units: str | None = None) -> str:
    """`[=====>      ]  1.049MB/3.146MB`, or the count alone when no total."""
    if not current:
        return ""
    if units == "s":
        return f"{current}s"
    if not total:
        return human_size(current)
    done = min(BAR_WIDTH, BAR_WIDTH * current // total)
    bar = "=" * done + (">" if done < BAR_WIDTH else "") + " " * (BAR_WIDTH - done - 1)
    return f"[{bar[:BAR_WIDTH]}]  {human_size(current)}/{human_size(total)}"


def layer_line(layer: str, status: str, progress: str) -> str:
    return f"{layer}: {status} {progress}".rstrip()


@dataclass(slots=True)
class _Layer:
    status: str
    progress: str = ""


class PullView:
    """Draws `pull` events on `out` (stderr)."""

    def __init__(self, out: TextIO, terminal: bool) -> None:
        self.out = out
        self.terminal = terminal
        self.layers: dict[str, _Layer] = {}
        self.rows: dict[str, int] = {}  # the layers' lines in the block being redrawn
        self.drawn = 0  # lines in that block

    def show(self, data: dict[str, Any]) -> None:
        if data.get("error"):
            return  # the run's `done` says it, once, as the error
        layer = data.get("layer")
        status = str(data.get("status") or "")
        if layer is None:
            self._image_line(status)
            return
        progress = progress_bar(data.get("current"), data.get("total"), data.get("units"))
        known = self.layers.get(layer)
        if known is None:
            self.layers[layer] = _Layer(status, progress)
            if self.terminal:
                self.rows[layer] = self.drawn
                self.out.write(layer_line(layer, status, progress) + "\n")
                self.drawn += 1
            else:
                self.out.write(layer_line(layer, status, "") + "\n")
        else:
            changed = known.status != status
            known.status, known.progress = status, progress
            if self.terminal:
                self._redraw(layer)
            elif changed and status not in TICKING:
                self.out.write(layer_line(layer, status, "") + "\n")
        self.out.flush()

    def _image_line(self, status: str) -> None:
        if not status:
            return
        self.out.write(status + "\n")
        self.rows, self.drawn = {}, 0  # the layers drawn so far are left as they are
        self.out.flush()

    def _redraw(self, layer: str) -> None:
        """Rewrite that layer's line in place, the cursor back below them all."""
        row = self.rows.get(layer)
        if row is None:
            return  # above a later image line: a late message is left out
        up = self.drawn - row
        state = self.layers[layer]
        self.out.write(
            UP.format(n=up) + "\r" + CLEAR + layer_line(layer, state.status, state.progress)
        )
        self.out.write(DOWN.format(n=up) + "\r")
