"""The read-only tools: the cluster, metrics, recommendations, the safety report, the audit
history and the Markdown report. None of them writes to the cluster."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastmcp import Context
from pydantic import BaseModel, ConfigDict, Field

from sizeguard.cluster import ClusterState
from sizeguard.prometheus import PrometheusClient
from sizeguard.recommend import ReplicaRecommendation, scan, settings_for
from sizeguard.report_formats import to_krr
from sizeguard.server import report
from sizeguard.server.auth import requester
from sizeguard.server.models import (
    ChangeSetId,
    History,
    Metrics,
    Name,
    RecommendationFilter,
    SafetyReport,
)
from sizeguard.server.service import Service, ServiceError
from sizeguard.server.tools.common import run, runtime, thread
from sizeguard.server.usage import usage
from sizeguard.workloads import Workload, WorkloadReader

__all__ = [
    "ReportText",
    "ScalingReport",
    "ScanReport",
    "generate_report",
    "get_cluster_state",
    "get_execution_history",
    "get_metrics",
    "get_safety_report",
    "recommend_scaling",
    "run_scan",
    "scan_recommendations",
    "severe_enough",
]

_DEFAULT_FILTER = RecommendationFilter()
_SEVERITY_RANK = {"UNKNOWN": -1, "GOOD": 0, "OK": 1, "WARNING": 2, "CRITICAL": 3}


class ScanReport(BaseModel):
    """krr-compatible recommendations (``scans`` uses krr's JSON schema) plus cost."""

    model_config = ConfigDict(frozen=True)

    strategy: str
    description: str
    score: int
    scans: list[dict[str, Any]]
    cost: dict[str, Any]
    errors: list[dict[str, Any]]
    shown: int
    total: int


class ScalingReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    target_utilization: float
    recommendations: list[dict[str, Any]]
    errors: list[dict[str, Any]]


class ReportText(BaseModel):
    model_config = ConfigDict(frozen=True)

    markdown: str


def severe_enough(scans: Sequence[dict[str, Any]], min_severity: str) -> list[dict[str, Any]]:
    """The krr scans at least as severe as ``min_severity``."""
    floor = _SEVERITY_RANK[min_severity]
    return [s for s in scans if _SEVERITY_RANK.get(str(s.get("severity")), -1) >= floor]


async def _workloads(
    service: Service, namespaces: Sequence[str], names: Sequence[str] = ()
) -> list[Workload]:
    if service.kubeconfig is None:
        raise ServiceError("no kubeconfig: start the server with --kubeconfig or KUBECONFIG")

    def read() -> list[Workload]:
        assert service.kubeconfig is not None
        with WorkloadReader(service.kubeconfig, context=service.context) as reader:
            found = reader.workloads(list(namespaces) or None)
        return [w for w in found if not names or w.name in names]

    try:
        return await thread(read)
    except Exception as exc:  # httpx and parsing errors: say what, not a traceback
        raise ServiceError(f"cannot read workloads: {exc}") from None


def _prometheus(service: Service) -> PrometheusClient:
    if not service.prometheus_url:
        raise ServiceError(
            "no Prometheus: start the server with --prometheus-url or PROMETHEUS_URL"
        )
    return PrometheusClient(service.prometheus_url, timeout=30.0, retries=2)


async def run_scan(
    ctx: Context, flt: RecommendationFilter, target_utilization: float | None
) -> Any:
    """Recommendations for the workloads ``flt`` selects, from Prometheus."""
    service = runtime(ctx).service
    await ctx.report_progress(0, 3, "reading workloads")
    found = await _workloads(service, flt.namespaces, flt.names)
    await ctx.report_progress(1, 3, f"querying Prometheus for {len(found)} workloads")
    async with _prometheus(service) as client:
        result = await scan(
            client,
            found,
            settings_for(flt.strategy),
            namespaces=flt.namespaces or None,
            target_utilization=target_utilization,
        )
    await ctx.report_progress(2, 3, "building recommendations")
    return result


async def get_cluster_state(
    ctx: Context,
    namespaces: Annotated[list[Name], Field(description="empty: all namespaces")] = [],  # noqa: B006
) -> ClusterState:
    """Workloads (replicas, readiness, requests/limits per container), HPAs, namespace
    labels and the cluster's allocatable capacity and current requests."""
    service = runtime(ctx).service
    return await run(
        ctx,
        "get_cluster_state",
        {"namespaces": namespaces},
        lambda: thread(service.cluster_state, namespaces),
    )


async def get_metrics(
    ctx: Context,
    namespaces: Annotated[list[Name], Field(description="empty: all namespaces")] = [],  # noqa: B006
    names: Annotated[list[Name], Field(description="workload names; empty: all")] = [],  # noqa: B006
    window_hours: Annotated[float, Field(gt=0, le=24 * 90)] = 24.0,
) -> Metrics:
    """CPU and memory usage per workload over a window (average and peak per pod) and
    utilization against requests, from Prometheus."""
    service = runtime(ctx).service

    async def work() -> Metrics:
        await ctx.report_progress(0, 2, "reading workloads")
        found = await _workloads(service, namespaces, names)
        await ctx.report_progress(1, 2, "querying Prometheus")
        async with _prometheus(service) as client:
            result = await usage(client, found, window_seconds=int(window_hours * 3600))
        await ctx.report_progress(2, 2, "done")
        return result

    return await run(
        ctx,
        "get_metrics",
        {"namespaces": namespaces, "names": names, "window_hours": window_hours},
        work,
    )


async def scan_recommendations(
    ctx: Context, filter: RecommendationFilter = _DEFAULT_FILTER
) -> ScanReport:
    """krr-compatible CPU/memory recommendations (strategy simple or simple-limit) with
    severity and monthly cost, filtered by namespace, name and minimum severity."""
    service = runtime(ctx).service

    async def work() -> ScanReport:
        result = await run_scan(ctx, filter, None)
        document = to_krr(result, service.prices)
        scans = severe_enough(document["scans"], filter.min_severity)
        await ctx.report_progress(3, 3, "done")
        return ScanReport(
            strategy=result.strategy,
            description=result.description,
            score=result.score,
            scans=scans[: filter.max_targets],
            cost=document.get("cost", {}),
            errors=result.errors,
            shown=min(len(scans), filter.max_targets),
            total=len(scans),
        )

    return await run(ctx, "scan_recommendations", filter.model_dump(), work)


async def recommend_scaling(
    ctx: Context,
    namespaces: Annotated[list[Name], Field(description="empty: all namespaces")] = [],  # noqa: B006
    names: Annotated[list[Name], Field(description="workload names; empty: all")] = [],  # noqa: B006
    target_utilization: Annotated[
        float, Field(gt=0, le=1, description="0.7 = 70% of the CPU request")
    ] = 0.7,
) -> ScalingReport:
    """Replica recommendations from CPU usage (the HPA formula with its 10% tolerance,
    bounded, scale-down limited per step); for a workload with an HPA, its min/max."""

    async def work() -> ScalingReport:
        flt = RecommendationFilter(namespaces=namespaces, names=names)
        result = await run_scan(ctx, flt, target_utilization)
        recs: list[ReplicaRecommendation] = result.replicas
        return ScalingReport(
            target_utilization=target_utilization,
            recommendations=[r.to_json() for r in recs],
            errors=result.errors,
        )

    return await run(
        ctx,
        "recommend_scaling",
        {"namespaces": namespaces, "names": names, "target_utilization": target_utilization},
        work,
    )


async def get_safety_report(ctx: Context, change_set_id: ChangeSetId | None = None) -> SafetyReport:
    """Whether every safety check is in place now (policy engine, signing key, webhook
    registration, whether the webhook trusts the signing key, audit log) and, for a change
    set, its current policy decision and approvals. The webhook names the keys it trusts in
    its answer to a server-side dry run (the change set's, else of a replicas change of a
    Deployment); nothing changes in the cluster."""
    service = runtime(ctx).service
    actor = requester(ctx)
    return await run(
        ctx,
        "get_safety_report",
        {"change_set_id": change_set_id},
        lambda: thread(report.safety_report, service, change_set_id, actor),
    )


async def get_execution_history(
    ctx: Context,
    change_set_id: ChangeSetId | None = None,
    limit: Annotated[int, Field(ge=1, le=1000)] = 100,
) -> History:
    """The audit log: every tool call, confirmation, apply, restore and rollback (newest
    last), and whether its hash chain is intact."""
    service = runtime(ctx).service
    return await run(
        ctx,
        "get_execution_history",
        {"change_set_id": change_set_id, "limit": limit},
        lambda: thread(report.history, service, change_set_id, limit),
    )


async def generate_report(ctx: Context) -> ReportText:
    """A Markdown summary of applied change sets, their monthly savings and rollbacks."""
    service = runtime(ctx).service

    async def work() -> ReportText:
        return ReportText(markdown=await thread(report.markdown, service))

    return await run(ctx, "generate_report", {}, work)
