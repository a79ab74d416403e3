"""``request_confirmation``: the human approves a previewed change set, never the model (MCP
elicitation in both protocol styles; a client that cannot ask is sent to ``sizeguard
approve``). :func:`confirm` is also the question ``scale_workload`` and ``rollback_changes``
ask."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from fastmcp import Context
from mcp_types import InputRequiredResult

from sizeguard.approvals import approver_subject
from sizeguard.server.auth import requester
from sizeguard.server.confirm import Answer, ask, modern_protocol, page_answer_round, show_page
from sizeguard.server.decisions import ApprovalStatus, approval_status, open_request
from sizeguard.server.models import ChangeSetId, Confirmation, Preview
from sizeguard.server.service import (
    Service,
    ServiceError,
    change_set_op,
    confirmation_text,
    page_refusal,
    timestamp,
)
from sizeguard.server.strength import needs_page
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
        requested = await thread(approval_status, service, change_set_id)
        if requested is not None and needs_page(requested.requires):
            problem = page_answer_round(ctx, pending, change_set_id=change_set_id, op=op)
            if problem is not None:
                return Confirmation(
                    change_set_id=change_set_id,
                    op=op,
                    status="refused",
                    message=f"confirmation refused: {problem}",
                )
            return _from_page(requested)
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
    if needs_page(preview.policy.requires):
        return await _to_page(ctx, preview, op, actor, text)
    answer = await ask(ctx, pending, change_set_id=change_set_id, op=op, text=text)
    if isinstance(answer, InputRequiredResult):
        return answer
    return await thread(_settle, service, change_set_id, op, answer, actor)


async def _to_page(
    ctx: Context, preview: Preview, op: Literal["apply", "rollback"], actor: str, text: str
) -> Confirmation | InputRequiredResult:
    """A change set the policy wants an enrolled approver for: put it on the approval page
    and send the person there; the client's answer (if any) approves nothing."""
    service, pending = runtime(ctx).service, runtime(ctx).pending
    cs_id = preview.change_set_id
    if service.approval_url is None:
        return Confirmation(
            change_set_id=cs_id,
            op=op,
            status="refused",
            message=page_refusal(service, cs_id, preview.policy.requires),
            requires=preview.policy.requires,
        )
    status = await thread(lambda: open_request(service, preview, op=op, requester=actor))
    if status.state == "pending" and status.url is not None:
        shown = await show_page(ctx, pending, change_set_id=cs_id, op=op, text=text, url=status.url)
        if isinstance(shown, InputRequiredResult):
            return shown
        fresh = await thread(approval_status, service, cs_id)
        status = fresh or status
    return _from_page(status)


def _from_page(status: ApprovalStatus) -> Confirmation:
    """What request_confirmation answers for a change set on the approval page."""
    cs_id = status.change_set_id
    common = {
        "change_set_id": cs_id,
        "op": status.op,
        "approval_url": status.url,
        "requires": status.requires,
        "approvers": status.approvers,
    }
    if status.state == "approved":
        return Confirmation(
            **common,
            status="approved",
            approver=approver_subject(status.approvers[0]) if status.approvers else None,
            message=f"{status.message}; call apply_changes('{cs_id}')",
        )
    if status.state == "declined":
        return Confirmation(**common, status="declined", message=status.message)
    if status.state == "applied":
        return Confirmation(
            **common, status="refused", message="this change set was already applied"
        )
    return Confirmation(
        **common,
        status="pending",
        message=(
            f"the policy requires {', '.join(status.requires)}: enrolled approvers must approve "
            f"it with a passkey on the approval page {status.url} (give the person this "
            f"address; an answer in this client does not approve it). "
            f"{status.message[:1].upper()}{status.message[1:]}. Then "
            f"call apply_changes('{cs_id}'); until the approvals are recorded it is refused and "
            "says what is missing"
        ),
    )


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
    risk, the policy warnings and the cost. Where the policy requires an enrolled approver
    (production, critical workloads), the answer is status "pending" with approval_url: the
    person approves with a passkey on that page (the client may open it), then call
    apply_changes. Otherwise the client asks the person (the namespace typed where required)
    and a single-use approval valid for 5 minutes is recorded; a client that cannot ask gets
    `sizeguard approve <id>` for a terminal."""
    return await run(
        ctx,
        "request_confirmation",
        {"change_set_id": change_set_id},
        lambda: confirm(ctx, change_set_id),
        mutating=True,
    )
