"""The run policy: what the server lets a run ask for, decided before anything
of the run exists (no record, no event file, no pull).

- Images: `allowed_images` patterns, matched against the normalised reference
  (`busybox` is `docker.io/library/busybox:latest`); a refused image is a 403.
- Limits: memory, CPUs, process count and timeout each have a default (filled
  into the run's spec, so the run shows what it got) and a maximum (422).
- `workdir` under /proc and labels whose keys match `denied_labels`: 422.
- `volumes`, `network`, `ports`, `gpus`: backend/runs/run_options_policy.py (422).
- Who sees what: `env` values only for the run's creator and admins
  (`redact`); `secret_env` values are never kept at all (the spec keeps `***`).

The container itself gets `no-new-privileges` and its process limit from the
pipeline (`settings.no_new_privileges`, `spec.pids_limit`); registry
credentials of the server are lent to a pull only when
`settings.lends_credentials`.
"""

from __future__ import annotations

import posixpath
import re
from fnmatch import fnmatchcase
from typing import Any

from ..auth import Identity, Role
from ..errors import PolicyDenied, PolicyViolation
from ..models import REDACTED, RunCreate, RunRecord
from ..reference import split_reference
from ..settings import Settings
from .run_options_policy import check_options

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
# What the engine may take for an image id (or an id's prefix) rather than a
# name: `3f9c2a1b`, `sha256:3f9c...`. Refused when images are restricted, as the
# engine would otherwise run any local image whose id starts so.
_IMAGE_ID = re.compile(r"(?:sha256:)?[0-9a-f]+", re.ASCII)
_FORBIDDEN_WORKDIRS = ("/proc",)


def normalize_reference(image: str) -> str:
    """The full reference the engine resolves `image` to, as the docker CLI does:
    `busybox` -> `docker.io/library/busybox:latest`,
    `127.0.0.1:5000/a/b@sha256:...` -> unchanged, `index.docker.io/x/y` -> `docker.io/x/y:latest`.
    """
    repository, tag, digest = split_reference(image)
    first, sep, rest = repository.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        domain, path = first.lower(), rest
    else:
        domain, path = DEFAULT_DOMAIN, repository
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    full = f"{domain}/{path}"
    if tag:
        full += f":{tag}"
    elif not digest:
        full += ":latest"
    if digest:
        full += f"@{digest}"
    return full


def images_restricted(settings: Settings) -> bool:
    return "*" not in settings.allowed_images


def image_allowed(image: str, patterns: list[str]) -> bool:
    full = normalize_reference(image)
    return any(fnmatchcase(full, pattern) for pattern in patterns)


def check_image(image: str, settings: Settings) -> None:
    """403 (PolicyDenied) when `allowed_images` does not allow `image`."""
    if not images_restricted(settings):
        return
    patterns = settings.allowed_images
    if _IMAGE_ID.fullmatch(image):
        raise PolicyDenied(
            f"image {image!r} could be taken for an image id, which the image policy "
            "(PULLRUN_ALLOWED_IMAGES) cannot check: give the image's name, "
            f"e.g. docker.io/library/{image}:latest"
        )
    if not image_allowed(image, patterns):
        allowed = ", ".join(patterns) or "none"
        raise PolicyDenied(
            f"image {normalize_reference(image)} is not allowed by the image policy "
            f"(PULLRUN_ALLOWED_IMAGES: {allowed})"
        )


def normalize_path(path: str) -> str:
    """`path` with `.`, `..` and repeated slashes resolved, as text (`//proc/.` -> `/proc`)."""
    normal = posixpath.normpath(path)
    if normal.startswith("//"):  # POSIX keeps a leading `//`; Linux does not care
        normal = "/" + normal.lstrip("/")
    return normal


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


def label_denied(key: str, patterns: list[str]) -> bool:
    lowered = key.lower()
    return any(fnmatchcase(lowered, pattern.lower()) for pattern in patterns)


def _size(value: float) -> str:
    for unit, factor in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if value >= factor and value % factor == 0:
            return f"{int(value // factor)}{unit}"
    return f"{value:g}"


def apply_policy(request: RunCreate, settings: Settings) -> RunCreate:
    """The request as the policy lets it run: limits filled in from the
    defaults, `workdir` normalised. Raises PolicyDenied (403) for an image the
    policy does not allow, PolicyViolation (422, every problem named) for
    limits past their maximums, a workdir under /proc or a denied label."""
    check_image(request.image, settings)
    problems: list[tuple[str, str]] = []
    update: dict[str, Any] = {}

    memory = request.memory if request.memory is not None else settings.default_memory
    if settings.max_memory is not None and memory is not None and memory > settings.max_memory:
        problems.append(("memory", f"at most {_size(settings.max_memory)} (PULLRUN_MAX_MEMORY)"))
    update["memory"] = memory

    cpus = request.cpus if request.cpus is not None else settings.default_cpus
    if settings.max_cpus is not None and cpus is not None and cpus > settings.max_cpus:
        problems.append(("cpus", f"at most {settings.max_cpus:g} (PULLRUN_MAX_CPUS)"))
    update["cpus"] = cpus

    pids = request.pids_limit if request.pids_limit is not None else settings.default_pids_limit
    if pids > settings.max_pids_limit:
        problems.append(
            ("pids_limit", f"at most {settings.max_pids_limit} (PULLRUN_MAX_PIDS_LIMIT)")
        )
    update["pids_limit"] = pids

    if request.timeout is not None and request.timeout > settings.max_timeout:
        problems.append(
            ("timeout", f"at most {settings.max_timeout:g} seconds (PULLRUN_MAX_TIMEOUT)")
        )

    if request.workdir is not None:
        workdir = normalize_path(request.workdir)
        for top in _FORBIDDEN_WORKDIRS:
            if _under(workdir, top):
                problems.append(("workdir", f"may not be under {top} (it is {workdir})"))
        update["workdir"] = workdir

    denied = [key for key in request.labels if label_denied(key, settings.denied_labels)]
    if denied:
        patterns = ", ".join(settings.denied_labels)
        shown = ", ".join(repr(key[:64]) for key in denied[:5])
        problems.append(
            ("labels", f"label {shown} not allowed (PULLRUN_DENIED_LABELS: {patterns})")
        )

    refused = [
        c
        for c in request.constraints
        if not any(fnmatchcase(c, pattern) for pattern in settings.allowed_constraints)
    ]
    if refused:
        patterns = ", ".join(settings.allowed_constraints) or "none"
        problems.append(
            (
                "constraints",
                f"constraint {refused[0]!r} not allowed (PULLRUN_ALLOWED_CONSTRAINTS: {patterns})",
            )
        )

    option_problems, option_update = check_options(request, settings)
    problems.extend(option_problems)
    update.update(option_update)

    if request.notify_url is not None and not settings.allow_notify_url:
        problems.append(
            ("notify_url", "not allowed by the policy (PULLRUN_ALLOW_NOTIFY_URL is off)")
        )

    if problems:
        raise PolicyViolation(problems)
    return request.model_copy(update=update)


# -- who sees what ------------------------------------------------------------------


def sees_env(record: RunRecord, identity: Identity | None) -> bool:
    """`env` values are shown to the run's creator and to admins only."""
    if identity is None:
        return False
    if identity.allows(Role.ADMIN):
        return True
    creator = getattr(record, "created_by", None)
    return creator is not None and creator == identity.name


def redact(record: RunRecord, identity: Identity | None = None) -> RunRecord:
    """`record` as `identity` may see it (None: as anyone may, for the global
    feed): `env` values replaced by `***` unless `sees_env`. `secret_env`
    values are `***` in every record already."""
    if not record.spec.env or sees_env(record, identity):
        return record
    spec = record.spec.model_copy(update={"env": dict.fromkeys(record.spec.env, REDACTED)})
    return record.model_copy(update={"spec": spec})


def kept_spec_data(request: RunCreate) -> dict[str, Any]:
    """What of a request goes into the run's record: everything but
    `registry_auth`, with `secret_env` values replaced by `***`."""
    data = request.model_dump(exclude={"registry_auth", "secret_env", "notify_url"})
    data["secret_env"] = dict.fromkeys(request.secret_env, REDACTED)
    return data
