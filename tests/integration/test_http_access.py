"""The HTTP transport answers only its own client: real ``sizeguard serve --transport http``
processes on 127.0.0.1, the official MCP SDK client (``mcp.client.streamable_http`` +
``ClientSession``) and raw HTTP, against the sandbox (its API server with sizeguard's webhook,
OPA and Prometheus).

- no token, a wrong token: 401 with ``WWW-Authenticate``; a foreign Host: 421; a foreign
  Origin: 403 — even with the right token, and before any MCP processing (a body that is not
  even JSON gets the same answer, no session is opened, no tool runs);
- the right token and a loopback Origin: scan → preview → confirmation (the client answers
  the elicitation) → apply → rollback, with the authenticated requester in every audit entry;
- Kubernetes ServiceAccount tokens (``--jwt-kubernetes``): the allowed subject is the
  requester; another subject, another audience, no token: 401;
- a server whose signing key the webhook does not trust says so before anyone approves
  (preview, safety report), and the confirmation refuses without asking the human.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, ElicitRequestParams, ElicitResult, Implementation

from sizeguard.approvals import init_key_dir
from sizeguard.changes import guarded_state
from sizeguard.ledger import AuditEntry, Ledger
from sizeguard.sandbox import processes
from sizeguard.sandbox.processes import Component
from sizeguard.server.token_file import read_token

from .conftest import Sandbox
from .test_webhook import create, ensure_namespace, get, webhook_info, workload_manifest

NS = "http-it"
CLIENT = Implementation(name="sizeguard-it-sdk", version="1")
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "a-stranger", "version": "1"},
    },
}
MCP_ACCEPT = {"Accept": "application/json, text/event-stream"}


@dataclass
class Server:
    url: str
    port: int
    ledger: Path
    process: Component
    token: str | None = None
    directory: Path = field(default_factory=Path)

    def audit(self, change_set_id: str | None = None) -> list[AuditEntry]:
        with Ledger(self.ledger, create=False) as book:
            return book.audit_entries(change_set_id=change_set_id)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def serve(
    sandbox: Sandbox, directory: Path, *extra: str, key_dir: Path | None = None
) -> Iterator[Server]:
    """A real ``sizeguard serve --transport http`` on a free loopback port."""
    directory.mkdir(parents=True, exist_ok=True)
    port = processes.free_port()
    ledger = directory / "ledger.db"
    keys = key_dir or Path(webhook_info(sandbox)["keys"])
    argv = [
        sys.executable,
        "-m",
        "sizeguard.cli",
        "serve",
        "--transport",
        "http",
        "--port",
        str(port),
        "--key-dir",
        str(keys),
        "--ledger",
        str(ledger),
        "--approval-port",  # a free one (later flags in extra win): never a fixed port
        "0",
        *extra,
    ]
    env = dict(
        os.environ,
        KUBECONFIG=str(sandbox.kubeconfig),
        PROMETHEUS_URL=sandbox.prometheus_url,
        OPA_URL=sandbox.opa_url,
    )
    process = processes.start("serve", argv, directory / "serve.log", env=env, cwd=directory)
    try:
        processes.wait_until(process, lambda: _listening(port), timeout=60, what="listening")
        token_file = directory / "mcp-token"
        token = read_token(token_file).secret if token_file.exists() else None
        yield Server(f"http://127.0.0.1:{port}/mcp", port, ledger, process, token, directory)
    finally:
        processes.stop(process)


@pytest.fixture(scope="module")
def server(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ensure_namespace(sandbox, NS, {"environment": "test"})
    directory = tmp_path_factory.mktemp("serve")
    with serve(sandbox, directory, "--token-name", "it-client") as running:
        yield running


# --- the official MCP SDK client ---------------------------------------------------------------


class Human:
    """The person at the MCP client: answers the elicitation (or must never be asked)."""

    def __init__(self, approve: bool = True) -> None:
        self.approve = approve
        self.asked: list[str] = []

    async def __call__(self, context: Any, params: ElicitRequestParams) -> ElicitResult:
        self.asked.append(params.message)
        return ElicitResult(action="accept", content={"approve": self.approve, "namespace": ""})


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


Session = Callable[[str, dict[str, Any]], Any]


async def _session(
    url: str, headers: dict[str, str], human: Human, steps: Callable[[ClientSession], Any]
) -> Any:
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, elicitation_callback=human, client_info=CLIENT) as session,
    ):
        await session.initialize()
        return await steps(session)


def with_session(
    server: Server,
    steps: Callable[[ClientSession], Any],
    *,
    human: Human | None = None,
    token: str | None = None,
) -> Any:
    headers = {
        "Authorization": f"Bearer {token or server.token}",
        "Origin": f"http://localhost:{server.port}",  # a loopback origin is accepted
    }
    return asyncio.run(_session(server.url, headers, human or Human(), steps))


# --- refused before any MCP processing ---------------------------------------------------------


def post(server: Server, headers: dict[str, str], body: bytes | None = None) -> httpx.Response:
    content = json.dumps(INITIALIZE).encode() if body is None else body
    return httpx.post(
        server.url,
        content=content,
        headers={**MCP_ACCEPT, "Content-Type": "application/json", **headers},
        timeout=10,
    )


def assert_untouched(response: httpx.Response) -> None:
    assert "mcp-session-id" not in response.headers  # no MCP session was opened
    assert "text/event-stream" not in response.headers.get("content-type", "")


@pytest.mark.parametrize("body", [None, b"this is not JSON-RPC"], ids=["initialize", "garbage"])
def test_no_token_is_401_with_a_bearer_challenge(server: Server, body: bytes | None) -> None:
    before = len(server.audit())
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}):
        response = post(server, headers, body)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer"), headers
        assert_untouched(response)
    stream = httpx.get(server.url, headers=MCP_ACCEPT, timeout=10)
    assert stream.status_code == 401 and "www-authenticate" in stream.headers
    assert len(server.audit()) == before  # no tool ran


@pytest.mark.parametrize("body", [None, b"this is not JSON-RPC"], ids=["initialize", "garbage"])
def test_a_wrong_token_is_401_invalid_token(server: Server, body: bytes | None) -> None:
    assert server.token is not None
    before = len(server.audit())
    name, _, secret = server.token.rpartition(".")
    for wrong in (
        "sgmcp.it-client." + ("A" if secret[0] != "A" else "B") + secret[1:],  # one character
        server.token[:-1],
        server.token + "x",
        server.token.replace("it-client", "admin"),
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.",
    ):
        response = post(server, {"Authorization": f"Bearer {wrong}"}, body)
        assert response.status_code == 401, wrong
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
        assert_untouched(response)
        assert wrong not in response.text
    assert name == "sgmcp.it-client"
    assert len(server.audit()) == before


@pytest.mark.parametrize("body", [None, b"this is not JSON-RPC"], ids=["initialize", "garbage"])
def test_a_foreign_host_or_origin_is_refused_even_with_the_token(
    server: Server, body: bytes | None
) -> None:
    bearer = {"Authorization": f"Bearer {server.token}"}
    before = len(server.audit())
    for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1.nip.io", "0.0.0.0"):  # noqa: S104
        response = post(server, {**bearer, "Host": host}, body)
        assert response.status_code in (421, 403), (host, response.status_code)
        assert_untouched(response)
    for origin in (
        "http://evil.example",
        f"http://evil.example:{server.port}",
        "https://127.0.0.1.evil.example",
        "null",
    ):
        response = post(server, {**bearer, "Origin": origin}, body)
        assert response.status_code == 403, (origin, response.status_code)
        assert_untouched(response)
    # the same request from the right place is answered by MCP itself
    good = post(server, {**bearer, "Origin": f"http://127.0.0.1:{server.port}"}, body)
    assert good.status_code == (200 if body is None else 400), good.text
    assert len(server.audit()) == before


def test_the_token_file_is_private_and_never_in_the_log(server: Server) -> None:
    token_file = server.directory / "mcp-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert server.token is not None
    log = (server.directory / "serve.log").read_text()
    assert server.token not in log
    assert f'--header "Authorization: Bearer $(cat {token_file})"' in log
    assert "token:it-client" in log


# --- the whole flow, authenticated -------------------------------------------------------------


def test_scan_preview_confirm_apply_with_the_token_records_who_asked(
    sandbox: Sandbox, server: Server
) -> None:
    original = get(sandbox, "Deployment", "shop-staging", "api")
    human = Human()
    start = len(server.audit())

    async def flow(session: ClientSession) -> dict[str, Any]:
        report = structured(
            await session.call_tool(
                "scan_recommendations",
                {"filter": {"namespaces": ["shop-staging"], "min_severity": "OK"}},
            )
        )
        assert any(s["object"]["name"] == "api" for s in report["scans"])
        flt = {"namespaces": ["shop-staging"], "names": ["api"], "min_severity": "OK"}
        preview = structured(
            await session.call_tool("preview_changes", {"from_recommendations": flt})
        )
        cs = preview["change_set_id"]
        assert preview["policy"]["allowed"] and [d["admitted"] for d in preview["dry_run"]] == [
            True
        ]
        assert preview["signing_key_trusted"] is True, preview["signing_key_check"]
        # the trust warning is for the server, not the human
        assert not any("trusted approval keys" in w for w in preview["dry_run"][0]["warnings"])
        confirmation = structured(
            await session.call_tool("request_confirmation", {"change_set_id": cs})
        )
        assert confirmation["status"] == "approved", confirmation
        assert confirmation["approver"] == "human via token:it-client"
        execution = structured(await session.call_tool("apply_changes", {"change_set_id": cs}))
        assert execution["status"] == "applied", execution
        history = structured(
            await session.call_tool("get_execution_history", {"change_set_id": cs})
        )
        outcome = structured(await session.call_tool("rollback_changes", {"change_set_id": cs}))
        assert outcome["execution"]["status"] == "applied", outcome
        return {"cs": cs, "history": history, "rollback": outcome["change_set_id"]}

    done = with_session(server, flow, human=human)
    cs = done["cs"]
    assert len(human.asked) == 2 and cs in human.asked[0]  # apply, then the rollback
    assert guarded_state(get(sandbox, "Deployment", "shop-staging", "api")) == guarded_state(
        original
    )

    # Every audit entry of that flow names the authenticated requester (the human's answer:
    # "human via" it); the client's self-reported name is a detail, never the actor.
    entries = server.audit()[start:]
    assert {e.change_set_id for e in entries} >= {cs, done["rollback"]}
    events = {e.event for e in entries}
    assert {
        "tool.scan_recommendations",
        "tool.preview_changes",
        "change_set.previewed",
        "tool.request_confirmation",
        "confirmation.accepted",
        "approval.recorded",
        "approval.used",
        "apply.completed",
        "tool.apply_changes",
        "rollback.completed",
    } <= events
    assert {e.actor for e in entries} == {"token:it-client", "human via token:it-client"}
    for entry in entries:
        if entry.event.startswith("tool."):
            assert entry.actor == "token:it-client"
            assert entry.details["client"] == "mcp:sizeguard-it-sdk"
    shown = {e["actor"] for e in done["history"]["entries"]}
    assert shown <= {"token:it-client", "human via token:it-client"}
    with Ledger(server.ledger, create=False) as book:
        assert book.verify_audit().ok
        approvals = book.approvals(cs)
    assert [a.approver for a in approvals] == ["human via token:it-client"]


# --- Kubernetes ServiceAccount tokens -----------------------------------------------------------


def service_account_token(sandbox: Sandbox, name: str, audience: str, namespace: str = NS) -> str:
    """A TokenRequest token of ServiceAccount ``namespace/name`` (created if need be)."""
    sandbox.kube.create(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace},
        }
    )
    response = sandbox.kube.http.post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        json={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [audience], "expirationSeconds": 600},
        },
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["status"]["token"]
    return token


def test_service_account_tokens_of_the_allowed_subject_are_the_requester(
    sandbox: Sandbox, server: Server, tmp_path: Path
) -> None:
    subject = f"system:serviceaccount:{NS}:assistant"
    good = service_account_token(sandbox, "assistant", "sizeguard")
    other_subject = service_account_token(sandbox, "intruder", "sizeguard")
    other_audience = service_account_token(sandbox, "assistant", "https://kubernetes.default.svc")
    with serve(sandbox, tmp_path, "--jwt-kubernetes", "--jwt-subject", subject) as jwt:
        assert jwt.token is None and not (tmp_path / "mcp-token").exists()
        assert "jwt:<subject>" in (tmp_path / "serve.log").read_text()
        for token in (None, other_subject, other_audience, server.token):
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            response = post(jwt, headers)
            assert response.status_code == 401 and "www-authenticate" in response.headers
            assert_untouched(response)
        assert (
            post(jwt, {"Authorization": f"Bearer {good}", "Host": "evil.example"}).status_code
            == 421
        )

        async def report(session: ClientSession) -> dict[str, Any]:
            return structured(await session.call_tool("get_safety_report", {}))

        safety = with_session(jwt, report, token=good)
        assert safety["webhook_trusts_signing_key"] is True, safety["webhook_key_check"]
        (entry,) = [e for e in jwt.audit() if e.event == "tool.get_safety_report"]
        assert entry.actor == f"jwt:{subject}"
        assert entry.details["client"] == "mcp:sizeguard-it-sdk"
    assert good not in (tmp_path / "serve.log").read_text()


# --- a key the webhook does not trust ----------------------------------------------------------


def test_an_untrusted_signing_key_is_reported_before_anyone_approves(
    sandbox: Sandbox, server: Server, tmp_path: Path
) -> None:
    foreign = init_key_dir(tmp_path / "foreign-keys")  # `sizeguard keys init`: not the webhook's
    trusted_kid = json.loads(Path(webhook_info(sandbox)["jwks"]).read_text())["keys"][0]["kid"]
    obj = create(sandbox, workload_manifest("Deployment", NS, "untrusted-key", replicas=2))
    edit = {"kind": "Deployment", "namespace": NS, "name": obj["metadata"]["name"], "replicas": 3}
    human = Human()

    async def steps(session: ClientSession) -> dict[str, Any]:
        general = structured(await session.call_tool("get_safety_report", {}))
        preview = structured(await session.call_tool("preview_changes", {"edits": [edit]}))
        cs = preview["change_set_id"]
        about = structured(await session.call_tool("get_safety_report", {"change_set_id": cs}))
        confirmation = structured(
            await session.call_tool("request_confirmation", {"change_set_id": cs})
        )
        return {
            "general": general,
            "preview": preview,
            "about": about,
            "confirmation": confirmation,
        }

    with serve(sandbox, tmp_path / "serve", key_dir=tmp_path / "foreign-keys") as untrusted:
        seen = with_session(untrusted, steps, human=human)
        cs = seen["preview"]["change_set_id"]
        with Ledger(untrusted.ledger, create=False) as book:
            assert book.approvals(cs) == []  # nothing approved, nothing minted
    general, preview, about = seen["general"], seen["preview"], seen["about"]
    for report in (general, about):
        assert report["signing_key"] == f"kid {foreign.kid}"
        assert report["webhook_trusts_signing_key"] is False
        check = report["webhook_key_check"]
        assert check.startswith("NO: ") and foreign.kid in check and trusted_kid in check
    assert preview["policy"]["allowed"] and preview["dry_run"][0]["admitted"]
    assert preview["signing_key_trusted"] is False
    assert preview["next_step"].startswith("do not ask for approval")
    assert seen["confirmation"]["status"] == "refused"
    assert "does not trust this server's signing key" in seen["confirmation"]["message"]
    assert human.asked == []  # refused before the human was asked
    assert get(sandbox, "Deployment", NS, obj["metadata"]["name"])["spec"]["replicas"] == 2

    # the server with the sandbox's key: trusted, without a change set too
    async def general_report(session: ClientSession) -> dict[str, Any]:
        return structured(await session.call_tool("get_safety_report", {}))

    trusted = with_session(server, general_report)
    assert trusted["webhook_trusts_signing_key"] is True
    assert trusted["webhook_key_check"].startswith("yes: ")
