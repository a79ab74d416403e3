"""The sandbox is a real control plane with real history: check what it claims."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sizeguard.sandbox import estate, lifecycle, metrics
from sizeguard.sandbox.state import SandboxState

from .conftest import Sandbox
from .helpers import eventually, processes_in, prom_query


def _pods(box: Sandbox, namespace: str, app: str) -> list[dict]:  # type: ignore[type-arg]
    return [
        p
        for p in box.kube.list_pods(f"app.kubernetes.io/name={app}")
        if p["metadata"]["namespace"] == namespace and not p["metadata"].get("deletionTimestamp")
    ]


def test_deployment_gets_replicaset_and_pods_from_the_controller_manager(sandbox: Sandbox) -> None:
    kube = sandbox.kube
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "it-rollout"}})
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": "it-rollout"},
        }
    )
    spec = estate.WorkloadSpec(
        "Deployment",
        "it-rollout",
        "hello",
        (estate.ContainerSpec("hello", "50m", "64Mi"),),
        replicas=2,
    )
    created = kube.create(estate.manifest(spec))
    assert created is not None
    uid = created["metadata"]["uid"]

    def replicaset() -> dict | None:  # type: ignore[type-arg]
        body = kube.http.get("/apis/apps/v1/namespaces/it-rollout/replicasets").json()
        owned = [
            rs
            for rs in body["items"]
            if any(o["uid"] == uid for o in rs["metadata"].get("ownerReferences", []))
        ]
        return owned[0] if owned else None

    rs = eventually(replicaset, what="the Deployment's ReplicaSet")
    pods = eventually(
        lambda: (lambda ps: ps if len(ps) == 2 else None)(_pods(sandbox, "it-rollout", "hello")),
        what="two pods",
    )
    for pod in pods:
        owner = pod["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "ReplicaSet"
        assert owner["uid"] == rs["metadata"]["uid"]
        assert pod["metadata"]["name"].startswith(rs["metadata"]["name"] + "-")
    if sandbox.state.info.get("kwok"):
        # kwok + kube-scheduler: the rollout completes as in a real cluster.
        def available() -> bool:
            body = kube.http.get("/apis/apps/v1/namespaces/it-rollout/deployments/hello").json()
            return body.get("status", {}).get("availableReplicas") == 2

        eventually(available, what="the rollout to complete")


def _history(box: Sandbox, namespace: str, pod_name: str, workload: str) -> metrics.PodHistory:
    info = box.state.info
    the_estate = estate.build(workloads=None, seed=info["seed"])
    spec = next(w for w in the_estate.workloads if (w.namespace, w.name) == (namespace, workload))
    history = info["history"]
    return metrics.PodHistory(
        namespace=namespace,
        pod=pod_name,
        node="",
        owner_kind="",
        owner_name="",
        containers=spec.containers,
        start=history["start"],
        end=history["end"],
    )


def _quantile(values: list[float], q: float) -> float:
    """Prometheus' quantile: linear interpolation between closest ranks."""
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    weight = rank - low
    return ordered[low] * (1 - weight) + ordered[high] * weight


def test_quantiles_in_prometheus_match_what_the_generator_intended(sandbox: Sandbox) -> None:
    pod = sorted(p["metadata"]["name"] for p in _pods(sandbox, "shop-prod", "web"))[0]
    history = _history(sandbox, "shop-prod", pod, "web")
    container = history.containers[0]
    step = sandbox.state.info["history"]["step"]
    end = history.end
    selector = f'{{namespace="shop-prod",pod="{pod}",container="web"}}'

    counter = metrics.cpu_counter(
        metrics.cpu_rates(history_seed(sandbox), history, container, step), step
    )
    got = float(
        prom_query(
            sandbox.prometheus_url,
            f"quantile_over_time(0.95, container_cpu_usage_seconds_total{selector}[14d])",
            at=end,
        )[0]["value"][1]
    )
    assert got == pytest.approx(_quantile(counter, 0.95), rel=0.01)

    # The rate the generator meant: p95 of per-minute CPU usage, through rate() itself.
    rates = metrics.cpu_rates(history_seed(sandbox), history, container, step)
    two_minute = [(a + b) / 2 for a, b in itertools.pairwise(rates)]
    got_rate = float(
        prom_query(
            sandbox.prometheus_url,
            "quantile_over_time(0.95, "
            f"rate(container_cpu_usage_seconds_total{selector}[{2 * step}s])[13d:{step}s])",
            at=end,
        )[0]["value"][1]
    )
    assert got_rate == pytest.approx(_quantile(two_minute[-13 * 1440 :], 0.95), rel=0.01)

    memory = metrics.memory_series(history_seed(sandbox), history, container, step).values
    got_memory = float(
        prom_query(
            sandbox.prometheus_url,
            f"max_over_time(container_memory_working_set_bytes{selector}[14d])",
            at=end,
        )[0]["value"][1]
    )
    assert got_memory == max(memory)


def history_seed(box: Sandbox) -> int:
    seed: int = box.state.info["seed"]
    return seed


def test_oldest_sample_is_about_fourteen_days_old(sandbox: Sandbox) -> None:
    pod = sorted(p["metadata"]["name"] for p in _pods(sandbox, "shop-prod", "checkout"))[0]
    result = prom_query(
        sandbox.prometheus_url,
        f'container_memory_working_set_bytes{{namespace="shop-prod",pod="{pod}"}}[15d]',
    )
    samples = result[0]["values"]
    age_days = (time.time() - float(samples[0][0])) / 86_400
    assert 13.9 < age_days < 14.1
    assert len(samples) == 14 * 1440 + 1


def test_kube_state_metrics_name_the_real_pods_and_replicasets(sandbox: Sandbox) -> None:
    pods = _pods(sandbox, "shop-prod", "worker")
    # The history ends when the sandbox came up; an instant query looks back only 5 minutes,
    # and the suite may reach this test later than that.
    owners = prom_query(
        sandbox.prometheus_url, 'last_over_time(kube_pod_owner{namespace="shop-prod"}[1d])'
    )
    by_pod = {r["metric"]["pod"]: r["metric"] for r in owners}
    for pod in pods:
        meta = by_pod[pod["metadata"]["name"]]
        assert meta["owner_kind"] == "ReplicaSet"
        assert meta["owner_name"] == pod["metadata"]["ownerReferences"][0]["name"]
    rs_owner = prom_query(
        sandbox.prometheus_url,
        'last_over_time(kube_replicaset_owner{namespace="shop-prod",owner_name="worker"}[1d])',
    )
    assert {r["metric"]["replicaset"] for r in rs_owner} == {
        p["metadata"]["ownerReferences"][0]["name"] for p in pods
    }
    requests = prom_query(
        sandbox.prometheus_url,
        "last_over_time(kube_pod_container_resource_requests"
        '{namespace="shop-prod",container="worker",resource="cpu"}[1d])',
    )
    assert {float(r["value"][1]) for r in requests} == {0.2}
    oom = prom_query(
        sandbox.prometheus_url,
        'last_over_time(kube_pod_container_status_last_terminated_reason{reason="OOMKilled"}[14d])',
    )
    assert [(r["metric"]["namespace"], r["metric"]["container"]) for r in oom] == [
        ("data", "redis")
    ]


def test_a_pod_replaced_midway_has_two_halves_of_history(sandbox: Sandbox) -> None:
    replaced = sandbox.state.info["replaced_pods"]
    assert len(replaced) == 1
    ((old, new),) = replaced.items()
    namespace, old_pod = old.split("/")
    new_pod = new.split("/")[1]
    live = {p["metadata"]["name"] for p in _pods(sandbox, namespace, "api")}
    assert new_pod in live and old_pod not in live
    history = sandbox.state.info["history"]
    for pod, lo, hi in (
        (old_pod, history["start"], history["middle"]),
        (new_pod, history["middle"], history["end"]),
    ):
        result = prom_query(
            sandbox.prometheus_url,
            f'container_cpu_usage_seconds_total{{namespace="{namespace}",pod="{pod}",container="api"}}[15d]',
            at=history["end"],
        )
        stamps = [float(v[0]) for v in result[0]["values"]]
        assert lo <= stamps[0] <= lo + 60 and hi - 60 <= stamps[-1] <= hi


def test_opa_answers_health(sandbox: Sandbox) -> None:
    assert httpx.get(f"{sandbox.opa_url}/health", timeout=5).status_code == 200


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sizeguard.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def test_status_reports_every_component_healthy(sandbox: Sandbox) -> None:
    result = _cli("sandbox", "status", "--dir", str(sandbox.directory))
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "opa", "prometheus"):
        assert name in result.stdout


def test_a_dir_in_use_is_refused_and_the_running_sandbox_is_untouched(sandbox: Sandbox) -> None:
    result = _cli("sandbox", "up", "--dir", str(sandbox.directory))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "in use by a running sandbox" in result.stderr
    assert _cli("sandbox", "status", "--dir", str(sandbox.directory)).returncode == 0


def test_up_then_down_leaves_no_process_behind(tmp_path: Path, sandbox: Sandbox) -> None:
    directory = tmp_path / "second"
    lifecycle.up(lifecycle.UpOptions(directory=directory, history_days=1), report=print)
    state = SandboxState.load(directory)
    assert state is not None and len(state.running()) >= 5
    assert processes_in(directory)
    lifecycle.down(directory, report=print)
    assert processes_in(directory) == []
    assert all(proc_gone(c.pid) for c in state.components)
    assert _cli("sandbox", "down", "--dir", str(directory)).returncode == 0  # nothing to do
    assert _cli("sandbox", "status", "--dir", str(directory)).returncode == 1  # all stopped
    # A directory whose sandbox is down can be brought up again.
    lifecycle.up(lifecycle.UpOptions(directory=directory, history_days=1), report=print)
    lifecycle.down(directory, report=print)
    assert processes_in(directory) == []
    # ... and the session's sandbox is still there.
    assert _cli("sandbox", "status", "--dir", str(sandbox.directory)).returncode == 0


def proc_gone(pid: int) -> bool:
    try:
        state = (Path(f"/proc/{pid}/stat")).read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_a_component_that_fails_to_start_leaves_nothing_running(tmp_path: Path) -> None:
    policies = tmp_path / "broken-policies"
    policies.mkdir()
    (policies / "broken.rego").write_text("package broken\n\nthis is not rego {\n")
    directory = tmp_path / "failing"
    result = _cli(
        "sandbox", "up", "--dir", str(directory), "--policies", str(policies), "--history-days", "1"
    )
    assert result.returncode == 1
    assert "opa" in result.stderr and "log" in result.stderr
    assert processes_in(directory) == []
    left = SandboxState.load(directory)
    assert left is None or left.running() == []


def test_every_address_the_apiserver_can_dial_is_loopback(sandbox: Sandbox) -> None:
    """Service ClusterIPs, node and pod IPs are all in 127.0.0.0/8: a webhook Service, a
    'kubelet' or a pod the apiserver dials can never be off this machine."""
    import ipaddress

    def loopback(address: str) -> bool:
        return ipaddress.ip_address(address).is_loopback

    services = sandbox.kube.http.get("/api/v1/services").json()["items"]
    assert services and all(loopback(s["spec"]["clusterIP"]) for s in services)
    nodes = sandbox.kube.http.get("/api/v1/nodes").json()["items"]
    node_ips = [
        a["address"]
        for n in nodes
        for a in n["status"].get("addresses", [])
        if a["type"].endswith("IP")
    ]
    assert all(loopback(ip) for ip in node_ips)
    pods = sandbox.kube.list_pods(f"{estate.ESTATE_LABEL}=true")
    pod_ips = [p["status"]["podIP"] for p in pods if p.get("status", {}).get("podIP")]
    assert all(loopback(ip) for ip in pod_ips)
