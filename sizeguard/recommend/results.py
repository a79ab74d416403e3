"""The scan report, shaped as krr's JSON result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sizeguard.recommend.replicas import ReplicaRecommendation
from sizeguard.recommend.strategies import (
    RESOURCES,
    Proposal,
    ResourceName,
    Severity,
    Value,
    round_value,
    score,
    severity,
)
from sizeguard.workloads import HpaInfo


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
