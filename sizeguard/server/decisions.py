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

Concurrency: the fresh check (OPA, the dry run: seconds) runs outside the ledger's write lock;
then one ``BEGIN IMMEDIATE`` transaction checks again that the request is the same round, still
pending and not expired, that the approver is active, not the same person twice and not a
requester, inserts the decision, counts all the round's recorded decisions, and records the
approval only if it moves the request from pending to approved. A decline landing during the
fresh check therefore wins, and of two approvers approving at once the second sees the first.
Only active approvers' decisions count (revocation also voids them: :mod:`sizeguard.approvers`).

Everything here is synchronous (SQLite, OPA and the apiserver are called from the caller's
worker thread).
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, Final, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from sizeguard.approvals import approver_subject
from sizeguard.approvers import Action, ApproverError, Approvers
from sizeguard.server.models import Preview
from sizeguard.server.service import Service, ServiceError, page_url, timestamp
from sizeguard.server.strength import (
    TWO_APPROVERS,
    Evidence,
    Strength,
    assess,
    identity_key,
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


def _now(now: float | None) -> float:
    return time.time() if now is None else now


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
        return _load_in(db, change_set_id)


def _load_in(db: sqlite3.Connection, change_set_id: str) -> _Request | None:
    row = db.execute(
        f"SELECT {_REQUEST_COLUMNS} FROM approval_requests WHERE change_set_id = ?",  # noqa: S608 (constant column list)
        (change_set_id,),
    ).fetchone()
    return None if row is None else _request(row)


def _decisions_in(db: sqlite3.Connection, request: _Request) -> list[tuple[PageDecision, bool]]:
    """This round's decisions (made since the request was opened, not voided), oldest first,
    each with whether its approver is active now."""
    rows = db.execute(
        "SELECT d.approver, d.action, d.at, d.credential_id, EXISTS (SELECT 1 FROM approvers a "
        "JOIN approver_credentials c ON c.approver = a.name WHERE a.name = d.approver "
        "AND a.revoked_at IS NULL AND c.revoked_at IS NULL) FROM page_decisions d "
        "WHERE d.change_set_id = ? AND d.at >= ? AND d.voided_at IS NULL ORDER BY d.at, d.id",
        (request.change_set_id, request.requested_at),
    ).fetchall()
    return [
        (
            PageDecision(approver=r[0], action=r[1], at=timestamp(r[2]), passkey_id=r[3][:12]),
            bool(r[4]),
        )
        for r in rows
    ]


def _decisions(service: Service, request: _Request) -> list[tuple[PageDecision, bool]]:
    with service.ledger.snapshot() as db:
        return _decisions_in(db, request)


def _approvals_of(decisions: list[tuple[PageDecision, bool]]) -> list[str]:
    """The active approvers who approved, in order."""
    return [d.approver for d, active in decisions if active and d.action == "approve"]


def _strength_in(
    db: sqlite3.Connection, request: _Request, requires: list[str], approvers: list[str]
) -> Strength:
    linked = Approvers.linked_approvers_in(db, request.requesters)
    return assess(requires, request.requesters, Evidence(approvers=approvers), linked=linked)


def _applied(service: Service, request: _Request) -> bool:
    return any(
        a.state == "used" and a.approvers and a.created_at >= request.requested_at
        for a in service.ledger.approvals(request.change_set_id)
    )


def _status(
    service: Service,
    request: _Request,
    now: float,
    decisions: list[tuple[PageDecision, bool]] | None = None,
) -> ApprovalStatus:
    decisions = _decisions(service, request) if decisions is None else decisions
    approvers = _approvals_of(decisions)
    with service.ledger.snapshot() as db:
        strength = _strength_in(db, request, request.requires, approvers)
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
        requested_at=timestamp(request.requested_at),
        expires_at=timestamp(request.expires_at),
        risk=Preview.model_validate_json(request.preview_json).policy.risk,
        requires=list(strength.required),
        met=strength.met,
        missing=list(strength.missing),
        approvers=list(dict.fromkeys(identity_key(a) or a for a in approvers)),
        declined_by=[d.approver for d, _ in decisions if d.action == "decline"],
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
        decisions=[d for d, _ in decisions],
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
    expired, or asked again meanwhile), the approver revoked or not enrolled, a requester (or an
    approver linked to one) approving a ``two_approvers`` change, the same person approving
    twice. When the approvals meet the requirement, the policy and the dry run are checked
    again and a single-use approval naming the approvers is recorded for ``apply_changes``
    (see the module docstring for the transaction that makes this safe)."""
    moment = _now(now)
    name = identity_key(approver) or approver
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
    with service.ledger.snapshot() as db:  # the refusals, early (checked again below)
        _check_approval(db, request, request, name, moment)
        tentative = _strength_in(
            db, request, request.requires, [*_approvals_of(_decisions_in(db, request)), name]
        )
    preview = _fresh_check(service, request, tentative.counted) if tentative.met else None
    with service.ledger.transaction() as db:
        latest = _check_approval(db, request, _load_in(db, change_set_id), name, moment)
        db.execute(
            "INSERT INTO page_decisions (change_set_id, op, approver, action, credential_id, at) "
            "VALUES (?, ?, ?, 'approve', ?, ?)",
            (change_set_id, latest.op, name, passkey_id or "-", moment),
        )
        strength = _strength_in(
            db, latest, _requirement(latest, preview), _approvals_of(_decisions_in(db, latest))
        )
        service.ledger.audit_in(
            db, actor=approver_subject(name), event="page.approved", result="recorded",
            change_set_id=change_set_id,
            details={"approver": name, "op": latest.op, "passkey_id": passkey_id[:12],
                     "requirement_met": strength.met},
            now=moment,
        )  # fmt: skip
        if preview is not None:
            _settle_in(service, db, latest, preview, moment)
    if strength.met and preview is None:
        # met only with approvals recorded since the first look: check afresh, then settle
        preview = _fresh_check(service, latest, strength.counted)
        with service.ledger.transaction() as db:
            again = _load_in(db, change_set_id)
            if again is not None and _same_round(again, latest, moment):
                _settle_in(service, db, again, preview, moment)
    _log.info("decisions.approved", change_set_id=change_set_id, met=strength.met)
    refreshed = _load(service, change_set_id)
    assert refreshed is not None
    return _status(service, refreshed, moment)


def _same_round(latest: _Request, request: _Request, moment: float) -> bool:
    return (
        latest.requested_at == request.requested_at
        and latest.state == "pending"
        and latest.expires_at > moment
    )


def _check_approval(
    db: sqlite3.Connection, request: _Request, latest: _Request | None, name: str, moment: float
) -> _Request:
    """The refusals of an approval, against the ledger as it is in ``db`` (``request``: the
    round the approver saw; ``latest``: the request now). Returns ``latest``."""
    cs_id = request.change_set_id
    if latest is None:
        raise DecisionError("unknown_request", f"change set {cs_id} is not waiting for an approval")
    if latest.requested_at != request.requested_at:
        raise DecisionError(
            "not_pending",
            f"change set {cs_id} was asked for again meanwhile; reload the page and approve "
            "again if it is still right",
        )
    if latest.state != "pending":
        raise DecisionError(
            "not_pending", f"change set {cs_id} was {latest.state} meanwhile; nothing recorded"
        )
    if latest.expires_at <= moment:
        raise DecisionError("expired", f"change set {cs_id} was not decided in time")
    if not Approvers.is_active_in(db, name):
        raise DecisionError("revoked", f"{name} is not an enrolled approver (or was revoked)")
    if name in _approvals_of(_decisions_in(db, latest)):
        raise DecisionError(
            "same_person",
            f"{name} has already approved change set {cs_id}; the same person "
            "approving twice counts once, another approver must approve",
        )
    if TWO_APPROVERS in latest.requires:
        linked = Approvers.linked_approvers_in(db, latest.requesters)
        if name in {requester_identity(r) for r in latest.requesters}:
            raise DecisionError(
                "requester",
                f"{name} requested change set {cs_id}; a change that needs two approvers "
                "must be approved by two other people",
            )
        if name in linked:
            identities = ", ".join(latest.requesters)
            raise DecisionError(
                "requester",
                f"{name} is linked to {identities}, who requested change set {cs_id}; a change "
                "that needs two approvers must be approved by two other people",
            )
    return latest


def _requirement(request: _Request, preview: Preview | None) -> list[str]:
    """What the round requires: what the policy required when it was asked for, grown to the
    fresh policy answer when there is one."""
    return sorted(set(request.requires) | set(preview.policy.requires if preview else ()))


def _settle_in(
    service: Service, db: sqlite3.Connection, request: _Request, preview: Preview, moment: float
) -> Strength:
    """Inside a decision's transaction, after the fresh check: the strength of all the round's
    recorded approvals against the requirement now, and, when it is met, the approval — only
    if the request moves from pending to approved here (not declined, not approved already)."""
    requires = _requirement(request, preview)
    strength = _strength_in(db, request, requires, _approvals_of(_decisions_in(db, request)))
    db.execute(  # the policy's requirement now (it may have grown)
        "UPDATE approval_requests SET requires_json = ? WHERE change_set_id = ?",
        (json.dumps(sorted(strength.required)), request.change_set_id),
    )
    if not strength.met:
        return strength
    moved = db.execute(
        "UPDATE approval_requests SET state = 'approved', decided_at = ? "
        "WHERE change_set_id = ? AND state = 'pending' AND requested_at = ?",
        (moment, request.change_set_id, request.requested_at),
    ).rowcount
    if moved == 1:
        service.ledger.record_approval_in(
            db,
            request.change_set_id,
            request.op,
            approver_subject(strength.counted[0]),
            now=moment,
            typed_namespaces=tuple(preview.typed_confirmation),
            approvers=strength.counted,
        )
    return strength


def _fresh_check(service: Service, request: _Request, approvers: tuple[str, ...]) -> Preview:
    """The last approval: the policy, the dry run and the signing key again (the caller
    weighs the requirement against the policy's answer now: it may have grown)."""
    try:
        actor = approver_subject(approvers[0])
        preview, _ = service.stored_preview(request.change_set_id, actor=actor)
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
    return preview


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
    cs_id = request.change_set_id
    with service.ledger.transaction() as db:
        latest = _load_in(db, cs_id)
        open_approval = db.execute(
            "SELECT 1 FROM approvals WHERE change_set_id = ? AND state = 'pending' "
            "AND expires_at > ?",
            (cs_id, moment),
        ).fetchone()
        if latest is None or not (
            (latest.state == "pending" and latest.expires_at > moment)
            or (latest.state == "approved" and open_approval is not None)
        ):
            raise DecisionError(
                "not_pending", f"change set {cs_id} was decided meanwhile; nothing to decline"
            )
        if not Approvers.is_active_in(db, name):
            raise DecisionError("revoked", f"{name} is not an enrolled approver (or was revoked)")
        db.execute(
            "INSERT INTO page_decisions (change_set_id, op, approver, action, credential_id, at) "
            "VALUES (?, ?, ?, 'decline', ?, ?)",
            (cs_id, latest.op, name, passkey_id or "-", moment),
        )
        db.execute(
            "UPDATE approval_requests SET state = 'declined', decided_at = ? "
            "WHERE change_set_id = ?",
            (moment, cs_id),
        )
        service.ledger.audit_in(
            db, actor=approver_subject(name), event="page.declined", result="declined",
            change_set_id=cs_id,
            details={"approver": name, "op": latest.op, "passkey_id": passkey_id[:12]},
            now=moment,
        )  # fmt: skip
        service.ledger.cancel_approvals_in(db, cs_id, actor=approver_subject(name), now=moment)
    _log.info("decisions.declined", change_set_id=cs_id)
    refreshed = _load(service, cs_id)
    assert refreshed is not None
    return _status(service, refreshed, moment)
