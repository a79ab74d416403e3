"""The page's decisions hold together under concurrency and revocation: a decline racing the
last approval, two approvers approving at once, a revoked approver's decisions (the real
ledger and registry; the fresh preview given as data, as in test_page_decisions)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sizeguard.approvers import Approvers
from sizeguard.server import decisions
from sizeguard.server.decisions import DecisionError, approval_status, record_page_decision
from sizeguard.server.models import Preview

from .passkeys import enroll
from .test_page_decisions import (
    CRITICAL_PRODUCTION,
    PRODUCTION,
    PreviewService,
    preview_service,
    requested,
)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[PreviewService]:
    with preview_service(tmp_path) as service:
        yield service


@pytest.fixture
def registry(service: PreviewService) -> Approvers:
    return Approvers(service.ledger)


def usable(svc: PreviewService, cs_id: str) -> list[tuple[str, ...]]:
    return [a.approvers for a in svc.ledger.approvals(cs_id) if a.state == "pending"]


def test_a_decline_during_the_last_approvals_fresh_check_wins(
    service: PreviewService, registry: Approvers, monkeypatch: pytest.MonkeyPatch
) -> None:
    cs_id = requested(service, PRODUCTION, requester="token:zed")
    enroll(registry, "bob")
    enroll(registry, "carol")
    real = decisions._fresh_check

    def declined_meanwhile(svc: Any, request: Any, approvers: list[str]) -> Any:
        record_page_decision(svc, cs_id, "carol", "decline")  # while OPA and the dry run run
        return real(svc, request, approvers)

    monkeypatch.setattr(decisions, "_fresh_check", declined_meanwhile)
    with pytest.raises(DecisionError) as refused:
        record_page_decision(service, cs_id, "bob", "approve")
    assert refused.value.reason == "not_pending"
    status = approval_status(service, cs_id)
    assert status is not None and status.state == "declined" and status.approvers == []
    assert usable(service, cs_id) == []


def test_two_approvers_approving_at_once_both_count(
    service: PreviewService, registry: Approvers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each looked before the other's decision was recorded: the second to record sees the
    first's decision, and the change set is approved (once)."""
    cs_id = requested(service, CRITICAL_PRODUCTION, requester="token:zed")
    enroll(registry, "alice")
    enroll(registry, "bob")
    real_load = decisions._load
    both_looked = threading.Barrier(2, timeout=10)
    waited: set[str] = set()

    def load_then_wait(svc: Any, change_set_id: str) -> Any:
        request = real_load(svc, change_set_id)
        me = threading.current_thread().name
        if me.startswith("approver-") and me not in waited:  # the first look only
            waited.add(me)
            both_looked.wait()
        return request

    monkeypatch.setattr(decisions, "_load", load_then_wait)
    errors: list[BaseException] = []

    def approve(name: str) -> None:
        try:
            record_page_decision(service, cs_id, name, "approve")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=approve, args=(n,), name=f"approver-{n}") for n in ("alice", "bob")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    monkeypatch.setattr(decisions, "_load", real_load)
    assert errors == []
    status = approval_status(service, cs_id)
    assert status is not None
    assert (status.state, sorted(status.approvers), status.met) == (
        "approved",
        ["alice", "bob"],
        True,
    )
    (approval,) = usable(service, cs_id)
    assert sorted(approval) == ["alice", "bob"]


def test_an_approval_recorded_after_the_request_was_renewed_is_refused(
    service: PreviewService, registry: Approvers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decline and a new request_confirmation while bob's approval is checked: bob approved
    the old round, not the new one."""
    cs_id = requested(service, PRODUCTION, requester="token:zed")
    enroll(registry, "bob")
    enroll(registry, "carol")
    real = decisions._fresh_check

    def renewed_meanwhile(svc: Any, request: Any, approvers: list[str]) -> Any:
        record_page_decision(svc, cs_id, "carol", "decline")
        decisions.open_request(
            svc,
            Preview.model_validate_json(request.preview_json),
            op="apply",
            requester="token:zed",
            now=request.requested_at + 1,
        )
        return real(svc, request, approvers)

    monkeypatch.setattr(decisions, "_fresh_check", renewed_meanwhile)
    with pytest.raises(DecisionError, match="approve again") as refused:
        record_page_decision(service, cs_id, "bob", "approve", now=service_now(service, cs_id))
    assert refused.value.reason == "not_pending"
    status = approval_status(service, cs_id)
    assert status is not None and status.state == "pending" and status.approvers == []
    assert usable(service, cs_id) == []


def service_now(svc: PreviewService, cs_id: str) -> float:
    request = decisions._load(svc, cs_id)
    assert request is not None
    return request.requested_at + 0.5


def test_revoking_an_approver_voids_their_pending_decisions(
    service: PreviewService, registry: Approvers
) -> None:
    cs_id = requested(service, CRITICAL_PRODUCTION, requester="token:zed")
    enroll(registry, "alice")
    enroll(registry, "bob")
    record_page_decision(service, cs_id, "alice", "approve")
    registry.revoke("alice")
    status = record_page_decision(service, cs_id, "bob", "approve")
    assert (status.state, status.approvers, status.met) == ("pending", ["bob"], False)
    assert usable(service, cs_id) == []
    enroll(registry, "alice")  # enrolled again: her old decision stays void
    status = approval_status(service, cs_id)
    assert status is not None and status.approvers == ["bob"] and not status.met
    status = record_page_decision(service, cs_id, "alice", "approve")  # a new decision counts
    assert status.state == "approved" and sorted(status.approvers) == ["alice", "bob"]


def test_revoking_an_approver_reopens_an_approval_not_yet_used(
    service: PreviewService, registry: Approvers
) -> None:
    cs_id = requested(service, PRODUCTION, requester="token:zed")
    enroll(registry, "alice")
    assert record_page_decision(service, cs_id, "alice", "approve").state == "approved"
    assert usable(service, cs_id) == [("alice",)]
    registry.revoke("alice")
    status = approval_status(service, cs_id)
    assert status is not None and (status.state, status.approvers) == ("pending", [])
    assert usable(service, cs_id) == []


def test_a_decided_requests_history_keeps_a_revoked_approver(
    service: PreviewService, registry: Approvers
) -> None:
    cs_id = requested(service, PRODUCTION, requester="token:zed")
    enroll(registry, "alice")
    record_page_decision(service, cs_id, "alice", "decline")
    registry.revoke("alice")
    summary = decisions.page_summary(service, cs_id)
    assert summary is not None and [d.approver for d in summary.decisions] == ["alice"]


def test_only_active_approvers_count(service: PreviewService, registry: Approvers) -> None:
    """Even a decision that escaped voiding (the revocation written by an older sizeguard)
    counts only while its approver is active."""
    cs_id = requested(service, CRITICAL_PRODUCTION, requester="token:zed")
    enroll(registry, "alice")
    enroll(registry, "bob")
    record_page_decision(service, cs_id, "alice", "approve")
    with service.ledger.transaction() as db:
        db.execute("UPDATE approvers SET revoked_at = 1 WHERE name = 'alice'")
    status = approval_status(service, cs_id)
    assert status is not None and status.approvers == [] and not status.met
