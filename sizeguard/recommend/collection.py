"""The query plan: which PromQL queries a scan runs, in which batches, and the per-pod
values they collect. Bad data becomes an error per namespace, never a crash."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sizeguard.prometheus import PrometheusClient, PrometheusError, format_duration
from sizeguard.recommend.strategies import SimpleLimitSettings, SimpleSettings, StrategySettings

_REGEX_SPECIAL = set(".^$*+?()[]{}|\\")

BatchProgress = Callable[[int, int], Awaitable[None]]
"""Told ``(done, batches)``: once when the pods are discovered (0 done), then as each batch
of namespaces has all its answers."""


def _promql_regex_literal(value: str) -> str:
    """``value`` matched literally inside a PromQL double-quoted regex string."""
    out = []
    for char in value:
        if char in _REGEX_SPECIAL:
            out.append("\\\\" + char)  # a regex escape, itself escaped for the string
        elif char == '"':
            out.append('\\"')
        else:
            out.append(char)
    return "".join(out)


def _regex_alternation(values: Iterable[str]) -> str:
    return "|".join(_promql_regex_literal(v) for v in sorted(values))


def namespace_matcher(namespaces: Sequence[str] | None) -> str:
    if not namespaces:
        return 'namespace!=""'
    if len(namespaces) == 1:
        return f'namespace="{namespaces[0]}"'
    return f'namespace=~"{_regex_alternation(namespaces)}"'


_BY = "namespace, pod, container, job"


def metric_queries(
    settings: StrategySettings,
    namespaces: Sequence[str] | None,
    with_mean: bool,
    *,
    aggregate: bool = True,
    pods: tuple[bool, Sequence[str]] | None = None,
    oom: bool = True,
) -> dict[str, str]:
    """The instant queries for one batch of namespaces, by what they load.

    krr wraps every selector in ``max by (container, pod, job)``, which folds the several
    series a container can have over time (cAdvisor starts a new one, with a new ``id``, at
    each restart). Where each (namespace, pod, container, job) has a single series the fold
    changes no value, and leaving it out makes the queries several times cheaper: so
    ``aggregate=False`` is used for the pods known to have one series each (``pods=(False,
    names)`` excludes the others, which get ``aggregate=True`` with ``pods=(True, names)``).
    """
    window = format_duration(settings.history_seconds)
    step = f"{settings.step_seconds}s"
    sel = f'{namespace_matcher(namespaces)}, container!="", container!="POD"'
    if pods is not None:
        sel += f', pod{"=~" if pods[0] else "!~"}"{_regex_alternation(pods[1])}"'
    cpu = f"container_cpu_usage_seconds_total{{{sel}}}"
    mem = f"container_memory_working_set_bytes{{{sel}}}"

    def fold(expr: str) -> str:
        return f"max by ({_BY}) ({expr})" if aggregate else expr

    rate = fold(f"rate({cpu}[{step}])")
    queries = {
        "cpu_points": f"count_over_time({fold(cpu)}[{window}:{step}])",
        "memory_max": f"max_over_time({fold(mem)}[{window}:{step}])",
        "memory_points": f"count_over_time({fold(mem)}[{window}:{step}])",
    }
    if isinstance(settings, SimpleSettings):
        q = round(settings.cpu_percentile / 100, 2)  # krr rounds the quantile to 2 decimals
        queries["cpu"] = f"quantile_over_time({q}, {rate}[{window}:{step}])"
    if with_mean:
        queries["cpu_mean"] = f"avg_over_time({rate}[{window}:{step}])"
    if settings.use_oomkill_data and oom:
        ns = namespace_matcher(namespaces)
        queries["oom_limit"] = (
            f"max_over_time(max by ({_BY}) ("
            f'max by ({_BY}) (kube_pod_container_resource_limits{{resource="memory", {ns}}})'
            f" * on (namespace, pod, container, job) group_left (reason) "
            f"max by ({_BY}, reason) (kube_pod_container_status_last_terminated_reason"
            f'{{reason="OOMKilled", {ns}}}))[{window}:{step}])'
        )
    return queries


async def pods_with_several_series(
    client: PrometheusClient, settings: StrategySettings, namespaces: Sequence[str], at: float
) -> set[str]:
    """Pods where some (namespace, pod, container, job) has more than one series in the window.

    One call to the series API (the index only, no samples) for both metrics.
    """
    sel = f'{namespace_matcher(namespaces)}, container!="", container!="POD"'
    series = await client.series(
        [
            f"container_cpu_usage_seconds_total{{{sel}}}",
            f"container_memory_working_set_bytes{{{sel}}}",
        ],
        start=at - settings.history_seconds - _LOOKBACK,
        end=at,
    )
    seen: dict[tuple[str, ...], int] = defaultdict(int)
    for labels in series:
        key = tuple(labels.get(k, "") for k in ("__name__", "namespace", "pod", "container", "job"))
        seen[key] += 1
    return {key[2] for key, count in seen.items() if count > 1}


_LOOKBACK = 300  # Prometheus' default lookback delta, seconds


def _pick_job(items: Iterable[tuple[dict[str, str], Any]]) -> dict[tuple[str, str, str], Any]:
    """One series per (namespace, pod, container): the kubelet job's, else the first by job."""
    grouped: dict[tuple[str, str, str], list[tuple[str, Any]]] = defaultdict(list)
    for labels, value in items:
        key = (labels.get("namespace", ""), labels.get("pod", ""), labels.get("container", ""))
        grouped[key].append((labels.get("job", ""), value))
    chosen: dict[tuple[str, str, str], Any] = {}
    for key, options in grouped.items():
        kubelet = [v for job, v in options if job == "kubelet"]
        chosen[key] = kubelet[0] if len(kubelet) == 1 else sorted(options, key=lambda o: o[0])[0][1]
    return chosen


@dataclass
class Collected:
    """Per-(namespace, pod, container) values by metric, and errors by namespace."""

    values: dict[str, dict[tuple[str, str, str], Any]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    pods: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)  # workload -> pods


async def discover_pods(
    client: PrometheusClient,
    settings: StrategySettings,
    namespaces: Sequence[str] | None,
    at: float,
) -> dict[tuple[str, str, str], set[str]]:
    """Every pod kube-state-metrics saw during the window, by (kind, namespace, workload)."""
    window = format_duration(settings.history_seconds)
    ns = namespace_matcher(namespaces)
    replicasets, owners = await asyncio.gather(
        client.query(
            f'last_over_time(kube_replicaset_owner{{owner_kind="Deployment", {ns}}}[{window}])',
            at,
        ),
        client.query(f"last_over_time(kube_pod_owner{{{ns}}}[{window}])", at),
    )
    deployment_of = {
        (s.labels.get("namespace", ""), s.labels.get("replicaset", "")): s.labels.get(
            "owner_name", ""
        )
        for s in replicasets
    }
    found: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for sample in owners:
        labels = sample.labels
        namespace, kind, name = (
            labels.get("namespace", ""),
            labels.get("owner_kind", ""),
            labels.get("owner_name", ""),
        )
        if kind == "ReplicaSet":
            deployment = deployment_of.get((namespace, name))
            if not deployment:
                continue
            kind, name = "Deployment", deployment
        found[(kind, namespace, name)].add(labels.get("pod", ""))
    return dict(found)


def _batches(pod_counts: dict[str, int], batch_pods: int) -> list[list[str]]:
    """Namespaces grouped so that each group has at most ``batch_pods`` pods (or one ns)."""
    batches: list[list[str]] = []
    current: list[str] = []
    size = 0
    for namespace in sorted(pod_counts):
        count = pod_counts[namespace]
        if current and size + count > batch_pods:
            batches.append(current)
            current, size = [], 0
        current.append(namespace)
        size += count
    if current:
        batches.append(current)
    return batches


async def collect(
    client: PrometheusClient,
    settings: StrategySettings,
    namespaces: Sequence[str] | None,
    *,
    at: float,
    batch_pods: int = 500,
    range_pods: int = 50,
    with_mean: bool = True,
    progress: BatchProgress | None = None,
) -> Collected:
    """Run the query plan: discovery, then one query per metric per batch of namespaces
    (``progress`` is told as each batch completes)."""
    out = Collected()
    out.pods = await discover_pods(client, settings, namespaces, at)
    counts: dict[str, int] = defaultdict(int)
    for (_, namespace, _), pods in out.pods.items():
        counts[namespace] += len(pods)
    for namespace in namespaces or ():
        counts.setdefault(namespace, 0)
    batches = _batches(counts, batch_pods)

    async def run_instant(batch: list[str], metric: str, promql: str) -> None:
        try:
            samples = await client.query(promql, at)
        except PrometheusError as exc:
            for namespace in batch:
                out.errors[namespace].append(f"{metric}: {exc}")
            return
        out.values.setdefault(metric, {}).update(_pick_job((s.labels, s.value) for s in samples))

    async def run_range(namespace: str, pods: list[str], aggregate: bool) -> None:
        # Raw samples are heavy: a few pods at a time, never a whole batch.
        step = settings.step_seconds
        rate = (
            "rate(container_cpu_usage_seconds_total"
            f'{{namespace="{namespace}", pod=~"{_regex_alternation(pods)}", '
            f'container!="", container!="POD"}}[{step}s])'
        )
        if aggregate:
            rate = f"max by ({_BY}) ({rate})"
        end = int(at) // 60 * 60  # krr: now, to the minute
        try:
            series = await client.query_range(rate, end - settings.history_seconds, end, step)
        except PrometheusError as exc:
            out.errors[namespace].append(f"cpu: {exc}")
            return
        out.values.setdefault("cpu_samples", {}).update(
            _pick_job((s.labels, s.values) for s in series)
        )

    async def plan(batch: list[str]) -> None:
        try:
            several = sorted(await pods_with_several_series(client, settings, batch, at))
        except PrometheusError:
            several = None  # unknown: keep krr's folded form everywhere
        if several == []:
            sets = [metric_queries(settings, batch, with_mean, aggregate=False)]
        elif several is None:
            sets = [metric_queries(settings, batch, with_mean)]
        else:
            sets = [
                metric_queries(settings, batch, with_mean, aggregate=False, pods=(False, several)),
                metric_queries(settings, batch, with_mean, pods=(True, several), oom=False),
            ]
        jobs = [run_instant(batch, m, q) for queries in sets for m, q in queries.items()]
        if isinstance(settings, SimpleLimitSettings):
            folded = set(several or ()) if several is not None else None
            for namespace in batch:
                names = sorted(
                    {p for (_, ns, _), owned in out.pods.items() if ns == namespace for p in owned}
                )
                for i in range(0, len(names), range_pods):
                    chunk = names[i : i + range_pods]
                    aggregate = folded is None or any(p in folded for p in chunk)
                    jobs.append(run_range(namespace, chunk, aggregate))
        await asyncio.gather(*jobs)

    finished = 0

    async def planned(batch: list[str]) -> None:
        nonlocal finished
        await plan(batch)
        finished += 1
        if progress is not None:
            await progress(finished, len(batches))

    if progress is not None:
        await progress(0, len(batches))
    await asyncio.gather(*(planned(batch) for batch in batches))
    return out
