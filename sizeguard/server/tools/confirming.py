"""``request_confirmation``: the human approves a previewed change set, never the model (MCP
elicitation in both protocol styles; a client that cannot ask is sent to ``sizeguard
approve``). :func:`confirm` is also the question ``scale_workload`` and ``rollback_changes``
ask."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from fastmcp import Context
from mcp_types import InputRequiredResult

from sizeguard.server.auth import requester
from sizeguard.server.confirm import Answer, ask, modern_protocol
from sizeguard.server.models import ChangeSetId, Confirmation, Preview
from sizeguard.server.service import (
    Service,
    ServiceError,
    change_set_op,
    confirmation_text,
    timestamp,
)
from sizeguard.server.tools.common import run, runtime, thread

__all__ = ["confirm", "request_confirmation"]


async def confirm(
    ctx: Context,
    change_set_id: str,
    preview: Preview | None = None,
    notes: Sequence[str] = (),
) -> Confirmation | InputRequiredResult:
    """Ask the human about a change set (``preview``: its fresh preview, if the caller
    has one). The answer round of the input-required style skips the preview: approving
    checks the policy and the dry runs again before anything is recorded."""
    service, pending = runtime(ctx).service, runtime(ctx).pending
    actor = requester(ctx)
    stored = await thread(service.ledger.get_change_set, change_set_id)
    if stored is None:
        raise ServiceError(f"there is no change set {change_set_id}; preview_changes creates one")
    op = change_set_op(stored.source)
    if modern_protocol(ctx) and ctx.input_responses is not None:
        answer = await ask(ctx, pending, change_set_id=change_set_id, op=op, text="")
        assert not isinstance(answer, InputRequiredResult)
        return await thread(_settle, service, change_set_id, op, answer, actor)
    if preview is None:
        fresh, _ = await thread(lambda: service.stored_preview(change_set_id, actor=actor))
        preview = fresh
    untrusted = preview.signing_key_trusted is False
    if untrusted or not preview.policy.allowed or any(not d.admitted for d in preview.dry_run):
        problems = (
            [preview.signing_key_check.removeprefix("NO: ")] * untrusted
            + [v.message for v in preview.policy.violations]
            + [f"{d.target}: {d.error}" for d in preview.dry_run if not d.admitted]
        )
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
    return await thread(_settle, service, change_set_id, op, answer, actor)


def _settle(
    service: Service,
    change_set_id: str,
    op: Literal["apply", "rollback"],
    answer: Answer,
    actor: str,
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
        return Confirmation(change_set_id=change_set_id, op=op, status="refused", message=str(exc))
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


async def request_confirmation(
    ctx: Context, change_set_id: ChangeSetId
) -> Confirmation | InputRequiredResult:
    """Ask the human to approve a previewed change set. The human sees the diff, the
    risk, the policy warnings and the cost, and must type the namespace for production or
    critical targets. Records a single-use approval valid for 5 minutes. If this client
    cannot ask the human, the answer names `sizeguard approve <id>` for a terminal."""
    return await run(
        ctx,
        "request_confirmation",
        {"change_set_id": change_set_id},
        lambda: confirm(ctx, change_set_id),
        mutating=True,
    )
