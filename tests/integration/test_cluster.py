"""sizeguard.cluster against the real sandbox: kube-apiserver with sizeguard's webhook and OPA.

Mutating tests use workloads they create in their own namespace; shop-prod is only read.
"""

from __future__ import annotations

import contextlib
import copy
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sizeguard.approvals import APPROVAL_ANNOTATION, SigningKey, mint_for_change
from sizeguard.changes import (
    ChangeSet,
    ContainerResources,
    GuardedState,
    ResourceChange,
    guarded_state,
    target_of,
)
from sizeguard.cluster import Cluster, ClusterError, patch_for, pod_requests
from sizeguard.quantities import cpu_millicores, memory_bytes

from .conftest import Sandbox
from .test_webhook import (
    container,
    create,
    ensure_namespace,
    path_of,
    signing_key,
    webhook_info,
    workload_manifest,
)

NAMESPACE = "cluster-it"
MI = 1024**2


@pytest.fixture(scope="module")
def cluster(sandbox: Sandbox) -> Iterator[Cluster]:
    with Cluster.from_kubeconfig(sandbox.kubeconfig, timeout=20) as connection:
        yield connection


@pytest.fixture(scope="module")
def key(sandbox: Sandbox) -> SigningKey:
    return signing_key(sandbox)


@pytest.fixture(scope="module")
def ns(sandbox: Sandbox) -> str:
    webhook_info(sandbox)
    ensure_namespace(sandbox, NAMESPACE, {"environment": "test"})
    return NAMESPACE


@pytest.fixture
def deploy(sandbox: Sandbox, ns: str) -> Iterator[dict[str, Any]]:
    """A fresh Deployment: containers app (100m) and sidecar (100m), init container setup."""
    name = "c-" + uuid.uuid4().hex[:8]
    manifest = workload_manifest("Deployment", ns, name, init=True)
    manifest["spec"]["template"]["spec"]["containers"].append(container("sidecar", "100m"))
    yield create(sandbox, manifest)
    sandbox.kube.http.delete(path_of("Deployment", ns, name))


def change_to(live: dict[str, Any], after: GuardedState, reason: str = "test") -> ResourceChange:
    return ResourceChange(
        target=target_of(live),
        before=guarded_state(live),
        after=after,
        reason=reason,
        source="test_cluster",
    )


def approve(key: SigningKey, live: dict[str, Any], change: ResourceChange) -> str:
    return mint_for_change(
        key,
        change,
        change_set_id=ChangeSet(changes=[change]).id,
        op="apply",
        subject="it@example.com",
        resource_version=live["metadata"]["resourceVersion"],
    )


def resized(live: dict[str, Any]) -> GuardedState:
    """replicas 2 -> 3; app: CPU 100m -> 150m, memory limit unset -> 128Mi; sidecar: CPU
    request 100m -> 120m; setup: memory request 64Mi -> 48Mi."""
    before = guarded_state(live)
    containers = dict(before.containers)
    containers["app"] = containers["app"].model_copy(
        update={"cpu_request": 150, "memory_limit": 128 * MI}
    )
    containers["sidecar"] = containers["sidecar"].model_copy(update={"cpu_request": 120})
    init = {"setup": before.init_containers["setup"].model_copy(update={"memory_request": 48 * MI})}
    # Listed in the other order than in the pod spec: the patch must not reorder containers.
    containers = dict(reversed(list(containers.items())))
    return before.model_copy(
        update={"replicas": 3, "containers": containers, "init_containers": init}
    )


def without_approval(body: dict[str, Any]) -> dict[str, Any]:
    stripped = copy.deepcopy(body)
    del stripped["metadata"]
    return stripped


# --- reading -----------------------------------------------------------------------------------


def expected_capacity(sandbox: Sandbox) -> tuple[int, int, int, int, int]:
    nodes = sandbox.kube.http.get("/api/v1/nodes").json()["items"]
    pods = [
        pod
        for pod in sandbox.kube.http.get("/api/v1/pods").json()["items"]
        if pod["status"].get("phase") not in ("Succeeded", "Failed")
    ]
    return (
        len(nodes),
        sum(cpu_millicores(n["status"]["allocatable"]["cpu"]) for n in nodes),
        sum(memory_bytes(n["status"]["allocatable"]["memory"]) for n in nodes),
        sum(pod_requests(p, "cpu", cpu_millicores) for p in pods),
        sum(pod_requests(p, "memory", memory_bytes) for p in pods),
    )


def test_cluster_state_sees_the_estate(sandbox: Sandbox, cluster: Cluster) -> None:
    for _ in range(10):  # other tests may create pods meanwhile: retry until a quiet moment
        before = expected_capacity(sandbox)
        state = cluster.cluster_state()
        if before == expected_capacity(sandbox):
            break
    capacity = state.capacity
    assert capacity.problems == []
    assert capacity.nodes == 4
    assert capacity.allocatable is not None and capacity.requested is not None
    assert (
        capacity.nodes,
        capacity.allocatable.cpu,
        capacity.allocatable.memory,
        capacity.requested.cpu,
        capacity.requested.memory,
    ) == before
    assert capacity.requested.cpu > 0 and capacity.requested.memory > 0

    live = sandbox.kube.http.get(path_of("Deployment", "shop-prod", "web")).json()
    web = state.workload("Deployment", "shop-prod", "web")
    assert web is not None
    assert web.target == target_of(live)
    assert web.hpa == "web"
    assert web.error is None
    assert web.replicas == guarded_state(live).replicas
    assert web.ready_replicas == live["status"].get("readyReplicas", 0)
    assert web.containers == guarded_state(live).containers
    assert web.labels == live["metadata"].get("labels", {})
    hpas = {h.ref: h for h in state.hpas}
    hpa = hpas["HorizontalPodAutoscaler/shop-prod/web"]
    live_hpa = sandbox.kube.http.get(path_of("HorizontalPodAutoscaler", "shop-prod", "web")).json()
    assert (hpa.min_replicas, hpa.max_replicas) == (
        live_hpa["spec"].get("minReplicas", 1),
        live_hpa["spec"]["maxReplicas"],
    )
    assert hpa.scale_target == "apps/v1/Deployment/web"
    assert hpa.target_cpu_utilization_percentage == 70
    daemonset = state.workload("DaemonSet", "monitoring", "node-exporter")
    assert daemonset is not None and daemonset.replicas is None
    assert {w.target.kind for w in state.workloads} >= {"Deployment", "StatefulSet", "DaemonSet"}

    context = state.policy_context()
    assert context["capacity"] == {
        "nodes": 4,
        "allocatable": {"cpu": before[1], "memory": before[2]},
        "requested": {"cpu": before[3], "memory": before[4]},
    }
    assert context["namespaces"]["shop-prod"]["labels"]["environment"] == "production"
    assert context["labels"]["Deployment/shop-prod/web"] == web.labels


def test_cluster_state_of_some_namespaces(cluster: Cluster) -> None:
    state = cluster.cluster_state(["shop-prod", "monitoring"])
    assert {w.target.namespace for w in state.workloads} == {"shop-prod", "monitoring"}
    assert set(state.namespaces) == {"monitoring", "shop-prod"}
    assert [h.ref for h in state.hpas] == ["HorizontalPodAutoscaler/shop-prod/web"]
    assert state.capacity.nodes == 4  # capacity is the whole cluster's
    with pytest.raises(ClusterError) as caught:
        cluster.cluster_state(["no-such-namespace"])
    assert caught.value.kind == "not_found"
    assert "Namespace no-such-namespace" in caught.value.message


@pytest.mark.parametrize(
    ("kind", "namespace", "name"),
    [
        ("Deployment", "shop-prod", "web"),
        ("StatefulSet", "shop-prod", "postgres"),
        ("DaemonSet", "monitoring", "node-exporter"),
        ("HorizontalPodAutoscaler", "shop-prod", "web"),
    ],
)
def test_read_live_returns_the_object_as_a_plain_dict(
    sandbox: Sandbox, cluster: Cluster, kind: str, namespace: str, name: str
) -> None:
    obj = cluster.read_live(kind, namespace, name)
    raw = sandbox.kube.http.get(path_of(kind, namespace, name)).json()
    assert obj["kind"] == kind and obj["apiVersion"] == raw["apiVersion"]
    assert obj["metadata"]["uid"] == raw["metadata"]["uid"]
    assert guarded_state(obj) == guarded_state(raw)
    again = cluster.read_object(target_of(obj))
    assert guarded_state(again) == guarded_state(obj)


def test_a_missing_object_is_not_found(cluster: Cluster, ns: str) -> None:
    with pytest.raises(ClusterError) as caught:
        cluster.read_live("Deployment", ns, "does-not-exist")
    assert caught.value.kind == "not_found"
    assert caught.value.status == 404
    assert f"Deployment {ns}/does-not-exist" in caught.value.message
    assert "does not exist" in caught.value.message


def test_a_recreated_object_is_not_the_target(cluster: Cluster, deploy: dict[str, Any]) -> None:
    target = target_of(deploy).model_copy(update={"uid": str(uuid.uuid4())})
    with pytest.raises(ClusterError) as caught:
        cluster.read_object(target)
    assert caught.value.kind == "not_found"
    assert "deleted and recreated" in caught.value.message


def test_unsupported_kinds_are_refused(cluster: Cluster) -> None:
    with pytest.raises(ClusterError) as caught:
        cluster.read_live("Pod", "shop-prod", "web")
    assert caught.value.kind == "unsupported"


# --- patching ----------------------------------------------------------------------------------


def test_an_approved_patch_is_admitted_and_sets_after_exactly(
    cluster: Cluster, key: SigningKey, deploy: dict[str, Any]
) -> None:
    live = cluster.read_object(target_of(deploy))
    change = change_to(live, resized(live))
    token = approve(key, live, change)
    body = patch_for(change, token, live=live)

    # A dry run with the approval goes through the webhook (verified, admitted) and stores
    # nothing, so the same approval still works afterwards.
    preview = cluster.apply_patch(change.target, body, dry_run=True)
    assert preview.dry_run
    assert guarded_state(preview.object) == change.after
    assert guarded_state(cluster.read_object(change.target)) == change.before

    result = cluster.apply_patch(change.target, body)
    assert guarded_state(result.object) == change.after
    now = cluster.read_object(change.target)
    assert guarded_state(now) == change.after
    assert now["metadata"]["annotations"][APPROVAL_ANNOTATION] == token
    # nothing else changed: container order, images, other fields
    pod_spec = now["spec"]["template"]["spec"]
    assert [c["name"] for c in pod_spec["containers"]] == ["app", "sidecar"]
    assert [c["image"] for c in pod_spec["containers"]] == [
        c["image"] for c in live["spec"]["template"]["spec"]["containers"]
    ]
    assert now["spec"]["selector"] == live["spec"]["selector"]
    assert now["metadata"]["labels"] == live["metadata"]["labels"]
    assert "sizeguard" in {entry["manager"] for entry in now["metadata"]["managedFields"]}


def test_unsetting_values_is_exact(
    cluster: Cluster, key: SigningKey, deploy: dict[str, Any]
) -> None:
    live = cluster.read_object(target_of(deploy))
    before = guarded_state(live)
    unset = ContainerResources(
        cpu_request=None, cpu_limit=None, memory_request=None, memory_limit=None
    )
    after = before.model_copy(
        update={"init_containers": {"setup": unset}}
    )  # the init container's requests go
    change = change_to(live, after)
    cluster.apply_patch(change.target, patch_for(change, approve(key, live, change), live=live))
    assert guarded_state(cluster.read_object(change.target)) == after


def test_the_same_patch_without_an_approval_is_rejected_with_the_webhooks_message(
    cluster: Cluster, deploy: dict[str, Any]
) -> None:
    live = cluster.read_object(target_of(deploy))
    change = change_to(live, resized(live))
    body = without_approval(patch_for(change, "unused", live=live))
    with pytest.raises(ClusterError) as caught:
        cluster.apply_patch(change.target, body)
    error = caught.value
    assert error.kind == "denied"
    assert error.status == 403
    assert 'admission webhook "workloads.sizeguard.io" denied the request: sizeguard:' in (
        error.message
    )
    assert "needs an approval" in error.message
    assert f"Deployment {change.target.namespace}/{change.target.name}" in error.message
    assert guarded_state(cluster.read_object(change.target)) == change.before


def test_a_patch_with_an_invalid_approval_is_rejected_and_the_token_is_not_echoed(
    cluster: Cluster, key: SigningKey, deploy: dict[str, Any]
) -> None:
    live = cluster.read_object(target_of(deploy))
    change = change_to(live, resized(live))
    token = approve(key, live, change)
    other = change_to(live, live_with_replicas(live, 4))
    with pytest.raises(ClusterError) as caught:
        # approved for another `to`
        cluster.apply_patch(other.target, patch_for(other, token, live=live))
    assert caught.value.kind == "denied"
    assert "to_mismatch" in caught.value.message
    assert token not in caught.value.message
    assert token.split(".")[1] not in caught.value.message


def live_with_replicas(live: dict[str, Any], replicas: int) -> GuardedState:
    return guarded_state(live).model_copy(update={"replicas": replicas})


def test_a_dry_run_without_approval_returns_the_webhooks_warning_and_changes_nothing(
    cluster: Cluster, deploy: dict[str, Any]
) -> None:
    live = cluster.read_object(target_of(deploy))
    change = change_to(live, resized(live))
    body = without_approval(patch_for(change, "unused", live=live))
    result = cluster.apply_patch(change.target, body, dry_run=True)
    assert result.dry_run
    assert any(
        w.startswith("sizeguard: dry run admitted") and "needs an approval" in w
        for w in result.warnings
    ), result.warnings
    assert guarded_state(result.object) == change.after  # what would be stored
    now = cluster.read_object(change.target)
    assert guarded_state(now) == change.before
    assert now["metadata"]["generation"] == live["metadata"]["generation"]


def test_a_dry_run_beyond_policy_is_denied(cluster: Cluster, deploy: dict[str, Any]) -> None:
    live = cluster.read_object(target_of(deploy))
    before = guarded_state(live)
    app = before.containers["app"].model_copy(update={"cpu_request": 100 * 100})  # +9900%
    change = change_to(
        live, before.model_copy(update={"containers": {**before.containers, "app": app}})
    )
    with pytest.raises(ClusterError) as caught:
        cluster.apply_patch(
            change.target, without_approval(patch_for(change, "x", live=live)), dry_run=True
        )
    assert caught.value.kind == "denied"
    assert "sizeguard:" in caught.value.message


def test_an_approved_hpa_patch_is_admitted(
    sandbox: Sandbox, cluster: Cluster, key: SigningKey, ns: str
) -> None:
    name = "h-" + uuid.uuid4().hex[:8]
    manifest = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            # a target that does not exist: the HPA controller has nothing to scale
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "absent"},
            "minReplicas": 2,
            "maxReplicas": 6,
        },
    }
    created = create(sandbox, manifest)
    try:
        live = cluster.read_object(target_of(created))
        after = guarded_state(live).model_copy(update={"min_replicas": 3, "max_replicas": 8})
        change = change_to(live, after)
        body = patch_for(change, approve(key, live, change))
        with pytest.raises(ClusterError) as caught:
            cluster.apply_patch(change.target, without_approval(body))
        assert caught.value.kind == "denied"
        cluster.apply_patch(change.target, body)
        assert guarded_state(cluster.read_object(change.target)) == after
        state = cluster.cluster_state([ns])
        assert f"HorizontalPodAutoscaler/{ns}/{name}" in {h.ref for h in state.hpas}
    finally:
        sandbox.kube.http.delete(path_of("HorizontalPodAutoscaler", ns, name))


# --- errors ------------------------------------------------------------------------------------


def test_patching_a_missing_object_is_not_found(
    cluster: Cluster, key: SigningKey, deploy: dict[str, Any]
) -> None:
    live = cluster.read_object(target_of(deploy))
    change = change_to(live, live_with_replicas(live, 3))
    gone = change.target.model_copy(update={"name": "gone-" + uuid.uuid4().hex[:6]})
    with pytest.raises(ClusterError) as caught:
        cluster.apply_patch(gone, patch_for(change, approve(key, live, change), live=live))
    assert caught.value.kind == "not_found"
    assert gone.name in caught.value.message


def test_an_invalid_object_is_invalid(cluster: Cluster, deploy: dict[str, Any]) -> None:
    live = cluster.read_object(target_of(deploy))
    before = guarded_state(live)
    app = before.containers["app"].model_copy(update={"cpu_limit": 50})  # below the 100m request
    change = change_to(
        live, before.model_copy(update={"containers": {**before.containers, "app": app}})
    )
    with pytest.raises(ClusterError) as caught:
        cluster.apply_patch(change.target, patch_for(change, "x.y.z", live=live))
    assert caught.value.kind == "invalid"
    assert caught.value.status == 422
    assert f"Deployment {change.target.namespace}/{change.target.name}" in caught.value.message
    assert "must be less than or equal to cpu limit" in caught.value.message


def test_a_stale_resource_version_is_a_conflict(cluster: Cluster, deploy: dict[str, Any]) -> None:
    live = cluster.read_object(target_of(deploy))
    body = without_approval(patch_for(change_to(live, live_with_replicas(live, 3)), "x", live=live))
    body["metadata"] = {"resourceVersion": "1"}
    with pytest.raises(ClusterError) as caught:
        cluster.apply_patch(target_of(live), body, dry_run=True)
    assert caught.value.kind == "conflict"
    assert caught.value.status == 409
    assert "read it again" in caught.value.message


def test_rbac_refusal_is_forbidden(sandbox: Sandbox) -> None:
    with Cluster.from_kubeconfig(sandbox.kubeconfig) as nobody:
        nobody.api.default_headers["Impersonate-User"] = "nobody@example.com"
        with pytest.raises(ClusterError) as caught:
            nobody.read_live("Deployment", "shop-prod", "web")
    assert caught.value.kind == "forbidden"
    assert caught.value.status == 403
    assert "RBAC" in caught.value.message and "Deployment shop-prod/web" in caught.value.message


def _kubeconfig_for(sandbox: Sandbox, server: str, directory: Path) -> Path:
    config = yaml.safe_load(sandbox.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = server
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_connection_refused_is_unreachable(sandbox: Sandbox, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = _kubeconfig_for(sandbox, f"https://127.0.0.1:{port}", tmp_path)
    with Cluster.from_kubeconfig(config, timeout=3) as dead, pytest.raises(ClusterError) as caught:
        dead.read_live("Deployment", "shop-prod", "web")
    assert caught.value.kind == "unreachable"
    assert "connection refused" in caught.value.message
    assert f"127.0.0.1:{port}" in caught.value.message


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        for connection in held:
            connection.close()
        server.close()


def test_no_answer_is_a_timeout(sandbox: Sandbox, tmp_path: Path, deploy: dict[str, Any]) -> None:
    with silent_server() as port:
        config = _kubeconfig_for(sandbox, f"https://127.0.0.1:{port}", tmp_path)
        with Cluster.from_kubeconfig(config, timeout=1) as slow:
            with pytest.raises(ClusterError) as caught:
                slow.read_live("Deployment", "shop-prod", "web")
            assert caught.value.kind == "timeout"
            live = deploy
            change = change_to(live, live_with_replicas(live, 3))
            with pytest.raises(ClusterError) as patched:
                slow.apply_patch(change.target, patch_for(change, "a.b.c", live=live))
            assert patched.value.kind == "timeout"
    assert "did not answer in time" in caught.value.message


def test_a_broken_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ClusterError) as caught:
        Cluster.from_kubeconfig(missing)
    assert caught.value.kind == "config"
    assert str(missing) in caught.value.message


# --- every footprint field, set and unset, through the real API server -------------------------


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def _set_pod_level(obj: dict[str, Any]) -> None:
    _pod(obj)["resources"] = {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"cpu": "2"}}


def _set_other_resources(obj: dict[str, Any]) -> None:
    resources = _pod(obj)["containers"][0]["resources"]
    resources["requests"]["ephemeral-storage"] = "1Gi"
    resources["requests"]["example.com/foo"] = "2"
    resources["limits"] = {"ephemeral-storage": "2Gi", "example.com/foo": "2"}


def _set_sidecar(obj: dict[str, Any]) -> None:
    _pod(obj)["initContainers"][0]["restartPolicy"] = "Always"


def _set_runtime_class(obj: dict[str, Any]) -> None:
    _pod(obj)["runtimeClassName"] = "sizeguard-test"


def _set_recreate(obj: dict[str, Any]) -> None:
    obj["spec"]["strategy"] = {"type": "Recreate"}


def _set_surge(obj: dict[str, Any]) -> None:
    key = "strategy" if obj["kind"] == "Deployment" else "updateStrategy"
    obj["spec"][key] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0},
    }


def _set_on_delete(obj: dict[str, Any]) -> None:
    obj["spec"]["updateStrategy"] = {"type": "OnDelete"}


def _set_slow_rollout(obj: dict[str, Any]) -> None:
    obj["spec"]["minReadySeconds"] = 3600
    if obj["kind"] == "Deployment":
        obj["spec"]["progressDeadlineSeconds"] = 7200


def _set_grace_and_claims(obj: dict[str, Any]) -> None:
    _pod(obj)["terminationGracePeriodSeconds"] = 600
    _pod(obj)["resourceClaims"] = [
        {"name": "gpu", "resourceClaimTemplateName": "one-gpu"},
        {"name": "shared", "resourceClaimName": "shared-fpga"},
    ]
    _pod(obj)["containers"][0]["resources"]["claims"] = [{"name": "gpu"}, {"name": "shared"}]


FIELDS = {
    "terminationGracePeriodSeconds/resourceClaims": (
        ("Deployment", "DaemonSet"),
        _set_grace_and_claims,
    ),
    "pod-level resources": (("Deployment",), _set_pod_level),
    "other resources": (("Deployment",), _set_other_resources),
    "sidecar": (("Deployment", "StatefulSet"), _set_sidecar),
    "runtimeClassName": (("Deployment",), _set_runtime_class),
    "Recreate": (("Deployment",), _set_recreate),
    "maxSurge/maxUnavailable": (("Deployment", "DaemonSet"), _set_surge),
    "OnDelete": (("DaemonSet",), _set_on_delete),
    "minReadySeconds/progressDeadlineSeconds": (
        ("Deployment", "StatefulSet", "DaemonSet"),
        _set_slow_rollout,
    ),
}


def _approved_write(cluster: Cluster, key: SigningKey, target: Any, wanted: Any) -> Any:
    """An approved, conditional write of ``wanted``'s footprint (as the executor makes it: the
    controllers write status all the time, so a 409 is read again and retried)."""
    for attempt in range(12):
        time.sleep(0.1 * attempt)  # a rollout writes status several times in a row
        live = cluster.read_object(target)
        change = change_to(live, guarded_state(wanted))
        version = live["metadata"]["resourceVersion"]
        body = patch_for(change, approve(key, live, change), live=live, resource_version=version)
        try:
            stored = cluster.apply_patch(change.target, body).object
        except ClusterError as exc:
            if exc.kind == "conflict":
                continue
            raise
        assert guarded_state(stored) == change.after
        now = cluster.read_object(change.target)
        assert guarded_state(now) == change.after
        return now
    raise AssertionError("the object kept changing")


@pytest.mark.parametrize(
    ("field", "kind"), [(f, k) for f, (kinds, _) in FIELDS.items() for k in kinds]
)
def test_each_footprint_field_is_set_and_unset_exactly(
    sandbox: Sandbox, cluster: Cluster, key: SigningKey, ns: str, field: str, kind: str
) -> None:
    name = "f-" + uuid.uuid4().hex[:8]
    created = create(sandbox, workload_manifest(kind, ns, name, init=True))
    try:
        live = cluster.read_object(target_of(created))
        original = copy.deepcopy(live)
        changed = copy.deepcopy(live)
        FIELDS[field][1](changed)
        now = _approved_write(cluster, key, target_of(live), changed)
        assert guarded_state(now) != guarded_state(original)
        back = _approved_write(cluster, key, target_of(live), original)
        assert guarded_state(back) == guarded_state(original)
    finally:
        sandbox.kube.http.delete(path_of(kind, ns, name))


# --- creating and deleting HPAs ----------------------------------------------------------------


def _hpa_creation(ns: str, name: str, max_replicas: int = 4) -> ResourceChange:
    from sizeguard.changes import HPA_API_VERSION, HPA_KIND, Target, hpa_object

    target = Target(api_version=HPA_API_VERSION, kind=HPA_KIND, namespace=ns, name=name, uid=None)
    spec = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "absent"},
        "minReplicas": 1,
        "maxReplicas": max_replicas,
    }
    return ResourceChange(
        target=target,
        before=None,
        after=guarded_state(hpa_object(target, spec)),
        reason="test",
        source="test_cluster",
        create_spec=spec,
    )


def test_an_approved_hpa_create_is_admitted_and_a_second_one_conflicts(
    sandbox: Sandbox, cluster: Cluster, key: SigningKey, ns: str
) -> None:
    from sizeguard.cluster import create_body

    name = "hc-" + uuid.uuid4().hex[:8]
    change = _hpa_creation(ns, name)
    token = mint_for_change(
        key, change, change_set_id=ChangeSet(changes=[change]).id, op="apply", subject="it"
    )
    try:
        dry = cluster.create_hpa(change.target, create_body(change, None), dry_run=True)
        assert dry.dry_run and guarded_state(dry.object) == change.after
        with pytest.raises(ClusterError) as caught:
            cluster.read_live("HorizontalPodAutoscaler", ns, name)
        assert caught.value.kind == "not_found"  # the dry run stored nothing
        made = cluster.create_hpa(change.target, create_body(change, token, labels={"t": "1"}))
        assert guarded_state(made.object) == change.after
        assert made.object["metadata"]["uid"]
        assert made.object["metadata"]["labels"] == {"t": "1"}
        with pytest.raises(ClusterError) as again:
            cluster.create_hpa(change.target, create_body(change, token))
        assert again.value.kind == "conflict"
        assert "already exists" in again.value.message
        assert token not in again.value.message
    finally:
        sandbox.kube.http.delete(path_of("HorizontalPodAutoscaler", ns, name))


def test_a_delete_is_conditional_on_the_uid_and_the_version(
    sandbox: Sandbox, cluster: Cluster, ns: str
) -> None:
    name = "hd-" + uuid.uuid4().hex[:8]
    created = create(sandbox, {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "absent"},
            "maxReplicas": 3,
        },
    })  # fmt: skip
    try:
        target = target_of(created)
        version = created["metadata"]["resourceVersion"]
        for wrong, with_version in (
            (target.model_copy(update={"uid": str(uuid.uuid4())}), version),
            (target, "1"),
        ):
            with pytest.raises(ClusterError) as caught:
                cluster.delete_hpa(wrong, resource_version=with_version, approval_token=None)
            assert caught.value.kind == "conflict", caught.value.message
            assert "precondition" in caught.value.message.lower()
        assert cluster.read_object(target)["metadata"]["uid"] == target.uid
    finally:
        sandbox.kube.http.delete(path_of("HorizontalPodAutoscaler", ns, name))
