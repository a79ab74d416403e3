"""The MCP flow of a change set that needs a person (issue 16), through ``fastmcp.Client``,
against the real sandbox: kube-apiserver with sizeguard's webhook, OPA with the shipped
policies (production needs an enrolled approver's passkey, a critical workload in production
two of them).

Approvals are recorded here through the service API the approval page calls
(:func:`sizeguard.server.decisions.decide_with_passkey`) with real WebAuthn assertions from a
software passkey; the page itself in a real browser is tested in test_approval_page.py.
Workloads are created in ``flow-prod`` (a production namespace by its name).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastmcp import FastMCP
from mcp_types import ElicitRequestURLParams

from sizeguard.approvals import APPROVAL_ANNOTATION
from sizeguard.approvers import Approvers
from sizeguard.changes import guarded_state
from sizeguard.server.app import build_app
from sizeguard.server.decisions import approval_status, decide_with_passkey
from sizeguard.server.service import Service

from ..unit.passkeys import ORIGIN, RP_ID, SoftPasskey, enroll
from .conftest import Sandbox
from .test_mcp_server import call, run, sandbox_service
from .test_webhook import create, ensure_namespace, get, workload_manifest

NS = "flow-prod"
PAGE = "http://localhost:8765"


@pytest.fixture(scope="module")
def service(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    ensure_namespace(sandbox, NS, {"environment": "test"})
    with sandbox_service(sandbox, tmp_path_factory.mktemp("flow") / "ledger.db") as service:
        yield service


@pytest.fixture(scope="module")
def app(service: Service) -> FastMCP:
    return build_app(service)


@pytest.fixture(scope="module")
def people(service: Service) -> dict[str, SoftPasskey]:
    registry = Approvers(service.ledger)
    return {name: enroll(registry, name) for name in ("alice", "carol")}


def workload(sandbox: Sandbox, prefix: str = "api") -> dict[str, Any]:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    return create(sandbox, workload_manifest("Deployment", NS, name, replicas=2))


def preview_scale(app: FastMCP, obj: dict[str, Any], replicas: int = 3) -> dict[str, Any]:
    edit = {
        "kind": "Deployment",
        "namespace": NS,
        "name": obj["metadata"]["name"],
        "replicas": replicas,
        "reason": "approval flow test",
    }
    preview: dict[str, Any] = run(call(app, "preview_changes", {"edits": [edit]}))
    assert preview["policy"]["allowed"], preview["policy"]
    return preview


class SelfAnswering:
    """An MCP client that answers every elicitation itself: approve, namespace typed."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def __call__(self, message: str, response_type: Any, params: Any, context: Any) -> Any:
        self.requests.append(params)
        return {"approve": True, "namespace": NS}


def approve_on_page(service: Service, person: SoftPasskey, cs_id: str) -> Any:
    registry = Approvers(service.ledger)
    options = registry.authentication_options(cs_id, "approve", rp_id=RP_ID)
    return decide_with_passkey(
        service, registry, cs_id, "approve", person.assert_(options), rp_id=RP_ID, origin=ORIGIN
    )


def claims_of(live: dict[str, Any]) -> dict[str, Any]:
    payload = live["metadata"]["annotations"][APPROVAL_ANNOTATION].split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def replicas(sandbox: Sandbox, obj: dict[str, Any]) -> int:
    live = get(sandbox, "Deployment", NS, obj["metadata"]["name"])
    return int(live["spec"]["replicas"])


def test_the_policy_requires_an_approver_in_production(app: FastMCP, sandbox: Sandbox) -> None:
    preview = preview_scale(app, workload(sandbox))
    assert preview["policy"]["requires"] == ["authenticated_approver", "typed_confirmation"]
    critical = preview_scale(app, workload(sandbox, "redis"))
    assert critical["policy"]["requires"] == [
        "authenticated_approver",
        "two_approvers",
        "typed_confirmation",
    ]


@pytest.mark.parametrize("legacy", [True, False], ids=["elicitation-create", "input-required"])
def test_a_self_answering_client_does_not_approve_a_production_change(
    app: FastMCP, sandbox: Sandbox, service: Service, legacy: bool
) -> None:
    obj = workload(sandbox)
    cs = preview_scale(app, obj)["change_set_id"]
    client = SelfAnswering()
    answer = run(call(app, "request_confirmation", {"change_set_id": cs}, client, legacy=legacy))
    assert answer["status"] == "pending", answer
    assert answer["approval_url"] == f"{PAGE}/changes/{cs}"
    assert "passkey" in answer["message"] and answer["approvers"] == []
    # the client was sent to the page (URL mode), never asked for a form answer
    assert client.requests and all(isinstance(p, ElicitRequestURLParams) for p in client.requests)
    assert client.requests[0].url == f"{PAGE}/changes/{cs}"
    assert service.ledger.approvals(cs) == []
    status = approval_status(service, cs)
    assert status is not None and status.state == "pending"

    execution = run(call(app, "apply_changes", {"change_set_id": cs}))
    assert execution["status"] == "refused"
    assert f"{PAGE}/changes/{cs}" in execution["message"]
    assert replicas(sandbox, obj) == 2


def test_a_client_without_elicitation_gets_the_url_in_the_result(
    app: FastMCP, sandbox: Sandbox, service: Service
) -> None:
    cs = preview_scale(app, workload(sandbox))["change_set_id"]
    answer = run(call(app, "request_confirmation", {"change_set_id": cs}))
    assert (answer["status"], answer["approval_url"]) == ("pending", f"{PAGE}/changes/{cs}")
    assert service.ledger.approvals(cs) == []


def test_scale_workload_in_production_waits_for_the_page(
    app: FastMCP, sandbox: Sandbox, service: Service
) -> None:
    obj = workload(sandbox)
    args = {"namespace": NS, "name": obj["metadata"]["name"], "replicas": 4, "reason": "test"}
    outcome = run(call(app, "scale_workload", args, SelfAnswering(), legacy=True))
    assert outcome["confirmation"]["status"] == "pending"
    assert outcome["execution"] is None
    assert replicas(sandbox, obj) == 2


def test_a_page_approval_lets_apply_changes_write_and_the_webhook_admits_it(
    app: FastMCP, sandbox: Sandbox, service: Service, people: dict[str, SoftPasskey]
) -> None:
    obj = workload(sandbox)
    before = guarded_state(get(sandbox, "Deployment", NS, obj["metadata"]["name"]))
    cs = preview_scale(app, obj)["change_set_id"]
    assert run(call(app, "request_confirmation", {"change_set_id": cs}))["status"] == "pending"
    refused = run(call(app, "apply_changes", {"change_set_id": cs}))
    assert refused["status"] == "refused" and replicas(sandbox, obj) == 2

    status = approve_on_page(service, people["alice"], cs)
    assert (status.state, status.approvers) == ("approved", ["alice"])
    again = run(call(app, "request_confirmation", {"change_set_id": cs}))
    assert (again["status"], again["approver"]) == ("approved", "approver:alice")

    execution = run(call(app, "apply_changes", {"change_set_id": cs}))
    assert execution["status"] == "applied", execution
    live = get(sandbox, "Deployment", NS, obj["metadata"]["name"])
    assert live["spec"]["replicas"] == 3
    # the write went through the webhook, which verified this approval and its claims
    claims = claims_of(live)
    assert (claims["sub"], claims["approvers"], claims["cs"]) == ("approver:alice", ["alice"], cs)
    assert guarded_state(live) != before
    audit = service.ledger.audit_entries(change_set_id=cs)
    completed = [e for e in audit if e.event == "apply.completed"]
    assert completed and completed[0].details["approvers"] == ["alice"]
    assert {"page.approved", "approval.requested"} <= {e.event for e in audit}


def test_a_critical_workload_in_production_needs_two_people(
    app: FastMCP, sandbox: Sandbox, service: Service, people: dict[str, SoftPasskey]
) -> None:
    obj = workload(sandbox, "redis")
    cs = preview_scale(app, obj)["change_set_id"]
    assert run(call(app, "request_confirmation", {"change_set_id": cs}))["status"] == "pending"
    first = approve_on_page(service, people["alice"], cs)
    assert (first.state, first.missing) == ("pending", ["two_approvers"])
    early = run(call(app, "apply_changes", {"change_set_id": cs}))
    assert early["status"] == "refused" and replicas(sandbox, obj) == 2
    second = approve_on_page(service, people["carol"], cs)
    assert (second.state, second.approvers) == ("approved", ["alice", "carol"])
    execution = run(call(app, "apply_changes", {"change_set_id": cs}))
    assert execution["status"] == "applied", execution
    live = get(sandbox, "Deployment", NS, obj["metadata"]["name"])
    assert live["spec"]["replicas"] == 3
    claims = claims_of(live)
    assert (claims["sub"], claims["approvers"]) == ("approver:alice", ["alice", "carol"])
