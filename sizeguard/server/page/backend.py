"""What the approval page asks of the rest of sizeguard, in one place.

The page owns HTTP; the approvers registry (:mod:`sizeguard.approvers`) proves who a person
is, and the service decides what their decision is worth and records it. This module turns
their answers into what the templates show, and their refusals into :class:`PageRefusalError`
(a status and a sentence). It writes no SQL and verifies no signature itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from sizeguard.approvers import ApproverError, Approvers
from sizeguard.server.decisions import (
    ApprovalStatus,
    DecisionError,
    PageDecision,
    PageSummary,
    decide_with_passkey,
    history_for_page,
    page_summary,
    pending_for_page,
)
from sizeguard.server.models import CostDelta, DryRun, TargetDiff
from sizeguard.server.page.security import ApprovalOrigin
from sizeguard.server.service import Service

__all__ = [
    "ChangeView",
    "Decision",
    "InviteView",
    "PageBackend",
    "PageRefusalError",
    "Requirement",
]

# Refusal reasons (the registry's and the decisions') and the HTTP status the page answers
_STATUS: Final = {
    "invite_unknown": 404,
    "invite_used": 410,
    "invite_expired": 410,
    "unknown_request": 404,
    "unknown_approver": 404,
    "unknown_passkey": 403,
    "revoked": 403,
    "requester": 403,
    "wrong_change_set": 403,
    "challenge_unknown": 403,
    "verification_failed": 403,
    "challenge_used": 409,
    "challenge_expired": 409,
    "not_pending": 409,
    "expired": 409,
    "same_person": 409,
    "not_approvable": 409,
}
_LEVELS: Final = {
    "confirmation": "a person's confirmation",
    "typed_confirmation": "the namespaces typed by a person",
    "authenticated_approver": "an enrolled approver's passkey approval",
    "two_approvers": "two different enrolled approvers, neither of them the requester",
}


class PageRefusalError(Exception):
    """A refusal the page shows as is: ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _refusal(exc: ApproverError | DecisionError) -> PageRefusalError:
    return PageRefusalError(_STATUS.get(exc.reason, 400), str(exc))


@dataclass(frozen=True)
class InviteView:
    name: str


@dataclass(frozen=True)
class Decision:
    approver: str
    state: str
    message: str


@dataclass(frozen=True)
class Requirement:
    text: str
    met: bool


@dataclass(frozen=True)
class ChangeView:
    """One change set as the templates show it."""

    change_set_id: str
    op: str
    status: str
    message: str
    risk: str
    requester: str
    requested_at: str
    expires_at: str
    targets: list[str]
    diff: list[TargetDiff]
    allowed: bool
    violations: list[str]
    warnings: list[str]
    dry_run: list[DryRun]
    cost: CostDelta
    requirements: list[Requirement]
    approvers: list[str]
    declined_by: list[str]
    approvals: list[PageDecision]
    can_approve: bool
    can_decline: bool

    @property
    def decided_at(self) -> str:
        return self.approvals[-1].at if self.approvals else ""


def _requirements(status: ApprovalStatus) -> list[Requirement]:
    # a passkey approval meets the weaker levels too: show only what the page is for
    page_levels = [r for r in status.requires if r not in ("confirmation", "typed_confirmation")]
    shown = page_levels or status.requires
    items = [
        Requirement(
            _LEVELS.get(r, f"{r} (unknown to this server: cannot be met)"), r not in status.missing
        )
        for r in shown
    ]
    if status.approvers:
        items.append(Requirement("approved so far by " + ", ".join(status.approvers), True))
    return items


def change_view(summary: PageSummary) -> ChangeView:
    status, preview = summary.status, summary.preview
    return ChangeView(
        change_set_id=status.change_set_id,
        op=status.op,
        status=status.state,
        message=status.message,
        risk=status.risk,
        requester=status.requester,
        requested_at=status.requested_at,
        expires_at=status.expires_at,
        targets=[d.target for d in preview.diff],
        diff=list(preview.diff),
        allowed=preview.policy.allowed,
        violations=[v.message for v in preview.policy.violations],
        warnings=[w.message for w in preview.policy.warnings],
        dry_run=list(preview.dry_run),
        cost=preview.cost,
        requirements=_requirements(status),
        approvers=list(status.approvers),
        declined_by=list(status.declined_by),
        approvals=list(summary.decisions),
        can_approve=status.state == "pending",
        can_decline=status.state in ("pending", "approved"),
    )


def _action(action: str) -> Literal["approve", "decline"]:
    return "approve" if action == "approve" else "decline"


class PageBackend:
    """The registry and the service, as the page uses them (synchronous: the page calls
    them from worker threads)."""

    def __init__(self, service: Service, approvers: Approvers | None = None) -> None:
        self.service = service
        self.approvers = approvers or Approvers(service.ledger)

    # -- views -------------------------------------------------------------------------------
    def overview(self) -> tuple[list[ChangeView], list[ChangeView]]:
        """(pending, oldest first; decided, newest first)."""
        return self._views(pending_for_page(self.service)), self._views(
            history_for_page(self.service)
        )

    def _views(self, statuses: list[ApprovalStatus]) -> list[ChangeView]:
        views = []
        for status in statuses:
            summary = page_summary(self.service, status.change_set_id)
            if summary is not None:
                views.append(change_view(summary))
        return views

    def change(self, change_set_id: str) -> ChangeView:
        summary = page_summary(self.service, change_set_id)
        if summary is None:
            raise PageRefusalError(
                404,
                f"Change set {change_set_id} is not waiting for an approval on this page "
                "(request_confirmation puts a change set here when its policy needs one).",
            )
        return change_view(summary)

    # -- enrolment ---------------------------------------------------------------------------
    def invite(self, token: str) -> InviteView:
        try:
            return InviteView(self.approvers.invite_name(token))
        except ApproverError as exc:
            raise _refusal(exc) from None

    def enrollment_options(self, token: str, approval: ApprovalOrigin) -> dict[str, Any]:
        try:
            return self.approvers.registration_options(token, rp_id=approval.host)
        except ApproverError as exc:
            raise _refusal(exc) from None

    def finish_enrollment(
        self, token: str, credential: dict[str, Any], approval: ApprovalOrigin
    ) -> str:
        try:
            approver = self.approvers.finish_registration(
                token, credential, rp_id=approval.host, origin=approval.origin
            )
        except ApproverError as exc:
            raise _refusal(exc) from None
        return approver.name

    # -- decisions ---------------------------------------------------------------------------
    def decision_options(
        self, change_set_id: str, action: str, approval: ApprovalOrigin
    ) -> dict[str, Any]:
        """Assertion options, only for a change set that can take this decision now."""
        view = self.change(change_set_id)
        if not (view.can_approve if action == "approve" else view.can_decline):
            raise PageRefusalError(
                409, f"Change set {change_set_id} is {view.status}: {view.message}."
            )
        try:
            return self.approvers.authentication_options(
                change_set_id, _action(action), rp_id=approval.host
            )
        except ApproverError as exc:
            raise _refusal(exc) from None

    def decide(
        self,
        change_set_id: str,
        action: str,
        credential: dict[str, Any],
        approval: ApprovalOrigin,
    ) -> Decision:
        """Verify the assertion (who) and record the decision (whether they may)."""
        try:
            status = decide_with_passkey(
                self.service,
                self.approvers,
                change_set_id,
                _action(action),
                credential,
                rp_id=approval.host,
                origin=approval.origin,
            )
        except DecisionError as exc:
            raise _refusal(exc) from None
        who = status.declined_by[-1:] if action == "decline" else status.approvers[-1:]
        verb = "Declined" if action == "decline" else "Approved"
        return Decision(
            approver=who[0] if who else "",
            state=status.state,
            message=f"{verb}{' by ' + who[0] if who else ''}: {status.message}.",
        )
