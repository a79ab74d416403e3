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

from sizeguard.recommend.collection import collect
from sizeguard.recommend.floors import FloorLookup, FloorsUnavailableError, opa_floors
from sizeguard.recommend.replicas import (
    Demand,
    Floor,
    PlanSettings,
    ReplicaRecommendation,
    hpa_desired_replicas,
    plan_workload,
)
from sizeguard.recommend.results import (
    Allocations,
    ObjectData,
    PodRef,
    RecommendationValue,
    Recommended,
    Scan,
    ScanResult,
)
from sizeguard.recommend.scanning import build_scans, scan
from sizeguard.recommend.strategies import (
    MIB,
    STRATEGIES,
    ContainerData,
    Proposal,
    ResourceName,
    Severity,
    SimpleLimitSettings,
    SimpleSettings,
    StrategySettings,
    Value,
    cpu_severity,
    memory_severity,
    propose,
    round_value,
    score,
    settings_for,
    severity,
)

__all__ = [
    "MIB",
    "STRATEGIES",
    "Allocations",
    "ContainerData",
    "Demand",
    "Floor",
    "FloorLookup",
    "FloorsUnavailableError",
    "ObjectData",
    "PlanSettings",
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
    "opa_floors",
    "plan_workload",
    "propose",
    "round_value",
    "scan",
    "score",
    "settings_for",
    "severity",
]
