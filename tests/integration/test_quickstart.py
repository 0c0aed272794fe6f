"""The README quickstart, as written, against the real server and engine.

The server starts as `make run` starts it (`.venv/bin/pullrun serve`, auth
required) on a data dir that does not exist yet, so its first start creates
the admin token and prints the sign-in link. The test takes the token from
that link, then runs the quickstart's own shell block (read from README.md,
so the test fails when the README drifts) with bash: only the port, the
token and `<id>` are filled in, and `curl` is wrapped to record each answer
and its status. The token must appear in the server's output once: in the
printed `/login#token=...` line, never in its access log.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.server import ROOT, ServerProcess
from tests.support.sse import iter_events, log_lines

README = ROOT / "README.md"
README_URL = "http://127.0.0.1:8000"
TOKEN_LINE = re.compile(r"^TOKEN=pullrun_\.\.\.(?=\s)", re.MULTILINE)
LINK = re.compile(r"^    (http://127\.0\.0\.1:(\d+)/login#token=(pullrun_[A-Za-z0-9_-]+))$", re.M)

# Defined before the block runs: each `curl` of the block writes its body to
# $QS/out.N and its HTTP status to $QS/status.N, and prints the body as it
# would. `run_id` is the id of the run the first answer (the POST) returned.
PREAMBLE = r"""
set -euo pipefail
calls=0
curl() {
  calls=$((calls + 1))
  command curl --max-time 120 -o "$QS/out.$calls" -w '%{http_code}' "$@" > "$QS/status.$calls"
  cat "$QS/out.$calls"
}
run_id() {
  "$QS_PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$QS/out.1"
}
"""


def quickstart_block() -> str:
    """The quickstart's shell block that talks to the server (with curl)."""
    text = README.read_text()
    section = text.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    blocks = [b for b in re.findall(r"```sh\n(.*?)```", section, re.S) if "curl" in b]
    assert len(blocks) == 1, f"the README quickstart should have one curl block: {blocks}"
    return blocks[0]


def fill_in(block: str, base_url: str, token: str) -> str:
    """The block with this server's address, the printed token and the run's id."""
    assert len(TOKEN_LINE.findall(block)) == 1, block
    assert block.count(README_URL) == 3, block  # POST, events, logs
    assert block.count("<id>") == 2, block  # events, logs
    block = TOKEN_LINE.sub(lambda _: f"TOKEN={shlex.quote(token)}", block)
    return block.replace(README_URL, base_url).replace("<id>", "$(run_id)")


def test_the_readme_quickstart_works_as_written(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"  # does not exist: the server makes it
    with ServerProcess(
        data_dir, token=False, log_level="info", script=True, log_path=tmp_path / "server.log"
    ) as server:
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        printed = LINK.findall(server.log())
        assert len(printed) == 1, server.log()
        (link, port, token) = printed[0]
        assert link == f"{server.base_url}/login#token={token}" and int(port) == server.port

        work = tmp_path / "quickstart"
        work.mkdir()
        script = PREAMBLE + fill_in(quickstart_block(), server.base_url, token)
        done = subprocess.run(
            ["bash", "-c", script],
            env={"PATH": os.environ["PATH"], "QS": str(work), "QS_PYTHON": sys.executable},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, (done.stdout, done.stderr)

        statuses = [(work / f"status.{n}").read_text() for n in (1, 2, 3)]
        assert statuses == ["201", "200", "200"], (statuses, done.stderr)
        assert not (work / "status.4").exists()
        run = json.loads((work / "out.1").read_text())
        assert re.fullmatch(r"[0-9a-f]{6,64}", run["id"]), run
        assert run["created_by"] == "admin"

        stream = (work / "out.2").read_bytes()
        events = list(iter_events(httpx.Response(200, stream=httpx.ByteStream(stream))))
        assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
        assert {"pull", "log", "done"} <= {e.type for e in events}, [e.type for e in events]
        assert events[-1].type == "done" and events[-1].data["status"] == "succeeded", events[-1]
        assert log_lines(events) == ["line 1", "line 2", "line 3"]

        assert (work / "out.3").read_text() == "line 1\nline 2\nline 3\n"

        with server.client(token=token) as client:
            assert client.get(f"/api/runs/{run['id']}").json()["status"] == "succeeded"

    # The token reached the server's output once: the printed link, nothing else.
    log = server.log()
    assert log.count(token) == 1, [line for line in log.splitlines() if token in line]
    (line,) = [line for line in log.splitlines() if token in line]
    assert line == f"    {server.base_url}/login#token={token}"
    access = [line for line in log.splitlines() if "HTTP/1.1" in line]
    for request in (
        '"POST /api/runs HTTP/1.1" 201',
        f'"GET /api/runs/{run["id"]}/events HTTP/1.1" 200',
        f'"GET /api/runs/{run["id"]}/logs HTTP/1.1" 200',
    ):
        assert any(request in line for line in access), (request, access)
