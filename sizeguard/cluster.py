"""The MCP server's access to the cluster, through the official ``kubernetes`` client.

- :meth:`Cluster.read_live` / :meth:`Cluster.read_object`: one ``apps/v1`` Deployment,
  StatefulSet or DaemonSet, or ``autoscaling/v2`` HorizontalPodAutoscaler, as the plain dict
  the API server returned (what :func:`sizeguard.changes.guarded_state` takes).
- :meth:`Cluster.cluster_state`: workloads (replicas, readiness, requests/limits per
  container), HPAs, namespace labels and the cluster's capacity; ``policy_context()`` gives
  the ``context`` members the change-set policy reads (``capacity``, ``namespaces``,
  ``labels``).
- :func:`patch_for`: the strategic-merge patch that sets exactly a change's ``after`` guarded
  values (the whole footprint) and its approval annotation, nothing else;
  :meth:`Cluster.apply_patch` sends it (``fieldManager=sizeguard``, optionally as a
  server-side dry run) and returns the admission warnings.
- HPAs are also created and deleted: :func:`create_body` + :meth:`Cluster.create_hpa` (a POST
  carrying the create approval), :meth:`Cluster.delete_hpa` (a conditional annotation patch
  carrying the delete approval, then a DELETE with uid and resourceVersion preconditions, so
  that the object deleted is the one approved, in the state approved).
- Every failure of the API (403, 404, 409, 422, 401, 5xx, timeouts, connection refused)
  becomes a :class:`ClusterError` whose ``kind`` says what happened and whose message names
  the object and what to do. Nothing secret reaches a message or a log: request bodies (which
  carry the approval token) are never logged, and anything that looks like a token in a
  server message is redacted.

The client is synchronous (urllib3, thread-safe connection pool); call it from async code
through a worker thread (``anyio.to_thread.run_sync``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, cast

import structlog
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException
from pydantic import BaseModel, ConfigDict, Field

from sizeguard.approvals import APPROVAL_ANNOTATION
from sizeguard.changes import (
    ContainerResources,
    GuardedState,
    ResourceChange,
    Resources,
    Target,
    guarded_state,
    hpa_object,
    target_of,
)
from sizeguard.quantities import cpu_millicores, format_cpu, format_memory, memory_bytes
from sizeguard.texts import bad_namespace_names, bad_object_name, no_namespaces, one_line
from sizeguard.workloads import hpa_info

__all__ = [
    "FIELD_MANAGER",
    "Capacity",
    "Cluster",
    "ClusterError",
    "ClusterState",
    "ErrorKind",
    "HpaState",
    "NamespaceInfo",
    "PatchResult",
    "ResourceTotals",
    "UnknownNamespacesError",
    "WorkloadState",
    "create_body",
    "parse_warning",
    "patch_for",
    "pod_requests",
]

FIELD_MANAGER: Final = "sizeguard"
STRATEGIC_MERGE: Final = "application/strategic-merge-patch+json"
HPA_KIND: Final = "HorizontalPodAutoscaler"
WORKLOAD_KINDS: Final = ("Deployment", "StatefulSet", "DaemonSet")
PROBE_SKIPPED_NAMESPACES: Final = ("kube-system", "kube-public", "kube-node-lease")
"""Namespaces :meth:`Cluster.probe_admission` leaves alone (the sizeguard webhook skips them)."""

# kind -> (apiVersion, API class, snake_case name used in the client's method names)
_KINDS: Final[dict[str, tuple[str, Callable[[k8s.ApiClient], Any], str]]] = {
    "Deployment": ("apps/v1", k8s.AppsV1Api, "deployment"),
    "StatefulSet": ("apps/v1", k8s.AppsV1Api, "stateful_set"),
    "DaemonSet": ("apps/v1", k8s.AppsV1Api, "daemon_set"),
    HPA_KIND: ("autoscaling/v2", k8s.AutoscalingV2Api, "horizontal_pod_autoscaler"),
}
_LIST_LIMIT: Final = 500
_MAX_MESSAGE: Final = 1500
# A compact JWS (an approval, or a bearer token that is a JWT): never echoed.
_JWS_RE: Final = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

_log = structlog.get_logger("sizeguard.cluster")


def _untyped(function: object) -> Callable[..., Any]:
    """A function of the client that carries no annotations, typed for mypy --strict."""
    return cast("Callable[..., Any]", function)


ErrorKind = Literal[
    "not_found",  # 404, or the object was deleted and recreated (uid differs)
    "forbidden",  # 403 from RBAC: the credentials may not do this
    "denied",  # 403 from admission (the sizeguard webhook, a policy): the change is refused
    "conflict",  # 409: the object changed meanwhile
    "invalid",  # 422 / 400: the API server refused the object or the patch as invalid
    "unauthorized",  # 401: the credentials are not accepted
    "timeout",  # no answer in time (client side), or 504
    "unreachable",  # connection refused, DNS, TLS: no conversation with the API server
    "unsupported",  # a kind sizeguard does not manage, or an object it cannot read
    "server_error",  # 5xx, 429, or an answer that is not what the API promises
    "config",  # no usable kubeconfig / in-cluster configuration
]


class ClusterError(Exception):
    """A failed cluster operation. ``kind`` is stable (match on it); ``message`` is for people
    and names the object and what to do. ``warnings`` are the API server's ``Warning`` headers
    of a refused request (admission policies warn on denied changes too)."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        warnings: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.status = status
        self.warnings = warnings

    def __str__(self) -> str:
        return self.message


class UnknownNamespacesError(ClusterError):
    """Namespaces the API server does not have (``names``, sorted); listing in one would
    answer an empty list, which reads as "nothing to do"."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__("not_found", f"{no_namespaces(names)} in the cluster", status=404)
        self.names = tuple(names)


# --- models at the boundary --------------------------------------------------------------------

_MODEL = ConfigDict(extra="forbid", frozen=True)


class WorkloadState(BaseModel):
    """One Deployment, StatefulSet or DaemonSet as it is now. CPU in millicores, memory in
    bytes, unset = None (the contract's canonical values)."""

    model_config = _MODEL

    target: Target
    generation: int | None
    labels: dict[str, str]
    replicas: int | None = Field(description="spec.replicas (absent = 1); None for DaemonSets")
    current_replicas: int = Field(description="pods the controller runs now (status)")
    ready_replicas: int
    containers: dict[str, ContainerResources]
    init_containers: dict[str, ContainerResources]
    pod_resources: Resources | None = Field(
        default=None, description="pod-level resources (spec.template.spec.resources)"
    )
    runtime_class: str | None = Field(default=None, description="runtimeClassName")
    strategy: str | None = Field(
        default=None,
        description="Deployment spec.strategy.type / DaemonSet spec.updateStrategy.type",
    )
    max_surge: int | str | None = Field(default=None, description="rollingUpdate.maxSurge")
    max_unavailable: int | str | None = Field(
        default=None, description="rollingUpdate.maxUnavailable"
    )
    min_ready_seconds: int | None = Field(default=None, description="None: 0")
    progress_deadline_seconds: int | None = Field(default=None, description="Deployment only")
    hpa: str | None = Field(default=None, description="name of the HPA that scales it")
    error: str | None = Field(
        default=None,
        description="why sizeguard cannot manage this object (its resources are then empty)",
    )

    @property
    def ref(self) -> str:
        return self.target.ref()


class HpaState(BaseModel):
    """An ``autoscaling/v2`` HorizontalPodAutoscaler."""

    model_config = _MODEL

    target: Target
    labels: dict[str, str]
    scale_target: str = Field(description='"apiVersion/kind/name" of spec.scaleTargetRef')
    min_replicas: int
    max_replicas: int
    current_replicas: int | None
    desired_replicas: int | None
    target_cpu_utilization_percentage: float | None
    target_memory_utilization_percentage: float | None
    created_at: str | None = Field(
        default=None,
        description="creationTimestamp (an HPA younger than 2 minutes cannot be removed)",
    )

    @property
    def ref(self) -> str:
        return self.target.ref()


class NamespaceInfo(BaseModel):
    model_config = _MODEL

    name: str
    labels: dict[str, str]


class ResourceTotals(BaseModel):
    """CPU in millicores, memory in bytes."""

    model_config = _MODEL

    cpu: int
    memory: int


class Capacity(BaseModel):
    """What the change-set policy's capacity rule needs. ``requested`` (or ``allocatable``)
    is None when some value could not be read: the policy then treats capacity as unknown and
    refuses changes that add requests (fail closed); ``problems`` says why."""

    model_config = _MODEL

    nodes: int
    allocatable: ResourceTotals | None
    requested: ResourceTotals | None
    pods: int = Field(description="non-terminated pods counted in requested")
    problems: list[str] = Field(default_factory=list)

    def policy_input(self) -> dict[str, Any]:
        """``context.capacity``: ``{"nodes", "allocatable": {"cpu", "memory"}, "requested"}``."""
        return {
            "nodes": self.nodes,
            "allocatable": None if self.allocatable is None else self.allocatable.model_dump(),
            "requested": None if self.requested is None else self.requested.model_dump(),
        }


class ClusterState(BaseModel):
    """Workloads, HPAs and namespaces (of the namespaces asked for, or all), and the capacity
    of the whole cluster."""

    model_config = _MODEL

    workloads: list[WorkloadState]
    hpas: list[HpaState]
    namespaces: dict[str, NamespaceInfo]
    capacity: Capacity

    def workload(self, kind: str, namespace: str, name: str) -> WorkloadState | None:
        for workload in self.workloads:
            target = workload.target
            if (target.kind, target.namespace, target.name) == (kind, namespace, name):
                return workload
        return None

    def policy_context(self) -> dict[str, Any]:
        """The ``context`` of a change-set decision, without ``now`` (the caller adds it)."""
        return {
            "capacity": self.capacity.policy_input(),
            "namespaces": {
                name: {"labels": dict(info.labels)} for name, info in self.namespaces.items()
            },
            "labels": {w.ref: dict(w.labels) for w in self.workloads}
            | {h.ref: dict(h.labels) for h in self.hpas},
        }


class PatchResult(BaseModel):
    """The object the API server returned (after a dry run: what it would store) and the
    ``Warning`` headers of the response (admission warnings, e.g. the webhook's)."""

    model_config = ConfigDict(frozen=True)

    object: dict[str, Any]
    warnings: list[str]
    dry_run: bool


# --- the patch ---------------------------------------------------------------------------------

_ROLLING: Final = "RollingUpdate"
# Strategy types that take no rollingUpdate (the API server refuses one with them).
_NO_ROLLING_UPDATE: Final = frozenset({"Recreate", "OnDelete"})


def _quantity_text(name: str, value: int) -> str:
    """A canonical value written back as a quantity: CPU in millicores, byte-like resources
    with binary suffixes where exact, counts (GPUs, extended resources) as plain integers."""
    if name == "cpu":
        return format_cpu(value)
    if name in ("memory", "ephemeral-storage") or name.startswith("hugepages-"):
        return format_memory(value)
    return str(value)


def _resource_map(
    cpu: int | None, memory: int | None, others: Mapping[str, int], live: Mapping[str, Any]
) -> dict[str, str | None]:
    """One ``requests`` or ``limits`` map: every value wanted, and null (which deletes) for
    cpu, memory and every resource the live object has that is not wanted."""
    wanted = {"cpu": cpu, "memory": memory, **others}
    result: dict[str, str | None] = {
        name: None if value is None else _quantity_text(name, value)
        for name, value in wanted.items()
    }
    for name in live:
        if isinstance(name, str) and name not in result:
            result[name] = None
    return result


def _resources_patch(wanted: Resources, live: Mapping[str, Any]) -> dict[str, Any]:
    live_requests = live.get("requests") if isinstance(live.get("requests"), Mapping) else {}
    live_limits = live.get("limits") if isinstance(live.get("limits"), Mapping) else {}
    return {
        "requests": _resource_map(
            wanted.cpu_request, wanted.memory_request, wanted.other_requests, live_requests or {}
        ),
        "limits": _resource_map(
            wanted.cpu_limit, wanted.memory_limit, wanted.other_limits, live_limits or {}
        ),
    }


def _mapping_at(value: Any, *keys: str) -> Mapping[str, Any]:
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _live_containers(pod_spec: Mapping[str, Any], key: str) -> dict[str, Mapping[str, Any]]:
    items = pod_spec.get(key)
    if not isinstance(items, list):
        return {}
    return {
        str(c.get("name")): c for c in items if isinstance(c, Mapping) and c.get("name") is not None
    }


def _claims_patch(claims: Sequence[str]) -> list[dict[str, str]] | None:
    """A container's ``resources.claims`` (``name`` or ``name/request``), written whole (the
    list has no merge key: a strategic merge replaces it); none: null, which deletes it."""
    written = []
    for claim in claims:
        name, _, request = claim.partition("/")
        written.append({"name": name, "request": request} if request else {"name": name})
    return written or None


def _containers_patch(
    group: Mapping[str, ContainerResources], live_pod_spec: Mapping[str, Any], key: str
) -> list[dict[str, Any]]:
    live = _live_containers(live_pod_spec, key)
    rank = {name: index for index, name in enumerate(live)}
    # in the live order (a strategic merge reorders list elements to the patch's order)
    ordered = sorted(group.items(), key=lambda item: rank.get(item[0], len(rank)))
    patched = []
    for name, resources in ordered:
        written = _resources_patch(resources, _mapping_at(live.get(name), "resources"))
        written["claims"] = _claims_patch(resources.claims)
        patched.append(
            {"name": name, "resources": written, "restartPolicy": resources.restart_policy}
        )
    return patched


def _resource_claims_patch(
    wanted: Mapping[str, str], live_pod_spec: Mapping[str, Any]
) -> list[dict[str, Any]] | None:
    """The pod's ``resourceClaims`` (merged by name): every wanted claim with exactly one of
    ``resourceClaimName``/``resourceClaimTemplateName``, and a delete directive for each live
    one not wanted. None when there are none either way (nothing to write)."""
    items = live_pod_spec.get("resourceClaims")
    live = [
        str(c.get("name"))
        for c in (items if isinstance(items, list) else [])
        if isinstance(c, Mapping) and c.get("name") is not None
    ]
    patch: list[dict[str, Any]] = []
    for name, source in wanted.items():
        kind, _, target = source.partition(":")
        if kind not in ("claim", "template") or not target:
            raise ValueError(f"resource claim {name}: {source!r:.80} is not claim:X or template:X")
        patch.append(
            {
                "name": name,
                "resourceClaimName": target if kind == "claim" else None,
                "resourceClaimTemplateName": target if kind == "template" else None,
            }
        )
    patch += [{"name": name, "$patch": "delete"} for name in live if name not in wanted]
    return patch or None


def _strategy_patch(after: GuardedState, ref: str) -> dict[str, Any]:
    """``spec.strategy`` (Deployment) / ``spec.updateStrategy`` (DaemonSet)."""
    if after.strategy in _NO_ROLLING_UPDATE:
        if after.max_surge is not None or after.max_unavailable is not None:
            raise ValueError(f"{ref}: a {after.strategy} strategy takes no maxSurge/maxUnavailable")
        return {"type": after.strategy, "rollingUpdate": None}
    rolling = {"maxSurge": after.max_surge, "maxUnavailable": after.max_unavailable}
    return {"type": after.strategy, "rollingUpdate": rolling}


def _workload_spec(
    kind: str, after: GuardedState, live: Mapping[str, Any], ref: str
) -> dict[str, Any]:
    if after.min_replicas is not None or after.max_replicas is not None:
        raise ValueError(f"{ref}: min_replicas/max_replicas apply to HPAs only")
    if after.scale_target is not None:
        raise ValueError(f"{ref}: scale_target applies to HPAs only")
    if (after.replicas is None) != (kind == "DaemonSet"):
        raise ValueError(
            f"{ref}: replicas must be " + ("null for a DaemonSet" if kind == "DaemonSet" else "set")
        )
    if not after.containers:
        raise ValueError(f"{ref}: a workload change needs its containers")
    rollout_key = {"Deployment": "strategy", "DaemonSet": "updateStrategy"}.get(kind)
    if rollout_key is None and (
        after.strategy is not None
        or after.max_surge is not None
        or after.max_unavailable is not None
    ):
        raise ValueError(f"{ref}: sizeguard guards no rollout strategy of a {kind}")
    if kind != "Deployment" and after.progress_deadline_seconds is not None:
        raise ValueError(f"{ref}: progressDeadlineSeconds belongs to a Deployment")
    live_pod_spec = _mapping_at(live, "spec", "template", "spec")
    pod_spec: dict[str, Any] = {
        "runtimeClassName": after.runtime_class,
        "terminationGracePeriodSeconds": after.termination_grace_period_seconds,
    }
    claims = _resource_claims_patch(after.resource_claims, live_pod_spec)
    if claims is not None:
        pod_spec["resourceClaims"] = claims
    live_pod_resources = live_pod_spec.get("resources")
    if after.pod_resources is not None:
        pod_spec["resources"] = _resources_patch(
            after.pod_resources, _mapping_at(live_pod_spec, "resources")
        )
    elif live_pod_resources is not None:
        # Deleted whole: an empty ``resources: {}`` left behind would change the pod
        # template (and its hash: a rollout) without changing anything guarded.
        pod_spec["resources"] = None
    for key, group in (("containers", after.containers), ("initContainers", after.init_containers)):
        if not group:
            continue
        pod_spec[key] = _containers_patch(group, live_pod_spec, key)
        names = list(_live_containers(live_pod_spec, key))
        if names:
            pod_spec[f"$setElementOrder/{key}"] = [{"name": n} for n in names]
    spec: dict[str, Any] = {}
    if after.replicas is not None:
        spec["replicas"] = after.replicas
    if rollout_key is not None:
        spec[rollout_key] = _strategy_patch(after, ref)
    spec["minReadySeconds"] = after.min_ready_seconds
    if kind == "Deployment":
        spec["progressDeadlineSeconds"] = after.progress_deadline_seconds
    spec["template"] = {"spec": pod_spec}
    return spec


def patch_for(
    change: ResourceChange,
    approval_token: str | None,
    *,
    live: Mapping[str, Any] | None = None,
    resource_version: str | None = None,
) -> dict[str, Any]:
    """The strategic-merge patch that sets the target's guarded state to exactly
    ``change.after`` and its ``sizeguard.io/approval`` annotation to ``approval_token``
    (``None``: no annotation, for a server-side dry run of a preview).

    Every guarded value of ``after`` is written — replicas, the rollout strategy (type,
    maxSurge, maxUnavailable), minReadySeconds, progressDeadlineSeconds, runtimeClassName,
    terminationGracePeriodSeconds, the pod's resource claims, pod-level resources, and each
    container's requests, limits, claims and restartPolicy — an unset one as null, which
    deletes it. A workload's ``live`` object is required: resources it has
    that ``after`` does not are written as null too, and containers are listed (and
    ``$setElementOrder`` set) in its order, because a strategic merge reorders list elements to
    the patch's order. So ``guarded_state(live merged with the patch) == after`` whatever the
    live values were; other containers' fields and everything else are left alone.

    Raises ``ValueError`` for an empty token, a change that creates or deletes (see
    :func:`create_body` and :meth:`Cluster.delete_hpa`), or an ``after`` that does not fit its
    kind. ``resource_version`` (of the object the change was checked against) makes the patch
    conditional: the API server refuses it with 409 Conflict if anyone wrote the object since.
    """
    change = ResourceChange.model_validate(change)
    if approval_token is not None and (not isinstance(approval_token, str) or not approval_token):
        raise ValueError("patch_for needs the approval token for this change (or None)")
    target, after = change.target, change.after
    ref = target.ref()
    expected_api = _KINDS.get(target.kind, ("",))[0]
    if target.api_version != expected_api:
        raise ValueError(
            f"{ref}: sizeguard patches apps/v1 Deployment, StatefulSet, DaemonSet and "
            f"autoscaling/v2 HorizontalPodAutoscaler, not {target.api_version} {target.kind}"
        )
    if after is None or change.before is None:
        raise ValueError(f"{ref}: a change that {change.operation}s the object is not a patch")
    spec: dict[str, Any]
    if target.kind == HPA_KIND:
        if after.min_replicas is None or after.max_replicas is None:
            raise ValueError(f"{ref}: an HPA change needs min_replicas and max_replicas")
        if after.replicas is not None or after.containers or after.init_containers:
            raise ValueError(f"{ref}: an HPA has no replicas or containers to set")
        spec = {"minReplicas": after.min_replicas, "maxReplicas": after.max_replicas}
    else:
        if live is None:
            raise ValueError(
                f"{ref}: patch_for needs the live object of a workload (it removes the "
                "resources the live object has and the change does not)"
            )
        spec = _workload_spec(target.kind, after, live, ref)
    metadata = _write_metadata(ref, approval_token, resource_version)
    return {"metadata": metadata, "spec": spec} if metadata else {"spec": spec}


def _write_metadata(
    ref: str, approval_token: str | None, resource_version: str | None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if approval_token is not None:
        metadata["annotations"] = {APPROVAL_ANNOTATION: approval_token}
    if resource_version is not None:
        if not isinstance(resource_version, str) or not resource_version:
            raise ValueError(f"{ref}: resource_version must be a non-empty string")
        metadata["resourceVersion"] = resource_version
    return metadata


def create_body(
    change: ResourceChange,
    approval_token: str | None,
    *,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The HorizontalPodAutoscaler a create change makes: ``change.create_spec`` under the
    target's name and namespace (:func:`sizeguard.changes.hpa_object`), with the approval
    annotation (``None``: none, for a dry run) and ``labels`` (a rollback re-creates a deleted
    HPA with the labels it had). Its guarded state is ``change.after``."""
    change = ResourceChange.model_validate(change)
    ref = change.target.ref()
    if change.operation != "create" or change.create_spec is None:
        raise ValueError(f"{ref}: only a change that creates an HPA has a create body")
    if approval_token is not None and (not isinstance(approval_token, str) or not approval_token):
        raise ValueError("create_body needs the approval token for this change (or None)")
    body = hpa_object(change.target, change.create_spec)
    metadata: dict[str, Any] = body["metadata"]
    if labels:
        metadata["labels"] = {str(k): str(v) for k, v in labels.items()}
    if approval_token is not None:
        metadata["annotations"] = {APPROVAL_ANNOTATION: approval_token}
    if guarded_state(body) != change.after:
        raise ValueError(f"{ref}: the create body does not give the state in after")
    return body


# --- warnings and errors -----------------------------------------------------------------------


def _unmangle(value: str) -> str:
    """HTTP header values arrive decoded as Latin-1; the API server sends UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def parse_warning(value: str) -> str:
    """The text of one ``Warning`` header (RFC 7234: ``299 - "text"``; the API server's form)."""
    value = _unmangle(value).strip()
    match = re.fullmatch(r'\d{3}\s+\S+\s+"((?:[^"\\]|\\.)*)"(?:\s+"[^"]*")?', value)
    if match is None:
        return value
    return re.sub(r"\\(.)", r"\1", match.group(1))


def _warnings(headers: Any) -> list[str]:
    if headers is None:
        return []
    getlist = getattr(headers, "getlist", None)
    values = getlist("Warning") if getlist is not None else [headers.get("Warning")]
    return [parse_warning(v) for v in values if v]


def _redact(text: str) -> str:
    """A message from the API server (or the client) as one line for people and logs: no
    token (a JWS, ``Bearer ...``, ``token=...``), no newline, at most ``_MAX_MESSAGE``."""
    return one_line(_JWS_RE.sub("<redacted token>", text), _MAX_MESSAGE)


def _server_message(exc: k8s.ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return f"HTTP {exc.status} {exc.reason or ''}".strip()


def _api_error(exc: k8s.ApiException, action: str, what: str, server: str) -> ClusterError:
    status = int(exc.status or 0)
    detail = _redact(_server_message(exc) if status else str(exc.reason or "TLS error"))
    warnings = tuple(_redact(w) for w in _warnings(exc.headers))
    kind: ErrorKind
    if status == 403 and ("denied the request" in detail or "denied request" in detail):
        # The admission webhook's (or an admission policy's) own words say why and what to do.
        kind, message = "denied", f"the cluster refused to {action} {what}: {detail}"
    else:
        if status == 404:
            kind, advice = "not_found", "it does not exist (deleted or renamed?); read it again"
        elif status == 403:
            kind, advice = (
                "forbidden",
                f"the credentials sizeguard uses may not {action} it; grant that in RBAC",
            )
        elif status == 401:
            kind, advice = (
                "unauthorized",
                f"the API server at {server} does not accept the credentials (expired?); "
                "check the kubeconfig",
            )
        elif status == 409:
            kind, advice = "conflict", "it changed meanwhile; read it again and retry"
        elif status in (400, 422):
            kind, advice = "invalid", "the API server refused the request as invalid"
        elif status == 504:
            kind, advice = "timeout", f"the API server at {server} timed out; retry later"
        elif status == 0:
            kind, advice = "unreachable", f"no TLS connection to the API server at {server}"
        else:
            kind, advice = (
                "server_error",
                f"the API server at {server} failed (HTTP {status}); retry later or check it",
            )
        message = f"cannot {action} {what}: {advice} (API server: {detail})"
    return ClusterError(kind, message, status=status or None, warnings=warnings)


def _transport_error(exc: Exception, action: str, what: str, server: str) -> ClusterError:
    reason: BaseException = exc
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        reason = exc.reason
    # NewConnectionError (refused, no route, DNS) subclasses ConnectTimeoutError in urllib3.
    refused = isinstance(reason, urllib3.exceptions.NewConnectionError)
    if not refused and isinstance(reason, urllib3.exceptions.TimeoutError | TimeoutError):
        return ClusterError(
            "timeout",
            f"cannot {action} {what}: the API server at {server} did not answer in time; "
            "check that it is up and reachable, then retry (the request may or may not have "
            "been applied: read the object again)",
        )
    text = str(reason)
    cause = "connection refused" if "refused" in text.lower() else type(reason).__name__
    return ClusterError(
        "unreachable",
        f"cannot {action} {what}: cannot connect to the API server at {server} ({cause}); "
        "check the kubeconfig context and that the cluster is running",
    )


# --- pod requests ------------------------------------------------------------------------------


def _request_of(container: Mapping[str, Any], parse: Callable[[object], int], key: str) -> int:
    resources = container.get("resources") or {}
    value = (resources.get("requests") or {}).get(key)
    return 0 if value is None else parse(value)


def pod_requests(pod: Mapping[str, Any], key: str, parse: Callable[[object], int]) -> int:
    """A pod's effective request of one resource, as the scheduler counts it: the containers'
    sum (plus sidecars, i.e. restartable init containers), or the largest init container
    step if that is larger, plus the pod overhead; pod-level requests win when set."""
    spec = pod.get("spec") or {}
    pod_level = ((spec.get("resources") or {}).get("requests") or {}).get(key)
    if pod_level is not None:
        total = parse(pod_level)
    else:
        total = sum(_request_of(c, parse, key) for c in spec.get("containers") or [])
        sidecars = 0
        init_peak = 0
        for init in spec.get("initContainers") or []:
            request = _request_of(init, parse, key)
            if init.get("restartPolicy") == "Always":
                sidecars += request
                total += request
                init_peak = max(init_peak, sidecars)
            else:
                init_peak = max(init_peak, request + sidecars)
        total = max(total, init_peak)
    overhead = (spec.get("overhead") or {}).get(key)
    return total + (0 if overhead is None else parse(overhead))


# --- the client --------------------------------------------------------------------------------


class Cluster:
    """One connection to one cluster. Build it with :meth:`connect`, :meth:`from_kubeconfig`
    or :meth:`in_cluster`, or from a configured ``kubernetes.client.ApiClient``."""

    def __init__(self, api_client: k8s.ApiClient, *, timeout: float = 30.0) -> None:
        self.api = api_client
        self.timeout = timeout
        self.server = str(api_client.configuration.host)
        self._core = k8s.CoreV1Api(api_client)
        self._apis: dict[str, Any] = {}

    # construction

    @staticmethod
    def _configuration() -> k8s.Configuration:
        configuration = k8s.Configuration()
        # Connection errors are retried once; nothing else is (a read timeout of a PATCH may
        # have been applied: the caller reads the object again instead).
        configuration.retries = urllib3.Retry(
            total=1, connect=1, read=0, redirect=0, status=0, other=0
        )
        return configuration

    @classmethod
    def from_kubeconfig(
        cls,
        kubeconfig: Path | str | None = None,
        *,
        context: str | None = None,
        timeout: float = 30.0,
    ) -> Cluster:
        """From a kubeconfig file (None: ``$KUBECONFIG`` or ``~/.kube/config``) and context
        (None: its current context). The file is never written back."""
        configuration = cls._configuration()
        where = str(kubeconfig) if kubeconfig is not None else "the default kubeconfig"
        try:
            _untyped(k8s_config.load_kube_config)(
                config_file=None if kubeconfig is None else str(kubeconfig),
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
        except (ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
            in_context = f" (context {context})" if context else ""
            raise ClusterError(
                "config",
                f"cannot use {where}{in_context}: {_redact(str(exc))}; pass --kubeconfig/--context "
                "or set KUBECONFIG",
            ) from None
        return cls(k8s.ApiClient(configuration), timeout=timeout)

    @classmethod
    def in_cluster(cls, *, timeout: float = 30.0) -> Cluster:
        """From the pod's service account."""
        configuration = cls._configuration()
        try:
            _untyped(k8s_config.load_incluster_config)(client_configuration=configuration)
        except (ConfigException, OSError) as exc:
            raise ClusterError(
                "config", f"cannot use the in-cluster configuration: {_redact(str(exc))}"
            ) from None
        return cls(k8s.ApiClient(configuration), timeout=timeout)

    @classmethod
    def connect(
        cls,
        kubeconfig: Path | str | None = None,
        *,
        context: str | None = None,
        timeout: float = 30.0,
    ) -> Cluster:
        """An explicit kubeconfig wins; else in-cluster when running in a pod (and no
        ``KUBECONFIG`` is set); else the default kubeconfig."""
        defaults = kubeconfig is None and context is None and not os.environ.get("KUBECONFIG")
        if defaults and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return cls.in_cluster(timeout=timeout)
        return cls.from_kubeconfig(kubeconfig, context=context, timeout=timeout)

    def close(self) -> None:
        _untyped(self.api.close)()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # plumbing

    def _api(self, kind: str) -> tuple[str, Any, str]:
        if kind not in _KINDS:
            raise ClusterError(
                "unsupported",
                f"sizeguard manages Deployment, StatefulSet, DaemonSet and "
                f"HorizontalPodAutoscaler objects, not {kind!r:.60}",
            )
        api_version, api_class, snake = _KINDS[kind]
        if api_version not in self._apis:
            self._apis[api_version] = api_class(self.api)
        return api_version, self._apis[api_version], snake

    def _call(self, action: str, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Call a client method without preloading (raw urllib3 response); errors mapped."""
        try:
            return method(
                *args,
                _preload_content=False,
                _request_timeout=(min(10.0, self.timeout), self.timeout),
                **kwargs,
            )
        except k8s.ApiException as exc:
            raise _api_error(exc, action, what, self.server) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _transport_error(exc, action, what, self.server) from None

    def _json(self, response: Any, action: str, what: str) -> dict[str, Any]:
        try:
            body = json.loads(response.data)
        except (ValueError, TypeError):
            body = None
        if not isinstance(body, dict):
            raise ClusterError(
                "server_error",
                f"cannot {action} {what}: the API server at {self.server} sent an answer "
                "that is not a JSON object",
            )
        return body

    def _list(self, what: str, method: Any, *args: Any) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": _LIST_LIMIT}
            if token:
                kwargs["_continue"] = token
            body = self._json(self._call("list", what, method, *args, **kwargs), "list", what)
            yield from (item for item in body.get("items") or [] if isinstance(item, dict))
            token = (body.get("metadata") or {}).get("continue") or None
            if not token:
                return

    def _list_kind(self, kind: str, namespaces: list[str] | None) -> Iterator[dict[str, Any]]:
        api_version, api, snake = self._api(kind)
        plural = f"{kind}s" if kind != HPA_KIND else "HorizontalPodAutoscalers"
        if namespaces is None:
            method = getattr(api, f"list_{snake}_for_all_namespaces")
            items: Iterable[dict[str, Any]] = self._list(plural, method)
        else:
            method = getattr(api, f"list_namespaced_{snake}")
            items = (
                item
                for ns in namespaces
                for item in self._list(f"{plural} in namespace {ns}", method, ns)
            )
        for item in items:
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", api_version)
            yield item

    # reading

    def read_live(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        """The object as the API server has it now (a plain dict with apiVersion and kind)."""
        api_version, api, snake = self._api(kind)
        _check_namespace_names([namespace])
        problem = bad_object_name(name, f"a {kind}")
        if problem is not None:
            raise ClusterError("invalid", problem)
        what = f"{kind} {namespace}/{name}"
        method = getattr(api, f"read_namespaced_{snake}")
        obj = self._json(self._call("read", what, method, name, namespace), "read", what)
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", api_version)
        return obj

    def read_object(self, target: Target) -> dict[str, Any]:
        """The live object of a change's target. Raises ``not_found`` also when an object of
        that name exists with another uid (it was deleted and recreated since)."""
        api_version = _KINDS.get(target.kind, ("",))[0]
        if target.api_version != api_version:
            raise ClusterError(
                "unsupported",
                f"sizeguard reads {target.kind} as {api_version or 'nothing'}, "
                f"not {target.api_version!r:.60}",
            )
        obj = self.read_live(target.kind, target.namespace, target.name)
        uid = (obj.get("metadata") or {}).get("uid")
        if uid != target.uid:
            raise ClusterError(
                "not_found",
                f"{target.ref()} was deleted and recreated since it was read (uid {target.uid}, "
                f"now {uid}); read the cluster state again and make a new change set",
            )
        return obj

    def cluster_state(self, namespaces: Iterable[str] | None = None) -> ClusterState:
        """Workloads and HPAs of ``namespaces`` (None: all), their namespaces' labels, and the
        capacity of the whole cluster (every node; requests of every non-terminated pod)."""
        selected = None if namespaces is None else sorted(set(namespaces))
        if selected is not None:
            _check_namespace_names(selected)
        workloads: dict[tuple[str, str, str], WorkloadState] = {}
        for kind in WORKLOAD_KINDS:
            for obj in self._list_kind(kind, selected):
                state = _workload_state(obj)
                workloads[(kind, state.target.namespace, state.target.name)] = state
        hpas: list[HpaState] = []
        for obj in self._list_kind(HPA_KIND, selected):
            hpa = _hpa_state(obj)
            if hpa is None:
                continue
            hpas.append(hpa)
            ref = (obj.get("spec") or {}).get("scaleTargetRef") or {}
            key = (str(ref.get("kind")), hpa.target.namespace, str(ref.get("name")))
            if key in workloads:
                workloads[key] = workloads[key].model_copy(update={"hpa": hpa.target.name})
        return ClusterState(
            workloads=sorted(workloads.values(), key=lambda w: w.target.sort_key()),
            hpas=sorted(hpas, key=lambda h: h.target.sort_key()),
            namespaces=self._namespaces(selected),
            capacity=self.capacity(),
        )

    def namespace_labels(self, names: Iterable[str]) -> dict[str, dict[str, str] | None]:
        """The labels of each of ``names`` (sorted), one GET per namespace, so that
        namespace-scoped credentials work: None for a namespace they may not read (403; it is
        scanned as asked). Namespaces the API server does not have (404) raise
        :class:`UnknownNamespacesError` naming all of them."""
        wanted = sorted(set(names))
        _check_namespace_names(wanted)
        labels: dict[str, dict[str, str] | None] = {}
        unknown: list[str] = []
        for name in wanted:
            what = f"Namespace {name}"
            try:
                response = self._call("read", what, self._core.read_namespace, name)
            except ClusterError as exc:
                if exc.kind == "not_found":
                    unknown.append(name)
                elif exc.kind == "forbidden":
                    labels[name] = None
                else:
                    raise
                continue
            labels[name] = self._namespace_labels(self._json(response, "read", what), what)
        if unknown:
            raise UnknownNamespacesError(unknown)
        return labels

    def _namespace_labels(self, obj: Mapping[str, Any], what: str) -> dict[str, str]:
        """A Namespace's labels; fail closed (the production rules read them): metadata or
        labels that are not what the API promises are a ``server_error`` sentence."""
        meta = obj.get("metadata") or {}
        labels = (meta.get("labels") or {}) if isinstance(meta, Mapping) else None
        if not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise ClusterError(
                "server_error",
                f"cannot read {what}: the API server at {self.server} sent metadata that is "
                "not an object with labels of strings, so the production rules cannot "
                "classify it",
            )
        return dict(labels)

    def _namespaces(self, selected: list[str] | None) -> dict[str, NamespaceInfo]:
        if selected is None:
            objects = list(self._list("Namespaces", self._core.list_namespace))
        else:
            objects = [
                self._json(
                    self._call("read", f"Namespace {ns}", self._core.read_namespace, ns),
                    "read",
                    f"Namespace {ns}",
                )
                for ns in selected
            ]
        result: dict[str, NamespaceInfo] = {}
        for obj in objects:
            meta = obj.get("metadata")
            name = str(meta.get("name", "")) if isinstance(meta, Mapping) else ""
            what = f"Namespace {name}" if name else "a Namespace"
            result[name] = NamespaceInfo(name=name, labels=self._namespace_labels(obj, what))
        return dict(sorted(result.items()))

    def capacity(self) -> Capacity:
        """Node count, allocatable CPU/memory of all nodes, and the requests of all pods that
        have not terminated (scheduled or not)."""
        problems: list[str] = []
        nodes = list(self._list("Nodes", self._core.list_node))
        allocatable: ResourceTotals | None = None
        try:
            allocatable = ResourceTotals(
                cpu=sum(_allocatable(n, "cpu", cpu_millicores) for n in nodes),
                memory=sum(_allocatable(n, "memory", memory_bytes) for n in nodes),
            )
        except ValueError as exc:
            problems.append(f"node allocatable: {exc}")
        cpu = memory = count = 0
        requested: ResourceTotals | None = None
        try:
            for pod in self._list("Pods", self._core.list_pod_for_all_namespaces):
                if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                count += 1
                try:
                    cpu += pod_requests(pod, "cpu", cpu_millicores)
                    memory += pod_requests(pod, "memory", memory_bytes)
                except ValueError as exc:
                    meta = pod.get("metadata") or {}
                    raise ValueError(
                        f"pod {meta.get('namespace')}/{meta.get('name')}: {exc}"
                    ) from None
            requested = ResourceTotals(cpu=cpu, memory=memory)
        except ValueError as exc:
            problems.append(f"pod requests: {exc}")
        return Capacity(
            nodes=len(nodes),
            allocatable=allocatable,
            requested=requested,
            pods=count,
            problems=problems,
        )

    # writing

    def apply_patch(
        self, target: Target, body: Mapping[str, Any], *, dry_run: bool = False
    ) -> PatchResult:
        """Send a strategic-merge patch (from :func:`patch_for`) to the target, as field
        manager ``sizeguard``; with ``dry_run`` through the whole admission chain without
        persisting (``dryRun=All``). Returns the resulting object and the response's
        ``Warning`` headers. Unknown fields in the body are refused (``fieldValidation=Strict``).
        The target's uid is not checked here: the approval binds it, and the webhook does."""
        api_version, api, snake = self._api(target.kind)
        if target.api_version != api_version:
            raise ClusterError(
                "unsupported", f"sizeguard patches {target.kind} as {api_version} only"
            )
        what = f"{target.kind} {target.namespace}/{target.name}"
        method = getattr(api, f"patch_namespaced_{snake}")
        kwargs: dict[str, Any] = {
            "field_manager": FIELD_MANAGER,
            "field_validation": "Strict",
            "_content_type": STRATEGIC_MERGE,
        }
        if dry_run:
            kwargs["dry_run"] = "All"
        action = "dry-run patch" if dry_run else "patch"
        try:
            response = self._call(
                action, what, method, target.name, target.namespace, dict(body), **kwargs
            )
        except ClusterError as exc:
            _log.warning(
                "cluster.patch",
                target=target.ref(),
                dry_run=dry_run,
                error=exc.kind,
                status=exc.status,
                warnings=len(exc.warnings),
            )
            raise
        warnings = _warnings(response.headers)
        obj = self._json(response, action, what)
        _log.info("cluster.patch", target=target.ref(), dry_run=dry_run, warnings=len(warnings))
        return PatchResult(object=obj, warnings=[_redact(w) for w in warnings], dry_run=dry_run)

    def probe_admission(
        self, *, tries: int = 3, skip_namespaces: Sequence[str] = PROBE_SKIPPED_NAMESPACES
    ) -> list[list[str]]:
        """The admission warnings of server-side dry runs (nothing is written) that raise the
        replicas of a Deployment by one, for up to ``tries`` Deployments in different
        namespaces (not ``skip_namespaces``): what the admission chain says about a change it
        decides, with no change set at hand. Admitted or denied, the warnings are returned."""
        answers: list[list[str]] = []
        seen: set[str] = set()
        for obj in self._list_kind("Deployment", None):
            metadata = obj.get("metadata") or {}
            namespace = str(metadata.get("namespace") or "")
            if not namespace or namespace in seen or namespace in skip_namespaces:
                continue
            if metadata.get("deletionTimestamp"):
                continue
            seen.add(namespace)
            replicas = (obj.get("spec") or {}).get("replicas")
            bumped = (replicas if isinstance(replicas, int) else 1) + 1
            try:
                result = self.apply_patch(
                    target_of(obj), {"spec": {"replicas": bumped}}, dry_run=True
                )
                answers.append(result.warnings)
            except ClusterError as exc:
                answers.append(list(exc.warnings))
            except ValueError:
                continue
            if len(answers) >= tries:
                break
        return answers

    def _hpa_api(self, target: Target, verb: str) -> tuple[Any, str]:
        api_version, api, _ = self._api(HPA_KIND)
        if target.kind != HPA_KIND or target.api_version != api_version:
            raise ClusterError(
                "unsupported",
                f"sizeguard {verb}s autoscaling/v2 HorizontalPodAutoscalers only, not "
                f"{target.api_version} {target.kind}",
            )
        return api, f"{target.kind} {target.namespace}/{target.name}"

    def create_hpa(
        self, target: Target, body: Mapping[str, Any], *, dry_run: bool = False
    ) -> PatchResult:
        """Create an HPA (the body from :func:`create_body`) as field manager ``sizeguard``;
        with ``dry_run`` through the whole admission chain without persisting. Returns the
        created object (with its new uid) and the response's ``Warning`` headers."""
        api, what = self._hpa_api(target, "create")
        kwargs: dict[str, Any] = {"field_manager": FIELD_MANAGER, "field_validation": "Strict"}
        if dry_run:
            kwargs["dry_run"] = "All"
        action = "dry-run create" if dry_run else "create"
        method = api.create_namespaced_horizontal_pod_autoscaler
        try:
            response = self._call(action, what, method, target.namespace, dict(body), **kwargs)
        except ClusterError as exc:
            _log.warning("cluster.create", target=target.ref(), dry_run=dry_run, error=exc.kind)
            raise
        warnings = [_redact(w) for w in _warnings(response.headers)]
        obj = self._json(response, action, what)
        obj.setdefault("kind", HPA_KIND)
        obj.setdefault("apiVersion", target.api_version)
        _log.info("cluster.create", target=target.ref(), dry_run=dry_run, warnings=len(warnings))
        return PatchResult(object=obj, warnings=warnings, dry_run=dry_run)

    def delete_hpa(
        self,
        target: Target,
        *,
        resource_version: str,
        approval_token: str | None,
        dry_run: bool = False,
    ) -> PatchResult:
        """Delete the HPA ``target`` names (its uid) in the version ``resource_version``.

        With a token, first a patch conditional on ``resource_version`` sets the approval
        annotation (the webhook reads a delete's approval from the object being deleted), then
        the DELETE carries preconditions uid + the resourceVersion that patch produced: if
        anyone wrote the HPA in between, or it is another object of the same name, the API
        server answers 409 and nothing is deleted. With ``dry_run`` both requests are dry runs
        (so the DELETE does not see the annotation: admission judges it unapproved). Returns
        what the DELETE answered and the ``Warning`` headers of both requests."""
        api, what = self._hpa_api(target, "delete")
        if not target.uid:
            raise ClusterError("unsupported", f"cannot delete {what} without its uid")
        if not isinstance(resource_version, str) or not resource_version:
            raise ClusterError("unsupported", f"cannot delete {what} without a resourceVersion")
        warnings: list[str] = []
        version = resource_version
        if approval_token is not None:
            body = {"metadata": _write_metadata(target.ref(), approval_token, resource_version)}
            annotated = self.apply_patch(target, body, dry_run=dry_run)
            warnings += annotated.warnings
            new_version = (annotated.object.get("metadata") or {}).get("resourceVersion")
            if isinstance(new_version, str) and new_version:
                version = new_version
        options: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": target.uid, "resourceVersion": version},
        }
        if dry_run:
            # In the body: with a body, the API server reads no DeleteOptions from the query.
            options["dryRun"] = ["All"]
        kwargs: dict[str, Any] = {"body": options}
        action = "dry-run delete" if dry_run else "delete"
        method = api.delete_namespaced_horizontal_pod_autoscaler
        try:
            response = self._call(action, what, method, target.name, target.namespace, **kwargs)
        except ClusterError as exc:
            _log.warning("cluster.delete", target=target.ref(), dry_run=dry_run, error=exc.kind)
            raise
        warnings += [_redact(w) for w in _warnings(response.headers)]
        obj = self._json(response, action, what)
        _log.info("cluster.delete", target=target.ref(), dry_run=dry_run, warnings=len(warnings))
        return PatchResult(object=obj, warnings=warnings, dry_run=dry_run)


def _check_namespace_names(names: Iterable[str]) -> None:
    """Refuse names that are not namespace names before they go into an API path (urllib3
    resolves ``..`` and ``.``, so ``..`` would read ``/api/v1/``, ``""`` the list)."""
    problem = bad_namespace_names(names)
    if problem is not None:
        raise ClusterError("invalid", problem)


# --- reading objects into models ---------------------------------------------------------------


def _labels(meta: Mapping[str, Any]) -> dict[str, str]:
    labels = meta.get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _allocatable(node: Mapping[str, Any], key: str, parse: Callable[[object], int]) -> int:
    value = ((node.get("status") or {}).get("allocatable") or {}).get(key)
    if value is None:
        return 0
    try:
        return parse(value)
    except ValueError as exc:
        name = (node.get("metadata") or {}).get("name")
        raise ValueError(f"node {name}: {key} {exc}") from None


def _workload_state(obj: dict[str, Any]) -> WorkloadState:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    kind = str(obj.get("kind"))
    target = target_of(obj)
    if kind == "DaemonSet":
        current, ready = status.get("currentNumberScheduled"), status.get("numberReady")
    else:
        current, ready = status.get("replicas"), status.get("readyReplicas")
    error: str | None = None
    try:
        state = guarded_state(obj)
    except ValueError as exc:
        error = f"sizeguard cannot manage {target.ref()}: {exc}"
        replicas = (obj.get("spec") or {}).get("replicas", 1) if kind != "DaemonSet" else None
        state = GuardedState(
            replicas=replicas if isinstance(replicas, int) and replicas >= 0 else None,
            containers={},
            init_containers={},
            min_replicas=None,
            max_replicas=None,
        )
    generation = meta.get("generation")
    return WorkloadState(
        target=target,
        generation=generation if isinstance(generation, int) else None,
        labels=_labels(meta),
        replicas=state.replicas,
        current_replicas=_int(current),
        ready_replicas=_int(ready),
        containers=dict(state.containers),
        init_containers=dict(state.init_containers),
        pod_resources=state.pod_resources,
        runtime_class=state.runtime_class,
        strategy=state.strategy,
        max_surge=state.max_surge,
        max_unavailable=state.max_unavailable,
        min_ready_seconds=state.min_ready_seconds,
        progress_deadline_seconds=state.progress_deadline_seconds,
        error=error,
    )


def _hpa_state(obj: dict[str, Any]) -> HpaState | None:
    try:
        state = guarded_state(obj)
        _, info = hpa_info(obj)
        target = target_of(obj)
    except (ValueError, TypeError):
        return None
    assert state.min_replicas is not None and state.max_replicas is not None
    assert state.scale_target is not None
    return HpaState(
        target=target,
        labels=_labels(obj.get("metadata") or {}),
        scale_target=state.scale_target,
        min_replicas=state.min_replicas,
        max_replicas=state.max_replicas,
        current_replicas=info.current_replicas,
        desired_replicas=info.desired_replicas,
        target_cpu_utilization_percentage=info.target_cpu_utilization_percentage,
        target_memory_utilization_percentage=info.target_memory_utilization_percentage,
        created_at=_created_at(obj),
    )


def _created_at(obj: Mapping[str, Any]) -> str | None:
    value = (obj.get("metadata") or {}).get("creationTimestamp")
    return value if isinstance(value, str) and value else None
