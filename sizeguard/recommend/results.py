"""The scan report, shaped as krr's JSON result."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from sizeguard.prometheus import ErrorKind
from sizeguard.recommend.replicas import ReplicaRecommendation
from sizeguard.recommend.strategies import (
    RESOURCES,
    ContainerData,
    Proposal,
    ResourceName,
    Severity,
    SimpleLimitSettings,
    StrategySettings,
    Value,
    round_value,
    score,
    severity,
)
from sizeguard.workloads import HpaInfo

# The only object warnings krr's result model accepts (``PodWarning`` in krr v1.29).
ObjectWarning = Literal["NoPrometheusPods", "NoPrometheusCPUMetrics", "NoPrometheusMemoryMetrics"]
NO_PODS: ObjectWarning = "NoPrometheusPods"
NO_CPU: ObjectWarning = "NoPrometheusCPUMetrics"
NO_MEMORY: ObjectWarning = "NoPrometheusMemoryMetrics"
_PROMETHEUS_ERROR_KINDS = frozenset(get_args(ErrorKind))


@dataclass(frozen=True)
class PodRef:
    name: str
    deleted: bool


@dataclass
class Allocations:
    requests: dict[str, Value]
    limits: dict[str, Value]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class ObjectData:
    cluster: str | None
    name: str
    container: str
    pods: list[PodRef]
    hpa: HpaInfo | None
    namespace: str
    kind: str
    allocations: Allocations
    warnings: list[str] = field(default_factory=list)  # ObjectWarning values, from sizeguard
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecommendationValue:
    value: Value
    severity: Severity


@dataclass
class Recommended:
    requests: dict[str, RecommendationValue]
    limits: dict[str, RecommendationValue]
    info: dict[str, str | None]


@dataclass
class Scan:
    object: ObjectData
    recommended: Recommended
    severity: Severity


@dataclass
class ScanResult:
    scans: list[Scan]
    strategy: str
    settings: dict[str, Any]
    description: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)
    replicas: list[ReplicaRecommendation] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> int:
        return score([s.severity for s in self.scans])


def scan_for(
    obj: ObjectData, proposals: dict[ResourceName, Proposal], cpu_min: int, memory_min: int
) -> Scan:
    requests: dict[str, RecommendationValue] = {}
    limits: dict[str, RecommendationValue] = {}
    for resource in RESOURCES:
        proposal = proposals[resource]
        for selector, raw, out in (
            ("requests", proposal.request, requests),
            ("limits", proposal.limit, limits),
        ):
            value = round_value(raw, resource, cpu_min, memory_min)
            current = getattr(obj.allocations, selector).get(resource)
            out[resource] = RecommendationValue(value, severity(resource, current, value))
    recommended = Recommended(requests, limits, {r: proposals[r].info for r in RESOURCES})
    worst = max((v.severity for v in (*requests.values(), *limits.values())), key=lambda s: s.rank)
    return Scan(obj, recommended, worst)


def object_warnings(
    prometheus_pods: Collection[str],
    live_pods: Collection[str],
    data: ContainerData,
    settings: StrategySettings,
) -> list[ObjectWarning]:
    """The warnings krr v1.29 puts on one container's object, under krr's conditions.

    - ``NoPrometheusPods``: Prometheus knows no pod of the workload in the window (or its
      discovery failed) while the API server lists live ones.
    - ``NoPrometheusCPUMetrics`` / ``NoPrometheusMemoryMetrics``: one of krr's metric loaders
      for that resource came back empty (or failed). The CPU loaders are the per-pod percentile
      (``simple``) or the raw rate (``simple_limit``) and the sample count; the memory ones the
      peak and the sample count, plus, with ``use_oomkill_data``, the OOM-kill limit, which is
      empty when nothing was OOM-killed: krr then warns too, and so does this.
    """
    warnings: list[ObjectWarning] = []
    if not prometheus_pods and live_pods:
        warnings.append(NO_PODS)
    cpu = data.cpu_samples if isinstance(settings, SimpleLimitSettings) else data.cpu
    if not cpu or not data.cpu_points:
        warnings.append(NO_CPU)
    memory = [data.memory_max, data.memory_points]
    if settings.use_oomkill_data:
        memory.append(data.oom_limit)
    if not all(memory):
        warnings.append(NO_MEMORY)
    return warnings


def workloads_without_data(result: ScanResult) -> dict[str, list[str]]:
    """``"Kind namespace/name"`` -> what Prometheus lacked, for the workloads some of whose
    containers got no CPU or no memory metrics (in report order)."""
    gaps: dict[str, list[str]] = {}
    for scan in result.scans:
        obj = scan.object
        missing = [w for w in (NO_PODS, NO_CPU, NO_MEMORY) if w in obj.warnings]
        if NO_CPU not in missing and NO_MEMORY not in missing:
            continue
        known = gaps.setdefault(f"{obj.kind} {obj.namespace}/{obj.name}", [])
        known.extend(w for w in missing if w not in known)
    return gaps


def prometheus_failures(result: ScanResult) -> list[dict[str, Any]]:
    """The ``errors`` entries that are Prometheus failing: a failed discovery (its
    :class:`~sizeguard.prometheus.PrometheusError` kind) or a query failed in a namespace."""
    return [
        e for e in result.errors if e.get("namespace") or e.get("kind") in _PROMETHEUS_ERROR_KINDS
    ]


def scanned_nothing(result: ScanResult) -> bool:
    """True when Prometheus failed and no container got any metric: a report of "?" only."""
    return (
        bool(prometheus_failures(result))
        and bool(result.scans)
        and all(
            NO_CPU in s.object.warnings and NO_MEMORY in s.object.warnings for s in result.scans
        )
    )
