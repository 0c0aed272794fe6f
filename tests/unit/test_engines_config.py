"""The engines file: what it accepts, and errors that name the engine and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.engines import LOCAL, EnginesFileError, load_engines
from backend.engines.config import EngineConfig
from backend.engines.docker import client_kwargs


def engines_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "engines.toml"
    path.write_text(text)
    return path


def test_without_a_file_there_is_one_local_engine_with_the_default_slots() -> None:
    [engine] = load_engines(None, default_slots=7)
    assert (engine.name, engine.host, engine.context, engine.max_concurrent_runs) == (
        LOCAL,
        None,
        None,
        7,
    )
    assert engine.public_host() == "DOCKER_HOST or the default socket"


def test_a_file_names_engines_in_order_with_their_fields(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    path = engines_file(
        tmp_path,
        f"""
[engines.local]
host = "unix:///var/run/docker.sock"
max_concurrent_runs = 4

[engines.gpu1]
host = "tcp://10.1.2.3:2376"
tls_ca = "{tmp_path}/ca.pem"
tls_cert = "{tmp_path}/cert.pem"
tls_key = "{tmp_path}/key.pem"
labels = {{ gpu = "true", zone = "b" }}
max_concurrent_runs = 2

[engines.builder]
context = "builder"
""",
    )
    local, gpu, builder = load_engines(path, default_slots=3)
    assert [e.name for e in (local, gpu, builder)] == ["local", "gpu1", "builder"]
    assert gpu.labels == {"gpu": "true", "zone": "b"}
    assert (gpu.max_concurrent_runs, builder.max_concurrent_runs) == (2, 3)
    assert gpu.uses_tls and gpu.tls_verify
    assert builder.public_host() == "context:builder"
    kwargs = client_kwargs(gpu)
    assert kwargs["base_url"] == "tcp://10.1.2.3:2376"
    assert kwargs["tls"].verify is True
    assert kwargs["tls"].ca_cert == str(tmp_path / "ca.pem")
    assert kwargs["tls"].cert == (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))


def test_the_public_host_carries_no_user_and_errors_are_told_in_its_words() -> None:
    engine = EngineConfig(name="e", host="ssh://deploy@build.example:2222")
    assert engine.public_host() == "ssh://build.example:2222"
    assert client_kwargs(engine)["use_ssh_client"] is True
    error = "Invalid bind address format: ssh://deploy@build.example:2222"
    assert engine.scrub(error) == "Invalid bind address format: ssh://build.example:2222"


def test_an_unencrypted_tcp_engine_only_when_asked_for() -> None:
    engine = EngineConfig(name="e", host="tcp://127.0.0.1:2375", tls_verify=False)
    assert client_kwargs(engine) == {"base_url": "tcp://127.0.0.1:2375"}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[engines.a\nhost=1", "not valid TOML"),
        ("[other]\nx = 1\n", "unknown table 'other'"),
        ("", "no [engines.NAME] table"),
        ('[engines.a]\nhots = "unix:///x.sock"\n', "engine 'a', field 'hots': unknown field"),
        ('[engines.a]\nhost = "http//x"\n', "engine 'a', field 'host': must start with one of"),
        ("[engines.a]\nmax_concurrent_runs = 0\n", "engine 'a', field 'max_concurrent_runs'"),
        ('[engines.a]\nhost = "unix:///x.sock"\ncontext = "c"\n', "give host or context"),
        (
            '[engines.a]\nhost = "tcp://127.0.0.1:1"\ntls_ca = "/no/such/ca.pem"\n',
            "engine 'a', field 'tls_ca': no such file: /no/such/ca.pem",
        ),
        ('[engines."bad name"]\nhost = "unix:///x.sock"\n', "engine 'bad name', field 'name'"),
        ("[engines.a]\nlabels = { gpu = 1 }\n", "engine 'a', field 'labels.gpu'"),
        ('engines = "x"\n', "no [engines.NAME] table"),
        (
            '[engines.a]\nhost = "ssh://bob:s3cret@build.example"\n',
            "engine 'a', field 'host': must not carry a password",
        ),
        ('[engines.a]\nhost = "tcp://h:2376/?token=x"\n', "must not carry a password or a query"),
        ('[engines.a]\nhost = "tcp://10.1.2.3:2375"\n', "a tcp:// host needs tls_ca"),
    ],
)
def test_a_bad_file_is_an_error_naming_the_engine_and_the_field(
    tmp_path: Path, text: str, words: str
) -> None:
    path = engines_file(tmp_path, text)
    with pytest.raises(EnginesFileError) as caught:
        load_engines(path, default_slots=4)
    assert words in str(caught.value)
    assert str(path) in str(caught.value)


def test_tls_files_need_a_tcp_host_and_a_cert_needs_its_key(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("x")
    path = engines_file(
        tmp_path,
        f'[engines.a]\nhost = "tcp://127.0.0.1:2376"\ntls_cert = "{tmp_path}/cert.pem"\n',
    )
    with pytest.raises(EnginesFileError, match="tls_cert and tls_key go together"):
        load_engines(path, default_slots=4)
    path = engines_file(
        tmp_path,
        f'[engines.a]\nhost = "unix:///x.sock"\ntls_ca = "{tmp_path}/cert.pem"\n',
    )
    with pytest.raises(EnginesFileError, match="tls_\\* need a tcp:// host"):
        load_engines(path, default_slots=4)


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(EnginesFileError, match="cannot read it"):
        load_engines(tmp_path / "nope.toml", default_slots=4)
