"""The read-only tools: the cluster, metrics, recommendations, the safety report, the audit
history and the Markdown report. None of them writes to the cluster.

Their results tell the truth about what they cover: a namespace the API server does not know,
or a Prometheus that does not answer, is a tool error naming it, never an empty result; when
some queries failed and others answered, ``coverage`` names the workloads without data and
why. The large ones page (``cursor``/``limit``, :mod:`sizeguard.server.paging`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any

from fastmcp import Context
from pydantic import BaseModel, ConfigDict, Field

from sizeguard.cluster import ClusterState, WorkloadState
from sizeguard.prometheus import PrometheusClient, PrometheusError
from sizeguard.recommend import ReplicaRecommendation, ScanResult, scan, settings_for
from sizeguard.recommend.results import coverage
from sizeguard.report_formats import to_krr
from sizeguard.server import report
from sizeguard.server.auth import requester
from sizeguard.server.models import (
    ChangeSetId,
    ClusterStatePage,
    Coverage,
    History,
    Metrics,
    MissingData,
    Name,
    RecommendationFilter,
    SafetyReport,
)
from sizeguard.server.paging import DEFAULT_LIMIT, Cursor, Limit, Page, page, workload_key
from sizeguard.server.service import Service, ServiceError
from sizeguard.server.tools.common import check_namespaces, progress, run, runtime, thread
from sizeguard.server.usage import usage
from sizeguard.workloads import Workload, WorkloadReader, WorkloadReadError

__all__ = [
    "ReportText",
    "ScalingReport",
    "ScanReport",
    "Selection",
    "generate_report",
    "get_cluster_state",
    "get_execution_history",
    "get_metrics",
    "get_safety_report",
    "recommend_scaling",
    "refuse_without_floors",
    "run_scan",
    "scan_coverage",
    "scan_recommendations",
    "select_workloads",
    "severe_enough",
]

_DEFAULT_FILTER = RecommendationFilter()
_SEVERITY_RANK = {"UNKNOWN": -1, "GOOD": 0, "OK": 1, "WARNING": 2, "CRITICAL": 3}


class ScanReport(BaseModel):
    """krr-compatible recommendations (``scans`` uses krr's JSON schema) plus cost, for one
    page of workloads."""

    model_config = ConfigDict(frozen=True)

    strategy: str
    description: str
    score: int
    scans: list[dict[str, Any]] = Field(
        description="the containers of this page's workloads as severe as min_severity"
    )
    cost: dict[str, Any]
    errors: list[dict[str, Any]] = Field(
        description="queries that failed, by namespace (krr's errors); coverage says which "
        "workloads they leave without data"
    )
    coverage: Coverage
    total_workloads: int = Field(description="workloads the filter selects, on every page")
    next_cursor: str | None = Field(
        default=None, description="pass as cursor (same filter) for the next page"
    )


class ScalingReport(BaseModel):
    """One plan per workload with replicas: its replicas (or HPA bounds) and per-pod CPU
    request together (docs/recommendations.md, "One plan per workload")."""

    model_config = ConfigDict(frozen=True)

    target_utilization: float = Field(
        description="CPU utilization at the percentile the plans aim at, of the request they "
        "assume (an HPA on CPU: its own target)"
    )
    recommendations: list[dict[str, Any]] = Field(
        description="the plans: recommended_replicas or hpa bounds, assumed_cpu_request "
        "(cores per pod), cpu_requests per container, utilization, band, within_band, floor, "
        "reason"
    )
    errors: list[dict[str, Any]]
    coverage: Coverage
    total_workloads: int = Field(description="workloads the filter selects, on every page")
    next_cursor: str | None = Field(
        default=None, description="pass as cursor (same arguments) for the next page"
    )


class ReportText(BaseModel):
    model_config = ConfigDict(frozen=True)

    markdown: str


def severe_enough(scans: Sequence[dict[str, Any]], min_severity: str) -> list[dict[str, Any]]:
    """The krr scans at least as severe as ``min_severity``."""
    floor = _SEVERITY_RANK[min_severity]
    return [s for s in scans if _SEVERITY_RANK.get(str(s.get("severity")), -1) >= floor]


def _key(workload: Workload) -> tuple[str, ...]:
    return workload_key(workload.kind, workload.namespace, workload.name)


@dataclass(frozen=True)
class Selection:
    """The workloads a call is about, in page order, and the labels of the namespaces it
    named (None: the credentials may not read one), so that the floors need not read them
    again."""

    workloads: list[Workload]
    namespace_labels: Mapping[str, Mapping[str, str] | None]


def _where(namespaces: Sequence[str]) -> str:
    if not namespaces:
        return "the cluster"
    noun = "namespace" if len(namespaces) == 1 else "namespaces"
    return f"{noun} {', '.join(sorted(namespaces))}"


def _refuse_unknown_names(found: Sequence[Workload], names: Sequence[str], where: str) -> None:
    """Names that match no workload are an error naming them, not an empty result."""
    unknown = sorted(set(names) - {w.name for w in found})
    if unknown:
        raise ServiceError(
            f"no Deployment, StatefulSet or DaemonSet named {', '.join(unknown)} in {where}"
        )


async def select_workloads(
    service: Service, namespaces: Sequence[str], names: Sequence[str] = ()
) -> Selection:
    """The workloads of ``namespaces`` (all: empty) named ``names`` (all: empty), in page
    order. A namespace the API server does not know, or a name no workload has, is an error
    naming it."""
    if service.kubeconfig is None:
        raise ServiceError("no kubeconfig: start the server with --kubeconfig or KUBECONFIG")
    labels = await check_namespaces(service, namespaces)

    def read() -> list[Workload]:
        assert service.kubeconfig is not None
        with WorkloadReader(service.kubeconfig, context=service.context) as reader:
            found = reader.workloads(list(namespaces) or None)
        return sorted((w for w in found if not names or w.name in names), key=_key)

    try:
        found = await thread(read)
    except WorkloadReadError as exc:
        raise ServiceError(f"cannot read workloads: {exc}") from None
    except (OSError, ValueError, KeyError) as exc:  # the kubeconfig: say which, not a traceback
        raise ServiceError(f"cannot read workloads: {service.kubeconfig}: {exc}") from None
    _refuse_unknown_names(found, names, _where(namespaces))
    return Selection(found, labels)


def scan_coverage(result: ScanResult, workloads: Sequence[Workload]) -> Coverage:
    """Which of ``workloads`` a scan has usage data for, and why the others have none
    (:func:`sizeguard.recommend.results.coverage`, as the MCP result shows it)."""
    found = coverage(result, workloads)
    return Coverage(
        workloads=found.workloads,
        with_data=found.with_data,
        without=[MissingData(target=g.target, kind=g.reason, reason=g.detail) for g in found.gaps],
    )


def _refuse_unanswered(result: ScanResult, workloads: Sequence[Workload]) -> None:
    """A scan Prometheus answered nothing of is an error naming the cause, not an empty
    result; a partial one is not (its coverage says what is missing)."""
    found = coverage(result, workloads)
    if found.answered_nothing:
        raise ServiceError(f"no recommendations: {found.cause}")


def _description(text: str) -> str:
    """krr's description of the strategy, without its advice about krr's command-line flags
    (this tool has none of them)."""
    return "".join(line for line in text.splitlines(keepends=True) if "--allow-hpa" not in line)


def _prometheus(service: Service) -> PrometheusClient:
    if not service.prometheus_url:
        raise ServiceError(
            "no Prometheus: start the server with --prometheus-url or PROMETHEUS_URL"
        )
    return PrometheusClient(service.prometheus_url, timeout=30.0, retries=2)


async def run_scan(
    ctx: Context, selection: Selection, strategy: str, target_utilization: float | None
) -> ScanResult:
    """Recommendations for the workloads of ``selection`` from Prometheus with ``strategy``,
    with progress per batch of queries. A Prometheus that answered nothing is an error naming
    the cause."""
    service = runtime(ctx).service
    steps = progress(ctx)
    workloads, labels = selection.workloads, selection.namespace_labels
    await steps.at(0.1, f"asking Prometheus which pods {len(workloads)} workloads ran")

    async def batches(done: int, total: int) -> None:
        await steps.at(
            0.2 + 0.75 * done / max(total, 1),
            f"queried Prometheus: {done} of {total} batches of namespaces",
        )

    async with _prometheus(service) as client:
        result = await scan(
            client,
            workloads,
            settings_for(strategy),
            target_utilization=target_utilization,
            floors=lambda chosen: service.availability_floors(chosen, labels),
            progress=batches,
        )
    _refuse_unanswered(result, workloads)
    await steps.at(1.0, f"built recommendations for {len(workloads)} workloads")
    return result


async def _scan_page(
    ctx: Context,
    namespaces: Sequence[str],
    names: Sequence[str],
    paging: tuple[str, dict[str, Any], str | None, int],
    strategy: str,
    target_utilization: float | None,
) -> tuple[list[Workload], Page[Workload], ScanResult]:
    """The selected workloads, the page of them ``paging`` (tool, arguments, cursor, limit)
    asks for, and the scan of that page."""
    tool, arguments, cursor, limit = paging
    await progress(ctx).at(0.0, "reading workloads")
    selected = await select_workloads(runtime(ctx).service, namespaces, names)
    chosen = page(
        selected.workloads, _key, tool=tool, arguments=arguments, cursor=cursor, limit=limit
    )
    on_page = replace(selected, workloads=chosen.items)
    return selected.workloads, chosen, await run_scan(ctx, on_page, strategy, target_utilization)


def _cluster_page(state: ClusterState, chosen: Page[WorkloadState]) -> ClusterStatePage:
    """The HPAs of a page's workloads and their namespaces; the HPAs and namespaces no
    workload names come on the last page."""
    workloads = chosen.items
    last = chosen.next_cursor is None
    hpa_of = {(w.target.namespace, w.hpa) for w in workloads if w.hpa}
    named = {(w.target.namespace, w.hpa) for w in state.workloads if w.hpa}
    hpas = [
        h
        for h in state.hpas
        if (h.target.namespace, h.target.name) in hpa_of
        or (last and (h.target.namespace, h.target.name) not in named)
    ]
    used = {w.target.namespace for w in state.workloads} | {h.target.namespace for h in state.hpas}
    shown = {w.target.namespace for w in workloads} | {h.target.namespace for h in hpas}
    return ClusterStatePage(
        workloads=workloads,
        hpas=hpas,
        namespaces={
            name: info
            for name, info in state.namespaces.items()
            if name in shown or (last and name not in used)
        },
        capacity=state.capacity,
        total_workloads=len(state.workloads),
        next_cursor=chosen.next_cursor,
    )


async def get_cluster_state(
    ctx: Context,
    namespaces: Annotated[list[Name], Field(description="empty: all namespaces")] = [],  # noqa: B006
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> ClusterStatePage:
    """Workloads (replicas, readiness, requests/limits per container), their HPAs, namespace
    labels and the cluster's allocatable capacity and current requests. Pages of `limit`
    workloads in (namespace, name, kind) order: pass `next_cursor` back as `cursor` for the
    next page."""
    service = runtime(ctx).service
    arguments = {"namespaces": namespaces}

    async def work() -> ClusterStatePage:
        await check_namespaces(service, namespaces)
        state = await thread(service.cluster_state, namespaces)
        chosen = page(
            state.workloads,
            lambda w: workload_key(w.target.kind, w.target.namespace, w.target.name),
            tool="get_cluster_state",
            arguments=arguments,
            cursor=cursor,
            limit=limit,
        )
        return _cluster_page(state, chosen)

    return await run(
        ctx, "get_cluster_state", {**arguments, "cursor": cursor, "limit": limit}, work
    )


async def get_metrics(
    ctx: Context,
    namespaces: Annotated[list[Name], Field(description="empty: all namespaces")] = [],  # noqa: B006
    names: Annotated[list[Name], Field(description="workload names; empty: all")] = [],  # noqa: B006
    window_hours: Annotated[float, Field(gt=0, le=24 * 90)] = 24.0,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> Metrics:
    """CPU and memory usage per workload over a window (average and peak per pod) and
    utilization against requests, from Prometheus; `coverage` names the workloads it has no
    usage for. Pages of `limit` workloads: pass `next_cursor` back as `cursor`."""
    service = runtime(ctx).service
    arguments = {"namespaces": namespaces, "names": names, "window_hours": window_hours}

    async def work() -> Metrics:
        steps = progress(ctx)
        await steps.at(0.0, "reading workloads")
        found = (await select_workloads(service, namespaces, names)).workloads
        chosen = page(
            found, _key, tool="get_metrics", arguments=arguments, cursor=cursor, limit=limit
        )
        await steps.at(0.3, f"querying Prometheus for {len(chosen.items)} workloads")
        try:
            async with _prometheus(service) as client:
                window = int(window_hours * 3600)
                result = await usage(client, chosen.items, window_seconds=window)
        except PrometheusError as exc:
            raise ServiceError(f"no metrics: {exc}") from None
        return result.model_copy(
            update={"total_workloads": len(found), "next_cursor": chosen.next_cursor}
        )

    return await run(ctx, "get_metrics", {**arguments, "cursor": cursor, "limit": limit}, work)


async def scan_recommendations(
    ctx: Context,
    filter: RecommendationFilter = _DEFAULT_FILTER,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> ScanReport:
    """krr-compatible CPU/memory recommendations (strategy simple or simple-limit) with
    severity and monthly cost, filtered by namespace, name and minimum severity; `coverage`
    names the workloads without usage data. Pages of `limit` workloads in (namespace, name,
    kind) order: pass `next_cursor` back as `cursor` (same filter) for the next page."""
    service = runtime(ctx).service
    arguments = filter.model_dump()

    async def work() -> ScanReport:
        found, chosen, result = await _scan_page(
            ctx,
            filter.namespaces,
            filter.names,
            ("scan_recommendations", arguments, cursor, limit),
            filter.strategy,
            None,
        )
        document = to_krr(result, service.prices)
        return ScanReport(
            strategy=result.strategy,
            description=_description(result.description),
            score=result.score,
            scans=severe_enough(document["scans"], filter.min_severity),
            cost=document.get("cost", {}),
            errors=result.errors,
            coverage=scan_coverage(result, chosen.items),
            total_workloads=len(found),
            next_cursor=chosen.next_cursor,
        )

    return await run(
        ctx,
        "scan_recommendations",
        {"filter": arguments, "cursor": cursor, "limit": limit},
        work,
    )


def refuse_without_floors(result: ScanResult) -> None:
    """No availability floors, no plans: an error naming the cause (fail closed)."""
    for error in result.errors:
        if error.get("kind") == "availability_floors":
            raise ServiceError(str(error.get("message")))


async def recommend_scaling(
    ctx: Context,
    namespaces: Annotated[list[Name], Field(description="empty: all namespaces")] = [],  # noqa: B006
    names: Annotated[list[Name], Field(description="workload names; empty: all")] = [],  # noqa: B006
    target_utilization: Annotated[
        float,
        Field(
            gt=0,
            le=1,
            description="CPU usage at the percentile as a share of the request; 1.0 (the "
            "default) keeps krr's request at today's replicas",
        ),
    ] = 1.0,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> ScalingReport:
    """One plan per workload: replicas and per-pod CPU request computed together for the
    demand at the strategy's percentile, so that they never count it twice. Replicas are
    at least the availability floor from policy (e.g. 2 in production) and are not changed
    for demand; with an HPA, its min/max for the request the plan assumes. Each plan names
    assumed_cpu_request and the utilization it gives. Pages of `limit` workloads in
    (namespace, name, kind) order: pass `next_cursor` back as `cursor` for the next page."""
    arguments = {"namespaces": namespaces, "names": names, "target_utilization": target_utilization}

    async def work() -> ScalingReport:
        found, chosen, result = await _scan_page(
            ctx,
            namespaces,
            names,
            ("recommend_scaling", arguments, cursor, limit),
            RecommendationFilter().strategy,
            target_utilization,
        )
        refuse_without_floors(result)
        recs: list[ReplicaRecommendation] = result.replicas
        return ScalingReport(
            target_utilization=target_utilization,
            recommendations=[r.to_json() for r in recs],
            errors=result.errors,
            coverage=scan_coverage(result, chosen.items),
            total_workloads=len(found),
            next_cursor=chosen.next_cursor,
        )

    return await run(
        ctx, "recommend_scaling", {**arguments, "cursor": cursor, "limit": limit}, work
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
