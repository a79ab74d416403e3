"""The page's decisions (sizeguard.server.decisions) on a real ledger and registry, with real
passkey assertions; the preview (policy, dry run) is given as data here — against a real OPA
and apiserver it is tested in tests/integration/test_approval_flow.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sizeguard.approvals import generate_signing_key
from sizeguard.approvers import Approvers
from sizeguard.changes import ChangeSet, ResourceChange, guarded_state, target_of
from sizeguard.ledger import Ledger
from sizeguard.policy import Finding, PolicyClient
from sizeguard.server.decisions import (
    REQUEST_TTL_SECONDS,
    DecisionError,
    approval_status,
    decide_with_passkey,
    history_for_page,
    open_request,
    page_summary,
    pending_for_page,
    record_page_decision,
)
from sizeguard.server.models import CostDelta, PolicyView, Preview
from sizeguard.server.service import Service, ServiceError

from .passkeys import ORIGIN, RP_ID, SoftPasskey, enroll
from .test_executor import deployment

PRODUCTION = ["authenticated_approver", "typed_confirmation"]
CRITICAL_PRODUCTION = ["authenticated_approver", "two_approvers", "typed_confirmation"]


class PreviewService(Service):
    """The real service and ledger; the fresh preview (policy + dry run) given as data."""

    requires: list[str]
    violations: list[Finding]

    def stored_preview(self, change_set_id: str, *, actor: str) -> tuple[Preview, str]:
        return preview_of(change_set_id, self.requires, self.violations), "edit"


def preview_of(cs_id: str, requires: list[str], violations: list[Finding] | None = None) -> Preview:
    return Preview(
        change_set_id=cs_id,
        targets=1,
        diff=[],
        policy=PolicyView(
            allowed=not violations,
            risk="high",
            violations=violations or [],
            warnings=[],
            requires=requires,
        ),
        dry_run=[],
        cost=CostDelta(monthly_before=1.0, monthly_after=2.0, monthly_delta=1.0),
        confirmation="sizeguard: apply ...",
        typed_confirmation=["shop"],
        next_step="",
    )


@contextmanager
def preview_service(directory: Path) -> Iterator[PreviewService]:
    """A service over a fresh ledger in ``directory`` whose previews require PRODUCTION's
    levels (no cluster, an OPA nobody listens on)."""
    with Ledger(directory / "ledger.db") as ledger:
        service = PreviewService(
            cluster=None,  # type: ignore[arg-type]
            policy=PolicyClient("http://127.0.0.1:9"),
            ledger=ledger,
            key=generate_signing_key(),
        )
        service.requires = PRODUCTION
        service.violations = []
        yield service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[PreviewService]:
    with preview_service(tmp_path) as service:
        yield service


@pytest.fixture
def registry(service: Service) -> Approvers:
    return Approvers(service.ledger)


def stored(service: Service, name: str = "web") -> str:
    live = deployment(name)
    after: dict[str, Any] = {**live, "spec": {**live["spec"], "replicas": 3}}
    change = ResourceChange(
        target=target_of(live),
        before=guarded_state(live),
        after=guarded_state(after),
        reason="test",
        source="edit",
    )
    return service.ledger.put_change_set(ChangeSet(changes=[change]), source="edit").id


def requested(service: PreviewService, requires: list[str], requester: str = "token:bob") -> str:
    service.requires = requires
    cs_id = stored(service)
    open_request(service, preview_of(cs_id, requires), op="apply", requester=requester)
    return cs_id


def reason_of(exc: pytest.ExceptionInfo[DecisionError]) -> str:
    return exc.value.reason


def test_a_change_that_needs_no_page_is_not_put_on_it(service: PreviewService) -> None:
    cs_id = stored(service)
    with pytest.raises(ServiceError, match="does not need the approval page"):
        open_request(service, preview_of(cs_id, ["typed_confirmation"]), op="apply", requester="x")


def test_the_page_lists_a_request_with_its_summary(service: PreviewService) -> None:
    cs_id = requested(service, PRODUCTION)
    (row,) = pending_for_page(service)
    assert (row.change_set_id, row.state, row.requester, row.met) == (
        cs_id,
        "pending",
        "token:bob",
        False,
    )
    assert row.requires == ["typed_confirmation", "authenticated_approver"]
    assert row.url == f"http://localhost:8765/changes/{cs_id}"
    assert "passkey" in row.message
    summary = page_summary(service, cs_id)
    assert summary is not None and summary.preview.cost.monthly_delta == 1.0
    assert summary.decisions == []
    assert history_for_page(service) == []
    assert page_summary(service, "cs-" + "0" * 20) is None


def test_one_passkey_approves_a_production_change(
    service: PreviewService, registry: Approvers
) -> None:
    cs_id = requested(service, PRODUCTION)
    passkey = enroll(registry, "alice")
    options = registry.authentication_options(cs_id, "approve", rp_id=RP_ID)
    status = decide_with_passkey(
        service,
        registry,
        cs_id,
        "approve",
        passkey.assert_(options),
        rp_id=RP_ID,
        origin=ORIGIN,
    )
    assert (status.state, status.met, status.approvers) == ("approved", True, ["alice"])
    (approval,) = service.ledger.approvals(cs_id)
    assert (approval.approver, approval.approvers, approval.state) == (
        "approver:alice",
        ("alice",),
        "pending",
    )
    assert approval.typed_namespaces == ("shop",)
    events = [e.event for e in service.ledger.audit_entries(change_set_id=cs_id)]
    assert events[-2:] == ["page.approved", "approval.recorded"]
    assert pending_for_page(service) == []
    assert [h.change_set_id for h in history_for_page(service)] == [cs_id]
    summary = page_summary(service, cs_id)
    assert summary is not None and [d.approver for d in summary.decisions] == ["alice"]


def test_a_replayed_assertion_records_nothing(service: PreviewService, registry: Approvers) -> None:
    cs_id = requested(service, CRITICAL_PRODUCTION)
    passkey = enroll(registry, "alice")
    answer = passkey.assert_(registry.authentication_options(cs_id, "approve", rp_id=RP_ID))
    decide_with_passkey(service, registry, cs_id, "approve", answer, rp_id=RP_ID, origin=ORIGIN)
    with pytest.raises(DecisionError) as refused:
        decide_with_passkey(service, registry, cs_id, "approve", answer, rp_id=RP_ID, origin=ORIGIN)
    assert reason_of(refused) == "challenge_used"
    assert approval_status(service, cs_id).approvers == ["alice"]  # type: ignore[union-attr]
    assert service.ledger.audit_entries()[-1].event == "page.refused"


def test_an_assertion_for_another_change_set_records_nothing(
    service: PreviewService, registry: Approvers
) -> None:
    cs_id = requested(service, PRODUCTION)
    passkey = enroll(registry, "alice")
    options = registry.authentication_options("cs-" + "f" * 20, "approve", rp_id=RP_ID)
    with pytest.raises(DecisionError) as refused:
        decide_with_passkey(
            service, registry, cs_id, "approve", passkey.assert_(options), rp_id=RP_ID,
            origin=ORIGIN,
        )  # fmt: skip
    assert reason_of(refused) == "wrong_change_set"
    assert service.ledger.approvals(cs_id) == []


def test_two_approvers_must_be_two_people_other_than_the_requester(
    service: PreviewService, registry: Approvers
) -> None:
    cs_id = requested(service, CRITICAL_PRODUCTION, requester="token:Bob")
    for name in ("alice", "bob", "carol"):
        enroll(registry, name)
    first = record_page_decision(service, cs_id, "alice", "approve")
    assert (first.state, first.met, first.missing) == ("pending", False, ["two_approvers"])
    assert service.ledger.approvals(cs_id) == []
    with pytest.raises(DecisionError, match="already approved") as same:
        record_page_decision(service, cs_id, "ALICE", "approve")
    assert reason_of(same) == "same_person"
    with pytest.raises(DecisionError, match="requested change set") as own:
        record_page_decision(service, cs_id, "bob", "approve")
    assert reason_of(own) == "requester"
    second = record_page_decision(service, cs_id, "carol", "approve")
    assert (second.state, second.approvers) == ("approved", ["alice", "carol"])
    (approval,) = service.ledger.approvals(cs_id)
    assert (approval.approver, approval.approvers) == ("approver:alice", ("alice", "carol"))


def test_the_requester_may_approve_a_change_that_needs_one_approver(
    service: PreviewService, registry: Approvers
) -> None:
    cs_id = requested(service, PRODUCTION, requester="token:alice")
    enroll(registry, "alice")
    assert record_page_decision(service, cs_id, "alice", "approve").state == "approved"


def test_declining_declines_and_cancels_an_unused_approval(
    service: PreviewService, registry: Approvers
) -> None:
    cs_id = requested(service, PRODUCTION)
    enroll(registry, "alice")
    enroll(registry, "dave")
    record_page_decision(service, cs_id, "alice", "approve")
    status = record_page_decision(service, cs_id, "dave", "decline")
    assert (status.state, status.declined_by) == ("declined", ["dave"])
    assert [a.state for a in service.ledger.approvals(cs_id)] == ["cancelled"]
    with pytest.raises(DecisionError) as late:
        record_page_decision(service, cs_id, "alice", "approve")
    assert reason_of(late) == "not_pending"
    # asked again: a new round, the old decisions do not count
    open_request(service, preview_of(cs_id, PRODUCTION), op="apply", requester="token:bob")
    fresh = approval_status(service, cs_id)
    assert fresh is not None and (fresh.state, fresh.approvers) == ("pending", [])


def test_a_revoked_or_unknown_approver_cannot_decide(
    service: PreviewService, registry: Approvers
) -> None:
    cs_id = requested(service, PRODUCTION)
    enroll(registry, "alice")
    registry.revoke("alice")
    for name in ("alice", "mallory"):
        with pytest.raises(DecisionError) as refused:
            record_page_decision(service, cs_id, name, "approve")
        assert reason_of(refused) == "revoked"


def test_an_expired_request_cannot_be_approved(
    service: PreviewService, registry: Approvers
) -> None:
    service.requires = PRODUCTION
    cs_id = stored(service)
    past = time.time() - REQUEST_TTL_SECONDS - 10
    open_request(service, preview_of(cs_id, PRODUCTION), op="apply", requester="x", now=past)
    enroll(registry, "alice")
    with pytest.raises(DecisionError) as refused:
        record_page_decision(service, cs_id, "alice", "approve")
    assert reason_of(refused) == "expired"
    assert [h.state for h in history_for_page(service)] == ["expired"]
    with pytest.raises(DecisionError) as unknown:
        record_page_decision(service, "cs-" + "0" * 20, "alice", "approve")
    assert reason_of(unknown) == "unknown_request"


def test_the_last_approval_checks_the_policy_again(
    service: PreviewService, registry: Approvers
) -> None:
    cs_id = requested(service, PRODUCTION)
    enroll(registry, "alice")
    service.violations = [Finding(code="frozen", target="", message="the namespace is frozen")]
    with pytest.raises(DecisionError, match="frozen") as refused:
        record_page_decision(service, cs_id, "alice", "approve")
    assert reason_of(refused) == "not_approvable"
    status = approval_status(service, cs_id)
    assert status is not None and (status.state, status.approvers) == ("pending", [])
    assert service.ledger.approvals(cs_id) == []


def test_a_requirement_grown_since_the_request_is_met_only_by_more_approvals(
    service: PreviewService, registry: Approvers
) -> None:
    cs_id = requested(service, PRODUCTION)
    enroll(registry, "alice")
    enroll(registry, "carol")
    service.requires = CRITICAL_PRODUCTION  # the policy now says: two approvers
    first = record_page_decision(service, cs_id, "alice", "approve")
    assert (first.state, first.missing, service.ledger.approvals(cs_id)) == (
        "pending",
        ["two_approvers"],
        [],
    )
    second = record_page_decision(service, cs_id, "carol", "approve")
    assert (second.state, second.approvers) == ("approved", ["alice", "carol"])


def test_an_approval_not_used_in_time_expires(service: PreviewService, registry: Approvers) -> None:
    cs_id = requested(service, PRODUCTION)
    enroll(registry, "alice")
    record_page_decision(service, cs_id, "alice", "approve")
    later = approval_status(service, cs_id, now=time.time() + 600)
    assert later is not None and later.state == "expired"


def test_a_stranger_passkey_never_reaches_the_ledger(
    service: PreviewService, registry: Approvers
) -> None:
    cs_id = requested(service, PRODUCTION)
    options = registry.authentication_options(cs_id, "approve", rp_id=RP_ID)
    with pytest.raises(DecisionError) as refused:
        decide_with_passkey(
            service, registry, cs_id, "approve", SoftPasskey().assert_(options), rp_id=RP_ID,
            origin=ORIGIN,
        )  # fmt: skip
    assert reason_of(refused) == "unknown_passkey"
    assert approval_status(service, cs_id).approvers == []  # type: ignore[union-attr]


def test_everyone_who_asked_in_a_round_is_a_requester(
    service: PreviewService, registry: Approvers
) -> None:
    cs_id = requested(service, CRITICAL_PRODUCTION, requester="token:bob")
    open_request(service, preview_of(cs_id, CRITICAL_PRODUCTION), op="apply", requester="jwt:Carol")
    status = approval_status(service, cs_id)
    assert status is not None
    assert (status.requester, status.requesters) == ("token:bob", ["token:bob", "jwt:Carol"])
    for name in ("alice", "bob", "carol"):
        enroll(registry, name)
    record_page_decision(service, cs_id, "alice", "approve")
    for name in ("bob", "carol"):
        with pytest.raises(DecisionError) as own:
            record_page_decision(service, cs_id, name, "approve")
        assert reason_of(own) == "requester"


def test_an_approver_linked_to_the_requester_cannot_approve_a_two_approver_change(
    service: PreviewService, registry: Approvers
) -> None:
    cs_id = requested(service, CRITICAL_PRODUCTION, requester="token:local")
    enroll(registry, "alice")
    registry.link("alice", "token:local")
    with pytest.raises(DecisionError, match="linked to token:local") as refused:
        record_page_decision(service, cs_id, "alice", "approve")
    assert refused.value.reason == "requester"
