"""The scan report, shaped as krr's JSON result."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
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
from sizeguard.workloads import HpaInfo, Workload

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


def prometheus_failures(result: ScanResult) -> list[dict[str, Any]]:
    """The ``errors`` entries that are Prometheus failing: a failed discovery (its
    :class:`~sizeguard.prometheus.PrometheusError` kind) or a query failed in a namespace."""
    return [
        e for e in result.errors if e.get("namespace") or e.get("kind") in _PROMETHEUS_ERROR_KINDS
    ]


GapReason = Literal[
    "query_failed",  # Prometheus queries of its namespace failed, and left it without data
    "no_containers",  # nothing to measure
    "no_pods",  # no pod in the window, in the cluster or in kube-state-metrics
    "pods_unseen",  # the API server lists pods Prometheus knows nothing of (NoPrometheusPods)
    "no_metrics",  # Prometheus has no CPU or memory series of a container
    "not_enough_data",  # fewer samples than the strategy's points_required
]
NO_PODS_TEXT = "no pods in the window (in the cluster or in kube-state-metrics)"
_RESOURCE_WARNINGS: tuple[tuple[ResourceName, ObjectWarning], ...] = (
    ("cpu", NO_CPU),
    ("memory", NO_MEMORY),
)


@dataclass(frozen=True)
class Gap:
    """A workload without usage data (or with too little), and why: ``reason`` to decide on,
    ``detail`` to read."""

    kind: str
    namespace: str
    name: str
    reason: GapReason
    detail: str
    missing: frozenset[str] = frozenset({"cpu", "memory"})

    @property
    def target(self) -> str:
        """``Kind/namespace/name`` (the MCP tools' form)."""
        return f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def label(self) -> str:
        """``Kind namespace/name`` (the command line's form)."""
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Coverage:
    """Which workloads of a scan have usage data: ``gaps`` names the others, and
    ``failures`` the Prometheus errors among the scan's ``errors``."""

    workloads: int
    gaps: list[Gap]
    failures: list[dict[str, Any]]

    @property
    def with_data(self) -> int:
        return self.workloads - len(self.gaps)

    @property
    def answered_nothing(self) -> bool:
        """Prometheus failed and left every workload with something to measure without any
        data: a report of "?" only, which must not read as a result."""
        failed = [g for g in self.gaps if g.reason == "query_failed"]
        return (
            bool(self.failures)
            and bool(failed)
            and all(g.reason in ("query_failed", "no_containers") for g in self.gaps)
            and len(self.gaps) == self.workloads
            and all(g.missing == {"cpu", "memory"} for g in failed)
        )

    @property
    def cause(self) -> str:
        """Why Prometheus failed, in its words: a whole-scan failure, else the first one."""
        whole = [e for e in self.failures if not e.get("namespace")]
        first = (whole or self.failures or [{}])[0]
        return str(first.get("message") or "Prometheus failed")


def _missing(scans: Sequence[Scan]) -> frozenset[str]:
    return frozenset(r for s in scans for r, w in _RESOURCE_WARNINGS if w in s.object.warnings)


def _short_of_points(scans: Sequence[Scan]) -> list[tuple[str, str]]:
    """(resource, container) whose recommendation is krr's "Not enough data"."""
    return [
        (resource, s.object.container)
        for s in scans
        for resource in RESOURCES
        if s.recommended.info.get(resource) == "Not enough data"
    ]


def _gap(key: tuple[str, str, str], scans: Sequence[Scan], failed: Mapping[str, str]) -> Gap | None:
    """Why a workload's scans lack usage data, or None when they have it."""
    kind, namespace, name = key
    missing = _missing(scans)

    def gap(reason: GapReason, detail: str, lacking: frozenset[str] = missing) -> Gap:
        return Gap(kind, namespace, name, reason, detail, lacking)

    if not scans:
        return gap("no_containers", "it has no containers", frozenset())
    if namespace in failed and missing:
        return gap(
            "query_failed",
            f"Prometheus queries for namespace {namespace} failed: {failed[namespace]}",
        )
    if all(not s.object.pods for s in scans):
        return gap("no_pods", NO_PODS_TEXT)
    if any(NO_PODS in s.object.warnings for s in scans):
        return gap("pods_unseen", "Prometheus lists none of its pods")
    if missing:
        words = {"cpu": "no CPU metrics", "memory": "no memory metrics"}
        return gap("no_metrics", ", ".join(words[r] for r in sorted(missing)))
    short = _short_of_points(scans)
    if short:
        return gap(
            "not_enough_data",
            "not enough data points (points_required) for "
            + ", ".join(f"{r} of container {c}" for r, c in short),
            frozenset(r for r, _ in short),
        )
    return None


def coverage(result: ScanResult, workloads: Iterable[Workload] | None = None) -> Coverage:
    """Which of ``workloads`` (default: those the scans are about) have usage data, and why
    the others have none. The one answer the MCP tools (``coverage``) and ``sizeguard scan``
    (its notes and exit status) both give."""
    by_workload: dict[tuple[str, str, str], list[Scan]] = defaultdict(list)
    for s in result.scans:
        by_workload[(s.object.kind, s.object.namespace, s.object.name)].append(s)
    keys = list(by_workload) if workloads is None else [w.key for w in workloads]
    failures = prometheus_failures(result)
    failed: dict[str, str] = {}
    for error in failures:
        if error.get("namespace"):
            failed.setdefault(str(error["namespace"]), str(error.get("message", "")))
    gaps = [g for key in keys if (g := _gap(key, by_workload.get(key, []), failed)) is not None]
    return Coverage(workloads=len(keys), gaps=gaps, failures=failures)
