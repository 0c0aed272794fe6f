"""Docker image reference validation (the grammar of distribution/reference)."""

from __future__ import annotations

import re

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_REFERENCE = re.compile(
    rf"(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?", re.ASCII
)
_NAME_MAX = 255


def _lower_path(value: str) -> str:
    """`value` with its repository path lowercased (the registry host kept)."""
    name, at, digest = value.partition("@")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        head, rest = first + "/", rest
    else:
        head, rest = "", name
    path, colon, tag = rest.rpartition(":") if ":" in rest else (rest, "", "")
    return head + path.lower() + colon + tag + at + digest


def validate_reference(value: str) -> str:
    """Return `value` if it is a valid reference, else raise ValueError saying why."""
    if not value:
        raise ValueError("must not be empty")
    if value != value.strip():
        raise ValueError("must not start or end with white space")
    if any(c.isspace() for c in value):
        raise ValueError("is not a valid Docker image reference: it contains white space")
    match = _REFERENCE.fullmatch(value)
    if match is None:
        if _REFERENCE.fullmatch(_lower_path(value)):
            raise ValueError("repository name must be lowercase")
        raise ValueError("is not a valid Docker image reference ([registry/]name[:tag][@digest])")
    first, sep, _ = match.group("name").partition("/")
    is_domain = "." in first or ":" in first or first == "localhost" or first.startswith("[")
    if sep and not is_domain and not re.fullmatch(_PATH_COMPONENT, first):
        # Not a registry host, so a path component: lowercase only (as docker decides).
        raise ValueError("repository name must be lowercase")
    if len(match.group("name")) > _NAME_MAX:
        raise ValueError(f"repository name must be at most {_NAME_MAX} characters")
    return value


def split_reference(value: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of a validated reference."""
    match = _REFERENCE.fullmatch(value)
    if match is None:
        raise ValueError(f"not a valid image reference: {value!r}")
    return match.group("name"), match.group("tag"), match.group("digest")


def registry_of(repository: str) -> str:
    """The registry host of a repository name, as the docker CLI decides it."""
    first, sep, _ = repository.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"
