"""`sizeguard serve` and `sizeguard approve`: their flags, and the refusals that need no cluster."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from sizeguard import cli
from sizeguard.cli import serve as server_commands
from sizeguard.server.token_file import load_or_create_token

REGISTERED = cli.COMMAND_MODULES  # as cli.py declares it, before any test patches it
CS = "cs-0123456789abcdef0123"


@pytest.fixture(autouse=True)
def only_server_commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    # Other command groups are developed in parallel; these tests exercise ours alone.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("sizeguard.cli.serve",))
    for name in ("SIZEGUARD_KEY_DIR", "SIZEGUARD_LEDGER", "KUBECONFIG", "OPA_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # `serve` configures structlog for the process; keep that from leaking into other tests.
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def help_text(capsys: pytest.CaptureFixture[str], command: str) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def test_serve_and_approve_are_registered() -> None:
    assert "sizeguard.cli.serve" in REGISTERED


def test_serve_help_names_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    out = help_text(capsys, "serve")
    assert out.startswith("usage: sizeguard serve")
    for flag in (
        "--transport",
        "{stdio,http}",
        "--read-only",
        "--key-dir",
        "--ledger",
        "--prometheus-url",
        "--opa-url",
        "--kubeconfig",
        "--context",
        "--host",
        "--port",
        "--allowed-host",
        "--allowed-origin",
        "--token-file",
        "--token-name",
        "--jwt-kubernetes",
        "--jwt-jwks-uri",
        "--jwt-public-key",
        "--jwt-issuer",
        "--jwt-audience",
        "--jwt-subject",
        "--no-auth",
    ):
        assert flag in out, flag


def test_approve_help_names_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    out = help_text(capsys, "approve")
    assert out.startswith("usage: sizeguard approve")
    for flag in ("CHANGE_SET_ID", "--ledger", "--opa-url", "--kubeconfig", "--context"):
        assert flag in out, flag
    assert "terminal" in out
    # approve never signs or serves: it takes no key and no transport.
    assert "--key-dir" not in out and "--transport" not in out


def test_serve_needs_a_key_or_read_only(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "serve")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("sizeguard: ")
    assert "no signing key" in err and "--key-dir" in err and "--read-only" in err


def test_serve_over_http_needs_a_key_too(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "serve", "--transport", "http", "--port", "0")
    assert code == 1 and "--key-dir" in err


@pytest.mark.parametrize("how", ["flag", "env"])
def test_serve_with_a_directory_without_a_key_says_so(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    how: str,
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    args = ["serve"]
    if how == "flag":
        args += ["--key-dir", str(keys)]
    else:
        monkeypatch.setenv("SIZEGUARD_KEY_DIR", str(keys))
    code, out, err = run(capsys, *args)
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert f"cannot load the signing key from {keys}" in err
    assert "sizeguard keys init" in err


def test_serve_refuses_an_unknown_transport(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--transport", "sse", "--read-only"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'sse'" in err


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_approve_needs_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "stdin", _Pipe("y\n"))
    ledger = tmp_path / "ledger.db"
    code, out, err = run(capsys, "approve", CS, "--ledger", str(ledger))
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert "needs a terminal" in err
    assert not ledger.exists()  # refused before anything was opened


def _sizeguard(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SIZEGUARD_KEY_DIR", "SIZEGUARD_LEDGER")
    }
    return subprocess.run(
        [sys.executable, "-m", "sizeguard.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        **kwargs,
    )


def test_approve_from_devnull_is_refused_in_a_real_process(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    done = _sizeguard("approve", CS, "--ledger", str(ledger), stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        "sizeguard: `sizeguard approve` needs a terminal: a person must answer, not a pipe\n"
    )
    assert not ledger.exists()


def test_approve_from_a_pipe_is_refused_in_a_real_process(tmp_path: Path) -> None:
    done = _sizeguard("approve", CS, "--ledger", str(tmp_path / "l.db"), input="y\nshop-prod\n")
    assert done.returncode == 1 and "needs a terminal" in done.stderr


def test_serve_without_a_key_in_a_real_process(tmp_path: Path) -> None:
    done = _sizeguard("serve", stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""  # stdout is the MCP channel: nothing but protocol goes there
    assert done.stderr.count("\n") == 1 and "--key-dir" in done.stderr


# --- the HTTP transport's flags (refused before anything is opened) ------------------------------


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = run(capsys, "serve", *argv)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("sizeguard: "), err
    return err


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com", "10.0.0.1"])  # noqa: S104
def test_no_auth_needs_a_loopback_bind(capsys: pytest.CaptureFixture[str], host: str) -> None:
    err = _refused(capsys, "--transport", "http", "--host", host, "--no-auth", "--read-only")
    assert f"--no-auth is refused with --host {host}" in err and "loopback" in err


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost", "[::1]"])
def test_no_auth_is_accepted_on_loopback(host: str) -> None:
    args = cli.build_parser().parse_args(
        ["serve", "--transport", "http", "--host", host, "--no-auth"]
    )
    assert server_commands.check_http_flags(args) == "none"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--no-auth", "--token-file", "/tmp/t"], "contradict"),
        (["--no-auth", "--jwt-kubernetes", "--jwt-subject", "s"], "contradict"),
        (["--jwt-kubernetes"], "--jwt-subject"),
        (["--jwt-subject", "s"], "exactly one source"),
        (["--jwt-kubernetes", "--jwt-jwks-uri", "https://x", "--jwt-subject", "s"], "exactly one"),
        (["--jwt-jwks-uri", "https://x/jwks", "--jwt-subject", "s"], "--jwt-issuer is required"),
        (["--jwt-kubernetes", "--jwt-subject", "s", "--token-name", "a"], "not with JWTs"),
        (["--jwt-kubernetes", "--jwt-subject", "s", "--jwt-audience", ""], "audience"),
        (["--allowed-host", "*"], "bare '*'"),
        (["--allowed-origin", "*"], "--allowed-origin"),
        (["--allowed-origin", "evil.example"], "--allowed-origin"),
        (["--allowed-origin", "https://a.example/path"], "--allowed-origin"),
        (["--token-name", "Alice Smith"], "--token-name"),
    ],
)
def test_http_flags_that_do_not_fit_are_refused(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    err = _refused(capsys, "--transport", "http", "--read-only", *argv)
    assert message in err


def test_http_flags_are_refused_over_stdio(capsys: pytest.CaptureFixture[str]) -> None:
    err = _refused(capsys, "--read-only", "--no-auth", "--allowed-host", "a.example")
    assert "--allowed-host, --no-auth: for --transport http only" in err


def test_the_default_is_a_token(tmp_path: Path) -> None:
    parse = cli.build_parser().parse_args
    assert server_commands.check_http_flags(parse(["serve", "--transport", "http"])) == "token"
    assert server_commands.check_http_flags(parse(["serve"])) == "stdio"
    jwt = parse(["serve", "--transport", "http", "--jwt-kubernetes", "--jwt-subject", "s"])
    assert server_commands.check_http_flags(jwt) == "jwt"
    origins = parse(
        ["serve", "--transport", "http", "--allowed-origin", "https://ai.example.com:8443/"]
    )
    assert server_commands.check_http_flags(origins) == "token"


def test_the_instructions_read_the_token_from_its_file(tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path / "mcp-token", "alice")
    text = server_commands.token_instructions("http://127.0.0.1:8000/mcp", token)
    assert token.secret not in text
    assert (
        "claude mcp add --transport http sizeguard http://127.0.0.1:8000/mcp "
        f'--header "Authorization: Bearer $(cat {tmp_path / "mcp-token"})"'
    ) in text
    vscode = json.loads(text.splitlines()[-1])
    server = vscode["servers"]["sizeguard"]
    assert server["headers"] == {"Authorization": "Bearer ${input:sizeguard-token}"}
    assert vscode["inputs"][0]["password"] is True
    assert "token:alice" in text


def test_over_stdio_the_requester_is_the_servers_user(tmp_path: Path) -> None:
    """A real `sizeguard serve --read-only` over stdio (no cluster is contacted for the
    audit history): no token, and the audit log names the OS user, not the client's name."""
    import asyncio
    import getpass

    from fastmcp import Client
    from fastmcp.client.transports import StdioTransport
    from mcp_types import Implementation

    from sizeguard.ledger import Ledger

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "not-used"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    ledger = tmp_path / "ledger.db"
    transport = StdioTransport(
        command=sys.executable,
        args=[
            *("-m", "sizeguard.cli", "serve", "--read-only"),
            *("--kubeconfig", str(kubeconfig), "--ledger", str(ledger)),
        ],
        env={k: v for k, v in os.environ.items() if not k.startswith("SIZEGUARD_")},
        cwd=str(tmp_path),
    )

    async def go() -> None:
        client = Client(transport, client_info=Implementation(name="token:admin", version="1"))
        async with client:
            await client.call_tool("get_execution_history", {})

    asyncio.run(go())
    with Ledger(ledger, create=False) as book:
        (entry,) = book.audit_entries()
    assert entry.event == "tool.get_execution_history"
    assert entry.actor == f"stdio:{getpass.getuser()}"
    assert entry.details["client"] == "mcp:token:admin"
    assert not (tmp_path / "mcp-token").exists()  # stdio needs no token
