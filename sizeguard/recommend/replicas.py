"""One plan per workload: its replica count and its per-pod CPU request, computed together.

krr's CPU request for a container is the percentile of its per-pod usage, measured at today's
replica count. Sizing replicas with the HPA formula against today's request as well would
count the same demand twice (a 50m -> 293m request *and* 1 -> 9 replicas). A plan instead
starts from the demand at the percentile, ``D`` = per-pod demand x current replicas ``R``
(the HPA's current count when an HPA scales the workload), and a target utilization ``t`` at
the percentile (1.0 by default: at an unchanged replica count the planned request is exactly
krr's number, krr's own meaning of a request):

1. Replicas ``N`` = max(R, the availability floor); the floor comes from policy data through
   OPA (``policies/sizeguard/plan``). Demand never removes replicas: the request absorbs it.
2. Request per pod ``r`` = D / (N x t), split over the containers in proportion to krr's
   numbers and rounded as krr rounds (up to 1m, at least ``cpu_min_value`` per container).
3. Only when ``r`` would exceed the floor's ``max_pod_cpu`` (unset by default) are replicas
   added for demand, at a per-pod request no larger than today's (or the cap): then the
   request is not raised at the same time (and when today's request is below krr's minimum,
   no replicas are added: the request rises).
4. With an HPA the HPA owns the replicas, and a plan never lowers its minReplicas (people set
   it for zone spread or bursts; the reason says when the demand alone needs fewer): it is at
   least the floor. With krr's CPU number, the request is the one that keeps the HPA at
   today's count (or the floor; ``t`` is the HPA's target). When krr gives "?" for CPU (the
   HPA scales on CPU), or when krr's minimum would let the HPA drop pods while the request
   falls, the request stays today's and maxReplicas makes room for the demand at the
   percentile plus ``hpa_headroom``. Either way a plan never cuts both the request and the
   pods, nor raises both beyond the floor.

Every plan states the request it assumes (``assumed_cpu_request``, cores per pod), the
utilization it gives at the percentile, the band [t x (1 - tolerance), t] and whether that
utilization is inside it (rounding and krr's minimum can hold a request above the demand).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sizeguard.workloads import Workload

_EPSILON = 1e-9


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
class Floor:
    """What policy data says about a workload's replicas (``data.sizeguard.plan.floors``)."""

    min_replicas: int
    reason: str
    workload_class: str = "default"
    max_pod_cpu: float | None = None  # cores; None: no cap

    def to_json(self) -> dict[str, Any]:
        return {
            "min_replicas": self.min_replicas,
            "class": self.workload_class,
            "max_pod_cpu": self.max_pod_cpu,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class PlanSettings:
    """How plans are made. The plans divide by ``target_utilization`` and by the requests,
    so odd numbers are refused here (ValueError, a sentence) rather than deep in the math; a
    ``cpu_min_value`` of 0 plans with 1m, the smallest request a container can have."""

    target_utilization: float = 1.0
    tolerance: float = 0.1
    cpu_min_value: int = 10  # millicores, krr's minimum per container
    hpa_headroom: float = 0.25

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target_utilization) and 0 < self.target_utilization <= 1):
            raise ValueError(
                f"the target utilization of a plan must be above 0 and at most 1 (100%), "
                f"not {self.target_utilization}"
            )
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"the tolerance must be at least 0 and below 1, not {self.tolerance}")
        if self.cpu_min_value < 0:
            raise ValueError(f"krr's CPU minimum cannot be negative ({self.cpu_min_value}m)")
        if not (math.isfinite(self.hpa_headroom) and self.hpa_headroom >= 0):
            raise ValueError(f"the HPA headroom cannot be negative ({self.hpa_headroom})")


@dataclass(frozen=True)
class Demand:
    """A workload's CPU at the percentile, per pod and per container (cores, unrounded: krr's
    raw CPU request, computed even where an HPA makes krr answer "?"), krr's raw CPU limit
    where its strategy gives one, and whether krr's report gives a CPU number at all."""

    cpu: Mapping[str, float]
    cpu_limits: Mapping[str, float | None] = field(default_factory=dict)
    krr_defined: bool = True

    @property
    def per_pod(self) -> float:
        return sum(self.cpu.values())


@dataclass(frozen=True)
class ReplicaRecommendation:
    kind: str
    namespace: str
    name: str
    current_replicas: int
    target_utilization: float  # at the percentile, of the assumed request
    utilization: float  # at the percentile, with the plan
    band: tuple[float, float]
    within_band: bool
    assumed_cpu_request: float  # cores per pod
    current_cpu_request: float | None  # cores per pod today
    cpu_demand: float  # cores per pod at the percentile, today
    floor: Floor
    planned_replicas: int  # what the plan runs: recommended, or the HPA's count for the demand
    cpu_requests: dict[str, float] | None = None  # planned per container; None: today's
    cpu_limits: dict[str, float] | None = None  # planned per container, where krr gives one
    recommended_replicas: int | None = None
    hpa_name: str | None = None
    hpa_min_replicas: tuple[int, int] | None = None  # (current, proposed)
    hpa_max_replicas: tuple[int, int] | None = None
    reason: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "current_replicas": self.current_replicas,
            "planned_replicas": self.planned_replicas,
        }
        if self.recommended_replicas is not None:
            out["recommended_replicas"] = self.recommended_replicas
        if self.hpa_min_replicas is not None and self.hpa_max_replicas is not None:
            out["hpa"] = {
                "name": self.hpa_name,
                "min_replicas": {
                    "current": self.hpa_min_replicas[0],
                    "recommended": self.hpa_min_replicas[1],
                },
                "max_replicas": {
                    "current": self.hpa_max_replicas[0],
                    "recommended": self.hpa_max_replicas[1],
                },
            }
        out |= {
            "assumed_cpu_request": self.assumed_cpu_request,
            "current_cpu_request": self.current_cpu_request,
            "cpu_requests": self.cpu_requests,
            "cpu_demand": _cores(self.cpu_demand),
            "target_utilization": self.target_utilization,
            "utilization": round(self.utilization, 4),
            "band": [round(self.band[0], 4), round(self.band[1], 4)],
            "within_band": self.within_band,
            "floor": self.floor.to_json(),
            "reason": self.reason,
        }
        if self.cpu_limits is not None:
            out["cpu_limits"] = self.cpu_limits
        return out


def _cores(value: float) -> float:
    return round(value, 6)


def _round_replicas(value: float) -> int:
    return max(1, math.ceil(value - _EPSILON))


def _smallest(cpu_min_value: int) -> float:
    """The smallest request a plan gives a container (cores): krr's minimum, at least 1m (a
    plan divides by the requests)."""
    return max(cpu_min_value, 1) / 1000


def _krr_round(value: float, cpu_min_value: int) -> float:
    """krr's CPU rounding: up to 1m, at least the minimum (millicores; a plan's at least 1m)."""
    return max(math.ceil(value * 1000 - _EPSILON) / 1000, _smallest(cpu_min_value))


def split(per_pod: float, demand: Demand, cpu_min_value: int) -> dict[str, float]:
    """A per-pod request over the containers, in proportion to krr's numbers, krr-rounded."""
    total = demand.per_pod
    share = {c: (v / total if total > 0 else 0.0) for c, v in demand.cpu.items()}
    return {c: _krr_round(per_pod * s, cpu_min_value) for c, s in share.items()}


def _limits(factor: float, demand: Demand, cpu_min_value: int) -> dict[str, float] | None:
    """krr's CPU limits scaled like the requests (simple-limit gives them; simple none)."""
    scaled = {
        c: _krr_round(v * factor, cpu_min_value)
        for c, v in demand.cpu_limits.items()
        if v is not None and math.isfinite(v)
    }
    return scaled or None


def _today(workload: Workload) -> float | None:
    values = [c.cpu_request for c in workload.containers]
    if any(v is None for v in values):
        return None
    return sum(v or 0.0 for v in values)


def _band(target: float, tolerance: float) -> tuple[float, float]:
    return (target * (1 - tolerance), target)


def _inside(utilization: float, band: tuple[float, float]) -> bool:
    return band[0] - _EPSILON <= utilization <= band[1] + _EPSILON


def plan_workload(
    workload: Workload, demand: Demand, floor: Floor, settings: PlanSettings | None = None
) -> ReplicaRecommendation | None:
    """The plan of one workload with replicas (None for DaemonSets, for a workload scaled to
    zero, and where the plan has no request to work from)."""
    settings = settings or PlanSettings()
    if workload.kind == "DaemonSet" or workload.replicas is None or not demand.cpu:
        return None
    current = workload.replicas
    if workload.hpa is not None and workload.hpa.current_replicas:
        current = workload.hpa.current_replicas
    if current <= 0:
        return None
    if workload.hpa is None:
        return _plan_replicas(workload, current, demand, floor, settings)
    return _plan_hpa(workload, current, demand, floor, settings)


def _plan_replicas(
    workload: Workload, current: int, demand: Demand, floor: Floor, settings: PlanSettings
) -> ReplicaRecommendation:
    t = settings.target_utilization
    total = demand.per_pod * current
    replicas = max(current, floor.min_replicas)
    reasons = [
        f"demand at the percentile {total * 1000:.0f}m over {current} pod(s), planned at a "
        f"{t:.0%} target; demand adds no replicas, the request absorbs it"
    ]
    if floor.min_replicas > current:
        reasons.append(f"replicas raised to the availability floor: {floor.reason}")
    cap = floor.max_pod_cpu
    if cap is not None and total / (replicas * t) > cap + _EPSILON:
        replicas, why = _capped(replicas, total, demand, cap, _today(workload), settings)
        reasons.append(why)
    requests = split(total / (replicas * t), demand, settings.cpu_min_value)
    return _finish(
        workload, current, demand, floor, settings, t, requests, reasons,
        recommended_replicas=replicas,
        cpu_limits=_limits(current / (replicas * t), demand, settings.cpu_min_value),
    )  # fmt: skip


def _capped(
    replicas: int,
    total: float,
    demand: Demand,
    cap: float,
    today: float | None,
    settings: PlanSettings,
) -> tuple[int, str]:
    """The replicas for a per-pod cap: the fewest whose (krr-rounded) request is at most the
    cap and today's request, so that replicas are added only while the request does not rise.
    When today's request is below the smallest one krr gives a pod, no replicas are added;
    when only the cap is, replicas are added until the pods are at krr's minimum."""
    t = settings.target_utilization
    floor_m = _smallest(settings.cpu_min_value)  # the smallest request of a container
    containers = len(demand.cpu)
    smallest = containers * floor_m  # of a pod
    minimum = (
        f"krr's minimum of {containers} container(s) x {floor_m * 1000:.0f}m = "
        f"{smallest * 1000:.0f}m a pod"
    )
    needs = f"a pod would need more than the {_millicores(cap)} cap (config.availability."
    needs += "max_pod_cpu)"
    if today is not None and today < smallest - _EPSILON:
        both = cap < smallest - _EPSILON
        below = "the cap and today's request are" if both else "today's request is"
        return replicas, (
            f"{needs}, but {below} below {minimum}: the request rises to hold the demand "
            "and no replicas are added"
        )
    if cap < smallest - _EPSILON:
        ceiling = smallest  # at most today's (checked above)
        why = f"{needs}, which is below {minimum}: replicas added until each pod is at that minimum"
    else:
        ceiling = min(cap, today) if today is not None else cap
        why = f"{needs}: replicas added at a per-pod request no larger than {_millicores(ceiling)}"

    def fits(count: int) -> bool:
        per_pod = split(total / (count * t), demand, settings.cpu_min_value)
        return sum(per_pod.values()) <= ceiling + _EPSILON

    # Past ``high`` every container is at krr's minimum, which fits: bisect in between.
    share = max((v / demand.per_pod for v in demand.cpu.values()), default=1.0)
    low = max(replicas, math.ceil(total / (ceiling * t) - _EPSILON))
    high = max(low, math.ceil(total * share / (floor_m * t)) + 1)
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle + 1, high)
    return low, why


def _millicores(cores: float) -> str:
    """``50m``, ``0.5m`` (a cap below 1m is shown as it is, not as 0m or 1m)."""
    return f"{cores * 1000:.0f}m" if cores >= 0.001 else f"{cores * 1000:.3g}m"


@dataclass(frozen=True)
class _HpaPlan:
    requests: dict[str, float] | None  # None: today's
    limits: dict[str, float] | None
    assumed: float
    running: int
    max_replicas: int
    reasons: list[str]


def _plan_hpa(
    workload: Workload, current: int, demand: Demand, floor: Floor, settings: PlanSettings
) -> ReplicaRecommendation | None:
    """An HPA owns the replicas. The plan never lowers its minReplicas (at least the floor)
    and either sets the request that keeps the HPA at its count (krr's number) or keeps
    today's request and gives maxReplicas room for the demand: never a lower request and
    fewer pods."""
    hpa = workload.hpa
    assert hpa is not None
    # A target of 0 (which the API server refuses) would divide by zero: as if not on CPU.
    on_cpu = hpa.scales_on_cpu and (hpa.target_cpu_utilization_percentage or 0) > 0
    t = (
        (hpa.target_cpu_utilization_percentage or 0) / 100
        if on_cpu
        else settings.target_utilization
    )
    new_min = max(floor.min_replicas, hpa.min_replicas)
    reasons = [
        f"demand at the percentile {demand.per_pod * current * 1000:.0f}m over {current} pod(s)"
    ]
    if floor.min_replicas > hpa.min_replicas:
        reasons.append(f"minReplicas raised to the availability floor: {floor.reason}")
    today = _today(workload)
    plan = None
    if demand.krr_defined:
        plan = _hpa_with_krr(current, demand, t, on_cpu, new_min, hpa.max_replicas, today, settings)
        if plan is None:
            reasons.append(
                "krr's request, held up by its minimum, would let the HPA drop pods while the "
                "request falls: the plan keeps today's request"
            )
    elif on_cpu:
        reasons.append(
            "krr gives no CPU request (the HPA scales on CPU): the plan keeps today's request"
        )
    if plan is None:
        if not today:
            return None  # nothing the HPA's utilization is measured against
        plan = _hpa_keeping_request(
            current, demand, t, on_cpu, new_min, hpa.max_replicas, today, settings
        )
    return _finish(
        workload, current, demand, floor, settings, t, plan.requests, [*reasons, *plan.reasons],
        running=plan.running, assumed=plan.assumed, cpu_limits=plan.limits,
        hpa_name=hpa.name,
        hpa_min_replicas=(hpa.min_replicas, new_min),
        hpa_max_replicas=(hpa.max_replicas, plan.max_replicas),
    )  # fmt: skip


def _hpa_with_krr(
    current: int,
    demand: Demand,
    t: float,
    on_cpu: bool,
    new_min: int,
    max_replicas: int,
    today: float | None,
    settings: PlanSettings,
) -> _HpaPlan | None:
    """The request that keeps the HPA at today's count (or the floor), from krr's number;
    None when krr's minimum would make the HPA drop pods while the request falls."""
    total = demand.per_pod * current
    running = max(current, new_min)
    requests = split(total / (running * t), demand, settings.cpu_min_value)
    assumed = sum(requests.values())
    limits = _limits(current / (running * t), demand, settings.cpu_min_value)
    new_max = max(max_replicas, running)
    if not on_cpu:
        reasons = [
            "the HPA does not scale on CPU utilization: its bounds stay, min at least the "
            f"floor; the request is for {running} replica(s) at a {t:.0%} target"
        ]
        return _HpaPlan(requests, limits, assumed, running, new_max, reasons)
    reasons = [f"the request keeps the HPA at {running} replica(s) at a {t:.0%} target"]
    need = _round_replicas(total / (assumed * t))
    new_max = max(new_max, math.ceil(need * (1 + settings.hpa_headroom)))
    if not _inside(total / (running * assumed), _band(t, settings.tolerance)):
        # Beyond the HPA's tolerance (its default, 10%, is the band's): it scales to
        # ``need`` pods within its bounds.
        held = min(max(need, new_min), new_max)
        if held < current and today is not None and assumed < today - _EPSILON:
            return None
        running = held
        reasons = [f"the HPA runs {held} replica(s) with krr's request"]
    reasons.append(f"maxReplicas with {settings.hpa_headroom:.0%} headroom")
    return _HpaPlan(requests, limits, assumed, running, new_max, reasons)


def _hpa_keeping_request(
    current: int,
    demand: Demand,
    t: float,
    on_cpu: bool,
    new_min: int,
    max_replicas: int,
    today: float,
    settings: PlanSettings,
) -> _HpaPlan:
    """Today's request: on CPU the HPA runs the pods the demand needs within its bounds."""
    total = demand.per_pod * current
    new_max = max(max_replicas, new_min)
    if not on_cpu:
        running = max(current, new_min)
        reasons = [
            "the HPA does not scale on CPU utilization: its bounds stay, min at least the floor"
        ]
        return _HpaPlan(None, None, today, running, max(new_max, running), reasons)
    need = _round_replicas(total / (today * t))
    new_max = max(new_max, math.ceil(need * (1 + settings.hpa_headroom)))
    running = min(max(need, new_min), new_max)
    reasons = [
        f"the HPA runs {running} replica(s) for the demand at the percentile; maxReplicas "
        f"with {settings.hpa_headroom:.0%} headroom"
    ]
    if need < new_min:
        reasons.append(
            f"the demand alone needs {need} pod(s), but the plan never lowers minReplicas "
            f"({new_min}; often set for zone spread or bursts): lower it yourself if you mean to"
        )
    return _HpaPlan(None, None, today, running, new_max, reasons)


def _finish(
    workload: Workload,
    current: int,
    demand: Demand,
    floor: Floor,
    settings: PlanSettings,
    t: float,
    requests: dict[str, float] | None,
    reasons: list[str],
    *,
    running: int | None = None,
    assumed: float | None = None,
    **extra: Any,
) -> ReplicaRecommendation:
    total = demand.per_pod * current
    if assumed is None:
        assumed = sum((requests or {}).values())
    replicas = running if running is not None else extra["recommended_replicas"]
    utilization = total / (replicas * assumed) if assumed > 0 else 0.0
    band = _band(t, settings.tolerance)
    within = _inside(utilization, band)
    if not within:
        reasons.append(_outside(utilization, band, requests, settings, running is not None))
    return ReplicaRecommendation(
        kind=workload.kind,
        namespace=workload.namespace,
        name=workload.name,
        current_replicas=current,
        target_utilization=t,
        utilization=utilization,
        band=band,
        within_band=within,
        assumed_cpu_request=_cores(assumed),
        current_cpu_request=_today(workload),
        cpu_demand=demand.per_pod,
        floor=floor,
        planned_replicas=replicas,
        cpu_requests=requests,
        reason="; ".join(reasons),
        **extra,
    )


def _outside(
    utilization: float,
    band: tuple[float, float],
    requests: dict[str, float] | None,
    settings: PlanSettings,
    hpa: bool,
) -> str:
    where = (
        f"utilization at the percentile {utilization:.0%} is outside {band[0]:.0%}-{band[1]:.0%}"
    )
    smallest = _smallest(settings.cpu_min_value)
    if requests is not None and any(v <= smallest + _EPSILON for v in requests.values()):
        return (
            f"{where}: krr's {smallest * 1000:.0f}m minimum per container holds the "
            "request above the demand"
        )
    if hpa:
        return f"{where}: the HPA runs whole pods, and its bounds hold the count"
    return f"{where}: the request is rounded up to whole millicores"
