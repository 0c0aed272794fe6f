"""Which engine takes a run: the rules of docs/api.md ("Placement").

A run may name an engine (`engine`) or select engines by labels
(`engine_labels`); its `platform`, CPUs and memory must fit the engine. Among
the engines that are up and have a free slot: one that already has the image
first (no pull), then the most free slots, then the one that took a run least
recently (round robin). Pure functions over the handles; the runner holds the
lock and does the engine calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..engines.pool import EngineHandle, EnginePool
from ..errors import PolicyViolation
from ..models import RunSpec


def swarm_refused(spec: RunSpec) -> list[str]:
    """The docker-run options of `spec` that a swarm engine does not take."""
    asked = {
        "volumes": bool(spec.volumes),
        "network": spec.network is not None,
        "ports": bool(spec.ports),
        "gpus": spec.gpus is not None,
    }
    return [name for name, given in asked.items() if given]


def selected(handle: EngineHandle, spec: RunSpec) -> bool:
    """Whether the run's choice (name, labels) allows this engine at all."""
    if spec.engine is not None and handle.name != spec.engine:
        return False
    if spec.constraints and handle.config.kind != "swarm":
        return False  # only a swarm's cluster can meet them
    if spec.secret_env and handle.config.kind == "swarm":
        return False  # a service's environment is kept in the cluster's store
    if handle.config.kind == "swarm" and swarm_refused(spec):
        return False  # docker-run options: a single engine only (docs/api.md)
    labels = handle.config.labels
    return all(labels.get(key) == value for key, value in spec.engine_labels.items())


def fits(handle: EngineHandle, spec: RunSpec) -> bool | None:
    """Whether the run fits what the engine is (platform, CPUs, memory);
    None while the engine was never reached."""
    if handle.os is None:
        return None
    if handle.config.kind == "swarm":
        return True  # its nodes differ: the cluster decides (the run may wait there)
    if spec.platform and not handle.platform_matches(spec.platform):
        return False
    if spec.cpus is not None and handle.cpus is not None and spec.cpus > handle.cpus:
        return False
    return not (
        spec.memory is not None and handle.memory is not None and spec.memory > handle.memory
    )


def candidates(pool: Iterable[EngineHandle], spec: RunSpec) -> list[EngineHandle]:
    """The engines that may ever take this run (up or not)."""
    return [h for h in pool if selected(h, spec) and fits(h, spec) is not False]


def check_placeable(pool: EnginePool, spec: RunSpec) -> None:
    """At submit: a run that no engine could ever take is refused (422)."""
    if spec.engine is not None and pool.get(spec.engine) is None:
        names = ", ".join(h.name for h in pool)
        raise PolicyViolation([("engine", f"no engine named {spec.engine!r} (engines: {names})")])
    chosen = [h for h in pool if selected(h, spec)]
    if not chosen and spec.secret_env and any(h.config.kind == "swarm" for h in pool):
        raise PolicyViolation(
            [
                (
                    "secret_env",
                    "not on a swarm engine: the cluster keeps a service's environment in its "
                    "store and shows it in `docker service inspect`; use a docker engine",
                )
            ]
        )
    refused = swarm_refused(spec)
    if not chosen and refused and any(h.config.kind == "swarm" for h in pool):
        raise PolicyViolation(
            [
                (
                    refused[0],
                    "not on a swarm engine (volumes, network, ports and gpus are for a "
                    "docker engine, whose host the policy checks them against); "
                    "use a docker engine",
                )
            ]
        )
    if not chosen and spec.constraints:
        raise PolicyViolation(
            [
                (
                    "constraints",
                    "only a swarm engine takes constraints, and no engine of this run is one",
                )
            ]
        )
    if not chosen:
        raise PolicyViolation([("engine_labels", "no engine has all of these labels")])
    if all(fits(h, spec) is False for h in chosen):
        raise PolicyViolation([(_misfit_field(chosen, spec), _misfit(chosen, spec))])


def _misfit_field(chosen: list[EngineHandle], spec: RunSpec) -> str:
    if spec.platform and not any(h.platform_matches(spec.platform) for h in chosen):
        return "platform"
    if spec.cpus is not None and all(spec.cpus > (h.cpus or 0) for h in chosen):
        return "cpus"
    return "memory"


def _misfit(chosen: list[EngineHandle], spec: RunSpec) -> str:
    field = _misfit_field(chosen, spec)
    if field == "platform":
        have = ", ".join(sorted({f"{h.os}/{h.arch}" for h in chosen}))
        return f"no engine for this run is {spec.platform} (they are {have})"
    if field == "cpus":
        most = max(h.cpus or 0 for h in chosen)
        return f"no engine for this run has {spec.cpus:g} CPUs (the most is {most})"
    most = max(h.memory or 0 for h in chosen)
    return f"no engine for this run has {spec.memory} bytes of memory (the most is {most})"


def choose(
    free: list[EngineHandle], has_image: Callable[[EngineHandle], bool]
) -> EngineHandle | None:
    """The best of the engines that are up with a free slot and may take the run."""
    if not free:
        return None
    if len(free) == 1:
        return free[0]
    with_image = [h for h in free if has_image(h)]
    pool = with_image or free
    return min(pool, key=lambda h: (-h.free, h.placed_seq))
