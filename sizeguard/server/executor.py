"""Applying an approved change set, and restoring the originals when that fails midway.

The order is the safety argument, so it is spelled out here:

1. the approval is consumed in the ledger first (single use, serialised by SQLite: of two
   concurrent applies exactly one gets it; a refusal later still spends it — ask again);
2. the stored change set must still hash to its id, and OPA must still allow it;
3. every live object is read again: another uid (deleted and recreated) or a guarded state
   other than ``before`` (drift) refuses the whole apply before anything is written;
4. the originals are snapshotted in the ledger;
5. each target is patched with its own signed approval (bound to the change-set id, the uid,
   the generation, ``from`` and ``to``), and the stored result must equal ``after``;
6. on any failure, what was already written is restored from the snapshots, newest first,
   under the same human approval (signed as ``rollback`` of this change set), and the report
   says target by target what happened.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import structlog

from sizeguard.approvals import mint_approval
from sizeguard.changes import ChangeSet, ResourceChange, guarded_state, target_of
from sizeguard.cluster import ClusterError, patch_for
from sizeguard.ledger import ApprovalRefusedError, LedgerError
from sizeguard.server.models import Execution, TargetOutcome
from sizeguard.server.service import (
    ROLLBACK_SOURCE,
    Service,
    ServiceError,
    change_set_op,
)

__all__ = ["BeforePatch", "apply_change_set", "rollback_change_set"]

# A seam for tests of partial failure: called before each target is patched.
BeforePatch = Callable[[ResourceChange], None]
Op = Literal["apply", "rollback"]

_log = structlog.get_logger("sizeguard.executor")


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
    written: list[tuple[ResourceChange, dict[str, Any]]] = []
    failure: str | None = None
    for change, live in zip(change_set.changes, lives, strict=True):
        ref = change.target.ref()
        try:
            if before_patch is not None:
                before_patch(change)
            result = _patch(service, change_set_id, op, change, live, approval.approver)
        except ClusterError as exc:
            failure = f"{ref}: {exc}"
            outcomes[ref] = TargetOutcome(target=ref, result="not_applied", message=str(exc))
            _audit_target(service, actor, change_set_id, op, change, "failed", str(exc))
            break
        written.append((change, live))
        if guarded_state(result) != change.after:
            failure = f"{ref}: the stored object does not have the approved values"
            outcomes[ref] = TargetOutcome(target=ref, result="not_applied", message=failure)
            _audit_target(service, actor, change_set_id, op, change, "mismatch", failure)
            break
        outcomes[ref] = TargetOutcome(target=ref, result="applied", message="patched and verified")
        _audit_target(service, actor, change_set_id, op, change, "applied", "")

    if failure is None:
        ledger.append_audit(
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

    restored_all = _restore(service, change_set_id, written, outcomes, actor, approval.approver)
    for change in change_set.changes:
        ref = change.target.ref()
        outcomes.setdefault(
            ref, TargetOutcome(target=ref, result="unchanged", message="not attempted")
        )
    status: Literal["failed_restored", "failed_not_restored"] = (
        "failed_restored" if restored_all else "failed_not_restored"
    )
    ledger.append_audit(
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
        "ledger's snapshots"
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
    assert service.key is not None
    generation = (live.get("metadata") or {}).get("generation")
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
    return service.cluster.apply_patch(change.target, patch_for(change, token, live=live)).object


def _audit_target(
    service: Service, actor: str, cs_id: str, op: Op, change: ResourceChange, result: str, msg: str
) -> None:
    service.ledger.append_audit(
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
    written: list[tuple[ResourceChange, dict[str, Any]]],
    outcomes: dict[str, TargetOutcome],
    actor: str,
    approver: str,
) -> bool:
    """Put every written target back to its snapshot, newest first. True if all were."""
    ok = True
    for change, _live in reversed(written):
        ref = change.target.ref()
        snapshot = service.ledger.get_snapshot(cs_id, change.target)
        try:
            if snapshot is None:
                raise ServiceError("no snapshot")
            original = guarded_state(snapshot.object)
            now = service.cluster.read_object(change.target)
            current = guarded_state(now)
            if current != original:
                undo = ResourceChange(
                    target=change.target,
                    before=current,
                    after=original,
                    reason=f"restore after a failed apply of {cs_id}",
                    source=ROLLBACK_SOURCE + cs_id,
                )
                restored = _patch(service, cs_id, "rollback", undo, now, approver)
                if guarded_state(restored) != original:
                    raise ServiceError("the restored object does not have the original values")
        except (ClusterError, ServiceError, ValueError) as exc:
            ok = False
            outcomes[ref] = TargetOutcome(
                target=ref, result="restore_failed", message=f"could not restore: {exc}"
            )
            _audit_target(service, actor, cs_id, "rollback", change, "restore_failed", str(exc))
            continue
        outcomes[ref] = TargetOutcome(
            target=ref, result="restored", message="was applied, then restored to its original"
        )
        _audit_target(service, actor, cs_id, "rollback", change, "restored", "")
    return ok


def rollback_change_set(service: Service, change_set_id: str, *, actor: str) -> ChangeSet:
    """Build (and store) the change set that restores the snapshots of an applied one."""
    ledger = service.ledger
    if ledger.get_change_set(change_set_id) is None:
        raise ServiceError(f"there is no change set {change_set_id}")
    applied = [
        e for e in ledger.audit_entries(change_set_id=change_set_id) if e.event == "apply.completed"
    ]
    if not applied:
        raise ServiceError(f"change set {change_set_id} was never applied; nothing to roll back")
    snapshots = ledger.snapshots(change_set_id)
    if not snapshots:
        raise ServiceError(f"change set {change_set_id} has no snapshots to restore")
    refs = [(s.target.kind, s.target.namespace, s.target.name) for s in snapshots]
    try:
        lives = service.read_targets(refs)
    except ClusterError as exc:
        raise ServiceError(f"cannot read the objects to roll back: {exc}") from None
    changes = []
    for snapshot, live in zip(snapshots, lives, strict=True):
        if target_of(live) != snapshot.target:
            raise ServiceError(
                f"{snapshot.target.ref()} was deleted and recreated since the apply; it cannot be "
                "rolled back to a snapshot of another object"
            )
        before, after = guarded_state(live), guarded_state(snapshot.object)
        if before == after:
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
        raise ServiceError(f"nothing to roll back: every object of {change_set_id} is as before it")
    rollback = ChangeSet(changes=changes)
    ledger.put_change_set(rollback, source=ROLLBACK_SOURCE + change_set_id)
    ledger.append_audit(
        actor=actor,
        event="rollback.proposed",
        result="ok",
        change_set_id=rollback.id,
        details={"rolls_back": change_set_id, "targets": len(changes)},
    )
    return rollback
