"""krr-compatible right-sizing from Prometheus history, and replica recommendations.

Strategies (semantics and defaults of krr's, every parameter overridable):

``simple``
    CPU request = the largest, over the workload's pods (every pod the kube-state-metrics
    series show during the window, deleted ones included), of each pod's ``cpu_percentile``
    (95) of the CPU rate, sampled every ``timeframe_duration`` (1.25 min) over
    ``history_duration`` (336 h); no CPU limit. Memory request = limit = the peak working set
    x (1 + ``memory_buffer_percentage`` / 100) (15 %), or, with ``use_oomkill_data``, at least
    the memory limit the container was OOM-killed at x (1 + ``oom_memory_buffer_percentage``
    / 100) (25 %).
``simple-limit`` (krr's ``simple_limit``)
    CPU request and limit = the ``cpu_request`` (66) and ``cpu_limit`` (96) percentiles of all
    the pods' CPU rate samples pooled together; memory as ``simple``.

Both give "?" for a resource with fewer than ``points_required`` (100) samples over all pods,
without data, or scaled by an HPA (unless ``allow_hpa``). CPU is rounded up to 1 m and memory
to 1 MiB, with minimums of ``cpu_min_value`` (10 m) and ``memory_min_value`` (100 MiB).

The query plan batches by namespace: one PromQL query per metric for a group of namespaces
(at most ``batch_pods`` pods each), never one per container. Bad data (NaN, a failed or hung
query, missing series) becomes a per-workload "?" with the reason in ``info``; never a crash
and never a number computed from data that is not there.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sizeguard.prometheus import PrometheusClient, PrometheusError, format_duration
from sizeguard.workloads import HpaInfo, Workload

__all__ = [
    "MIB",
    "STRATEGIES",
    "Allocations",
    "ContainerData",
    "ObjectData",
    "PodRef",
    "Proposal",
    "RecommendationValue",
    "Recommended",
    "ReplicaRecommendation",
    "ResourceName",
    "Scan",
    "ScanResult",
    "Severity",
    "SimpleLimitSettings",
    "SimpleSettings",
    "StrategySettings",
    "Value",
    "build_scans",
    "collect",
    "cpu_severity",
    "hpa_desired_replicas",
    "memory_severity",
    "propose",
    "recommend_replicas",
    "round_value",
    "scan",
    "score",
    "settings_for",
    "severity",
]

MIB = 1024**2
ResourceName = Literal["cpu", "memory"]
RESOURCES: tuple[ResourceName, ...] = ("cpu", "memory")
Value = float | Literal["?"] | None


# ---------------------------------------------------------------------------------------------
# Settings


class StrategySettings(BaseModel):
    """What every krr strategy takes (names and units as krr's: hours, minutes, percent)."""

    model_config = ConfigDict(extra="forbid")

    history_duration: float = Field(336, gt=0, description="hours of history to look at")
    timeframe_duration: float = Field(1.25, gt=0, description="step of the history, in minutes")
    memory_buffer_percentage: float = Field(15, gt=0)
    points_required: int = Field(100, ge=1)
    allow_hpa: bool = False
    use_oomkill_data: bool = False
    oom_memory_buffer_percentage: float = Field(25, ge=0)

    @property
    def history_seconds(self) -> int:
        return round(self.history_duration * 3600)

    @property
    def step_seconds(self) -> int:
        # krr formats the step as whole seconds: f"{round(step.total_seconds())}s".
        return max(1, round(self.timeframe_duration * 60))


class SimpleSettings(StrategySettings):
    cpu_percentile: float = Field(95, gt=0, le=100)


class SimpleLimitSettings(StrategySettings):
    cpu_request: float = Field(66, gt=0, le=100)
    cpu_limit: float = Field(96, gt=0, le=100)


STRATEGIES: dict[str, type[StrategySettings]] = {
    "simple": SimpleSettings,
    "simple-limit": SimpleLimitSettings,
}


def settings_for(strategy: str, **overrides: Any) -> StrategySettings:
    """The settings of a strategy with the given (non-None) overrides."""
    name = strategy.replace("_", "-")
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
    model = STRATEGIES[name]
    known = set(model.model_fields)
    return model(**{k: v for k, v in overrides.items() if v is not None and k in known})


def strategy_name(settings: StrategySettings) -> str:
    return "simple-limit" if isinstance(settings, SimpleLimitSettings) else "simple"


def describe(settings: StrategySettings) -> str:
    if isinstance(settings, SimpleLimitSettings):
        cpu = (
            f"CPU request: {settings.cpu_request}% percentile, "
            f"limit: {settings.cpu_limit}% percentile"
        )
    else:
        assert isinstance(settings, SimpleSettings)
        cpu = f"CPU request: {settings.cpu_percentile}% percentile, limit: unset"
    buffer = settings.memory_buffer_percentage
    text = (
        f"{cpu}\nMemory request: max + {buffer}%, limit: max + {buffer}%\n"
        f"History: {settings.history_duration} hours\nStep: {settings.timeframe_duration} minutes\n"
    )
    if not settings.allow_hpa:
        text += (
            "\nThis strategy does not work with objects with HPA defined (Horizontal Pod "
            'Autoscaler).\nIf HPA is defined for CPU or Memory, the strategy will return "?" '
            "for that resource.\nYou can override this behaviour by passing the --allow-hpa flag\n"
        )
    return text


# ---------------------------------------------------------------------------------------------
# Severity, rounding, score (krr's rules)


class Severity(StrEnum):
    UNKNOWN = "UNKNOWN"
    GOOD = "GOOD"
    OK = "OK"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


def _bands(diff: float, critical: float, warning: float, ok: float) -> Severity:
    if diff >= critical:
        return Severity.CRITICAL
    if diff >= warning:
        return Severity.WARNING
    if diff >= ok:
        return Severity.OK
    return Severity.GOOD


def cpu_severity(current: float | None, recommended: float | None) -> Severity:
    if current is None and recommended is None:
        return Severity.GOOD
    if current is None or recommended is None:
        return Severity.WARNING
    return _bands(abs(current - recommended), 0.5, 0.25, 0.1)


def memory_severity(current: float | None, recommended: float | None) -> Severity:
    if current is None and recommended is None:
        return Severity.GOOD
    if current is None or recommended is None:
        return Severity.WARNING
    return _bands(abs(current - recommended) / MIB, 500, 250, 100)


def severity(resource: ResourceName, current: Value, recommended: Value) -> Severity:
    if isinstance(current, str) or isinstance(recommended, str):
        return Severity.UNKNOWN
    calc = cpu_severity if resource == "cpu" else memory_severity
    return calc(current, recommended)


def round_value(
    value: float | None,
    resource: ResourceName,
    cpu_min_value: int = 10,
    memory_min_value: int = 100,
) -> Value:
    """krr's rounding: CPU up to 1 m, memory up to 1 MiB, then the minimums; NaN is "?"."""
    if value is None:
        return None
    if math.isnan(value):
        return "?"
    if resource == "cpu":
        rounded = math.ceil(value * 1000) / 1000
        return max(rounded, cpu_min_value / 1000)
    rounded = float(math.ceil(value / MIB) * MIB)
    return max(rounded, float(memory_min_value * MIB))


def score(severities: Sequence[Severity]) -> int:
    """krr's score: 100 minus 70 points per WARNING and 100 per CRITICAL, averaged."""
    if not severities:
        return 0
    cost = sum(
        0.7 if s is Severity.WARNING else 1.0 if s is Severity.CRITICAL else 0.0 for s in severities
    )
    return int((len(severities) - cost) / len(severities) * 100)


# ---------------------------------------------------------------------------------------------
# The strategies, as pure functions of the per-pod data


@dataclass
class ContainerData:
    """What Prometheus says about one container of one workload, by pod name."""

    cpu: dict[str, float] = field(default_factory=dict)  # simple: each pod's percentile
    cpu_samples: dict[str, Sequence[float]] = field(default_factory=dict)  # simple-limit
    cpu_points: dict[str, float] = field(default_factory=dict)
    cpu_mean: dict[str, float] = field(default_factory=dict)
    memory_max: dict[str, float] = field(default_factory=dict)
    memory_points: dict[str, float] = field(default_factory=dict)
    oom_limit: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Proposal:
    request: float | None  # NaN: undefined ("?")
    limit: float | None
    info: str | None = None

    @classmethod
    def undefined(cls, info: str) -> Proposal:
        return cls(math.nan, math.nan, info)


def _percentile(values: Sequence[float], q: float) -> float:
    """numpy's default percentile (linear interpolation between closest ranks)."""
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _bad(values: dict[str, float]) -> str | None:
    for pod, value in sorted(values.items()):
        if not math.isfinite(value):
            return f"Prometheus returned {value} for pod {pod}"
    return None


def _gate(
    data: dict[str, Any], points: dict[str, float], settings: StrategySettings, hpa_blocks: bool
) -> str | None:
    if not data:
        return "No data"
    counted = sum(v for v in points.values() if math.isfinite(v))
    if counted < settings.points_required:
        return "Not enough data"
    if hpa_blocks and not settings.allow_hpa:
        return "HPA detected"
    return None


def propose(
    settings: StrategySettings, data: ContainerData, hpa: HpaInfo | None
) -> dict[ResourceName, Proposal]:
    """krr's run(): the raw (unrounded) CPU and memory proposals for one container."""
    out: dict[ResourceName, Proposal] = {}
    computers: dict[ResourceName, Callable[..., Proposal]] = {"cpu": _cpu, "memory": _memory}
    for resource in RESOURCES:
        failed = _failures(data.errors, resource, settings)
        if failed:
            out[resource] = Proposal.undefined("Prometheus error: " + "; ".join(failed))
        else:
            out[resource] = computers[resource](settings, data, hpa)
    return out


_NEEDS: dict[ResourceName, frozenset[str]] = {
    "cpu": frozenset({"pod discovery", "cpu", "cpu_points"}),
    "memory": frozenset({"pod discovery", "memory_max", "memory_points"}),
}


def _failures(
    errors: Sequence[str], resource: ResourceName, settings: StrategySettings
) -> list[str]:
    """The errors (``"<metric>: <message>"``) that leave ``resource`` without its data."""
    needed = set(_NEEDS[resource])
    if resource == "memory" and settings.use_oomkill_data:
        needed.add("oom_limit")
    return sorted({e for e in errors if e.split(":", 1)[0] in needed})


def _cpu(settings: StrategySettings, data: ContainerData, hpa: HpaInfo | None) -> Proposal:
    source: dict[str, Any] = (
        data.cpu_samples if isinstance(settings, SimpleLimitSettings) else data.cpu
    )
    blocked = _gate(source, data.cpu_points, settings, hpa is not None and hpa.scales_on_cpu)
    if blocked:
        return Proposal.undefined(blocked)
    if isinstance(settings, SimpleLimitSettings):
        pooled = [v for values in data.cpu_samples.values() for v in values]
        bad = next((v for v in pooled if not math.isfinite(v)), None)
        if bad is not None or not pooled:
            return Proposal.undefined(f"Prometheus returned {bad} in the CPU samples")
        return Proposal(
            _percentile(pooled, settings.cpu_request), _percentile(pooled, settings.cpu_limit)
        )
    bad_info = _bad(data.cpu)
    if bad_info:
        return Proposal.undefined(bad_info)
    return Proposal(max(data.cpu.values()), None)


def _memory(settings: StrategySettings, data: ContainerData, hpa: HpaInfo | None) -> Proposal:
    oom = 0.0
    if settings.use_oomkill_data:
        finite = [v for v in data.oom_limit.values() if math.isfinite(v)]
        oom = max(finite, default=0.0)
    blocked = _gate(
        data.memory_max, data.memory_points, settings, hpa is not None and hpa.scales_on_memory
    )
    if blocked:
        return Proposal.undefined(blocked)
    bad_info = _bad(data.memory_max)
    if bad_info:
        return Proposal.undefined(bad_info)
    value = max(
        max(data.memory_max.values()) * (1 + settings.memory_buffer_percentage / 100),
        oom * (1 + settings.oom_memory_buffer_percentage / 100),
    )
    return Proposal(value, value, "OOMKill detected" if oom else None)


# ---------------------------------------------------------------------------------------------
# Replicas (the AI-scaler side)


def hpa_desired_replicas(
    current: int, utilization: float, target: float, tolerance: float = 0.1
) -> int:
    """The HPA controller's formula: ceil(current x usage / target), unchanged within tolerance."""
    if current <= 0 or target <= 0:
        return current
    ratio = utilization / target
    if abs(ratio - 1.0) <= tolerance:
        return current
    return math.ceil(current * ratio)


@dataclass(frozen=True)
class ReplicaRecommendation:
    kind: str
    namespace: str
    name: str
    current_replicas: int
    utilization: float  # average usage / request, per pod
    target_utilization: float
    recommended_replicas: int | None = None
    hpa_min_replicas: tuple[int, int] | None = None  # (current, proposed)
    hpa_max_replicas: tuple[int, int] | None = None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "current_replicas": self.current_replicas,
            "utilization": round(self.utilization, 4),
            "target_utilization": self.target_utilization,
            "reason": self.reason,
        }
        if self.recommended_replicas is not None:
            out["recommended_replicas"] = self.recommended_replicas
        if self.hpa_min_replicas is not None and self.hpa_max_replicas is not None:
            out["hpa"] = {
                "min_replicas": {
                    "current": self.hpa_min_replicas[0],
                    "recommended": self.hpa_min_replicas[1],
                },
                "max_replicas": {
                    "current": self.hpa_max_replicas[0],
                    "recommended": self.hpa_max_replicas[1],
                },
            }
        return out


def recommend_replicas(
    workload: Workload,
    *,
    peak_usage: float,
    mean_usage: float,
    target_utilization: float = 0.7,
    tolerance: float = 0.1,
    min_replicas: int = 1,
    max_replicas: int | None = None,
    max_scale_down: float = 0.5,
    hpa_headroom: float = 0.25,
) -> ReplicaRecommendation | None:
    """Replicas for one workload from its per-pod CPU usage (cores) against its CPU request.

    Without an HPA: the HPA formula on the per-pod ``peak_usage`` (the strategy's CPU
    percentile), within [min_replicas, max_replicas], and never more than ``max_scale_down``
    of the current replicas removed in one step. With an HPA: propose its minReplicas from the
    mean usage and its maxReplicas from the peak usage plus ``hpa_headroom``.
    """
    if workload.kind == "DaemonSet" or workload.replicas is None:
        return None
    request = sum(c.cpu_request or 0.0 for c in workload.containers)
    if request <= 0:
        return None
    current = workload.replicas
    if workload.hpa is not None and workload.hpa.current_replicas:
        current = workload.hpa.current_replicas
    if current <= 0:
        return None
    target = target_utilization
    if workload.hpa is not None and workload.hpa.target_cpu_utilization_percentage:
        target = workload.hpa.target_cpu_utilization_percentage / 100
    peak, mean = peak_usage / request, mean_usage / request
    floor = max(1, math.ceil(current * (1 - max_scale_down)))

    def bounded(value: int) -> int:
        value = max(value, min_replicas, 1)
        if max_replicas is not None:
            value = min(value, max_replicas)
        return value

    def make(utilization: float, **extra: Any) -> ReplicaRecommendation:
        return ReplicaRecommendation(
            kind=workload.kind,
            namespace=workload.namespace,
            name=workload.name,
            current_replicas=current,
            target_utilization=target,
            utilization=utilization,
            **extra,
        )

    if workload.hpa is None:
        desired = hpa_desired_replicas(current, peak, target, tolerance)
        recommended = bounded(max(desired, floor))
        reason = (
            f"per-pod CPU at the percentile is {peak:.0%} of the request against a "
            f"{target:.0%} target"
        )
        if desired < floor:
            reason += f"; scale-down limited to {max_scale_down:.0%} per step"
        return make(peak, recommended_replicas=recommended, reason=reason)
    hpa = workload.hpa
    new_min = bounded(
        max(
            hpa_desired_replicas(current, mean, target, tolerance),
            max(1, math.ceil(hpa.min_replicas * (1 - max_scale_down))),
        )
    )
    peak_need = math.ceil(current * peak / target * (1 + hpa_headroom))
    new_max = max(new_min, peak_need, math.ceil(hpa.max_replicas * (1 - max_scale_down)))
    if max_replicas is not None:
        new_max = min(new_max, max_replicas)
    return make(
        mean,
        hpa_min_replicas=(hpa.min_replicas, new_min),
        hpa_max_replicas=(hpa.max_replicas, max(new_max, new_min)),
        reason=(
            f"mean CPU {mean:.0%} and peak {peak:.0%} of the request per pod against a "
            f"{target:.0%} HPA target"
        ),
    )


# ---------------------------------------------------------------------------------------------
# The report (krr's JSON schema)


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
    warnings: list[str] = field(default_factory=list)
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


def _scan_for(
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


# ---------------------------------------------------------------------------------------------
# The query plan


_REGEX_SPECIAL = set(".^$*+?()[]{}|\\")


def _promql_regex_literal(value: str) -> str:
    """``value`` matched literally inside a PromQL double-quoted regex string."""
    out = []
    for char in value:
        if char in _REGEX_SPECIAL:
            out.append("\\\\" + char)  # a regex escape, itself escaped for the string
        elif char == '"':
            out.append('\\"')
        else:
            out.append(char)
    return "".join(out)


def _regex_alternation(values: Iterable[str]) -> str:
    return "|".join(_promql_regex_literal(v) for v in sorted(values))


def _namespace_matcher(namespaces: Sequence[str] | None) -> str:
    if not namespaces:
        return 'namespace!=""'
    if len(namespaces) == 1:
        return f'namespace="{namespaces[0]}"'
    return f'namespace=~"{_regex_alternation(namespaces)}"'


_BY = "namespace, pod, container, job"


def metric_queries(
    settings: StrategySettings,
    namespaces: Sequence[str] | None,
    with_mean: bool,
    *,
    aggregate: bool = True,
    pods: tuple[bool, Sequence[str]] | None = None,
    oom: bool = True,
) -> dict[str, str]:
    """The instant queries for one batch of namespaces, by what they load.

    krr wraps every selector in ``max by (container, pod, job)``, which folds the several
    series a container can have over time (cAdvisor starts a new one, with a new ``id``, at
    each restart). Where each (namespace, pod, container, job) has a single series the fold
    changes no value, and leaving it out makes the queries several times cheaper: so
    ``aggregate=False`` is used for the pods known to have one series each (``pods=(False,
    names)`` excludes the others, which get ``aggregate=True`` with ``pods=(True, names)``).
    """
    window = format_duration(settings.history_seconds)
    step = f"{settings.step_seconds}s"
    sel = f'{_namespace_matcher(namespaces)}, container!="", container!="POD"'
    if pods is not None:
        sel += f', pod{"=~" if pods[0] else "!~"}"{_regex_alternation(pods[1])}"'
    cpu = f"container_cpu_usage_seconds_total{{{sel}}}"
    mem = f"container_memory_working_set_bytes{{{sel}}}"

    def fold(expr: str) -> str:
        return f"max by ({_BY}) ({expr})" if aggregate else expr

    rate = fold(f"rate({cpu}[{step}])")
    queries = {
        "cpu_points": f"count_over_time({fold(cpu)}[{window}:{step}])",
        "memory_max": f"max_over_time({fold(mem)}[{window}:{step}])",
        "memory_points": f"count_over_time({fold(mem)}[{window}:{step}])",
    }
    if isinstance(settings, SimpleSettings):
        q = round(settings.cpu_percentile / 100, 2)  # krr rounds the quantile to 2 decimals
        queries["cpu"] = f"quantile_over_time({q}, {rate}[{window}:{step}])"
    if with_mean:
        queries["cpu_mean"] = f"avg_over_time({rate}[{window}:{step}])"
    if settings.use_oomkill_data and oom:
        ns = _namespace_matcher(namespaces)
        queries["oom_limit"] = (
            f"max_over_time(max by ({_BY}) ("
            f'max by ({_BY}) (kube_pod_container_resource_limits{{resource="memory", {ns}}})'
            f" * on (namespace, pod, container, job) group_left (reason) "
            f"max by ({_BY}, reason) (kube_pod_container_status_last_terminated_reason"
            f'{{reason="OOMKilled", {ns}}}))[{window}:{step}])'
        )
    return queries


async def pods_with_several_series(
    client: PrometheusClient, settings: StrategySettings, namespaces: Sequence[str], at: float
) -> set[str]:
    """Pods where some (namespace, pod, container, job) has more than one series in the window.

    One call to the series API (the index only, no samples) for both metrics.
    """
    sel = f'{_namespace_matcher(namespaces)}, container!="", container!="POD"'
    series = await client.series(
        [
            f"container_cpu_usage_seconds_total{{{sel}}}",
            f"container_memory_working_set_bytes{{{sel}}}",
        ],
        start=at - settings.history_seconds - _LOOKBACK,
        end=at,
    )
    seen: dict[tuple[str, ...], int] = defaultdict(int)
    for labels in series:
        key = tuple(labels.get(k, "") for k in ("__name__", "namespace", "pod", "container", "job"))
        seen[key] += 1
    return {key[2] for key, count in seen.items() if count > 1}


_LOOKBACK = 300  # Prometheus' default lookback delta, seconds


def _pick_job(items: Iterable[tuple[dict[str, str], Any]]) -> dict[tuple[str, str, str], Any]:
    """One series per (namespace, pod, container): the kubelet job's, else the first by job."""
    grouped: dict[tuple[str, str, str], list[tuple[str, Any]]] = defaultdict(list)
    for labels, value in items:
        key = (labels.get("namespace", ""), labels.get("pod", ""), labels.get("container", ""))
        grouped[key].append((labels.get("job", ""), value))
    chosen: dict[tuple[str, str, str], Any] = {}
    for key, options in grouped.items():
        kubelet = [v for job, v in options if job == "kubelet"]
        chosen[key] = kubelet[0] if len(kubelet) == 1 else sorted(options, key=lambda o: o[0])[0][1]
    return chosen


@dataclass
class Collected:
    """Per-(namespace, pod, container) values by metric, and errors by namespace."""

    values: dict[str, dict[tuple[str, str, str], Any]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    pods: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)  # workload -> pods


async def discover_pods(
    client: PrometheusClient,
    settings: StrategySettings,
    namespaces: Sequence[str] | None,
    at: float,
) -> dict[tuple[str, str, str], set[str]]:
    """Every pod kube-state-metrics saw during the window, by (kind, namespace, workload)."""
    window = format_duration(settings.history_seconds)
    ns = _namespace_matcher(namespaces)
    replicasets, owners = await asyncio.gather(
        client.query(
            f'last_over_time(kube_replicaset_owner{{owner_kind="Deployment", {ns}}}[{window}])',
            at,
        ),
        client.query(f"last_over_time(kube_pod_owner{{{ns}}}[{window}])", at),
    )
    deployment_of = {
        (s.labels.get("namespace", ""), s.labels.get("replicaset", "")): s.labels.get(
            "owner_name", ""
        )
        for s in replicasets
    }
    found: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for sample in owners:
        labels = sample.labels
        namespace, kind, name = (
            labels.get("namespace", ""),
            labels.get("owner_kind", ""),
            labels.get("owner_name", ""),
        )
        if kind == "ReplicaSet":
            deployment = deployment_of.get((namespace, name))
            if not deployment:
                continue
            kind, name = "Deployment", deployment
        found[(kind, namespace, name)].add(labels.get("pod", ""))
    return dict(found)


def _batches(pod_counts: dict[str, int], batch_pods: int) -> list[list[str]]:
    """Namespaces grouped so that each group has at most ``batch_pods`` pods (or one ns)."""
    batches: list[list[str]] = []
    current: list[str] = []
    size = 0
    for namespace in sorted(pod_counts):
        count = pod_counts[namespace]
        if current and size + count > batch_pods:
            batches.append(current)
            current, size = [], 0
        current.append(namespace)
        size += count
    if current:
        batches.append(current)
    return batches


async def collect(
    client: PrometheusClient,
    settings: StrategySettings,
    namespaces: Sequence[str] | None,
    *,
    at: float,
    batch_pods: int = 500,
    range_pods: int = 50,
    with_mean: bool = True,
) -> Collected:
    """Run the query plan: discovery, then one query per metric per batch of namespaces."""
    out = Collected()
    out.pods = await discover_pods(client, settings, namespaces, at)
    counts: dict[str, int] = defaultdict(int)
    for (_, namespace, _), pods in out.pods.items():
        counts[namespace] += len(pods)
    for namespace in namespaces or ():
        counts.setdefault(namespace, 0)
    batches = _batches(counts, batch_pods)

    async def run_instant(batch: list[str], metric: str, promql: str) -> None:
        try:
            samples = await client.query(promql, at)
        except PrometheusError as exc:
            for namespace in batch:
                out.errors[namespace].append(f"{metric}: {exc}")
            return
        out.values.setdefault(metric, {}).update(_pick_job((s.labels, s.value) for s in samples))

    async def run_range(namespace: str, pods: list[str], aggregate: bool) -> None:
        # Raw samples are heavy: a few pods at a time, never a whole batch.
        step = settings.step_seconds
        rate = (
            "rate(container_cpu_usage_seconds_total"
            f'{{namespace="{namespace}", pod=~"{_regex_alternation(pods)}", '
            f'container!="", container!="POD"}}[{step}s])'
        )
        if aggregate:
            rate = f"max by ({_BY}) ({rate})"
        end = int(at) // 60 * 60  # krr: now, to the minute
        try:
            series = await client.query_range(rate, end - settings.history_seconds, end, step)
        except PrometheusError as exc:
            out.errors[namespace].append(f"cpu: {exc}")
            return
        out.values.setdefault("cpu_samples", {}).update(
            _pick_job((s.labels, s.values) for s in series)
        )

    async def plan(batch: list[str]) -> None:
        try:
            several = sorted(await pods_with_several_series(client, settings, batch, at))
        except PrometheusError:
            several = None  # unknown: keep krr's folded form everywhere
        if several == []:
            sets = [metric_queries(settings, batch, with_mean, aggregate=False)]
        elif several is None:
            sets = [metric_queries(settings, batch, with_mean)]
        else:
            sets = [
                metric_queries(settings, batch, with_mean, aggregate=False, pods=(False, several)),
                metric_queries(settings, batch, with_mean, pods=(True, several), oom=False),
            ]
        jobs = [run_instant(batch, m, q) for queries in sets for m, q in queries.items()]
        if isinstance(settings, SimpleLimitSettings):
            folded = set(several or ()) if several is not None else None
            for namespace in batch:
                names = sorted(
                    {p for (_, ns, _), owned in out.pods.items() if ns == namespace for p in owned}
                )
                for i in range(0, len(names), range_pods):
                    chunk = names[i : i + range_pods]
                    aggregate = folded is None or any(p in folded for p in chunk)
                    jobs.append(run_range(namespace, chunk, aggregate))
        await asyncio.gather(*jobs)

    await asyncio.gather(*(plan(batch) for batch in batches))
    return out


def container_data(
    collected: Collected, namespace: str, pods: Iterable[str], container: str
) -> ContainerData:
    data = ContainerData(errors=list(collected.errors.get(namespace, [])))
    for pod in pods:
        key = (namespace, pod, container)
        for metric, target in (
            ("cpu", data.cpu),
            ("cpu_samples", data.cpu_samples),
            ("cpu_points", data.cpu_points),
            ("cpu_mean", data.cpu_mean),
            ("memory_max", data.memory_max),
            ("memory_points", data.memory_points),
            ("oom_limit", data.oom_limit),
        ):
            value = collected.values.get(metric, {}).get(key)
            if value is not None:
                target[pod] = value
    return data


def build_scans(
    workloads: Sequence[Workload],
    collected: Collected,
    settings: StrategySettings,
    *,
    cluster: str | None = None,
    cpu_min_value: int = 10,
    memory_min_value: int = 100,
    target_utilization: float | None = 0.7,
) -> tuple[list[Scan], list[ReplicaRecommendation]]:
    scans: list[Scan] = []
    replicas: list[ReplicaRecommendation] = []
    for workload in workloads:
        seen = collected.pods.get(workload.key, set())
        live = set(workload.live_pods)
        pods = sorted(seen | live)
        peak = mean = 0.0
        usable = bool(workload.containers)
        for c in workload.containers:
            obj = ObjectData(
                cluster=cluster,
                name=workload.name,
                container=c.name,
                pods=[PodRef(p, p not in live) for p in pods],
                hpa=workload.hpa,
                namespace=workload.namespace,
                kind=workload.kind,
                allocations=Allocations(
                    {"cpu": c.cpu_request, "memory": c.memory_request},
                    {"cpu": c.cpu_limit, "memory": c.memory_limit},
                ),
                labels=workload.labels,
                annotations=workload.annotations,
            )
            data = container_data(collected, workload.namespace, pods, c.name)
            if not pods:
                obj.warnings.append("NoPodsFound")
            proposals = propose(settings, data, workload.hpa)
            scans.append(_scan_for(obj, proposals, cpu_min_value, memory_min_value))
            usable = (
                usable
                and not _failures(data.errors, "cpu", settings)
                and not any(e.startswith("cpu_mean:") for e in data.errors)
                and _gate(data.cpu, data.cpu_points, settings, False) is None
            )
            finite = [v for v in data.cpu.values() if math.isfinite(v)]
            peak += max(finite, default=0.0)
            means = [v for v in data.cpu_mean.values() if math.isfinite(v)]
            mean += sum(means) / len(means) if means else 0.0
        if target_utilization and usable and peak > 0:
            rec = recommend_replicas(
                workload, peak_usage=peak, mean_usage=mean, target_utilization=target_utilization
            )
            if rec is not None:
                replicas.append(rec)
    return scans, replicas


async def scan(
    client: PrometheusClient,
    workloads: Sequence[Workload],
    settings: StrategySettings,
    *,
    namespaces: Sequence[str] | None = None,
    at: float | None = None,
    cluster: str | None = None,
    cpu_min_value: int = 10,
    memory_min_value: int = 100,
    batch_pods: int = 500,
    target_utilization: float | None = 0.7,
    clock: Callable[[], float] = time.time,
) -> ScanResult:
    """Recommendations for ``workloads`` from Prometheus (krr's ``simple``/``simple_limit``)."""
    when = float(int(clock())) if at is None else at
    started = time.perf_counter()
    errors: list[dict[str, Any]] = []
    selected = sorted(set(namespaces)) if namespaces else sorted({w.namespace for w in workloads})
    if not workloads:
        return ScanResult(
            scans=[],
            strategy=strategy_name(settings),
            settings=settings.model_dump(),
            description=describe(settings),
            stats={"queries": 0, "promql_queries": 0, "seconds": 0.0, "evaluated_at": when},
        )
    try:
        collected = await collect(
            client,
            settings,
            selected or None,
            at=when,
            batch_pods=batch_pods,
            with_mean=target_utilization is not None and isinstance(settings, SimpleSettings),
        )
    except PrometheusError as exc:
        # Discovery failed: no pod list, so nothing can be said about any workload.
        collected = Collected()
        for namespace in selected:
            collected.errors[namespace].append(f"pod discovery: {exc}")
        errors.append({"kind": exc.kind, "message": str(exc)})
    for namespace, messages in sorted(collected.errors.items()):
        for message in messages:
            if not any(e.get("namespace") == namespace and e["message"] == message for e in errors):
                errors.append({"namespace": namespace, "message": message})
    scans, replicas = build_scans(
        workloads,
        collected,
        settings,
        cluster=cluster,
        cpu_min_value=cpu_min_value,
        memory_min_value=memory_min_value,
        target_utilization=target_utilization,
    )
    return ScanResult(
        scans=scans,
        strategy=strategy_name(settings),
        settings=settings.model_dump(),
        description=describe(settings),
        errors=errors,
        replicas=replicas,
        stats={
            "queries": client.queries,
            "promql_queries": client.logical_queries,
            "seconds": round(time.perf_counter() - started, 3),
            "evaluated_at": when,
        },
    )
