"""Approval on the page: the requests waiting for enrolled approvers, and their decisions.

A change set whose policy decision ``requires`` more than a person's answer in the MCP client
(``authenticated_approver``, ``two_approvers``; see :mod:`sizeguard.server.strength`) is
*requested* by ``request_confirmation`` (:func:`open_request`): the ledger keeps who requested
it, when, what the policy required then, and the preview the requester saw. The approval page
lists the requests (:func:`pending_for_page`, :func:`history_for_page`, :func:`page_summary`)
and records what an approver decided after a passkey assertion bound to that change set
(:func:`decide_with_passkey`, which verifies and then calls :func:`record_page_decision`).

When the recorded approvals meet the requirement — checked again against a fresh policy
decision and dry run — a single-use approval is recorded in the ledger naming the approvers,
and ``apply_changes`` can use it (it re-evaluates the policy once more). One decline by an
enrolled approver declines the request and cancels an approval not yet used.

Everything here is synchronous (SQLite, OPA and the apiserver are called from the caller's
worker thread).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any, Final, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from sizeguard.approvers import Action, ApproverError, Approvers
from sizeguard.server.models import Preview
from sizeguard.server.service import Service, ServiceError
from sizeguard.server.strength import (
    TWO_APPROVERS,
    Evidence,
    Strength,
    assess,
    needs_page,
    requester_identity,
)

__all__ = [
    "REQUEST_TTL_SECONDS",
    "ApprovalStatus",
    "DecisionError",
    "PageDecision",
    "PageSummary",
    "approval_status",
    "decide_with_passkey",
    "history_for_page",
    "open_request",
    "page_summary",
    "page_url",
    "pending_for_page",
    "record_page_decision",
]

REQUEST_TTL_SECONDS: Final = 3600
HISTORY_LIMIT: Final = 50

RequestState = Literal["pending", "approved", "declined", "expired", "applied"]

_log = structlog.get_logger("sizeguard.decisions")
_MODEL = ConfigDict(frozen=True, extra="forbid")


class DecisionError(ServiceError):
    """The page's decision is refused; the message is one sentence for the person at the page,
    ``reason`` a short code: ``unknown_request``, ``not_pending``, ``expired``, ``revoked``,
    ``requester``, ``same_person``, ``not_approvable``, or an :class:`ApproverError` reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ApprovalStatus(BaseModel):
    """Where one change set's request for approval stands (the page's list rows, and the
    answer to a decision)."""

    model_config = _MODEL

    change_set_id: str
    op: Literal["apply", "rollback"]
    state: RequestState = Field(
        description="pending: waiting for approvers; approved: apply_changes may run (once, "
        "within 5 minutes); declined; expired (not decided in time); applied"
    )
    requester: str = Field(description="who asked (token:NAME, jwt:SUBJECT, stdio:USER)")
    requesters: list[str] = Field(
        description="everyone who asked for this round (the requester first); none of them "
        "counts towards two_approvers"
    )
    requested_at: str
    expires_at: str = Field(description="the request is pending until then")
    risk: str
    requires: list[str] = Field(description="the policy's requirements, weakest first")
    met: bool
    missing: list[str]
    approvers: list[str] = Field(description="approvers whose passkey approvals are recorded")
    declined_by: list[str]
    message: str = Field(description="one sentence: what the state means, what is still needed")
    url: str | None = Field(description="the change set's page, when this server has a page")


class PageDecision(BaseModel):
    model_config = _MODEL

    approver: str
    action: Literal["approve", "decline"]
    at: str
    passkey_id: str = Field(description="the first characters of the passkey's credential id")


class PageSummary(BaseModel):
    """Everything ``GET /changes/ID`` shows: the status, and the preview the requester saw
    (diff per field, policy risk and reasons, dry run through the webhook, cost delta,
    confirmation text), and the decisions recorded."""

    model_config = _MODEL

    status: ApprovalStatus
    preview: Preview
    decisions: list[PageDecision]


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def page_url(service: Service, change_set_id: str | None = None) -> str | None:
    """The approval page (or one change set's page on it); None when there is no page."""
    if service.approval_url is None:
        return None
    base = service.approval_url.rstrip("/")
    return base if change_set_id is None else f"{base}/changes/{change_set_id}"


# --- the ledger rows -------------------------------------------------------------------------

_REQUEST_COLUMNS: Final = (
    "change_set_id, op, requester, requesters_json, requires_json, preview_json, requested_at, "
    "expires_at, "
    "state, decided_at"
)


class _Request(BaseModel):
    model_config = _MODEL

    change_set_id: str
    op: Literal["apply", "rollback"]
    requester: str
    requesters: list[str]
    requires: list[str]
    preview_json: str
    requested_at: float
    expires_at: float
    state: Literal["pending", "approved", "declined"]
    decided_at: float | None


def _request(row: tuple[Any, ...]) -> _Request:
    return _Request(
        change_set_id=row[0], op=row[1], requester=row[2], requesters=json.loads(row[3]),
        requires=json.loads(row[4]), preview_json=row[5], requested_at=row[6],
        expires_at=row[7], state=row[8], decided_at=row[9],
    )  # fmt: skip


def _load(service: Service, change_set_id: str) -> _Request | None:
    with service.ledger.snapshot() as db:
        row = db.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM approval_requests WHERE change_set_id = ?",  # noqa: S608 (constant column list)
            (change_set_id,),
        ).fetchone()
    return None if row is None else _request(row)


def _decisions(service: Service, request: _Request) -> list[PageDecision]:
    """This round's decisions (made since the request was opened), oldest first."""
    with service.ledger.snapshot() as db:
        rows = db.execute(
            "SELECT approver, action, at, credential_id FROM page_decisions "
            "WHERE change_set_id = ? AND at >= ? ORDER BY at, id",
            (request.change_set_id, request.requested_at),
        ).fetchall()
    return [
        PageDecision(approver=r[0], action=r[1], at=_iso(r[2]), passkey_id=r[3][:12]) for r in rows
    ]


def _applied(service: Service, request: _Request) -> bool:
    return any(
        a.state == "used" and a.approvers and a.created_at >= request.requested_at
        for a in service.ledger.approvals(request.change_set_id)
    )


def _status(
    service: Service, request: _Request, now: float, decisions: list[PageDecision] | None = None
) -> ApprovalStatus:
    decisions = _decisions(service, request) if decisions is None else decisions
    approvers = [d.approver for d in decisions if d.action == "approve"]
    strength = assess(request.requires, request.requesters, Evidence(approvers=approvers))
    state: RequestState = request.state
    if state == "pending" and request.expires_at <= now:
        state = "expired"
    elif state == "approved" and _applied(service, request):
        state = "applied"
    elif state == "approved" and not _approval_usable(service, request.change_set_id, now):
        state = "expired"  # the approval was not used within its 5 minutes
    message = {
        "pending": strength.describe(),
        "approved": f"{strength.describe()}; apply_changes('{request.change_set_id}') may run "
        "once, within 5 minutes",
        "declined": "declined on the approval page; nothing was changed",
        "expired": "nobody decided in time; nothing was changed (request_confirmation asks again)",
        "applied": f"{strength.describe()}; applied",
    }[state]
    return ApprovalStatus(
        change_set_id=request.change_set_id,
        op=request.op,
        state=state,
        requester=request.requester,
        requesters=request.requesters,
        requested_at=_iso(request.requested_at),
        expires_at=_iso(request.expires_at),
        risk=Preview.model_validate_json(request.preview_json).policy.risk,
        requires=list(strength.required),
        met=strength.met,
        missing=list(strength.missing),
        approvers=list(dict.fromkeys(a.lower() for a in approvers)),
        declined_by=[d.approver for d in decisions if d.action == "decline"],
        message=message,
        url=page_url(service, request.change_set_id),
    )


# --- the MCP side ----------------------------------------------------------------------------


def open_request(
    service: Service,
    preview: Preview,
    *,
    op: Literal["apply", "rollback"],
    requester: str,
    now: float | None = None,
) -> ApprovalStatus:
    """Put a change set that needs the page on it (``request_confirmation``). A pending request
    keeps its decisions and is refreshed (preview, requirements, expiry); a declined, expired or
    used one starts a new round."""
    if not needs_page(preview.policy.requires):
        raise ServiceError(
            f"change set {preview.change_set_id} does not need the approval page "
            f"(the policy requires {preview.policy.requires or ['confirmation']})"
        )
    if service.read_only:
        raise ServiceError("this sizeguard server is read-only: it records no approvals")
    moment = _now(now)
    cs_id = preview.change_set_id
    existing = _load(service, cs_id)
    fresh_round = (
        existing is None
        or existing.state == "declined"
        or existing.expires_at <= moment
        or (existing.state == "approved" and not _approval_usable(service, cs_id, moment))
    )
    decided_at: float | None = None
    if fresh_round or existing is None:
        requested_at, state, first, requesters = moment, "pending", requester, [requester]
    else:  # the same round: who asked first stays the requester; everyone who asked is one
        requested_at, state, first = existing.requested_at, existing.state, existing.requester
        requesters = list(dict.fromkeys([*existing.requesters, requester]))
        decided_at = existing.decided_at
    with service.ledger.transaction() as db:
        db.execute(
            "INSERT INTO approval_requests (change_set_id, op, requester, requesters_json, "
            "requires_json, preview_json, requested_at, expires_at, state, decided_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (change_set_id) DO UPDATE SET op = excluded.op, "
            "requester = excluded.requester, requesters_json = excluded.requesters_json, "
            "requires_json = excluded.requires_json, preview_json = excluded.preview_json, "
            "requested_at = excluded.requested_at, expires_at = excluded.expires_at, "
            "state = excluded.state, decided_at = excluded.decided_at",
            (cs_id, op, first, json.dumps(requesters),
             json.dumps(sorted(preview.policy.requires)), preview.model_dump_json(),
             requested_at, moment + REQUEST_TTL_SECONDS, state, decided_at),
        )  # fmt: skip
        service.ledger.audit_in(
            db, actor=requester, event="approval.requested", result=state, change_set_id=cs_id,
            details={"op": op, "requires": sorted(preview.policy.requires),
                     "new_round": fresh_round, "page": page_url(service, cs_id)},
            now=moment,
        )  # fmt: skip
    _log.info("decisions.requested", change_set_id=cs_id, new_round=fresh_round)
    request = _load(service, cs_id)
    assert request is not None
    return _status(service, request, moment)


def _approval_usable(service: Service, change_set_id: str, now: float) -> bool:
    return any(
        a.state == "pending" and a.expires_at > now and a.approvers
        for a in service.ledger.approvals(change_set_id)
    )


def approval_status(
    service: Service, change_set_id: str, *, now: float | None = None
) -> ApprovalStatus | None:
    """Where the change set's request stands; None when it was never requested."""
    request = _load(service, change_set_id)
    return None if request is None else _status(service, request, _now(now))


# --- the page side ---------------------------------------------------------------------------


def pending_for_page(service: Service, *, now: float | None = None) -> list[ApprovalStatus]:
    """Requests waiting for approvers, oldest first."""
    moment = _now(now)
    with service.ledger.snapshot() as db:
        rows = db.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM approval_requests WHERE state = 'pending' "  # noqa: S608 (constant column list)
            "AND expires_at > ? ORDER BY requested_at",
            (moment,),
        ).fetchall()
    return [_status(service, _request(row), moment) for row in rows]


def history_for_page(
    service: Service, *, limit: int = HISTORY_LIMIT, now: float | None = None
) -> list[ApprovalStatus]:
    """Decided (approved, applied, declined) and expired requests, newest first."""
    moment = _now(now)
    with service.ledger.snapshot() as db:
        rows = db.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM approval_requests "  # noqa: S608 (constant column list)
            "WHERE state != 'pending' OR expires_at <= ? "
            "ORDER BY coalesce(decided_at, expires_at) DESC LIMIT ?",
            (moment, limit),
        ).fetchall()
    return [_status(service, _request(row), moment) for row in rows]


def page_summary(
    service: Service, change_set_id: str, *, now: float | None = None
) -> PageSummary | None:
    """What the change set's page shows; None when it was never requested."""
    request = _load(service, change_set_id)
    if request is None:
        return None
    decisions = _decisions(service, request)
    return PageSummary(
        status=_status(service, request, _now(now), decisions),
        preview=Preview.model_validate_json(request.preview_json),
        decisions=decisions,
    )


def decide_with_passkey(
    service: Service,
    registry: Approvers,
    change_set_id: str,
    action: Action,
    credential: dict[str, Any],
    *,
    rp_id: str,
    origin: str,
    now: float | None = None,
) -> ApprovalStatus:
    """Verify the passkey assertion for ``action`` of ``change_set_id``
    (:meth:`Approvers.finish_authentication`) and record the decision
    (:func:`record_page_decision`). Refusals raise :class:`DecisionError`."""
    try:
        approver = registry.finish_authentication(
            change_set_id, action, credential, rp_id=rp_id, origin=origin, now=now
        )
    except ApproverError as exc:
        service.ledger.append_audit(
            actor="approval-page",
            event="page.refused",
            result=exc.reason,
            change_set_id=change_set_id if _load(service, change_set_id) else None,
            details={"action": action},
        )
        raise DecisionError(exc.reason, str(exc)) from None
    return record_page_decision(
        service, change_set_id, approver.name, action, passkey_id=approver.credential_id, now=now
    )


def record_page_decision(
    service: Service,
    change_set_id: str,
    approver: str,
    action: Action,
    *,
    passkey_id: str = "",
    now: float | None = None,
) -> ApprovalStatus:
    """Record an enrolled approver's decision (after their passkey assertion was verified).

    Refused (:class:`DecisionError`): no such request, not pending (declined, approved,
    expired), the approver revoked or not enrolled, the requester approving their own
    ``two_approvers`` change, the same person approving twice. When the approvals meet the
    requirement, the policy and the dry run are checked again and a single-use approval naming
    the approvers is recorded for ``apply_changes``."""
    moment = _now(now)
    name = approver.lower()
    request = _load(service, change_set_id)
    if request is None:
        raise DecisionError(
            "unknown_request", f"change set {change_set_id} is not waiting for an approval"
        )
    if not Approvers(service.ledger).is_active(name):
        raise DecisionError("revoked", f"{name} is not an enrolled approver (or was revoked)")
    current = _status(service, request, moment)
    if action == "decline":
        return _decline(service, request, current, name, passkey_id, moment)
    if current.state != "pending":
        raise DecisionError(
            "expired" if current.state == "expired" else "not_pending",
            f"change set {change_set_id} is {current.state}; {current.message}",
        )
    if name in current.approvers:
        raise DecisionError(
            "same_person",
            f"{name} has already approved change set {change_set_id}; the same person "
            "approving twice counts once, another approver must approve",
        )
    if TWO_APPROVERS in request.requires and name in {
        requester_identity(r) for r in request.requesters
    }:
        raise DecisionError(
            "requester",
            f"{name} requested change set {change_set_id}; a change that needs two approvers "
            "must be approved by two other people",
        )
    approvers = [*current.approvers, name]
    strength = assess(request.requires, request.requesters, Evidence(approvers=approvers))
    preview: Preview | None = None
    if strength.met:
        preview, strength = _fresh_check(service, request, approvers)
    with service.ledger.transaction() as db:
        if preview is not None:  # the policy's requirement now (it may have grown)
            db.execute(
                "UPDATE approval_requests SET requires_json = ? WHERE change_set_id = ?",
                (json.dumps(sorted(strength.required)), change_set_id),
            )
        db.execute(
            "INSERT INTO page_decisions (change_set_id, op, approver, action, credential_id, at) "
            "VALUES (?, ?, ?, 'approve', ?, ?)",
            (change_set_id, request.op, name, passkey_id or "-", moment),
        )
        service.ledger.audit_in(
            db, actor=f"approver:{name}", event="page.approved", result="recorded",
            change_set_id=change_set_id,
            details={"approver": name, "op": request.op, "passkey_id": passkey_id[:12],
                     "requirement_met": strength.met},
            now=moment,
        )  # fmt: skip
        if strength.met:
            db.execute(
                "UPDATE approval_requests SET state = 'approved', decided_at = ? "
                "WHERE change_set_id = ? AND state = 'pending'",
                (moment, change_set_id),
            )
    if strength.met:
        assert preview is not None
        service.ledger.record_approval(
            change_set_id,
            request.op,
            f"approver:{strength.counted[0]}",
            now=moment,
            typed_namespaces=tuple(preview.typed_confirmation),
            approvers=strength.counted,
        )
    _log.info("decisions.approved", change_set_id=change_set_id, met=strength.met)
    refreshed = _load(service, change_set_id)
    assert refreshed is not None
    return _status(service, refreshed, moment)


def _fresh_check(
    service: Service, request: _Request, approvers: list[str]
) -> tuple[Preview, Strength]:
    """The last approval: the policy, the dry run and the signing key again, and the
    requirement against the policy's answer now (it may have grown)."""
    try:
        preview, _ = service.stored_preview(request.change_set_id, actor=f"approver:{approvers[0]}")
    except ServiceError as exc:
        raise DecisionError("not_approvable", f"cannot be approved now: {exc}") from None
    problems = [v.message for v in preview.policy.violations]
    problems += [f"{d.target}: {d.error}" for d in preview.dry_run if not d.admitted]
    if preview.signing_key_trusted is False:
        problems.append(preview.signing_key_check.removeprefix("NO: "))
    if problems or not preview.policy.allowed:
        raise DecisionError(
            "not_approvable", "cannot be approved now: " + "; ".join(problems[:5] or ["denied"])
        )
    requires = sorted(set(request.requires) | set(preview.policy.requires))
    return preview, assess(requires, request.requesters, Evidence(approvers=approvers))


def _decline(
    service: Service,
    request: _Request,
    current: ApprovalStatus,
    name: str,
    passkey_id: str,
    moment: float,
) -> ApprovalStatus:
    if current.state not in ("pending", "approved"):
        raise DecisionError(
            "expired" if current.state == "expired" else "not_pending",
            f"change set {request.change_set_id} is {current.state}; there is nothing to decline",
        )
    with service.ledger.transaction() as db:
        db.execute(
            "INSERT INTO page_decisions (change_set_id, op, approver, action, credential_id, at) "
            "VALUES (?, ?, ?, 'decline', ?, ?)",
            (request.change_set_id, request.op, name, passkey_id or "-", moment),
        )
        db.execute(
            "UPDATE approval_requests SET state = 'declined', decided_at = ? "
            "WHERE change_set_id = ?",
            (moment, request.change_set_id),
        )
        service.ledger.audit_in(
            db, actor=f"approver:{name}", event="page.declined", result="declined",
            change_set_id=request.change_set_id,
            details={"approver": name, "op": request.op, "passkey_id": passkey_id[:12]},
            now=moment,
        )  # fmt: skip
    for approval in service.ledger.approvals(request.change_set_id):
        if approval.state == "pending":
            service.ledger.cancel_approval(approval.id, actor=f"approver:{name}", now=moment)
    _log.info("decisions.declined", change_set_id=request.change_set_id)
    refreshed = _load(service, request.change_set_id)
    assert refreshed is not None
    return _status(service, refreshed, moment)
