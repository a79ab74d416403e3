"""The shared contract: what sizeguard protects, and the change sets people approve.

:func:`guarded_state` is the only function that decides what is protected. Both the MCP server
and the admission webhook call it, so "the same object" means the same thing everywhere: two
objects are the same for sizeguard iff their guarded states are equal.

Every input is treated as untrusted: anything unexpected raises ``ValueError`` with a message
naming the offending field, so callers can fail closed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Annotated, Any, Final

import rfc8785
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sizeguard.quantities import cpu_millicores, format_cpu, format_memory, memory_bytes

__all__ = [
    "MAX_SAFE_INTEGER",
    "ChangeSet",
    "ContainerResources",
    "GuardedState",
    "ResourceChange",
    "Target",
    "change_set_id",
    "describe_changes",
    "guarded_state",
    "target_of",
]

# Canonical values must survive RFC 8785 (JCS), which represents numbers as IEEE doubles.
MAX_SAFE_INTEGER: Final = 2**53 - 1

Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=253)]

WORKLOAD_API_VERSION: Final = "apps/v1"
WORKLOAD_KINDS: Final = frozenset({"Deployment", "StatefulSet", "DaemonSet"})
HPA_API_VERSION: Final = "autoscaling/v2"
HPA_KIND: Final = "HorizontalPodAutoscaler"

# Instances passed into other models are validated again: ``model_copy(update=...)`` skips
# validation, and nothing unvalidated may reach a change-set id or an approval.
_CONTRACT = ConfigDict(extra="forbid", frozen=True, strict=True, revalidate_instances="always")


class ContainerResources(BaseModel):
    """One container's guarded resources: CPU in millicores, memory in bytes, unset = None."""

    model_config = _CONTRACT

    cpu_request: Count | None
    cpu_limit: Count | None
    memory_request: Count | None
    memory_limit: Count | None


class GuardedState(BaseModel):
    """Everything sizeguard protects on one object (see docs/contract.md)."""

    model_config = _CONTRACT

    replicas: Count | None
    containers: dict[NonEmpty, ContainerResources]
    init_containers: dict[NonEmpty, ContainerResources]
    min_replicas: Count | None
    max_replicas: Count | None
    # HPA only: "apiVersion/kind/name" of spec.scaleTargetRef. Retargeting an HPA changes
    # which workload it scales (and so that workload's replicas), so it is guarded too.
    scale_target: NonEmpty | None = None


class Target(BaseModel):
    """The object a change applies to. Serialises ``api_version`` as ``apiVersion``."""

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
    uid: NonEmpty

    def sort_key(self) -> tuple[str, str, str, str, str]:
        return (self.namespace, self.kind, self.name, self.api_version, self.uid)

    def ref(self) -> str:
        """``Kind/namespace/name``, the form policies use to name a target."""
        return f"{self.kind}/{self.namespace}/{self.name}"


class ResourceChange(BaseModel):
    """One object's guarded state before and after the proposed change."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        serialize_by_alias=True,
        revalidate_instances="always",
    )

    target: Target
    before: GuardedState
    after: GuardedState
    reason: Annotated[str, Field(max_length=4096)]
    source: Annotated[str, Field(max_length=253)]

    @model_validator(mode="after")
    def _same_shape(self) -> ResourceChange:
        for field in ("containers", "init_containers"):
            if set(getattr(self.before, field)) != set(getattr(self.after, field)):
                raise ValueError(
                    f"{self.target.ref()}: before and after name different {field}; "
                    "a change may only resize existing containers"
                )
        for field in ("replicas", "min_replicas", "max_replicas"):
            if (getattr(self.before, field) is None) != (getattr(self.after, field) is None):
                raise ValueError(f"{self.target.ref()}: {field} is set on only one of before/after")
        if self.before.scale_target != self.after.scale_target:
            raise ValueError(
                f"{self.target.ref()}: a change may not retarget an HPA (scaleTargetRef)"
            )
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


def _count(parent: Mapping[str, Any], key: str, path: str, default: int | None) -> int | None:
    value = parent.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{path}.{key}: expected an integer, got {value!r:.80}")
    if not 0 <= value <= MAX_SAFE_INTEGER:
        raise ValueError(f"{path}.{key}: {value} is out of range")
    return value


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


def _container_resources(container: Mapping[str, Any], path: str) -> ContainerResources:
    resources = _optional_mapping(container, "resources", path)
    requests = _optional_mapping(resources, "requests", f"{path}.resources")
    limits = _optional_mapping(resources, "limits", f"{path}.resources")
    return ContainerResources(
        cpu_request=_quantity(requests, "cpu", f"{path}.resources.requests", cpu_millicores),
        cpu_limit=_quantity(limits, "cpu", f"{path}.resources.limits", cpu_millicores),
        memory_request=_quantity(requests, "memory", f"{path}.resources.requests", memory_bytes),
        memory_limit=_quantity(limits, "memory", f"{path}.resources.limits", memory_bytes),
    )


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


def _workload_state(obj: Mapping[str, Any], kind: str) -> GuardedState:
    spec = _mapping(obj.get("spec"), "spec")
    template = _mapping(spec.get("template"), "spec.template")
    pod_spec = _mapping(template.get("spec"), "spec.template.spec")
    pod_resources = pod_spec.get("resources")
    if pod_resources is not None and pod_resources != {}:
        # Pod-level resources would resize the pod without touching any guarded field.
        raise ValueError(
            "spec.template.spec.resources: pod-level resources are not supported by sizeguard; "
            "set resources per container"
        )
    containers = _containers(pod_spec, "containers", "spec.template.spec")
    if not containers:
        raise ValueError("spec.template.spec.containers: expected at least one container")
    return GuardedState(
        replicas=None if kind == "DaemonSet" else _count(spec, "replicas", "spec", 1),
        containers=containers,
        init_containers=_containers(pod_spec, "initContainers", "spec.template.spec"),
        min_replicas=None,
        max_replicas=None,
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
    """The guarded state of an ``apps/v1`` Deployment, StatefulSet or DaemonSet, or of an
    ``autoscaling/v2`` HorizontalPodAutoscaler. Anything else raises ``ValueError``."""
    obj = _mapping(obj, "")
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    if not isinstance(kind, str) or not isinstance(api_version, str):
        raise ValueError("unsupported object: apiVersion and kind must be strings")
    if api_version == WORKLOAD_API_VERSION and kind in WORKLOAD_KINDS:
        return _workload_state(obj, str(kind))
    if api_version == HPA_API_VERSION and kind == HPA_KIND:
        return _hpa_state(obj)
    raise ValueError(
        f"unsupported object {api_version!r:.60} {kind!r:.60}: sizeguard guards apps/v1 "
        "Deployment, StatefulSet and DaemonSet, and autoscaling/v2 HorizontalPodAutoscaler"
    )


def target_of(obj: Mapping[str, Any]) -> Target:
    """The :class:`Target` of an object, from its apiVersion, kind and metadata."""
    obj = _mapping(obj, "")
    metadata = _mapping(obj.get("metadata"), "metadata")
    return Target(
        api_version=_string(obj, "apiVersion", "object"),
        kind=_string(obj, "kind", "object"),
        namespace=_string(metadata, "namespace", "metadata"),
        name=_string(metadata, "name", "metadata"),
        uid=_string(metadata, "uid", "metadata"),
    )


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


def describe_changes(before: GuardedState, after: GuardedState) -> list[str]:
    """One readable line per guarded field that differs, e.g.
    ``container web: CPU request: 100m → 250m (+150%)``."""
    lines: list[str] = []
    for field, label in (
        ("replicas", "replicas"),
        ("min_replicas", "HPA minReplicas"),
        ("max_replicas", "HPA maxReplicas"),
    ):
        old, new = getattr(before, field), getattr(after, field)
        if old != new:
            lines.append(_line(label, old, new, str))
    if before.scale_target != after.scale_target:
        lines.append(f"HPA scaleTargetRef: {before.scale_target} → {after.scale_target}")
    for group, noun in (("containers", "container"), ("init_containers", "init container")):
        old_group: dict[str, ContainerResources] = getattr(before, group)
        new_group: dict[str, ContainerResources] = getattr(after, group)
        for name in sorted(old_group.keys() | new_group.keys()):
            if name not in old_group:
                lines.append(f"{noun} {name}: added")
            elif name not in new_group:
                lines.append(f"{noun} {name}: removed")
            old_res, new_res = old_group.get(name, _UNSET), new_group.get(name, _UNSET)
            for attr, label, fmt in _FIELDS:
                old_value, new_value = getattr(old_res, attr), getattr(new_res, attr)
                if old_value != new_value:
                    lines.append(f"{noun} {name}: " + _line(label, old_value, new_value, fmt))
    return lines
