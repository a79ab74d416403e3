"""Which admission requests sizeguard decides, and what each one changes.

A request is routed by its resource, subresource and operation (the registration in
:mod:`sizeguard.webhook.registration` sends exactly these); anything else is refused by the
webhook. For a routed request, :func:`states` gives the footprint before and after it:

================================  ======================  =====================================
resource                          operations              state (``before`` / ``after``)
================================  ======================  =====================================
apps/v1 deployments,              CREATE, UPDATE, DELETE  ``guarded_state`` of the workload
statefulsets, daemonsets
apps/v1 replicasets                CREATE, UPDATE, DELETE  ``guarded_state`` (its pod template)
apps/v1 deployments/scale,        UPDATE                  replicas only, from the Scale
statefulsets/scale,
replicasets/scale
autoscaling/v2                    CREATE, UPDATE, DELETE  ``guarded_state`` of the HPA
horizontalpodautoscalers
v1 pods/resize                    UPDATE                  ``guarded_state`` of the Pod
v1 limitranges                    CREATE, UPDATE, DELETE  ``{"limits": spec.limits}``
================================  ======================  =====================================

``None`` stands for "no object": ``before`` of a CREATE, ``after`` of a DELETE. Anything
sizeguard cannot read raises :class:`RefusedError`, which the webhook turns into a deny.

A ReplicaSet's footprint is its pod template only; what makes it part of a Deployment is its
controller ownerReference and its labels (the Deployment's selector). :func:`ownership` reads
both sides of those, so that the policy can tell a Deployment's ReplicaSet from a standalone
one and see a change that takes one away from its Deployment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sizeguard.approvals import MIN_AGE_TO_DELETE_SECONDS
from sizeguard.changes import MAX_SAFE_INTEGER, GuardedState, describe_changes, guarded_state

__all__ = [
    "ROUTES",
    "Ownership",
    "RefusedError",
    "Route",
    "State",
    "controller_owner",
    "describe",
    "ownership",
    "recently_created",
    "route_of",
    "state_json",
    "states",
]

State = GuardedState | dict[str, Any]
"""A footprint: a GuardedState, or for a LimitRange ``{"limits": [...]}``."""

CREATE_UPDATE_DELETE: Final = frozenset({"CREATE", "UPDATE", "DELETE"})
UPDATE: Final = frozenset({"UPDATE"})


class RefusedError(Exception):
    """The webhook refuses the request itself: ``reason`` is the metrics/log code, the
    message (starting with ``sizeguard:``) the one the requester reads."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Route:
    """One kind of request sizeguard decides.

    ``family``: workload | replicaset | scale | hpa | resize | limitrange. ``kind``: the kind
    the policy and messages name (the workload's for its scale subresource). ``object_kind`` /
    ``object_api_version``: what ``request.kind`` and the objects must be. ``verified``: the
    operations whose approval the webhook verifies (the others carry none)."""

    family: str
    kind: str
    object_api_version: str
    object_kind: str
    operations: frozenset[str]
    verified: frozenset[str]


def _workload(kind: str) -> Route:
    return Route("workload", kind, "apps/v1", kind, CREATE_UPDATE_DELETE, UPDATE)


def _scale(kind: str) -> Route:
    return Route("scale", kind, "autoscaling/v1", "Scale", UPDATE, frozenset())


ROUTES: Final[dict[tuple[str, str, str, str], Route]] = {
    # (group, version, resource, subresource) as the request's ``resource``/``subResource``
    ("apps", "v1", "deployments", ""): _workload("Deployment"),
    ("apps", "v1", "statefulsets", ""): _workload("StatefulSet"),
    ("apps", "v1", "daemonsets", ""): _workload("DaemonSet"),
    # sizeguard approves no ReplicaSet change (it changes their Deployments): nothing to verify.
    ("apps", "v1", "replicasets", ""): Route(
        "replicaset", "ReplicaSet", "apps/v1", "ReplicaSet", CREATE_UPDATE_DELETE, frozenset()
    ),
    ("apps", "v1", "deployments", "scale"): _scale("Deployment"),
    ("apps", "v1", "statefulsets", "scale"): _scale("StatefulSet"),
    ("apps", "v1", "replicasets", "scale"): _scale("ReplicaSet"),
    ("autoscaling", "v2", "horizontalpodautoscalers", ""): Route(
        "hpa",
        "HorizontalPodAutoscaler",
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        CREATE_UPDATE_DELETE,
        CREATE_UPDATE_DELETE,
    ),
    ("", "v1", "pods", "resize"): Route("resize", "Pod", "v1", "Pod", UPDATE, frozenset()),
    ("", "v1", "limitranges", ""): Route(
        "limitrange", "LimitRange", "v1", "LimitRange", CREATE_UPDATE_DELETE, frozenset()
    ),
}


def route_of(
    group: str, version: str, resource: str, subresource: str, operation: str, api_version: str
) -> Route:
    """The route of a request, or :class:`RefusedError` for one sizeguard does not decide.
    ``api_version``/``kind`` checks use ``request.kind`` (``api_version`` is its group/version)."""
    route = ROUTES.get((group, version, resource, subresource))
    what = "/".join(part for part in (group, version, resource) if part) + (
        f"/{subresource}" if subresource else ""
    )
    if route is None:
        raise RefusedError(
            "unknown_request",
            f"sizeguard: the admission webhook does not decide requests for {what}; the request "
            "is denied (check sizeguard's ValidatingWebhookConfiguration)",
        )
    if operation not in route.operations:
        raise RefusedError(
            "unknown_request",
            f"sizeguard: the admission webhook does not decide {operation} of {what}; the "
            "request is denied (check sizeguard's ValidatingWebhookConfiguration)",
        )
    if api_version != route.object_api_version:
        raise RefusedError(
            "invalid_object",
            f"sizeguard: a request for {what} must carry a {route.object_api_version} "
            f"{route.object_kind}, not {api_version}; the request is denied",
        )
    return route


# --- states ------------------------------------------------------------------------------------


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
    if not 0 <= replicas <= MAX_SAFE_INTEGER:
        raise ValueError(f"{where}.spec.replicas is out of range")
    return GuardedState(
        replicas=replicas, containers={}, init_containers={}, min_replicas=None, max_replicas=None
    )


def _limit_range_state(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    spec = obj.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}.spec must be an object")
    limits = spec.get("limits")
    if limits is None:
        limits = []
    if not isinstance(limits, list):
        raise ValueError(f"{where}.spec.limits must be a list")
    return {"limits": limits}


def _state(route: Route, obj: Mapping[str, Any], where: str) -> State:
    if route.family == "scale":
        return _scale_state(obj, where)
    if (obj.get("apiVersion"), obj.get("kind")) != (route.object_api_version, route.object_kind):
        raise ValueError(
            f"{where} is not a {route.object_api_version} {route.object_kind} as the request says"
        )
    if route.family == "limitrange":
        return _limit_range_state(obj, where)
    return guarded_state(obj)


def states(
    route: Route,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    *,
    operation: str,
    ref: str,
) -> tuple[State | None, State | None]:
    """(before, after) of a routed request; :class:`RefusedError` when an object is missing or
    sizeguard cannot read it."""
    needs_old = operation in ("UPDATE", "DELETE")
    needs_new = operation in ("UPDATE", "CREATE")
    try:
        if needs_old and old is None:
            raise ValueError(f"a {operation} request must carry oldObject")
        if needs_new and new is None:
            raise ValueError(f"a {operation} request must carry object")
        before = _state(route, old, "oldObject") if needs_old and old is not None else None
        after = _state(route, new, "object") if needs_new and new is not None else None
    except ValueError as exc:
        raise RefusedError(
            "invalid_object",
            f"sizeguard: cannot check this {operation.lower()} of {ref}: {str(exc)[:500]}; the "
            "request is denied (fix the object, or ask the sizeguard administrators)",
        ) from None
    return before, after


# --- ownership (ReplicaSets) -------------------------------------------------------------------

_OWNER_KEYS: Final = ("apiVersion", "kind", "name", "uid")


def controller_owner(obj: Mapping[str, Any] | None, where: str) -> dict[str, str] | None:
    """``{"apiVersion", "kind", "name", "uid"}`` of the ownerReference with ``controller:
    true``, or None (no object, or no controller). ``ValueError`` for ownerReferences sizeguard
    cannot read, or more than one controller (the API server allows neither)."""
    if obj is None:
        return None
    metadata = obj.get("metadata")
    references = metadata.get("ownerReferences") if isinstance(metadata, Mapping) else None
    if references is None:
        return None
    if not isinstance(references, list):
        raise ValueError(f"{where}.metadata.ownerReferences must be a list")
    found: list[dict[str, str]] = []
    for index, reference in enumerate(references):
        if not isinstance(reference, Mapping):
            raise ValueError(f"{where}.metadata.ownerReferences[{index}] must be an object")
        if reference.get("controller") is not True:
            continue
        owner = {key: reference.get(key) for key in _OWNER_KEYS}
        if not all(isinstance(value, str) and 0 < len(value) <= 253 for value in owner.values()):
            raise ValueError(
                f"{where}.metadata.ownerReferences[{index}]: a controller reference needs "
                "apiVersion, kind, name and uid"
            )
        found.append({key: str(value) for key, value in owner.items()})
    if len(found) > 1:
        raise ValueError(f"{where}.metadata.ownerReferences: more than one controller")
    return found[0] if found else None


def _labels(obj: Mapping[str, Any] | None) -> Any:
    metadata = obj.get("metadata") if obj is not None else None
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    return labels or {}


@dataclass(frozen=True)
class Ownership:
    """What ties an object to its owner, before and after a request: the controller owner of
    the old and of the new object (None: none, or no such object) and whether the labels
    change (an UPDATE only)."""

    owner_before: dict[str, str] | None
    owner_after: dict[str, str] | None
    labels_changed: bool

    @property
    def changed(self) -> bool:
        return self.labels_changed or self.owner_before != self.owner_after

    def describe(self) -> list[str]:
        """One line per change, in the style of :func:`describe`."""
        lines = []
        if self.owner_before != self.owner_after:
            old, new = _owner(self.owner_before), _owner(self.owner_after)
            lines.append(f"controller owner: {old} → {new}")
        if self.labels_changed:
            lines.append("labels changed")
        return lines


def _owner(owner: Mapping[str, str] | None) -> str:
    return "none" if owner is None else f"{owner['kind']} {owner['name']}"


def ownership(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, *, operation: str, ref: str
) -> Ownership:
    """The :class:`Ownership` of a routed request's objects; :class:`RefusedError` when their
    ownerReferences cannot be read."""
    try:
        before = controller_owner(old, "oldObject") if operation != "CREATE" else None
        after = controller_owner(new, "object") if operation != "DELETE" else None
    except ValueError as exc:
        raise RefusedError(
            "invalid_object",
            f"sizeguard: cannot check this {operation.lower()} of {ref}: {str(exc)[:500]}; the "
            "request is denied (fix the object, or ask the sizeguard administrators)",
        ) from None
    changed = operation == "UPDATE" and _labels(old) != _labels(new)
    return Ownership(before, after, changed)


def state_json(state: State | None) -> Any:
    """A state as the policy input carries it (null for no object)."""
    if isinstance(state, GuardedState):
        return state.model_dump(mode="json")
    return state


def describe(before: State | None, after: State | None) -> list[str]:
    """What changes, one line per guarded field, for messages and the log."""
    if isinstance(before, dict) or isinstance(after, dict):
        if before is None:
            return ["LimitRange created"]
        if after is None:
            return ["LimitRange deleted"]
        return ["LimitRange limits changed"]
    assert not isinstance(before, dict) and not isinstance(after, dict)
    return describe_changes(before, after)


def recently_created(obj: Mapping[str, Any] | None, now: float) -> bool:
    """True when ``obj`` is younger than :data:`MIN_AGE_TO_DELETE_SECONDS`, or its
    ``metadata.creationTimestamp`` cannot be read (fail closed)."""
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    stamp = metadata.get("creationTimestamp") if isinstance(metadata, Mapping) else None
    if not isinstance(stamp, str):
        return True
    try:
        created = datetime.fromisoformat(stamp)
    except ValueError:
        return True
    if created.tzinfo is None:
        return True
    return now - created.timestamp() < MIN_AGE_TO_DELETE_SECONDS
