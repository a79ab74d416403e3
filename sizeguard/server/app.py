"""The FastMCP app: the tools the assistant calls.

Read-only tools never write to the cluster. Mutating tools need a human's approval recorded
in the ledger, which only the confirmation paths create (MCP elicitation answered by the
human, or ``sizeguard approve`` in a terminal). With ``read_only`` the mutating tools are not
registered, and the service refuses them at call time as well.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Literal, TypeVar

import anyio
import structlog
from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from mcp_types import InputRequiredResult, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from sizeguard.cluster import ClusterError, ClusterState
from sizeguard.ledger import LedgerError, scrub_details
from sizeguard.prometheus import PrometheusClient, PrometheusError
from sizeguard.recommend import ReplicaRecommendation, scan, settings_for
from sizeguard.report_formats import to_krr
from sizeguard.server import executor, report
from sizeguard.server.confirm import (
    Answer,
    PendingConfirmations,
    ask,
    client_name,
    modern_protocol,
)
from sizeguard.server.models import (
    ChangeSetId,
    Confirmation,
    Edit,
    Execution,
    History,
    Metrics,
    Name,
    Preview,
    RecommendationFilter,
    SafetyReport,
)
from sizeguard.server.service import (
    Service,
    ServiceError,
    change_set_op,
    confirmation_text,
    timestamp,
)
from sizeguard.server.usage import usage
from sizeguard.workloads import Workload, WorkloadReader

__all__ = ["MUTATING_TOOLS", "build_app"]

T = TypeVar("T")
MUTATING_TOOLS = ("request_confirmation", "apply_changes", "scale_workload", "rollback_changes")

_READ = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
_log = structlog.get_logger("sizeguard.server")
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


class Outcome(BaseModel):
    """scale_workload / rollback_changes: the change set, the human's answer, what happened."""

    model_config = ConfigDict(frozen=True)

    change_set_id: str
    preview: Preview | None
    confirmation: Confirmation
    execution: Execution | None
    notes: list[str] = Field(
        default_factory=list, description="targets left out of a rollback, and why"
    )


def _audit_call(
    service: Service, actor: str, tool: str, arguments: dict[str, Any], result: str
) -> None:
    try:
        cs = arguments.get("change_set_id")
        service.ledger.append_audit(
            actor=actor,
            event=f"tool.{tool}",
            result=result[:64],
            change_set_id=cs if isinstance(cs, str) and len(cs) <= 64 else None,
            details={"arguments": scrub_details(arguments)},
        )
    except Exception as exc:  # never let the audit of a call hide its result (or its error)
        _log.error("audit.failed", tool=tool, error=str(exc)[:200])


def build_app(
    service: Service,
    *,
    name: str = "sizeguard",
    before_patch: executor.BeforePatch | None = None,
) -> FastMCP:
    """The MCP server over ``service``. ``before_patch`` is a test seam (partial failures)."""
    mcp = FastMCP(
        name,
        instructions=(
            "sizeguard right-sizes and scales Kubernetes workloads safely. Read with "
            "get_cluster_state, get_metrics, scan_recommendations and recommend_scaling; propose "
            "with preview_changes (nothing changes); a human approves with request_confirmation "
            "(or `sizeguard approve <id>` in a terminal); then apply_changes. You cannot approve "
            "a change yourself. Undo with rollback_changes."
        ),
        mask_error_details=True,
    )
    pending = PendingConfirmations()

    async def call(
        ctx: Context,
        tool: str,
        arguments: dict[str, Any],
        work: Callable[[], Awaitable[T]],
        *,
        mutating: bool = False,
    ) -> T:
        """Run one tool call: refusals and errors become clear tool errors, and every call,
        whatever its outcome, is in the audit log."""
        actor = client_name(ctx)
        try:
            if mutating:
                writable()
            result = await work()
        except ToolError as exc:
            await anyio.to_thread.run_sync(_audit_call, service, actor, tool, arguments, "error")
            _log.info("tool.call", tool=tool, result="error", error=str(exc)[:300])
            raise
        except (ServiceError, ClusterError, LedgerError, PrometheusError, ValueError) as exc:
            await anyio.to_thread.run_sync(_audit_call, service, actor, tool, arguments, "error")
            _log.info("tool.call", tool=tool, result="error", error=str(exc)[:300])
            raise ToolError(f"sizeguard: {exc}") from None
        except Exception as exc:
            await anyio.to_thread.run_sync(_audit_call, service, actor, tool, arguments, "error")
            _log.error("tool.call", tool=tool, result="error", error_type=type(exc).__name__)
            raise ToolError(
                f"sizeguard: internal error ({type(exc).__name__}); see the server's log"
            ) from None
        status = getattr(result, "status", None)
        outcome = str(status) if status is not None else "ok"
        if isinstance(result, InputRequiredResult):
            outcome = "input_required"
        await anyio.to_thread.run_sync(_audit_call, service, actor, tool, arguments, outcome)
        _log.info("tool.call", tool=tool, result=outcome)
        return result

    def thread(function: Callable[..., T], *args: Any) -> Awaitable[T]:
        return anyio.to_thread.run_sync(function, *args)

    def writable() -> None:
        if service.read_only or service.key is None:
            raise ToolError("sizeguard: this server is read-only; mutating tools are refused")

    # --- read-only tools --------------------------------------------------------------------

    @mcp.tool(annotations=_READ)
    async def get_cluster_state(
        ctx: Context,
        namespaces: Annotated[list[Name], Field(description="empty: all namespaces")] = [],  # noqa: B006
    ) -> ClusterState:
        """Workloads (replicas, readiness, requests/limits per container), HPAs, namespace
        labels and the cluster's allocatable capacity and current requests."""
        return await call(
            ctx,
            "get_cluster_state",
            {"namespaces": namespaces},
            lambda: thread(service.cluster_state, namespaces),
        )

    async def workloads(namespaces: Sequence[str], names: Sequence[str] = ()) -> list[Workload]:
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

    def prometheus() -> PrometheusClient:
        if not service.prometheus_url:
            raise ServiceError(
                "no Prometheus: start the server with --prometheus-url or PROMETHEUS_URL"
            )
        return PrometheusClient(service.prometheus_url, timeout=30.0, retries=2)

    @mcp.tool(annotations=_READ)
    async def get_metrics(
        ctx: Context,
        namespaces: Annotated[list[Name], Field(description="empty: all namespaces")] = [],  # noqa: B006
        names: Annotated[list[Name], Field(description="workload names; empty: all")] = [],  # noqa: B006
        window_hours: Annotated[float, Field(gt=0, le=24 * 90)] = 24.0,
    ) -> Metrics:
        """CPU and memory usage per workload over a window (average and peak per pod) and
        utilization against requests, from Prometheus."""

        async def work() -> Metrics:
            await ctx.report_progress(0, 2, "reading workloads")
            found = await workloads(namespaces, names)
            await ctx.report_progress(1, 2, "querying Prometheus")
            async with prometheus() as client:
                result = await usage(client, found, window_seconds=int(window_hours * 3600))
            await ctx.report_progress(2, 2, "done")
            return result

        return await call(
            ctx,
            "get_metrics",
            {"namespaces": namespaces, "names": names, "window_hours": window_hours},
            work,
        )

    async def run_scan(
        ctx: Context, flt: RecommendationFilter, target_utilization: float | None
    ) -> Any:
        await ctx.report_progress(0, 3, "reading workloads")
        found = await workloads(flt.namespaces, flt.names)
        await ctx.report_progress(1, 3, f"querying Prometheus for {len(found)} workloads")
        async with prometheus() as client:
            result = await scan(
                client,
                found,
                settings_for(flt.strategy),
                namespaces=flt.namespaces or None,
                target_utilization=target_utilization,
            )
        await ctx.report_progress(2, 3, "building recommendations")
        return result

    @mcp.tool(annotations=_READ)
    async def scan_recommendations(
        ctx: Context, filter: RecommendationFilter = _DEFAULT_FILTER
    ) -> ScanReport:
        """krr-compatible CPU/memory recommendations (strategy simple or simple-limit) with
        severity and monthly cost, filtered by namespace, name and minimum severity."""

        async def work() -> ScanReport:
            result = await run_scan(ctx, filter, None)
            document = to_krr(result, service.prices)
            floor = _SEVERITY_RANK[filter.min_severity]
            scans = [
                s
                for s in document["scans"]
                if _SEVERITY_RANK.get(str(s.get("severity")), -1) >= floor
            ]
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

        return await call(ctx, "scan_recommendations", filter.model_dump(), work)

    @mcp.tool(annotations=_READ)
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

        return await call(
            ctx,
            "recommend_scaling",
            {"namespaces": namespaces, "names": names, "target_utilization": target_utilization},
            work,
        )

    @mcp.tool(
        annotations=ToolAnnotations(
            read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
        )
    )
    async def preview_changes(
        ctx: Context,
        edits: Annotated[
            list[Edit],
            Field(description="explicit edits (or leave empty and use from_recommendations)"),
        ] = [],  # noqa: B006
        from_recommendations: RecommendationFilter | None = None,
    ) -> Preview:
        """Propose a change set — from explicit edits or from recommendations — and check it:
        OPA's policy decision, a server-side dry run through the apiserver (with the webhook's
        warnings), a readable diff and the cost delta. Nothing changes in the cluster. Returns
        the change-set id a human can then approve."""
        actor = client_name(ctx)

        async def work() -> Preview:
            if bool(edits) == (from_recommendations is not None):
                raise ServiceError("give either edits or from_recommendations (exactly one)")
            if from_recommendations is not None:
                result = await run_scan(ctx, from_recommendations, None)
                document = to_krr(result, service.prices)
                floor = _SEVERITY_RANK[from_recommendations.min_severity]
                scans = [
                    s
                    for s in document["scans"]
                    if _SEVERITY_RANK.get(str(s.get("severity")), -1) >= floor
                ]
                limit = from_recommendations.max_targets
                keys = list(
                    dict.fromkeys(
                        (s["object"]["kind"], s["object"]["namespace"], s["object"]["name"])
                        for s in scans
                    )
                )[:limit]
                chosen = [
                    s
                    for s in scans
                    if (s["object"]["kind"], s["object"]["namespace"], s["object"]["name"])
                    in set(keys)
                ]
                change_set = await thread(
                    service.change_set_from_recommendations, chosen, "recommendation"
                )
            else:
                change_set = await thread(service.change_set_from_edits, edits, "edit")
            await ctx.report_progress(1, 2, f"checking {len(change_set.changes)} object(s)")
            preview = await thread(
                lambda: service.preview(change_set, actor=actor, source="preview")
            )
            await ctx.report_progress(2, 2, "done")
            return preview

        return await call(
            ctx,
            "preview_changes",
            {
                "edits": [e.model_dump() for e in edits][:100],
                "from_recommendations": None
                if from_recommendations is None
                else from_recommendations.model_dump(),
            },
            work,
        )

    @mcp.tool(annotations=_READ)
    async def get_safety_report(
        ctx: Context, change_set_id: ChangeSetId | None = None
    ) -> SafetyReport:
        """Whether every safety check is in place now (policy engine, signing key, webhook
        registration, audit log) and, for a change set, its current policy decision and
        approvals."""
        actor = client_name(ctx)
        return await call(
            ctx,
            "get_safety_report",
            {"change_set_id": change_set_id},
            lambda: thread(report.safety_report, service, change_set_id, actor),
        )

    @mcp.tool(annotations=_READ)
    async def get_execution_history(
        ctx: Context,
        change_set_id: ChangeSetId | None = None,
        limit: Annotated[int, Field(ge=1, le=1000)] = 100,
    ) -> History:
        """The audit log: every tool call, confirmation, apply, restore and rollback (newest
        last), and whether its hash chain is intact."""
        return await call(
            ctx,
            "get_execution_history",
            {"change_set_id": change_set_id, "limit": limit},
            lambda: thread(report.history, service, change_set_id, limit),
        )

    @mcp.tool(annotations=_READ)
    async def generate_report(ctx: Context) -> ReportText:
        """A Markdown summary of applied change sets, their monthly savings and rollbacks."""

        async def work() -> ReportText:
            return ReportText(markdown=await thread(report.markdown, service))

        return await call(ctx, "generate_report", {}, work)

    if service.read_only or service.key is None:
        return mcp

    # --- mutating tools ---------------------------------------------------------------------

    async def confirm(
        ctx: Context,
        change_set_id: str,
        preview: Preview | None = None,
        notes: Sequence[str] = (),
    ) -> Confirmation | InputRequiredResult:
        """Ask the human about a change set (``preview``: its fresh preview, if the caller
        has one). The answer round of the input-required style skips the preview: approving
        checks the policy and the dry runs again before anything is recorded."""
        actor = client_name(ctx)
        stored = await thread(service.ledger.get_change_set, change_set_id)
        if stored is None:
            raise ServiceError(
                f"there is no change set {change_set_id}; preview_changes creates one"
            )
        op = change_set_op(stored.source)
        if modern_protocol(ctx) and ctx.input_responses is not None:
            answer = await ask(ctx, pending, change_set_id=change_set_id, op=op, text="")
            assert not isinstance(answer, InputRequiredResult)
            return await thread(settle, change_set_id, op, answer, actor)
        if preview is None:
            fresh, _ = await thread(lambda: service.stored_preview(change_set_id, actor=actor))
            preview = fresh
        if not preview.policy.allowed or any(not d.admitted for d in preview.dry_run):
            problems = [v.message for v in preview.policy.violations] + [
                f"{d.target}: {d.error}" for d in preview.dry_run if not d.admitted
            ]
            return Confirmation(
                change_set_id=change_set_id,
                op=op,
                status="refused",
                message="cannot be approved: " + "; ".join(problems[:5]),
            )
        text = confirmation_text(preview, op)
        if notes:
            text += "\n  Left out:\n" + "\n".join(f"    - {note}" for note in notes[:20])
        answer = await ask(ctx, pending, change_set_id=change_set_id, op=op, text=text)
        if isinstance(answer, InputRequiredResult):
            return answer
        return await thread(settle, change_set_id, op, answer, actor)

    def settle(
        change_set_id: str, op: Literal["apply", "rollback"], answer: Answer, actor: str
    ) -> Confirmation:
        if answer.status != "approved":
            service.record_refusal(change_set_id, actor=actor, status=answer.status, channel="mcp")
            return Confirmation(
                change_set_id=change_set_id,
                op=op,
                status=answer.status,
                message=answer.message + "; nothing was changed",
            )
        approver = f"human via {actor}"
        try:
            approval = service.approve(
                change_set_id, approver=approver, typed=answer.typed, channel="mcp"
            )
        except ServiceError as exc:
            service.record_refusal(change_set_id, actor=actor, status="refused", channel="mcp")
            return Confirmation(
                change_set_id=change_set_id, op=op, status="refused", message=str(exc)
            )
        return Confirmation(
            change_set_id=change_set_id,
            op=op,
            status="approved",
            approver=approver,
            expires_at=timestamp(approval.expires_at),
            message=f"approved; call apply_changes('{change_set_id}') within 5 minutes (one use)"
            if op == "apply"
            else "approved",
        )

    @mcp.tool(
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=False,
        )
    )
    async def request_confirmation(
        ctx: Context, change_set_id: ChangeSetId
    ) -> Confirmation | InputRequiredResult:
        """Ask the human to approve a previewed change set. The human sees the diff, the
        risk, the policy warnings and the cost, and must type the namespace for production or
        critical targets. Records a single-use approval valid for 5 minutes. If this client
        cannot ask the human, the answer names `sizeguard approve <id>` for a terminal."""
        return await call(
            ctx,
            "request_confirmation",
            {"change_set_id": change_set_id},
            lambda: confirm(ctx, change_set_id),
            mutating=True,
        )

    def run_apply(
        ctx: Context, change_set_id: str, actor: str
    ) -> Callable[[], Awaitable[Execution]]:
        async def work() -> Execution:
            await ctx.report_progress(0, 1, f"applying {change_set_id}")
            result = await thread(
                lambda: executor.apply_change_set(
                    service, change_set_id, actor=actor, before_patch=before_patch
                )
            )
            await ctx.report_progress(1, 1, result.status)
            return result

        return work

    @mcp.tool(
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=False,
            open_world_hint=False,
        )
    )
    async def apply_changes(ctx: Context, change_set_id: ChangeSetId) -> Execution:
        """Apply a change set a human approved: single-use approval, policy checked again,
        live objects re-read (drift refuses), originals snapshotted, each object patched with
        its signed approval and verified; on a partial failure the originals are restored."""
        actor = client_name(ctx)
        return await call(
            ctx,
            "apply_changes",
            {"change_set_id": change_set_id},
            run_apply(ctx, change_set_id, actor),
            mutating=True,
        )

    async def propose_confirm_apply(
        ctx: Context, change_set_id: str, preview: Preview | None, notes: Sequence[str] = ()
    ) -> Outcome | InputRequiredResult:
        confirmation = await confirm(ctx, change_set_id, preview, notes)
        if isinstance(confirmation, InputRequiredResult):
            return confirmation
        execution = None
        if confirmation.status == "approved":
            execution = await run_apply(ctx, change_set_id, client_name(ctx))()
        return Outcome(
            change_set_id=change_set_id,
            preview=preview,
            confirmation=confirmation,
            execution=execution,
            notes=list(notes),
        )

    @mcp.tool(
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=False,
            open_world_hint=False,
        )
    )
    async def scale_workload(
        ctx: Context,
        namespace: Name,
        name: Name,
        replicas: Annotated[int, Field(ge=0, le=100000)],
        reason: Annotated[str, Field(min_length=1, max_length=1000)],
    ) -> Outcome | InputRequiredResult:
        """Scale a Deployment or StatefulSet: a one-object change set, previewed, confirmed
        by the human and applied like any other. Workloads with an HPA are refused (change
        the HPA's min/max with preview_changes instead)."""
        actor = client_name(ctx)

        async def work() -> Outcome | InputRequiredResult:
            state = await thread(service.cluster_state, [namespace])
            found = [
                w for w in state.workloads if w.target.name == name and w.target.kind != "DaemonSet"
            ]
            if not found:
                raise ServiceError(f"no Deployment or StatefulSet {namespace}/{name}")
            workload = found[0]  # an HPA's workload is refused with the edit, as anywhere
            edit = Edit(
                kind=workload.target.kind,
                namespace=namespace,
                name=name,
                replicas=replicas,
                reason=reason,
            )
            change_set = await thread(service.change_set_from_edits, [edit], "scale")
            preview = await thread(lambda: service.preview(change_set, actor=actor, source="scale"))
            return await propose_confirm_apply(ctx, preview.change_set_id, preview)

        return await call(
            ctx,
            "scale_workload",
            {"namespace": namespace, "name": name, "replicas": replicas, "reason": reason},
            work,
            mutating=True,
        )

    @mcp.tool(
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=False,
            open_world_hint=False,
        )
    )
    async def rollback_changes(
        ctx: Context, change_set_id: ChangeSetId
    ) -> Outcome | InputRequiredResult:
        """Restore the objects of an applied change set to their snapshots. Creates a
        rollback change set, which needs its own human confirmation, then applies it."""
        actor = client_name(ctx)

        async def work() -> Outcome | InputRequiredResult:
            rollback = await thread(
                lambda: executor.rollback_change_set(service, change_set_id, actor=actor)
            )
            cs_id = rollback.change_set.id
            preview = None
            if ctx.input_responses is None:
                preview, _ = await thread(lambda: service.stored_preview(cs_id, actor=actor))
            return await propose_confirm_apply(ctx, cs_id, preview, rollback.skipped)

        return await call(
            ctx, "rollback_changes", {"change_set_id": change_set_id}, work, mutating=True
        )

    return mcp
