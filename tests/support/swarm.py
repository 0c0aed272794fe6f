"""The two-node swarm of scripts/swarm.sh, for the swarm tests and benchmark.

`PULLRUN_TEST_SWARM_HOST` is the manager's engine (the swarm's API),
`PULLRUN_TEST_SWARM_WORKER_HOST` the worker's (scripts/test-env.sh). The tests
write an engines file naming the manager as engine `cluster` (`kind =
"swarm"`) and check what a run left on the cluster with the docker CLI
(`docker -H MANAGER service ls --filter label=pullrun.run=ID`) and each node's
engine (`docker ps -a --filter label=pullrun.run=ID`), not only with what the
server says.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import docker

from tests.support.engines import write_engines_file
from tests.support.wait import wait_until

ENGINE = "cluster"  # the swarm's name in the engines file
CLI_TIMEOUT = 60  # seconds for one docker CLI call
# Seconds for a run's service and container to go: the task's stop grace
# period is the engine's default (10 s), and the tests' containers end at SIGTERM.
STOP_DEADLINE = 30.0


@dataclass(frozen=True)
class Swarm:
    manager: str  # unix://... of the manager's dockerd
    worker: str | None  # the worker's, when scripts/swarm.sh made one

    @classmethod
    def from_env(cls) -> Swarm | None:
        """The swarm of scripts/test-env.sh; None when its variables are absent."""
        manager = os.environ.get("PULLRUN_TEST_SWARM_HOST")
        if not manager:
            return None
        return cls(manager, os.environ.get("PULLRUN_TEST_SWARM_WORKER_HOST") or None)

    @property
    def hosts(self) -> list[str]:
        return [self.manager, *([self.worker] if self.worker else [])]

    def cli(self, *args: str, host: str | None = None) -> str:
        """The docker CLI on the manager (or `host`); its stdout."""
        done = subprocess.run(
            ["docker", "-H", host or self.manager, *args],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: exit {done.returncode}: {done.stderr}")
        return done.stdout

    def engines_file(self, path: Path, **table: object) -> Path:
        """An engines file with the manager as the swarm engine `cluster`."""
        return write_engines_file(path, {ENGINE: {"kind": "swarm", "host": self.manager, **table}})

    def services_of(self, run_id: str) -> list[str]:
        """`docker service ls -q --filter label=pullrun.run=RUN` on the manager."""
        return self.cli("service", "ls", "-q", "--filter", f"label=pullrun.run={run_id}").split()

    def containers_of(self, run_id: str) -> list[str]:
        """The run's containers, running or not, on every node (`docker ps -aq --filter ...`)."""
        found: list[str] = []
        for host in self.hosts:
            found += self.cli(
                "ps", "-aq", "--filter", f"label=pullrun.run={run_id}", host=host
            ).split()
        return found

    def wait_gone(self, run_id: str, timeout: float = STOP_DEADLINE) -> None:
        """Wait until the run's service is gone from the cluster and its
        container from every node (stopped and removed with its task); should
        that fail, remove what is left (`tidy`)."""
        try:
            wait_until(
                lambda: not self.services_of(run_id),
                f"run {run_id}'s service to be gone from the swarm",
                timeout,
                interval=0.1,
            )
            wait_until(
                lambda: not self.containers_of(run_id),
                f"run {run_id}'s container to be gone from its node with its service",
                timeout,
                interval=0.1,
            )
        except AssertionError:
            self.tidy(run_id)
            raise

    def tidy(self, run_id: str) -> None:
        """Remove the run's containers from every node, lest they pile up on the
        test swarm (and a running one hold its reservation there): a removed
        `replicated-job` service leaves its task's container behind, running or
        not, on engines before API 1.43 (moby/moby#42789, #44312; fixed by
        moby/swarmkit#3112)."""
        for host in self.hosts:
            with docker.APIClient(base_url=host, version="auto") as api:
                for container in api.containers(
                    all=True, filters={"label": f"pullrun.run={run_id}"}
                ):
                    with contextlib.suppress(docker.errors.NotFound):
                        api.remove_container(container["Id"], force=True)

    def remove_image(self, ref: str) -> None:
        """`docker rmi -f REF` on every node (absent is fine)."""
        for host in self.hosts:
            with (
                docker.APIClient(base_url=host, version="auto") as api,
                contextlib.suppress(docker.errors.NotFound),
            ):
                api.remove_image(ref, force=True)
