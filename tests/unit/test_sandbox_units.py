"""Sandbox building blocks that need no running process of their own."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from sizeguard.errors import CommandError
from sizeguard.sandbox import estate, lifecycle, metrics, processes
from sizeguard.sandbox.pki import CertificateAuthority
from sizeguard.sandbox.state import SandboxState


def test_default_estate_covers_what_the_tests_need() -> None:
    e = estate.build()
    kinds = {w.kind for w in e.workloads}
    assert kinds == {"Deployment", "StatefulSet", "DaemonSet"}
    assert any(w.hpa for w in e.workloads)
    assert any(w.labels.get(estate.CRITICAL_LABEL) == "true" for w in e.workloads)
    assert any(w.init_containers for w in e.workloads)
    assert any(w.replace_pod_midway for w in e.workloads)
    assert any(w.history_minutes is not None and w.history_minutes * 1 < 100 for w in e.workloads)
    assert any(c.usage.oom_at for w in e.workloads for c in w.containers)
    assert {"shop-prod", "shop-staging", "data", "tools"} <= set(e.namespaces)
    assert e.namespaces["shop-prod"]["environment"] == "production"


def test_estate_grows_to_the_requested_size_deterministically() -> None:
    a = estate.build(workloads=2000, seed=7)
    b = estate.build(workloads=2000, seed=7)
    assert len(a.workloads) == 2000
    assert a == b
    assert len({w.key for w in a.workloads}) == 2000
    assert sum(int(n.cpu) for n in a.nodes) * 1000 > 2000 * 50


def test_estate_refuses_fewer_workloads_than_the_default() -> None:
    with pytest.raises(ValueError, match="at least"):
        estate.build(workloads=3)


def test_manifests_have_the_shapes_the_apiserver_expects() -> None:
    for spec in estate.build().workloads:
        body = estate.manifest(spec)
        assert body["apiVersion"] == "apps/v1" and body["kind"] == spec.kind
        pod = body["spec"]["template"]["spec"]
        assert [c["name"] for c in pod["containers"]] == [c.name for c in spec.containers]
        assert ("replicas" in body["spec"]) == (spec.kind != "DaemonSet")
        hpa = estate.hpa_manifest(spec)
        assert (hpa is not None) == (spec.hpa is not None)


def _pod(**changes: object) -> metrics.PodHistory:
    spec = estate.default_workloads()[0]
    base = metrics.PodHistory(
        namespace="shop-prod",
        pod="web-abc-1",
        node="node-000",
        owner_kind="ReplicaSet",
        owner_name="web-abc",
        containers=spec.containers,
        start=1_700_000_000 - 86_400,
        end=1_700_000_000,
        deployment="web",
    )
    return metrics.PodHistory(**{**base.__dict__, **changes})


def test_generated_usage_is_deterministic_and_shaped() -> None:
    pod = _pod()
    container = pod.containers[0]
    rates = metrics.cpu_rates(42, pod, container, 60)
    assert rates == metrics.cpu_rates(42, pod, container, 60)
    assert rates != metrics.cpu_rates(43, pod, container, 60)
    assert len(rates) == 1441 and min(rates) > 0
    counter = metrics.cpu_counter(rates, 60)
    assert counter[0] == 0 and all(b >= a for a, b in itertools.pairwise(counter))
    assert counter[-1] == pytest.approx(sum(rates[:-1]) * 60, rel=1e-6)
    # Diurnal: the busiest hour is well above the quietest.
    hourly = [sum(rates[i : i + 60]) for i in range(0, 1440, 60)]
    assert max(hourly) > 1.3 * min(hourly)


def test_memory_drops_on_oom_kills_at_the_limit() -> None:
    redis = next(w for w in estate.default_workloads() if w.name == "redis")
    pod = _pod(
        containers=redis.containers, start=1_700_000_000 - 14 * 86_400, oom_container="redis"
    )
    history = metrics.memory_series(42, pod, redis.containers[0], 60)
    limit = redis.containers[0].usage.oom_at
    assert history.oom_kills and max(history.values) == limit
    first = (history.oom_kills[0] - pod.start) // 60
    assert history.values[first + 1] < history.values[first]


def test_openmetrics_output_counts_and_parses(tmp_path: Path) -> None:
    plan = metrics.Plan(pods=[_pod(), _pod(pod="web-abc-2")], step=300)
    expected = metrics.count_series(plan)
    path = tmp_path / "out.om"
    metrics.write(plan, path)
    lines = path.read_text().splitlines()
    assert lines[-1] == "# EOF"
    assert plan.series == expected
    assert plan.samples == len(lines) - 1
    names = {line.split("{", 1)[0] for line in lines[:-1]}
    assert names == {
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "kube_pod_owner",
        "kube_pod_status_phase",
        "kube_replicaset_owner",
        "kube_pod_container_resource_requests",
        "kube_pod_container_resource_limits",
    }


def test_shards_keep_an_owner_together_and_lose_nothing() -> None:
    pods = [_pod(pod=f"p{i}", owner_name=f"rs{i % 3}") for i in range(9)]
    shards = metrics.shard(metrics.Plan(pods=pods), 2)
    assert sorted(p.pod for s in shards for p in s.pods) == sorted(p.pod for p in pods)
    owners = [{p.owner_name for p in s.pods} for s in shards]
    assert not owners[0] & owners[1]


def test_certificates_chain_to_the_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    pair = ca.issue("server", "kube-apiserver", server_names=("127.0.0.1", "localhost"))
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    public = ca.cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    cert.verify_directly_issued_by(ca.cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert oct(pair.key.stat().st_mode & 0o777) == "0o600"


def test_stop_only_signals_the_process_it_started(tmp_path: Path) -> None:
    component = processes.start("sleeper", ["sleep", "30"], tmp_path / "sleep.log")
    assert processes.is_running(component)
    impostor = processes.Component("sleeper", component.pid, component.start_time + 1, "", [])
    assert not processes.stop(impostor)  # same pid, other start time: not ours
    assert processes.is_running(component)
    assert processes.stop(component)
    assert not processes.is_running(component)


def test_wait_until_reports_a_process_that_exits(tmp_path: Path) -> None:
    component = processes.start("false", ["sh", "-c", "echo boom; exit 3"], tmp_path / "f.log")
    with pytest.raises(processes.StartError, match="exited"):
        processes.wait_until(component, lambda: False, timeout=10, what="ready")
    assert "boom" in processes.log_tail(component)


def test_state_round_trips(tmp_path: Path) -> None:
    state = SandboxState(tmp_path, urls={"opa": "http://127.0.0.1:1"}, info={"seed": 1})
    state.components.append(processes.Component("x", 1, 2, "log", ["a"], "u"))
    state.save()
    loaded = SandboxState.load(tmp_path)
    assert loaded is not None
    assert loaded.components == state.components and loaded.urls == state.urls


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sizeguard.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )


def test_unknown_flag_is_a_one_line_error(tmp_path: Path) -> None:
    result = _cli("sandbox", "up", "--dir", str(tmp_path / "x"), "--frobnicate")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--frobnicate" in result.stderr
    assert not (tmp_path / "x").exists()


def test_missing_tool_is_a_one_line_error_and_starts_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "no-tools"
    (empty / "bin").mkdir(parents=True)
    target = tmp_path / "sb"
    result = _cli("sandbox", "up", "--dir", str(target), SIZEGUARD_TOOLS=str(empty))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "missing tool(s)" in result.stderr and "scripts/install-tools" in result.stderr
    assert not target.exists()


def test_a_non_empty_foreign_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(CommandError, match="not empty"):
        lifecycle._prepare_directory(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_status_and_down_without_a_sandbox_say_so(tmp_path: Path) -> None:
    for action in ("status", "down"):
        result = _cli("sandbox", action, "--dir", str(tmp_path))
        assert result.returncode == 1
        assert "no sandbox" in result.stderr


def test_wait_times_out_with_the_reason(tmp_path: Path) -> None:
    component = processes.start("sleeper", ["sleep", "5"], tmp_path / "s.log")
    try:
        start = time.monotonic()
        with pytest.raises(processes.StartError, match="not ready"):
            processes.wait_until(component, lambda: False, timeout=0.5, what="ready")
        assert time.monotonic() - start < 5
    finally:
        processes.stop(component)


def test_the_env_file_names_the_key_the_webhook_trusts(tmp_path: Path) -> None:
    keys = tmp_path / "with space" / "keys"
    webhook = {"keys": str(keys), "url": "https://127.0.0.1:1/validate"}
    text = lifecycle.env_file(tmp_path / "kubeconfig", "http://p", "http://o", webhook)
    done = subprocess.run(
        ["bash", "-c", '. /dev/stdin; printf "%s\\n" "$KUBECONFIG" "$SIZEGUARD_KEY_DIR"'],
        input=text,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.splitlines() == [str(tmp_path / "kubeconfig"), str(keys)]
    without = lifecycle.env_file(tmp_path / "kubeconfig", "http://p", "http://o", None)
    assert "SIZEGUARD_KEY_DIR" not in without and "OPA_URL=http://o" in without
