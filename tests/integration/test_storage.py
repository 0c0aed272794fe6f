"""The data dir against the real server and engine: a full filesystem (a
3 MiB tmpfs mounted as the data dir), retention by disk use and by age, and
the modes of everything the server writes."""

from __future__ import annotations

import concurrent.futures
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests.support.runs import containers_of, gate, open_gate, run_to_end, start
from tests.support.server import ServerFactory
from tests.support.wait import collect, wait_for_status, wait_until

FULL = "the data dir is full: "


def events_files(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "events").iterdir())


def deleted(client: httpx.Client, run_id: str) -> bool:
    return client.get(f"/api/runs/{run_id}").status_code == 404


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs of this test's own, unmounted at its end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_data_dir_ends_the_run_with_error_refuses_new_runs_and_recovers(
    small_disk: Path,
    server_factory: ServerFactory,
    image: str,
    docker_api: docker.APIClient,
) -> None:
    server = server_factory(data_dir=small_disk)
    try:
        with server.client() as client:
            # A million lines (6.9 MB) into 3 MiB: the log stops at the room
            # kept free, the run ends with `error`, and with its `done`.
            final, events = run_to_end(client, image=image, command=["seq", "1", "1000000"])
            assert final["status"] == "error", final
            assert final["error"]["message"].startswith(FULL), final["error"]
            assert events[-1].type == "done"
            assert events[-1].data["error"] == final["error"]
            assert final["log_lines"] > final["dropped_lines"] > 0
            wait_until(lambda: containers_of(docker_api, final["id"]) == [], "its container to go")

            # Nothing can be written now: a new run is refused, clearly, and
            # leaves nothing behind; the server goes on serving.
            before = events_files(small_disk)
            refused = client.post("/api/runs", json={"image": image, "command": ["true"]})
            assert refused.status_code == 507, refused.text
            assert refused.json()["error"]["code"] == "disk_full"
            assert refused.json()["error"]["message"].startswith(FULL)
            assert events_files(small_disk) == before
            listed = client.get("/api/runs")
            assert listed.status_code == 200
            assert [r["id"] for r in listed.json()["runs"]] == [final["id"]]
            assert client.get(final["links"]["logs"]).status_code == 200

            # Deleting the run makes room: runs work again.
            assert client.delete(final["links"]["self"]).status_code == 204
            again, events = run_to_end(client, image=image, command=["echo", "room again"])
            assert again["status"] == "succeeded", again
            assert any(e.type == "log" and e.data["lines"] == ["room again"] for e in events)
    finally:
        server.stop()  # before the tmpfs goes


def test_over_max_disk_bytes_the_oldest_finished_run_goes_with_its_container(
    server_factory: ServerFactory, image: str, docker_api: docker.APIClient
) -> None:
    # Each run logs 8.9 MB; the limit holds two such logs and the databases
    # (their write-ahead logs grow by about 0.2 MB a run), not three.
    server = server_factory(max_disk_bytes=22_000_000, log_level="info")
    big = ["seq", "1", "1000000"]
    with server.client() as client:
        first, _ = run_to_end(client, image=image, command=big, auto_remove=False)
        second, _ = run_to_end(client, image=image, command=big)
        assert first["status"] == second["status"] == "succeeded"
        assert not deleted(client, first["id"])
        assert containers_of(docker_api, first["id"]) != []  # kept: auto_remove false

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            feed = pool.submit(collect, client, "/api/events", until="deleted")
            wait_until(
                lambda: client.get("/api/stats").json()["subscribers"] >= 1,
                "the feed to be open",
            )
            third, _ = run_to_end(client, image=image, command=big)
            announced = feed.result(timeout=120)[-1]
        assert announced.type == "deleted" and announced.data == {"id": first["id"]}
        wait_until(lambda: deleted(client, first["id"]), "the oldest run to be deleted")
        assert not deleted(client, second["id"]) and not deleted(client, third["id"])
        assert containers_of(docker_api, first["id"]) == []
        assert f"{first['id']}.events" not in events_files(server.data_dir)
    assert f"retention deleted run {first['id']}" in server.log()
    assert "PULLRUN_MAX_DISK_BYTES" in server.log()


def test_runs_older_than_the_retention_days_go_and_an_active_one_stays(
    server_factory: ServerFactory, image: str, docker_api: docker.APIClient
) -> None:
    # 0.00002 days: 1.7 s, swept every second.
    server = server_factory(retention_days=0.00002)
    with server.client() as client:
        active = start(client, image=image, command=["sh", "-c", gate()])
        wait_for_status(client, active["id"], "running")
        done, _ = run_to_end(client, image=image, command=["echo", "hi"])
        wait_until(lambda: deleted(client, done["id"]), "the finished run to be deleted")
        # Older still, but active: kept.
        assert client.get(active["links"]["self"]).json()["status"] == "running"
        open_gate(docker_api, active["id"])
        wait_until(lambda: deleted(client, active["id"]), "the run to go once it has ended")
        assert events_files(server.data_dir) == []


def test_the_data_dir_is_private_after_runs(
    server_factory: ServerFactory, image: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = server_factory(data_dir=data_dir)
    with server.client() as client:
        final, _ = run_to_end(client, image=image, command=["echo", "hi"])
        assert final["status"] == "succeeded"
        assert client.get(final["links"]["logs"]).status_code == 200
    server.stop()
    found: dict[str, str] = {}
    for path in [data_dir, *data_dir.rglob("*")]:
        if path == server.log_path:
            continue  # the test harness's own file, not the server's
        found[str(path.relative_to(data_dir))] = oct(stat.S_IMODE(path.stat().st_mode))
    assert {"events", "pullrun.db", "auth.db", f"events/{final['id']}.events"} <= set(found)
    wrong = {
        name: mode
        for name, mode in found.items()
        if mode != ("0o700" if (data_dir / name).is_dir() else "0o600")
    }
    assert wrong == {}
