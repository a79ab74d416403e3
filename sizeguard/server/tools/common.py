"""What every tool shares: its server's runtime, the one way a tool call runs, and the one
sequence of progress notifications of a call."""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
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

__all__ = [
    "Progress",
    "Runtime",
    "audit_refusal",
    "bind",
    "check_namespaces",
    "progress",
    "run",
    "runtime",
    "thread",
]

T = TypeVar("T")

_log = structlog.get_logger("sizeguard.server")

READ_ONLY_REFUSAL = (
    "sizeguard: this sizeguard server is read-only (started with --read-only, or without a "
    "signing key): it changes nothing and records no approvals"
)


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


async def check_namespaces(
    service: Service, namespaces: Sequence[str]
) -> dict[str, dict[str, str] | None]:
    """The labels of ``namespaces`` (None: the credentials may not read one; it is scanned
    as asked). Namespaces the API server does not know are refused, naming them (an empty
    result would read as "nothing to do")."""
    return await thread(service.cluster.namespace_labels, namespaces)


class Progress:
    """The progress notifications of one tool call: out of one total fixed for the call, each
    greater than the last (the MCP spec requires it; a repeat or a step back is not sent), the
    last one total/total when the call ends (:func:`run` sends it).

    A step that has steps of its own reports into a part of the range: ``with
    progress.part(0.0, 0.7): ...`` maps its fractions 0..1 into 0..70% of the current range.
    """

    TOTAL = 100.0

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._sent = -1.0
        self._range = (0.0, 1.0)

    async def at(self, fraction: float, message: str) -> None:
        """Report ``fraction`` (0..1) of the current range, if it is further than the last."""
        low, high = self._range
        value = round((low + (high - low) * min(max(fraction, 0.0), 1.0)) * self.TOTAL, 1)
        if value <= self._sent:
            return
        self._sent = value
        await self._ctx.report_progress(value, self.TOTAL, message)

    async def done(self, message: str = "done") -> None:
        self._range = (0.0, 1.0)
        await self.at(1.0, message)

    @contextmanager
    def part(self, start: float, end: float) -> Iterator[Progress]:
        low, high = saved = self._range
        self._range = (low + (high - low) * start, low + (high - low) * end)
        try:
            yield self
        finally:
            self._range = saved


_PROGRESS: ContextVar[Progress | None] = ContextVar("sizeguard_progress", default=None)


def progress(ctx: Context) -> Progress:
    """The progress of the tool call being run (a fresh one outside :func:`run`)."""
    return _PROGRESS.get() or Progress(ctx)


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


async def audit_refusal(
    service: Service, ctx: Context | None, tool: str, arguments: dict[str, Any], reason: str
) -> None:
    """A call refused before it reached a tool (a mutating tool on a read-only server) goes
    to the audit log and the log like every other refused call."""
    who = (requester(ctx), client_name(ctx)) if ctx is not None else ("unauthenticated", "")
    await thread(_audit_call, service, who, tool, arguments, "error")
    _log.info("tool.call", tool=tool, requester=who[0], result="error", error=reason[:300])


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
    calls = Progress(ctx)
    token = _PROGRESS.set(calls)
    try:
        if mutating and service.writes_hidden:
            raise ToolError(READ_ONLY_REFUSAL)
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
            "tool.call",
            tool=tool,
            requester=who[0],
            result="error",
            error_type=type(exc).__name__,
            error=scrub_details(str(exc).splitlines()[0][:300] if str(exc) else ""),
        )
        raise ToolError(
            f"sizeguard: internal error in {tool} ({type(exc).__name__}): a fault in sizeguard, "
            "not in the request; the server's log has the details"
        ) from None
    finally:
        _PROGRESS.reset(token)
    status = getattr(result, "status", None)
    outcome = str(status) if status is not None else "ok"
    if isinstance(result, InputRequiredResult):
        outcome = "input_required"
    await thread(_audit_call, service, who, tool, arguments, outcome)
    _log.info("tool.call", tool=tool, requester=who[0], result=outcome)
    await calls.done(outcome)
    return result
