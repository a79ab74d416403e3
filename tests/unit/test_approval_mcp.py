"""The MCP flow of a change that needs a person, through ``fastmcp.Client`` on the real app:
the service's preview and policy decision are given as data and the cluster is test_executor's
fake (the same flow against the real sandbox: tests/integration/test_approval_flow.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from mcp_types import ElicitRequestURLParams, Implementation
from mcp_types import ElicitResult as WireElicitResult

from sizeguard.approvers import Approvers
from sizeguard.changes import ChangeSet
from sizeguard.ledger import Ledger
from sizeguard.policy import ChangesetDecision, Finding
from sizeguard.server.app import build_app
from sizeguard.server.confirm import INPUT_KEY
from sizeguard.server.decisions import record_page_decision
from sizeguard.server.models import Preview

from .passkeys import SoftPasskey, approve_as, enroll
from .test_executor import FakeCluster, FakeService, approved, claims, deployment, make_service
from .test_page_decisions import preview_of

REQUIRES = ["authenticated_approver", "typed_confirmation"]
DECISION = ChangesetDecision(
    allowed=True,
    risk="high",
    violations=[],
    warnings=[Finding(code="production_namespace", target="Deployment/shop/a", message="")],
    requires=REQUIRES,
)


class PageService(FakeService):
    def stored_preview(self, change_set_id: str, *, actor: str) -> tuple[Preview, str]:
        return preview_of(change_set_id, list(self.decision.requires)), "edit"

    def decide(self, change_set: ChangeSet) -> ChangesetDecision:
        return self.decision


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[PageService, FakeCluster, str, SoftPasskey]]:
    with Ledger(tmp_path / "ledger.db") as ledger:
        cluster = FakeCluster(deployment("a"))
        base = make_service(ledger, cluster)
        service = PageService(cluster=base.cluster, policy=base.policy, ledger=ledger, key=base.key)
        service.decision = DECISION
        cs_id = approved(service, "a")
        for approval in ledger.approvals(cs_id):  # start from no approval at all
            ledger.cancel_approval(approval.id, actor="test")
        passkey = enroll(Approvers(ledger), "alice")
        yield service, cluster, cs_id, passkey


class SelfAnswering:
    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def __call__(self, message: str, response_type: Any, params: Any, context: Any) -> Any:
        self.requests.append(params)
        return {"approve": True, "namespace": "shop"}


async def _call(
    service: PageService, tool: str, args: dict[str, Any], handler: Any = None, legacy: bool = False
) -> Any:
    kwargs: dict[str, Any] = {"client_info": Implementation(name="t", version="1")}
    if handler is not None:
        kwargs["elicitation_handler"] = handler
    if legacy:
        kwargs["mode"] = "legacy"
    async with Client(build_app(service), **kwargs) as client:
        return (await client.call_tool(tool, args)).structured_content


def call(*args: Any, **kwargs: Any) -> Any:
    return asyncio.run(_call(*args, **kwargs))


@pytest.mark.parametrize("legacy", [True, False], ids=["elicitation-create", "input-required"])
def test_a_self_answering_client_gets_the_page_not_an_approval(
    setup: tuple[PageService, FakeCluster, str, SoftPasskey], legacy: bool
) -> None:
    service, cluster, cs_id, _ = setup
    client = SelfAnswering()
    answer = call(service, "request_confirmation", {"change_set_id": cs_id}, client, legacy)
    assert answer["status"] == "pending", answer
    assert answer["approval_url"] == f"http://localhost:8765/changes/{cs_id}"
    assert answer["requires"] == ["typed_confirmation", "authenticated_approver"]
    assert [type(p) for p in client.requests] == [ElicitRequestURLParams]
    assert client.requests[0].url == answer["approval_url"]
    assert [a.state for a in service.ledger.approvals(cs_id)] == ["cancelled"]  # none usable
    execution = call(service, "apply_changes", {"change_set_id": cs_id})
    assert execution["status"] == "refused"
    assert answer["approval_url"] in execution["message"]
    assert cluster.patches == []


def test_input_required_answers_approve_nothing_and_need_the_servers_state(
    setup: tuple[PageService, FakeCluster, str, SoftPasskey],
) -> None:
    """The 2026-07-28 round trip by hand: the question is a URL; an answer with the namespace
    typed is no approval; one without the server's state, or replayed, is refused."""
    service, _, cs_id, _ = setup
    yes = {
        INPUT_KEY: WireElicitResult(action="accept", content={"approve": True, "namespace": "shop"})
    }
    args = {"change_set_id": cs_id}

    async def go() -> list[Any]:
        async with Client(build_app(service), elicitation_handler=SelfAnswering()) as client:
            session = client.session
            first = await session.call_tool("request_confirmation", args, allow_input_required=True)
            state = first.request_state
            answered = await session.call_tool(
                "request_confirmation", args, input_responses=yes, request_state=state,
                allow_input_required=True,
            )  # fmt: skip
            replayed = await session.call_tool(
                "request_confirmation", args, input_responses=yes, request_state=state,
                allow_input_required=True,
            )  # fmt: skip
            no_state = await session.call_tool(
                "request_confirmation", args, input_responses=yes, allow_input_required=True
            )
            return [first, answered, replayed, no_state]

    first, answered, replayed, no_state = asyncio.run(go())
    assert first.result_type == "input_required"
    (question,) = first.input_requests.values()
    assert isinstance(question.params, ElicitRequestURLParams)
    assert question.params.url == f"http://localhost:8765/changes/{cs_id}"
    assert answered.structured_content["status"] == "pending"
    assert replayed.structured_content["status"] == "refused"
    assert no_state.structured_content["status"] == "refused"
    assert [a.state for a in service.ledger.approvals(cs_id)] == ["cancelled"]


def test_a_client_without_elicitation_gets_the_url_in_the_result(
    setup: tuple[PageService, FakeCluster, str, SoftPasskey],
) -> None:
    service, _, cs_id, _ = setup
    answer = call(service, "request_confirmation", {"change_set_id": cs_id})
    assert (answer["status"], answer["approval_url"]) == (
        "pending",
        f"http://localhost:8765/changes/{cs_id}",
    )
    assert "give the person this address" in answer["message"]


def test_apply_works_after_the_page_approval(
    setup: tuple[PageService, FakeCluster, str, SoftPasskey],
) -> None:
    service, cluster, cs_id, passkey = setup
    call(service, "request_confirmation", {"change_set_id": cs_id})
    assert approve_as(Approvers(service.ledger), passkey, cs_id).name == "alice"
    status = record_page_decision(service, cs_id, "alice", "approve")
    assert status.state == "approved"
    again = call(service, "request_confirmation", {"change_set_id": cs_id}, SelfAnswering())
    assert (again["status"], again["approver"], again["approvers"]) == (
        "approved",
        "approver:alice",
        ["alice"],
    )
    execution = call(service, "apply_changes", {"change_set_id": cs_id})
    assert execution["status"] == "applied", execution
    token = cluster.obj("a")["metadata"]["annotations"]["sizeguard.io/approval"]
    assert (claims(token)["sub"], claims(token)["approvers"]) == ("approver:alice", ["alice"])


def test_without_a_page_the_change_cannot_be_approved_here(
    setup: tuple[PageService, FakeCluster, str, SoftPasskey],
) -> None:
    service, _, cs_id, _ = setup
    service.approval_url = None
    answer = call(service, "request_confirmation", {"change_set_id": cs_id}, SelfAnswering())
    assert answer["status"] == "refused"
    assert "serves no approval page" in answer["message"]


def test_a_change_that_needs_no_page_is_asked_in_the_client(
    setup: tuple[PageService, FakeCluster, str, SoftPasskey],
) -> None:
    service, _, cs_id, _ = setup
    service.decision = DECISION.model_copy(update={"requires": [], "warnings": []})
    client = SelfAnswering()
    answer = call(service, "request_confirmation", {"change_set_id": cs_id}, client, legacy=True)
    assert answer["status"] == "approved" and answer["approval_url"] is None
    assert client.requests and not isinstance(client.requests[0], ElicitRequestURLParams)
    assert call(service, "apply_changes", {"change_set_id": cs_id})["status"] == "applied"
