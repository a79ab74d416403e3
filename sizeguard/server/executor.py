"""Applying an approved change set, and restoring the originals when that fails midway.

The order is the safety argument, so it is spelled out here:

1. the approval is consumed in the ledger first (single use, serialised by SQLite: of two
   concurrent applies exactly one gets it; a refusal later still spends it — ask again);
   Using it cancels any other pending approval of the same change set;
2. the stored change set must still hash to its id, OPA must still allow it, and if the
   policy now requires typed namespaces (production or critical targets), the human must
   have typed them when approving;
3. every live object is read again: another uid (deleted and recreated) or a guarded state
   other than ``before`` (drift) refuses the whole apply before anything is written;
4. the originals are snapshotted in the ledger;
5. each target is patched with its own signed approval (bound to the change-set id, the uid,
   the generation, ``from`` and ``to``), conditional on the resourceVersion read in step 3
   (a write in between is a 409, not a silent overwrite), and the stored result must equal
   ``after``;
6. on any failure — an API error, a timeout whose patch may or may not have landed, or any
   unexpected exception — every target already attempted is read again and put back to
   ``before`` under the same human approval (signed as ``rollback`` of this change set), but
   only if it holds what sizeguard wrote: a value someone else wrote meanwhile is never
   overwritten. A target whose patch's answer was lost is fenced (a conditional write of a
   non-guarded annotation), so that the patch cannot land after the report. The report
   says target by target what happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import structlog

from sizeguard.approvals import mint_approval
from sizeguard.changes import (
    ChangeSet,
    GuardedState,
    ResourceChange,
    Target,
    guarded_state,
    target_of,
)
from sizeguard.cluster import ClusterError, patch_for
from sizeguard.ledger import ApprovalRefusedError, LedgerError
from sizeguard.server.models import Execution, TargetOutcome
from sizeguard.server.service import (
    ROLLBACK_SOURCE,
    Service,
    ServiceError,
    change_set_op,
    typed_namespaces,
)

__all__ = ["FENCE_ANNOTATION", "BeforePatch", "Rollback", "apply_change_set", "rollback_change_set"]

# A seam for tests of partial failure: called before each target is patched.
BeforePatch = Callable[[ResourceChange], None]
Op = Literal["apply", "rollback"]

_log = structlog.get_logger("sizeguard.executor")

# A conditional patch is retried this often when only the resourceVersion moved.
_CONFLICT_RETRIES: Final = 5
_BACKOFF_SECONDS: Final = 0.05
# Written (conditionally) on an object whose patch's answer was lost, so that the patch can
# no longer land after the restore; not guarded, so the webhook admits it at once.
FENCE_ANNOTATION: Final = "sizeguard.io/fenced-by"
# API answers that mean the patch was not stored. Anything else (a timeout, a dropped
# connection, a 5xx, an exception of our own) may have come after the write landed.
_REFUSED_BEFORE_WRITING: Final = frozenset(
    {"not_found", "forbidden", "denied", "conflict", "invalid", "unauthorized", "unsupported"}
)


class NotSentError(ServiceError):
    """A patch stopped before its request left: nothing can have been written."""


def _refused(cs_id: str, op: Op, message: str) -> Execution:
    return Execution(change_set_id=cs_id, op=op, status="refused", targets=[], message=message)


def apply_change_set(
    service: Service, change_set_id: str, *, actor: str, before_patch: BeforePatch | None = None
) -> Execution:
    """Apply a stored, approved change set (see the module docstring for the order)."""
    if service.read_only or service.key is None:
        raise ServiceError("this sizeguard server is read-only: it applies nothing")
    stored = service.ledger.get_change_set(change_set_id)
    if stored is None:
        raise ServiceError(
            f"there is no change set {change_set_id}: preview_changes creates change sets, and "
            "only a human can approve one"
        )
    op = change_set_op(stored.source)
    ledger = service.ledger
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
        return _refused(
            change_set_id,
            op,
            f"not applied: {exc}. Only a human can approve: request_confirmation("
            f"'{change_set_id}') or `sizeguard approve {change_set_id}` in a terminal",
        )
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

    refs = [(c.target.kind, c.target.namespace, c.target.name) for c in change_set.changes]
    try:
        lives = service.read_targets(refs)
    except ClusterError as exc:
        return _refuse(service, change_set_id, op, actor, "read", str(exc))
    drift = _drift(change_set, lives)
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
    for live in lives:
        ledger.save_snapshot(change_set_id, live)

    outcomes: dict[str, TargetOutcome] = {}
    # Targets a patch was sent to, with the guarded states sizeguard may have left them in.
    attempted: list[tuple[ResourceChange, list[GuardedState]]] = []
    failure: str | None = None
    uncertain: frozenset[str] = frozenset()
    for change, live in zip(change_set.changes, lives, strict=True):
        ref = change.target.ref()
        sent = False
        try:
            if before_patch is not None:
                before_patch(change)
            attempted.append((change, [change.after]))  # a failed patch may still have landed
            sent = True
            result = _patch_fresh(service, change_set_id, op, change, live, approval.approver)
            stored_state = guarded_state(result)
        except Exception as exc:  # any failure midway ends in a restore, never a half-apply
            message = _describe(exc)
            refused = isinstance(exc, ClusterError) and exc.kind in _REFUSED_BEFORE_WRITING
            if sent and (refused or isinstance(exc, NotSentError)):
                attempted.pop()  # the request never left, or was answered: nothing stored
            elif sent:
                uncertain = frozenset({ref})  # it may have landed, or may still land
            failure = f"{ref}: {message}"
            outcomes[ref] = TargetOutcome(target=ref, result="not_applied", message=message)
            _audit_target(service, actor, change_set_id, op, change, "failed", message)
            break
        if stored_state != change.after:
            attempted[-1] = (change, [change.after, stored_state])
            failure = f"{ref}: the stored object does not have the approved values"
            outcomes[ref] = TargetOutcome(target=ref, result="not_applied", message=failure)
            _audit_target(service, actor, change_set_id, op, change, "mismatch", failure)
            break
        outcomes[ref] = TargetOutcome(target=ref, result="applied", message="patched and verified")
        _audit_target(service, actor, change_set_id, op, change, "applied", "")

    if failure is None:
        _best_effort_audit(
            service,
            actor=actor,
            event=f"{op}.completed",
            result="applied",
            change_set_id=change_set_id,
            details={"targets": len(change_set.changes), "approval_id": approval.id},
        )
        hint = (
            None
            if op == "rollback"
            else f"to undo: rollback_changes('{change_set_id}') (needs its own confirmation)"
        )
        return Execution(
            change_set_id=change_set_id,
            op=op,
            status="applied",
            targets=[outcomes[c.target.ref()] for c in change_set.changes],
            message=f"{op}: {len(change_set.changes)} object(s) changed and verified",
            rollback_hint=hint,
        )

    restored_all = _restore(
        service, change_set_id, attempted, outcomes, actor, approval.approver, uncertain
    )
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


def _best_effort_audit(service: Service, **entry: Any) -> None:
    """An audit entry written during an apply: a failing ledger must not stop the restore."""
    try:
        service.ledger.append_audit(**entry)
    except Exception as exc:
        _log.error("executor.audit_failed", audit_event=entry.get("event"), error=str(exc)[:300])


def _drift(change_set: ChangeSet, lives: list[dict[str, Any]]) -> list[str]:
    problems = []
    for change, live in zip(change_set.changes, lives, strict=True):
        ref = change.target.ref()
        try:
            if target_of(live) != change.target:
                problems.append(f"{ref} was deleted and recreated (another uid)")
            elif guarded_state(live) != change.before:
                problems.append(f"{ref} no longer has the values the change set starts from")
        except ValueError as exc:
            problems.append(f"{ref}: {exc}")
    return problems


def _patch(
    service: Service,
    cs_id: str,
    op: Op,
    change: ResourceChange,
    live: dict[str, Any],
    approver: str,
) -> dict[str, Any]:
    """Sign and send one conditional patch. Raises :class:`NotSentError` for anything that
    stops it before the request leaves (nothing can have been written then)."""
    assert service.key is not None
    resource_version = _resource_version(live, change.target)
    generation = (live.get("metadata") or {}).get("generation")
    try:
        token = mint_approval(
            service.key,
            change_set_id=cs_id,
            op=op,
            target=change.target,
            before=change.before,
            after=change.after,
            subject=approver,
            generation=generation if isinstance(generation, int) else None,
        )
        body = patch_for(change, token, live=live, resource_version=resource_version)
    except ValueError as exc:
        raise NotSentError(f"{change.target.ref()}: {exc}; nothing was written") from None
    return service.cluster.apply_patch(change.target, body).object


def _resource_version(obj: dict[str, Any], target: Target) -> str:
    """The version a conditional write of ``obj`` is made against (sizeguard writes nothing
    unconditionally)."""
    version = (obj.get("metadata") or {}).get("resourceVersion")
    if not isinstance(version, str) or not version:
        raise NotSentError(
            f"{target.ref()} came without a resourceVersion; sizeguard writes only "
            "conditionally, so nothing was written"
        )
    return version


def _patch_fresh(
    service: Service,
    cs_id: str,
    op: Op,
    change: ResourceChange,
    live: dict[str, Any],
    approver: str,
) -> dict[str, Any]:
    """:func:`_patch` conditional on ``live``'s resourceVersion. Controllers write status all
    the time, which moves the resourceVersion too: on a 409 the object is read again and the
    patch retried (signed for its new generation) while its guarded state is still exactly
    ``change.before``; anything else is someone else's write, and nothing is written."""
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
            return _patch(service, cs_id, op, change, live, approver)
        except ClusterError as exc:
            if exc.kind != "conflict":
                raise
    raise ClusterError(
        "conflict",
        f"{change.target.ref()} kept changing (resourceVersion) during {_CONFLICT_RETRIES} "
        "attempts; nothing was written to it",
        status=409,
    )


def _fence(service: Service, cs_id: str, target: Target, now: dict[str, Any]) -> dict[str, Any]:
    """Make sure a patch whose answer was lost can no longer land; return the object then.

    ``now`` still holds the original values, but a patch that timed out may still be in
    flight. Every sizeguard patch is conditional on the resourceVersion it was checked
    against, so a conditional write of a non-guarded annotation (admitted by the webhook at
    once) moves the resourceVersion on and the late patch gets a 409. If the fence gets the
    409 instead and the guarded values changed, someone (the late patch) wrote first: that
    object is returned for the caller to judge like any other."""
    original = guarded_state(now)
    for attempt in range(_CONFLICT_RETRIES):
        version = _resource_version(now, target)
        body = {"metadata": {"resourceVersion": version, "annotations": {FENCE_ANNOTATION: cs_id}}}
        try:
            return service.cluster.apply_patch(target, body).object
        except ClusterError as exc:
            if exc.kind != "conflict":
                raise
        now = service.cluster.read_object(target)
        if guarded_state(now) != original:
            return now
        time.sleep(_BACKOFF_SECONDS * 2**attempt)
    raise ServiceError("it kept changing; sizeguard cannot be sure a late patch will not land")


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


def _restore(
    service: Service,
    cs_id: str,
    attempted: list[tuple[ResourceChange, list[GuardedState]]],
    outcomes: dict[str, TargetOutcome],
    actor: str,
    approver: str,
    uncertain: frozenset[str] = frozenset(),
) -> bool:
    """Put every attempted target back to ``before``, newest first. True if all are.

    A target is read again first: already at ``before`` needs nothing (if its patch's answer
    was lost — ``uncertain`` — it is fenced first so the patch cannot land later); holding a
    state sizeguard wrote is patched back under the same approval; any other state was
    written by someone else meanwhile and is left alone (reported)."""
    ok = True
    for change, ours in reversed(attempted):
        ref = change.target.ref()
        try:
            snapshot = service.ledger.get_snapshot(cs_id, change.target)
            if snapshot is None or guarded_state(snapshot.object) != change.before:
                raise ServiceError("its snapshot is missing or does not match the change set")
            now = service.cluster.read_object(change.target)
            if target_of(now) != change.target:
                raise ServiceError("it was deleted or recreated meanwhile; nothing was written")
            current = guarded_state(now)
            if current == change.before and ref in uncertain:
                now = _fence(service, cs_id, change.target, now)
                current = guarded_state(now)
            if current == change.before:
                if outcomes[ref].result != "not_applied":
                    outcomes[ref] = TargetOutcome(
                        target=ref,
                        result="restored",
                        message="was applied, then found back at its original values",
                    )
                continue
            if current not in ours:
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
        except Exception as exc:
            message = _describe(exc)
            ok = False
            outcomes[ref] = TargetOutcome(
                target=ref, result="restore_failed", message=f"could not restore: {message}"
            )
            _audit_target(service, actor, cs_id, "rollback", change, "restore_failed", message)
            continue
        outcomes[ref] = TargetOutcome(
            target=ref, result="restored", message="was applied, then restored to its original"
        )
        _audit_target(service, actor, cs_id, "rollback", change, "restored", "")
    return ok


@dataclass(frozen=True)
class Rollback:
    """The change set that undoes an applied one, and the targets left out (and why)."""

    change_set: ChangeSet
    skipped: list[str]


def rollback_change_set(service: Service, change_set_id: str, *, actor: str) -> Rollback:
    """Build (and store) the change set that restores the snapshots of an applied one.

    Only what the change set wrote is undone: a target is rolled back while it still holds
    the values the change set gave it. One someone else changed since is left out (and
    named), so a rollback never silently reverts another change."""
    ledger = service.ledger
    stored = ledger.get_change_set(change_set_id)
    if stored is None:
        raise ServiceError(f"there is no change set {change_set_id}")
    if change_set_op(stored.source) == "rollback":
        raise ServiceError(
            f"{change_set_id} is itself a rollback; to make the change again, preview it again"
        )
    applied = {c.target: c.after for c in stored.change_set().changes}
    # Snapshots are saved right before the first patch: they exist iff an apply started
    # (whether it completed, failed, or its audit entry could not be written).
    snapshots = ledger.snapshots(change_set_id)
    if not snapshots:
        raise ServiceError(f"change set {change_set_id} was never applied; nothing to roll back")
    refs = [(s.target.kind, s.target.namespace, s.target.name) for s in snapshots]
    try:
        lives = service.read_targets(refs)
    except ClusterError as exc:
        raise ServiceError(f"cannot read the objects to roll back: {exc}") from None
    changes = []
    skipped = []
    for snapshot, live in zip(snapshots, lives, strict=True):
        if target_of(live) != snapshot.target:
            raise ServiceError(
                f"{snapshot.target.ref()} was deleted and recreated since the apply; it cannot be "
                "rolled back to a snapshot of another object"
            )
        before, after = guarded_state(live), guarded_state(snapshot.object)
        if before == after:
            continue
        if before != applied.get(snapshot.target):
            skipped.append(
                f"{snapshot.target.ref()}: it no longer has the values {change_set_id} gave it "
                "(changed since, or never written by it); not rolled back"
            )
            continue
        changes.append(
            ResourceChange(
                target=snapshot.target,
                before=before,
                after=after,
                reason=f"rollback of {change_set_id}",
                source=ROLLBACK_SOURCE + change_set_id,
            )
        )
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
