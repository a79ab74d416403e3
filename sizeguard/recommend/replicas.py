"""Replica recommendations (the horizontal side), from per-pod CPU usage."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sizeguard.workloads import Workload


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
