"""What the MCP tools do, without MCP: read the cluster, build and preview change sets, record
human approvals, and report. Applying lives in :mod:`sizeguard.server.executor`.

Every method is synchronous except the Prometheus-backed ones; the tools call the synchronous
ones from a worker thread. Nothing here trusts its caller: change sets are rebuilt from live
objects, ids are recomputed, and the policy decision is asked of OPA again at each step.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import structlog

from sizeguard.approvals import SigningKey
from sizeguard.changes import (
    ChangeSet,
    ContainerResources,
    GuardedState,
    ResourceChange,
    describe_changes,
    guarded_state,
    target_of,
)
from sizeguard.cluster import Cluster, ClusterError, ClusterState, patch_for
from sizeguard.cost import PriceModel
from sizeguard.ledger import Approval, Ledger
from sizeguard.policy import ChangesetDecision, PolicyClient
from sizeguard.quantities import cpu_millicores, memory_bytes
from sizeguard.server.models import (
    CostDelta,
    DryRun,
    Edit,
    PolicyView,
    Preview,
    TargetDiff,
)

__all__ = ["MAX_TARGETS", "Service", "ServiceError", "change_set_op", "typed_namespaces"]

MAX_TARGETS: Final = 1000
ROLLBACK_SOURCE: Final = "rollback:"
_TYPED_CODES: Final = frozenset({"production_namespace", "critical_workload"})
_SIZE_CODES: Final = frozenset({"increase_too_large", "decrease_too_large"})
_CODE_RE: Final = re.compile(r"\[([a-z_]+)\]")

_log = structlog.get_logger("sizeguard.server")


class ServiceError(Exception):
    """A refusal or failure the assistant should read: one clear message, nothing secret."""


def change_set_op(source: str) -> Literal["apply", "rollback"]:
    """A change set made by ``rollback_changes`` is approved and applied as a rollback."""
    return "rollback" if source.startswith(ROLLBACK_SOURCE) else "apply"


def typed_namespaces(decision: ChangesetDecision) -> list[str]:
    """The namespaces a human must type: those of production and critical targets."""
    found = set()
    for finding in decision.warnings:
        if finding.code in _TYPED_CODES and finding.target.count("/") == 2:
            found.add(finding.target.split("/")[1])
    if decision.typed_confirmation_required and not found:
        raise ServiceError(
            "the policy requires a typed confirmation but names no namespace; refusing"
        )
    return sorted(found)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _edit_value(raw: str | None, current: int | None, parse: Callable[[object], int]) -> int | None:
    if raw is None:
        return current
    if raw.strip().lower() == "unset":
        return None
    try:
        value = parse(raw.strip())
    except ValueError as exc:
        raise ServiceError(f"{raw!r} is not a valid quantity: {exc}") from None
    if value < 0:
        raise ServiceError(f"{raw!r} is negative")
    return value


def apply_edit(before: GuardedState, edit: Edit, kind: str) -> GuardedState:
    """``before`` with one edit applied; refuses edits that do not fit the object."""
    where = f"{kind}/{edit.namespace}/{edit.name}"
    resources = (edit.cpu_request, edit.cpu_limit, edit.memory_request, edit.memory_limit)
    update: dict[str, Any] = {}
    if kind == "HorizontalPodAutoscaler":
        if edit.container is not None or any(v is not None for v in resources):
            raise ServiceError(f"{where}: an HPA has no containers; edit its workload instead")
        if edit.replicas is not None:
            raise ServiceError(f"{where}: set min_replicas/max_replicas on an HPA, not replicas")
        for name in ("min_replicas", "max_replicas"):
            if getattr(edit, name) is not None:
                update[name] = getattr(edit, name)
        return before.model_copy(update=update)
    if edit.min_replicas is not None or edit.max_replicas is not None:
        raise ServiceError(f"{where}: min_replicas/max_replicas belong to an HPA")
    if edit.replicas is not None:
        if kind == "DaemonSet":
            raise ServiceError(f"{where}: a DaemonSet has no replicas")
        update["replicas"] = edit.replicas
    if any(v is not None for v in resources):
        if edit.container is None:
            raise ServiceError(f"{where}: name the container to resize")
        group = (
            "containers"
            if edit.container in before.containers
            else "init_containers"
            if edit.container in before.init_containers
            else None
        )
        if group is None:
            names = sorted(before.containers) + sorted(before.init_containers)
            raise ServiceError(
                f"{where} has no container {edit.container!r} (it has: {', '.join(names)})"
            )
        current: ContainerResources = getattr(before, group)[edit.container]
        resized = ContainerResources(
            cpu_request=_edit_value(edit.cpu_request, current.cpu_request, cpu_millicores),
            cpu_limit=_edit_value(edit.cpu_limit, current.cpu_limit, cpu_millicores),
            memory_request=_edit_value(edit.memory_request, current.memory_request, memory_bytes),
            memory_limit=_edit_value(edit.memory_limit, current.memory_limit, memory_bytes),
        )
        update[group] = {**getattr(before, group), edit.container: resized}
    elif edit.container is not None:
        raise ServiceError(f"{where}: nothing to change for container {edit.container!r}")
    return before.model_copy(update=update)


def pod_cost(state: GuardedState, prices: PriceModel) -> float:
    """Monthly price of one pod's requests (regular containers; unset counts as 0)."""
    cpu = sum(c.cpu_request or 0 for c in state.containers.values()) / 1000
    memory = sum(c.memory_request or 0 for c in state.containers.values())
    return prices.monthly(cpu, memory)


def _pods(state: GuardedState, live: dict[str, Any]) -> int:
    if state.replicas is not None:
        return state.replicas
    desired = (live.get("status") or {}).get("desiredNumberScheduled")
    return desired if isinstance(desired, int) and desired >= 0 else 1


@dataclass
class Service:
    """One cluster, one OPA, one ledger and (unless read-only) one signing key."""

    cluster: Cluster
    policy: PolicyClient
    ledger: Ledger
    key: SigningKey | None
    prices: PriceModel = field(default_factory=PriceModel)
    read_only: bool = False
    kubeconfig: Path | None = None
    context: str | None = None
    prometheus_url: str | None = None
    workers: int = 8

    # --- reading ----------------------------------------------------------------------------

    def cluster_state(self, namespaces: Sequence[str] | None = None) -> ClusterState:
        return self.cluster.cluster_state(namespaces or None)

    def read_targets(self, refs: Iterable[tuple[str, str, str]]) -> list[dict[str, Any]]:
        """Live objects for (kind, namespace, name), read concurrently, in the given order."""
        refs = list(refs)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda ref: self.cluster.read_live(*ref), refs))

    # --- building change sets ---------------------------------------------------------------

    def change_set_from_edits(self, edits: Sequence[Edit], source: str) -> ChangeSet:
        if not edits:
            raise ServiceError("no edits: say which object to change and how")
        grouped: dict[tuple[str, str, str], list[Edit]] = {}
        for edit in edits:
            grouped.setdefault((edit.kind, edit.namespace, edit.name), []).append(edit)
        if len(grouped) > MAX_TARGETS:
            raise ServiceError(f"at most {MAX_TARGETS} objects per change set")
        self._refuse_replicas_under_hpa([e for e in edits if e.replicas is not None])
        lives = self._read_all(list(grouped))
        changes = []
        for (kind, _ns, _name), live in zip(grouped, lives, strict=True):
            before = self._guarded(live)
            after = before
            reasons = []
            for edit in grouped[(kind, _ns, _name)]:
                after = apply_edit(after, edit, kind)
                if edit.reason:
                    reasons.append(edit.reason)
            if after == before:
                continue
            changes.append(self._change(live, before, after, "; ".join(reasons), source))
        if not changes:
            raise ServiceError("the edits change nothing: the objects already have those values")
        return ChangeSet(changes=changes)

    def _refuse_replicas_under_hpa(self, edits: Sequence[Edit]) -> None:
        """The HPA owns the replicas of the workload it scales: a change would be undone."""
        if not edits:
            return
        try:
            state = self.cluster.cluster_state(sorted({e.namespace for e in edits}))
        except ClusterError as exc:
            raise ServiceError(str(exc)) from None
        scaled = {
            (w.target.kind, w.target.namespace, w.target.name): w.hpa for w in state.workloads
        }
        for edit in edits:
            hpa = scaled.get((edit.kind, edit.namespace, edit.name))
            if hpa is not None:
                raise ServiceError(
                    f"{edit.kind}/{edit.namespace}/{edit.name} is scaled by the HPA {hpa}; "
                    "propose new min_replicas/max_replicas for the HPA with preview_changes instead"
                )

    def _read_all(self, refs: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
        try:
            return self.read_targets(refs)
        except ClusterError as exc:
            raise ServiceError(str(exc)) from None

    @staticmethod
    def _guarded(live: dict[str, Any]) -> GuardedState:
        try:
            return guarded_state(live)
        except ValueError as exc:
            raise ServiceError(f"sizeguard cannot manage this object: {exc}") from None

    @staticmethod
    def _change(
        live: dict[str, Any], before: GuardedState, after: GuardedState, reason: str, source: str
    ) -> ResourceChange:
        try:
            return ResourceChange(
                target=target_of(live),
                before=before,
                after=after,
                reason=reason[:4096],
                source=source,
            )
        except ValueError as exc:
            raise ServiceError(f"not a valid change: {exc}") from None

    def change_set_from_recommendations(
        self, scans: Sequence[dict[str, Any]], source: str
    ) -> ChangeSet:
        """A change set from krr-schema scans: each container's defined recommendation.

        ``"?"`` (undefined) keeps the current value; ``None`` means "unset" (krr's simple
        strategy recommends no CPU limit). Values are taken from the report as numbers and
        checked like any other input: finite, not negative."""
        wanted: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
        for scan in scans:
            obj = scan.get("object") or {}
            key = (str(obj.get("kind")), str(obj.get("namespace")), str(obj.get("name")))
            if key[0] not in ("Deployment", "StatefulSet", "DaemonSet"):
                continue
            wanted.setdefault(key, {})[str(obj.get("container"))] = scan.get("recommended") or {}
        if not wanted:
            raise ServiceError("no recommendations to apply (nothing matched the filter)")
        lives = self._read_all(list(wanted))
        changes = []
        for key, live in zip(wanted, lives, strict=True):
            before = self._guarded(live)
            containers = dict(before.containers)
            for container, recommended in wanted[key].items():
                if container not in containers:
                    continue
                containers[container] = _recommended(containers[container], recommended)
            after = before.model_copy(update={"containers": containers})
            if after != before:
                changes.append(
                    self._change(live, before, after, "krr-style recommendation", source)
                )
        if not changes:
            raise ServiceError("the recommendations change nothing")
        return ChangeSet(changes=changes)

    # --- policy -----------------------------------------------------------------------------

    def decide(self, change_set: ChangeSet) -> ChangesetDecision:
        """OPA's change-set decision with fresh cluster context (fail closed)."""
        namespaces = sorted({c.target.namespace for c in change_set.changes})
        try:
            state = self.cluster.cluster_state(namespaces)
        except ClusterError as exc:
            raise ServiceError(f"cannot read the cluster context for the policy: {exc}") from None
        context = state.policy_context()
        context["now"] = _now_iso()
        policy_input = {
            # A rollback (built by the server from its snapshots) is marked for the policy,
            # which then only warns about its size; see changeset.rego ``restores``.
            "changes": [
                c.model_dump(mode="json", by_alias=True) | {"op": change_set_op(c.source)}
                for c in change_set.changes
            ],
            "context": context,
        }
        return self.policy.changeset_decision(policy_input)

    # --- preview ----------------------------------------------------------------------------

    def preview(self, change_set: ChangeSet, *, actor: str, source: str) -> Preview:
        """Store the change set, ask the policy, dry-run every patch through the apiserver."""
        if len(change_set.changes) > MAX_TARGETS:
            raise ServiceError(f"at most {MAX_TARGETS} objects per change set")
        stored = self.ledger.put_change_set(change_set, source=source)
        decision = self.decide(change_set)
        lives = self._read_all(
            [(c.target.kind, c.target.namespace, c.target.name) for c in change_set.changes]
        )
        drifted = [
            c.target.ref()
            for c, live in zip(change_set.changes, lives, strict=True)
            if target_of(live) != c.target or self._guarded(live) != c.before
        ]
        if drifted:
            raise ServiceError(
                "the cluster changed while the change set was built ("
                + ", ".join(drifted[:5])
                + "); preview again"
            )
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            dry_runs = list(pool.map(self._dry_run, change_set.changes, lives))
        diff = []
        before_total = after_total = 0.0
        for change, live in zip(change_set.changes, lives, strict=True):
            cost_before = pod_cost(change.before, self.prices) * _pods(change.before, live)
            cost_after = pod_cost(change.after, self.prices) * _pods(change.after, live)
            before_total += cost_before
            after_total += cost_after
            diff.append(
                TargetDiff(
                    target=change.target.ref(),
                    lines=describe_changes(change.before, change.after),
                    monthly_cost_before=round(cost_before, 2),
                    monthly_cost_after=round(cost_after, 2),
                )
            )
        typed = typed_namespaces(decision) if decision.allowed else []
        policy = PolicyView(
            allowed=decision.allowed,
            risk=decision.risk,
            violations=decision.violations,
            warnings=decision.warnings,
            requires=decision.requires,
        )
        cost = CostDelta(
            monthly_before=round(before_total, 2),
            monthly_after=round(after_total, 2),
            monthly_delta=round(after_total - before_total, 2),
        )
        rejected = [d for d in dry_runs if not d.admitted]
        if not decision.allowed:
            next_step = "the policy denies this change set; change it and preview again"
        elif rejected:
            next_step = (
                "the apiserver refused the dry run of some targets; fix them and preview again"
            )
        else:
            next_step = (
                f"ask the human to approve it: request_confirmation('{stored.id}'), "
                f"then apply_changes('{stored.id}')"
            )
        preview = Preview(
            change_set_id=stored.id,
            targets=len(change_set.changes),
            diff=diff,
            policy=policy,
            dry_run=dry_runs,
            cost=cost,
            confirmation="",
            typed_confirmation=typed,
            next_step=next_step,
        )
        preview = preview.model_copy(update={"confirmation": confirmation_text(preview, "apply")})
        self.ledger.append_audit(
            actor=actor,
            event="change_set.previewed",
            result="allowed" if decision.allowed and not rejected else "denied",
            change_set_id=stored.id,
            details={
                "targets": len(change_set.changes),
                "risk": decision.risk,
                "violations": [v.code for v in decision.violations][:50],
                "dry_run_rejected": [d.target for d in rejected][:50],
                "source": source,
            },
        )
        return preview

    def _dry_run(self, change: ResourceChange, live: dict[str, Any]) -> DryRun:
        ref = change.target.ref()
        try:
            result = self.cluster.apply_patch(
                change.target, patch_for(change, None, live=live), dry_run=True
            )
        except ClusterError as exc:
            codes = set(_CODE_RE.findall(str(exc)))
            if (
                exc.kind == "denied"
                and change_set_op(change.source) == "rollback"
                and codes
                and codes <= _SIZE_CODES
            ):
                # The unsigned dry run is held to the size limits; the signed rollback is not
                # (admission relaxes them for a verified op "rollback"): a warning, not a stop.
                note = (
                    "sizeguard: the unsigned dry run of this rollback exceeds the size limits ("
                    + ", ".join(sorted(codes))
                    + "); the signed rollback may, and the policy warns about it instead"
                )
                return DryRun(target=ref, admitted=True, warnings=[*exc.warnings, note])
            return DryRun(target=ref, admitted=False, warnings=list(exc.warnings), error=str(exc))
        if guarded_state(result.object) != change.after:
            return DryRun(
                target=ref,
                admitted=False,
                warnings=result.warnings,
                error="the dry run did not produce the proposed values (defaulting or a "
                "mutating webhook changed them)",
            )
        return DryRun(target=ref, admitted=True, warnings=result.warnings)

    def stored_preview(self, change_set_id: str, *, actor: str) -> tuple[Preview, str]:
        """The preview of a change set already in the ledger (re-evaluated now) and its source."""
        stored = self.ledger.get_change_set(change_set_id)
        if stored is None:
            raise ServiceError(
                f"there is no change set {change_set_id}; preview_changes creates one"
            )
        change_set = stored.change_set()  # raises if the stored content was modified
        return self.preview(change_set, actor=actor, source=stored.source), stored.source

    # --- approvals --------------------------------------------------------------------------

    def approve(
        self,
        change_set_id: str,
        *,
        approver: str,
        typed: str | None,
        channel: str,
    ) -> Approval:
        """Record a human's approval after checking the policy (again) and the typed text."""
        if self.read_only:
            raise ServiceError("this sizeguard server is read-only: it records no approvals")
        preview, source = self.stored_preview(change_set_id, actor=approver)
        if not preview.policy.allowed:
            raise ServiceError("the policy denies this change set: " + _violations(preview))
        if any(not d.admitted for d in preview.dry_run):
            raise ServiceError(
                "the apiserver refused the dry run of: "
                + ", ".join(d.target for d in preview.dry_run if not d.admitted)
            )
        check_typed(preview.typed_confirmation, typed)
        op = change_set_op(source)
        approval = self.ledger.record_approval(
            change_set_id, op, approver, typed_namespaces=tuple(preview.typed_confirmation)
        )
        self.ledger.append_audit(
            actor=approver,
            event="confirmation.accepted",
            result="approved",
            change_set_id=change_set_id,
            details={"op": op, "channel": channel, "approval_id": approval.id},
        )
        return approval

    def record_refusal(self, change_set_id: str, *, actor: str, status: str, channel: str) -> None:
        self.ledger.append_audit(
            actor=actor,
            event="confirmation." + status,
            result=status,
            change_set_id=change_set_id,
            details={"channel": channel},
        )


def check_typed(namespaces: Sequence[str], typed: str | None) -> None:
    """The human must type the namespace names (space or comma separated, any order)."""
    if not namespaces:
        return
    given = sorted(part for part in (typed or "").replace(",", " ").split() if part)
    if given != sorted(namespaces):
        raise ServiceError(
            "not approved: production or critical targets need the namespace typed exactly ("
            + " ".join(namespaces)
            + ")"
        )


def _violations(preview: Preview) -> str:
    return "; ".join(v.message for v in preview.policy.violations[:5])


def _number(value: object) -> float | Literal["?"] | None:
    if value == "?":
        return "?"
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ServiceError(f"a recommendation value {value!r:.40} is not a number")
    if value < 0:
        raise ServiceError(f"a recommendation value {value} is negative")
    return float(value)


def _recommended(current: ContainerResources, recommended: dict[str, Any]) -> ContainerResources:
    update: dict[str, int | None] = {}
    for selector, prefix in (("requests", "request"), ("limits", "limit")):
        values = recommended.get(selector) or {}
        for resource, scale in (("cpu", 1000), ("memory", 1)):
            entry = values.get(resource)
            raw = entry.get("value") if isinstance(entry, dict) else entry
            value = _number(raw)
            if value == "?":
                continue
            name = f"{resource}_{prefix}"
            update[name] = None if value is None else math.ceil(value * scale)
    return current.model_copy(update=update)


def confirmation_text(preview: Preview, op: str) -> str:
    """What the human reads before approving: the same in MCP and in ``sizeguard approve``."""
    verb = "roll back" if op == "rollback" else "apply"
    lines = [
        f"sizeguard: {verb} change set {preview.change_set_id} "
        f"({preview.targets} object{'s' if preview.targets != 1 else ''}, "
        f"risk {preview.policy.risk})",
        "",
    ]
    for target in preview.diff:
        lines.append(f"  {target.target}")
        lines.extend(f"    {line}" for line in target.lines)
    cost = preview.cost
    sign = "+" if cost.monthly_delta >= 0 else "-"
    lines += [
        "",
        f"  cost: ${cost.monthly_before:,.2f}/month → ${cost.monthly_after:,.2f}/month "
        f"({sign}${abs(cost.monthly_delta):,.2f})",
    ]
    if preview.policy.warnings:
        lines.append("  policy warnings:")
        lines.extend(f"    - {w.message}" for w in preview.policy.warnings)
    warnings = sorted({w for d in preview.dry_run for w in d.warnings})
    if warnings:
        lines.append("  admission (dry run):")
        lines.extend(f"    - {w}" for w in warnings[:10])
    if preview.typed_confirmation:
        lines.append(
            "  production/critical targets: type "
            + " ".join(preview.typed_confirmation)
            + " to approve"
        )
    lines.append("  The approval is good for one use within 5 minutes.")
    return "\n".join(lines)


def timestamp(value: float) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def monotonic() -> float:
    return time.monotonic()
