"""Applying an approved change set, and restoring the originals when that fails midway.

The order is the safety argument, so it is spelled out here:

1. the approval is consumed in the ledger first (single use, serialised by SQLite: of two
   concurrent applies exactly one gets it; a refusal later still spends it — ask again);
   Using it cancels any other pending approval of the same change set;
2. the stored change set must still hash to its id, OPA must still allow it, and if the
   policy now requires typed namespaces (production or critical targets), the human must
   have typed them when approving;
3. every live object is read again, once: another uid (deleted and recreated) or a guarded
   state other than ``before`` (drift), an object a create would make that exists already,
   or an HPA to remove that is younger than ``MIN_AGE_TO_DELETE_SECONDS`` refuses the whole
   apply before anything is written;
4. the originals are snapshotted in the ledger (every object that exists: what an update
   changes, what a delete removes);
5. the targets are written in the order updates, deletes, creates — a created HPA cannot be
   removed for ``MIN_AGE_TO_DELETE_SECONDS``, so nothing that could fail comes after a create
   if it can be helped — each with its own signed approval bound to the change-set id, the
   object and ``from``/``to``: an update is a patch conditional on the resourceVersion read in
   step 3, and its approval is bound to that resourceVersion (a write in between is a 409, not
   a silent overwrite; the approval is minted again for the new version when only the status
   moved); a delete is an annotation patch carrying the delete approval, conditional on that
   resourceVersion, then a DELETE with preconditions uid + resourceVersion; a create is a POST
   carrying the create approval, and the ledger records the object it made (its uid). Each
   stored result must equal ``after``;
6. on any failure — an API error, a timeout whose write may or may not have landed, or any
   unexpected exception — every target already attempted is read again and put back to
   ``before`` under the same human approval (signed as ``rollback`` of this change set), but
   only if it holds what sizeguard wrote: a value someone else wrote meanwhile is never
   overwritten. A target whose write's answer was lost is fenced (a conditional write of a
   non-guarded annotation), so that the write cannot land after the report. A deleted HPA is
   re-created from its snapshot; a created one cannot be removed yet: the report says from
   when ``rollback_changes`` removes it. The report says target by target what happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

import structlog

from sizeguard.approvals import (
    APPROVAL_ANNOTATION,
    MIN_AGE_TO_DELETE_SECONDS,
    approval_op,
    approver_subject,
    mint_approval,
)
from sizeguard.approvers import Approvers
from sizeguard.changes import (
    ChangeSet,
    GuardedState,
    ResourceChange,
    Target,
    guarded_state,
    target_of,
)
from sizeguard.cluster import ClusterError, create_body, patch_for
from sizeguard.ledger import ApprovalRefusedError, LedgerError, Snapshot
from sizeguard.server.decisions import approval_status, page_url
from sizeguard.server.models import Execution, TargetOutcome
from sizeguard.server.service import (
    ROLLBACK_SOURCE,
    Service,
    ServiceError,
    change_set_op,
    created_at,
    drift_problem,
    refs_of,
    refuse_young,
    timestamp,
    typed_namespaces,
)
from sizeguard.server.strength import Evidence, assess

__all__ = ["FENCE_ANNOTATION", "BeforePatch", "Rollback", "apply_change_set", "rollback_change_set"]

# A seam for tests of partial failure: called before each target is written.
BeforePatch = Callable[[ResourceChange], None]
Op = Literal["apply", "rollback"]
Live = dict[str, Any]

_log = structlog.get_logger("sizeguard.executor")

# A conditional write is retried this often when only the resourceVersion moved.
_CONFLICT_RETRIES: Final = 5
_BACKOFF_SECONDS: Final = 0.05
# Written (conditionally) on an object whose write's answer was lost, so that the write can
# no longer land after the restore; not guarded, so the webhook admits it at once.
FENCE_ANNOTATION: Final = "sizeguard.io/fenced-by"
# API answers that mean the write was not stored. Anything else (a timeout, a dropped
# connection, a 5xx, an exception of our own) may have come after the write landed.
_REFUSED_BEFORE_WRITING: Final = frozenset(
    {"not_found", "forbidden", "denied", "conflict", "invalid", "unauthorized", "unsupported"}
)
# Writes in this order (see step 5 of the module docstring).
_ORDER: Final = {"update": 0, "delete": 1, "create": 2}
_HPA_SPEC_KEYS: Final = ("scaleTargetRef", "minReplicas", "maxReplicas", "metrics", "behavior")


class Signer(NamedTuple):
    """Who the signed approvals name: ``sub`` (the approver the ledger recorded) and the
    enrolled approvers who approved on the page (the ``approvers`` claim; empty for a
    confirmation given in the MCP client or a terminal)."""

    subject: str
    approvers: tuple[str, ...] = ()


class NotSentError(ServiceError):
    """A write stopped before its request left: nothing can have been written."""


@dataclass(eq=False)
class _Attempt:
    """A target a write was sent to, and the states sizeguard may have left it in (None: no
    object). ``tokens``: the approvals sent with it (they identify a create whose answer was
    lost, and a delete approval left on an HPA that was not deleted); ``made``: the object a
    create made; ``uncertain``: the answer to the write was lost."""

    change: ResourceChange
    ours: list[GuardedState | None]
    tokens: list[str] = field(default_factory=list)
    made: Live | None = None
    uncertain: bool = False


def _refused(cs_id: str, op: Op, message: str) -> Execution:
    return Execution(change_set_id=cs_id, op=op, status="refused", targets=[], message=message)


def apply_change_set(
    service: Service, change_set_id: str, *, actor: str, before_patch: BeforePatch | None = None
) -> Execution:
    """Apply a stored, approved change set (see the module docstring for the order)."""
    if service.writes_hidden:
        raise ServiceError("this sizeguard server is read-only: it applies nothing")
    stored = service.ledger.get_change_set(change_set_id)
    if stored is None:
        raise ServiceError(
            f"there is no change set {change_set_id}: preview_changes creates change sets, and "
            "only a human can approve one"
        )
    op = change_set_op(stored.source)
    ledger = service.ledger
    requested = approval_status(service, change_set_id)  # the page's request, if any
    if requested is not None and requested.state == "declined":
        declined_by = requested.declined_by
        ledger.append_audit(
            actor=actor,
            event=f"{op}.refused",
            result="declined",
            change_set_id=change_set_id,
            details={"stage": "approval", "declined_by": declined_by},
        )
        return _refused(
            change_set_id,
            op,
            f"not applied: change set {change_set_id} was declined on the approval page"
            + (f" by {', '.join(declined_by)}" if declined_by else "")
            + f"; nothing was changed. request_confirmation('{change_set_id}') asks again "
            "(a new round)",
        )
    try:
        approval = ledger.consume_approval(change_set_id, op)
    except ApprovalRefusedError as exc:
        ledger.append_audit(
            actor=actor,
            event=f"{op}.refused",
            result=str(exc.reason),
            change_set_id=change_set_id,
            details={"stage": "approval"},
        )
        how = (
            f"request_confirmation('{change_set_id}') or `sizeguard approve {change_set_id}` in "
            "a terminal"
            if requested is None
            else f"enrolled approvers on the approval page {requested.url} ({requested.message})"
        )
        return _refused(change_set_id, op, f"not applied: {exc}. Only a person can approve: {how}")
    try:
        change_set = stored.change_set()
    except LedgerError as exc:
        return _refuse(service, change_set_id, op, actor, "change_set", str(exc))
    decision = service.decide(change_set)
    if not decision.allowed:
        reasons = "; ".join(v.message for v in decision.violations[:5])
        return _refuse(
            service, change_set_id, op, actor, "policy", f"the policy denies it: {reasons}"
        )
    missing = sorted(set(typed_namespaces(decision)) - set(approval.typed_namespaces))
    if missing:
        return _refuse(
            service,
            change_set_id,
            op,
            actor,
            "typed_confirmation",
            "the policy now treats " + ", ".join(missing) + " as production or critical, and "
            "the human did not type it when approving; ask for a new approval",
        )
    requesters = {actor} | (set(requested.requesters) if requested is not None else set())
    registry = Approvers(service.ledger)
    active = [name for name in approval.approvers if registry.is_active(name)]  # not revoked
    strength = assess(
        decision.requires,
        requesters,
        Evidence(confirmed=True, typed=True, approvers=active),
        linked=registry.linked_approvers(requesters),
    )
    if not strength.met:
        return _refuse(
            service,
            change_set_id,
            op,
            actor,
            "approval_strength",
            f"the policy requires {', '.join(strength.required)} and the approval does not meet "
            f"it ({strength.describe()}); ask again with request_confirmation('{change_set_id}')"
            + (
                f": the approval page is {page_url(service, change_set_id)}"
                if service.approval_url
                else ""
            ),
        )
    if approval.approvers and not active:
        return _refuse(
            service, change_set_id, op, actor, "approval_strength",
            "every approver of this approval was revoked since; ask again with "
            f"request_confirmation('{change_set_id}')",
        )  # fmt: skip
    # the signed approval names only approvers active now (revoked ones are left out)
    signer = (
        Signer(approver_subject(active[0]), tuple(active))
        if approval.approvers
        else Signer(approval.approver)
    )

    try:
        lives = service.read_current([refs_of(c) for c in change_set.changes])
    except ClusterError as exc:
        return _refuse(service, change_set_id, op, actor, "read", str(exc))
    drift = [
        problem
        for change, live in zip(change_set.changes, lives, strict=True)
        if (problem := drift_problem(change, live)) is not None
    ]
    if drift:
        return _refuse(
            service,
            change_set_id,
            op,
            actor,
            "drift",
            "the cluster changed since the preview: "
            + "; ".join(drift[:10])
            + ". Nothing was changed; preview again",
        )
    for change, live in zip(change_set.changes, lives, strict=True):
        if change.operation == "delete" and live is not None:
            try:
                refuse_young(live)
            except ServiceError as exc:
                return _refuse(service, change_set_id, op, actor, "too_young", str(exc))
    for live in lives:
        if live is not None:
            ledger.save_snapshot(change_set_id, live)

    outcomes: dict[str, TargetOutcome] = {}
    attempted: list[_Attempt] = []
    failure: str | None = None
    work = sorted(
        zip(change_set.changes, lives, strict=True), key=lambda item: _ORDER[item[0].operation]
    )
    for change, live in work:
        ref = change.target.ref()
        attempt = _Attempt(change, [change.after])  # a failed write may still have landed
        try:
            if before_patch is not None:
                before_patch(change)
            attempted.append(attempt)
            result = _write(service, change_set_id, op, change, live, signer, attempt)
            stored_state = None if result is None else guarded_state(result)
        except Exception as exc:  # any failure midway ends in a restore, never a half-apply
            message = _describe(exc)
            refused = isinstance(exc, ClusterError) and exc.kind in _REFUSED_BEFORE_WRITING
            sent = any(a is attempt for a in attempted)
            answered = refused or isinstance(exc, NotSentError)
            # A delete's approval may sit on the HPA (its annotation patch landed): restored.
            left_behind = change.operation == "delete" and bool(attempt.tokens)
            if sent and answered and not left_behind:
                attempted.remove(attempt)  # the request never left, or was answered: not stored
            elif sent:
                attempt.uncertain = not answered  # it may have landed, or may still land
            failure = f"{ref}: {message}"
            outcomes[ref] = TargetOutcome(target=ref, result="not_applied", message=message)
            _audit_target(service, actor, change_set_id, op, change, "failed", message)
            break
        if stored_state != change.after:
            attempt.ours.append(stored_state)
            failure = f"{ref}: the stored object does not have the approved values"
            outcomes[ref] = TargetOutcome(target=ref, result="not_applied", message=failure)
            _audit_target(service, actor, change_set_id, op, change, "mismatch", failure)
            break
        outcomes[ref] = TargetOutcome(target=ref, result="applied", message=_done(change, result))
        _audit_target(service, actor, change_set_id, op, change, "applied", "")

    if failure is None:
        _best_effort_audit(
            service,
            actor=actor,
            event=f"{op}.completed",
            result="applied",
            change_set_id=change_set_id,
            details={
                "targets": len(change_set.changes),
                "approval_id": approval.id,
                "approver": approval.approver,
                "approvers": list(approval.approvers),
            },
        )
        return Execution(
            change_set_id=change_set_id,
            op=op,
            status="applied",
            targets=[outcomes[c.target.ref()] for c in change_set.changes],
            message=f"{op}: {len(change_set.changes)} object(s) changed and verified",
            rollback_hint=_rollback_hint(change_set_id, op, attempted),
        )

    restored_all = _restore(service, change_set_id, attempted, outcomes, actor, signer)
    for change in change_set.changes:
        ref = change.target.ref()
        outcomes.setdefault(
            ref, TargetOutcome(target=ref, result="unchanged", message="not attempted")
        )
    status: Literal["failed_restored", "failed_not_restored"] = (
        "failed_restored" if restored_all else "failed_not_restored"
    )
    _best_effort_audit(
        service,
        actor=actor,
        event=f"{op}.failed",
        result=status,
        change_set_id=change_set_id,
        details={"failure": failure[:1000], "approval_id": approval.id},
    )
    message = f"{op} failed at {failure}; " + (
        "every object already changed was restored to its original; the cluster is as before"
        if restored_all
        else "SOME OBJECTS COULD NOT BE RESTORED (see targets); their originals are in the "
        f"ledger's snapshots, and rollback_changes('{change_set_id}') proposes restoring them"
    )
    return Execution(
        change_set_id=change_set_id,
        op=op,
        status=status,
        targets=[outcomes[c.target.ref()] for c in change_set.changes],
        message=message,
    )


def _refuse(
    service: Service, cs_id: str, op: Op, actor: str, stage: str, message: str
) -> Execution:
    service.ledger.append_audit(
        actor=actor,
        event=f"{op}.refused",
        result=stage,
        change_set_id=cs_id,
        details={"stage": stage, "message": message[:1000]},
    )
    return _refused(cs_id, op, f"not applied ({stage}): {message}")


def _describe(exc: Exception) -> str:
    """What to tell the human about a failure: our own and the API's words as they are; for
    anything unexpected, its type (the details go to the server log, not the report)."""
    if isinstance(exc, ClusterError | ServiceError):
        return str(exc)
    _log.error("executor.unexpected", error_type=type(exc).__name__, error=str(exc)[:300])
    return f"internal error ({type(exc).__name__}); see the server log"


def _done(change: ResourceChange, result: Live | None) -> str:
    if change.operation == "create":
        uid = ((result or {}).get("metadata") or {}).get("uid")
        return f"created (uid {uid}) and verified"
    if change.operation == "delete":
        return "deleted"
    return "patched and verified"


def _removable_from(obj: Live | None) -> str:
    born = None if obj is None else created_at(obj)
    return (
        "2 minutes after it was created"
        if born is None
        else timestamp(born + MIN_AGE_TO_DELETE_SECONDS)
    )


def _rollback_hint(cs_id: str, op: Op, attempted: Iterable[_Attempt]) -> str | None:
    if op == "rollback":
        return None
    hint = f"to undo: rollback_changes('{cs_id}') (needs its own confirmation)"
    created = [a for a in attempted if a.change.operation == "create" and a.made is not None]
    if created:
        hint += "; the HPAs it created can be removed from " + ", ".join(
            f"{_removable_from(a.made)} ({a.change.target.name})" for a in created
        )
    return hint


def _best_effort_audit(service: Service, **entry: Any) -> None:
    """An audit entry written during an apply: a failing ledger must not stop the restore."""
    try:
        service.ledger.append_audit(**entry)
    except Exception as exc:
        _log.error("executor.audit_failed", audit_event=entry.get("event"), error=str(exc)[:300])


# --- writing one target ------------------------------------------------------------------------


def _write(
    service: Service,
    cs_id: str,
    op: Op,
    change: ResourceChange,
    live: Live | None,
    approver: Signer,
    attempt: _Attempt,
) -> Live | None:
    """Write one change; the stored object (None once deleted)."""
    if change.operation == "create":
        made = _create(service, cs_id, op, change, approver, attempt)
        attempt.made = made
        service.ledger.record_created(cs_id, made)
        return made
    assert live is not None
    if change.operation == "delete":
        _delete_fresh(service, cs_id, op, change, live, approver, attempt)
        return None
    return _patch_fresh(service, cs_id, op, change, live, approver)


def _mint(
    service: Service,
    cs_id: str,
    op: Op,
    change: ResourceChange,
    approver: Signer,
    resource_version: str | None,
) -> str:
    """The approval of one write, ``change.before`` -> ``change.after``, under the change
    set's op (``apply``; ``rollback`` for a rollback or restore, whose changes already go back),
    or ``create``/``delete`` where the write creates or deletes the object."""
    assert service.key is not None
    try:
        return mint_approval(
            service.key,
            change_set_id=cs_id,
            op=approval_op(change.before, change.after, op),
            target=change.target,
            before=change.before,
            after=change.after,
            subject=approver.subject,
            approvers=approver.approvers,
            resource_version=resource_version,
        )
    except ValueError as exc:
        raise NotSentError(f"{change.target.ref()}: {exc}; nothing was written") from None


def _patch(
    service: Service, cs_id: str, op: Op, change: ResourceChange, live: Live, approver: Signer
) -> Live:
    """Sign and send one conditional patch. Raises :class:`NotSentError` for anything that
    stops it before the request leaves (nothing can have been written then)."""
    resource_version = _resource_version(live, change.target)
    token = _mint(service, cs_id, op, change, approver, resource_version)
    try:
        body = patch_for(change, token, live=live, resource_version=resource_version)
    except ValueError as exc:
        raise NotSentError(f"{change.target.ref()}: {exc}; nothing was written") from None
    return service.cluster.apply_patch(change.target, body).object


def _create(
    service: Service,
    cs_id: str,
    op: Op,
    change: ResourceChange,
    approver: Signer,
    attempt: _Attempt,
) -> Live:
    """Sign and send one create (an HPA): the approval binds its name and its ``to`` state."""
    token = _mint(service, cs_id, op, change, approver, None)
    try:
        body = create_body(change, token, labels=service.labels_for_create(change))
    except ValueError as exc:
        raise NotSentError(f"{change.target.ref()}: {exc}; nothing was written") from None
    attempt.tokens.append(token)
    return service.cluster.create_hpa(change.target, body).object


def _resource_version(obj: Live, target: Target) -> str:
    """The version a conditional write of ``obj`` is made against (sizeguard writes nothing
    unconditionally)."""
    version = (obj.get("metadata") or {}).get("resourceVersion")
    if not isinstance(version, str) or not version:
        raise NotSentError(
            f"{target.ref()} came without a resourceVersion; sizeguard writes only "
            "conditionally, so nothing was written"
        )
    return version


def _retrying(
    service: Service, change: ResourceChange, live: Live, write: Callable[[Live], Any]
) -> Any:
    """``write(live)``, conditional on ``live``'s resourceVersion. Controllers write status
    all the time, which moves the resourceVersion too: on a 409 the object is read again and
    the write retried (with an approval minted for the new version) while its guarded state is
    still exactly ``change.before``; anything else is someone else's write, and nothing is
    written."""
    for attempt in range(_CONFLICT_RETRIES):
        if attempt:
            time.sleep(_BACKOFF_SECONDS * 2**attempt)
            live = service.cluster.read_object(change.target)
            if guarded_state(live) != change.before:
                raise ClusterError(
                    "conflict",
                    f"{change.target.ref()} was changed by someone else after sizeguard checked "
                    "it; nothing was written to it",
                    status=409,
                )
        try:
            return write(live)
        except ClusterError as exc:
            if exc.kind != "conflict":
                raise
    raise ClusterError(
        "conflict",
        f"{change.target.ref()} kept changing (resourceVersion) during {_CONFLICT_RETRIES} "
        "attempts; nothing was written to it",
        status=409,
    )


def _patch_fresh(
    service: Service, cs_id: str, op: Op, change: ResourceChange, live: Live, approver: Signer
) -> Live:
    """:func:`_patch`, retried while only the resourceVersion moved (see :func:`_retrying`)."""
    result: Live = _retrying(
        service, change, live, lambda now: _patch(service, cs_id, op, change, now, approver)
    )
    return result


def _delete_fresh(
    service: Service,
    cs_id: str,
    op: Op,
    change: ResourceChange,
    live: Live,
    approver: Signer,
    attempt: _Attempt,
) -> None:
    """Delete the HPA ``change`` names: the annotation patch carrying the delete approval and
    the DELETE are both conditional, retried while only the resourceVersion moved."""

    def delete(now: Live) -> None:
        version = _resource_version(now, change.target)
        token = _mint(service, cs_id, op, change, approver, None)
        attempt.tokens.append(token)
        service.cluster.delete_hpa(change.target, resource_version=version, approval_token=token)

    _retrying(service, change, live, delete)


def _fence(
    service: Service, cs_id: str, target: Target, now: Live, *, clear_approval: bool = False
) -> Live:
    """Make sure a write whose answer was lost can no longer land; return the object then.

    ``now`` still holds the original values, but a write that timed out may still be in
    flight. Every sizeguard write to an existing object is conditional on the resourceVersion
    it was checked against, so a conditional write of a non-guarded annotation (admitted by
    the webhook at once) moves the resourceVersion on and the late write gets a 409. If the
    fence gets the 409 instead and the guarded values changed, someone (the late write) wrote
    first: that object is returned for the caller to judge like any other. A late DELETE that
    won makes the fence answer ``not_found``, which is raised. ``clear_approval`` also removes
    the approval annotation (a delete approval left on an HPA that was not deleted)."""
    original = guarded_state(now)
    annotations: dict[str, str | None] = {FENCE_ANNOTATION: cs_id}
    if clear_approval:
        annotations[APPROVAL_ANNOTATION] = None
    for attempt in range(_CONFLICT_RETRIES):
        version = _resource_version(now, target)
        body = {"metadata": {"resourceVersion": version, "annotations": annotations}}
        try:
            return service.cluster.apply_patch(target, body).object
        except ClusterError as exc:
            if exc.kind != "conflict":
                raise
        now = service.cluster.read_object(target)
        if guarded_state(now) != original:
            return now
        time.sleep(_BACKOFF_SECONDS * 2**attempt)
    raise ServiceError("it kept changing; sizeguard cannot be sure a late write will not land")


def _audit_target(
    service: Service, actor: str, cs_id: str, op: Op, change: ResourceChange, result: str, msg: str
) -> None:
    _best_effort_audit(
        service,
        actor=actor,
        event=f"{op}.target",
        result=result,
        change_set_id=cs_id,
        target=change.target,
        details={"message": msg[:1000]} if msg else {},
    )


# --- restoring after a failure -----------------------------------------------------------------


class _MustWaitError(ServiceError):
    """A restore that cannot be done yet (a created HPA younger than the minimum age)."""


def _restore(
    service: Service,
    cs_id: str,
    attempted: list[_Attempt],
    outcomes: dict[str, TargetOutcome],
    actor: str,
    approver: Signer,
) -> bool:
    """Put every attempted target back to ``before``, newest first. True if all are."""
    ok = True
    for attempt in reversed(attempted):
        change = attempt.change
        ref = change.target.ref()
        try:
            restorer = {"create": _restore_create, "delete": _restore_delete}.get(
                change.operation, _restore_update
            )
            message = restorer(service, cs_id, attempt, approver)
        except Exception as exc:
            message = _describe(exc)
            ok = False
            prefix = "" if isinstance(exc, _MustWaitError) else "could not restore: "
            outcomes[ref] = TargetOutcome(
                target=ref, result="restore_failed", message=prefix + message
            )
            _audit_target(service, actor, cs_id, "rollback", change, "restore_failed", message)
            continue
        if message is None:  # found as it was: nothing to restore
            if outcomes[ref].result != "not_applied":
                outcomes[ref] = TargetOutcome(
                    target=ref,
                    result="restored",
                    message="was applied, then found back at its original values",
                )
            continue
        outcomes[ref] = TargetOutcome(target=ref, result="restored", message=message)
        _audit_target(service, actor, cs_id, "rollback", change, "restored", "")
    return ok


def _snapshot_of(service: Service, cs_id: str, change: ResourceChange) -> Snapshot:
    snapshot = service.ledger.get_snapshot(cs_id, change.target)
    if snapshot is None or guarded_state(snapshot.object) != change.before:
        raise ServiceError("its snapshot is missing or does not match the change set")
    return snapshot


def _restore_update(
    service: Service, cs_id: str, attempt: _Attempt, approver: Signer
) -> str | None:
    """A target read again: already at ``before`` needs nothing (if its patch's answer was
    lost it is fenced first, so the patch cannot land later); holding a state sizeguard wrote
    is patched back under the same approval; any other state was written by someone else
    meanwhile and is left alone (reported)."""
    change = attempt.change
    assert change.before is not None
    _snapshot_of(service, cs_id, change)
    now = service.cluster.read_object(change.target)
    if target_of(now) != change.target:
        raise ServiceError("it was deleted or recreated meanwhile; nothing was written")
    current = guarded_state(now)
    if current == change.before and attempt.uncertain:
        now = _fence(service, cs_id, change.target, now)
        current = guarded_state(now)
    if current == change.before:
        return None
    if current not in attempt.ours:
        raise ServiceError(
            "someone else changed it after sizeguard's patch; it was not overwritten"
        )
    undo = ResourceChange(
        target=change.target,
        before=current,
        after=change.before,
        reason=f"restore after a failed apply of {cs_id}",
        source=ROLLBACK_SOURCE + cs_id,
    )
    restored = _patch_fresh(service, cs_id, "rollback", undo, now, approver)
    if guarded_state(restored) != change.before:
        raise ServiceError("the restored object does not have the original values")
    return "was applied, then restored to its original"


def _restore_delete(
    service: Service, cs_id: str, attempt: _Attempt, approver: Signer
) -> str | None:
    """A removed HPA is created again from its snapshot (under the rollback approval, with the
    labels it had). One still there is fenced if the DELETE's answer was lost, and loses the
    delete approval left on it (so that nobody can use it to delete the HPA later)."""
    change = attempt.change
    snapshot = _snapshot_of(service, cs_id, change)
    now = service.read_current([refs_of(change)])[0]
    if now is not None and target_of(now) == change.target:
        annotations = (now.get("metadata") or {}).get("annotations") or {}
        ours = annotations.get(APPROVAL_ANNOTATION) in attempt.tokens
        if attempt.uncertain or ours:
            try:
                now = _fence(service, cs_id, change.target, now, clear_approval=ours)
            except ClusterError as exc:
                if exc.kind != "not_found":
                    raise
                now = None  # the late DELETE won: create it again below
        if now is not None:
            if guarded_state(now) == change.before:
                return None
            raise ServiceError("someone else changed it meanwhile; it was not overwritten")
    if now is not None:
        raise ServiceError("another HPA of that name was created meanwhile; it was not overwritten")
    undo = recreate_change(snapshot, reason=f"restore after a failed apply of {cs_id}", cs_id=cs_id)
    made = _create(service, cs_id, "rollback", undo, approver, _Attempt(undo, [undo.after]))
    if guarded_state(made) != change.before:
        raise ServiceError("the re-created HPA does not have the original values")
    uid = (made.get("metadata") or {}).get("uid")
    return f"was deleted, then created again from its snapshot (new uid {uid})"


def _restore_create(
    service: Service, cs_id: str, attempt: _Attempt, approver: Signer
) -> str | None:
    """An HPA this apply created cannot be removed before it is ``MIN_AGE_TO_DELETE_SECONDS``
    old (admission refuses it): it is left, recorded in the ledger, and the report says from
    when ``rollback_changes`` removes it. A create whose answer was lost is looked for by the
    approval it carried."""
    change = attempt.change
    made = attempt.made
    if made is None:
        now = service.read_current([refs_of(change)])[0]
        annotations = ((now or {}).get("metadata") or {}).get("annotations") or {}
        if now is None or annotations.get(APPROVAL_ANNOTATION) not in attempt.tokens:
            return None  # not created by this apply
        made = now
    service.ledger.record_created(cs_id, made)
    raise _MustWaitError(
        f"this apply created it and it stays for now: the cluster refuses to remove an HPA "
        f"younger than {MIN_AGE_TO_DELETE_SECONDS // 60} minutes; from {_removable_from(made)}, "
        f"rollback_changes('{cs_id}') removes it"
    )


# --- rolling back ------------------------------------------------------------------------------


def recreate_change(snapshot: Snapshot, *, reason: str, cs_id: str) -> ResourceChange:
    """The change that creates again the HPA ``snapshot`` holds (the one ``cs_id`` removed):
    its spec (scaleTargetRef, bounds, metrics, behavior), under its name."""
    spec = snapshot.object.get("spec") or {}
    create_spec = {key: spec[key] for key in _HPA_SPEC_KEYS if key in spec}
    target = Target(
        api_version=snapshot.target.api_version,
        kind=snapshot.target.kind,
        namespace=snapshot.target.namespace,
        name=snapshot.target.name,
        uid=None,
    )
    return ResourceChange(
        target=target,
        before=None,
        after=guarded_state(snapshot.object),
        reason=reason,
        source=ROLLBACK_SOURCE + cs_id,
        create_spec=create_spec,
    )


@dataclass(frozen=True)
class Rollback:
    """The change set that undoes an applied one, and the targets left out (and why)."""

    change_set: ChangeSet
    skipped: list[str]


def rollback_change_set(service: Service, change_set_id: str, *, actor: str) -> Rollback:
    """Build (and store) the change set that undoes an applied one.

    Only what the change set wrote is undone: an updated target is rolled back to its snapshot
    while it still holds the values the change set gave it; a removed HPA is created again from
    its snapshot while no other of that name exists; a created HPA (the very object, by uid)
    is removed while it still has the values it was created with — and only once it is old
    enough (see ``MIN_AGE_TO_DELETE_SECONDS``; before that this refuses, saying from when). A
    target someone else changed since is left out (and named), so a rollback never silently
    reverts another change."""
    ledger = service.ledger
    stored = ledger.get_change_set(change_set_id)
    if stored is None:
        raise ServiceError(f"there is no change set {change_set_id}")
    if change_set_op(stored.source) == "rollback":
        raise ServiceError(
            f"{change_set_id} is itself a rollback; to make the change again, preview it again"
        )
    applied = stored.change_set()
    # Snapshots are saved right before the first write, and every object a create made is
    # recorded: they exist iff an apply started (whether it completed, failed, or its audit
    # entry could not be written).
    snapshots = {s.target.ref(): s for s in ledger.snapshots(change_set_id)}
    created = ledger.created_objects(change_set_id)
    if not snapshots and not created:
        raise ServiceError(f"change set {change_set_id} was never applied; nothing to roll back")
    try:
        lives = service.read_current([refs_of(c) for c in applied.changes])
    except ClusterError as exc:
        raise ServiceError(f"cannot read the objects to roll back: {exc}") from None
    changes: list[ResourceChange] = []
    skipped: list[str] = []
    for change, live in zip(applied.changes, lives, strict=True):
        undo = _undo(change_set_id, change, live, snapshots, created, skipped)
        if undo is not None:
            changes.append(undo)
    if not changes:
        raise ServiceError(
            f"nothing to roll back: no object still has the values {change_set_id} gave it"
            + ("" if not skipped else " (" + "; ".join(skipped[:5]) + ")")
        )
    rollback = ChangeSet(changes=changes)
    ledger.put_change_set(rollback, source=ROLLBACK_SOURCE + change_set_id)
    ledger.append_audit(
        actor=actor,
        event="rollback.proposed",
        result="ok",
        change_set_id=rollback.id,
        details={"rolls_back": change_set_id, "targets": len(changes), "skipped": skipped[:50]},
    )
    return Rollback(change_set=rollback, skipped=skipped)


def _undo(
    cs_id: str,
    change: ResourceChange,
    live: Live | None,
    snapshots: dict[str, Snapshot],
    created: Iterable[Any],
    skipped: list[str],
) -> ResourceChange | None:
    """The change that undoes one applied change, or None (``skipped`` says why, if it is
    not simply that nothing was done to it)."""
    ref = change.target.ref()
    reason = f"rollback of {cs_id}"
    source = ROLLBACK_SOURCE + cs_id
    if change.operation == "create":
        made = {c.target for c in created if c.target.ref() == ref}
        if not made:
            return None  # never created
        if live is None:
            skipped.append(f"{ref}: it was removed since; nothing to remove")
            return None
        if target_of(live) not in made:
            skipped.append(f"{ref}: another HPA of that name exists now; it was not removed")
            return None
        if guarded_state(live) != change.after:
            skipped.append(f"{ref}: it was changed since {cs_id} created it; not removed")
            return None
        refuse_young(live)
        return ResourceChange(
            target=target_of(live), before=guarded_state(live), after=None, reason=reason,
            source=source,
        )  # fmt: skip
    snapshot = snapshots.get(ref)
    if snapshot is None:
        return None  # the apply never reached it
    if change.operation == "delete":
        if live is None:
            return recreate_change(snapshot, reason=reason, cs_id=cs_id)
        if target_of(live) != snapshot.target:
            skipped.append(f"{ref}: another HPA of that name exists now; not created again")
        return None  # still there: it was never removed
    if live is None:
        raise ServiceError(f"{ref} no longer exists; it cannot be rolled back to its snapshot")
    if target_of(live) != snapshot.target:
        raise ServiceError(
            f"{ref} was deleted and recreated since the apply; it cannot be rolled back to a "
            "snapshot of another object"
        )
    before, after = guarded_state(live), guarded_state(snapshot.object)
    if before == after:
        return None
    if before != change.after:
        skipped.append(
            f"{ref}: it no longer has the values {cs_id} gave it (changed since, or never "
            "written by it); not rolled back"
        )
        return None
    return ResourceChange(target=snapshot.target, before=before, after=after, reason=reason,
                          source=source)  # fmt: skip
