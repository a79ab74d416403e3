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
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import structlog
from pydantic import ValidationError

from sizeguard.approvals import MIN_AGE_TO_DELETE_SECONDS, SigningKey
from sizeguard.changes import (
    HPA_API_VERSION,
    HPA_KIND,
    ChangeSet,
    ContainerResources,
    GuardedState,
    ResourceChange,
    Resources,
    Target,
    describe_changes,
    guarded_state,
    hpa_object,
    target_of,
)
from sizeguard.cluster import (
    Cluster,
    ClusterError,
    ClusterState,
    PatchResult,
    create_body,
    patch_for,
)
from sizeguard.cost import PriceModel
from sizeguard.key_trust import KeyTrust, trusted_key_sets, verdict
from sizeguard.ledger import Approval, Ledger
from sizeguard.policy import ChangesetDecision, PolicyClient
from sizeguard.quantities import cpu_millicores, memory_bytes
from sizeguard.recommend.floors import FloorsUnavailableError, Key, NamespaceLabels, opa_floors
from sizeguard.recommend.replicas import Floor, ReplicaRecommendation
from sizeguard.server.models import (
    CostDelta,
    DryRun,
    Edit,
    PolicyView,
    Preview,
    TargetDiff,
    describe_validation_error,
)
from sizeguard.server.strength import TWO_APPROVERS, Evidence, assess, needs_page
from sizeguard.workloads import Workload

__all__ = [
    "DEFAULT_APPROVAL_URL",
    "DEFAULT_CPU_UTILIZATION",
    "MAX_TARGETS",
    "Service",
    "ServiceError",
    "change_set_op",
    "diff_lines",
    "drift_problem",
    "page_refusal",
    "page_url",
    "refuse_young",
    "typed_namespaces",
]

MAX_TARGETS: Final = 1000
DEFAULT_APPROVAL_URL: Final = "http://localhost:8765"
DEFAULT_CPU_UTILIZATION: Final = 80
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


def _edit_others(raw: dict[str, str] | None, current: dict[str, int], where: str) -> dict[str, int]:
    """Other resources (base units): the named ones set or unset, the rest kept."""
    if not raw:
        return dict(current)
    result = dict(current)
    for name, text in raw.items():
        if name in ("cpu", "memory"):
            raise ServiceError(
                f"{where}: set {name} with {name}_request/{name}_limit, not among other resources"
            )
        value = _edit_value(text, current.get(name), memory_bytes)
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return dict(sorted(result.items()))


_RESOURCE_FIELDS: Final = (
    "cpu_request",
    "cpu_limit",
    "memory_request",
    "memory_limit",
    "other_requests",
    "other_limits",
)
_WORKLOAD_ONLY: Final = (
    "container",
    "pod_level",
    *_RESOURCE_FIELDS,
    "restart_policy",
    "claims",
    "resource_claims",
    "termination_grace_period_seconds",
    "runtime_class",
    "strategy",
    "max_surge",
    "max_unavailable",
    "min_ready_seconds",
    "progress_deadline_seconds",
    "replicas",
)
# Strategy types per kind, and what Kubernetes defaults a RollingUpdate's bounds to (written
# explicitly when sizeguard switches to RollingUpdate, so the proposal is what gets stored).
_STRATEGIES: Final = {
    "Deployment": ("RollingUpdate", "Recreate"),
    "DaemonSet": ("RollingUpdate", "OnDelete"),
}
_ROLLING_DEFAULTS: Final[dict[str, tuple[int | str, int | str]]] = {
    "Deployment": ("25%", "25%"),
    "DaemonSet": (0, 1),
}


def _given(edit: Edit, names: Iterable[str]) -> list[str]:
    return [n for n in names if getattr(edit, n) is not None and getattr(edit, n) is not False]


def _resized(current: Resources, edit: Edit, where: str) -> dict[str, Any]:
    return {
        "cpu_request": _edit_value(edit.cpu_request, current.cpu_request, cpu_millicores),
        "cpu_limit": _edit_value(edit.cpu_limit, current.cpu_limit, cpu_millicores),
        "memory_request": _edit_value(edit.memory_request, current.memory_request, memory_bytes),
        "memory_limit": _edit_value(edit.memory_limit, current.memory_limit, memory_bytes),
        "other_requests": _edit_others(edit.other_requests, current.other_requests, where),
        "other_limits": _edit_others(edit.other_limits, current.other_limits, where),
    }


def _edit_container(before: GuardedState, edit: Edit, where: str) -> dict[str, Any]:
    assert edit.container is not None
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
    if not _given(edit, (*_RESOURCE_FIELDS, "restart_policy", "claims")):
        raise ServiceError(f"{where}: nothing to change for container {edit.container!r}")
    current: ContainerResources = getattr(before, group)[edit.container]
    restart_policy = current.restart_policy
    if edit.restart_policy is not None:
        if group != "init_containers":
            raise ServiceError(
                f"{where}: restart_policy is for init containers ({edit.container!r} is a "
                "container); restartPolicy Always makes an init container a sidecar"
            )
        restart_policy = None if edit.restart_policy == "unset" else edit.restart_policy
    noun = "init container" if group == "init_containers" else "container"
    changed = ContainerResources(
        **_resized(current, edit, f"{where} {noun} {edit.container}"),
        restart_policy=restart_policy,
        claims=current.claims if edit.claims is None else sorted(set(edit.claims)),
    )
    return {group: {**getattr(before, group), edit.container: changed}}


def _edit_pod_level(before: GuardedState, edit: Edit, where: str) -> dict[str, Any]:
    if not _given(edit, _RESOURCE_FIELDS):
        raise ServiceError(f"{where}: pod_level needs a resource to set (cpu_request, ...)")
    empty = Resources(cpu_request=None, cpu_limit=None, memory_request=None, memory_limit=None)
    resources = Resources(**_resized(before.pod_resources or empty, edit, f"{where} pod-level"))
    return {"pod_resources": None if resources.is_empty() else resources}


def _edit_rollout(before: GuardedState, edit: Edit, kind: str, where: str) -> dict[str, Any]:
    update: dict[str, Any] = {}
    if _given(edit, ("strategy", "max_surge", "max_unavailable")):
        allowed = _STRATEGIES.get(kind)
        if allowed is None:
            raise ServiceError(
                f"{where}: sizeguard changes the rollout strategy of Deployments and DaemonSets"
            )
        strategy = edit.strategy or before.strategy or "RollingUpdate"
        if strategy not in allowed:
            raise ServiceError(
                f"{where}: a {kind}'s strategy is {' or '.join(allowed)}, not {strategy}"
            )
        surge, unavailable = before.max_surge, before.max_unavailable
        if strategy != "RollingUpdate":
            if edit.max_surge is not None or edit.max_unavailable is not None:
                raise ServiceError(
                    f"{where}: a {strategy} strategy takes no max_surge/max_unavailable"
                )
            surge = unavailable = None
        elif before.strategy != "RollingUpdate" and (surge, unavailable) == (None, None):
            surge, unavailable = _ROLLING_DEFAULTS[kind]
        if edit.max_surge is not None:
            surge = edit.max_surge
        if edit.max_unavailable is not None:
            unavailable = edit.max_unavailable
        update.update(strategy=strategy, max_surge=surge, max_unavailable=unavailable)
    if edit.min_ready_seconds is not None:
        update["min_ready_seconds"] = edit.min_ready_seconds or None
    if edit.progress_deadline_seconds is not None:
        if kind != "Deployment":
            raise ServiceError(f"{where}: progress_deadline_seconds belongs to a Deployment")
        update["progress_deadline_seconds"] = edit.progress_deadline_seconds
    return update


def apply_edit(before: GuardedState, edit: Edit, kind: str) -> GuardedState:
    """``before`` with one update edit applied; refuses edits that do not fit the object."""
    where = f"{kind}/{edit.namespace}/{edit.name}"
    if edit.action != "update":
        raise ServiceError(f"{where}: an HPA that is created or removed takes only that one edit")
    update: dict[str, Any] = {}
    if kind == "HorizontalPodAutoscaler":
        if edit.replicas is not None:
            raise ServiceError(f"{where}: set min_replicas/max_replicas on an HPA, not replicas")
        if _given(edit, _WORKLOAD_ONLY):
            raise ServiceError(f"{where}: an HPA has no containers; edit its workload instead")
        for name in ("min_replicas", "max_replicas"):
            if getattr(edit, name) is not None:
                update[name] = getattr(edit, name)
        return GuardedState.model_validate(before.model_copy(update=update))
    if edit.min_replicas is not None or edit.max_replicas is not None:
        raise ServiceError(f"{where}: min_replicas/max_replicas belong to an HPA")
    if edit.replicas is not None:
        if kind == "DaemonSet":
            raise ServiceError(f"{where}: a DaemonSet has no replicas")
        update["replicas"] = edit.replicas
    if edit.container is not None and edit.pod_level:
        raise ServiceError(f"{where}: give either container or pod_level, not both")
    if edit.container is not None:
        update.update(_edit_container(before, edit, where))
    elif edit.pod_level:
        update.update(_edit_pod_level(before, edit, where))
    elif _given(edit, (*_RESOURCE_FIELDS, "restart_policy", "claims")):
        raise ServiceError(
            f"{where}: name the container to resize (or set pod_level for the pod's resources)"
        )
    if edit.runtime_class is not None:
        update["runtime_class"] = None if edit.runtime_class == "unset" else edit.runtime_class
    if edit.termination_grace_period_seconds is not None:
        update["termination_grace_period_seconds"] = edit.termination_grace_period_seconds
    if edit.resource_claims:
        claims = dict(before.resource_claims)
        for name, source in edit.resource_claims.items():
            if source == "unset":
                claims.pop(name, None)
            else:
                claims[name] = source
        update["resource_claims"] = dict(sorted(claims.items()))
    update.update(_edit_rollout(before, edit, kind, where))
    return GuardedState.model_validate(before.model_copy(update=update))


def hpa_create_spec(edit: Edit) -> dict[str, Any]:
    """The spec of the HPA a create edit proposes (what the human approves)."""
    assert edit.scale_target is not None and edit.max_replicas is not None
    utilization = edit.target_cpu_utilization or DEFAULT_CPU_UTILIZATION
    return {
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": edit.scale_target.kind,
            "name": edit.scale_target.name,
        },
        "minReplicas": edit.min_replicas or 1,
        "maxReplicas": edit.max_replicas,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": utilization},
                },
            }
        ],
    }


def created_at(obj: Mapping[str, Any]) -> float | None:
    """An object's creationTimestamp (seconds), None when it cannot be read."""
    value = (obj.get("metadata") or {}).get("creationTimestamp")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return moment.timestamp()


def refuse_young(obj: Mapping[str, Any], *, now: float | None = None) -> None:
    """Refuse to remove an HPA younger than :data:`MIN_AGE_TO_DELETE_SECONDS` (the cluster
    refuses it too), saying from when it can be done."""
    ref = target_of(obj).ref()
    born = created_at(obj)
    if born is None:
        raise ServiceError(
            f"{ref} has no readable creationTimestamp; sizeguard cannot tell its age"
        )
    ready = born + MIN_AGE_TO_DELETE_SECONDS
    if (time.time() if now is None else now) < ready:
        raise ServiceError(
            f"{ref} was created at {timestamp(born)}; an HPA younger than "
            f"{MIN_AGE_TO_DELETE_SECONDS // 60} minutes cannot be removed (so that no approval "
            f"to create it can be used again), so this can be done from {timestamp(ready)}"
        )


def pod_cost(state: GuardedState | None, prices: PriceModel) -> float:
    """Monthly price of one pod's requests: pod-level requests where set, else the containers'
    and sidecars' (init containers with restartPolicy Always) sum; unset counts as 0. No
    object (an HPA created or removed) costs nothing by itself."""
    if state is None:
        return 0.0
    running = [*state.containers.values()] + [
        c for c in state.init_containers.values() if c.restart_policy == "Always"
    ]
    pod = state.pod_resources
    cpu = pod.cpu_request if pod is not None and pod.cpu_request is not None else None
    memory = pod.memory_request if pod is not None and pod.memory_request is not None else None
    if cpu is None:
        cpu = sum(c.cpu_request or 0 for c in running)
    if memory is None:
        memory = sum(c.memory_request or 0 for c in running)
    return prices.monthly(cpu / 1000, memory)


def _refuse_drift(change_set: ChangeSet, lives: Sequence[dict[str, Any] | None]) -> None:
    """A change set built from objects that changed meanwhile is refused, as is removing an
    HPA younger than 2 minutes."""
    drifted = [
        problem
        for c, live in zip(change_set.changes, lives, strict=True)
        if (problem := drift_problem(c, live)) is not None
    ]
    if drifted:
        raise ServiceError(
            "the cluster changed while the change set was built ("
            + "; ".join(drifted[:5])
            + "); preview again"
        )
    for change, live in zip(change_set.changes, lives, strict=True):
        if change.operation == "delete" and live is not None:
            refuse_young(live)


def _pods(state: GuardedState | None, live: Mapping[str, Any] | None) -> int:
    if state is None:
        return 0
    if state.replicas is not None:
        return state.replicas
    desired = ((live or {}).get("status") or {}).get("desiredNumberScheduled")
    return desired if isinstance(desired, int) and desired >= 0 else 1


def _metrics_line(spec: Mapping[str, Any]) -> str:
    """The metrics a new HPA scales on, in words."""
    parts = []
    metrics = spec.get("metrics")
    for metric in metrics if isinstance(metrics, list) else []:
        if not isinstance(metric, Mapping):
            continue
        resource = metric.get("resource")
        target = resource.get("target") if isinstance(resource, Mapping) else None
        if isinstance(resource, Mapping) and isinstance(target, Mapping):
            name = resource.get("name")
            if target.get("type") == "Utilization":
                parts.append(f"{name} at {target.get('averageUtilization')}% of requests")
                continue
        parts.append(f"a {metric.get('type')} metric")
    return "scales on: " + (", ".join(parts) if parts else "CPU at 80% of requests (the default)")


def diff_lines(change: ResourceChange) -> list[str]:
    """What the human reads for one change (the diff of a preview, the report)."""
    lines = describe_changes(change.before, change.after)
    if change.operation == "create" and change.create_spec is not None:
        lines.append(_metrics_line(change.create_spec))
        lines.append(
            f"a new HPA can be removed only {MIN_AGE_TO_DELETE_SECONDS // 60} minutes after "
            "it is created"
        )
    elif change.operation == "delete":
        lines.append("the workload keeps the replicas it has now; nothing autoscales it any more")
    return lines


def refs_of(change: ResourceChange) -> tuple[str, str, str]:
    target = change.target
    return (target.kind, target.namespace, target.name)


def drift_problem(change: ResourceChange, live: Mapping[str, Any] | None) -> str | None:
    """Why ``live`` (None: absent) is not what ``change`` starts from, or None if it is: a
    create's object must not exist; any other must be the same object (uid) in ``before``."""
    ref = change.target.ref()
    if change.operation == "create":
        return None if live is None else f"{ref} exists already"
    if live is None:
        return f"{ref} no longer exists"
    try:
        if target_of(live) != change.target:
            return f"{ref} was deleted and recreated (another uid)"
        if guarded_state(live) != change.before:
            return f"{ref} no longer has the values the change set starts from"
    except ValueError as exc:
        return f"{ref}: {exc}"
    return None


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
    approval_url: str | None = DEFAULT_APPROVAL_URL
    """Where people reach the approval page (``sizeguard serve --approval-url``); None when
    this server serves no page (then changes that need a passkey approval cannot be approved
    through it)."""

    @property
    def writes_hidden(self) -> bool:
        """This server offers no mutating tool (``--read-only``, or no signing key): it refuses
        them, and its texts must not send the model to one."""
        return self.read_only or self.key is None

    # --- reading ----------------------------------------------------------------------------

    def cluster_state(self, namespaces: Sequence[str] | None = None) -> ClusterState:
        return self.cluster.cluster_state(namespaces or None)

    def read_current(self, refs: Iterable[tuple[str, str, str]]) -> list[dict[str, Any] | None]:
        """Live objects for (kind, namespace, name), read concurrently, in the given order;
        None for one that does not exist (the caller decides whether that is right)."""

        def read(ref: tuple[str, str, str]) -> dict[str, Any] | None:
            try:
                return self.cluster.read_live(*ref)
            except ClusterError as exc:
                if exc.kind == "not_found":
                    return None
                raise

        refs = list(refs)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(read, refs))

    def read_targets(self, refs: Iterable[tuple[str, str, str]]) -> list[dict[str, Any]]:
        """Live objects for (kind, namespace, name) that must exist (``not_found`` otherwise)."""
        refs = list(refs)
        found = []
        for ref, live in zip(refs, self.read_current(refs), strict=True):
            if live is None:
                kind, namespace, name = ref
                raise ClusterError(
                    "not_found", f"{kind} {namespace}/{name} does not exist (deleted or renamed?)"
                )
            found.append(live)
        return found

    def labels_for_create(self, change: ResourceChange) -> dict[str, str]:
        """The labels an HPA is created with: those it had, when a rollback (or a restore)
        re-creates one a change set deleted (from that change set's snapshot); none for a
        new HPA."""
        if change.operation != "create" or change_set_op(change.source) != "rollback":
            return {}
        original = change.source.removeprefix(ROLLBACK_SOURCE)
        snapshot = self.ledger.get_snapshot(original, change.target)
        labels = ((snapshot.object.get("metadata") or {}).get("labels") if snapshot else None) or {}
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}

    # --- building change sets ---------------------------------------------------------------

    def change_set_from_edits(self, edits: Sequence[Edit], source: str) -> ChangeSet:
        if not edits:
            raise ServiceError("no edits: say which object to change and how")
        grouped: dict[tuple[str, str, str], list[Edit]] = {}
        for edit in edits:
            grouped.setdefault((edit.kind, edit.namespace, edit.name), []).append(edit)
        if len(grouped) > MAX_TARGETS:
            raise ServiceError(f"at most {MAX_TARGETS} objects per change set")
        self._refuse_replicas_under_hpa(edits)
        lives = self._read_maybe(list(grouped))
        changes = []
        for key, live in zip(grouped, lives, strict=True):
            group = grouped[key]
            reason = "; ".join(e.reason for e in group if e.reason)
            if any(e.action != "update" for e in group):
                if len(group) != 1:
                    raise ServiceError(
                        f"{key[0]}/{key[1]}/{key[2]}: an HPA that is created or removed takes "
                        "exactly one edit"
                    )
                changes.append(self._lifecycle_change(group[0], live, reason, source))
                continue
            if live is None:
                raise ServiceError(
                    f"{key[0]} {key[1]}/{key[2]} does not exist"
                    + (" (action create makes a new HPA)" if key[0] == HPA_KIND else "")
                )
            before = self._guarded(live)
            after = before
            for edit in group:
                try:
                    after = apply_edit(after, edit, key[0])
                except ValidationError as exc:
                    raise ServiceError(
                        f"{key[0]}/{key[1]}/{key[2]}: {describe_validation_error(exc)}"
                    ) from None
            if after == before:
                continue
            changes.append(self._change(live, before, after, reason, source))
        if not changes:
            raise ServiceError("the edits change nothing: the objects already have those values")
        return ChangeSet(changes=changes)

    def _lifecycle_change(
        self, edit: Edit, live: dict[str, Any] | None, reason: str, source: str
    ) -> ResourceChange:
        """The change that creates or removes the HPA an edit names."""
        where = f"{HPA_KIND}/{edit.namespace}/{edit.name}"
        if edit.action == "delete":
            if live is None:
                raise ServiceError(f"{where} does not exist; nothing to remove")
            refuse_young(live)
            return self._make_change(
                target=target_of(live), before=self._guarded(live), after=None,
                reason=reason, source=source,
            )  # fmt: skip
        if live is not None:
            raise ServiceError(
                f"{where} already exists; change its min_replicas/max_replicas with an update "
                "edit, or remove it first"
            )
        assert edit.scale_target is not None
        scaled = edit.scale_target
        if edit.min_replicas is not None and edit.min_replicas > (edit.max_replicas or 0):
            raise ServiceError(f"{where}: min_replicas is above max_replicas")
        try:
            state = self.cluster.cluster_state([edit.namespace])
        except ClusterError as exc:
            raise ServiceError(str(exc)) from None
        workload = state.workload(scaled.kind, edit.namespace, scaled.name)
        if workload is None:
            raise ServiceError(
                f"{where}: there is no {scaled.kind} {edit.namespace}/{scaled.name} to scale"
            )
        if workload.hpa is not None:
            raise ServiceError(
                f"{where}: {workload.ref} is already scaled by the HPA {workload.hpa}; change "
                "that one's min_replicas/max_replicas instead (two HPAs on one workload fight)"
            )
        target = Target(
            api_version=HPA_API_VERSION,
            kind=HPA_KIND,
            namespace=edit.namespace,
            name=edit.name,
            uid=None,
        )
        spec = hpa_create_spec(edit)
        return self._make_change(
            target=target, before=None, after=self._guarded(hpa_object(target, spec)),
            reason=reason, source=source, create_spec=spec,
        )  # fmt: skip

    def _refuse_replicas_under_hpa(self, all_edits: Sequence[Edit]) -> None:
        """The HPA owns the replicas of the workload it scales (or will scale, when the same
        change set creates it): a change would be undone."""
        edits = [e for e in all_edits if e.replicas is not None]
        if not edits:
            return
        for create in all_edits:
            new_target = create.scale_target
            if create.action != "create" or new_target is None:
                continue
            for edit in edits:
                if (edit.kind, edit.namespace, edit.name) == (
                    new_target.kind,
                    create.namespace,
                    new_target.name,
                ):
                    raise ServiceError(
                        f"{edit.kind}/{edit.namespace}/{edit.name} will be scaled by the new HPA "
                        f"{create.name}; set its bounds (min_replicas/max_replicas) instead"
                    )
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

    def _read_maybe(self, refs: list[tuple[str, str, str]]) -> list[dict[str, Any] | None]:
        try:
            return self.read_current(refs)
        except ClusterError as exc:
            raise ServiceError(str(exc)) from None

    @staticmethod
    def _guarded(live: Mapping[str, Any]) -> GuardedState:
        try:
            return guarded_state(live)
        except ValueError as exc:
            raise ServiceError(f"sizeguard cannot manage this object: {exc}") from None

    @staticmethod
    def _make_change(**fields: Any) -> ResourceChange:
        try:
            return ResourceChange(**fields)
        except ValidationError as exc:
            raise ServiceError(f"not a valid change: {describe_validation_error(exc)}") from None
        except ValueError as exc:
            raise ServiceError(f"not a valid change: {exc}") from None

    @classmethod
    def _change(
        cls,
        live: dict[str, Any],
        before: GuardedState,
        after: GuardedState,
        reason: str,
        source: str,
    ) -> ResourceChange:
        return cls._make_change(
            target=target_of(live), before=before, after=after, reason=reason[:4096], source=source
        )

    def availability_floors(
        self, workloads: Sequence[Workload], known_labels: NamespaceLabels | None = None
    ) -> Mapping[Key, Floor]:
        """The availability floors of the replica plans, from OPA (fail closed: raises
        :class:`FloorsUnavailableError` naming the cause). ``known_labels``: the namespaces'
        labels the namespace check read (not read again)."""
        if self.kubeconfig is None:
            raise FloorsUnavailableError(
                "no kubeconfig to read the namespaces' labels with: start the server with "
                "--kubeconfig or KUBECONFIG"
            )
        lookup = opa_floors(self.policy, self.kubeconfig, self.context, known_labels)
        return lookup(workloads)

    def change_set_from_recommendations(
        self,
        scans: Sequence[dict[str, Any]],
        source: str,
        plans: Sequence[ReplicaRecommendation] = (),
    ) -> ChangeSet:
        """A change set from krr-schema scans and the plans of the same scan, one change per
        object: each container's defined recommendation, with the CPU request (and limit) of
        its workload's plan in place of krr's, the plan's replicas, and an HPA's planned
        bounds on the HPA itself. Requests and replicas come from one plan, so they never
        count the same demand twice.

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
        planned = {p.key: p for p in plans if p.key in wanted}
        hpas = {
            (HPA_KIND, p.namespace, p.hpa_name): p
            for p in planned.values()
            if p.hpa_name is not None and p.hpa_min_replicas and p.hpa_max_replicas
        }
        refs = [*wanted, *hpas]
        changes = []
        for key, live in zip(refs, self._read_all(refs), strict=True):
            before = self._guarded(live)
            plan = hpas.get(key) or planned.get(key)
            if key in hpas:
                after = _hpa_bounds(before, hpas[key])
            else:
                after = _planned(before, wanted[key], plan)
            if after != before:
                reason = "krr-style recommendation" if plan is None else f"plan: {plan.reason}"
                changes.append(self._change(live, before, after, reason, source))
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
        lives = self._read_maybe([refs_of(c) for c in change_set.changes])
        _refuse_drift(change_set, lives)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            answers = list(pool.map(self._dry_run, change_set.changes, lives))
        dry_runs = [dry_run for dry_run, _ in answers]
        trust = verdict(self.signing_kid, [s for _, sets in answers for s in sets])
        diff, cost = self._diff_and_cost(change_set, lives)
        rejected = [d for d in dry_runs if not d.admitted]
        preview = Preview(
            change_set_id=stored.id,
            targets=len(change_set.changes),
            diff=diff,
            policy=PolicyView(
                allowed=decision.allowed,
                risk=decision.risk,
                violations=decision.violations,
                warnings=decision.warnings,
                requires=decision.requires,
            ),
            dry_run=dry_runs,
            cost=cost,
            confirmation="",
            typed_confirmation=typed_namespaces(decision) if decision.allowed else [],
            signing_key_trusted=trust.trusted,
            signing_key_check=trust.describe(),
            next_step=self._next_step(stored.id, decision, rejected, trust),
        )
        op = change_set_op(source)
        preview = preview.model_copy(update={"confirmation": confirmation_text(preview, op)})
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
                "webhook_trusts_signer": trust.trusted,
                "source": source,
            },
        )
        return preview

    def _diff_and_cost(
        self, change_set: ChangeSet, lives: Sequence[dict[str, Any] | None]
    ) -> tuple[list[TargetDiff], CostDelta]:
        """Each target's diff with its monthly cost before and after, and the totals."""
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
                    operation=change.operation,
                    lines=diff_lines(change),
                    monthly_cost_before=round(cost_before, 2),
                    monthly_cost_after=round(cost_after, 2),
                )
            )
        cost = CostDelta(
            monthly_before=round(before_total, 2),
            monthly_after=round(after_total, 2),
            monthly_delta=round(after_total - before_total, 2),
        )
        return diff, cost

    def _next_step(
        self,
        change_set_id: str,
        decision: ChangesetDecision,
        rejected: Sequence[DryRun],
        trust: KeyTrust,
    ) -> str:
        """What to do with a preview. A read-only server gives no advice about approving
        (it offers no approval), whatever the webhook said about its key."""
        if not decision.allowed:
            return "the policy denies this change set; change it and preview again"
        if rejected:
            return "the apiserver refused the dry run of some targets; fix them and preview again"
        if self.writes_hidden:
            return (
                "this sizeguard server is read-only: it cannot ask for approval or apply; the "
                "change set is a proposal for a person to review"
            )
        if trust.trusted is False:
            return "do not ask for approval: " + trust.problem()
        return (
            f"ask the human to approve it: request_confirmation('{change_set_id}'), "
            f"then apply_changes('{change_set_id}')"
        )

    @property
    def signing_kid(self) -> str | None:
        """The kid approvals are signed with (None: this server signs nothing)."""
        return None if self.read_only or self.key is None else self.key.kid

    def key_trust(self) -> KeyTrust:
        """Whether the cluster's sizeguard webhook trusts the signing key, asked without a
        change set: dry runs of a replicas change of a few Deployments (nothing is written);
        the webhook names the keys it trusts in its answer (:mod:`sizeguard.key_trust`)."""
        if self.signing_kid is None:
            return verdict(None, [])
        sets = [s for answer in self.cluster.probe_admission() for s in trusted_key_sets(answer)[0]]
        return verdict(self.signing_kid, sets)

    def _dry_run(
        self, change: ResourceChange, live: dict[str, Any] | None
    ) -> tuple[DryRun, list[frozenset[str]]]:
        """The change sent unsigned, as a server-side dry run, through the whole admission
        chain (the webhook admits an unapproved dry run with a warning, and still denies what
        the policy forbids), and the key sets the webhook said it trusts (taken out of the
        warnings shown to people)."""
        dry_run = self._dry_run_answer(change, live)
        sets, warnings = trusted_key_sets(dry_run.warnings)
        return dry_run.model_copy(update={"warnings": warnings}), sets

    def _dry_run_answer(self, change: ResourceChange, live: dict[str, Any] | None) -> DryRun:
        ref = change.target.ref()
        try:
            result = self._send_dry_run(change, live)
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
            return DryRun(
                target=ref, admitted=False, warnings=_refused(exc.warnings), error=str(exc)
            )
        except ValueError as exc:
            return DryRun(target=ref, admitted=False, warnings=[], error=str(exc))
        if change.after is not None and guarded_state(result.object) != change.after:
            return DryRun(
                target=ref,
                admitted=False,
                warnings=_refused(result.warnings),
                error="the dry run did not produce the proposed values (defaulting or a "
                "mutating webhook changed them)",
            )
        return DryRun(target=ref, admitted=True, warnings=result.warnings)

    def _send_dry_run(self, change: ResourceChange, live: dict[str, Any] | None) -> PatchResult:
        if change.operation == "create":
            body = create_body(change, None, labels=self.labels_for_create(change))
            return self.cluster.create_hpa(change.target, body, dry_run=True)
        assert live is not None
        if change.operation == "delete":
            version = (live.get("metadata") or {}).get("resourceVersion")
            return self.cluster.delete_hpa(
                change.target, resource_version=str(version), approval_token=None, dry_run=True
            )
        return self.cluster.apply_patch(
            change.target, patch_for(change, None, live=live), dry_run=True
        )

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
        if preview.signing_key_trusted is False:
            raise ServiceError(preview.signing_key_check.removeprefix("NO: "))
        if needs_page(preview.policy.requires):
            raise ServiceError(page_refusal(self, change_set_id, preview.policy.requires))
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


_WEBHOOK_ADMITTED = "sizeguard: dry run admitted; "


def _refused(warnings: Iterable[str]) -> list[str]:
    """The warnings of a dry run that was refused: the webhook's "dry run admitted" is its own
    verdict, not the dry run's, and says so."""
    return [
        "sizeguard's webhook did not object; " + w.removeprefix(_WEBHOOK_ADMITTED)
        if w.startswith(_WEBHOOK_ADMITTED)
        else w
        for w in warnings
    ]


def page_url(service: Service, change_set_id: str | None = None) -> str | None:
    """The approval page (or one change set's page on it); None when there is no page."""
    if service.approval_url is None:
        return None
    base = service.approval_url.rstrip("/")
    return base if change_set_id is None else f"{base}/changes/{change_set_id}"


def page_refusal(service: Service, change_set_id: str, requires: Sequence[str]) -> str:
    """Why an answer in the MCP client or a terminal does not approve a change set whose
    policy requires an enrolled approver, and where it can be approved."""
    needed = assess(requires, "", Evidence(confirmed=True, typed=True)).describe()
    url = page_url(service, change_set_id)
    if url is None:
        where = (
            "this sizeguard server serves no approval page (--no-approval-page), so it cannot "
            "be approved through this server"
        )
    else:
        where = f"approve it on the approval page {url} (request_confirmation puts it there)"
    return (
        f"not approved: the policy requires {', '.join(sorted(requires))} for change set "
        f"{change_set_id} ({needed}); an answer in the MCP client or a terminal does not "
        f"approve it: {where}"
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


def _with_plan(
    container: str, recommended: dict[str, Any], plan: ReplicaRecommendation | None
) -> dict[str, Any]:
    """krr's recommendation for a container with its plan's CPU request and limit. A plan
    that keeps today's request (``cpu_requests`` None, e.g. an HPA whose plan refuses to cut
    it) keeps today's CPU request and limit too ("?": unchanged), whatever krr's number."""
    if plan is None:
        return recommended
    if plan.cpu_requests is None:
        keep = {"value": "?"}
        return {
            **recommended,
            "requests": {**(recommended.get("requests") or {}), "cpu": keep},
            "limits": {**(recommended.get("limits") or {}), "cpu": keep},
        }
    if container not in plan.cpu_requests:
        return recommended
    requests = {**(recommended.get("requests") or {}), "cpu": plan.cpu_requests[container]}
    limits = dict(recommended.get("limits") or {})
    if plan.cpu_limits and container in plan.cpu_limits:
        limits["cpu"] = plan.cpu_limits[container]
    return {**recommended, "requests": requests, "limits": limits}


def _planned(
    before: GuardedState,
    recommended: Mapping[str, dict[str, Any]],
    plan: ReplicaRecommendation | None,
) -> GuardedState:
    """A workload's state with its containers' recommendations and its plan's replicas."""
    containers = dict(before.containers)
    for container, values in recommended.items():
        if container in containers:
            containers[container] = _recommended(
                containers[container], _with_plan(container, values, plan)
            )
    update: dict[str, Any] = {"containers": containers}
    if plan is not None and plan.recommended_replicas is not None and before.replicas is not None:
        update["replicas"] = plan.recommended_replicas
    return before.model_copy(update=update)


def _hpa_bounds(before: GuardedState, plan: ReplicaRecommendation) -> GuardedState:
    """An HPA's state with the bounds its workload's plan proposes."""
    assert plan.hpa_min_replicas is not None and plan.hpa_max_replicas is not None
    return before.model_copy(
        update={"min_replicas": plan.hpa_min_replicas[1], "max_replicas": plan.hpa_max_replicas[1]}
    )


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
    # validated again: a request left unset under a limit is that limit (see Resources)
    return ContainerResources.model_validate(current.model_copy(update=update))


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
    if needs_page(preview.policy.requires):
        who = (
            "two enrolled approvers (not the requester) approve"
            if TWO_APPROVERS in preview.policy.requires
            else "an enrolled approver approves"
        )
        lines.append(f"  production/critical targets: {who} with a passkey on the approval page")
    elif preview.typed_confirmation:
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
