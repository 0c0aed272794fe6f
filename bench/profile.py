"""Summarise a py-spy raw (collapsed stacks) profile: `python -m bench.profile FILE [N]`.

`python -m bench N --profile DIR` records one per benchmark. Prints samples per
thread, then the functions with the most samples on top of the stack (self)
and anywhere in it (inclusive). py-spy leaves idle stacks out by default, so
the counts are CPU (or GIL-waiting) samples.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def summarise(path: Path, top: int = 25) -> str:
    threads: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        thread = frames[0] if frames[0].startswith(("thread", "process")) else "?"
        if frames[0].startswith("process"):
            thread = frames[1] if len(frames) > 1 and frames[1].startswith("thread") else thread
        threads[re.sub(r"\(0x[0-9A-Fa-f]+\)", "", thread).strip()] += count
        names = [_short(f) for f in frames if not f.startswith(("thread", "process"))]
        if names:
            self_[names[-1]] += count
            for name in set(names):
                inclusive[name] += count
    out = [f"{path.name}: {total} samples"]
    out.append("threads:")
    out += [f"  {n:6d} {100 * n / total:5.1f}%  {t}" for t, n in threads.most_common(10)]
    out.append("self:")
    out += [f"  {n:6d} {100 * n / total:5.1f}%  {f}" for f, n in self_.most_common(top)]
    out.append("inclusive:")
    out += [f"  {n:6d} {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(out)


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 25))
