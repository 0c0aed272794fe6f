"""GET /metrics on the real server and the real engine: a scraper with a
viewer token sees the counts move as real runs start and end (a success, a
failure, a real pull, a pull that fails mid-stream). The in-process tests
(gauges, label bounds, one registry per app): tests/unit/test_metrics_inprocess.py."""

from __future__ import annotations

from typing import Any

import docker

from tests.support.metrics import Samples, scrape, value
from tests.support.runs import remove_image, run_to_end
from tests.support.server import ServerFactory
from tests.support.wait import wait_until


def test_a_scrape_around_real_runs(
    server_factory: ServerFactory,
    image: str,
    registry: str,
    broken_registry: str,
    docker_api: docker.APIClient,
) -> None:
    server = server_factory(max_concurrent_runs=2)
    viewer = server.client(token=server.create_token("viewer"))
    with server.client() as operator, viewer, server.anonymous() as anonymous:
        refused = anonymous.get("/metrics")
        assert refused.status_code == 401  # a 401 for a scraper, not the sign-in page
        assert refused.headers["www-authenticate"].startswith("Bearer")

        up = wait_until(
            lambda: value(scrape(viewer), "pullrun_engine_up", engine="local") == 1,
            "the engine to be up",
        )
        assert up
        before = scrape(viewer)
        assert value(before, "pullrun_runs_started_total", engine="local") == 0
        assert value(before, "pullrun_events_appended_total") == 0

        layers = f"{registry}/pullrun/layers:latest"
        broken = f"{broken_registry}/pullrun/broken:latest"
        for ref in (layers, broken):
            remove_image(docker_api, ref)
        runs: list[dict[str, Any]] = []
        try:
            for body in (
                {"image": image, "command": ["sh", "-c", "echo one; echo two >&2"]},
                {"image": image, "command": ["sh", "-c", "echo bye; exit 3"]},
                # (the broken one first: it shares the layers image's layers)
                {"image": broken},
                {"image": layers, "command": ["true"]},
            ):
                run, _ = run_to_end(operator, **body)
                runs.append(run)
        finally:
            for ref in (layers, broken):
                remove_image(docker_api, ref)
        assert [r["status"] for r in runs] == ["succeeded", "failed", "error", "succeeded"]
        pulled = runs[3]
        assert pulled["pull"]["pulled"] and pulled["pull"]["bytes_total"] > 0

        def all_counted() -> Samples | None:
            samples = scrape(viewer)
            ended = sum(
                value(samples, "pullrun_runs_finished_total", status=s, engine="local")
                for s in ("succeeded", "failed", "error")
            )
            idle = value(samples, "pullrun_runs_active", engine="local") == 0
            return samples if ended == 4 and idle else None

        after = wait_until(all_counted, "the four ends to be counted and the slots freed")
        assert value(after, "pullrun_runs_started_total", engine="local") == 4
        finished = "pullrun_runs_finished_total"
        assert value(after, finished, status="succeeded", engine="local") == 2
        assert value(after, finished, status="failed", engine="local") == 1
        assert value(after, finished, status="error", engine="local") == 1
        assert value(after, "pullrun_runs_queued") == 0
        assert value(after, "pullrun_run_duration_seconds_count", engine="local") == 4
        # Both pulls were timed (the failed one up to its error); only one pulled bytes.
        assert value(after, "pullrun_pull_duration_seconds_count", engine="local") == 2
        pull_bytes = value(after, "pullrun_pull_bytes_total", engine="local")
        assert pull_bytes == pulled["pull"]["bytes_total"]
        assert value(after, "pullrun_log_lines_total", engine="local") == 3
        assert value(after, "pullrun_log_bytes_total", engine="local") == sum(
            r["log_bytes"] for r in runs
        )
        assert value(after, "pullrun_events_appended_total") == sum(
            r["last_event_id"] for r in runs
        )
        assert value(after, "pullrun_sse_subscribers", stream="run") == 0
