"""Availability floors for the replica plans, from policy data through OPA.

``data.sizeguard.plan.floors`` (policies/sizeguard/plan/floors.rego) classifies each workload
with the change set policy's production and critical rules and answers its minimum replicas
and per-pod CPU cap from ``config.availability``. Fail closed: when OPA gives no answer, or
leaves out a workload, :class:`FloorsUnavailableError` says why and no plan is made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sizeguard.cluster import Cluster, ClusterError
from sizeguard.policy import PolicyClient, PolicyUnavailableError
from sizeguard.recommend.replicas import Floor
from sizeguard.texts import describe_validation_error
from sizeguard.workloads import Workload

__all__ = [
    "FLOORS_PATH",
    "FloorLookup",
    "FloorsUnavailableError",
    "Key",
    "NamespaceLabels",
    "floors_input",
    "opa_floors",
    "planned_workloads",
]

FLOORS_PATH = "sizeguard/plan/floors"

Key = tuple[str, str, str]
FloorLookup = Callable[[Sequence[Workload]], Mapping[Key, Floor]]
"""Floors for workloads (those with replicas); raises :class:`FloorsUnavailableError`."""


class FloorsUnavailableError(Exception):
    """No floors, so no plans; the message is a sentence naming the cause."""


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    workload_class: str = Field(alias="class")
    min_replicas: int = Field(ge=0)
    max_pod_cpu: float | None = Field(default=None, gt=0)
    reason: str


def planned_workloads(workloads: Iterable[Workload]) -> list[Workload]:
    """The workloads a plan is made for: those with replicas (not DaemonSets)."""
    return [w for w in workloads if w.kind != "DaemonSet" and w.replicas is not None]


def floors_input(
    workloads: Sequence[Workload], namespace_labels: Mapping[str, Mapping[str, str]]
) -> dict[str, Any]:
    return {
        "workloads": [
            {"kind": w.kind, "namespace": w.namespace, "name": w.name, "labels": dict(w.labels)}
            for w in workloads
        ],
        "namespaces": {ns: {"labels": dict(labels)} for ns, labels in namespace_labels.items()},
    }


def parse_floors(answer: object, workloads: Sequence[Workload]) -> dict[Key, Floor]:
    """The floor of every workload from OPA's answer; a missing or malformed one fails all."""
    if not isinstance(answer, dict):
        raise FloorsUnavailableError("the availability floors from OPA are not an object")
    floors: dict[Key, Floor] = {}
    for w in workloads:
        raw = answer.get(f"{w.kind}/{w.namespace}/{w.name}")
        if raw is None:
            raise FloorsUnavailableError(
                f"OPA gave no availability floor for {w.kind} {w.namespace}/{w.name}"
            )
        try:
            parsed = _Answer.model_validate(raw)
        except ValidationError as exc:
            raise FloorsUnavailableError(
                f"the availability floor OPA gave for {w.kind} {w.namespace}/{w.name} is not "
                f"valid ({describe_validation_error(exc)})"
            ) from None
        floors[w.key] = Floor(
            min_replicas=max(1, parsed.min_replicas),
            reason=parsed.reason,
            workload_class=parsed.workload_class,
            max_pod_cpu=parsed.max_pod_cpu,
        )
    return floors


NamespaceLabels = Mapping[str, Mapping[str, str] | None]
"""Labels per namespace as :meth:`~sizeguard.cluster.Cluster.namespace_labels` answers them
(None: the credentials may not read the namespace)."""


def read_namespace_labels(
    kubeconfig: Path,
    context: str | None,
    namespaces: Iterable[str],
    known: NamespaceLabels | None = None,
) -> dict[str, dict[str, str]]:
    """The labels of each namespace (the production rules read them): those the namespace
    check already read (``known``) as they are, the others read now. Fail closed: a namespace
    whose labels cannot be read is a :class:`FloorsUnavailableError` naming it."""
    wanted = sorted(set(namespaces))
    labels: dict[str, dict[str, str]] = {}
    for namespace in wanted:
        given = (known or {}).get(namespace)
        if given is not None:
            labels[namespace] = dict(given)
    missing = [ns for ns in wanted if ns not in labels]
    if not missing:
        return labels
    try:
        with Cluster.from_kubeconfig(kubeconfig, context=context) as cluster:
            read = cluster.namespace_labels(missing)
    except ClusterError as exc:
        raise FloorsUnavailableError(f"cannot read the labels of the namespaces: {exc}") from None
    for namespace in missing:
        found = read.get(namespace)
        if found is None:
            raise FloorsUnavailableError(
                f"cannot read the labels of namespace {namespace}: the credentials may not "
                "read it (403 Forbidden), and the production rules need them"
            )
        labels[namespace] = found
    return labels


def opa_floors(
    policy: PolicyClient,
    kubeconfig: Path,
    context: str | None = None,
    known_labels: NamespaceLabels | None = None,
) -> FloorLookup:
    """A :data:`FloorLookup` asking ``policy`` (OPA) with the namespaces' labels (those of
    ``known_labels``, from the namespace check, are not read again)."""

    def lookup(workloads: Sequence[Workload]) -> Mapping[Key, Floor]:
        chosen = planned_workloads(workloads)
        if not chosen:
            return {}
        namespaces = (w.namespace for w in chosen)
        labels = read_namespace_labels(kubeconfig, context, namespaces, known_labels)
        try:
            answer = policy.query(FLOORS_PATH, floors_input(chosen, labels))
        except PolicyUnavailableError as exc:
            raise FloorsUnavailableError(str(exc)) from None
        return parse_floors(answer, chosen)

    return lookup
