"""The admission webhook as a plain ASGI application.

Routes: ``POST /validate`` (AdmissionReview v1), ``GET /healthz`` (the process answers),
``GET /readyz`` (trusted keys loaded, OPA gives a decision, the Namespace cache is synced),
``GET /metrics``.

Decision flow for ``/validate`` (docs/webhook.md):

1. A body that is not a well-formed AdmissionReview v1 is denied, with the uid if readable.
2. The request is routed by resource, subresource and operation (:mod:`.routes`): workloads,
   ReplicaSets and HPAs (CREATE, UPDATE, DELETE), the ``scale`` subresource and
   ``pods/resize`` (UPDATE), LimitRanges (CREATE, UPDATE, DELETE). Anything else is denied.
3. The footprint before and after is computed with the shared contract (``guarded_state``;
   a ReplicaSet's pod template; replicas only for ``scale``; ``{"limits": ...}`` for a
   LimitRange; None for "no object"), and so is the ownership: the controller owner of the
   old and the new object and whether the labels change. An object sizeguard cannot read is
   denied.
4. An UPDATE that leaves the footprint unchanged (for a ReplicaSet: also its labels and its
   controller owner, which tie it to its Deployment) is admitted at once, without verifying
   anything, looking up the namespace or asking OPA.
5. The namespace's labels are looked up in the Namespace watch (a direct GET for one it has
   not seen); a namespace whose labels cannot be learned is denied.
6. For workload UPDATEs and HPA CREATE/UPDATE/DELETE the approval annotation is verified
   (``verify_transition``): on the new object, or on the old one for a DELETE. It admits one
   write: it is bound to the old object's resourceVersion, so nothing is remembered here.
7. OPA's admission decision is asked with the request, both states, the approval check and
   the context (the stored object's labels, the namespace's labels, the ownership of step 3,
   and for a DELETE whether the object is younger than ``MIN_AGE_TO_DELETE_SECONDS``); its
   ``allowed`` is the answer, its warnings are passed through, and a deny names sizeguard,
   the change and what to do.
8. A dry run's answer also names the approval keys this webhook trusts, as its first warning
   (:mod:`sizeguard.key_trust`): the MCP server dry-runs every change set before a human is
   asked, and so learns whether the webhook trusts its signing key before anyone approves.

Before step 1, overload control (:mod:`.overload`): at most ``max_in_flight`` decisions are
worked on at once; a request arriving while that many are in flight is denied at once as
``overloaded`` (its body read only as far as its uid). A decision whose deadline (its arrival
plus the API server's ``?timeout=``) has passed before step 7 is denied as
``deadline_exceeded``; OPA is given only what is left of it.

Every failure denies: a malformed review, an exception anywhere in the decision, OPA down,
slow or undefined (the policy client's fail-closed deny). The HTTP status of ``/validate`` is
always 200 with a valid AdmissionReview, so the API server reads the denial message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import anyio
import structlog

from sizeguard.approvals import APPROVAL_ANNOTATION, VerifyResult, approval_of, verify_transition
from sizeguard.changes import GuardedState
from sizeguard.key_trust import trusted_keys_warning
from sizeguard.policy import AdmissionDecision
from sizeguard.webhook.keys import JwksFile
from sizeguard.webhook.metrics import CONTENT_TYPE_LATEST, Metrics
from sizeguard.webhook.namespaces import NamespaceSource
from sizeguard.webhook.overload import (
    DEADLINE_MARGIN_SECONDS,
    DEFAULT_MAX_IN_FLIGHT,
    UID_SCAN_BYTES,
    Gate,
    deadline_message,
    overloaded_message,
    request_timeout,
    uid_of_prefix,
)
from sizeguard.webhook.review import (
    MAX_BODY_BYTES,
    AdmissionRequest,
    ReviewError,
    parse_review,
    review_response,
)
from sizeguard.webhook.routes import (
    Ownership,
    RefusedError,
    Route,
    State,
    describe,
    ownership,
    recently_created,
    route_of,
    state_json,
    states,
)

Scope = Mapping[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BODY_TIMEOUT: Final = 10.0
"""Seconds allowed to receive one request body (the API server sends it at once)."""

READY_CACHE_SECONDS: Final = 1.0
NO_APPROVAL: Final[Mapping[str, Any]] = {
    "present": False,
    "valid": False,
    "error": None,
    "claims": None,
}
"""The ``approval`` input of a request whose approval the webhook does not verify."""

_log = structlog.get_logger("sizeguard.webhook")


class PolicyDecider(Protocol):
    async def admission_decision(
        self, policy_input: Mapping[str, Any], *, timeout: float | None = None
    ) -> AdmissionDecision:
        """The decision; ``timeout`` (seconds) shortens the client's own when given."""
        ...


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
    approval: VerifyResult | None = None
    changes: list[str] = field(default_factory=list)
    namespace_source: str | None = None


def _labels(obj: Mapping[str, Any] | None) -> dict[str, str]:
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    if not isinstance(labels, Mapping):
        return {}
    return {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}


def _name(request: AdmissionRequest) -> str:
    """The object's name: the request's, or (a CREATE with generateName) the new object's."""
    if request.name:
        return request.name
    metadata = request.object.get("metadata") if request.object is not None else None
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return name if isinstance(name, str) else ""


def _unchanged(before: State | None, after: State | None, owners: Ownership | None) -> bool:
    """An UPDATE that changes nothing sizeguard decides. For a ReplicaSet (``owners`` given)
    its labels and controller owner must stay too."""
    return before == after and (owners is None or not owners.changed)


def _reason_code(
    route: Route, operation: str, decision: AdmissionDecision, approval: VerifyResult | None
) -> tuple[str, str]:
    """(decision label, reason code) for logs and metrics."""
    if decision.engine_error is not None:
        return "error", "policy_unavailable"
    if decision.allowed:
        return "allowed", ("approved" if approval is not None and approval.ok else "policy_allowed")
    if route.family in ("scale", "resize"):
        return "denied", f"{route.family}_denied"
    if route.family == "limitrange":
        return "denied", "limitrange_denied"
    if route.family == "replicaset":
        return "denied", "replicaset_denied"
    if approval is None:
        return "denied", "lifecycle_denied"  # a workload created or deleted
    if approval.code == "missing":
        return "denied", "approval_missing"
    if not approval.ok:
        return "denied", "approval_invalid"
    return "denied", "policy_violation"


def _deny_message(
    decision: AdmissionDecision, approval: VerifyResult | None, changes: list[str]
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
    inside the running event loop (the production server does that at lifespan startup).
    ``namespaces`` gives namespace labels (a :class:`~.namespaces.NamespaceWatch`, started at
    lifespan startup and stopped at shutdown)."""

    def __init__(
        self,
        *,
        jwks: JwksFile,
        namespaces: NamespaceSource,
        policy: PolicyDecider | None = None,
        policy_factory: Callable[[], PolicyDecider] | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        if policy is None and policy_factory is None:
            raise ValueError("give a policy client or a factory for one")
        self.gate = Gate(max_in_flight)
        self.jwks = jwks
        self.namespaces = namespaces
        self._policy = policy
        self._policy_factory = policy_factory
        self.metrics = metrics or Metrics()
        self.metrics.in_flight.set_function(lambda: self.gate.in_flight)
        self.metrics.max_in_flight.set(max_in_flight)
        self.clock = clock
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
                    self.namespaces.start()
                except Exception as exc:  # pragma: no cover - startup failure is reported
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.namespaces.stop()
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
        """Ready when trusted keys are loaded, the Namespace cache is synced and OPA returns an
        admission decision."""
        now = time.monotonic()
        if self._ready is not None and now - self._ready[0] < READY_CACHE_SECONDS:
            return self._ready[1], self._ready[2]
        keys = self.jwks.current()
        if keys is None:
            result = (False, f"not ready: no trusted keys loaded from {self.jwks.path}")
        elif not self.namespaces.synced():
            result = (False, f"not ready: {self.namespaces.describe()}")
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
                result = (
                    True,
                    f"ready: {len(keys.kids)} trusted key(s), {self.namespaces.describe()}, "
                    "OPA answers",
                )
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
        timeout = request_timeout(scope)
        request: AdmissionRequest | None = None
        try:
            body = await self._read_body(scope, receive)
        except TimeoutError:
            body = b""
        except _DisconnectedError:
            return  # the client went away: nobody to answer
        if not self.gate.try_enter():
            await self._shed(send, body, started)
            return
        try:
            try:
                if body is None:
                    raise ReviewError(f"the body is larger than {MAX_BODY_BYTES} bytes")
                request = parse_review(body)
                del body  # the parsed request is all that is kept
                outcome = await self.decide(request, deadline=started + timeout, timeout=timeout)
                if request.dry_run:
                    keys = self.jwks.current()
                    kids = () if keys is None else keys.kids
                    outcome.warnings.insert(0, trusted_keys_warning(kids))
            except ReviewError as exc:
                outcome = Outcome(
                    uid=exc.uid,
                    allowed=False,
                    decision="error",
                    reason="malformed_review",
                    message="sizeguard: the admission webhook received a malformed "
                    f"AdmissionReview ({exc}); the request is denied",
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
            outcome = await self._answer(send, outcome)
        finally:
            self.gate.leave()
        try:
            self._record(request, outcome, elapsed)
        except Exception as exc:  # pragma: no cover - logging must not break serving
            _log.error("admission.record_error", error=f"{type(exc).__name__}: {exc}")

    async def _shed(self, send: Send, body: bytes | None, started: float) -> None:
        """Deny a request at once, unread, because the gate is full: only the start of its
        body is looked at, for the uid."""
        outcome = Outcome(
            uid=uid_of_prefix((body or b"")[:UID_SCAN_BYTES]),
            allowed=False,
            decision="error",
            reason="overloaded",
            message=overloaded_message(self.gate),
        )
        await self._answer(send, outcome)
        # Counted, not logged one by one (the gate logs sheds once a second).
        self.metrics.observe(outcome.decision, outcome.reason, False, time.perf_counter() - started)

    async def _answer(self, send: Send, outcome: Outcome) -> Outcome:
        """Send the AdmissionReview of ``outcome`` (the outcome actually answered)."""
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
        return outcome

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
                name=_name(request),
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
                if approval.claims.approvers is not None:
                    fields["approval_approvers"] = list(approval.claims.approvers)
                fields["change_set"] = approval.claims.cs
        if outcome.namespace_source is not None:
            fields["namespace_labels_from"] = outcome.namespace_source
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

    async def decide(
        self,
        request: AdmissionRequest,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> Outcome:
        """The outcome for one parsed request (exceptions are the caller's: they deny).
        ``deadline`` (``time.perf_counter()`` seconds) is when the API server stops waiting,
        ``timeout`` how long it waits in all."""
        uid, operation = request.uid, request.operation
        name = _name(request)
        try:
            route = route_of(
                request.resource.group,
                request.resource.version,
                request.resource.resource,
                request.sub_resource,
                operation,
                request.kind.api_version,
            )
            if request.kind.kind != route.object_kind:
                raise RefusedError(
                    "invalid_object",
                    f"sizeguard: a request for {request.resource.resource} must carry a "
                    f"{route.object_kind}, not a {request.kind.kind[:60]}; the request is denied",
                )
            if not request.namespace:
                raise RefusedError(
                    "invalid_object",
                    "sizeguard: the request names no namespace; the request is denied",
                )
            ref = f"{route.kind} {request.namespace}/{name}"
            old, new = request.old_object, request.object
            before, after = states(route, old, new, operation=operation, ref=ref)
            owners = ownership(old, new, operation=operation, ref=ref)
        except RefusedError as refusal:
            return Outcome(uid, False, "denied", refusal.reason, message=str(refusal))
        tied = route.family == "replicaset"  # its labels and owner tie it to its Deployment
        if operation == "UPDATE" and _unchanged(before, after, owners if tied else None):
            return Outcome(uid, True, "allowed", "unchanged")
        # (a create or delete takes its owner with it: only an update changes it)
        changes = describe(before, after) + (
            owners.describe() if tied and operation == "UPDATE" else []
        )
        lookup = await self.namespaces.lookup(request.namespace)
        if lookup.labels is None:
            why = (
                "does not exist"
                if lookup.source == "not_found"
                else f"could not be read ({lookup.detail})"
            )
            return Outcome(
                uid,
                False,
                "denied",
                "namespace_unknown",
                message=f"sizeguard: cannot learn the labels of namespace {request.namespace}: "
                f"it {why}; the request is denied (retry; if it persists, check the sizeguard "
                "webhook's access to namespaces)",
                changes=changes,
                namespace_source=lookup.source,
            )
        approval: VerifyResult | None = None
        if operation in route.verified:
            approval = self._verify(route, name, request, before, after)
        stored = new if operation == "CREATE" else old
        policy_input = {
            "request": {
                "uid": uid,
                "operation": operation,
                "user": request.username,
                "groups": list(request.groups),
                "kind": route.kind,
                "namespace": request.namespace,
                "name": name,
                "subresource": request.sub_resource,
                "dry_run": request.dry_run,
                # a DELETE that leaves the object's dependents behind (their pods keep running)
                "orphan": request.orphan,
            },
            "before": state_json(before),
            "after": state_json(after),
            "approval": dict(NO_APPROVAL) if approval is None else approval.policy_input(),
            # The labels of the object as stored: removing a label in the same update must
            # not change how this update is judged.
            "context": {
                "labels": _labels(stored),
                "namespace_labels": lookup.labels,
                "recently_created": operation == "DELETE" and recently_created(old, self.clock()),
                "owner_before": owners.owner_before,
                "owner_after": owners.owner_after,
                "labels_changed": owners.labels_changed,
            },
        }
        left = None if deadline is None else deadline - time.perf_counter()
        if left is not None and left < DEADLINE_MARGIN_SECONDS:
            return Outcome(
                uid,
                False,
                "error",
                "deadline_exceeded",
                message=deadline_message(timeout or 0.0),
                approval=approval,
                changes=changes,
                namespace_source=lookup.source,
            )
        decision = await self.policy().admission_decision(policy_input, timeout=left)
        label, reason = _reason_code(route, operation, decision, approval)
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
            namespace_source=lookup.source,
        )

    def _verify(
        self,
        route: Route,
        name: str,
        request: AdmissionRequest,
        before: State | None,
        after: State | None,
    ) -> VerifyResult:
        """The approval check: the token on the new object (on the old one for a DELETE).
        ``before``/``after`` are the footprints already computed from the same objects."""
        old = request.old_object if request.operation != "CREATE" else None
        new = request.object if request.operation != "DELETE" else None
        carrier = new if new is not None else old
        assert carrier is not None  # states() checked the objects the operation needs
        token = approval_of(carrier)
        keys = self.jwks.current()
        if keys is None:
            if token is None or token == "":
                return VerifyResult(
                    ok=False,
                    code="missing",
                    message="the request changes what sizeguard guards but carries no approval "
                    f"(annotation {APPROVAL_ANNOTATION}); approve the change with sizeguard",
                )
            return VerifyResult(
                ok=False,
                code="unknown_key",
                message=f"the webhook has no trusted keys loaded ({self.jwks.path}: "
                f"{self.jwks.last_error or 'not loaded'}), so no {APPROVAL_ANNOTATION} can verify",
            )
        return verify_transition(
            token,
            kind=route.object_kind,
            namespace=request.namespace,
            name=name,
            old_object=old,
            new_object=new,
            jwks=keys,
            now=self.clock(),
            states=(_guarded(before), _guarded(after)),
        )


def _guarded(state: State | None) -> GuardedState | None:
    """A verified route's footprint (a GuardedState: only LimitRanges have other states)."""
    if state is not None and not isinstance(state, GuardedState):
        raise TypeError("an approval is verified only for a GuardedState footprint")
    return state


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
