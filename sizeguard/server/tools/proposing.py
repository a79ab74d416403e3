"""``preview_changes``: a change set from explicit edits or from recommendations, checked
(OPA's decision, a server-side dry run through the admission chain, a diff and the cost).
Nothing changes in the cluster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastmcp import Context
from pydantic import Field

from sizeguard.changes import ChangeSet
from sizeguard.recommend import PlanSettings
from sizeguard.report_formats import to_krr
from sizeguard.server.auth import requester
from sizeguard.server.models import Coverage, Edit, Preview, RecommendationFilter
from sizeguard.server.service import ServiceError
from sizeguard.server.tools.common import progress, run, runtime, thread
from sizeguard.server.tools.reading import (
    refuse_without_floors,
    run_scan,
    scan_coverage,
    select_workloads,
    severe_enough,
)

__all__ = ["preview_changes"]


@dataclass(frozen=True)
class _Proposal:
    """A change set from recommendations, which workloads it had data for, and how many
    workloads with recommendations ``max_targets`` left out."""

    change_set: ChangeSet
    coverage: Coverage
    truncated: int


def _workload(scan: dict[str, Any]) -> tuple[str, str, str]:
    obj = scan["object"]
    return (obj["kind"], obj["namespace"], obj["name"])


async def _from_recommendations(ctx: Context, flt: RecommendationFilter) -> _Proposal:
    """One change set from a scan: krr's per-container values with each workload's plan
    (its CPU request and replicas, or its HPA's bounds) in place of krr's CPU request; no
    change set when the plans cannot be made (no availability floors)."""
    service = runtime(ctx).service
    await progress(ctx).at(0.0, "reading workloads")
    selected = await select_workloads(service, flt.namespaces, flt.names)
    result = await run_scan(ctx, selected, flt.strategy, PlanSettings().target_utilization)
    refuse_without_floors(result)
    scans = severe_enough(to_krr(result, service.prices)["scans"], flt.min_severity)
    ordered = list(dict.fromkeys(_workload(s) for s in scans))
    keys = set(ordered[: flt.max_targets])
    chosen = [s for s in scans if _workload(s) in keys]
    plans = [p for p in result.replicas if p.key in keys]
    change_set = await thread(
        service.change_set_from_recommendations, chosen, "recommendation", plans
    )
    return _Proposal(
        change_set,
        scan_coverage(result, selected.workloads),
        truncated=len(ordered) - len(keys),
    )


def _with_gaps(preview: Preview, proposal: _Proposal) -> Preview:
    """The preview saying what the change set leaves out: workloads without usage data, and
    those ``max_targets`` cut."""
    coverage, notes = proposal.coverage, []
    if coverage.without:
        notes.append(
            f"{len(coverage.without)} of {coverage.workloads} selected workloads lack usage "
            "data (coverage.without says which and why); what they lack stays as it is"
        )
    if proposal.truncated:
        notes.append(
            f"max_targets left out {proposal.truncated} more workload(s) with recommendations "
            "(preview them with a narrower filter)"
        )
    said = "".join(f"; note: {n}" for n in notes)
    return preview.model_copy(
        update={
            "coverage": coverage,
            "truncated": proposal.truncated,
            "next_step": preview.next_step + said,
        }
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
    the change-set id a human can then approve.

    An edit changes one object's footprint: a container's (or init container's) CPU,
    memory and other resources (`container`), the pod-level resources (`pod_level`),
    an init container's `restart_policy` (Always: a sidecar), `runtime_class`,
    `replicas`, the rollout (`strategy`, `max_surge`, `max_unavailable`,
    `min_ready_seconds`, `progress_deadline_seconds`) or an HPA's
    `min_replicas`/`max_replicas`. `action: "create"` proposes a new HPA
    (`scale_target`, bounds, `target_cpu_utilization`); `action: "delete"` removes
    one (not before it is 2 minutes old)."""
    service = runtime(ctx).service
    actor = requester(ctx)

    async def work() -> Preview:
        if bool(edits) == (from_recommendations is not None):
            raise ServiceError("give either edits or from_recommendations (exactly one)")
        steps = progress(ctx)
        proposal: _Proposal | None = None
        if from_recommendations is not None:
            with steps.part(0.0, 0.7):
                proposal = await _from_recommendations(ctx, from_recommendations)
            change_set = proposal.change_set
        else:
            await steps.at(0.0, "reading the objects")
            change_set = await thread(service.change_set_from_edits, edits, "edit")
        await steps.at(0.75, f"checking {len(change_set.changes)} object(s): policy, dry run")
        preview = await thread(lambda: service.preview(change_set, actor=actor, source="preview"))
        return preview if proposal is None else _with_gaps(preview, proposal)

    return await run(
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
