"""Usage and utilization per workload over a window, from Prometheus (``get_metrics``).

Pods are attributed to workloads through kube-state-metrics (``kube_pod_owner`` and
``kube_replicaset_owner``), exactly as the recommendations do; then two batched queries per
resource give each pod's average and peak over the window. A workload's usage is the mean
over its pods, so a pod replaced in the middle of the window does not count twice.

A query that fails raises :class:`~sizeguard.prometheus.PrometheusError` (the tool answers
with an error naming the cause, never an empty result); workloads Prometheus has no usage for
are in ``coverage.without``, each with the reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from statistics import fmean

from sizeguard.prometheus import PrometheusClient, format_duration
from sizeguard.recommend import settings_for
from sizeguard.recommend.collection import discover_pods, namespace_matcher
from sizeguard.recommend.results import NO_PODS_TEXT
from sizeguard.server.models import Coverage, Metrics, MissingData, WorkloadUsage
from sizeguard.workloads import Workload

__all__ = ["usage"]

_CPU = (
    'sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{{container!="", {ns}}}[5m]))'
)
_MEMORY = 'sum by (namespace, pod) (container_memory_working_set_bytes{{container!="", {ns}}})'


Values = dict[tuple[str, str], dict[tuple[str, str], float]]
"""(resource, avg|max) -> (namespace, pod) -> value."""


def _queries(namespaces: Sequence[str], window: str) -> dict[tuple[str, str], str]:
    ns = namespace_matcher(list(namespaces) or None)
    cpu, memory = _CPU.format(ns=ns), _MEMORY.format(ns=ns)
    return {
        ("cpu", "avg"): f"avg_over_time(({cpu})[{window}:1m])",
        ("cpu", "max"): f"max_over_time(({cpu})[{window}:1m])",
        ("memory", "avg"): f"avg_over_time(({memory})[{window}:1m])",
        ("memory", "max"): f"max_over_time(({memory})[{window}:1m])",
    }


async def usage(
    client: PrometheusClient,
    workloads: Sequence[Workload],
    *,
    window_seconds: int,
    at: float | None = None,
) -> Metrics:
    """Per-pod average and peak CPU (cores) and memory (bytes) of each workload."""
    when = float(int(time.time())) if at is None else at
    window = format_duration(window_seconds)
    if not workloads:
        empty = Coverage(workloads=0, with_data=0, without=[])
        return Metrics(
            window=window, evaluated_at=when, workloads=[], coverage=empty, total_workloads=0
        )
    namespaces = sorted({w.namespace for w in workloads})
    settings = settings_for("simple", history_duration=window_seconds / 3600)
    queries = _queries(namespaces, window)
    pods = await discover_pods(client, settings, namespaces, when)
    answers = await asyncio.gather(*(client.query(q, when) for q in queries.values()))
    values: Values = {
        key: {(s.labels.get("namespace", ""), s.labels.get("pod", "")): s.value for s in samples}
        for key, samples in zip(queries, answers, strict=True)
    }
    names = [pods.get(w.key, set()) | set(w.live_pods) for w in workloads]
    result = [_usage_of(w, n, values) for w, n in zip(workloads, names, strict=True)]
    without = [m for n, u in zip(names, result, strict=True) if (m := _missing(n, u))]
    return Metrics(
        window=window,
        evaluated_at=when,
        workloads=result,
        coverage=Coverage(
            workloads=len(result), with_data=len(result) - len(without), without=without
        ),
        total_workloads=len(result),
    )


def _usage_of(workload: Workload, names: set[str], values: Values) -> WorkloadUsage:
    """One workload's usage from its pods' values (``names``: in Prometheus or live)."""
    found_in = _values_of(values, workload.namespace, names)
    cpu_request = sum(c.cpu_request or 0.0 for c in workload.containers) or None
    memory_request = sum(c.memory_request or 0.0 for c in workload.containers) or None
    cpu_avg, memory_avg = _mean(found_in(("cpu", "avg"))), _mean(found_in(("memory", "avg")))
    return WorkloadUsage(
        target=f"{workload.kind}/{workload.namespace}/{workload.name}",
        pods=sum(1 for p in names if (workload.namespace, p) in values[("cpu", "avg")]),
        cpu_avg_cores=_round(cpu_avg),
        cpu_peak_cores=_round(max(found_in(("cpu", "max")), default=None)),
        memory_avg_bytes=_round(memory_avg),
        memory_peak_bytes=_round(max(found_in(("memory", "max")), default=None)),
        cpu_request_cores=cpu_request,
        memory_request_bytes=memory_request,
        cpu_utilization=_ratio(cpu_avg, cpu_request),
        memory_utilization=_ratio(memory_avg, memory_request),
    )


def _missing(names: set[str], found: WorkloadUsage) -> MissingData | None:
    """Why a workload has no usage, or None when Prometheus has some of its pods
    (``names``: its pods in Prometheus or live)."""
    if found.pods:
        return None
    if not names:
        return MissingData(target=found.target, kind="no_pods", reason=NO_PODS_TEXT)
    return MissingData(
        target=found.target,
        kind="no_metrics",
        reason="Prometheus has no CPU usage of its pods in the window",
    )


def _values_of(
    values: Values, namespace: str, pods: set[str]
) -> Callable[[tuple[str, str]], list[float]]:
    def found(key: tuple[str, str]) -> list[float]:
        return [values[key][(namespace, p)] for p in pods if (namespace, p) in values[key]]

    return found


def _mean(found: list[float]) -> float | None:
    return fmean(found) if found else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _ratio(value: float | None, request: float | None) -> float | None:
    if value is None or not request:
        return None
    return round(value / request, 4)
