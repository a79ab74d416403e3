"""The MCP tools' inputs and outputs: pydantic models at the boundary.

Inputs are strict about shape (unknown fields are refused) because they come from the model;
outputs are what the assistant reads, so every field has a description.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from sizeguard.policy import Finding

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


class Edit(BaseModel):
    """An explicit edit of one object's guarded fields. Fields left out stay as they are."""

    model_config = _IN

    kind: Literal["Deployment", "StatefulSet", "DaemonSet", "HorizontalPodAutoscaler"]
    namespace: Name
    name: Name
    container: Annotated[str, Field(max_length=253)] | None = Field(
        default=None, description="the container (or init container) to resize"
    )
    cpu_request: Quantity | None = None
    cpu_limit: Quantity | None = None
    memory_request: Quantity | None = None
    memory_limit: Quantity | None = None
    replicas: Annotated[int, Field(ge=0, le=100000)] | None = None
    min_replicas: Annotated[int, Field(ge=1, le=100000)] | None = None
    max_replicas: Annotated[int, Field(ge=1, le=100000)] | None = None
    reason: Annotated[str, Field(max_length=1000)] = ""


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
    max_targets: Annotated[int, Field(ge=1, le=1000, description="at most this many objects")] = 50


class DryRun(BaseModel):
    model_config = _OUT

    target: str
    admitted: bool = Field(description="the apiserver and its admission chain accepted it")
    warnings: list[str] = Field(description="admission warnings (the sizeguard webhook's)")
    error: str | None = None


class TargetDiff(BaseModel):
    model_config = _OUT

    target: str = Field(description="Kind/namespace/name")
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
    next_step: str


class Confirmation(BaseModel):
    model_config = _OUT

    change_set_id: ChangeSetId
    op: Literal["apply", "rollback"]
    status: Literal["approved", "declined", "cancelled", "refused"]
    approver: str | None = None
    expires_at: str | None = Field(default=None, description="the approval is good until then")
    message: str


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


class Metrics(BaseModel):
    model_config = _OUT

    window: str
    evaluated_at: float
    workloads: list[WorkloadUsage]
    errors: list[str]
