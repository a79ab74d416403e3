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

from sizeguard.policy import PolicyClient, PolicyUnavailableError
from sizeguard.recommend.replicas import Floor
from sizeguard.workloads import Workload, WorkloadReader

__all__ = [
    "FLOORS_PATH",
    "FloorLookup",
    "FloorsUnavailableError",
    "Key",
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
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "value"
            raise FloorsUnavailableError(
                f"the availability floor OPA gave for {w.kind} {w.namespace}/{w.name} is not "
                f"valid ({where}: {first['msg']})"
            ) from None
        floors[w.key] = Floor(
            min_replicas=max(1, parsed.min_replicas),
            reason=parsed.reason,
            workload_class=parsed.workload_class,
            max_pod_cpu=parsed.max_pod_cpu,
        )
    return floors


def read_namespace_labels(
    kubeconfig: Path, context: str | None, namespaces: Iterable[str]
) -> dict[str, dict[str, str]]:
    """The labels of each namespace (the production rules read them)."""
    labels: dict[str, dict[str, str]] = {}
    with WorkloadReader(kubeconfig, context=context) as reader:
        for namespace in sorted(set(namespaces)):
            try:
                response = reader.http.get(f"/api/v1/namespaces/{namespace}")
                response.raise_for_status()
                meta = response.json().get("metadata") or {}
            except Exception as exc:  # httpx and JSON errors: say what, not a traceback
                raise FloorsUnavailableError(
                    f"cannot read the labels of namespace {namespace}: {exc}"
                ) from None
            labels[namespace] = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    return labels


def opa_floors(policy: PolicyClient, kubeconfig: Path, context: str | None = None) -> FloorLookup:
    """A :data:`FloorLookup` asking ``policy`` (OPA) with the namespaces' labels."""

    def lookup(workloads: Sequence[Workload]) -> Mapping[Key, Floor]:
        chosen = planned_workloads(workloads)
        if not chosen:
            return {}
        labels = read_namespace_labels(kubeconfig, context, (w.namespace for w in chosen))
        try:
            answer = policy.query(FLOORS_PATH, floors_input(chosen, labels))
        except PolicyUnavailableError as exc:
            raise FloorsUnavailableError(str(exc)) from None
        return parse_floors(answer, chosen)

    return lookup
