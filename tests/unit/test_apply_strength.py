"""apply_changes checks the approval's strength against the policy's requirement again, and
signs with the approvers (the fake cluster of test_executor; a real one in
tests/integration/test_approval_flow.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sizeguard.approvers import Approvers
from sizeguard.ledger import Ledger
from sizeguard.policy import ChangesetDecision, Finding
from sizeguard.server import executor
from sizeguard.server.decisions import open_request

from .passkeys import enroll
from .test_executor import FakeCluster, approved, claims, cpu, deployment, make_service
from .test_page_decisions import preview_of

PRODUCTION = ChangesetDecision(
    allowed=True,
    risk="high",
    violations=[],
    warnings=[Finding(code="production_namespace", target="Deployment/shop/a", message="")],
    requires=["authenticated_approver", "typed_confirmation"],
)
CRITICAL_PRODUCTION = PRODUCTION.model_copy(
    update={"requires": ["authenticated_approver", "two_approvers", "typed_confirmation"]}
)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.db") as ledger:
        yield ledger


def page_approved(ledger: Ledger, cs_id: str, *approvers: str) -> None:
    """Replace the plain approval `approved` recorded by one from the page."""
    (plain,) = ledger.approvals(cs_id)
    ledger.cancel_approval(plain.id, actor="test")
    ledger.record_approval(
        cs_id, "apply", f"approver:{approvers[0]}", approvers=approvers, typed_namespaces=("shop",)
    )


def test_an_answer_in_the_client_does_not_apply_a_production_change(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a", typed=("shop",))  # elicitation, namespace typed
    service.decision = PRODUCTION
    result = executor.apply_change_set(service, cs_id, actor="token:bob")
    assert result.status == "refused"
    assert "authenticated_approver" in result.message and "passkey" in result.message
    assert cluster.patches == []
    assert ledger.audit_entries(change_set_id=cs_id)[-1].result == "approval_strength"


def test_a_page_approval_applies_and_signs_with_its_approver(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    enroll(Approvers(ledger), "alice")
    cs_id = approved(service, "a")
    page_approved(ledger, cs_id, "alice")
    service.decision = PRODUCTION
    assert executor.apply_change_set(service, cs_id, actor="token:bob").status == "applied"
    token = cluster.obj("a")["metadata"]["annotations"]["sizeguard.io/approval"]
    assert (claims(token)["sub"], claims(token)["approvers"]) == ("approver:alice", ["alice"])
    completed = ledger.audit_entries(change_set_id=cs_id)[-1]
    assert completed.event == "apply.completed"
    assert completed.details["approvers"] == ["alice"]


def test_two_approvers_sign_together(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    registry = Approvers(ledger)
    enroll(registry, "alice")
    enroll(registry, "carol")
    cs_id = approved(service, "a")
    page_approved(ledger, cs_id, "alice", "carol")
    service.decision = CRITICAL_PRODUCTION
    assert executor.apply_change_set(service, cs_id, actor="token:bob").status == "applied"
    token = cluster.obj("a")["metadata"]["annotations"]["sizeguard.io/approval"]
    assert claims(token)["approvers"] == ["alice", "carol"]


def test_an_approver_who_applies_their_own_two_approver_change_does_not_count(
    ledger: Ledger,
) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    registry = Approvers(ledger)
    enroll(registry, "alice")
    enroll(registry, "carol")
    cs_id = approved(service, "a")
    page_approved(ledger, cs_id, "alice", "carol")
    service.decision = CRITICAL_PRODUCTION
    result = executor.apply_change_set(service, cs_id, actor="token:carol")
    assert result.status == "refused" and "carol requested the change" in result.message
    assert cpu(cluster, "a") == "100m"


def test_a_revoked_approver_no_longer_counts_at_apply(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    registry = Approvers(ledger)
    enroll(registry, "alice")
    cs_id = approved(service, "a")
    page_approved(ledger, cs_id, "alice")
    registry.revoke("alice")
    service.decision = PRODUCTION
    result = executor.apply_change_set(service, cs_id, actor="token:bob")
    assert result.status == "refused" and "authenticated_approver" in result.message
    assert cluster.patches == []


def test_a_requirement_grown_since_the_approval_refuses(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    enroll(Approvers(ledger), "alice")
    cs_id = approved(service, "a")
    page_approved(ledger, cs_id, "alice")
    service.decision = CRITICAL_PRODUCTION  # the policy changed in between
    result = executor.apply_change_set(service, cs_id, actor="token:bob")
    assert result.status == "refused" and "two_approvers" in result.message


def test_a_declined_request_is_not_applied(ledger: Ledger) -> None:
    """Even with an approval left over (the race a decline once lost): declined is final for
    the round."""
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    enroll(Approvers(ledger), "alice")
    cs_id = approved(service, "a")
    open_request(service, preview_of(cs_id, ["authenticated_approver"]), op="apply", requester="x")
    page_approved(ledger, cs_id, "alice")
    with ledger.transaction() as db:
        db.execute("UPDATE approval_requests SET state = 'declined', decided_at = 1")
    service.decision = PRODUCTION
    result = executor.apply_change_set(service, cs_id, actor="token:bob")
    assert result.status == "refused" and "declined on the approval page" in result.message
    assert cluster.patches == []
    assert ledger.audit_entries(change_set_id=cs_id)[-1].result == "declined"


def test_only_active_approvers_are_signed(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    registry = Approvers(ledger)
    for name in ("alice", "carol", "dave"):
        enroll(registry, name)
    cs_id = approved(service, "a")
    page_approved(ledger, cs_id, "alice", "carol", "dave")
    registry.revoke("alice")
    service.decision = CRITICAL_PRODUCTION
    assert executor.apply_change_set(service, cs_id, actor="token:bob").status == "applied"
    token = cluster.obj("a")["metadata"]["annotations"]["sizeguard.io/approval"]
    assert (claims(token)["sub"], claims(token)["approvers"]) == (
        "approver:carol",
        ["carol", "dave"],
    )


def test_an_approver_linked_to_the_caller_does_not_count(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    registry = Approvers(ledger)
    enroll(registry, "alice")
    enroll(registry, "carol")
    registry.link("carol", "token:local")
    cs_id = approved(service, "a")
    page_approved(ledger, cs_id, "alice", "carol")
    service.decision = CRITICAL_PRODUCTION
    result = executor.apply_change_set(service, cs_id, actor="token:local")
    assert result.status == "refused" and "carol requested the change" in result.message
