"""The walkthrough `make demo` runs, end to end: a real `sizeguard serve --transport http`
process on loopback, `examples/walkthrough.py` as its MCP client with the server's bearer
token, the sandbox's webhook, OPA and Prometheus behind it. What the demo shows a newcomer
must keep working."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sizeguard.ledger import Ledger
from sizeguard.sandbox import processes
from sizeguard.sandbox.processes import Component

from .conftest import Sandbox
from .test_webhook import webhook_info

ROOT = Path(__file__).resolve().parents[2]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


@pytest.fixture
def server(sandbox: Sandbox, tmp_path: Path) -> Iterator[tuple[str, Path, Component]]:
    info = webhook_info(sandbox)
    port = processes.free_port()
    ledger = tmp_path / "ledger.db"
    argv = [
        sys.executable,
        "-m",
        "sizeguard.cli",
        "serve",
        "--transport",
        "http",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--key-dir",
        str(info["keys"]),
        "--ledger",
        str(ledger),
        "--token-name",
        "walkthrough",
        "--approval-port",  # a free one: never 8765, which a parallel run may hold
        "0",
    ]
    env = dict(
        os.environ,
        KUBECONFIG=str(sandbox.kubeconfig),
        PROMETHEUS_URL=sandbox.prometheus_url,
        OPA_URL=sandbox.opa_url,
    )
    process = processes.start("serve", argv, tmp_path / "serve.log", env=env, cwd=tmp_path)
    try:
        processes.wait_until(process, lambda: _listening(port), timeout=60, what="listening")
        yield f"http://127.0.0.1:{port}/mcp", ledger, process
    finally:
        processes.stop(process)


def test_the_demo_walkthrough_runs_the_whole_flow(
    sandbox: Sandbox, server: tuple[str, Path, Component]
) -> None:
    url, ledger, process = server
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "walkthrough.py"),
            "--url",
            url,
            "--kubeconfig",
            str(sandbox.kubeconfig),
            "--token-file",
            str(ledger.parent / "mcp-token"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = " ".join(done.stdout.split())  # the walkthrough wraps long lines
    assert done.returncode == 0, done.stdout + done.stderr + processes.log_tail(process, 40)
    assert "walkthrough complete" in output
    assert "without the token: HTTP 401, WWW-Authenticate: Bearer" in output
    assert "from a web page at http://evil.example: HTTP 403" in output
    for step in (
        "scan_recommendations",
        "preview_changes",
        "apply_changes before any human approved: refused",
        "request_confirmation",
        "an unapproved kubectl patch",
        "rollback_changes",
        "generate_report",
    ):
        assert step in output, step
    assert 'admission webhook "workloads.sizeguard.io" denied the request' in output
    with Ledger(ledger, create=False) as book:
        entries = book.audit_entries()
        events = [e.event for e in entries]
        assert book.verify_audit().ok
    assert events.count("apply.completed") == 1
    assert events.count("rollback.completed") == 1
    assert events.count("approval.used") == 2  # one human approval for each
    assert events.count("confirmation.accepted") == 2
    assert {e.actor for e in entries} == {
        "token:walkthrough",
        "human via token:walkthrough",
    }
