"""What every tool shares: its server's runtime, and the one way a tool call runs."""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import structlog
from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from mcp_types import InputRequiredResult
from pydantic import ValidationError

from sizeguard.cluster import ClusterError
from sizeguard.ledger import LedgerError, scrub_details
from sizeguard.prometheus import PrometheusError
from sizeguard.server.auth import requester
from sizeguard.server.confirm import PendingConfirmations, client_name
from sizeguard.server.executor import BeforePatch
from sizeguard.server.models import describe_validation_error
from sizeguard.server.service import Service, ServiceError

__all__ = ["Runtime", "bind", "run", "runtime", "thread"]

T = TypeVar("T")

_log = structlog.get_logger("sizeguard.server")


@dataclass(frozen=True)
class Runtime:
    """What the tools of one MCP server work with. ``before_patch`` is a test seam (partial
    failures)."""

    service: Service
    pending: PendingConfirmations
    before_patch: BeforePatch | None = None


_RUNTIMES: weakref.WeakKeyDictionary[FastMCP, Runtime] = weakref.WeakKeyDictionary()


def bind(mcp: FastMCP, runtime_: Runtime) -> None:
    """Make ``runtime_`` the one the tools of ``mcp`` use."""
    _RUNTIMES[mcp] = runtime_


def runtime(ctx: Context) -> Runtime:
    """The runtime of the server this tool call came to."""
    return _RUNTIMES[ctx.fastmcp]


def thread(function: Callable[..., T], *args: Any) -> Awaitable[T]:
    """Run a synchronous (blocking) function in a worker thread."""
    return anyio.to_thread.run_sync(function, *args)


def _audit_call(
    service: Service, who: tuple[str, str], tool: str, arguments: dict[str, Any], result: str
) -> None:
    actor, client = who
    try:
        cs = arguments.get("change_set_id")
        service.ledger.append_audit(
            actor=actor,
            event=f"tool.{tool}",
            result=result[:64],
            change_set_id=cs if isinstance(cs, str) and len(cs) <= 64 else None,
            details={"arguments": scrub_details(arguments), "client": client},
        )
    except Exception as exc:  # never let the audit of a call hide its result (or its error)
        _log.error("audit.failed", tool=tool, error=str(exc)[:200])


async def run(
    ctx: Context,
    tool: str,
    arguments: dict[str, Any],
    work: Callable[[], Awaitable[T]],
    *,
    mutating: bool = False,
) -> T:
    """Run one tool call: refusals and errors become clear tool errors, and every call,
    whatever its outcome, is in the audit log — by the authenticated requester, with the
    client's self-reported name as a detail."""
    service = runtime(ctx).service
    who = (requester(ctx), client_name(ctx))
    try:
        if mutating and (service.read_only or service.key is None):
            raise ToolError("sizeguard: this server is read-only; mutating tools are refused")
        result = await work()
    except ToolError as exc:
        await thread(_audit_call, service, who, tool, arguments, "error")
        _log.info("tool.call", tool=tool, requester=who[0], result="error", error=str(exc)[:300])
        raise
    except (ServiceError, ClusterError, LedgerError, PrometheusError, ValueError) as exc:
        await thread(_audit_call, service, who, tool, arguments, "error")
        text = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
        _log.info("tool.call", tool=tool, requester=who[0], result="error", error=text[:300])
        raise ToolError(f"sizeguard: {text}") from None
    except Exception as exc:
        await thread(_audit_call, service, who, tool, arguments, "error")
        _log.error(
            "tool.call", tool=tool, requester=who[0], result="error", error_type=type(exc).__name__
        )
        raise ToolError(
            f"sizeguard: internal error ({type(exc).__name__}); see the server's log"
        ) from None
    status = getattr(result, "status", None)
    outcome = str(status) if status is not None else "ok"
    if isinstance(result, InputRequiredResult):
        outcome = "input_required"
    await thread(_audit_call, service, who, tool, arguments, outcome)
    _log.info("tool.call", tool=tool, requester=who[0], result=outcome)
    return result
