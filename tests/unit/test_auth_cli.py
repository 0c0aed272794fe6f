"""`pullrun token ...` and `pullrun user ...` (in-process: backend.cli.main), and
what `pullrun serve` refuses before it listens."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from backend import cli
from backend.auth.service import AuthService
from backend.auth.store import AuthStore
from backend.auth.tokens import looks_like_token

pytestmark = pytest.mark.usefixtures("fast_passwords")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("PULLRUN_DATA_DIR", str(data_dir))
    return data_dir


def test_token_create_prints_the_token_and_only_the_token(
    capsys: pytest.CaptureFixture[str], data: Path
) -> None:
    code, out, err = run(capsys, "token", "create", "--name", "ci", "--role", "operator")
    assert code == 0 and err == ""
    token = out.removesuffix("\n")
    assert out == token + "\n" and looks_like_token(token)
    with AuthStore(data / "auth.db") as store:
        identity = AuthService(store).by_token(token)
    assert identity is not None and identity.name == "ci" and identity.role == "operator"


def test_token_list_and_revoke_never_show_a_token(
    capsys: pytest.CaptureFixture[str], data: Path
) -> None:
    _, token, _ = run(capsys, "token", "create", "--name", "ci", "--role", "viewer")
    code, out, _ = run(capsys, "token", "list")
    assert code == 0 and "ci" in out and "viewer" in out and token.strip() not in out
    _, out, _ = run(capsys, "token", "list", "--json")
    assert [t["name"] for t in json.loads(out)] == ["ci"]
    assert run(capsys, "token", "revoke", "ci")[0] == 0
    code, _, err = run(capsys, "token", "revoke", "ci")
    assert code == 1 and "no token named 'ci'" in err
    assert json.loads(run(capsys, "token", "list", "--json")[1]) == []


def test_the_data_dir_flag_wins_over_the_environment(
    capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    run(capsys, "token", "create", "--name", "ci", "--role", "admin", "--data-dir", str(other))
    assert (other / "auth.db").exists() and not (data / "auth.db").exists()


def test_errors_go_to_stderr_with_a_non_zero_exit(
    capsys: pytest.CaptureFixture[str], data: Path
) -> None:
    run(capsys, "token", "create", "--name", "ci", "--role", "admin")
    code, out, err = run(capsys, "token", "create", "--name", "ci", "--role", "admin")
    assert code == 1 and out == "" and "exists already" in err
    code, out, err = run(capsys, "token", "create", "--name", "a b", "--role", "admin")
    assert code == 1 and out == "" and "invalid name" in err
    code, _, err = run(capsys, "token", "create", "--name", "x", "--role", "root")
    assert code == 2 and "invalid choice" in err


def test_user_add_reads_the_password_from_stdin_when_it_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str], data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    code, out, err = run(capsys, "user", "add", "alice", "--role", "operator")
    assert code == 0 and out == "" and "alice" in err
    with AuthStore(data / "auth.db") as store:
        result = AuthService(store).sign_in("alice", "correct horse battery", "", "c")
    assert result.identity is not None and result.identity.role == "operator"
    _, out, _ = run(capsys, "user", "list", "--json")
    assert [(u["name"], u["role"]) for u in json.loads(out)] == [("alice", "operator")]
    assert "correct horse" not in out
    assert run(capsys, "user", "remove", "alice")[0] == 0
    assert run(capsys, "user", "remove", "alice")[0] == 1


def test_user_add_prompts_twice_on_a_terminal(
    capsys: pytest.CaptureFixture[str], data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal())
    answers = iter(["correct horse battery", "correct horse battery", "one", "two"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    assert run(capsys, "user", "add", "bob", "--role", "viewer")[0] == 0
    assert prompts == ["Password for bob: ", "Again: "]
    code, _, err = run(capsys, "user", "add", "carol", "--role", "viewer")
    assert code == 1 and "differ" in err


def test_a_short_password_is_refused(
    capsys: pytest.CaptureFixture[str], data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    code, _, err = run(capsys, "user", "add", "alice", "--role", "viewer")
    assert code == 1 and "at least 8" in err
    assert json.loads(run(capsys, "user", "list", "--json")[1]) == []


def test_the_commands_work_while_the_server_holds_the_database(
    capsys: pytest.CaptureFixture[str], data: Path
) -> None:
    # The server's own connection stays open; what the command writes is seen at once.
    with AuthStore(data / "auth.db") as server_store:
        server = AuthService(server_store)
        _, out, _ = run(capsys, "token", "create", "--name", "late", "--role", "viewer")
        assert server.by_token(out.strip()) is not None
        run(capsys, "token", "revoke", "late")
        assert server.by_token(out.strip()) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.com"])
def test_serve_refuses_auth_off_unless_the_host_is_loopback(
    capsys: pytest.CaptureFixture[str], data: Path, host: str
) -> None:
    code, _, err = run(capsys, "serve", "--host", host, "--auth", "off")
    assert code == 2
    assert "PULLRUN_AUTH=off is refused" in err and repr(host) in err
    assert not (data / "auth.db").exists()  # it stopped before doing anything


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_hosts_may_run_without_auth(host: str) -> None:
    from backend.auth.mode import refuse_auth_off

    assert refuse_auth_off("off", host) is None
    assert refuse_auth_off("required", "0.0.0.0") is None


def test_serve_refuses_invalid_settings_clearly(
    capsys: pytest.CaptureFixture[str], data: Path
) -> None:
    code, _, err = run(capsys, "serve", "--auth", "maybe")
    assert code == 1 and "invalid settings" in err and "auth" in err
