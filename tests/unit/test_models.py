"""Run request validation: image references, command, env, memory, platform, auth, labels."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from backend.models import MIN_MEMORY, RegistryAuth, RunCreate, RunSpec
from backend.reference import registry_of, split_reference, validate_reference

DIGEST = "sha256:" + "0123456789abcdef" * 4


def errors(**fields: Any) -> list[dict[str, Any]]:
    fields.setdefault("image", "busybox")
    with pytest.raises(ValidationError) as info:
        RunCreate(**fields)
    return info.value.errors()


def message(**fields: Any) -> str:
    """The one error message for an invalid request (what the API shows)."""
    errs = errors(**fields)
    assert len(errs) == 1, errs
    return str(errs[0]["msg"]).removeprefix("Value error, ")


# -- image references ----------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        "busybox",
        "busybox:1.36",
        "busybox:latest",
        "busybox:Latest_1.0-rc",
        "library/busybox",
        "docker.io/library/busybox:1.36",
        "127.0.0.1:5000/pullrun/busybox:latest",
        "localhost/a/b",
        "localhost:5000/a",
        "[::1]:5000/img:tag",
        "ghcr.io/org/img@" + DIGEST,
        "busybox:1.36@" + DIGEST,
        "my-registry.example.com:443/team/app_1:v1.2-rc.3",
        "GHCR.io/org/img",  # the registry host is not case-sensitive
        "a__b",
        "a.b-c---d",
        "a" * 255,
        "a:" + "t" * 128,
    ],
)
def test_valid_references_are_accepted(ref: str) -> None:
    assert validate_reference(ref) == ref
    assert RunCreate(image=ref).image == ref


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ("", "empty"),
        (" busybox", "white space"),
        ("busybox ", "white space"),
        ("busybox\n", "white space"),
        ("Busybox", "lowercase"),
        ("library/BusyBox:1", "lowercase"),
        ("127.0.0.1:5000/pullrun/BusyBox", "lowercase"),
        ("busy box", "not a valid"),
        ("a::b", "not a valid"),
        ("busybox:", "not a valid"),
        (":latest", "not a valid"),
        ("busybox@sha256:abc", "not a valid"),
        ("busybox:tag with space", "not a valid"),
        ("busybox:" + "t" * 129, "not a valid"),
        ("-busybox", "not a valid"),
        ("busybox-", "not a valid"),
        ("a//b", "not a valid"),
        ("a/", "not a valid"),
        ("a" * 256, "at most 255"),
        ("registry.example.com/" + "a" * 250, "at most 255"),
    ],
)
def test_invalid_references_are_rejected_naming_the_problem(ref: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        validate_reference(ref)
    errs = errors(image=ref)
    assert [e["loc"] for e in errs] == [("image",)]
    assert words in errs[0]["msg"]


def test_uppercase_in_any_repository_path_component_is_named() -> None:
    # "Org" has no dot, colon or port and is not localhost: it is not a registry
    # host (see registry_of), so it is part of the repository path, which Docker
    # requires to be lowercase.
    assert registry_of("Org/img") == "docker.io"
    with pytest.raises(ValueError, match="lowercase"):
        validate_reference("Org/img")
    for ref in ("localhost:5000/Org/img", "docker.io/Library/busybox", "Org_x/img"):
        with pytest.raises(ValueError, match="lowercase"):
            validate_reference(ref)


def test_tags_are_ascii_only() -> None:
    # Docker's tag grammar is [\w][\w.-]{0,127} with ASCII \w.
    for ref in ("busybox:látest", "busybox:标签", "busybox:v\u0661"):
        with pytest.raises(ValueError):
            validate_reference(ref)


def test_split_reference() -> None:
    assert split_reference("127.0.0.1:5000/pullrun/busybox:latest") == (
        "127.0.0.1:5000/pullrun/busybox",
        "latest",
        None,
    )
    assert split_reference("ghcr.io/org/img@" + DIGEST) == ("ghcr.io/org/img", None, DIGEST)
    assert split_reference("busybox:1.36@" + DIGEST) == ("busybox", "1.36", DIGEST)
    assert split_reference("localhost:5000/a") == ("localhost:5000/a", None, None)
    with pytest.raises(ValueError):
        split_reference("a::b")


@pytest.mark.parametrize(
    ("repository", "registry"),
    [
        ("busybox", "docker.io"),
        ("library/busybox", "docker.io"),
        ("localhost", "docker.io"),
        ("localhost/a/b", "localhost"),
        ("localhost:5000/a", "localhost:5000"),
        ("127.0.0.1:5000/pullrun/busybox", "127.0.0.1:5000"),
        ("ghcr.io/org/img", "ghcr.io"),
        ("[::1]:5000/img", "[::1]:5000"),
    ],
)
def test_registry_of(repository: str, registry: str) -> None:
    assert registry_of(repository) == registry


_component = st.from_regex(r"\A[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z", fullmatch=True)
_domain = st.sampled_from(["", "localhost/", "localhost:5000/", "127.0.0.1:5000/", "ghcr.io/"])
_tag = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    _domain,
    st.lists(_component, min_size=1, max_size=3),
    st.one_of(st.none(), _tag),
    st.booleans(),
)
def test_grammar_generated_references_are_accepted_and_split(
    domain: str, path: list[str], tag: str | None, with_digest: bool
) -> None:
    name = domain + "/".join(path)
    if len(name) > 255:
        return
    ref = name + (f":{tag}" if tag else "") + (f"@{DIGEST}" if with_digest else "")
    assert validate_reference(ref) == ref
    repository, got_tag, digest = split_reference(ref)
    assert (repository, got_tag, digest) == (name, tag, DIGEST if with_digest else None)


# -- command and entrypoint ----------------------------------------------------------------


def test_command_string_is_split_like_a_shell() -> None:
    spec = RunSpec(image="busybox", command="sh -c 'echo \"hi there\"; exit 3'")
    assert spec.command == ["sh", "-c", 'echo "hi there"; exit 3']
    assert RunSpec(image="busybox", entrypoint="/bin/sh -c").entrypoint == ["/bin/sh", "-c"]
    assert RunSpec(image="busybox", command=["echo", "a b"]).command == ["echo", "a b"]
    assert RunSpec(image="busybox").command is None


def test_unbalanced_quote_is_rejected() -> None:
    text = message(command="echo 'unterminated")
    assert "cannot be split like a shell command" in text
    assert [e["loc"] for e in errors(entrypoint='sh -c "x')] == [("entrypoint",)]


# -- env ------------------------------------------------------------------------------------


def test_env_keys() -> None:
    env = {"A": "1", "_x9": "two words", "PATH_2": "", "lower": "=ok"}
    assert RunSpec(image="busybox", env=env).env == env


@pytest.mark.parametrize("key", ["1A", "A-B", "A B", "", "A=B", "É", "A.B"])
def test_bad_env_keys_are_named(key: str) -> None:
    text = message(env={key: "x"})
    assert repr(key) in text
    assert "[A-Za-z_][A-Za-z0-9_]*" in text


def test_env_key_with_trailing_newline_is_rejected() -> None:
    # `$` in a Python regex also matches before a final "\n".
    errs = errors(env={"FOO\n": "x"})
    assert [e["loc"] for e in errs] == [("env",)]


# -- memory ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("256m", 256 * 1024**2),
        ("256M", 256 * 1024**2),
        ("256mb", 256 * 1024**2),
        ("256 m", 256 * 1024**2),
        (" 1g ", 1024**3),
        ("6m", MIN_MEMORY),
        ("6144k", MIN_MEMORY),
        (str(MIN_MEMORY), MIN_MEMORY),
        (f"{MIN_MEMORY}b", MIN_MEMORY),
        (MIN_MEMORY, MIN_MEMORY),
        (2**40, 2**40),
        (None, None),
    ],
)
def test_memory_sizes(value: Any, expected: int | None) -> None:
    assert RunSpec(image="busybox", memory=value).memory == expected


@pytest.mark.parametrize("value", ["5m", "6143k", str(MIN_MEMORY - 1), MIN_MEMORY - 1, 0, -1])
def test_memory_below_the_engine_minimum_is_rejected(value: Any) -> None:
    assert "at least" in message(memory=value)


@pytest.mark.parametrize("value", ["256x", "m", "1.5g", "-5m", "256 mib", ""])
def test_memory_bad_format(value: str) -> None:
    assert "256m" in message(memory=value)


@pytest.mark.parametrize("value", [5.0, 1024.0, True])
def test_memory_minimum_applies_to_any_numeric_input(value: Any) -> None:
    # JSON 5.0 or true become the int 5 or 1: still far below 6 MiB.
    errs = errors(memory=value)
    assert [e["loc"] for e in errs] == [("memory",)]


# -- platform -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "platform", ["linux", "linux/amd64", "linux/arm/v7", "linux/arm64/v8", "windows/amd64"]
)
def test_valid_platforms(platform: str) -> None:
    assert RunSpec(image="busybox", platform=platform).platform == platform


@pytest.mark.parametrize(
    "platform", ["", "linux/", "/amd64", "linux/amd64/v8/x", "linux amd64", "linux//amd64"]
)
def test_invalid_platforms(platform: str) -> None:
    assert "os[/arch[/variant]]" in message(platform=platform)


def test_platform_with_trailing_newline_is_rejected() -> None:
    errs = errors(platform="linux/amd64\n")
    assert [e["loc"] for e in errs] == [("platform",)]


# -- registry auth --------------------------------------------------------------------------

SECRET = "hunter2-s3cret"
TOKEN = "eyJ-identity-token"


def test_username_and_password_or_identitytoken() -> None:
    auth = RunCreate(image="busybox", registry_auth={"username": "u", "password": SECRET})
    assert auth.registry_auth is not None
    assert auth.registry_auth.password == SECRET
    token = RegistryAuth(identitytoken=TOKEN)
    assert token.identitytoken == TOKEN


@pytest.mark.parametrize(
    "auth",
    [
        {},
        {"username": "u"},
        {"password": SECRET},
        {"username": "", "password": SECRET},
        {"username": "u", "password": ""},
        {"identitytoken": ""},
    ],
)
def test_incomplete_auth_is_rejected(auth: dict[str, str]) -> None:
    errs = errors(registry_auth=auth)
    assert [e["loc"] for e in errs] == [("registry_auth",)]
    assert "give username and password, or identitytoken" in errs[0]["msg"]


def test_auth_rejects_unknown_fields() -> None:
    errs = errors(registry_auth={"username": "u", "password": SECRET, "email": "x@y"})
    assert errs[0]["type"] == "extra_forbidden"


def test_repr_and_str_never_show_secrets() -> None:
    request = RunCreate(
        image="busybox", registry_auth={"username": "u", "password": SECRET, "identitytoken": TOKEN}
    )
    assert request.registry_auth is not None
    for text in (
        repr(request),
        str(request),
        repr(request.registry_auth),
        str(request.registry_auth),
        f"{request!r} {request.registry_auth!r}",
    ):
        assert SECRET not in text
        assert TOKEN not in text
    # The spec part (what is kept and shown) has no auth at all.
    spec = RunSpec.model_validate(request.model_dump(exclude={"registry_auth", "notify_url"}))
    assert SECRET not in spec.model_dump_json()


def test_validation_error_text_does_not_echo_the_password() -> None:
    with pytest.raises(ValidationError) as info:
        RunCreate(image="busybox", registry_auth={"username": "", "password": SECRET})
    # str() is what ends up in logs and tracebacks. (errors() always carries the
    # raw input; the API's 422 handler only uses loc and msg.)
    assert SECRET not in str(info.value)
    assert all(SECRET not in str(e["msg"]) for e in info.value.errors())


# -- labels, workdir, limits, extra fields ---------------------------------------------------


def test_reserved_label_prefix() -> None:
    labels = {"com.example.pullrun.x": "1", "pullrunx": "2", "app": "web"}
    assert RunSpec(image="busybox", labels=labels).labels == labels
    text = message(labels={"app": "web", "pullrun.run_id": "x"})
    assert "pullrun.run_id" in text
    assert "reserved" in text


def test_workdir_must_be_absolute() -> None:
    assert RunSpec(image="busybox", workdir="/tmp").workdir == "/tmp"
    assert "absolute" in message(workdir="tmp")


@pytest.mark.parametrize(("field", "value"), [("timeout", 0), ("cpus", 0), ("cpus", 1025)])
def test_limits_out_of_range(field: str, value: float) -> None:
    assert [e["loc"] for e in errors(**{field: value})] == [(field,)]


def test_unknown_fields_are_rejected() -> None:
    assert errors(imagee="busybox")[0]["type"] == "extra_forbidden"


def test_full_json_request() -> None:
    request = RunCreate.model_validate_json(
        """{"image": "127.0.0.1:5000/pullrun/busybox:latest",
            "command": "sh -c 'echo hi'", "env": {"GREETING": "hi"},
            "memory": "64m", "platform": "linux/amd64", "pull": "always", "tty": true,
            "timeout": 30, "cpus": 0.5, "labels": {"team": "a"},
            "registry_auth": {"username": "u", "password": "p"}}"""
    )
    assert request.command == ["sh", "-c", "echo hi"]
    assert request.memory == 64 * 1024**2
    assert request.pull == "always"
    assert request.auto_remove is True
