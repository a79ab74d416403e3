"""A scan: collect from Prometheus, then the strategies per container and the replica
recommendation per workload."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sizeguard.prometheus import PrometheusClient, PrometheusError
from sizeguard.recommend.collection import Collected, collect
from sizeguard.recommend.replicas import ReplicaRecommendation, recommend_replicas
from sizeguard.recommend.results import Allocations, ObjectData, PodRef, Scan, ScanResult, scan_for
from sizeguard.recommend.strategies import (
    ContainerData,
    SimpleSettings,
    StrategySettings,
    describe,
    failed_metrics,
    gate,
    propose,
    strategy_name,
)
from sizeguard.workloads import Workload


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
            scans.append(scan_for(obj, proposals, cpu_min_value, memory_min_value))
            usable = (
                usable
                and not failed_metrics(data.errors, "cpu", settings)
                and not any(e.startswith("cpu_mean:") for e in data.errors)
                and gate(data.cpu, data.cpu_points, settings, False) is None
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
