"""Asking the human, never the model: MCP elicitation in both protocol styles.

- Connections before 2026-07-28: ``ctx.elicit`` sends ``elicitation/create`` and waits.
- 2026-07-28 connections: the tool returns an ``InputRequiredResult`` whose request state
  names a server-issued, single-use nonce; the client re-calls the tool with the human's
  answer and that state. FastMCP seals the state on the wire (tampering is rejected before the
  tool runs); :class:`PendingConfirmations` makes it single use and binds it to one change set
  and operation, so an answer without the server's state, a replayed state or a state issued
  for another change set is refused.
- A client that cannot elicit gets a refusal naming ``sizeguard approve <id>``.
- A change set whose policy requires an enrolled approver (``authenticated_approver``,
  ``two_approvers``) is not asked about at all: :func:`show_page` sends the person to the
  approval page (URL-mode elicitation where the client supports it), and no answer in the
  client counts as an approval.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Final, Literal

import structlog
from fastmcp import Context
from fastmcp.server.elicitation import AcceptedElicitation
from mcp import MCPError
from mcp_types import (
    CONNECTION_CLOSED,
    REQUEST_TIMEOUT,
    ClientCapabilities,
    ElicitationCapability,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitRequestURLParams,
    ElicitResult,
    InputRequiredResult,
    UrlElicitationCapability,
)
from pydantic import BaseModel, Field, ValidationError

from sizeguard.ledger import scrub_details

__all__ = [
    "INPUT_KEY",
    "Answer",
    "ApprovalForm",
    "PendingConfirmations",
    "ask",
    "can_open_urls",
    "client_name",
    "modern_protocol",
    "page_answer_round",
    "show_page",
]

INPUT_KEY: Final = "sizeguard_confirmation"
ROUND_TRIP_VERSION: Final = "2026-07-28"
STATE_TTL_SECONDS: Final = 600

_log = structlog.get_logger("sizeguard.confirm")


class ApprovalForm(BaseModel):
    """What the human fills in."""

    approve: bool = Field(description="Approve exactly this change set?")
    namespace: str = Field(
        default="",
        description="For production or critical targets: type the namespace name(s) shown",
    )


@dataclass(frozen=True)
class Answer:
    """The human's answer, or why there is none."""

    status: Literal["approved", "declined", "cancelled", "refused"]
    typed: str | None = None
    message: str = ""


@dataclass(frozen=True)
class _Pending:
    change_set_id: str
    op: str
    expires: float


class PendingConfirmations:
    """Round-trip request states issued by this server; each is good for one answer."""

    def __init__(self, ttl: float = STATE_TTL_SECONDS) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}

    def issue(self, change_set_id: str, op: str) -> str:
        nonce = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self._pending = {k: v for k, v in self._pending.items() if v.expires > now}
            self._pending[nonce] = _Pending(change_set_id, op, now + self._ttl)
        return json.dumps({"nonce": nonce, "change_set_id": change_set_id, "op": op})

    def take(self, state: str | None, change_set_id: str, op: str) -> str | None:
        """Use a state once. Returns None if good, else why it is refused."""
        if not state:
            return "the answer came without the request state this server issued"
        try:
            document = json.loads(state)
            nonce = str(document["nonce"])
        except (ValueError, KeyError, TypeError):
            return "the request state is not one this server issued"
        with self._lock:
            pending = self._pending.pop(nonce, None)
        if pending is None:
            return "the request state is unknown, expired or already used"
        if pending.expires <= time.monotonic():
            return "the request state expired; ask again"
        if (pending.change_set_id, pending.op) != (change_set_id, op):
            return (
                f"the request state was issued for {pending.op} of {pending.change_set_id}, "
                f"not {op} of {change_set_id}"
            )
        return None


def modern_protocol(ctx: Context) -> bool:
    version = str(getattr(ctx.request_context, "protocol_version", "") or "")
    return version >= ROUND_TRIP_VERSION


def can_elicit(ctx: Context) -> bool:
    try:
        return bool(
            ctx.session.check_client_capability(
                ClientCapabilities(elicitation=ElicitationCapability())
            )
        )
    except Exception:  # no session information: assume it cannot, refuse with the CLI path
        return False


def can_open_urls(ctx: Context) -> bool:
    """The client supports URL-mode elicitation (MCP 2025-11-25 and later)."""
    try:
        return bool(
            ctx.session.check_client_capability(
                ClientCapabilities(
                    elicitation=ElicitationCapability(url=UrlElicitationCapability())
                )
            )
        )
    except Exception:  # no session information: give the URL in the tool result
        return False


async def show_page(
    ctx: Context,
    pending: PendingConfirmations,
    *,
    change_set_id: str,
    op: str,
    text: str,
    url: str,
) -> InputRequiredResult | None:
    """Send the person to the approval page by URL-mode elicitation where the client supports
    it: in the 2026-07-28 style an ``InputRequiredResult`` to return from the tool (the answer
    round is :func:`page_answer_round`), before that an ``elicitation/create`` in URL mode that
    is awaited. Whatever the client answers, it approves nothing: only enrolled approvers'
    passkeys on the page do. None: the URL goes in the tool result only."""
    if not can_open_urls(ctx):
        return None
    message = f"{text}\n\nApprove or decline it with your passkey on the approval page: {url}"
    if modern_protocol(ctx):
        return InputRequiredResult(
            input_requests={
                INPUT_KEY: ElicitRequest(params=ElicitRequestURLParams(message=message, url=url))
            },
            request_state=pending.issue(change_set_id, op),
        )
    try:
        await ctx.session.elicit_url(
            message=message,
            url=url,
            elicitation_id=secrets.token_urlsafe(16),
            related_request_id=ctx.request_id,
        )
    except Exception as exc:  # the URL is in the tool result anyway
        _log.info("confirm.url_elicitation_failed", error=type(exc).__name__)
    return None


def page_answer_round(
    ctx: Context, pending: PendingConfirmations, *, change_set_id: str, op: str
) -> str | None:
    """The answer round of a URL-mode request: the request state must be this server's (single
    use); the answer itself is ignored. Returns why the state is refused, or None."""
    return pending.take(ctx.request_state, change_set_id, op)


def client_name(ctx: Context) -> str:
    """The MCP client's self-reported name: a detail in the audit log beside the requester
    (:func:`sizeguard.server.auth.requester`), never trusted."""
    name: object = None
    params = getattr(ctx.session, "client_params", None)
    if params is not None:
        name = getattr(getattr(params, "client_info", None), "name", None)
    if not name:
        meta = getattr(ctx.request_context, "meta", None) or {}
        info = meta.get("io.modelcontextprotocol/clientInfo") if isinstance(meta, dict) else None
        name = info.get("name") if isinstance(info, dict) else getattr(info, "name", None)
    text = "".join(ch for ch in str(name or "unknown") if ch.isprintable())
    if scrub_details(text) != text:  # a name that looks like a token is not recorded
        text = "redacted"
    return f"mcp:{text[:64] or 'unknown'}"


def _schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "approve": {
                "type": "boolean",
                "title": "Approve",
                "description": "Approve exactly this change set?",
            },
            "namespace": {
                "type": "string",
                "title": "Namespace",
                "description": "For production or critical targets: type the namespace name(s)",
            },
        },
        "required": ["approve"],
    }


def _from_content(content: object) -> Answer:
    """An accepted form approves only with ``approve: true``; anything else (no ``approve``,
    a form that does not fit) is a decline."""
    if not isinstance(content, dict) or content.get("approve") is not True:
        return Answer("declined", message="the human did not approve")
    typed = content.get("namespace")
    return Answer("approved", typed=typed if isinstance(typed, str) else None)


def _client_words(text: str) -> str:
    """The client's own words, made safe to show the model: one line of printable text, at
    most 200 characters, and nothing that looks like a secret."""
    first = (text.strip().splitlines() or [""])[0]
    printable = "".join(c for c in first if c.isprintable())[:200]
    scrubbed = scrub_details(printable)
    return scrubbed if isinstance(scrubbed, str) else ""


def _client_failed(exc: MCPError, change_set_id: str) -> Answer:
    """The client answered the question with an error (or not in time, or the connection
    closed) instead of the human's answer: logged (its code and first line, scrubbed), and a
    refusal that says so in a sentence."""
    words = _client_words(exc.error.message)
    _log.warning(
        "confirm.elicitation_failed",
        change_set_id=change_set_id,
        error_type=type(exc).__name__,
        error_code=exc.error.code,
        error=words,
    )
    if exc.error.code == REQUEST_TIMEOUT:
        what = "the MCP client did not answer the question in time"
    elif exc.error.code == CONNECTION_CLOSED:
        what = "the connection to the MCP client closed before it answered the question"
    else:
        said = f" ({words})" if words else ""
        what = (
            f"the MCP client could not ask the human: it answered the question with an error{said}"
        )
    return Answer(
        "refused",
        message=(
            f"{what}, so nothing was approved. A person can approve it in a terminal: "
            f"`sizeguard approve {change_set_id}`"
        ),
    )


async def ask(
    ctx: Context,
    pending: PendingConfirmations,
    *,
    change_set_id: str,
    op: str,
    text: str,
) -> Answer | InputRequiredResult:
    """Ask the human (either protocol style). An ``InputRequiredResult`` is to be returned
    from the tool as is; the client calls again with the answer."""
    refusal = (
        "this MCP client cannot ask the human for confirmation (no elicitation support). "
        f"A person can approve it in a terminal: `sizeguard approve {change_set_id}`, "
        f"then call apply_changes('{change_set_id}')"
    )
    if modern_protocol(ctx):
        responses = ctx.input_responses
        if responses is not None:
            problem = pending.take(ctx.request_state, change_set_id, op)
            if problem is not None:
                return Answer("refused", message=f"confirmation refused: {problem}")
            answer = responses.get(INPUT_KEY) if hasattr(responses, "get") else None
            if not isinstance(answer, ElicitResult):
                return Answer("refused", message="confirmation refused: no answer to the question")
            if answer.action == "decline":
                return Answer("declined", message="the human declined")
            if answer.action == "cancel":
                return Answer("cancelled", message="the human cancelled")
            return _from_content(answer.content)
        if not can_elicit(ctx):
            return Answer("refused", message=refusal)
        return InputRequiredResult(
            input_requests={
                INPUT_KEY: ElicitRequest(
                    params=ElicitRequestFormParams(message=text, requested_schema=_schema())
                )
            },
            request_state=pending.issue(change_set_id, op),
        )
    if not can_elicit(ctx):
        return Answer("refused", message=refusal)
    try:
        result = await ctx.elicit(text, response_type=ApprovalForm)
    except ValidationError:  # accepted, but without "approve" (or not this form): no approval
        return Answer("declined", message="the human did not approve (the answer had no approve)")
    except MCPError as exc:  # the client's error (or time-out), not the human's answer
        return _client_failed(exc, change_set_id)
    if isinstance(result, AcceptedElicitation):
        data = result.data
        if isinstance(data, ApprovalForm) and data.approve:
            return Answer("approved", typed=data.namespace)
        return Answer("declined", message="the human did not approve")
    if result.action == "cancel":
        return Answer("cancelled", message="the human cancelled")
    return Answer("declined", message="the human declined")
