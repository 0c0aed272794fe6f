"""The run policy, input limits and secrets, in-process (create_app with the
in-memory engine): refused runs leave nothing behind, limits and their
defaults reach the engine, `secret_env` values are never kept, `env` values
are shown only to their run's creator and admins, event-stream limits, and
the open-file limit at start. tests/integration/test_policy.py does the same
against the real server and engine."""

from __future__ import annotations

import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from backend.auth import Identity, Role
from backend.engines.fake import FakeDocker
from backend.errors import PolicyDenied, PolicyViolation, TooManyRequests
from backend.models import (
    MAX_ARG_LENGTH,
    MAX_ARGS,
    MAX_ENV,
    MAX_ENV_VALUE_LENGTH,
    MAX_IMAGE_LENGTH,
    MAX_KEY_LENGTH,
    MAX_LABEL_VALUE_LENGTH,
    MAX_LABELS,
    MAX_SECRET_LENGTH,
    MAX_STRING_LENGTH,
    RunCreate,
)
from backend.runs import policy
from backend.runs.policy import apply_policy, normalize_path, normalize_reference
from backend.settings import Settings
from backend.web import connections
from backend.web.app import create_app
from backend.web.connections import StreamLimits, open_files_needed, raise_open_file_limit
from tests.unit.conftest import BASE, bearer, make_token, wait_until

SECRET = "s3cr3t-value-7f1d9c"
ENV_VALUE = "visible-only-to-owner-42"
REGISTRY_PASSWORD = "registry-pw-c0ffee"


class App:
    """The app in-process with tokens of each role (names: admin-t, op-a, op-b, viewer-t)."""

    def __init__(self, settings: Settings, daemon: FakeDocker) -> None:
        self.settings = settings
        self.daemon = daemon
        self.tokens = {
            "admin-t": make_token(settings, "admin-t", "admin"),
            "op-a": make_token(settings, "op-a", "operator"),
            "op-b": make_token(settings, "op-b", "operator"),
            "viewer-t": make_token(settings, "viewer-t", "viewer"),
        }
        self.app = create_app(settings, engine_factory=daemon)
        self.client = TestClient(self.app, headers=bearer(self.tokens["admin-t"]))

    def as_(self, name: str) -> dict[str, str]:
        return bearer(self.tokens[name])

    def post(self, body: dict[str, Any], who: str = "admin-t") -> Any:
        body.setdefault("image", BASE)
        return self.client.post("/api/runs", json=body, headers=self.as_(who))

    def finished(self, run_id: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            got: dict[str, Any] = self.client.get(f"/api/runs/{run_id}").json()
            return got if got["finished_at"] else None

        final = wait_until(done, f"run {run_id} to finish")
        wait_until(lambda: self.client.get("/api/stats").json()["active_runs"] == 0, "no runs")
        return final

    def nothing_left(self) -> None:
        """No run, no event file, no engine call: what a refused run leaves."""
        assert self.client.get("/api/runs").json()["runs"] == []
        events = self.settings.events_dir
        assert not events.exists() or list(events.iterdir()) == []
        assert [c.op for c in self.daemon.calls if c.op != "version"] == []


@pytest.fixture
def make_app(settings: Settings, daemon: FakeDocker) -> Iterator[Any]:
    opened: list[App] = []

    def make(**overrides: Any) -> App:
        app = App(Settings(**{**settings.model_dump(), **overrides}), daemon)
        app.client.__enter__()
        opened.append(app)
        return app

    try:
        yield make
    finally:
        daemon.close()
        for app in opened:
            app.client.__exit__(None, None, None)


@pytest.fixture
def app(make_app: Any) -> App:
    made: App = make_app()
    return made


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    return error


# -- references -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "full"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/busybox", "docker.io/library/busybox:latest"),
        ("someone/tool:v1", "docker.io/someone/tool:v1"),
        ("127.0.0.1:5000/pullrun/busybox", "127.0.0.1:5000/pullrun/busybox:latest"),
        ("localhost/a", "localhost/a:latest"),
        ("Registry.Example.com/a/b:T", "registry.example.com/a/b:T"),
        ("busybox@sha256:" + "a" * 64, "docker.io/library/busybox@sha256:" + "a" * 64),
        ("busybox:1@sha256:" + "a" * 64, "docker.io/library/busybox:1@sha256:" + "a" * 64),
    ],
)
def test_references_are_normalised_as_the_engine_resolves_them(image: str, full: str) -> None:
    assert normalize_reference(image) == full


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("/proc", "/proc"),
        ("/./proc", "/proc"),
        ("//proc", "/proc"),
        ("///proc/", "/proc"),
        ("/proc/../proc", "/proc"),
        ("/tmp/../proc/self", "/proc/self"),
        ("/../../proc", "/proc"),
        ("/app/", "/app"),
    ],
)
def test_paths_are_resolved_as_text(path: str, normal: str) -> None:
    assert normalize_path(path) == normal


# -- images -----------------------------------------------------------------------------


RESTRICTED = {"allowed_images": ["127.0.0.1:5000/*", "docker.io/library/*"]}


@pytest.mark.parametrize(
    "image",
    [
        "127.0.0.1:5000/pullrun/busybox:latest",
        "127.0.0.1:5000/a",
        "busybox",
        "docker.io/library/alpine:3",
        "library/busybox@sha256:" + "b" * 64,
    ],
)
def test_allowed_images_pass(image: str, settings: Settings) -> None:
    restricted = Settings(**{**settings.model_dump(), **RESTRICTED})
    assert apply_policy(RunCreate(image=image), restricted).image == image


@pytest.mark.parametrize(
    "image",
    [
        "pullrun/busybox:base",  # docker.io/pullrun/...: not an official image
        "127.0.0.1:5001/pullrun/private:latest",
        "127.0.0.1:50000/x",
        "evil.example/docker.io/library/busybox",
        "localhost:5000/pullrun/busybox",
        "3f9c2a1b7d4e",  # the engine would take it for an image id
        "sha256:" + "c" * 64,
    ],
)
def test_other_images_are_refused_with_403_naming_the_policy(image: str, make_app: Any) -> None:
    app = make_app(**RESTRICTED)
    error = error_of(app.post({"image": image, "command": ["true"]}), 403, "policy_denied")
    assert "PULLRUN_ALLOWED_IMAGES" in error["message"]
    app.nothing_left()


def test_any_image_by_default(settings: Settings) -> None:
    assert settings.allowed_images == ["*"]
    assert apply_policy(RunCreate(image="3f9c2a1b7d4e"), settings).image == "3f9c2a1b7d4e"


def test_no_image_at_all_when_the_list_is_empty(settings: Settings) -> None:
    nothing = Settings(**{**settings.model_dump(), "allowed_images": []})
    with pytest.raises(PolicyDenied, match="none"):
        apply_policy(RunCreate(image="busybox"), nothing)


# -- limits -----------------------------------------------------------------------------


def test_defaults_are_filled_in_and_reach_the_engine(app: App) -> None:
    response = app.post({"command": ["true"]})
    assert response.status_code == 201, response.text
    spec = response.json()["spec"]
    assert spec["memory"] == 1024**3
    assert spec["pids_limit"] == 1024
    assert spec["cpus"] == 1.0
    assert spec["timeout"] is None  # PULLRUN_DEFAULT_TIMEOUT applies, as before
    final = app.finished(response.json()["id"])
    assert final["status"] == "succeeded"
    (create,) = app.daemon.calls_of("create")
    assert create.args[1].pids_limit == 1024 and create.args[1].memory == 1024**3
    assert create.args[1].cpus == 1.0
    assert create.kwargs["no_new_privileges"] is True


def test_asked_limits_within_the_maximums_are_kept(app: App) -> None:
    response = app.post({"memory": "64m", "cpus": 0.5, "pids_limit": 50, "timeout": 600})
    assert response.status_code == 201, response.text
    spec = response.json()["spec"]
    assert (spec["memory"], spec["cpus"], spec["pids_limit"], spec["timeout"]) == (
        64 * 1024**2,
        0.5,
        50,
        600,
    )
    app.finished(response.json()["id"])
    (create,) = app.daemon.calls_of("create")
    spec = create.args[1]
    assert (spec.memory, spec.cpus, spec.pids_limit) == (64 * 1024**2, 0.5, 50)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"memory": "17g"}, "memory", "at most 16g (PULLRUN_MAX_MEMORY)"),
        ({"pids_limit": 32769}, "pids_limit", "at most 32768 (PULLRUN_MAX_PIDS_LIMIT)"),
        ({"cpus": 32.5}, "cpus", "at most 32 (PULLRUN_MAX_CPUS)"),
        ({"timeout": 7 * 24 * 3600 + 1}, "timeout", "(PULLRUN_MAX_TIMEOUT)"),
    ],
)
def test_above_a_maximum_is_422_naming_the_limit(
    body: dict[str, Any], field: str, words: str, app: App
) -> None:
    error = error_of(app.post(body), 422, "invalid_request")
    assert error["fields"] == [{"field": field, "message": error["fields"][0]["message"]}]
    assert words in error["fields"][0]["message"] and words in error["message"]
    app.nothing_left()


def test_cpus_maximum_and_default_from_settings(make_app: Any) -> None:
    app = make_app(default_cpus=1, max_cpus=2)
    error = error_of(app.post({"cpus": 2.5}), 422, "invalid_request")
    assert "PULLRUN_MAX_CPUS" in error["message"]
    response = app.post({"command": ["true"]})
    assert response.json()["spec"]["cpus"] == 1
    app.finished(response.json()["id"])


def test_every_problem_is_named_at_once(app: App) -> None:
    body = {"memory": "32g", "pids_limit": 10**6, "workdir": "/proc", "labels": {"traefik.x": "1"}}
    error = error_of(app.post(body), 422, "invalid_request")
    assert [f["field"] for f in error["fields"]] == ["memory", "pids_limit", "workdir", "labels"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"default_memory": "2g", "max_memory": "1g"},
        {"default_pids_limit": 100, "max_pids_limit": 10},
        {"default_timeout": 100, "max_timeout": 10},
        {"default_cpus": "none"},  # with a maximum (32): runs asking nothing would escape it
        {"default_cpus": 4, "max_cpus": 2},
        {"default_memory": "none"},
    ],
)
def test_inconsistent_limit_settings_are_refused(
    overrides: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in overrides.items():
        monkeypatch.setenv(f"PULLRUN_{key.upper()}", str(value))
    with pytest.raises(ValidationError, match="PULLRUN_"):
        Settings()


def test_limit_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULLRUN_DEFAULT_MEMORY", "256m")
    monkeypatch.setenv("PULLRUN_MAX_MEMORY", "none")
    monkeypatch.setenv("PULLRUN_DEFAULT_CPUS", "none")
    monkeypatch.setenv("PULLRUN_MAX_CPUS", "none")
    monkeypatch.setenv("PULLRUN_ALLOWED_IMAGES", "127.0.0.1:5000/*, docker.io/library/*")
    monkeypatch.setenv("PULLRUN_DENIED_LABELS", '["x.*"]')
    settings = Settings()
    assert settings.default_memory == 256 * 1024**2 and settings.max_memory is None
    assert settings.default_cpus is None and settings.max_cpus is None
    assert settings.allowed_images == ["127.0.0.1:5000/*", "docker.io/library/*"]
    assert settings.denied_labels == ["x.*"]


# -- no-new-privileges ------------------------------------------------------------------


@pytest.mark.parametrize("setting", [True, False])
def test_no_new_privileges_unless_turned_off(setting: bool, make_app: Any) -> None:
    app = make_app(no_new_privileges=setting)
    response = app.post({"command": ["true"], "auto_remove": False})
    final = app.finished(response.json()["id"])
    host = app.daemon.containers[final["container_id"]]
    assert host.security_opt == (["no-new-privileges"] if setting else [])
    with app.daemon() as engine:
        config = engine.inspect(final["container_id"])["HostConfig"]
    assert config["PidsLimit"] == 1024
    assert config["SecurityOpt"] == (["no-new-privileges"] if setting else None)


# -- workdir and labels -----------------------------------------------------------------


@pytest.mark.parametrize(
    "workdir", ["/proc", "/./proc", "//proc", "/proc/../proc", "/proc/self/fd", "/tmp/../proc/1"]
)
def test_workdir_under_proc_is_refused(workdir: str, app: App) -> None:
    error = error_of(app.post({"workdir": workdir}), 422, "invalid_request")
    assert error["fields"][0]["field"] == "workdir" and "/proc" in error["message"]
    app.nothing_left()


@pytest.mark.parametrize(("workdir", "kept"), [("/procfs", "/procfs"), ("/tmp/./a/", "/tmp/a")])
def test_other_workdirs_run_resolved(workdir: str, kept: str, app: App) -> None:
    response = app.post({"workdir": workdir, "command": ["true"]})
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["workdir"] == kept
    app.finished(response.json()["id"])


@pytest.mark.parametrize(
    "key",
    [
        "traefik.http.routers.x.rule",
        "Traefik.enable",
        "caddy",
        "caddy_0.reverse_proxy",
        "com.docker.compose.project",
        "pullrun.managed",
    ],
)
def test_denied_labels_are_refused(key: str, app: App) -> None:
    error = error_of(app.post({"labels": {"team": "a", key: "x"}}), 422, "invalid_request")
    assert error["fields"][0]["field"] == "labels"
    app.nothing_left()


def test_denied_labels_follow_the_setting(make_app: Any) -> None:
    app = make_app(denied_labels=["team.*"])
    error_of(app.post({"labels": {"team.name": "a"}}), 422, "invalid_request")
    response = app.post({"labels": {"traefik.enable": "true"}, "command": ["true"]})
    assert response.status_code == 201, response.text
    app.finished(response.json()["id"])


# -- lending the server's credentials ---------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "lends"),
    [
        ({}, False),
        ({"lend_server_credentials": True}, True),
        ({"auth": "off"}, True),
        ({"auth": "off", "lend_server_credentials": False}, False),
    ],
)
def test_server_credentials_are_lent_only_when_the_settings_say(
    overrides: dict[str, Any], lends: bool, settings: Settings, daemon: FakeDocker
) -> None:
    lending = Settings(**{**settings.model_dump(), **overrides})
    assert lending.lends_credentials is lends
    with TestClient(create_app(lending, engine_factory=daemon)) as client:
        headers = bearer(make_token(lending)) if lending.auth == "required" else {}
        body = {"image": "127.0.0.1:5000/nosuch:1", "pull": "always"}
        response = client.post("/api/runs", json=body, headers=headers)
        assert response.status_code == 201, response.text
        wait_until(lambda: daemon.calls_of("pull"), "the pull")
        (pull,) = daemon.calls_of("pull")
        assert pull.kwargs["lend_credentials"] is lends
        assert pull.kwargs["auth"] is None
        daemon.close()


# -- input limits and text that is not Unicode ------------------------------------------


def long(n: int) -> str:
    return "x" * n


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"image": "a" * (MAX_IMAGE_LENGTH + 1)}, "image", f"{MAX_IMAGE_LENGTH} characters"),
        ({"env": {f"K{i}": "v" for i in range(MAX_ENV + 1)}}, "env", f"at most {MAX_ENV}"),
        ({"env": {long(MAX_KEY_LENGTH + 1): "v"}}, "env", f"{MAX_KEY_LENGTH} characters"),
        ({"env": {"K": long(MAX_ENV_VALUE_LENGTH + 1)}}, "env", str(MAX_ENV_VALUE_LENGTH)),
        ({"env": {"K": "a\x00b"}}, "env", "NUL"),
        (
            {
                "env": {f"A{i}": "v" for i in range(200)},
                "secret_env": {f"B{i}": "v" for i in range(57)},
            },
            "secret_env",
            f"at most {MAX_ENV}",
        ),
        ({"secret_env": {"K": long(MAX_ENV_VALUE_LENGTH + 1)}}, "secret_env", "characters"),
        ({"secret_env": {"bad key": "v"}}, "secret_env", "must match"),
        ({"env": {"K": "1"}, "secret_env": {"K": "2"}}, "secret_env", "also in env"),
        ({"labels": {f"l{i}": "v" for i in range(MAX_LABELS + 1)}}, "labels", str(MAX_LABELS)),
        ({"labels": {long(MAX_KEY_LENGTH + 1): "v"}}, "labels", str(MAX_KEY_LENGTH)),
        ({"labels": {"l": long(MAX_LABEL_VALUE_LENGTH + 1)}}, "labels", "4096"),
        ({"command": ["a"] * (MAX_ARGS + 1)}, "command", f"at most {MAX_ARGS} arguments"),
        ({"command": ["echo", long(MAX_ARG_LENGTH + 1)]}, "command", "argument 1"),
        ({"command": ["echo", "a\x00"]}, "command", "NUL"),
        ({"entrypoint": ["a"] * (MAX_ARGS + 1)}, "entrypoint", f"at most {MAX_ARGS}"),
        ({"workdir": "/" + long(MAX_STRING_LENGTH)}, "workdir", str(MAX_STRING_LENGTH)),
        ({"user": long(MAX_STRING_LENGTH + 1)}, "user", str(MAX_STRING_LENGTH)),
        (
            {"registry_auth": {"username": "u", "password": long(MAX_SECRET_LENGTH + 1)}},
            "registry_auth.password",
            str(MAX_SECRET_LENGTH),
        ),
    ],
)
def test_input_limits_are_422_naming_the_field_and_the_limit(
    body: dict[str, Any], field: str, words: str, app: App
) -> None:
    error = error_of(app.post(body), 422, "invalid_request")
    fields = [f["field"] for f in error["fields"]]
    assert field in fields, error
    assert words in error["message"], error
    app.nothing_left()


def test_limits_are_inclusive(app: App) -> None:
    body = {
        "env": {f"K{i}": long(64) for i in range(MAX_ENV - 1)},
        "secret_env": {"S": long(MAX_ENV_VALUE_LENGTH)},
        "labels": {f"l{i}": "v" for i in range(MAX_LABELS)},
        "command": ["true", *(["x"] * (MAX_ARGS - 1))],
    }
    response = app.post(body)
    assert response.status_code == 201, response.text[:300]
    app.finished(response.json()["id"])


SURROGATE_BODIES = [
    (b'{"image": "pullrun/busybox:base", "env": {"A": "\\ud800"}}', "env"),
    (b'{"image": "pullrun/busybox:base", "env": {"\\udfff": "x"}}', "env"),
    (b'{"image": "pullrun/busybox:base", "secret_env": {"S": "a\\udc80b"}}', "secret_env"),
    (b'{"image": "pullrun/busybox:base", "command": ["echo", "\\ud800"]}', "command"),
    (b'{"image": "pullrun/busybox:base", "command": "echo \\ud800"}', "command"),
    (b'{"image": "pullrun/busybox:base", "labels": {"k": "\\ud83d"}}', "labels"),
    (b'{"image": "pullrun/busybox:base", "workdir": "/\\ud800"}', "workdir"),
    (
        b'{"image": "pullrun/busybox:base", '
        b'"registry_auth": {"username": "u", "password": "\\ud800"}}',
        "registry_auth",
    ),
    (b'{"image": "busybox\\ud800"}', "image"),
    (b'{"image": "pullrun/busybox:base", "\\ud800": 1}', "body"),
]


@pytest.mark.parametrize(("raw", "field"), SURROGATE_BODIES)
def test_lone_surrogates_are_422_and_leave_nothing(raw: bytes, field: str, app: App) -> None:
    response = app.client.post(
        "/api/runs", content=raw, headers={"content-type": "application/json"}
    )
    error = error_of(response, 422, "invalid_request")
    assert [f["field"] for f in error["fields"]] == [field]
    assert "unicode" in error["message"].lower()
    app.nothing_left()


def test_a_pair_of_surrogates_is_a_character(app: App) -> None:
    raw = b'{"image": "pullrun/busybox:base", "env": {"A": "\\ud83d\\ude00"}, "command": ["true"]}'
    response = app.client.post(
        "/api/runs", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["env"] == {"A": "\U0001f600"}
    app.finished(response.json()["id"])


# -- secret_env -------------------------------------------------------------------------


def every_byte_of(settings: Settings) -> bytes:
    return b"".join(p.read_bytes() for p in Path(settings.data_dir).rglob("*") if p.is_file())


def test_secret_env_reaches_the_container_and_nothing_else(app: App) -> None:
    body = {
        "command": ["true"],
        "env": {"PLAIN": "p"},
        "secret_env": {"S": SECRET},
        "registry_auth": {"username": "u", "password": REGISTRY_PASSWORD},
        "auto_remove": False,
    }
    response = app.post(body, who="op-a")
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["spec"]["secret_env"] == {"S": "***"}
    final = app.finished(run["id"])
    assert final["status"] == "succeeded"
    # The container got it...
    (create,) = app.daemon.calls_of("create")
    assert create.args[1].env == {"PLAIN": "p", "S": SECRET}
    # ... and nothing kept it: answers, pages, the feed's records, files.
    answers = [
        response.text,
        app.client.get(f"/api/runs/{run['id']}").text,
        app.client.get("/api/runs").text,
        app.client.get(f"/runs/{run['id']}").text,
        app.client.get(f"/?from={run['id']}").text,
        app.client.get(f"/api/runs/{run['id']}/events").text,
        app.client.get(f"/api/runs/{run['id']}/logs").text,
    ]
    for answer in answers:
        assert SECRET not in answer and REGISTRY_PASSWORD not in answer
    assert "S=***" in answers[4]  # "Run again" shows the key, asks for the value
    app.client.__exit__(None, None, None)  # the lifespan ends: databases checkpointed
    data = every_byte_of(app.settings)
    assert SECRET.encode() not in data and REGISTRY_PASSWORD.encode() not in data
    assert b'"S":"***"' in data  # the key is kept
    assert SECRET not in repr(RunCreate(image="busybox", secret_env={"S": SECRET}))


def test_the_feed_never_carries_env_values(app: App) -> None:
    seen: list[dict[str, Any]] = []
    runner = app.app.state.runner
    real_publish = runner.feed.publish

    def publish(run: dict[str, Any], *args: Any) -> None:
        seen.append(run)
        real_publish(run, *args)

    runner.feed.publish = publish
    response = app.post({"command": ["true"], "env": {"E": ENV_VALUE}, "secret_env": {"S": SECRET}})
    app.finished(response.json()["id"])
    runs = [r for r in seen if "spec" in r]
    assert runs, seen
    for run in runs:
        assert run["spec"]["env"] == {"E": "***"} and run["spec"]["secret_env"] == {"S": "***"}
    encoded = b"".join(raw for _, raw in runner.feed._events)
    assert ENV_VALUE.encode() not in encoded and SECRET.encode() not in encoded


# -- who sees env -----------------------------------------------------------------------


def test_env_values_are_shown_only_to_the_creator_and_admins(app: App) -> None:
    response = app.post({"command": ["true"], "env": {"E": ENV_VALUE}}, who="op-a")
    assert response.json()["spec"]["env"] == {"E": ENV_VALUE}  # the creator's answer
    run_id = response.json()["id"]
    app.finished(run_id)
    for who, sees in (("op-a", True), ("admin-t", True), ("op-b", False), ("viewer-t", False)):
        headers = app.as_(who)
        one = app.client.get(f"/api/runs/{run_id}", headers=headers).json()
        listed = app.client.get("/api/runs", headers=headers).json()["runs"][0]
        page = app.client.get(f"/runs/{run_id}", headers=headers).text
        index = app.client.get("/", headers=headers).text
        again = app.client.get(f"/?from={run_id}", headers=headers).text
        expected = {"E": ENV_VALUE if sees else "***"}
        assert one["spec"]["env"] == expected, who
        assert listed["spec"]["env"] == expected, who
        for text in (page, index, again):
            assert (ENV_VALUE in text) is sees, who
        if who == "viewer-t":  # a viewer may not start runs: no form to fill
            assert 'id="run-form"' not in again
        elif not sees:
            assert "E=***" in again


def test_redact_keeps_the_record_when_there_is_nothing_to_hide(settings: Settings) -> None:
    viewer = Identity("v", Role.VIEWER, "token")
    spec = RunCreate(image="busybox")
    assert policy.kept_spec_data(spec)["secret_env"] == {}
    record_data = {
        "id": "x",
        "status": "queued",
        "spec": {"image": "busybox", "env": {"A": "1"}},
        "created_at": "t",
        "links": {"self": "", "events": "", "logs": "", "page": ""},
    }
    from backend.models import RunRecord

    record = RunRecord.model_validate(record_data)
    assert policy.redact(record, viewer).spec.env == {"A": "***"}
    assert record.spec.env == {"A": "1"}  # a copy: the record itself is untouched
    assert policy.redact(record, None).spec.env == {"A": "***"}
    empty = record.model_copy(update={"spec": record.spec.model_copy(update={"env": {}})})
    assert policy.redact(empty, viewer) is empty


# -- event-stream limits ----------------------------------------------------------------


def test_stream_limits_count_in_total_and_per_identity() -> None:
    limits = StreamLimits(total=3, per_identity=2)
    alice, bob = Identity("alice", Role.VIEWER, "token"), Identity("bob", Role.VIEWER, "token")
    a1, a2 = limits.acquire(alice), limits.acquire(alice)
    with pytest.raises(TooManyRequests, match="PER_IDENTITY") as info:
        limits.acquire(alice)
    assert info.value.retry_after > 0
    b1 = limits.acquire(bob)
    with pytest.raises(TooManyRequests, match="PULLRUN_MAX_SSE_CONNECTIONS"):
        limits.acquire(bob)
    a1.release()
    a1.release()  # idempotent
    assert limits.open == 2 and limits.by_identity == {"alice": 1, "bob": 1}
    limits.acquire(bob)
    for slot in (a2, b1):
        slot.release()
    assert limits.open == 1


@pytest.mark.parametrize("path", ["/api/events", "/api/runs/{id}/events"])
def test_streams_past_the_limit_get_429_with_retry_after(path: str, make_app: Any) -> None:
    app = make_app(max_sse_connections=10, max_sse_connections_per_identity=2)
    response = app.post({"command": ["sh", "-c", "exit 0"]})
    run_id = response.json()["id"]
    app.finished(run_id)
    limits: StreamLimits = app.app.state.stream_limits
    viewer = Identity("viewer-t", Role.VIEWER, "token")
    held = [limits.acquire(viewer), limits.acquire(viewer)]
    url = path.replace("{id}", run_id)
    refused = app.client.get(url, headers=app.as_("viewer-t"))
    error = error_of(refused, 429, "too_many_requests")
    assert int(refused.headers["retry-after"]) >= 1
    assert "PULLRUN_MAX_SSE_CONNECTIONS_PER_IDENTITY" in error["message"]
    # Another identity still gets its stream (a finished run's replays to `done` and ends).
    if "runs" in url:
        replay = app.client.get(url, headers=app.as_("op-b"))
        assert replay.status_code == 200 and "event: done" in replay.text
        assert limits.open == 2, "the ended stream gave its slot back"
    for slot in held:
        slot.release()
    assert limits.open == 0
    for _ in range(8):  # the total: 8 other slots + 2 = 10
        limits.acquire(Identity(f"u{_}", Role.VIEWER, "token"))
    limits.acquire(viewer)
    limits.acquire(viewer)
    error = error_of(app.client.get(url, headers=app.as_("op-b")), 429, "too_many_requests")
    assert "PULLRUN_MAX_SSE_CONNECTIONS)" in error["message"]


# -- the open-file limit ----------------------------------------------------------------


def test_the_defaults_fit_the_usual_open_file_limit(settings: Settings) -> None:
    assert open_files_needed(Settings()) <= 1024


def test_the_soft_limit_is_raised_to_the_hard_limit(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(connections.resource, "getrlimit", lambda _: (1024, 524288))
    monkeypatch.setattr(connections.resource, "setrlimit", lambda _, limits: calls.append(limits))
    assert raise_open_file_limit(settings) == 524288
    assert calls == [(524288, 524288)]


def test_an_unlimited_hard_limit_still_gives_a_finite_soft_one(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(connections.resource, "getrlimit", lambda _: (1024, resource.RLIM_INFINITY))
    monkeypatch.setattr(connections.resource, "setrlimit", lambda _, limits: calls.append(limits))
    assert raise_open_file_limit(settings) == 1 << 20
    assert calls == [(1 << 20, resource.RLIM_INFINITY)]


def test_a_hard_limit_too_low_refuses_to_start(
    settings: Settings, daemon: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connections.resource, "getrlimit", lambda _: (256, 512))
    monkeypatch.setattr(
        connections.resource,
        "setrlimit",
        lambda *_: pytest.fail("the limit must not be changed when it cannot suffice"),
    )
    with pytest.raises(RuntimeError, match="open-file limit is too low") as info:
        raise_open_file_limit(settings)
    assert "PULLRUN_MAX_SSE_CONNECTIONS" in str(info.value) and "512" in str(info.value)
    app = create_app(settings, engine_factory=daemon)
    with pytest.raises(RuntimeError, match="open-file limit"), TestClient(app):
        pass  # the app does not start
    assert not settings.db_path.exists()


# -- the pieces -------------------------------------------------------------------------


def test_policy_errors_carry_their_fields() -> None:
    error = PolicyViolation([("memory", "at most 1g"), ("labels", "no")])
    assert error.status_code == 422 and error.code == "invalid_request"
    assert error.fields == [
        {"field": "memory", "message": "at most 1g"},
        {"field": "labels", "message": "no"},
    ]
    assert error.message == "memory: at most 1g; labels: no"


def test_kept_spec_data_has_no_secret() -> None:
    request = RunCreate(
        image="busybox",
        secret_env={"S": SECRET},
        registry_auth={"username": "u", "password": REGISTRY_PASSWORD},
    )
    kept = orjson.dumps(policy.kept_spec_data(request))
    assert SECRET.encode() not in kept and REGISTRY_PASSWORD.encode() not in kept
    assert b"registry_auth" not in kept


def test_ids_and_cursors_are_bounded(app: App) -> None:
    boot = app.app.state.runner.feed.boot
    huge = f"{boot}-{'9' * 5000}"  # int() of it would raise: 422 first, never a 500
    error = error_of(
        app.client.get("/api/events", headers={"Last-Event-ID": huge}), 422, "invalid_request"
    )
    assert "last-event-id" in error["message"].lower()
    error_of(app.client.get("/api/runs", params={"cursor": "x" * 65}), 422, "invalid_request")
