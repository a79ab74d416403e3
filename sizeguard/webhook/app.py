"""The admission webhook as a plain ASGI application.

Routes: ``POST /validate`` (AdmissionReview v1), ``GET /healthz`` (the process answers),
``GET /readyz`` (trusted keys loaded and OPA gives a decision), ``GET /metrics``.

Decision flow for ``/validate`` (docs/webhook.md):

1. A body that is not a well-formed AdmissionReview v1 is denied, with the uid if readable.
2. Operations other than UPDATE are admitted (CREATE and DELETE are RBAC's business).
3. The guarded states of the old and new object are computed with the shared contract
   (``guarded_state``; for the ``scale`` subresource: replicas only). An object sizeguard
   cannot read is denied.
4. Unchanged guarded state: admitted at once, without verifying anything or asking OPA.
5. Otherwise the approval annotation of the new object is verified (``verify_transition``),
   an approval this process admitted before, on an object changed since, is refused as a
   replay (:class:`SeenApprovals`), and OPA's admission decision is asked;
   its ``allowed`` is the answer, its warnings are passed through, and a deny names
   sizeguard, the change and what to do.

Every failure denies: a malformed review, an exception anywhere in the decision, OPA down,
slow or undefined (the policy client's fail-closed deny). The HTTP status of ``/validate`` is
always 200 with a valid AdmissionReview, so the API server reads the denial message.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import anyio
import structlog

from sizeguard.approvals import (
    APPROVAL_ANNOTATION,
    LEEWAY_SECONDS,
    ApprovalClaims,
    VerifyResult,
    approval_of,
    verify_transition,
)
from sizeguard.changes import GuardedState, describe_changes, guarded_state
from sizeguard.policy import AdmissionDecision
from sizeguard.webhook.keys import JwksFile
from sizeguard.webhook.metrics import CONTENT_TYPE_LATEST, Metrics
from sizeguard.webhook.review import (
    MAX_BODY_BYTES,
    AdmissionRequest,
    ReviewError,
    parse_review,
    review_response,
)

Scope = Mapping[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BODY_TIMEOUT: Final = 10.0
"""Seconds allowed to receive one request body (the API server sends it at once)."""

READY_CACHE_SECONDS: Final = 1.0
MAX_COUNT: Final = 2**53 - 1

SCALE_PARENTS: Final = {
    ("apps", "deployments"): "Deployment",
    ("apps", "statefulsets"): "StatefulSet",
}
"""Resources whose ``scale`` subresource sizeguard guards, and their kind."""

_log = structlog.get_logger("sizeguard.webhook")


class PolicyDecider(Protocol):
    async def admission_decision(self, policy_input: Mapping[str, Any]) -> AdmissionDecision: ...


class _DenyError(Exception):
    """Deny with this reason code and message (an object sizeguard cannot read, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _DisconnectedError(Exception):
    """The client disconnected before sending the whole body."""


@dataclass
class Outcome:
    """What one admission request got, for the response, the log and the metrics."""

    uid: str
    allowed: bool
    decision: str  # allowed | denied | error
    reason: str
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    approval: ApprovalCheck | None = None
    changes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ApprovalCheck:
    """The verifier's result, or a replay the webhook itself detected."""

    ok: bool
    code: str
    message: str
    claims: ApprovalClaims | None = None

    @classmethod
    def of(cls, result: VerifyResult) -> ApprovalCheck:
        return cls(result.ok, result.code, result.message, result.claims)

    def policy_input(self) -> dict[str, Any]:
        return {
            "present": self.code != "missing",
            "valid": self.ok,
            "error": None if self.ok else self.code,
            "claims": None if self.claims is None else self.claims.model_dump(mode="json"),
        }


class SeenApprovals:
    """Single use of approvals within this process, for objects without a generation.

    The contract binds an approval to the object's ``metadata.generation``, so it dies with
    the transition it approved. HorizontalPodAutoscalers have no generation: after A -> B
    (approval T) and an approved rollback B -> A, T would match again for the rest of its
    lifetime. This remembers, per object uid, the last guarded change this process admitted,
    and which approvals it admitted: an approval seen before is admitted again only if it is
    still the last guarded change admitted on that object (the API server re-running
    admission after a write conflict), never after another change. Per process: replicas do
    not share it (docs/webhook.md).
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._used: OrderedDict[str, tuple[str, float]] = OrderedDict()  # jti -> (uid, expiry)
        self._latest: OrderedDict[str, str] = OrderedDict()  # uid -> jti ("" without one)

    def _expire(self, now: float) -> None:
        while self._used:
            jti, (_, expires) = next(iter(self._used.items()))
            if expires > now and len(self._used) <= self.max_entries:
                break
            del self._used[jti]

    def admissible(self, jti: str, uid: str, now: float) -> bool:
        self._expire(now)
        if jti not in self._used:
            return True
        return self._latest.get(uid) == jti

    def admitted(self, uid: str, jti: str | None, expires: float) -> None:
        """Record a guarded change admitted on ``uid`` (with approval ``jti``, if any)."""
        if jti is not None:
            self._used[jti] = (uid, expires)
            self._used.move_to_end(jti)
            if len(self._used) > self.max_entries:
                self._used.popitem(last=False)
        self._latest[uid] = jti or ""
        self._latest.move_to_end(uid)
        if len(self._latest) > self.max_entries:
            self._latest.popitem(last=False)


def _uid(obj: Mapping[str, Any]) -> str | None:
    metadata = obj.get("metadata")
    value = metadata.get("uid") if isinstance(metadata, Mapping) else None
    return value if isinstance(value, str) and value else None


def _scale_state(obj: Mapping[str, Any], where: str) -> GuardedState:
    if obj.get("apiVersion") != "autoscaling/v1" or obj.get("kind") != "Scale":
        raise ValueError(f"{where} is not an autoscaling/v1 Scale")
    spec = obj.get("spec", {})
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}.spec must be an object")
    replicas = spec.get("replicas", 0)  # omitted when 0 (omitempty)
    if replicas is None:
        replicas = 0
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise ValueError(f"{where}.spec.replicas must be an integer")
    if not 0 <= replicas <= MAX_COUNT:
        raise ValueError(f"{where}.spec.replicas is out of range")
    return GuardedState(
        replicas=replicas, containers={}, init_containers={}, min_replicas=None, max_replicas=None
    )


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    metadata = obj.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    if not isinstance(labels, Mapping):
        return {}
    return {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}


def _target_kind(request: AdmissionRequest) -> str:
    """The kind policies and messages name: the workload's, also for its scale subresource."""
    if request.sub_resource == "scale":
        parent = SCALE_PARENTS.get((request.resource.group, request.resource.resource))
        if parent is None:
            raise _DenyError(
                "invalid_object",
                f"sizeguard: the scale subresource of {request.resource.group}/"
                f"{request.resource.resource} is not guarded by sizeguard; the change is denied "
                "(check the webhook configuration's rules)",
            )
        return parent
    return request.kind.kind


def _states(request: AdmissionRequest, kind: str) -> tuple[GuardedState, GuardedState]:
    old, new = request.old_object, request.object
    assert old is not None and new is not None  # parse_review checks this for UPDATE
    ref = f"{kind} {request.namespace}/{request.name}"
    try:
        if request.sub_resource == "scale":
            if request.kind.api_version != "autoscaling/v1" or request.kind.kind != "Scale":
                raise ValueError("a scale request must carry an autoscaling/v1 Scale")
            return _scale_state(old, "oldObject"), _scale_state(new, "object")
        expected = (request.kind.api_version, request.kind.kind)
        for what, obj in (("oldObject", old), ("object", new)):
            if (obj.get("apiVersion"), obj.get("kind")) != expected:
                raise ValueError(f"{what} is not a {expected[0]} {expected[1]} as the request says")
        return guarded_state(old), guarded_state(new)
    except ValueError as exc:
        raise _DenyError(
            "invalid_object",
            f"sizeguard: cannot check this update of {ref}: {str(exc)[:500]}; the change is "
            "denied (fix the object, or ask the sizeguard administrators)",
        ) from None


def _reason_code(
    request: AdmissionRequest, decision: AdmissionDecision, approval: ApprovalCheck | None
) -> tuple[str, str]:
    """(decision label, reason code) for logs and metrics."""
    if decision.engine_error is not None:
        return "error", "policy_unavailable"
    if decision.allowed:
        return "allowed", ("approved" if approval is not None and approval.ok else "policy_allowed")
    if request.sub_resource == "scale":
        return "denied", "scale_denied"
    if approval is None or approval.code == "missing":
        return "denied", "approval_missing"
    if not approval.ok:
        return "denied", "approval_invalid"
    return "denied", "policy_violation"


def _deny_message(
    decision: AdmissionDecision, approval: ApprovalCheck | None, changes: list[str]
) -> str:
    parts = ["; ".join(decision.reasons) or "sizeguard: the change is denied"]
    if changes:
        shown = "; ".join(changes[:6]) + (
            f"; and {len(changes) - 6} more" if len(changes) > 6 else ""
        )
        parts.append(f"(change: {shown})")
    if approval is not None and not approval.ok and approval.code != "missing":
        parts.append(f"(approval check: {approval.message})")
    return " ".join(parts)


class WebhookApp:
    """The ASGI application. ``policy`` may be given, or created lazily by ``policy_factory``
    inside the running event loop (the production server does that at lifespan startup)."""

    def __init__(
        self,
        *,
        jwks: JwksFile,
        policy: PolicyDecider | None = None,
        policy_factory: Callable[[], PolicyDecider] | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if policy is None and policy_factory is None:
            raise ValueError("give a policy client or a factory for one")
        self.jwks = jwks
        self._policy = policy
        self._policy_factory = policy_factory
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.seen = SeenApprovals()
        self._ready: tuple[float, bool, str] | None = None

    # --- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope.get("method", ""), scope.get("path", "")
        if path == "/validate":
            if method != "POST":
                await _plain(send, 405, b"use POST\n", [(b"allow", b"POST")])
                return
            await self._validate(scope, receive, send)
        elif path in ("/healthz", "/livez") and method in ("GET", "HEAD"):
            await _plain(send, 200, b"ok\n")
        elif path == "/readyz" and method in ("GET", "HEAD"):
            ready, detail = await self.readiness()
            await _plain(send, 200 if ready else 503, detail.encode() + b"\n")
        elif path == "/metrics" and method in ("GET", "HEAD"):
            await _respond(send, 200, self.metrics.render(), CONTENT_TYPE_LATEST.encode())
        else:
            await _plain(send, 404, b"not found\n")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.policy()
                    self.jwks.refresh(force=True)
                    keys = self.jwks.current()
                    self.metrics.jwks_keys.set(0 if keys is None else len(keys.kids))
                except Exception as exc:  # pragma: no cover - startup failure is reported
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                closer = getattr(self._policy, "aclose", None)
                if closer is not None:
                    await closer()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def policy(self) -> PolicyDecider:
        if self._policy is None:
            assert self._policy_factory is not None
            self._policy = self._policy_factory()
        return self._policy

    # --- readiness ----------------------------------------------------------------------------

    async def readiness(self) -> tuple[bool, str]:
        """Ready when trusted keys are loaded and OPA returns an admission decision."""
        now = time.monotonic()
        if self._ready is not None and now - self._ready[0] < READY_CACHE_SECONDS:
            return self._ready[1], self._ready[2]
        keys = self.jwks.current()
        if keys is None:
            result = (False, f"not ready: no trusted keys loaded from {self.jwks.path}")
        else:
            probe = {"request": {"operation": "CONNECT", "uid": "readyz"}}
            try:
                decision = await self.policy().admission_decision(probe)
                error = decision.engine_error
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            if error is not None:
                result = (False, f"not ready: OPA gives no decision: {error}")
            else:
                result = (True, f"ready: {len(keys.kids)} trusted key(s), OPA answers")
        self.metrics.jwks_keys.set(0 if keys is None else len(keys.kids))
        self._ready = (now, *result)
        return result

    # --- /validate ----------------------------------------------------------------------------

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The body, or None when it is larger than the limit."""
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > MAX_BODY_BYTES:
                        return None
                except ValueError:
                    return None
        chunks: list[bytes] = []
        size = 0
        with anyio.fail_after(BODY_TIMEOUT):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _DisconnectedError
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    return None
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)

    async def _validate(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request: AdmissionRequest | None = None
        try:
            body = await self._read_body(scope, receive)
        except TimeoutError:
            body = b""
        except _DisconnectedError:
            return  # the client went away: nobody to answer
        try:
            if body is None:
                raise ReviewError(f"the body is larger than {MAX_BODY_BYTES} bytes")
            request = parse_review(body)
            outcome = await self.decide(request)
        except ReviewError as exc:
            outcome = Outcome(
                uid=exc.uid,
                allowed=False,
                decision="error",
                reason="malformed_review",
                message=f"sizeguard: the admission webhook received a malformed AdmissionReview "
                f"({exc}); the request is denied",
            )
        except Exception as exc:
            _log.exception("admission.internal_error", error_type=type(exc).__name__)
            outcome = Outcome(
                uid=request.uid if request is not None else "",
                allowed=False,
                decision="error",
                reason="internal_error",
                message="sizeguard: internal error in the admission webhook "
                f"({type(exc).__name__}); the change is denied, check the webhook's logs",
            )
        elapsed = time.perf_counter() - started
        try:
            payload = review_response(
                outcome.uid,
                allowed=outcome.allowed,
                message=outcome.message,
                warnings=outcome.warnings,
            )
            # ASCII escapes: a lone surrogate read from the request (a uid, a name) cannot
            # break the encoding.
            body_out = json.dumps(payload, separators=(",", ":")).encode()
        except Exception as exc:  # pragma: no cover - last resort, never a 500
            _log.exception("admission.response_error", error_type=type(exc).__name__)
            outcome = Outcome("", False, "error", "internal_error")
            body_out = json.dumps(
                review_response("", allowed=False, message="sizeguard: internal error; denied")
            ).encode()
        await _respond(send, 200, body_out, b"application/json")
        try:
            self._record(request, outcome, elapsed)
        except Exception as exc:  # pragma: no cover - logging must not break serving
            _log.error("admission.record_error", error=f"{type(exc).__name__}: {exc}")

    def _record(self, request: AdmissionRequest | None, outcome: Outcome, elapsed: float) -> None:
        dry_run = request.dry_run if request is not None else False
        self.metrics.observe(outcome.decision, outcome.reason, dry_run, elapsed)
        approval = outcome.approval
        if approval is not None:
            self.metrics.approvals.labels(approval.code).inc()
        fields: dict[str, Any] = {
            "uid": outcome.uid,
            "decision": outcome.decision,
            "allowed": outcome.allowed,
            "reason": outcome.reason,
            "latency_ms": round(elapsed * 1000, 3),
        }
        if request is not None:
            fields.update(
                kind=request.kind.kind,
                namespace=request.namespace,
                name=request.name,
                user=request.username,
                operation=request.operation,
                subresource=request.sub_resource,
                dry_run=request.dry_run,
            )
        if approval is not None:
            fields["approval"] = approval.code
            if approval.claims is not None:
                fields["approval_jti"] = approval.claims.jti
                fields["approval_sub"] = approval.claims.sub
                fields["change_set"] = approval.claims.cs
        if outcome.changes:
            fields["changes"] = outcome.changes[:10]
        if outcome.warnings:
            fields["warnings"] = len(outcome.warnings)
        if not outcome.allowed:
            fields["message"] = outcome.message[:1000]
        if outcome.allowed:
            _log.info("admission.decision", **fields)
        else:
            _log.warning("admission.decision", **fields)

    async def decide(self, request: AdmissionRequest) -> Outcome:
        """The outcome for one parsed request (exceptions are the caller's: they deny)."""
        uid = request.uid
        if request.operation != "UPDATE":
            return Outcome(uid, True, "allowed", "not_update")
        try:
            kind = _target_kind(request)
            before, after = _states(request, kind)
        except _DenyError as deny:
            return Outcome(uid, False, "denied", deny.reason, message=str(deny))
        if before == after:
            return Outcome(uid, True, "allowed", "unchanged")
        changes = describe_changes(before, after)
        approval: ApprovalCheck | None = None
        assert request.old_object is not None
        object_uid = _uid(request.old_object)
        if request.sub_resource == "scale":
            # A Scale has no annotations: no approval can ride on it; the policy decides.
            approval_input: dict[str, Any] = {
                "present": False,
                "valid": False,
                "error": None,
                "claims": None,
            }
        else:
            approval = ApprovalCheck.of(self._verify(request))
            if (
                approval.ok
                and approval.claims is not None
                and object_uid is not None
                and not self.seen.admissible(approval.claims.jti, object_uid, self.clock())
            ):
                approval = ApprovalCheck(
                    False,
                    "replayed",
                    f"the approval {approval.claims.jti} was already used on this object, "
                    "which has changed since; approve the change again",
                    approval.claims,
                )
            approval_input = approval.policy_input()
        assert request.old_object is not None
        policy_input = {
            "request": {
                "uid": uid,
                "operation": request.operation,
                "user": request.username,
                "groups": list(request.groups),
                "kind": kind,
                "namespace": request.namespace,
                "name": request.name,
                "subresource": request.sub_resource,
                "dry_run": request.dry_run,
            },
            "before": before.model_dump(mode="json"),
            "after": after.model_dump(mode="json"),
            "approval": approval_input,
            # The labels of the object as stored: removing a label in the same update must
            # not change how this update is judged.
            "context": {"labels": _labels(request.old_object), "namespace_labels": {}},
        }
        decision = await self.policy().admission_decision(policy_input)
        if decision.allowed and not request.dry_run and object_uid is not None:
            claims = approval.claims if approval is not None and approval.ok else None
            self.seen.admitted(
                object_uid,
                None if claims is None else claims.jti,
                0.0 if claims is None else claims.exp + LEEWAY_SECONDS,
            )
        label, reason = _reason_code(request, decision, approval)
        message = "" if decision.allowed else _deny_message(decision, approval, changes)
        return Outcome(
            uid,
            decision.allowed,
            label,
            reason,
            message=message,
            warnings=list(decision.warnings),
            approval=approval,
            changes=changes,
        )

    def _verify(self, request: AdmissionRequest) -> VerifyResult:
        assert request.object is not None and request.old_object is not None
        token = approval_of(request.object)
        keys = self.jwks.current()
        if keys is None:
            if token is None or token == "":
                return VerifyResult(
                    ok=False,
                    code="missing",
                    message="the update changes resources guarded by sizeguard but carries no "
                    f"approval (annotation {APPROVAL_ANNOTATION}); approve the change with "
                    "sizeguard",
                )
            return VerifyResult(
                ok=False,
                code="unknown_key",
                message=f"the webhook has no trusted keys loaded ({self.jwks.path}: "
                f"{self.jwks.last_error or 'not loaded'}), so no {APPROVAL_ANNOTATION} can verify",
            )
        return verify_transition(
            token,
            kind=request.kind.kind,
            namespace=request.namespace,
            name=request.name,
            old_object=request.old_object,
            new_object=request.object,
            jwks=keys,
            now=self.clock(),
        )


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _plain(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    await _respond(send, status, body, b"text/plain; charset=utf-8", extra)
