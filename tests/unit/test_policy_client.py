"""sizeguard.policy without OPA: canned answers (httpx.MockTransport) and a tiny local HTTP
server for the failures that need a real socket (refused connection, timeout, bad bytes)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs

from sizeguard import cli
from sizeguard.policy import (
    UNAVAILABLE_CODE,
    AdmissionDecision,
    AsyncPolicyClient,
    ChangesetDecision,
    PolicyClient,
    default_opa_url,
)

ALLOWED_CHANGESET = {
    "allowed": True,
    "risk": "high",
    "violations": [],
    "warnings": [
        {
            "code": "production_namespace",
            "target": "Deployment/shop-prod/web",
            "message": "shop-prod/web is in production namespace shop-prod; confirm by typing it",
        }
    ],
    "requires": ["typed_confirmation"],
    "approval_levels": 1,
}

DENIED_ADMISSION = {
    "allowed": False,
    "reasons": ["sizeguard: CPU request change on shop-prod/web needs an approval; request one"],
    "warnings": [],
}

SECRET_INPUT = {
    "request": {"user": "alice"},
    "approval": {"claims": {"sub": "top-secret-approver"}},
}

UNAVAILABLE_PREFIX = "sizeguard: the policy engine (OPA) is unavailable: "


def canned(
    status: int = 200, body: Any = None, raw: bytes | None = None
) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport answering every request the same way, and the requests it saw."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if raw is not None:
            return httpx.Response(status, content=raw)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler), seen


def changeset_with(transport: httpx.MockTransport, **kwargs: Any) -> ChangesetDecision:
    with PolicyClient("http://opa.test:8181", transport=transport, **kwargs) as client:
        return client.changeset_decision({"changes": []})


def admission_with(transport: httpx.MockTransport) -> AdmissionDecision:
    with PolicyClient("http://opa.test:8181", transport=transport) as client:
        return client.admission_decision(SECRET_INPUT)


def assert_unavailable_changeset(decision: ChangesetDecision, detail: str) -> None:
    assert decision.allowed is False
    assert decision.risk == "critical"
    assert decision.requires == []
    assert [v.code for v in decision.violations] == [UNAVAILABLE_CODE]
    message = decision.violations[0].message
    assert message.startswith(UNAVAILABLE_PREFIX)
    assert message.endswith("; the change is denied")
    assert detail in message
    assert decision.engine_error is not None
    assert detail in decision.engine_error


def assert_unavailable_admission(decision: AdmissionDecision, detail: str) -> None:
    assert decision.allowed is False
    assert len(decision.reasons) == 1
    assert decision.reasons[0].startswith(UNAVAILABLE_PREFIX)
    assert detail in decision.reasons[0]
    assert decision.engine_error is not None


# --- answers OPA gives -----------------------------------------------------------------


def test_changeset_decision_is_parsed_and_posted_to_the_changeset_path() -> None:
    transport, seen = canned(body={"result": ALLOWED_CHANGESET, "decision_id": "d-1"})
    decision = changeset_with(transport)
    assert decision.allowed is True
    assert decision.risk == "high"
    assert decision.typed_confirmation_required is True
    assert decision.warnings[0].code == "production_namespace"
    assert decision.engine_error is None
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "http://opa.test:8181/v1/data/sizeguard/changeset/decision"
    assert json.loads(request.content) == {"input": {"changes": []}}
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers


def test_a_changeset_decision_of_older_policies_is_a_deny() -> None:
    """Policies from before approval.rego name no approval levels: their requires never ask
    for a passkey, so a production change would be approved by an answer in the client."""
    old = {k: v for k, v in ALLOWED_CHANGESET.items() if k != "approval_levels"}
    decision = changeset_with(canned(body={"result": old})[0])
    assert_unavailable_changeset(
        decision, "the policies loaded into http://opa.test:8181 are older than this sizeguard"
    )
    newer = changeset_with(canned(body={"result": {**ALLOWED_CHANGESET, "approval_levels": 2}})[0])
    assert_unavailable_changeset(newer, "approval levels version 2")


def test_admission_decision_is_parsed_and_posted_to_the_admission_path() -> None:
    transport, seen = canned(body={"result": DENIED_ADMISSION})
    decision = admission_with(transport)
    assert decision == AdmissionDecision.model_validate(DENIED_ADMISSION)
    assert decision.engine_error is None
    assert seen[0].url.path == "/v1/data/sizeguard/admission/decision"


def test_extra_fields_of_the_opa_response_are_ignored() -> None:
    body = {"result": ALLOWED_CHANGESET, "metrics": {"timer": 1}, "provenance": {}}
    assert changeset_with(canned(body=body)[0]).allowed is True


def test_token_is_sent_as_bearer() -> None:
    transport, seen = canned(body={"result": ALLOWED_CHANGESET})
    changeset_with(transport, token="s3cret")
    assert seen[0].headers["authorization"] == "Bearer s3cret"


def test_pydantic_input_is_serialised_as_json() -> None:
    class Shape(BaseModel):
        changes: list[int]

    transport, seen = canned(body={"result": ALLOWED_CHANGESET})
    with PolicyClient("http://opa.test", transport=transport) as client:
        client.changeset_decision(Shape(changes=[1, 2]))
    assert json.loads(seen[0].content) == {"input": {"changes": [1, 2]}}


# What OPA answers for the decisions issue 14 added (docs/policies.md): the shapes are the
# same, only the words differ, so the client parses them like any other decision.
LIFECYCLE_DENY = {
    "allowed": False,
    "reasons": [
        "sizeguard: creating Deployment shop-prod/web is denied for ci@example.com: in namespace "
        "shop-prod (config.admission.lifecycle.workloads: production) only exempt principals may "
        "create or delete workloads (...); a deploying pipeline needs its user in "
        "config.admission.lifecycle.exempt_users or one of its groups in exempt_groups "
        "(policies/data.json); to resize a workload, change it through the sizeguard MCP server"
    ],
    "warnings": [],
}
HPA_CREATE_ALLOWED = {
    "allowed": True,
    "reasons": [
        "sizeguard: creation of HorizontalPodAutoscaler shop-prod/web admitted with a valid "
        "approval"
    ],
    "warnings": [
        "sizeguard: creating the HPA shop-prod/web lets the HPA controller move "
        "apps/v1/Deployment/web to between 2 and 10 replicas within seconds"
    ],
}
FOOTPRINT_CHANGESET = {
    "allowed": True,
    "risk": "medium",
    "violations": [],
    "warnings": [
        {
            "code": "hpa_created",
            "target": "HorizontalPodAutoscaler/shop/web",
            "message": "creating the HPA shop/web lets the HPA controller move ...",
        },
        {
            "code": "rollout_changed",
            "target": "Deployment/shop/web",
            "message": "rollout maxSurge of shop/web: 25% → 100%; a rollout may run up to 6 pods",
        },
    ],
    "requires": [],
    "approval_levels": 1,
}


@pytest.mark.parametrize("result", [LIFECYCLE_DENY, HPA_CREATE_ALLOWED])
def test_lifecycle_admission_decisions_are_parsed(result: dict[str, Any]) -> None:
    decision = admission_with(canned(body={"result": result})[0])
    assert decision == AdmissionDecision.model_validate(result)
    assert decision.engine_error is None


def test_footprint_changeset_decision_is_parsed() -> None:
    decision = changeset_with(canned(body={"result": FOOTPRINT_CHANGESET})[0])
    assert [w.code for w in decision.warnings] == ["hpa_created", "rollout_changed"]
    assert decision.engine_error is None


def test_create_and_delete_inputs_send_null_states() -> None:
    """A CREATE has no before and a DELETE no after: both reach OPA as JSON null, never
    dropped, so the policy can tell a create from a malformed input."""
    transport, seen = canned(body={"result": HPA_CREATE_ALLOWED})
    hpa = {"replicas": None, "min_replicas": 2, "max_replicas": 10}
    with PolicyClient("http://opa.test", transport=transport) as client:
        client.admission_decision(
            {"request": {"operation": "CREATE"}, "before": None, "after": hpa}
        )
        client.admission_decision(
            {"request": {"operation": "DELETE"}, "before": hpa, "after": None}
        )
    create, delete = (json.loads(request.content)["input"] for request in seen)
    assert create["before"] is None and create["after"] == hpa
    assert delete["before"] == hpa and delete["after"] is None
    assert b'"before":null' in seen[0].content


# --- everything else is a deny ---------------------------------------------------------


def test_undefined_result_is_a_deny() -> None:
    decision = changeset_with(canned(body={})[0])
    assert_unavailable_changeset(decision, "data.sizeguard.changeset.decision is undefined")


def test_null_result_is_a_deny() -> None:
    decision = admission_with(canned(body={"result": None})[0])
    assert_unavailable_admission(decision, "is undefined")


def test_http_error_is_a_deny_naming_opas_error() -> None:
    body = {"code": "internal_error", "message": "eval_conflict_error: complete rules"}
    decision = changeset_with(canned(status=500, body=body)[0])
    assert_unavailable_changeset(
        decision,
        "HTTP 500 from http://opa.test:8181 (internal_error: eval_conflict_error: complete rules)",
    )


def test_http_error_without_json_body_is_a_deny() -> None:
    decision = admission_with(canned(status=404, raw=b"not found")[0])
    assert_unavailable_admission(decision, "HTTP 404 from http://opa.test:8181")


def test_http_error_with_message_only() -> None:
    decision = admission_with(canned(status=400, body={"message": "bad input"})[0])
    assert_unavailable_admission(decision, "HTTP 400 from http://opa.test:8181 (bad input)")


def test_malformed_json_is_a_deny() -> None:
    decision = changeset_with(canned(raw=b"{not json")[0])
    assert_unavailable_changeset(decision, "malformed answer from http://opa.test:8181")


@pytest.mark.parametrize(
    ("result", "detail"),
    [
        ({**ALLOWED_CHANGESET, "allowed": "yes"}, "result.allowed"),
        ({**ALLOWED_CHANGESET, "risk": "extreme"}, "result.risk"),
        ({**ALLOWED_CHANGESET, "surprise": 1}, "result.surprise"),
        ({k: v for k, v in ALLOWED_CHANGESET.items() if k != "requires"}, "result.requires"),
        ({**ALLOWED_CHANGESET, "warnings": [{"code": "x", "target": ""}]}, "message"),
        ([1, 2], "result"),
        (
            {**ALLOWED_CHANGESET, "violations": [{"code": "c", "target": "", "message": "m"}]},
            "allowed is true but there are violations",
        ),
    ],
)
def test_changeset_answer_that_does_not_validate_is_a_deny(result: Any, detail: str) -> None:
    decision = changeset_with(canned(body={"result": result})[0])
    assert_unavailable_changeset(decision, detail)


@pytest.mark.parametrize(
    ("result", "detail"),
    [
        ({"allowed": False, "reasons": [], "warnings": []}, "a deny must give at least one reason"),
        ({"allowed": 1, "reasons": ["sizeguard: x"], "warnings": []}, "result.allowed"),
        ({"allowed": True, "reasons": "sizeguard: x", "warnings": []}, "result.reasons"),
    ],
)
def test_admission_answer_that_does_not_validate_is_a_deny(result: Any, detail: str) -> None:
    assert_unavailable_admission(admission_with(canned(body={"result": result})[0]), detail)


def test_input_that_is_not_json_is_a_deny() -> None:
    transport, seen = canned(body={"result": ALLOWED_CHANGESET})
    with PolicyClient("http://opa.test", transport=transport) as client:
        decision = client.changeset_decision({"when": object()})
    assert_unavailable_changeset(decision, "the policy input is not JSON")
    assert seen == []


def test_refused_connection_is_a_deny() -> None:
    with PolicyClient(f"http://127.0.0.1:{closed_port()}", timeout=1) as client:
        decision = client.admission_decision(SECRET_INPUT)
    assert_unavailable_admission(decision, "cannot reach http://127.0.0.1:")


def test_timeout_is_a_deny(slow_server: str) -> None:
    started = time.monotonic()
    with PolicyClient(slow_server, timeout=0.3) as client:
        decision = client.changeset_decision({"changes": []})
    assert time.monotonic() - started < 2
    assert_unavailable_changeset(decision, "within 0.3s")


def test_truncated_answer_from_a_real_socket_is_a_deny(server: LocalServer) -> None:
    server.respond(200, b'{"result": {"allowed": tr')
    with PolicyClient(server.url) as client:
        decision = client.changeset_decision({"changes": []})
    assert_unavailable_changeset(decision, "malformed answer")


def test_connections_are_reused(server: LocalServer) -> None:
    server.respond(200, json.dumps({"result": ALLOWED_CHANGESET}).encode())
    with PolicyClient(server.url) as client:
        for _ in range(3):
            assert client.changeset_decision({"changes": []}).allowed
    assert len(server.peers) == 1


# --- async -----------------------------------------------------------------------------


def test_async_client_decides_both() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/changeset/decision"):
            return httpx.Response(200, json={"result": ALLOWED_CHANGESET})
        return httpx.Response(200, json={"result": DENIED_ADMISSION})

    async def main() -> tuple[ChangesetDecision, AdmissionDecision]:
        async with AsyncPolicyClient(
            "http://opa.test", transport=httpx.MockTransport(handler)
        ) as client:
            return (
                await client.changeset_decision({"changes": []}),
                await client.admission_decision(SECRET_INPUT),
            )

    changeset, admission = anyio.run(main)
    assert changeset.allowed is True
    assert admission.allowed is False
    assert admission.engine_error is None


def test_async_failures_are_denies(slow_server: str) -> None:
    async def main() -> list[Any]:
        decisions: list[Any] = []
        async with AsyncPolicyClient(slow_server, timeout=0.3) as client:
            decisions.append(await client.admission_decision(SECRET_INPUT))
        async with AsyncPolicyClient(f"http://127.0.0.1:{closed_port()}") as client:
            decisions.append(await client.changeset_decision({"changes": []}))
            decisions.append(await client.changeset_decision({"bad": {1, 2}}))
        transport = canned(body={})[0]
        async with AsyncPolicyClient("http://opa.test", transport=transport) as client:
            decisions.append(await client.admission_decision(SECRET_INPUT))
        return decisions

    timed_out, refused, not_json, undefined = anyio.run(main)
    assert_unavailable_admission(timed_out, "within 0.3s")
    assert_unavailable_changeset(refused, "cannot reach")
    assert_unavailable_changeset(not_json, "the policy input is not JSON")
    assert_unavailable_admission(undefined, "is undefined")


def test_async_total_deadline_bounds_a_trickling_answer(server: LocalServer) -> None:
    server.trickle = True

    async def main() -> AdmissionDecision:
        async with AsyncPolicyClient(server.url, timeout=0.5) as client:
            return await client.admission_decision(SECRET_INPUT)

    started = time.monotonic()
    decision = anyio.run(main)
    assert time.monotonic() - started < 2
    assert_unavailable_admission(decision, "within 0.5s")


# --- logging, configuration ------------------------------------------------------------


def test_one_log_event_per_decision_without_the_input() -> None:
    transport = canned(body={"result": DENIED_ADMISSION, "decision_id": "d-7"})[0]
    with capture_logs() as events:
        admission_with(transport)
        admission_with(canned(body={})[0])
    assert [e["event"] for e in events] == ["policy.decision", "policy.decision"]
    ok, failed = events
    assert ok["log_level"] == "info"
    assert ok["allowed"] is False
    assert ok["decision"] == "admission"
    assert ok["decision_id"] == "d-7"
    assert ok["reasons"] == 1
    assert failed["log_level"] == "warning"
    assert "is undefined" in failed["engine_error"]
    assert "secret-approver" not in repr(events)
    assert "alice" not in repr(events)


def test_credentials_in_the_url_are_not_logged() -> None:
    transport = canned(body={"result": ALLOWED_CHANGESET})[0]
    with (
        capture_logs() as events,
        PolicyClient("http://user:pw@opa.test:8181", transport=transport) as client,
    ):
        assert client.display_url == "http://opa.test:8181"
        client.changeset_decision({"changes": []})
    assert "pw" not in repr(events)
    assert events[0]["risk"] == "high"
    assert events[0]["violations"] == []


def test_bad_url_is_rejected() -> None:
    with pytest.raises(ValueError, match="not an http"):
        PolicyClient("opa:8181")


def test_default_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPA_URL", raising=False)
    assert default_opa_url() == "http://127.0.0.1:8181"
    monkeypatch.setenv("OPA_URL", "http://127.0.0.1:9999")
    assert default_opa_url() == "http://127.0.0.1:9999"
    with PolicyClient() as client:
        assert client.url == "http://127.0.0.1:9999"


# --- the CLI ---------------------------------------------------------------------------


def test_cli_prints_the_decision(
    server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.respond(200, json.dumps({"result": ALLOWED_CHANGESET}).encode())
    source = tmp_path / "in.json"
    source.write_text('{"changes": []}')
    args = ["policy", "eval", "--input", str(source), "--decision", "changeset"]
    assert cli.main([*args, "--opa-url", server.url]) == 0
    assert json.loads(capsys.readouterr().out) == ALLOWED_CHANGESET


def test_cli_denied_exits_3(
    server: LocalServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.respond(200, json.dumps({"result": DENIED_ADMISSION}).encode())
    monkeypatch.setenv("OPA_URL", server.url)
    source = tmp_path / "in.json"
    source.write_text("{}")
    assert cli.main(["policy", "eval", "--input", str(source), "--decision", "admission"]) == 3
    assert json.loads(capsys.readouterr().out) == DENIED_ADMISSION


def test_cli_unavailable_prints_the_deny_and_exits_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.json"
    source.write_text("{}")
    url = f"http://127.0.0.1:{closed_port()}"
    code = cli.main(
        ["policy", "eval", "--input", str(source), "--decision", "admission", "--opa-url", url]
    )
    assert code == 4
    captured = capsys.readouterr()
    assert json.loads(captured.out)["reasons"][0].startswith(UNAVAILABLE_PREFIX)
    assert "fail-closed deny" in captured.err


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (None, [], "cannot read the policy input"),
        ("{oops", [], "is not JSON"),
        ("[1]", [], "must be a JSON object"),
        ("{}", ["--timeout", "0"], "--timeout must be positive"),
        ("{}", ["--opa-url", "ftp://x"], "not an http(s) URL"),
    ],
)
def test_cli_input_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    extra: list[str],
    message: str,
) -> None:
    source = tmp_path / "in.json"
    if content is not None:
        source.write_text(content)
    args = ["policy", "eval", "--input", str(source), "--decision", "changeset", *extra]
    assert cli.main(args) == 1
    assert message in capsys.readouterr().err


def test_cli_reads_stdin(
    server: LocalServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server.respond(200, json.dumps({"result": ALLOWED_CHANGESET}).encode())
    monkeypatch.setattr("sys.stdin", _StringStdin('{"changes": []}'))
    args = ["policy", "eval", "--input", "-", "--decision", "changeset", "--opa-url", server.url]
    assert cli.main(args) == 0
    assert json.loads(capsys.readouterr().out)["allowed"] is True


# --- helpers ---------------------------------------------------------------------------


class _StringStdin:
    def __init__(self, text: str) -> None:
        self._text = text

    def read(self) -> str:
        return self._text


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class LocalServer:
    """A loopback HTTP server answering POSTs with a canned status and body."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b"{}"
        self.delay = 0.0
        self.trickle = False
        self.peers: set[tuple[str, int]] = set()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                owner.peers.add(self.client_address)
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                time.sleep(owner.delay)
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                if owner.trickle:
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    for _ in range(30):
                        try:
                            self.wfile.write(b" ")
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(0.1)
                    return
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def respond(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def server() -> Iterator[LocalServer]:
    local = LocalServer()
    yield local
    local.close()


@pytest.fixture
def slow_server(server: LocalServer) -> str:
    server.delay = 1.5
    return server.url


def test_async_call_timeout_shortens_the_clients_never_lengthens(slow_server: str) -> None:
    async def main() -> list[tuple[AdmissionDecision, float]]:
        out = []
        async with AsyncPolicyClient(slow_server, timeout=0.6) as client:
            for given in (0.2, 5.0):
                started = time.monotonic()
                decision = await client.admission_decision(SECRET_INPUT, timeout=given)
                out.append((decision, time.monotonic() - started))
        return out

    (short, short_took), (capped, capped_took) = anyio.run(main)
    assert_unavailable_admission(short, "within 0.2s")
    assert short_took < 0.5
    assert_unavailable_admission(capped, "within 0.6s")
    assert capped_took < 1.5


def test_async_client_keeps_one_connection_alive(server: LocalServer) -> None:
    server.respond(200, json.dumps({"result": DENIED_ADMISSION}).encode())

    async def main() -> list[AdmissionDecision]:
        async with AsyncPolicyClient(server.url) as client:
            return [await client.admission_decision(SECRET_INPUT) for _ in range(5)]

    decisions = anyio.run(main)
    assert all(d.engine_error is None and not d.allowed for d in decisions)
    assert len(server.peers) == 1
