"""A scan: collect from Prometheus, then the strategies per container and the replica
recommendation per workload."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sizeguard.prometheus import PrometheusClient, PrometheusError
from sizeguard.recommend.collection import BatchProgress, Collected, collect
from sizeguard.recommend.floors import FloorLookup, FloorsUnavailableError
from sizeguard.recommend.replicas import (
    Demand,
    Floor,
    PlanSettings,
    ReplicaRecommendation,
    plan_workload,
)
from sizeguard.recommend.results import (
    Allocations,
    ObjectData,
    PodRef,
    Scan,
    ScanResult,
    object_warnings,
    scan_for,
)
from sizeguard.recommend.strategies import (
    ContainerData,
    Proposal,
    StrategySettings,
    describe,
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
    floors: Mapping[tuple[str, str, str], Floor] | None = None,
    plan: PlanSettings | None = None,
) -> tuple[list[Scan], list[ReplicaRecommendation]]:
    """krr's scans per container and, for each workload with a floor in ``floors``, its plan
    (sizeguard.recommend.replicas) from the same data; no plans without floors."""
    scans: list[Scan] = []
    replicas: list[ReplicaRecommendation] = []
    # The plan's demand is krr's CPU number as if the HPA allowed one: the scans keep krr's "?".
    unblocked = settings.model_copy(update={"allow_hpa": True})
    plan = PlanSettings(cpu_min_value=cpu_min_value) if plan is None else plan
    for workload in workloads:
        seen = collected.pods.get(workload.key, set())
        live = set(workload.live_pods)
        pods = sorted(seen | live)
        floor = floors.get(workload.key) if floors is not None else None
        # krr's CPU number differs from the plan's only where an HPA scaling on CPU blocks it.
        blocked = workload.hpa is not None and workload.hpa.scales_on_cpu
        demand: dict[str, tuple[Proposal, Proposal]] = {}
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
            obj.warnings = list(object_warnings(seen, live, data, settings))
            proposals = propose(settings, data, workload.hpa)
            scans.append(scan_for(obj, proposals, cpu_min_value, memory_min_value))
            if floor is not None:
                raw = propose(unblocked, data, workload.hpa) if blocked else proposals
                demand[c.name] = (proposals["cpu"], raw["cpu"])
        if floor is not None:
            rec = _plan(workload, demand, floor, plan)
            if rec is not None:
                replicas.append(rec)
    return scans, replicas


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _plan(
    workload: Workload,
    demand: Mapping[str, tuple[Proposal, Proposal]],
    floor: Floor,
    settings: PlanSettings,
) -> ReplicaRecommendation | None:
    """The plan of a workload whose every container has a CPU number (krr's, as if allowed)."""
    if not demand or not all(_finite(raw.request) for _, raw in demand.values()):
        return None
    return plan_workload(
        workload,
        Demand(
            cpu={c: float(raw.request or 0.0) for c, (_, raw) in demand.items()},
            cpu_limits={c: raw.limit for c, (_, raw) in demand.items()},
            krr_defined=all(_finite(krr.request) for krr, _ in demand.values()),
        ),
        floor,
        settings,
    )


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
    target_utilization: float | None = None,
    floors: FloorLookup | None = None,
    clock: Callable[[], float] = time.time,
    progress: BatchProgress | None = None,
) -> ScanResult:
    """Recommendations for ``workloads`` from Prometheus (krr's ``simple``/``simple_limit``);
    ``progress`` is told as each batch of queries completes. With a ``target_utilization``
    (1.0: krr's request at today's replicas), also one plan per workload with replicas
    (sizeguard.recommend.replicas) with the availability floors ``floors`` gives; without
    floors no plan is made and ``errors`` says why."""
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
            with_mean=False,  # the plans work from the percentile, not the mean
            progress=progress,
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
        floors=None if target_utilization is None else await _floors(floors, workloads, errors),
        plan=PlanSettings(target_utilization or 1.0, cpu_min_value=cpu_min_value),
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


async def _floors(
    floors: FloorLookup | None, workloads: Sequence[Workload], errors: list[dict[str, Any]]
) -> Mapping[tuple[str, str, str], Floor] | None:
    """The availability floors of the replica plans, or None with an error entry naming the
    cause (fail closed: never a plan without floors)."""
    if floors is None:
        cause = "no policy engine (OPA) was given to answer the availability floors"
    else:
        try:
            return await asyncio.to_thread(floors, workloads)
        except FloorsUnavailableError as exc:
            cause = str(exc)
    errors.append({"kind": "availability_floors", "message": f"no replica plans: {cause}"})
    return None
