"""The FastMCP app: the tools the assistant calls, registered in one place.

Read-only tools never write to the cluster. Mutating tools need a human's approval recorded
in the ledger, which only the confirmation paths create (MCP elicitation answered by the
human, or ``sizeguard approve`` in a terminal). With ``read_only`` the mutating tools are not
registered, and the service refuses them at call time as well. The tools themselves live in
:mod:`sizeguard.server.tools`, grouped by purpose; who may call them over HTTP, and who the
requester of a call is, in :mod:`sizeguard.server.auth`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastmcp import FastMCP
from fastmcp.exceptions import NotFoundError, ToolError
from fastmcp.exceptions import ValidationError as ArgumentsError
from fastmcp.server.auth import AuthProvider
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from mcp_types import CallToolRequestParams, ToolAnnotations
from pydantic import ValidationError

from sizeguard import __version__
from sizeguard.server.confirm import PendingConfirmations
from sizeguard.server.executor import BeforePatch
from sizeguard.server.models import describe_validation_error
from sizeguard.server.service import Service
from sizeguard.server.tools import confirming, executing, proposing, reading
from sizeguard.server.tools.common import (
    READ_ONLY_REFUSAL,
    Runtime,
    audit_refusal,
    bind,
)

__all__ = ["INSTRUCTIONS", "MUTATING_TOOLS", "READ_ONLY_INSTRUCTIONS", "build_app"]

MUTATING_TOOLS = ("request_confirmation", "apply_changes", "scale_workload", "rollback_changes")

INSTRUCTIONS = (
    "sizeguard right-sizes and scales Kubernetes workloads safely. Read with "
    "get_cluster_state, get_metrics, scan_recommendations and recommend_scaling; propose "
    "with preview_changes (nothing changes): resources (per container, pod-level, other "
    "resources), sidecars, runtimeClassName, replicas, rollout settings, HPA bounds, and "
    "creating or removing an HPA; a human approves with request_confirmation (or "
    "`sizeguard approve <id>` in a terminal); then apply_changes. You cannot approve a "
    "change yourself. Undo with rollback_changes."
)
READ_ONLY_INSTRUCTIONS = (
    "sizeguard right-sizes and scales Kubernetes workloads safely. This server is read-only: "
    "it changes nothing and records no approvals. Read with get_cluster_state, get_metrics, "
    "scan_recommendations and recommend_scaling; propose with preview_changes (policy "
    "decision, dry run, diff and cost of a change set, for a person to review)."
)

_READ = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
_ASKS = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
_WRITES = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False
)

READ_TOOLS: tuple[Callable[..., Any], ...] = (
    reading.get_cluster_state,
    reading.get_metrics,
    reading.scan_recommendations,
    reading.recommend_scaling,
    proposing.preview_changes,
    reading.get_safety_report,
    reading.get_execution_history,
    reading.generate_report,
)
WRITE_TOOLS: tuple[tuple[Callable[..., Any], ToolAnnotations], ...] = (
    (confirming.request_confirmation, _ASKS),
    (executing.apply_changes, _WRITES),
    (executing.scale_workload, _WRITES),
    (executing.rollback_changes, _WRITES),
)


class ClearArgumentErrors(Middleware):
    """Arguments come from the model: a call whose arguments do not validate is refused with
    one readable line per problem (``edits.0.max_surge: ...``), never pydantic's repr of the
    input. On a read-only server a call of a mutating tool (not listed) is refused saying
    why."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def on_call_tool(
        self, context: MiddlewareContext[CallToolRequestParams], call_next: CallNext[Any, Any]
    ) -> Any:
        try:
            return await call_next(context)
        except NotFoundError:
            tool = getattr(context.message, "name", "")
            if self.service.writes_hidden and tool in MUTATING_TOOLS:
                refusal = f"{READ_ONLY_REFUSAL}; it does not offer {tool}"
                arguments = getattr(context.message, "arguments", None)
                await audit_refusal(
                    self.service,
                    context.fastmcp_context,
                    tool,
                    dict(arguments) if isinstance(arguments, dict) else {},
                    refusal,
                )
                raise ToolError(refusal) from None
            raise
        except ArgumentsError as exc:
            cause = exc.__cause__
            if not isinstance(cause, ValidationError):
                raise
            tool = getattr(context.message, "name", "the tool")
            raise ToolError(
                f"sizeguard: invalid arguments for {tool}: {describe_validation_error(cause)}"
            ) from None


def build_app(
    service: Service,
    *,
    name: str = "sizeguard",
    auth: AuthProvider | None = None,
    before_patch: BeforePatch | None = None,
) -> FastMCP:
    """The MCP server over ``service``. ``auth`` verifies the bearer token of every HTTP
    request (:mod:`sizeguard.server.auth`; None over stdio and in process). ``before_patch``
    is a test seam (partial failures)."""
    hidden = service.writes_hidden
    mcp = FastMCP(
        name,
        instructions=READ_ONLY_INSTRUCTIONS if hidden else INSTRUCTIONS,
        version=__version__,
        mask_error_details=True,
        auth=auth,
    )
    mcp.add_middleware(ClearArgumentErrors(service))
    bind(mcp, Runtime(service, PendingConfirmations(), before_patch))
    for tool in READ_TOOLS:
        mcp.tool(annotations=_READ)(tool)
    if hidden:
        return mcp
    for tool, hints in WRITE_TOOLS:
        mcp.tool(annotations=hints)(tool)
    assert tuple(t.__name__ for t, _ in WRITE_TOOLS) == MUTATING_TOOLS
    return mcp
