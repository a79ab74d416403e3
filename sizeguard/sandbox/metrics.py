"""Synthetic Prometheus history for the sandbox estate.

For every container of every pod (including pods that were replaced during the window) this
writes cAdvisor's ``container_cpu_usage_seconds_total`` and
``container_memory_working_set_bytes`` and the kube-state-metrics series krr relies on, as an
OpenMetrics file that ``promtool tsdb create-blocks-from openmetrics`` turns into TSDB
blocks. The per-minute values are pure functions of (seed, pod, container, time), exposed
here so that tests can compare what Prometheus answers with what was intended.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import random
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from sizeguard.quantities import cpu_millicores, memory_bytes
from sizeguard.sandbox.estate import ContainerSpec, Usage

DAY = 86_400


@dataclass(frozen=True)
class PodHistory:
    """One pod as the metrics see it: its owner chain and when it existed."""

    namespace: str
    pod: str
    node: str
    owner_kind: str  # ReplicaSet | StatefulSet | DaemonSet
    owner_name: str
    containers: tuple[ContainerSpec, ...]
    start: int  # first sample, unix seconds (a multiple of the step)
    end: int  # last sample, inclusive
    deployment: str | None = None  # for ReplicaSet owners
    oom_container: str | None = None


@dataclass
class Plan:
    pods: list[PodHistory]
    step: int = 60
    seed: int = 42
    series: int = 0
    samples: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def _rng(seed: int, *parts: str) -> random.Random:
    digest = hashlib.sha256("\x00".join((str(seed), *parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def timestamps(start: int, end: int, step: int) -> range:
    return range(start, end + 1, step)


def cpu_rates(seed: int, pod: PodHistory, container: ContainerSpec, step: int) -> list[float]:
    """CPU usage in cores, per step, for one container: what the counter's slope will be."""
    usage: Usage = container.usage
    rng = _rng(seed, "cpu", pod.namespace, pod.pod, container.name)
    rates: list[float] = []
    for ts in timestamps(pod.start, pod.end, step):
        hour = (ts % DAY) / 3600.0
        daily = 1.0 + usage.cpu_daily * math.sin(2 * math.pi * (hour - 8.0) / 24.0)
        noise = 1.0 + usage.cpu_noise * rng.gauss(0.0, 1.0)
        rate = usage.cpu_base * daily * noise
        if rng.random() < usage.spike_chance:
            rate *= usage.spike_factor
        rates.append(round(max(rate, usage.cpu_base * 0.01), 6))
    return rates


def cpu_counter(rates: list[float], step: int) -> list[float]:
    """The cumulative counter whose per-step increase is ``rate * step``."""
    total = 0.0
    out: list[float] = []
    for rate in rates:
        out.append(round(total, 6))
        total += rate * step
    return out


@dataclass(frozen=True)
class MemoryHistory:
    values: list[int]
    oom_kills: list[int]  # timestamps of OOM kills


def memory_series(seed: int, pod: PodHistory, container: ContainerSpec, step: int) -> MemoryHistory:
    """Working-set bytes per step: grows, drops at restarts, and at OOM kills if set."""
    usage = container.usage
    rng = _rng(seed, "mem", pod.namespace, pod.pod, container.name)
    restart_every = usage.restart_days * DAY * rng.uniform(0.8, 1.2)
    since_restart = rng.uniform(0.0, restart_every)
    values: list[int] = []
    kills: list[int] = []
    for ts in timestamps(pod.start, pod.end, step):
        grown = usage.mem_base + usage.mem_growth_per_day * since_restart / DAY
        value = int(grown * (1.0 + 0.02 * rng.gauss(0.0, 1.0)))
        if usage.oom_at is not None and value >= usage.oom_at:
            kills.append(ts)
            value = usage.oom_at
            since_restart = -step
        values.append(max(value, 1))
        since_restart += step
        if since_restart >= restart_every:
            since_restart = 0.0
    return MemoryHistory(values, kills)


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _write_series(out: TextIO, prefix: str, values: Iterable[object], stamps: range) -> int:
    out.writelines(f"{prefix} {v} {t}\n" for v, t in zip(values, stamps, strict=True))
    return len(stamps)


def _write_constant(out: TextIO, prefix: str, value: object, stamps: range) -> int:
    tail = f"{prefix} {value} "
    out.writelines(f"{tail}{t}\n" for t in stamps)
    return len(stamps)


def _resources(container: ContainerSpec) -> Iterator[tuple[str, str, str, float]]:
    """(kind, resource, unit, value) for each request and limit that is set."""
    for kind, cpu, mem in (
        ("requests", container.cpu_request, container.memory_request),
        ("limits", container.cpu_limit, container.memory_limit),
    ):
        if cpu is not None:
            yield kind, "cpu", "core", cpu_millicores(cpu) / 1000
        if mem is not None:
            yield kind, "memory", "byte", float(memory_bytes(mem))


def count_series(plan: Plan) -> int:
    """How many series ``write`` will emit (to size the step before writing)."""
    total = 0
    replicasets: set[tuple[str, str]] = set()
    for pod in plan.pods:
        total += 2  # kube_pod_owner, kube_pod_status_phase
        for container in pod.containers:
            total += 2 + sum(1 for _ in _resources(container))
        if pod.oom_container:
            total += 1
        if pod.deployment:
            replicasets.add((pod.namespace, pod.owner_name))
    return total + len(replicasets)


def write(plan: Plan, path: Path) -> Plan:
    """Write the plan's history as OpenMetrics; returns the plan with its counts filled in."""
    step, seed = plan.step, plan.seed
    series = samples = 0
    with path.open("w", buffering=1 << 20) as out:
        # cAdvisor, one metric family at a time.
        for pod in plan.pods:
            stamps = timestamps(pod.start, pod.end, step)
            for container in pod.containers:
                labels = _labels(
                    (("container", container.name), ("namespace", pod.namespace), ("pod", pod.pod))
                )
                counter = cpu_counter(cpu_rates(seed, pod, container, step), step)
                samples += _write_series(
                    out, f"container_cpu_usage_seconds_total{labels}", counter, stamps
                )
                series += 1
        for pod in plan.pods:
            stamps = timestamps(pod.start, pod.end, step)
            for container in pod.containers:
                labels = _labels(
                    (("container", container.name), ("namespace", pod.namespace), ("pod", pod.pod))
                )
                memory = memory_series(seed, pod, container, step)
                samples += _write_series(
                    out, f"container_memory_working_set_bytes{labels}", memory.values, stamps
                )
                series += 1
                if pod.oom_container == container.name and memory.oom_kills:
                    plan.extra[f"{pod.namespace}/{pod.pod}/{container.name}"] = memory.oom_kills[0]
        # kube-state-metrics.
        ksm: tuple[tuple[str, str], ...] = ()
        for pod in plan.pods:
            stamps = timestamps(pod.start, pod.end, step)
            owner = _labels(
                (
                    *ksm,
                    ("namespace", pod.namespace),
                    ("owner_is_controller", "true"),
                    ("owner_kind", pod.owner_kind),
                    ("owner_name", pod.owner_name),
                    ("pod", pod.pod),
                )
            )
            samples += _write_constant(out, f"kube_pod_owner{owner}", 1, stamps)
        for pod in plan.pods:
            stamps = timestamps(pod.start, pod.end, step)
            phase = _labels(
                (*ksm, ("namespace", pod.namespace), ("phase", "Running"), ("pod", pod.pod))
            )
            samples += _write_constant(out, f"kube_pod_status_phase{phase}", 1, stamps)
        series += 2 * len(plan.pods)
        seen: dict[tuple[str, str], tuple[int, int, str]] = {}
        for pod in plan.pods:
            if pod.deployment:
                key = (pod.namespace, pod.owner_name)
                first, last, _ = seen.get(key, (pod.start, pod.end, pod.deployment))
                seen[key] = (min(first, pod.start), max(last, pod.end), pod.deployment)
        for (namespace, replicaset), (first, last, deployment) in sorted(seen.items()):
            labels = _labels(
                (
                    *ksm,
                    ("namespace", namespace),
                    ("owner_is_controller", "true"),
                    ("owner_kind", "Deployment"),
                    ("owner_name", deployment),
                    ("replicaset", replicaset),
                )
            )
            samples += _write_constant(
                out, f"kube_replicaset_owner{labels}", 1, timestamps(first, last, step)
            )
            series += 1
        for family in ("requests", "limits"):
            for pod in plan.pods:
                stamps = timestamps(pod.start, pod.end, step)
                for container in pod.containers:
                    for kind, resource, unit, value in _resources(container):
                        if kind != family:
                            continue
                        labels = _labels(
                            (
                                *ksm,
                                ("container", container.name),
                                ("namespace", pod.namespace),
                                ("node", pod.node),
                                ("pod", pod.pod),
                                ("resource", resource),
                                ("unit", unit),
                            )
                        )
                        samples += _write_constant(
                            out,
                            f"kube_pod_container_resource_{family}{labels}",
                            _num(value),
                            stamps,
                        )
                        series += 1
        for pod in plan.pods:
            oom_key = f"{pod.namespace}/{pod.pod}/{pod.oom_container}"
            if pod.oom_container is None or oom_key not in plan.extra:
                continue
            first_kill = plan.extra[oom_key]
            labels = _labels(
                (
                    *ksm,
                    ("container", pod.oom_container),
                    ("namespace", pod.namespace),
                    ("pod", pod.pod),
                    ("reason", "OOMKilled"),
                )
            )
            samples += _write_constant(
                out,
                f"kube_pod_container_status_last_terminated_reason{labels}",
                1,
                timestamps(first_kill, pod.end, step),
            )
            series += 1
        out.write("# EOF\n")
    plan.series, plan.samples = series, samples
    return plan


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def shard(plan: Plan, count: int) -> list[Plan]:
    """Split a plan into ``count`` plans, keeping each owner's pods together."""
    groups: dict[tuple[str, str], list[PodHistory]] = {}
    for pod in plan.pods:
        groups.setdefault((pod.namespace, pod.owner_name), []).append(pod)
    shards: list[list[PodHistory]] = [[] for _ in range(max(1, count))]
    for members in sorted(groups.values(), key=len, reverse=True):
        min(shards, key=len).extend(members)
    return [Plan(pods=p, step=plan.step, seed=plan.seed) for p in shards if p]


def _write_one(args: tuple[Plan, Path]) -> tuple[int, int, dict[str, int]]:
    done = write(*args)
    return done.series, done.samples, done.extra


def write_shards(plan: Plan, directory: Path, count: int) -> list[Path]:
    """Write the plan as ``count`` OpenMetrics files in parallel processes; fills in counts."""
    parts = shard(plan, count)
    paths = [directory / f"history-{i}.om" for i in range(len(parts))]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=len(parts), mp_context=context) as pool:
        results = list(pool.map(_write_one, zip(parts, paths, strict=True)))
    plan.series = sum(r[0] for r in results)
    plan.samples = sum(r[1] for r in results)
    for _, _, extra in results:
        plan.extra.update(extra)
    return paths
