"""Recommendations from the sandbox's real Prometheus equal what the generated data implies.

The expected values are computed here, independently of sizeguard's query plan: from the
generator's per-minute values (``sizeguard.sandbox.metrics``) and a re-implementation of the
PromQL semantics involved (subquery alignment, ``rate()``'s extrapolation, the 5-minute
lookback, ``quantile`` interpolation), then krr's formulas and rounding.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sizeguard import recommend
from sizeguard.prometheus import PrometheusClient, PrometheusError
from sizeguard.recommend import Scan, Severity, collection
from sizeguard.recommend.collection import Collected
from sizeguard.sandbox import estate, metrics
from sizeguard.workloads import Workload, WorkloadReader

from .conftest import Sandbox

MI = 1024**2
STEP = 75  # krr's default 1.25-minute step
WINDOW = 14 * 86_400
LOOKBACK = 300


# --- the estate as the generator made it ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Truth:
    pods: dict[tuple[str, str], list[metrics.PodHistory]]  # (namespace, workload) -> pods
    seed: int
    step: int
    at: int


@pytest.fixture(scope="module")
def truth(sandbox: Sandbox) -> Truth:
    info = sandbox.state.info
    history = info["history"]
    the_estate = estate.build(workloads=info["workloads"], seed=info["seed"])
    specs = {(w.namespace, w.name): w for w in the_estate.workloads}
    step, start, end, middle = history["step"], history["start"], history["end"], history["middle"]
    replaced = {new.split("/")[1]: old.split("/")[1] for old, new in info["replaced_pods"].items()}
    pods: dict[tuple[str, str], list[metrics.PodHistory]] = {}
    for pod in sandbox.kube.list_pods(f"{estate.ESTATE_LABEL}=true"):
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        key = (meta["namespace"], meta["labels"].get("app.kubernetes.io/name", ""))
        spec = specs.get(key)
        if spec is None:  # created by another test: no generated history
            continue
        first = (
            start
            if spec.history_minutes is None
            else end - spec.history_minutes * 60 // step * step
        )
        base = metrics.PodHistory(
            namespace=key[0],
            pod=meta["name"],
            node="",
            owner_kind="",
            owner_name="",
            containers=spec.containers,
            start=first,
            end=end,
        )
        if meta["name"] in replaced:
            pods.setdefault(key, []).append(
                dataclasses.replace(base, pod=replaced[meta["name"]], end=middle)
            )
            base = dataclasses.replace(base, start=middle + step)
        pods.setdefault(key, []).append(base)
    return Truth(pods, info["seed"], step, end)


def _container(pod: metrics.PodHistory, name: str) -> estate.ContainerSpec:
    return next(c for c in pod.containers if c.name == name)


# --- PromQL semantics, re-implemented ------------------------------------------------------


def _subquery_points(at: int) -> range:
    first = -(-(at - WINDOW) // STEP) * STEP
    return range(first, at + 1, STEP)


def _rate(samples: list[tuple[int, float]], t: int, window: int) -> float | None:
    """Prometheus 2.x ``rate(x[window])`` at t over samples in [t - window, t]."""
    inside = samples[
        bisect.bisect_left(samples, (t - window, -math.inf)) : bisect.bisect_right(
            samples, (t, math.inf)
        )
    ]
    if len(inside) < 2:
        return None
    (t0, v0), (t1, v1) = inside[0], inside[-1]
    delta = v1 - v0  # no counter resets in the generated data
    sampled = t1 - t0
    to_start, to_end = t0 - (t - window), t - t1
    if delta > 0 and v0 >= 0:
        to_start = min(to_start, sampled * (v0 / delta))
    average = sampled / (len(inside) - 1)
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    return delta * (interval / sampled) / window


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] * (1 - (rank - low)) + ordered[high] * (rank - low)


def _samples(
    truth: Truth, pod: metrics.PodHistory, name: str, what: str
) -> list[tuple[int, float]]:
    container = _container(pod, name)
    stamps = metrics.timestamps(pod.start, pod.end, truth.step)
    if what == "cpu":
        values: list[float] = metrics.cpu_counter(
            metrics.cpu_rates(truth.seed, pod, container, truth.step), truth.step
        )
    else:
        values = [
            float(v) for v in metrics.memory_series(truth.seed, pod, container, truth.step).values
        ]
    return list(zip(stamps, values, strict=True))


def _lookup(samples: list[tuple[int, float]], t: int) -> float | None:
    """An instant selector at t: the latest sample at or before t, at most 5 minutes old."""
    index = bisect.bisect_right(samples, (t, math.inf)) - 1
    if index < 0 or samples[index][0] < t - LOOKBACK:
        return None
    return samples[index][1]


def expected_cpu_percentile(
    truth: Truth, pod: metrics.PodHistory, name: str, q: float
) -> float | None:
    samples = _samples(truth, pod, name, "cpu")
    rates = [r for t in _subquery_points(truth.at) if (r := _rate(samples, t, STEP)) is not None]
    return _quantile(rates, q) if rates else None


def expected_memory_peak(truth: Truth, pod: metrics.PodHistory, name: str) -> float | None:
    samples = _samples(truth, pod, name, "memory")
    seen = [v for t in _subquery_points(truth.at) if (v := _lookup(samples, t)) is not None]
    return max(seen) if seen else None


def expected_points(truth: Truth, pod: metrics.PodHistory, name: str) -> int:
    samples = _samples(truth, pod, name, "memory")
    return sum(1 for t in _subquery_points(truth.at) if _lookup(samples, t) is not None)


def krr_cpu(value: float) -> float:
    return max(math.ceil(value * 1000) / 1000, 0.010)


def krr_memory(value: float) -> float:
    return max(float(math.ceil(value / MI) * MI), 100.0 * MI)


# --- the scan under test -------------------------------------------------------------------


@pytest.fixture(scope="module")
def workloads(sandbox: Sandbox) -> list[Workload]:
    with WorkloadReader(sandbox.kubeconfig) as reader:
        return reader.workloads()


@pytest.fixture(scope="module")
def collected(sandbox: Sandbox, truth: Truth) -> Iterator[tuple[Collected, int]]:
    settings = recommend.settings_for("simple", use_oomkill_data=True)

    async def go() -> tuple[Collected, int]:
        async with PrometheusClient(sandbox.prometheus_url) as client:
            data = await recommend.collect(client, settings, None, at=truth.at)
            return data, client.queries

    yield asyncio.run(go())


def _scans(
    workloads: list[Workload], collected: tuple[Collected, int], **overrides: object
) -> dict[tuple[str, str, str], Scan]:
    settings = recommend.settings_for("simple", **overrides)
    scans, _ = recommend.build_scans(workloads, collected[0], settings)
    return {(s.object.namespace, s.object.name, s.object.container): s for s in scans}


def _values(scan: Scan) -> tuple[object, object, object, object]:
    rec = scan.recommended
    return (
        rec.requests["cpu"].value,
        rec.limits["cpu"].value,
        rec.requests["memory"].value,
        rec.limits["memory"].value,
    )


def _expected(truth: Truth, namespace: str, name: str, container: str) -> tuple[float, float]:
    pods = truth.pods[(namespace, name)]
    cpu = max(
        v for p in pods if (v := expected_cpu_percentile(truth, p, container, 0.95)) is not None
    )
    memory = max(v for p in pods if (v := expected_memory_peak(truth, p, container)) is not None)
    return cpu, memory


# --- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "name", "container"),
    [
        ("shop-prod", "checkout", "checkout"),  # over-provisioned
        ("shop-prod", "api", "api"),  # one pod replaced midway: both pods count
        ("shop-prod", "api", "envoy"),
        ("tools", "ci-runner", "runner"),
        ("monitoring", "node-exporter", "node-exporter"),  # DaemonSet
    ],
)
def test_simple_equals_the_generated_data(
    truth: Truth,
    workloads: list[Workload],
    collected: tuple[Collected, int],
    namespace: str,
    name: str,
    container: str,
) -> None:
    cpu, memory = _expected(truth, namespace, name, container)
    scan = _scans(workloads, collected)[(namespace, name, container)]
    assert _values(scan) == (
        krr_cpu(cpu),
        None,
        krr_memory(memory * 1.15),
        krr_memory(memory * 1.15),
    )
    assert scan.recommended.info == {"cpu": None, "memory": None}


def test_the_replaced_pod_is_included_and_marked_deleted(
    truth: Truth, workloads: list[Workload], collected: tuple[Collected, int], sandbox: Sandbox
) -> None:
    ((old, new),) = sandbox.state.info["replaced_pods"].items()
    scan = _scans(workloads, collected)[("shop-prod", "api", "api")]
    pods = {p.name: p.deleted for p in scan.object.pods}
    assert pods[old.split("/")[1]] is True and pods[new.split("/")[1]] is False
    # The recommendation differs from what the live pods alone would give when the old pod
    # was the busiest; either way it is the max over both halves.
    halves = [
        expected_cpu_percentile(truth, p, "api", 0.95) for p in truth.pods[("shop-prod", "api")]
    ]
    assert len(halves) == 3
    assert scan.recommended.requests["cpu"].value == krr_cpu(
        max(h for h in halves if h is not None)
    )


def test_oom_killed_container_gets_the_oom_adjustment_only_when_asked(
    truth: Truth, workloads: list[Workload], collected: tuple[Collected, int]
) -> None:
    key = ("data", "redis", "redis")
    _, memory = _expected(truth, *key)
    plain = _scans(workloads, collected)[key]
    assert plain.recommended.requests["memory"].value == krr_memory(memory * 1.15)
    assert plain.recommended.info["memory"] is None
    with_oom = _scans(workloads, collected, use_oomkill_data=True)[key]
    limit = 256 * MI  # the limit it was OOM-killed at
    assert with_oom.recommended.requests["memory"].value == krr_memory(
        max(memory * 1.15, limit * 1.25)
    )
    assert (
        with_oom.recommended.limits["memory"].value == with_oom.recommended.requests["memory"].value
    )
    assert with_oom.recommended.info["memory"] == "OOMKill detected"


def test_hpa_cpu_is_unknown_unless_allowed(
    truth: Truth, workloads: list[Workload], collected: tuple[Collected, int]
) -> None:
    key = ("shop-prod", "web", "web")
    cpu, memory = _expected(truth, *key)
    blocked = _scans(workloads, collected)[key]
    assert blocked.recommended.requests["cpu"].value == "?"
    assert blocked.recommended.requests["cpu"].severity is Severity.UNKNOWN
    assert blocked.recommended.info["cpu"] == "HPA detected"
    # The HPA scales on CPU only: memory is still recommended.
    assert blocked.recommended.requests["memory"].value == krr_memory(memory * 1.15)
    allowed = _scans(workloads, collected, allow_hpa=True)[key]
    assert allowed.recommended.requests["cpu"].value == krr_cpu(cpu)


def test_too_little_history_is_unknown(
    truth: Truth, workloads: list[Workload], collected: tuple[Collected, int]
) -> None:
    (pod,) = truth.pods[("data", "etl")]
    points = expected_points(truth, pod, "etl")
    assert 0 < points < 100
    scan = _scans(workloads, collected)[("data", "etl", "etl")]
    assert _values(scan) == ("?", "?", "?", "?")
    assert scan.recommended.info == {"cpu": "Not enough data", "memory": "Not enough data"}
    # With a lower bar, the same data gives numbers.
    lowered = _scans(workloads, collected, points_required=points)[("data", "etl", "etl")]
    assert isinstance(lowered.recommended.requests["cpu"].value, float)
    assert (
        _scans(workloads, collected, points_required=points + 1)[("data", "etl", "etl")]
        .recommended.requests["cpu"]
        .value
        == "?"
    )


def test_query_plan_is_batched_not_per_container(
    workloads: list[Workload], collected: tuple[Collected, int]
) -> None:
    containers = sum(len(w.containers) for w in workloads)
    _, queries = collected
    # 2 discovery queries, the series index, one query per metric for the single batch
    # (5 with OOM data, 1 mean).
    assert queries == 2 + 1 + 6
    assert queries < containers


def test_simple_limit_pools_the_samples_of_all_pods(
    sandbox: Sandbox, truth: Truth, workloads: list[Workload]
) -> None:
    """simple-limit reads the whole range (split under the 11,000-points limit) and pools it."""
    key = ("shop-prod", "api", "api")
    settings = recommend.settings_for("simple-limit")
    selected = [w for w in workloads if (w.namespace, w.name) == key[:2]]

    async def go() -> recommend.ScanResult:
        async with PrometheusClient(sandbox.prometheus_url) as client:
            return await recommend.scan(
                client, selected, settings, namespaces=["shop-prod"], at=truth.at
            )

    result = asyncio.run(go())
    scan = next(s for s in result.scans if s.object.container == "api")
    end = truth.at // 60 * 60
    pooled: list[float] = []
    for pod in truth.pods[key[:2]]:
        samples = _samples(truth, pod, "api", "cpu")
        for t in range(end - WINDOW, end + 1, STEP):
            if (r := _rate(samples, t, STEP)) is not None:
                pooled.append(r)
    # numpy's default percentile is the same linear interpolation as PromQL's quantile.
    assert scan.recommended.requests["cpu"].value == krr_cpu(_quantile(pooled, 0.66))
    assert scan.recommended.limits["cpu"].value == krr_cpu(_quantile(pooled, 0.96))
    assert result.errors == []


def test_prometheus_refuses_too_many_points_and_the_client_says_so(
    sandbox: Sandbox, truth: Truth
) -> None:
    async def go() -> None:
        async with PrometheusClient(sandbox.prometheus_url, retries=0) as client:
            await client._request(
                "/api/v1/query_range",
                {"query": "up", "start": str(truth.at - 20_000), "end": str(truth.at), "step": "1"},
                "up",
            )

    with pytest.raises(PrometheusError) as caught:
        asyncio.run(go())
    assert caught.value.kind == "too_many_points"
    assert "11,000" in str(caught.value) or "11000" in str(caught.value)


def test_prometheus_rejects_bad_promql_as_bad_query(sandbox: Sandbox) -> None:
    async def go() -> None:
        async with PrometheusClient(sandbox.prometheus_url, retries=0) as client:
            await client.query("rate(up[", 0)

    with pytest.raises(PrometheusError) as caught:
        asyncio.run(go())
    assert caught.value.kind == "bad_query"
    assert "parse error" in str(caught.value)


def test_scan_command_prints_krr_json(sandbox: Sandbox, truth: Truth, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KUBECONFIG": str(sandbox.kubeconfig),
        "PROMETHEUS_URL": sandbox.prometheus_url,
        "OPA_URL": sandbox.opa_url,
    }
    out = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sizeguard.cli",
            "scan",
            "--namespace",
            "shop-prod",
            "--format",
            "json",
            "--at",
            str(truth.at),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert {s["object"]["namespace"] for s in report["scans"]} == {"shop-prod"}
    checkout = next(s for s in report["scans"] if s["object"]["name"] == "checkout")
    cpu, _ = _expected(truth, "shop-prod", "checkout", "checkout")
    assert checkout["recommended"]["requests"]["cpu"] == {
        "value": krr_cpu(cpu),
        "severity": "CRITICAL",
    }
    assert checkout["recommended"]["limits"]["cpu"]["value"] is None
    assert checkout["severity"] == "CRITICAL"
    assert report["strategy"]["name"] == "simple"
    assert report["strategy"]["settings"]["history_duration"] == 336
    assert isinstance(report["score"], int)
    assert report["sizeguard"]["cost"]["savings_monthly"] > 0


def test_replicas_for_the_hpa_workload_are_hpa_bounds(
    workloads: list[Workload], collected: tuple[Collected, int]
) -> None:
    floors = {w.key: recommend.Floor(2, "two") for w in workloads if w.replicas is not None}
    settings = recommend.settings_for("simple")
    _, replicas = recommend.build_scans(workloads, collected[0], settings, floors=floors)
    by_name = {(r.namespace, r.name): r for r in replicas}
    web = by_name[("shop-prod", "web")]
    assert web.recommended_replicas is None
    assert web.hpa_min_replicas is not None and web.hpa_min_replicas[0] == 3
    assert web.hpa_max_replicas is not None and web.hpa_max_replicas[0] == 10
    assert web.target_utilization == 0.7  # the HPA's own target
    # Over-provisioned checkout: its request comes down, its replicas stay (one plan; see
    # test_plan_sandbox.py for the whole estate).
    assert by_name[("shop-prod", "checkout")].recommended_replicas == 2
    # No advice where CPU is unknown (too little history), and none without floors.
    assert ("data", "etl") not in by_name
    assert recommend.build_scans(workloads, collected[0], settings)[1] == []


def test_krrs_fold_and_the_plain_form_agree_on_single_series(
    sandbox: Sandbox,
    truth: Truth,
    collected: tuple[Collected, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prometheus gives the same values with and without `max by` when a group is one series."""

    async def everything_folded(*args: object, **kwargs: object) -> set[str]:
        return {p.pod for pods in truth.pods.values() for p in pods}

    monkeypatch.setattr(collection, "pods_with_several_series", everything_folded)
    settings = recommend.settings_for("simple", use_oomkill_data=True)

    async def go() -> Collected:
        async with PrometheusClient(sandbox.prometheus_url) as client:
            return await recommend.collect(client, settings, None, at=truth.at)

    folded = asyncio.run(go())
    plain = collected[0]
    assert folded.values.keys() == plain.values.keys()
    for metric, values in plain.values.items():
        assert folded.values[metric] == values, metric
