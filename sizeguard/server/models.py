"""The MCP tools' inputs and outputs: pydantic models at the boundary.

Inputs are strict about shape (unknown fields are refused) because they come from the model;
outputs are what the assistant reads, so every field has a description.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sizeguard.cluster import Capacity, HpaState, NamespaceInfo, WorkloadState
from sizeguard.policy import Finding
from sizeguard.recommend.results import GapReason
from sizeguard.texts import describe_validation_error as describe_validation_error  # re-export

_IN = ConfigDict(extra="forbid", frozen=True)
_OUT = ConfigDict(frozen=True)

Name = Annotated[
    str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
]
ChangeSetId = Annotated[str, Field(pattern=r"^cs-[0-9a-f]{20}$", description="cs- + 20 hex digits")]
Quantity = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description='a Kubernetes quantity ("250m", "1", "512Mi", "2Gi") or "unset" to remove it',
    ),
]
ResourceName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$",
        description='a resource other than cpu and memory: "ephemeral-storage", "nvidia.com/gpu"',
    ),
]
_DNS: Final = r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"
ClaimSource = Annotated[
    str, Field(pattern=rf"^((claim|template):{_DNS}|unset)$", description='"claim:X", "template:X"')
]
ClaimRef = Annotated[
    str, Field(pattern=rf"^{_DNS}(/{_DNS})?$", description='"name" or "name/request"')
]
RolloutBound = (
    Annotated[int, Field(ge=0, le=100000)]
    | Annotated[str, Field(pattern=r"^(0|[1-9][0-9]{0,3})%$", description='a pod count or "25%"')]
)
_WORKLOAD_FIELDS: tuple[str, ...] = (
    "container",
    "pod_level",
    "cpu_request",
    "cpu_limit",
    "memory_request",
    "memory_limit",
    "other_requests",
    "other_limits",
    "restart_policy",
    "runtime_class",
    "strategy",
    "max_surge",
    "max_unavailable",
    "min_ready_seconds",
    "progress_deadline_seconds",
    "termination_grace_period_seconds",
    "resource_claims",
    "claims",
    "replicas",
)
_CREATE_FIELDS: tuple[str, ...] = ("scale_target", "target_cpu_utilization")


class ScaleTarget(BaseModel):
    """The workload a new HPA scales, in the HPA's namespace."""

    model_config = _IN

    kind: Literal["Deployment", "StatefulSet"]
    name: Name


class Edit(BaseModel):
    """One edit of one object's footprint. Fields left out stay as they are.

    ``action`` ``update`` (default) changes an existing object; ``create`` makes a new
    HorizontalPodAutoscaler (``name``, ``scale_target``, ``min_replicas``, ``max_replicas``,
    ``target_cpu_utilization``); ``delete`` removes one (only ``name``; an HPA younger than 2
    minutes cannot be removed)."""

    model_config = _IN

    action: Literal["update", "create", "delete"] = "update"
    kind: Literal["Deployment", "StatefulSet", "DaemonSet", "HorizontalPodAutoscaler"]
    namespace: Name
    name: Name
    container: Annotated[str, Field(min_length=1, max_length=253)] | None = Field(
        default=None, description="the container (or init container) to change"
    )
    pod_level: bool = Field(
        default=False,
        description="the resource fields set the pod-level resources "
        "(spec.template.spec.resources) instead of a container's",
    )
    cpu_request: Quantity | None = None
    cpu_limit: Quantity | None = None
    memory_request: Quantity | None = None
    memory_limit: Quantity | None = None
    other_requests: dict[ResourceName, Quantity] | None = Field(
        default=None,
        max_length=32,
        description='requests of other resources, e.g. {"ephemeral-storage": "2Gi"}; "unset" '
        "removes one, resources not named stay",
    )
    other_limits: dict[ResourceName, Quantity] | None = Field(
        default=None,
        max_length=32,
        description='limits of other resources ({"nvidia.com/gpu": "1"})',
    )
    restart_policy: Literal["Always", "unset"] | None = Field(
        default=None,
        description='an init container\'s restartPolicy: "Always" makes it a sidecar (its '
        'requests count for the pod\'s whole life), "unset" makes it a plain init container',
    )
    runtime_class: Name | None = Field(
        default=None, description='runtimeClassName (its overhead counts per pod), or "unset"'
    )
    strategy: Literal["RollingUpdate", "Recreate", "OnDelete"] | None = Field(
        default=None,
        description="Deployment strategy (RollingUpdate, Recreate) or DaemonSet updateStrategy "
        "(RollingUpdate, OnDelete)",
    )
    max_surge: RolloutBound | None = Field(default=None, description="rollingUpdate.maxSurge")
    max_unavailable: RolloutBound | None = Field(
        default=None, description="rollingUpdate.maxUnavailable"
    )
    min_ready_seconds: Annotated[int, Field(ge=0, le=86400)] | None = Field(
        default=None, description="minReadySeconds (0 removes it)"
    )
    progress_deadline_seconds: Annotated[int, Field(ge=1, le=86400)] | None = Field(
        default=None, description="Deployment progressDeadlineSeconds"
    )
    termination_grace_period_seconds: Annotated[int, Field(ge=0, le=604800)] | None = Field(
        default=None,
        description="how long a stopping pod may keep running beside its replacement",
    )
    resource_claims: dict[Name, ClaimSource] | None = Field(
        default=None,
        max_length=32,
        description='the pod\'s DRA resource claims by name: "claim:<ResourceClaim>", '
        '"template:<ResourceClaimTemplate>" or "unset"; claims not named stay',
    )
    claims: list[ClaimRef] | None = Field(
        default=None,
        max_length=32,
        description='with container: the resource claims it uses ("name" or "name/request"), '
        "replacing its list ([] removes them all)",
    )
    replicas: Annotated[int, Field(ge=0, le=100000)] | None = None
    min_replicas: Annotated[int, Field(ge=1, le=100000)] | None = None
    max_replicas: Annotated[int, Field(ge=1, le=100000)] | None = None
    scale_target: ScaleTarget | None = Field(
        default=None, description="create: the Deployment or StatefulSet the new HPA scales"
    )
    target_cpu_utilization: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        default=None, description="create: average CPU utilization target, % of requests (80)"
    )
    reason: Annotated[str, Field(max_length=1000)] = ""

    @model_validator(mode="after")
    def _fits_the_action(self) -> Edit:
        given = {
            name
            for name in (*_WORKLOAD_FIELDS, *_CREATE_FIELDS, "min_replicas", "max_replicas")
            if getattr(self, name) is not None and getattr(self, name) is not False
        }
        if self.action != "update" and self.kind != "HorizontalPodAutoscaler":
            raise ValueError(
                f"sizeguard creates and removes HorizontalPodAutoscalers only, not a {self.kind}"
            )
        if self.action == "delete" and given:
            raise ValueError("removing an HPA takes no other fields: " + ", ".join(sorted(given)))
        if self.action == "create":
            extra = given & set(_WORKLOAD_FIELDS)
            if extra:
                raise ValueError("a new HPA has no " + ", ".join(sorted(extra)))
            if self.scale_target is None or self.max_replicas is None:
                raise ValueError("a new HPA needs scale_target and max_replicas")
        elif given & set(_CREATE_FIELDS):
            raise ValueError("scale_target and target_cpu_utilization are for action create")
        return self


class RecommendationFilter(BaseModel):
    """Which workloads' recommendations: namespaces, names, strategy, minimum severity, and
    at most how many objects."""

    model_config = _IN

    namespaces: list[Name] = Field(default_factory=list, description="empty: every namespace")
    names: list[Name] = Field(default_factory=list, description="workload names; empty: all")
    strategy: Literal["simple", "simple-limit"] = "simple"
    min_severity: Literal["OK", "GOOD", "WARNING", "CRITICAL"] = Field(
        default="WARNING", description="only containers whose recommendation is this severe"
    )
    max_targets: Annotated[
        int,
        Field(
            ge=1,
            le=1000,
            description="preview_changes: at most this many objects in the change set "
            "(scan_recommendations pages with cursor/limit instead)",
        ),
    ] = 50


class DryRun(BaseModel):
    model_config = _OUT

    target: str
    admitted: bool = Field(description="the apiserver and its admission chain accepted it")
    warnings: list[str] = Field(description="admission warnings (the sizeguard webhook's)")
    error: str | None = None


class TargetDiff(BaseModel):
    model_config = _OUT

    target: str = Field(description="Kind/namespace/name")
    operation: Literal["update", "create", "delete"] = Field(
        default="update", description="create/delete: an HPA is created or removed"
    )
    lines: list[str] = Field(description="one readable line per changed field")
    monthly_cost_before: float
    monthly_cost_after: float


class CostDelta(BaseModel):
    model_config = _OUT

    monthly_before: float
    monthly_after: float
    monthly_delta: float = Field(description="after - before, $ per month (negative saves)")


class PolicyView(BaseModel):
    model_config = _OUT

    allowed: bool
    risk: Literal["low", "medium", "high", "critical"]
    violations: list[Finding]
    warnings: list[Finding]
    requires: list[str]


class Preview(BaseModel):
    """A proposed change set: nothing has changed in the cluster."""

    model_config = _OUT

    change_set_id: ChangeSetId
    targets: int
    diff: list[TargetDiff]
    policy: PolicyView
    dry_run: list[DryRun]
    cost: CostDelta
    confirmation: str = Field(description="the text the human will be shown")
    typed_confirmation: list[str] = Field(
        description="namespaces the human must type to approve (production/critical targets)"
    )
    signing_key_trusted: bool | None = Field(
        default=None,
        description="the cluster's sizeguard webhook trusts the key this server signs "
        "approvals with, as the webhook said in its dry-run answers (false: an approval "
        "would be refused at apply, so none is asked for; null: no answer said)",
    )
    signing_key_check: str = Field(
        default="", description="what the webhook said about the signing key, in words"
    )
    coverage: Coverage | None = Field(
        default=None,
        description="from recommendations: the workloads the filter selected, and those "
        "without usage data (not in the change set)",
    )
    truncated: int = Field(
        default=0,
        description="from recommendations: workloads with recommendations left out by max_targets",
    )
    next_step: str


class Confirmation(BaseModel):
    model_config = _OUT

    change_set_id: ChangeSetId
    op: Literal["apply", "rollback"]
    status: Literal["approved", "declined", "cancelled", "refused", "pending"] = Field(
        description="pending: waiting for enrolled approvers on the approval page (approval_url)"
    )
    approver: str | None = None
    expires_at: str | None = Field(default=None, description="the approval is good until then")
    message: str
    approval_url: str | None = Field(
        default=None,
        description="where enrolled approvers approve this change set with a passkey, when the "
        "policy requires it (give this address to the person; the assistant cannot approve)",
    )
    requires: list[str] = Field(
        default_factory=list, description="the policy's approval requirements (policy.requires)"
    )
    approvers: list[str] = Field(
        default_factory=list, description="enrolled approvers who approved it on the page"
    )


class TargetOutcome(BaseModel):
    model_config = _OUT

    target: str
    result: Literal["applied", "restored", "not_applied", "restore_failed", "unchanged"]
    message: str


class Execution(BaseModel):
    """What apply_changes / rollback_changes / scale_workload did."""

    model_config = _OUT

    change_set_id: ChangeSetId
    op: Literal["apply", "rollback"]
    status: Literal["applied", "refused", "failed_restored", "failed_not_restored"]
    targets: list[TargetOutcome]
    message: str
    rollback_hint: str | None = None


class HistoryEntry(BaseModel):
    model_config = _OUT

    seq: int
    at: str
    actor: str
    event: str
    change_set_id: str | None
    target: str | None
    result: str


class History(BaseModel):
    model_config = _OUT

    entries: list[HistoryEntry]
    audit_intact: bool
    audit_problem: str | None = None


class SafetyReport(BaseModel):
    """The state of every safety check sizeguard relies on, right now."""

    model_config = _OUT

    read_only: bool
    policy_engine: str = Field(description="ok, or why OPA is unusable")
    signing_key: str = Field(description="the key id approvals are signed with, or why none")
    webhook_registered: bool | None = Field(
        description="a ValidatingWebhookConfiguration named sizeguard exists (None: unknown)"
    )
    webhook_trusts_signing_key: bool | None = Field(
        default=None,
        description="the webhook names the signing key's kid among the keys it trusts, in "
        "its answer to a server-side dry run (false: every apply would be refused; null: "
        "unknown, or read-only)",
    )
    webhook_key_check: str = Field(
        default="", description="what the webhook said about the signing key, in words"
    )
    audit_log: str
    change_set: Preview | None = None
    approvals: list[str] = Field(default_factory=list)


class WorkloadUsage(BaseModel):
    model_config = _OUT

    target: str
    pods: int = Field(description="pods seen in the window")
    cpu_avg_cores: float | None = Field(description="average CPU per pod, cores")
    cpu_peak_cores: float | None
    memory_avg_bytes: float | None = Field(description="average working set per pod, bytes")
    memory_peak_bytes: float | None
    cpu_request_cores: float | None = Field(description="per pod, sum over containers")
    memory_request_bytes: float | None
    cpu_utilization: float | None = Field(description="cpu_avg / cpu_request (0.5 = 50%)")
    memory_utilization: float | None


class MissingData(BaseModel):
    model_config = _OUT

    target: str = Field(description="Kind/namespace/name")
    kind: GapReason = Field(
        description="query_failed (Prometheus failed for its namespace), no_containers, "
        "no_pods (none in the window), pods_unseen (Prometheus knows none of its live pods), "
        "no_metrics (no CPU or memory series), not_enough_data (fewer samples than required)"
    )
    reason: str = Field(description="the same, in words")


class Coverage(BaseModel):
    """Which workloads a result has usage data for. A query that failed for some of them
    (and answered for others) is not a tool error: those are listed here with the reason."""

    model_config = _OUT

    workloads: int = Field(description="workloads this result is about")
    with_data: int = Field(description="of them, those Prometheus had usage data for")
    without: list[MissingData] = Field(
        description="the others, each with why (no pods in the window, no series, a failed query)"
    )


class Metrics(BaseModel):
    model_config = _OUT

    window: str
    evaluated_at: float
    workloads: list[WorkloadUsage]
    coverage: Coverage
    total_workloads: int = Field(description="workloads selected, on every page")
    next_cursor: str | None = Field(
        default=None, description="pass as cursor (same arguments) for the next page"
    )


class ClusterStatePage(BaseModel):
    """One page of the cluster's state: workloads in (namespace, name, kind) order, the HPAs
    that scale them and their namespaces' labels; HPAs whose target is not a listed workload,
    and namespaces without workloads, come on the last page. The capacity is the whole
    cluster's, on every page."""

    model_config = _OUT

    workloads: list[WorkloadState]
    hpas: list[HpaState]
    namespaces: dict[str, NamespaceInfo]
    capacity: Capacity
    total_workloads: int = Field(description="workloads selected, on every page")
    next_cursor: str | None = Field(
        default=None, description="pass as cursor (same arguments) for the next page"
    )
