"""The tools that change the cluster, each only with a human's approval: ``apply_changes``,
``scale_workload`` (preview, confirm and apply of one replicas change) and
``rollback_changes`` (a rollback change set, confirmed and applied like any other)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated

from fastmcp import Context
from mcp_types import InputRequiredResult
from pydantic import BaseModel, ConfigDict, Field

from sizeguard.server import executor
from sizeguard.server.auth import requester
from sizeguard.server.models import ChangeSetId, Confirmation, Edit, Execution, Name, Preview
from sizeguard.server.service import ServiceError
from sizeguard.server.tools.common import progress, run, runtime, thread
from sizeguard.server.tools.confirming import confirm

__all__ = ["Outcome", "apply_changes", "rollback_changes", "scale_workload"]


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


def _applying(ctx: Context, change_set_id: str, actor: str) -> Callable[[], Awaitable[Execution]]:
    runtime_ = runtime(ctx)

    async def work() -> Execution:
        await progress(ctx).at(0.5, f"applying {change_set_id}")
        return await thread(
            lambda: executor.apply_change_set(
                runtime_.service, change_set_id, actor=actor, before_patch=runtime_.before_patch
            )
        )

    return work


async def _confirm_and_apply(
    ctx: Context, change_set_id: str, preview: Preview | None, notes: Sequence[str] = ()
) -> Outcome | InputRequiredResult:
    confirmation = await confirm(ctx, change_set_id, preview, notes)
    if isinstance(confirmation, InputRequiredResult):
        return confirmation
    execution = None
    if confirmation.status == "approved":
        execution = await _applying(ctx, change_set_id, requester(ctx))()
    return Outcome(
        change_set_id=change_set_id,
        preview=preview,
        confirmation=confirmation,
        execution=execution,
        notes=list(notes),
    )


async def apply_changes(ctx: Context, change_set_id: ChangeSetId) -> Execution:
    """Apply a change set a human approved: single-use approval, policy checked again
    (including how strongly it must be approved: where it requires enrolled approvers, their
    passkey approvals on the approval page), live objects re-read (drift refuses), originals
    snapshotted, each object patched with its signed approval and verified; on a partial
    failure the originals are restored."""
    actor = requester(ctx)
    return await run(
        ctx,
        "apply_changes",
        {"change_set_id": change_set_id},
        _applying(ctx, change_set_id, actor),
        mutating=True,
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
    service = runtime(ctx).service
    actor = requester(ctx)

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
        return await _confirm_and_apply(ctx, preview.change_set_id, preview)

    return await run(
        ctx,
        "scale_workload",
        {"namespace": namespace, "name": name, "replicas": replicas, "reason": reason},
        work,
        mutating=True,
    )


async def rollback_changes(
    ctx: Context, change_set_id: ChangeSetId
) -> Outcome | InputRequiredResult:
    """Restore the objects of an applied change set to their snapshots. Creates a
    rollback change set, which needs its own human confirmation, then applies it."""
    service = runtime(ctx).service
    actor = requester(ctx)

    async def work() -> Outcome | InputRequiredResult:
        rollback = await thread(
            lambda: executor.rollback_change_set(service, change_set_id, actor=actor)
        )
        cs_id = rollback.change_set.id
        preview = None
        if ctx.input_responses is None:
            preview, _ = await thread(lambda: service.stored_preview(cs_id, actor=actor))
        return await _confirm_and_apply(ctx, cs_id, preview, rollback.skipped)

    return await run(ctx, "rollback_changes", {"change_set_id": change_set_id}, work, mutating=True)
