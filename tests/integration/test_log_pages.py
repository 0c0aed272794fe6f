"""The run page's snapshot and "load earlier" against the real server and
engine: a run of many lines (a line left open on stdout while stderr
prints) paged back from its snapshot to line 1 through
GET /api/runs/{id}/lines gives every line once, in order, as the download
has them; the same after a restart (the run's event index read from disk);
the index goes with the run."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.runs import run_to_end
from tests.support.server import ServerFactory

SCRIPT = (
    "seq 1 20000; printf 'half'; sleep 0.6; seq 1 300 >&2; sleep 0.2; "
    "echo '-done'; seq 20001 45000; printf 'end'"
)


def page_back(client: httpx.Client, run_id: str, limit: int) -> list[dict[str, Any]]:
    snap = client.get(f"/api/runs/{run_id}/snapshot").json()
    got: list[dict[str, Any]] = snap["lines"]
    assert got and snap["first_line"] == got[0]["n"] and got[-1]["n"] == snap["total_lines"]
    before, earlier = snap["first_line"], snap["earlier"]
    while earlier:
        response = client.get(
            f"/api/runs/{run_id}/lines", params={"before": before, "limit": limit}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["lines"] and page["lines"][-1]["n"] == before - 1
        got[:0] = page["lines"]
        before, earlier = page["first"], page["earlier"]
    return got


def check_pages(client: httpx.Client, run: dict[str, Any]) -> None:
    total = run["log_lines"]
    for limit in (5000, 777):
        got = page_back(client, run["id"], limit)
        assert [line["n"] for line in got] == list(range(1, len(got) + 1))
        assert len(got) == total
        assert not any(line["partial"] for line in got)
        for stream in ("stdout", "stderr"):
            text = client.get(run["links"]["logs"], params={"stream": stream}).text
            assert text == "".join(x["text"] + "\n" for x in got if x["stream"] == stream)
    texts = [line["text"] for line in got]
    assert "half-done" in texts and texts[-1] == "end" and texts[0] == "1"


def test_paging_back_to_line_1_gives_the_download(
    server_factory: ServerFactory, image: str
) -> None:
    server = server_factory()
    with server.client(timeout=60) as client:
        run, _ = run_to_end(client, image=image, command=["sh", "-c", SCRIPT])
        assert run["status"] == "succeeded"
        check_pages(client, run)
    index = server.data_dir / "events" / f"{run['id']}.idx"
    assert index.stat().st_size % 16 == 0 and index.stat().st_size > 0
    server.stop()
    index.unlink()  # as a run written by an older version: rebuilt on first use
    server = server_factory(data_dir=server.data_dir)
    with server.client(timeout=60) as client:
        check_pages(client, run)
        assert index.exists()
        assert client.delete(f"/api/runs/{run['id']}").status_code == 204
        assert not index.exists() and not index.with_suffix(".events").exists()
