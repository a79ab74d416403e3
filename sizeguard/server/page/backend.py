"""What the approval page asks of the rest of sizeguard, in one place.

The page owns HTTP; the approvers registry (:mod:`sizeguard.approvers`) proves who a person
is, and the service decides what their decision is worth and records it. This module turns
their answers into what the templates show, and their refusals into :class:`PageRefusalError`
(a status and a sentence). It writes no SQL and verifies no signature itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sizeguard.approvers import ApproverError, Approvers
from sizeguard.server.page.security import ApprovalOrigin

__all__ = ["Decision", "InviteView", "PageBackend", "PageRefusalError"]

# ApproverError reasons that mean "not found" or "not yours" rather than a bad request
_STATUS = {
    "invite_unknown": 404,
    "invite_used": 410,
    "invite_expired": 410,
    "unknown_approver": 404,
    "revoked": 403,
    "unknown_passkey": 403,
    "wrong_change_set": 403,
    "challenge_used": 409,
    "challenge_unknown": 403,
    "challenge_expired": 409,
    "verification_failed": 403,
}


class PageRefusalError(Exception):
    """A refusal the page shows as is: ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _refusal(exc: ApproverError) -> PageRefusalError:
    message = str(exc)
    return PageRefusalError(_STATUS.get(exc.reason, 400), message[:1].upper() + message[1:])


@dataclass(frozen=True)
class InviteView:
    name: str


@dataclass(frozen=True)
class Decision:
    approver: str
    message: str
    extra: dict[str, Any] = field(default_factory=dict)


class PageBackend:
    """The registry and the service, as the page uses them."""

    def __init__(self, service: Any, approvers: Approvers | None = None) -> None:
        self.service = service
        self.approvers = approvers or Approvers(service.ledger)

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
        self.change(change_set_id)  # a change set that exists and can still be decided
        try:
            return self.approvers.authentication_options(
                change_set_id,
                "approve" if action == "approve" else "decline",
                rp_id=approval.host,
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
        try:
            approver = self.approvers.finish_authentication(
                change_set_id,
                "approve" if action == "approve" else "decline",
                credential,
                rp_id=approval.host,
                origin=approval.origin,
            )
        except ApproverError as exc:
            raise _refusal(exc) from None
        raise NotImplementedError(approver)

    # -- views -------------------------------------------------------------------------------
    def overview(self) -> tuple[list[Any], list[Any]]:
        raise NotImplementedError

    def change(self, change_set_id: str) -> Any:
        raise NotImplementedError
