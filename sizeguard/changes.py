"""The shared contract: what sizeguard protects, and the change sets people approve.

:func:`guarded_state` is the only function that decides what is protected, and what it protects
is a workload's **footprint**: everything that decides how many of its pods can run at once and
what each of them may request or use (docs/contract.md lists it, and what is left out and why).
The MCP server, the admission webhook, the policy inputs and the webhook registration's
``matchConditions`` (:mod:`sizeguard.webhook.registration`, built from
:data:`FOOTPRINT_PATHS`) all use it, so "the same object" means the same thing everywhere: two
objects are the same for sizeguard iff their guarded states are equal.

Every input is treated as untrusted: anything unexpected raises ``ValueError`` with a message
naming the offending field, so callers can fail closed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Annotated, Any, Final

import rfc8785
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sizeguard.quantities import cpu_millicores, format_cpu, format_memory, memory_bytes

__all__ = [
    "FOOTPRINT_PATHS",
    "HPA_API_VERSION",
    "HPA_KIND",
    "MAX_SAFE_INTEGER",
    "ChangeSet",
    "ContainerResources",
    "GuardedState",
    "ResourceChange",
    "Resources",
    "Target",
    "change_set_id",
    "describe_changes",
    "guarded_state",
    "hpa_object",
    "target_of",
]

# Canonical values must survive RFC 8785 (JCS), which represents numbers as IEEE doubles.
MAX_SAFE_INTEGER: Final = 2**53 - 1

Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=253)]
# A resource name as Kubernetes spells it: "ephemeral-storage", "nvidia.com/gpu", "hugepages-2Mi".
ResourceName = Annotated[str, Field(pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_./]{0,251}[A-Za-z0-9])?$")]
# A rollout bound: an absolute pod count, or a percentage of replicas as Kubernetes writes it.
IntOrPercent = Count | Annotated[str, Field(pattern=r"^(0|[1-9][0-9]{0,8})%$")]
Word = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[A-Za-z][A-Za-z0-9]*$")]
ClaimName = Annotated[str, Field(min_length=1, max_length=507)]

WORKLOAD_API_VERSION: Final = "apps/v1"
WORKLOAD_KINDS: Final = frozenset({"Deployment", "StatefulSet", "DaemonSet"})
REPLICA_SET_KIND: Final = "ReplicaSet"
HPA_API_VERSION: Final = "autoscaling/v2"
HPA_KIND: Final = "HorizontalPodAutoscaler"
POD_API_VERSION: Final = "v1"
POD_KIND: Final = "Pod"
MAX_CREATE_SPEC_BYTES: Final = 16 * 1024

_POD_TEMPLATE: Final = (
    "spec.template.spec.resources",
    "spec.template.spec.runtimeClassName",
    "spec.template.spec.resourceClaims",
    "spec.template.spec.terminationGracePeriodSeconds",
    "spec.template.spec.containers[]",
    "spec.template.spec.initContainers[]",
)
FOOTPRINT_PATHS: Final[dict[str, tuple[str, ...]]] = {
    # Where guarded_state reads, per kind ("containers[]" means: every element's name, resources
    # and restartPolicy). The webhook registration's matchConditions compare exactly these
    # subtrees, so an update that leaves all of them alone never needs the webhook.
    "Deployment": (
        "spec.replicas",
        "spec.strategy",
        "spec.minReadySeconds",
        "spec.progressDeadlineSeconds",
        *_POD_TEMPLATE,
    ),
    "StatefulSet": ("spec.replicas", "spec.minReadySeconds", *_POD_TEMPLATE),
    "DaemonSet": ("spec.updateStrategy", "spec.minReadySeconds", *_POD_TEMPLATE),
    # A Deployment's ReplicaSets' replicas are its controller's to write (the policy decides).
    REPLICA_SET_KIND: ("spec.replicas", *_POD_TEMPLATE),
    HPA_KIND: ("spec.minReplicas", "spec.maxReplicas", "spec.scaleTargetRef"),
    POD_KIND: tuple(path.replace("spec.template.spec.", "spec.") for path in _POD_TEMPLATE),
}

# Instances passed into other models are validated again: ``model_copy(update=...)`` skips
# validation, and nothing unvalidated may reach a change-set id or an approval.
_CONTRACT = ConfigDict(extra="forbid", frozen=True, strict=True, revalidate_instances="always")


class Resources(BaseModel):
    """Requests and limits of one container (or of the whole pod): CPU in millicores, memory
    in bytes, every other resource (``ephemeral-storage``, ``hugepages-2Mi``,
    ``nvidia.com/gpu``, ...) in its base unit; unset = None (absent from ``other_*``).

    A request left unset where its limit is set **is** the limit: Kubernetes sets it so on
    every pod it creates (``SetDefaults_Pod``), so "request unset, limit 2" is stored here as
    request 2 — never as a request of nothing that would make a tenfold increase look like a
    removal."""

    model_config = _CONTRACT

    cpu_request: Count | None
    cpu_limit: Count | None
    memory_request: Count | None
    memory_limit: Count | None
    other_requests: dict[ResourceName, Count] = Field(default_factory=dict)
    other_limits: dict[ResourceName, Count] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _requests_default_to_limits(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for resource in ("cpu", "memory"):
            if (
                data.get(f"{resource}_request") is None
                and data.get(f"{resource}_limit") is not None
            ):
                data[f"{resource}_request"] = data[f"{resource}_limit"]
        limits, requests = data.get("other_limits"), data.get("other_requests")
        if isinstance(limits, dict) and limits and (requests is None or isinstance(requests, dict)):
            data["other_requests"] = {**limits, **(requests or {})}
        return data

    def is_empty(self) -> bool:
        return self == Resources(
            cpu_request=None, cpu_limit=None, memory_request=None, memory_limit=None
        )


class ContainerResources(Resources):
    """One container's resources and, for an init container, its ``restartPolicy``
    (``Always`` makes it a sidecar: its requests then count for the pod's whole life).
    ``claims``: the pod's DRA resource claims it uses (``name`` or ``name/request``), sorted."""

    restart_policy: Word | None = None
    claims: list[ClaimName] = Field(default_factory=list)


class GuardedState(BaseModel):
    """Everything sizeguard protects on one object: its footprint (see docs/contract.md).

    Workloads: ``replicas`` (None for a DaemonSet), containers and init containers by name,
    pod-level resources, ``runtime_class`` (RuntimeClass overhead) and the rollout fields that
    set the peak pod count. HPAs: ``min_replicas``, ``max_replicas`` and ``scale_target``."""

    model_config = _CONTRACT

    replicas: Count | None
    containers: dict[NonEmpty, ContainerResources]
    init_containers: dict[NonEmpty, ContainerResources]
    min_replicas: Count | None
    max_replicas: Count | None
    # HPA only: "apiVersion/kind/name" of spec.scaleTargetRef. Retargeting an HPA changes
    # which workload it scales (and so that workload's replicas), so it is guarded too.
    scale_target: NonEmpty | None = None
    pod_resources: Resources | None = None
    runtime_class: NonEmpty | None = None
    # Deployment spec.strategy / DaemonSet spec.updateStrategy: type, maxSurge, maxUnavailable.
    strategy: Word | None = None
    max_surge: IntOrPercent | None = None
    max_unavailable: IntOrPercent | None = None
    # 0 and absent are the same to Kubernetes (it omits 0), so both are None here.
    min_ready_seconds: Annotated[int, Field(ge=1, le=MAX_SAFE_INTEGER)] | None = None
    progress_deadline_seconds: Count | None = None
    # How long a replaced or deleted pod may keep running beside its replacement.
    termination_grace_period_seconds: Count | None = None
    # DRA: the pod's resource claims, name -> "claim:<ResourceClaim>" or
    # "template:<ResourceClaimTemplate>" (a claim hands the pod devices such as GPUs).
    resource_claims: dict[NonEmpty, NonEmpty] = Field(default_factory=dict)


class Target(BaseModel):
    """The object a change applies to. Serialises ``api_version`` as ``apiVersion``.

    ``uid`` is None only for an object that does not exist yet (a change that creates it)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
        revalidate_instances="always",
    )

    api_version: NonEmpty = Field(alias="apiVersion")
    kind: NonEmpty
    namespace: NonEmpty
    name: NonEmpty
    uid: NonEmpty | None

    def sort_key(self) -> tuple[str, str, str, str, str]:
        return (self.namespace, self.kind, self.name, self.api_version, self.uid or "")

    def ref(self) -> str:
        """``Kind/namespace/name``, the form policies use to name a target."""
        return f"{self.kind}/{self.namespace}/{self.name}"


def _check_create_spec(change: ResourceChange) -> None:
    spec = change.create_spec
    if change.before is not None:
        if spec is not None:
            raise ValueError(f"{change.target.ref()}: create_spec belongs to a change that creates")
        return
    if spec is None:
        raise ValueError(f"{change.target.ref()}: a change that creates an HPA needs create_spec")
    if len(json.dumps(spec)) > MAX_CREATE_SPEC_BYTES:
        raise ValueError(
            f"{change.target.ref()}: create_spec is over {MAX_CREATE_SPEC_BYTES} bytes"
        )
    if guarded_state(hpa_object(change.target, spec)) != change.after:
        raise ValueError(f"{change.target.ref()}: create_spec does not give the state in after")


def _check_update(change: ResourceChange, before: GuardedState, after: GuardedState) -> None:
    ref = change.target.ref()
    for field in ("containers", "init_containers"):
        if set(getattr(before, field)) != set(getattr(after, field)):
            raise ValueError(
                f"{ref}: before and after name different {field}; "
                "a change may only resize existing containers"
            )
    for field in ("replicas", "min_replicas", "max_replicas"):
        if (getattr(before, field) is None) != (getattr(after, field) is None):
            raise ValueError(f"{ref}: {field} is set on only one of before/after")
    if before.scale_target != after.scale_target:
        raise ValueError(f"{ref}: a change may not retarget an HPA (scaleTargetRef)")


class ResourceChange(BaseModel):
    """One object's guarded state before and after the proposed change.

    ``before`` None: the change creates the object (HPAs only; ``create_spec`` is the spec it
    is created with, and the target has no uid yet); ``after`` None: it deletes the object."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        serialize_by_alias=True,
        revalidate_instances="always",
    )

    target: Target
    before: GuardedState | None
    after: GuardedState | None
    reason: Annotated[str, Field(max_length=4096)]
    source: Annotated[str, Field(max_length=253)]
    create_spec: dict[str, Any] | None = None

    @property
    def operation(self) -> str:
        """``create``, ``delete`` or ``update``."""
        if self.before is None:
            return "create"
        return "delete" if self.after is None else "update"

    @model_validator(mode="after")
    def _consistent(self) -> ResourceChange:
        ref = self.target.ref()
        if self.before is None and self.after is None:
            raise ValueError(f"{ref}: a change needs a before or an after state")
        if (self.before is None or self.after is None) and (
            self.target.kind,
            self.target.api_version,
        ) != (HPA_KIND, HPA_API_VERSION):
            raise ValueError(
                f"{ref}: sizeguard creates and deletes autoscaling/v2 HorizontalPodAutoscalers "
                "only; other objects can only be changed"
            )
        if (self.target.uid is None) != (self.before is None):
            raise ValueError(
                f"{ref}: the target has a uid exactly when the object exists before the change"
            )
        _check_create_spec(self)
        if self.before is not None and self.after is not None:
            _check_update(self, self.before, self.after)
        return self


class ChangeSet(BaseModel):
    """Changes sorted by (namespace, kind, name, apiVersion, uid); one change per object."""

    # Not strict, so that callers may pass a list; the elements themselves are strict models.
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    changes: tuple[ResourceChange, ...]

    @field_validator("changes", mode="after")
    @classmethod
    def _sorted_unique(cls, changes: tuple[ResourceChange, ...]) -> tuple[ResourceChange, ...]:
        ordered = tuple(sorted(changes, key=lambda change: change.target.sort_key()))
        seen: set[str] = set()
        for change in ordered:
            ref = change.target.ref()
            if ref in seen:
                raise ValueError(f"{ref} appears more than once in the change set")
            seen.add(ref)
        return ordered

    @property
    def id(self) -> str:
        return change_set_id(self.changes)


def change_set_id(changes: Iterable[ResourceChange]) -> str:
    """``cs-`` + the first 20 hex digits of SHA-256 over the JCS form of the sorted changes."""
    ordered = sorted(changes, key=lambda change: change.target.sort_key())
    document = [change.model_dump(mode="json", by_alias=True) for change in ordered]
    return "cs-" + hashlib.sha256(rfc8785.dumps(document)).hexdigest()[:20]


# --- reading objects ---------------------------------------------------------------------------


def _where(path: str) -> str:
    return path or "object"


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{_where(path)}: expected an object, got {type(value).__name__}")
    return value


def _optional_mapping(parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    return _mapping(value, f"{path}.{key}")


def _string(parent: Mapping[str, Any], key: str, path: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{path}.{key}: expected a non-empty string, got {value!r:.80}")
    return value


def _optional_string(parent: Mapping[str, Any], key: str, path: str) -> str | None:
    if parent.get(key) is None or parent.get(key) == "":
        return None
    value = _string(parent, key, path)
    if len(value) > 253:
        raise ValueError(f"{path}.{key}: longer than 253 characters")
    return value


def _count(parent: Mapping[str, Any], key: str, path: str, default: int | None) -> int | None:
    value = parent.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{path}.{key}: expected an integer, got {value!r:.80}")
    if not 0 <= value <= MAX_SAFE_INTEGER:
        raise ValueError(f"{path}.{key}: {value} is out of range")
    return value


_PERCENT_RE: Final = re.compile(r"([0-9]{1,9})%")
_WORD_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9]{0,62}")
_RESOURCE_NAME_RE: Final = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_./]{0,252}")


def _int_or_percent(parent: Mapping[str, Any], key: str, path: str) -> int | str | None:
    """An IntOrString rollout bound: an integer, or a percentage spelled ``N%`` (Kubernetes
    reads ``"025%"`` as 25%, so it is canonicalised to ``"25%"``)."""
    value = parent.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return _count(parent, key, path, None)
    match = _PERCENT_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{path}.{key}: expected an integer or a percentage, got {value!r:.80}")
    return f"{int(match[1])}%"


def _quantity(
    resources: Mapping[str, Any], key: str, path: str, parse: Callable[[object], int]
) -> int | None:
    if key not in resources or resources[key] is None:
        return None
    try:
        value = parse(resources[key])
    except ValueError as exc:
        raise ValueError(f"{path}.{key}: {exc}") from None
    if not 0 <= value <= MAX_SAFE_INTEGER:
        raise ValueError(f"{path}.{key}: {resources[key]!r} is out of range")
    return value


def _others(values: Mapping[str, Any], path: str) -> dict[str, int]:
    """Every resource other than cpu and memory, in its base unit (``Quantity.Value()``)."""
    result: dict[str, int] = {}
    for name in values:
        if name in ("cpu", "memory"):
            continue
        if not isinstance(name, str) or not _RESOURCE_NAME_RE.fullmatch(name):
            raise ValueError(f"{path}: {name!r:.80} is not a resource name")
        value = _quantity(values, name, path, memory_bytes)
        if value is not None:
            result[name] = value
    return result


def _resource_values(resources: Mapping[str, Any], path: str) -> dict[str, Any]:
    requests = _optional_mapping(resources, "requests", path)
    limits = _optional_mapping(resources, "limits", path)
    return {
        "cpu_request": _quantity(requests, "cpu", f"{path}.requests", cpu_millicores),
        "cpu_limit": _quantity(limits, "cpu", f"{path}.limits", cpu_millicores),
        "memory_request": _quantity(requests, "memory", f"{path}.requests", memory_bytes),
        "memory_limit": _quantity(limits, "memory", f"{path}.limits", memory_bytes),
        "other_requests": _others(requests, f"{path}.requests"),
        "other_limits": _others(limits, f"{path}.limits"),
    }


def _list(parent: Mapping[str, Any], key: str, path: str) -> Sequence[Any]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise ValueError(f"{path}.{key}: expected a list, got {type(value).__name__}")
    return value


def _container_claims(resources: Mapping[str, Any], path: str) -> list[str]:
    """``resources.claims``: the pod resource claims (and requests) a container uses."""
    claims = set()
    for index, item in enumerate(_list(resources, "claims", path)):
        claim = _mapping(item, f"{path}.claims[{index}]")
        name = _string(claim, "name", f"{path}.claims[{index}]")
        request = _optional_string(claim, "request", f"{path}.claims[{index}]")
        claims.add(name if request is None else f"{name}/{request}")
    return sorted(claims)


def _container_resources(container: Mapping[str, Any], path: str) -> ContainerResources:
    resources = _optional_mapping(container, "resources", path)
    restart_policy = _optional_string(container, "restartPolicy", path)
    if restart_policy is not None and not _WORD_RE.fullmatch(restart_policy):
        raise ValueError(f"{path}.restartPolicy: {restart_policy!r:.80} is not a restart policy")
    return ContainerResources(
        **_resource_values(resources, f"{path}.resources"),
        restart_policy=restart_policy,
        claims=_container_claims(resources, f"{path}.resources"),
    )


def _resource_claims(pod_spec: Mapping[str, Any], path: str) -> dict[str, str]:
    """``resourceClaims``: name -> the ResourceClaim or ResourceClaimTemplate it refers to."""
    result: dict[str, str] = {}
    for index, item in enumerate(_list(pod_spec, "resourceClaims", path)):
        where = f"{path}.resourceClaims[{index}]"
        claim = _mapping(item, where)
        name = _string(claim, "name", where)
        claim_name = _optional_string(claim, "resourceClaimName", where)
        template = _optional_string(claim, "resourceClaimTemplateName", where)
        if (claim_name is None) == (template is None) or name in result:
            raise ValueError(f"{where}: needs a unique name and one claim or claim template")
        result[name] = f"claim:{claim_name}" if template is None else f"template:{template}"
    return result


def _pod_resources(pod_spec: Mapping[str, Any], path: str) -> Resources | None:
    resources = _optional_mapping(pod_spec, "resources", path)
    value = Resources(**_resource_values(resources, f"{path}.resources"))
    return None if value.is_empty() else value


def _containers(pod_spec: Mapping[str, Any], key: str, path: str) -> dict[str, ContainerResources]:
    value = pod_spec.get(key)
    if value is None:
        return {}
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise ValueError(f"{path}.{key}: expected a list, got {type(value).__name__}")
    result: dict[str, ContainerResources] = {}
    for index, item in enumerate(value):
        item_path = f"{path}.{key}[{index}]"
        container = _mapping(item, item_path)
        name = _string(container, "name", item_path)
        if name in result:
            raise ValueError(f"{path}.{key}: duplicate container name {name!r}")
        result[name] = _container_resources(container, f"{path}.{key}[{name}]")
    return result


def _pod_state(pod_spec: Mapping[str, Any], path: str) -> dict[str, Any]:
    """What one pod (template) may request or use: containers, init containers (with their
    restartPolicy), pod-level resources and the RuntimeClass (its overhead)."""
    containers = _containers(pod_spec, "containers", path)
    if not containers:
        raise ValueError(f"{path}.containers: expected at least one container")
    return {
        "containers": containers,
        "init_containers": _containers(pod_spec, "initContainers", path),
        "pod_resources": _pod_resources(pod_spec, path),
        "runtime_class": _optional_string(pod_spec, "runtimeClassName", path),
        "termination_grace_period_seconds": _count(
            pod_spec, "terminationGracePeriodSeconds", path, None
        ),
        "resource_claims": _resource_claims(pod_spec, path),
    }


def _rollout(spec: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The fields that set how many pods a rollout may run at once, and for how long."""
    rollout: dict[str, Any] = {
        "min_ready_seconds": _count(spec, "minReadySeconds", "spec", None) or None
    }
    key = {"Deployment": "strategy", "DaemonSet": "updateStrategy"}.get(kind)
    if key is not None:
        strategy = _optional_mapping(spec, key, "spec")
        rolling = _optional_mapping(strategy, "rollingUpdate", f"spec.{key}")
        where = f"spec.{key}.rollingUpdate"
        kind_of = _optional_string(strategy, "type", f"spec.{key}")
        if kind_of is not None and not _WORD_RE.fullmatch(kind_of):
            raise ValueError(f"spec.{key}.type: {kind_of!r:.80} is not a strategy type")
        rollout.update(
            strategy=kind_of,
            max_surge=_int_or_percent(rolling, "maxSurge", where),
            max_unavailable=_int_or_percent(rolling, "maxUnavailable", where),
        )
    if kind == "Deployment":
        rollout["progress_deadline_seconds"] = _count(spec, "progressDeadlineSeconds", "spec", None)
    return rollout


def _workload_state(obj: Mapping[str, Any], kind: str) -> GuardedState:
    spec = _mapping(obj.get("spec"), "spec")
    template = _mapping(spec.get("template"), "spec.template")
    pod_spec = _mapping(template.get("spec"), "spec.template.spec")
    if kind == REPLICA_SET_KIND:  # no rollout of its own: its Deployment rolls out
        return GuardedState(
            replicas=_count(spec, "replicas", "spec", 1),
            min_replicas=None,
            max_replicas=None,
            **_pod_state(pod_spec, "spec.template.spec"),
        )
    return GuardedState(
        replicas=None if kind == "DaemonSet" else _count(spec, "replicas", "spec", 1),
        min_replicas=None,
        max_replicas=None,
        **_pod_state(pod_spec, "spec.template.spec"),
        **_rollout(spec, kind),
    )


def _pod(obj: Mapping[str, Any]) -> GuardedState:
    spec = _mapping(obj.get("spec"), "spec")
    return GuardedState(
        replicas=None, min_replicas=None, max_replicas=None, **_pod_state(spec, "spec")
    )


def _hpa_state(obj: Mapping[str, Any]) -> GuardedState:
    spec = _mapping(obj.get("spec"), "spec")
    max_replicas = _count(spec, "maxReplicas", "spec", None)
    if max_replicas is None:
        raise ValueError("spec.maxReplicas: required for a HorizontalPodAutoscaler")
    ref = _mapping(spec.get("scaleTargetRef"), "spec.scaleTargetRef")
    parts = [ref.get(key) for key in ("apiVersion", "kind", "name")]
    if not all(isinstance(part, str) and part for part in parts):
        raise ValueError("spec.scaleTargetRef: apiVersion, kind and name must be non-empty strings")
    return GuardedState(
        replicas=None,
        containers={},
        init_containers={},
        min_replicas=_count(spec, "minReplicas", "spec", 1),
        max_replicas=max_replicas,
        scale_target="/".join(str(part) for part in parts),
    )


def guarded_state(obj: Mapping[str, Any]) -> GuardedState:
    """The footprint of an ``apps/v1`` Deployment, StatefulSet or DaemonSet, of an
    ``autoscaling/v2`` HorizontalPodAutoscaler, of a ``v1`` Pod (for ``pods/resize``) or of
    the pod template of an ``apps/v1`` ReplicaSet. Anything else raises ``ValueError``."""
    obj = _mapping(obj, "")
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    if not isinstance(kind, str) or not isinstance(api_version, str):
        raise ValueError("unsupported object: apiVersion and kind must be strings")
    if api_version == WORKLOAD_API_VERSION and (kind in WORKLOAD_KINDS or kind == REPLICA_SET_KIND):
        return _workload_state(obj, str(kind))
    if api_version == HPA_API_VERSION and kind == HPA_KIND:
        return _hpa_state(obj)
    if api_version == POD_API_VERSION and kind == POD_KIND:
        return _pod(obj)
    raise ValueError(
        f"unsupported object {api_version!r:.60} {kind!r:.60}: sizeguard guards apps/v1 "
        "Deployment, StatefulSet, DaemonSet and ReplicaSet, autoscaling/v2 "
        "HorizontalPodAutoscaler and v1 Pod"
    )


def target_of(obj: Mapping[str, Any]) -> Target:
    """The :class:`Target` of an existing object, from its apiVersion, kind and metadata."""
    obj = _mapping(obj, "")
    metadata = _mapping(obj.get("metadata"), "metadata")
    return Target(
        api_version=_string(obj, "apiVersion", "object"),
        kind=_string(obj, "kind", "object"),
        namespace=_string(metadata, "namespace", "metadata"),
        name=_string(metadata, "name", "metadata"),
        uid=_string(metadata, "uid", "metadata"),
    )


def hpa_object(target: Target, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The HPA a create change makes: ``target``'s name and namespace, ``spec`` as given."""
    return {
        "apiVersion": HPA_API_VERSION,
        "kind": HPA_KIND,
        "metadata": {"name": target.name, "namespace": target.namespace},
        "spec": dict(spec),
    }


# --- describing changes ------------------------------------------------------------------------

_FIELDS: Final = (
    ("cpu_request", "CPU request", format_cpu),
    ("cpu_limit", "CPU limit", format_cpu),
    ("memory_request", "memory request", format_memory),
    ("memory_limit", "memory limit", format_memory),
)
_UNSET: Final = ContainerResources(
    cpu_request=None, cpu_limit=None, memory_request=None, memory_limit=None
)
_SCALARS: Final = (
    ("replicas", "replicas"),
    ("min_replicas", "HPA minReplicas"),
    ("max_replicas", "HPA maxReplicas"),
    ("min_ready_seconds", "minReadySeconds"),
    ("progress_deadline_seconds", "progressDeadlineSeconds"),
    ("termination_grace_period_seconds", "terminationGracePeriodSeconds"),
)
_WORDS: Final = (
    ("scale_target", "HPA scaleTargetRef"),
    ("runtime_class", "runtimeClassName"),
    ("strategy", "rollout strategy"),
    ("max_surge", "rollout maxSurge"),
    ("max_unavailable", "rollout maxUnavailable"),
)


def _percent(before: int, after: int) -> str:
    if before == 0:
        return ""
    change = Fraction(after - before, before) * 100
    if change.denominator == 1:
        text = f"{change.numerator:+d}%"
    elif abs(change) < 1:
        text = "+<1%" if change > 0 else "-<1%"
    else:
        rounded = int(abs(change) + Fraction(1, 2))  # half away from zero
        text = f"{'+' if change > 0 else '-'}{rounded}%"
    return f" ({text})"


def _line(label: str, before: int | None, after: int | None, fmt: Callable[[int], str]) -> str:
    old = "unset" if before is None else fmt(before)
    new = "unset" if after is None else fmt(after)
    pct = _percent(before, after) if before is not None and after is not None else ""
    return f"{label}: {old} → {new}{pct}"


def _word(value: object) -> str:
    return "unset" if value is None else str(value)


def _format_other(name: str) -> Callable[[int], str]:
    """Storage-like resources read as bytes; extended resources (GPUs) as plain counts."""
    if name == "ephemeral-storage" or name.startswith("hugepages-"):
        return format_memory
    return str


def _resource_lines(prefix: str, old: Resources, new: Resources) -> list[str]:
    lines = []
    for attr, label, fmt in _FIELDS:
        old_value, new_value = getattr(old, attr), getattr(new, attr)
        if old_value != new_value:
            lines.append(prefix + _line(label, old_value, new_value, fmt))
    for attr, noun in (("other_requests", "request"), ("other_limits", "limit")):
        old_map: dict[str, int] = getattr(old, attr)
        new_map: dict[str, int] = getattr(new, attr)
        for name in sorted(old_map.keys() | new_map.keys()):
            if old_map.get(name) != new_map.get(name):
                line = _line(
                    f"{name} {noun}", old_map.get(name), new_map.get(name), _format_other(name)
                )
                lines.append(prefix + line)
    return lines


def _container_lines(
    noun: str, name: str, old: ContainerResources, new: ContainerResources
) -> list[str]:
    prefix = f"{noun} {name}: "
    lines = _resource_lines(prefix, old, new)
    if old.claims != new.claims:
        lines.append(
            f"{prefix}resource claims: {', '.join(old.claims) or 'none'} → "
            f"{', '.join(new.claims) or 'none'}"
        )
    if old.restart_policy != new.restart_policy:
        sidecar = " (a sidecar: its requests count for the pod's life)"
        note = sidecar if new.restart_policy == "Always" else ""
        lines.append(
            f"{prefix}restartPolicy: {_word(old.restart_policy)} → {_word(new.restart_policy)}"
            + note
        )
    return lines


def _summary(state: GuardedState) -> str:
    if state.scale_target is not None:
        return (
            f"HPA for {state.scale_target}, minReplicas {_word(state.min_replicas)}, "
            f"maxReplicas {_word(state.max_replicas)}"
        )
    return f"replicas {_word(state.replicas)}, {len(state.containers)} container(s)"


def describe_changes(before: GuardedState | None, after: GuardedState | None) -> list[str]:
    """One readable line per guarded field that differs, e.g.
    ``container web: CPU request: 100m → 250m (+150%)``; a create or delete is one line."""
    if before is None:
        return [] if after is None else [f"created: {_summary(after)}"]
    if after is None:
        return [f"deleted (was: {_summary(before)})"]
    lines: list[str] = []
    for field, label in _SCALARS:
        old, new = getattr(before, field), getattr(after, field)
        if old != new:
            lines.append(_line(label, old, new, str))
    for field, label in _WORDS:
        old, new = getattr(before, field), getattr(after, field)
        if old != new:
            lines.append(f"{label}: {_word(old)} → {_word(new)}")
    for name in sorted(before.resource_claims.keys() | after.resource_claims.keys()):
        old_claim, new_claim = before.resource_claims.get(name), after.resource_claims.get(name)
        if old_claim != new_claim:
            lines.append(f"resource claim {name}: {_word(old_claim)} → {_word(new_claim)}")
    if before.pod_resources != after.pod_resources:
        empty = Resources(cpu_request=None, cpu_limit=None, memory_request=None, memory_limit=None)
        lines += _resource_lines(
            "pod-level resources: ", before.pod_resources or empty, after.pod_resources or empty
        )
    for group, noun in (("containers", "container"), ("init_containers", "init container")):
        old_group: dict[str, ContainerResources] = getattr(before, group)
        new_group: dict[str, ContainerResources] = getattr(after, group)
        for name in sorted(old_group.keys() | new_group.keys()):
            if name not in old_group:
                lines.append(f"{noun} {name}: added")
            elif name not in new_group:
                lines.append(f"{noun} {name}: removed")
            lines += _container_lines(
                noun, name, old_group.get(name, _UNSET), new_group.get(name, _UNSET)
            )
    return lines
