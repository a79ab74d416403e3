"""krr v1.29's result model, restated in pydantic v2 to hold sizeguard's reports to it.

krr (robusta-dev/krr, not on PyPI) reads a JSON report with pydantic v1's
``Result.parse_obj``; its models live in ``robusta_krr/core/models/`` (``result.py``,
``objects.py``, ``allocations.py``, ``severity.py``). This module states the same shape:

- unknown keys are ignored, as pydantic v1 ignores them by default (sizeguard's extra
  top-level ``sizeguard`` key passes for that reason);
- an ``Optional`` field without a default may be left out (v1 semantics): ``cluster``,
  ``hpa``, ``labels``, ``annotations``, ``HPAData.min_replicas``/``current_replicas``/targets;
- object ``warnings`` are a set of ``NoPrometheusPods``, ``NoPrometheusCPUMetrics``,
  ``NoPrometheusMemoryMetrics`` (krr's ``PodWarning``), nothing else;
- ``kind`` is krr's ``KindLiteral``, with ``GroupedJob`` (added before v1.29);
- allocations are numbers (cores, bytes) or null; a string with units is parsed as krr's
  ``pre`` validator does, and ``"?"`` there is an error (``float("?")`` fails in krr), while NaN
  becomes ``"?"``; recommended values are a number, ``"?"`` or null with a severity;
- ``desired_replicas`` and ``max_replicas`` of an HPA are required integers.

Where krr's v1 would coerce (a numeric string for a number, ``"true"`` for a bool, a number
for a string), this model is strict: sizeguard has no reason to write either, and a stricter
check cannot pass a report that krr would refuse. ``config`` (krr's settings, a
``BaseSettings``) is taken as any mapping or null; sizeguard does not write it.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

KindLiteral = Literal[
    "Deployment",
    "DaemonSet",
    "StatefulSet",
    "Job",
    "CronJob",
    "Rollout",
    "DeploymentConfig",
    "StrimziPodSet",
    "GroupedJob",
]
PodWarning = Literal["NoPrometheusPods", "NoPrometheusCPUMetrics", "NoPrometheusMemoryMetrics"]
ResourceType = Literal["cpu", "memory"]
Severity = Literal["UNKNOWN", "GOOD", "OK", "WARNING", "CRITICAL"]
RecommendationValue = StrictFloat | Literal["?"] | None

# krr's resource_units: decimal and binary suffixes, and "m" for thousandths.
_UNITS = {
    "Ki": 1024.0,
    "Mi": 1024.0**2,
    "Gi": 1024.0**3,
    "Ti": 1024.0**4,
    "Pi": 1024.0**5,
    "Ei": 1024.0**6,
    "k": 1e3,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "m": 1e-3,
}


def _allocation(value: object) -> object:
    """krr's ``ResourceAllocations`` ``pre`` validator for one value."""
    if value is None:
        return None
    if isinstance(value, str):
        for suffix, factor in _UNITS.items():
            if value.endswith(suffix):
                return float(value[: -len(suffix)]) * factor
        return float(value)  # "?" raises, as float("?") does in krr
    if isinstance(value, float) and math.isnan(value):
        return "?"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a resource value: {value!r}")
    return float(value)


Allocation = Annotated[RecommendationValue, BeforeValidator(_allocation)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")  # pydantic v1's default, krr's behaviour


class PodData(_Model):
    name: StrictStr
    deleted: StrictBool


class HPAData(_Model):
    min_replicas: StrictInt | None = None
    max_replicas: StrictInt
    current_replicas: StrictInt | None = None
    desired_replicas: StrictInt
    target_cpu_utilization_percentage: StrictFloat | None = None
    target_memory_utilization_percentage: StrictFloat | None = None


class ResourceAllocations(_Model):
    requests: dict[ResourceType, Allocation]
    limits: dict[ResourceType, Allocation]
    info: dict[ResourceType, StrictStr | None] = {}


class K8sObjectData(_Model):
    cluster: StrictStr | None = None
    name: StrictStr
    container: StrictStr
    pods: list[PodData] = []
    hpa: HPAData | None = None
    namespace: StrictStr
    kind: KindLiteral
    allocations: ResourceAllocations
    warnings: set[PodWarning] = set()
    labels: dict[StrictStr, StrictStr] | None = None
    annotations: dict[StrictStr, StrictStr] | None = None


class Recommendation(_Model):
    value: RecommendationValue
    severity: Severity


# pydantic v1 tries a Union's members left to right: a bare number is a RecommendationValue.
RecommendedEntry = Annotated[
    StrictFloat | Literal["?"] | Recommendation | None, Field(union_mode="left_to_right")
]


class ResourceRecommendation(_Model):
    requests: dict[ResourceType, RecommendedEntry]
    limits: dict[ResourceType, RecommendedEntry]
    info: dict[ResourceType, StrictStr | None]


class ResourceScan(_Model):
    object: K8sObjectData
    recommended: ResourceRecommendation
    severity: Severity


class StrategyData(_Model):
    name: StrictStr
    settings: dict[str, Any]


class Result(_Model):
    scans: list[ResourceScan]
    score: StrictInt = 0  # krr recomputes it on parse: see krr_score
    resources: list[StrictStr] = ["cpu", "memory"]
    description: StrictStr | None = None
    strategy: StrategyData
    errors: list[dict[str, Any]] = []
    clusterSummary: dict[str, Any] = {}  # noqa: N815 (krr's key)
    config: dict[str, Any] | None = None


def krr_score(result: Result) -> int:
    """The score krr's ``Result.__init__`` computes (it ignores the one in the document)."""
    if not result.scans:
        return 0
    cost = sum(
        0.7 if s.severity == "WARNING" else 1 if s.severity == "CRITICAL" else 0
        for s in result.scans
    )
    return int((len(result.scans) - cost) / len(result.scans) * 100)


def formatter_problems(result: Result) -> list[str]:
    """What krr's table/CSV formatters would trip on although the model accepts it: they
    index both resources of every allocation and read ``.value`` of every recommendation."""
    problems = []
    for index, scan in enumerate(result.scans):
        for selector in ("requests", "limits"):
            allocations = getattr(scan.object.allocations, selector)
            recommended = getattr(scan.recommended, selector)
            for resource in ("cpu", "memory"):
                if resource not in allocations:
                    problems.append(f"scans[{index}] allocations.{selector} lacks {resource}")
                if not isinstance(recommended.get(resource), Recommendation):
                    problems.append(f"scans[{index}] recommended.{selector}.{resource} bare")
    return problems
