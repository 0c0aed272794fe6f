"""A swarm manager as an engine (`kind = "swarm"`): a run is a service in
`replicated-job` mode with one task, placed by the cluster.

`SwarmEngine` is a `DockerEngine` (the same client, TLS, ssh and contexts)
with the calls of services, tasks and nodes. The pipeline's swarm flow is
runs/swarm.py.
"""

from __future__ import annotations

import contextlib
from typing import Any

import docker.auth
import docker.errors

from ..models import RunSpec
from ..reference import registry_of, split_reference
from .docker import MANAGED_LABEL, RUN_LABEL, DockerEngine, LogStream

# Task states, in the order a task goes through them (swarmkit's api/types.proto).
TASK_STATES = (
    "new",
    "allocated",
    "pending",
    "assigned",
    "accepted",
    "preparing",
    "ready",
    "starting",
    "running",
    "complete",
    "shutdown",
    "failed",
    "rejected",
    "remove",
    "orphaned",
)
JOB_REMOVAL_API = (1, 43)
ENDED_STATES = frozenset({"complete", "shutdown", "failed", "rejected", "remove", "orphaned"})


def task_template(
    run_id: str,
    spec: RunSpec,
    *,
    constraints: list[str],
    preferences: list[str],
    no_new_privileges: bool,
) -> dict[str, Any]:
    """The service's TaskTemplate (API 1.41): the run's spec as a swarm task."""
    labels = {**spec.labels, RUN_LABEL: run_id, MANAGED_LABEL: "true"}
    container: dict[str, Any] = {"Image": spec.image, "Labels": labels, "TTY": spec.tty}
    if spec.entrypoint is not None:
        container["Command"] = spec.entrypoint
    if spec.command is not None:
        container["Args"] = spec.command
    if spec.env:
        container["Env"] = [f"{key}={value}" for key, value in spec.env.items()]
    if spec.workdir:
        container["Dir"] = spec.workdir
    if spec.user:
        container["User"] = spec.user
    limits: dict[str, Any] = {}
    if spec.cpus:
        limits["NanoCPUs"] = int(spec.cpus * 1e9)
    if spec.memory:
        limits["MemoryBytes"] = spec.memory
    if spec.pids_limit:
        limits["Pids"] = spec.pids_limit
    # Reserved as asked: the cluster places the task only where it fits.
    reservations = {k: v for k, v in limits.items() if k in ("NanoCPUs", "MemoryBytes")}
    placement: dict[str, Any] = {"Constraints": [*constraints, *spec.constraints]}
    if preferences:
        placement["Preferences"] = [
            {"Spread": {"SpreadDescriptor": p.removeprefix("spread=")}} for p in preferences
        ]
    if spec.platform:
        os_, _, rest = spec.platform.partition("/")
        placement["Platforms"] = [{"OS": os_, "Architecture": rest.partition("/")[0]}]
    del no_new_privileges  # not settable per task before API 1.44: see README
    return {
        "ContainerSpec": container,
        "Resources": {"Limits": limits, "Reservations": reservations},
        "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        "Placement": placement,
    }


class SwarmEngine(DockerEngine):
    def create_service(
        self,
        run_id: str,
        spec: RunSpec,
        *,
        name: str,
        constraints: list[str],
        preferences: list[str],
        auth: dict[str, str] | None,
        lend_credentials: bool,
        no_new_privileges: bool,
    ) -> str:
        """Create the run's service (a one-task job); its id. Registry
        credentials as for a pull: this run's, or the server's only when lent."""
        body = {
            "Name": name,
            "Labels": {RUN_LABEL: run_id, MANAGED_LABEL: "true"},
            "TaskTemplate": task_template(
                run_id,
                spec,
                constraints=constraints,
                preferences=preferences,
                no_new_privileges=no_new_privileges,
            ),
            "Mode": self.one_off_mode(),
        }
        headers: dict[str, Any] = {}
        repository, _, _ = split_reference(spec.image)
        registry = registry_of(repository)
        if auth is not None:
            headers["X-Registry-Auth"] = docker.auth.encode_header(
                {**auth, "serveraddress": registry}
            )
        elif lend_credentials:
            header = docker.auth.get_config_header(self.api, registry)
            if header:
                headers["X-Registry-Auth"] = header
        api: Any = self.api  # the headers must be ours alone: the raw call
        response = api._post_json(api._url("/services/create"), data=body, headers=headers)
        return str(api._result(response, True)["ID"])

    def one_off_mode(self) -> dict[str, Any]:
        """A job of one task where the engine can remove one (API 1.43, Docker 24:
        moby/swarmkit#3112). Before that, removing a `replicated-job` service
        leaves its task and container running (moby/moby#42789, #44312), so a
        cancel could not stop it: there one replica with restart condition
        `none` runs once just the same, and its removal stops it."""
        version = tuple(int(part) for part in str(self.api.api_version).split(".")[:2])
        if version >= JOB_REMOVAL_API:
            return {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
        return {"Replicated": {"Replicas": 1}}

    def tasks(self, service_id: str) -> list[dict[str, Any]]:
        """The service's tasks; none once the service is gone."""
        api: Any = self.api
        try:
            return [dict(t) for t in api.tasks(filters={"service": service_id})]
        except docker.errors.NotFound:
            return []

    def task_logs(self, task_id: str, *, follow: bool) -> LogStream:
        """The task's output (multiplexed frames unless tty), from its first line."""
        return self.log_stream("/tasks/{0}/logs", task_id, follow=follow)

    def remove_service(self, service_id: str) -> None:
        """Remove the service (and so its task and container); gone already is fine."""
        api: Any = self.api
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_service(service_id)

    def managed_services(self, run_id: str | None = None) -> list[str]:
        label = f"{RUN_LABEL}={run_id}" if run_id else f"{MANAGED_LABEL}=true"
        api: Any = self.api
        return [str(s["ID"]) for s in api.services(filters={"label": label})]

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's nodes as `/api/engines` shows them, with pullrun's
        tasks running on each."""
        api: Any = self.api
        ours: dict[str, int] = {}
        # (No desired-state filter: a job's task wants `complete` from its start,
        # a one-replica service's `running`; what counts is the task's state.)
        for task in api.tasks():
            labels = task.get("Spec", {}).get("ContainerSpec", {}).get("Labels") or {}
            if (
                labels.get(MANAGED_LABEL) == "true"
                and (task.get("Status") or {}).get("State") == "running"
            ):
                node = str(task.get("NodeID") or "")
                ours[node] = ours.get(node, 0) + 1
        views = []
        for node in api.nodes():
            description = node.get("Description") or {}
            platform = description.get("Platform") or {}
            resources = description.get("Resources") or {}
            status = node.get("Status") or {}
            views.append(
                {
                    "name": str(description.get("Hostname") or node.get("ID", "")[:12]),
                    "role": str(node.get("Spec", {}).get("Role") or ""),
                    "state": str(status.get("State") or "unknown"),
                    "availability": str(node.get("Spec", {}).get("Availability") or ""),
                    "os": platform.get("OS"),
                    "arch": platform.get("Architecture"),
                    "cpus": (resources.get("NanoCPUs") or 0) / 1e9 or None,
                    "memory": resources.get("MemoryBytes"),
                    "pullrun_tasks": ours.get(str(node.get("ID")), 0),
                }
            )
        return views

    def node_state(self, node_id: str) -> tuple[str, str]:
        """(`ready`/`down`/`disconnected`/`unknown`, the manager's message)."""
        api: Any = self.api
        try:
            status = api.inspect_node(node_id).get("Status") or {}
        except docker.errors.APIError:
            return "unknown", ""
        return str(status.get("State") or "unknown"), str(status.get("Message") or "")

    def node_name(self, node_id: str) -> str | None:
        try:
            node = self.api.inspect_node(node_id)
        except docker.errors.APIError:
            return None
        return str(node.get("Description", {}).get("Hostname") or node_id[:12])
