"""The cluster enforces approvals: every guarded change goes through the real kube-apiserver,
which calls sizeguard's webhook (registered by ``sandbox up --with-webhook``).

Setup and teardown (creating and deleting the test objects) act as break-glass: the admin
kubeconfig impersonating itself with the group ``sizeguard:break-glass`` (headers
Impersonate-User / Impersonate-Group). The admission policy refuses creating and deleting HPAs
(and workloads and LimitRanges in production namespaces) without an approval or an exempt
principal; the fixtures are not what these tests are about, so they pass as break-glass rather
than weakening the policy. The requests under test are sent as the plain admin. (The full
bypass suite, as a user holding only ``edit``, is tests/integration/test_bypass.py.)"""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from sizeguard.approvals import (
    APPROVAL_ANNOTATION,
    MIN_AGE_TO_DELETE_SECONDS,
    SigningKey,
    generate_signing_key,
    load_signing_key,
    mint_approval,
)
from sizeguard.changes import Target, guarded_state, target_of
from sizeguard.sandbox import tools, webhook_setup
from sizeguard.webhook import registration

from .conftest import Sandbox
from .helpers import eventually

NAMESPACE = "wh-it"
CS = "cs-00000000000000000001"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
T = TypeVar("T")


# --- helpers (also used by test_webhook_failures.py) -------------------------------------------


def webhook_info(box: Sandbox) -> dict[str, str]:
    info = box.state.info.get("webhook")
    if not info:
        pytest.fail(
            "the sandbox runs without the webhook: start it with `sandbox up --with-webhook`"
        )
    return dict(info)


def signing_key(box: Sandbox) -> SigningKey:
    return load_signing_key(Path(webhook_info(box)["keys"]))


# Setup acts as break-glass (see the module docstring): the admin, with its own groups plus
# sizeguard:break-glass.
BREAK_GLASS = [
    ("Impersonate-User", "sizeguard-admin"),
    ("Impersonate-Group", "system:masters"),
    ("Impersonate-Group", "system:authenticated"),
    ("Impersonate-Group", "sizeguard:break-glass"),
]


def kubectl(box: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    binary = tools.find("kubectl")
    assert binary is not None, "kubectl missing: run scripts/install-tools"
    env = {**os.environ, "KUBECONFIG": str(box.kubeconfig)}
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def ensure_namespace(box: Sandbox, name: str, labels: dict[str, str] | None = None) -> None:
    box.kube.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": labels or {}},
        }
    )
    box.kube.create(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": name},
        }
    )


def container(name: str, cpu: str, memory: str = "64Mi") -> dict[str, Any]:
    return {
        "name": name,
        "image": f"registry.example/{name}:1.0",
        "resources": {"requests": {"cpu": cpu, "memory": memory}},
    }


def workload_manifest(
    kind: str,
    namespace: str,
    name: str,
    *,
    cpu: str = "100m",
    replicas: int = 2,
    init: bool = False,
) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name}
    pod_spec: dict[str, Any] = {
        "containers": [container("app", cpu)],
        "tolerations": [
            {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
        ],
        "automountServiceAccountToken": False,
    }
    if init:
        pod_spec["initContainers"] = [container("setup", "50m")]
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
    if kind != "DaemonSet":
        body["spec"]["replicas"] = replicas
    if kind == "StatefulSet":
        body["spec"]["serviceName"] = name
        body["spec"]["podManagementPolicy"] = "Parallel"
    return body


_PLURAL = {
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
}


def path_of(kind: str, namespace: str, name: str) -> str:
    if kind == "HorizontalPodAutoscaler":
        return f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{name}"
    return f"/apis/apps/v1/namespaces/{namespace}/{_PLURAL[kind]}/{name}"


def delete(box: Sandbox, path: str) -> None:
    """Delete (as break-glass) and wait until it is gone."""
    response = box.kube.http.delete(
        path, params={"propagationPolicy": "Background"}, headers=BREAK_GLASS
    )
    assert response.status_code in (200, 202, 404), response.text
    eventually(lambda: box.kube.http.get(path).status_code == 404, what=f"{path} gone")


def create(box: Sandbox, manifest: dict[str, Any]) -> dict[str, Any]:
    """(Re)create an object as break-glass; return it once its controllers left it alone."""
    meta = manifest["metadata"]
    path = path_of(manifest["kind"], meta["namespace"], meta["name"])
    delete(box, path)
    response = box.kube.http.post(path.rsplit("/", 1)[0], json=manifest, headers=BREAK_GLASS)
    assert response.status_code == 201, response.text
    return settled(box, path)


def settled(box: Sandbox, path: str, quiet: float = 0.6, timeout: float = 15.0) -> dict[str, Any]:
    """The object once its resourceVersion held still for ``quiet`` seconds. An update
    approval is bound to one resourceVersion, and the controllers write status right after a
    create: an approval minted before they are done is out of date when it is used."""
    deadline = time.monotonic() + timeout
    last = box.kube.http.get(path).json()
    since = time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.15)
        current = box.kube.http.get(path).json()
        if current["metadata"]["resourceVersion"] != last["metadata"]["resourceVersion"]:
            last, since = current, time.monotonic()
    obj: dict[str, Any] = last
    return obj


def get(box: Sandbox, kind: str, namespace: str, name: str) -> dict[str, Any]:
    response = box.kube.http.get(path_of(kind, namespace, name))
    response.raise_for_status()
    obj: dict[str, Any] = response.json()
    return obj


def with_cpu(obj: dict[str, Any], cpu: str, *, field: str = "containers") -> dict[str, Any]:
    changed = copy.deepcopy(obj)
    changed["spec"]["template"]["spec"][field][0]["resources"]["requests"]["cpu"] = cpu
    return changed


def mint(
    key: SigningKey,
    old: dict[str, Any],
    new: dict[str, Any],
    *,
    target: Target | None = None,
    now: float | None = None,
) -> str:
    """An approval of ``old`` -> ``new``, bound to ``old``'s resourceVersion."""
    return mint_approval(
        key,
        change_set_id=CS,
        op="apply",
        target=target or target_of(old),
        before=guarded_state(old),
        after=guarded_state(new),
        subject="alice@example.com",
        resource_version=old["metadata"]["resourceVersion"],
        now=now,
    )


STALE = "written since the approval"
"""In the message of an approval minted against a version a controller wrote over since."""


def approved_write(
    box: Sandbox,
    kind: str,
    ns: str,
    name: str,
    change: Callable[[dict[str, Any]], dict[str, Any]],
    send: Callable[[str], T],
    text: Callable[[T], str],
    tries: int = 6,
) -> T:
    """Read the object, mint an approval of ``change`` against that version, ``send`` it.
    Again when a controller wrote the object in between (the approval then no longer fits
    its version), as a real client does."""
    for _ in range(tries):
        current = get(box, kind, ns, name)
        result = send(mint(signing_key(box), current, change(current)))
        if STALE not in text(result):
            return result
        time.sleep(0.3)
    raise AssertionError(f"{kind} {ns}/{name} kept being written by others")


def response_text(response: httpx.Response) -> str:
    return response.text


def patch(
    box: Sandbox,
    path: str,
    body: Any,
    content_type: str,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    return box.kube.http.patch(
        path,
        content=body if isinstance(body, str) else json.dumps(body),
        headers={"Content-Type": content_type},
        params=params or {},
    )


def annotation_patch(token: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {APPROVAL_ANNOTATION: token}}}


def cpu_patch(cpu: str, token: str | None = None, field: str = "containers") -> dict[str, Any]:
    name = "app" if field == "containers" else "setup"
    body: dict[str, Any] = {
        "spec": {
            "template": {"spec": {field: [{"name": name, "resources": {"requests": {"cpu": cpu}}}]}}
        }
    }
    if token is not None:
        body.update(annotation_patch(token))
    return body


def put_fresh(
    box: Sandbox,
    path: str,
    edit: Callable[[dict[str, Any]], None],
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """GET, edit, PUT; again on a conflict (the controllers update status meanwhile)."""
    for _ in range(20):
        current = box.kube.http.get(path, headers=headers)
        current.raise_for_status()
        obj = current.json()
        edit(obj)
        response = box.kube.http.put(path, json=obj, headers=headers)
        if response.status_code != 409:
            return response
        time.sleep(0.1)
    raise AssertionError(f"PUT {path}: conflicts kept coming")


def assert_denied(response: httpx.Response, *fragments: str) -> str:
    assert response.status_code == 403, response.text
    message: str = response.json()["message"]
    assert 'admission webhook "' in message and 'sizeguard.io" denied the request: sizeguard:' in (
        message
    ), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def cpu_of(obj: dict[str, Any], field: str = "containers") -> str:
    value: str = obj["spec"]["template"]["spec"][field][0]["resources"]["requests"]["cpu"]
    return value


def webhook_requests(box: Sandbox, url: str | None = None) -> float:
    """Total admission requests the webhook has answered (from its /metrics)."""
    base = (url or webhook_info(box)["url"]).removesuffix("/validate")
    context = webhook_setup.ca_context(Path(box.state.info["ca"]))
    text = httpx.get(f"{base}/metrics", verify=context, timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("sizeguard_webhook_requests_total{")
    )


def owned_replica_sets(box: Sandbox, deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """The ReplicaSets whose controller ownerReference is ``deployment``, oldest revision first."""
    ns, uid = deployment["metadata"]["namespace"], deployment["metadata"]["uid"]
    response = box.kube.http.get(f"/apis/apps/v1/namespaces/{ns}/replicasets")
    response.raise_for_status()
    items: list[dict[str, Any]] = [
        rs
        for rs in response.json()["items"]
        if any(
            ref.get("uid") == uid and ref.get("controller")
            for ref in rs["metadata"].get("ownerReferences", [])
        )
    ]
    revision = "deployment.kubernetes.io/revision"
    return sorted(items, key=lambda rs: int(rs["metadata"]["annotations"].get(revision, "0")))


def webhook_log_size(box: Sandbox) -> int:
    return (box.directory / "logs" / "webhook.log").stat().st_size


def webhook_decisions(box: Sandbox, since: int) -> list[dict[str, Any]]:
    """The decisions the sandbox's webhook logged after byte ``since`` of its log."""
    with (box.directory / "logs" / "webhook.log").open("rb") as log:
        log.seek(since)
        lines = log.read().decode().splitlines()
    decisions = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "admission.decision":
            decisions.append(event)
    return decisions


@pytest.fixture(scope="module")
def ns(sandbox: Sandbox) -> str:
    webhook_info(sandbox)
    ensure_namespace(sandbox, NAMESPACE)
    return NAMESPACE


@pytest.fixture
def deploy(sandbox: Sandbox, ns: str, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A fresh Deployment named after the test (app: 100m CPU, 2 replicas)."""
    name = "d-" + uuid.uuid4().hex[:8]
    yield create(sandbox, workload_manifest("Deployment", ns, name))
    sandbox.kube.http.delete(path_of("Deployment", ns, name), headers=BREAK_GLASS)


def _ref(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]


# --- registration ------------------------------------------------------------------------------


def test_the_registration_is_fail_closed_with_the_real_ca_bundle(sandbox: Sandbox) -> None:
    body = sandbox.kube.http.get(
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/sizeguard"
    ).json()
    ca = Path(sandbox.state.info["ca"]).read_bytes()
    names = [w["name"] for w in body["webhooks"]]
    assert names == [
        "workloads.sizeguard.io",
        "replicasets.sizeguard.io",
        "scale.sizeguard.io",
        "hpa.sizeguard.io",
        "resize.sizeguard.io",
        "limitranges.sizeguard.io",
    ]
    operations = {w["name"].split(".")[0]: w["rules"][0]["operations"] for w in body["webhooks"]}
    lifecycle = ["CREATE", "UPDATE", "DELETE"]
    assert operations == {
        "workloads": lifecycle,
        "replicasets": lifecycle,
        "scale": ["UPDATE"],
        "hpa": lifecycle,
        "resize": ["UPDATE"],
        "limitranges": lifecycle,
    }
    # The API server compiled and kept the generated conditions as they are.
    assert [w["matchConditions"] for w in body["webhooks"]] == [
        spec.entry()["matchConditions"] for spec in registration.WEBHOOKS
    ]
    for hook in body["webhooks"]:
        assert hook["failurePolicy"] == "Fail"
        assert hook["timeoutSeconds"] <= 5
        assert hook["sideEffects"] == "None"
        assert hook["matchPolicy"] == "Equivalent"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca
        assert hook["clientConfig"]["url"] == webhook_info(sandbox)["url"]
        assert hook["namespaceSelector"]["matchExpressions"] == [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", "kube-public", "kube-node-lease"],
            }
        ]
        assert [c["name"] for c in hook["matchConditions"]] == ["footprint-may-change"]


# --- the basic promise -------------------------------------------------------------------------


def test_kubectl_set_resources_without_approval_is_rejected_with_the_webhooks_message(
    sandbox: Sandbox, deploy: dict[str, Any]
) -> None:
    _, ns, name = _ref(deploy)
    result = kubectl(
        sandbox, "-n", ns, "set", "resources", f"deployment/{name}", "--requests=cpu=150m"
    )
    assert result.returncode != 0
    assert 'admission webhook "workloads.sizeguard.io" denied the request' in result.stderr
    assert (
        f"sizeguard: CPU request change on {ns}/{name} needs an approval; request one through "
        "the sizeguard MCP server" in result.stderr
    )
    assert "(change: container app: CPU request: 100m → 150m (+50%))" in result.stderr
    assert cpu_of(get(sandbox, "Deployment", ns, name)) == "100m"


def test_kubectl_patch_without_approval_is_rejected(
    sandbox: Sandbox, deploy: dict[str, Any]
) -> None:
    _, ns, name = _ref(deploy)
    result = kubectl(
        sandbox, "-n", ns, "patch", "deployment", name, "-p", json.dumps(cpu_patch("150m"))
    )
    assert result.returncode != 0
    assert "sizeguard: CPU request change" in result.stderr and "needs an approval" in result.stderr


def test_the_same_change_with_a_valid_approval_is_admitted(
    sandbox: Sandbox, deploy: dict[str, Any]
) -> None:
    _, ns, name = _ref(deploy)
    result = approved_write(
        sandbox,
        "Deployment",
        ns,
        name,
        lambda obj: with_cpu(obj, "150m"),
        lambda token: kubectl(
            sandbox,
            "-n",
            ns,
            "patch",
            "deployment",
            name,
            "-p",
            json.dumps(cpu_patch("150m", token)),
        ),
        lambda done: done.stderr,
    )
    assert result.returncode == 0, result.stderr
    after = get(sandbox, "Deployment", ns, name)
    assert cpu_of(after) == "150m"
    assert after["metadata"]["annotations"][APPROVAL_ANNOTATION]


def test_label_and_image_changes_need_no_approval_and_never_reach_the_webhook(
    sandbox: Sandbox, deploy: dict[str, Any]
) -> None:
    _, ns, name = _ref(deploy)
    eventually(lambda: owned_replica_sets(sandbox, deploy), what="the first ReplicaSet")
    since = webhook_log_size(sandbox)
    assert kubectl(sandbox, "-n", ns, "label", "deployment", name, "team=shop").returncode == 0
    result = kubectl(
        sandbox, "-n", ns, "set", "image", f"deployment/{name}", "app=registry.example/app:2.0"
    )
    assert result.returncode == 0, result.stderr
    assert kubectl(sandbox, "-n", ns, "rollout", "restart", f"deployment/{name}").returncode == 0
    # matchConditions filtered the Deployment's updates out in the API server. What reached
    # the webhook is the deployment controller creating the ReplicaSet of each rollout and
    # scaling its ReplicaSets, all admitted.
    eventually(lambda: len(owned_replica_sets(sandbox, deploy)) == 3, what="two rollouts")
    seen = {
        (d["kind"], d["operation"], d["user"], d["decision"])
        for d in webhook_decisions(sandbox, since)
        if d.get("namespace") == ns and d.get("name", "").startswith(name)
    }
    controller = "system:serviceaccount:kube-system:deployment-controller"
    assert ("ReplicaSet", "CREATE", controller, "allowed") in seen
    assert seen <= {
        ("ReplicaSet", "CREATE", controller, "allowed"),
        ("ReplicaSet", "UPDATE", controller, "allowed"),
    }


# A rollout bound spelled differently: Kubernetes reads "025%" as 25%, and so does the
# contract, but the strategy object differs, so matchConditions send the update.
RESPELLED_SURGE = {"spec": {"strategy": {"rollingUpdate": {"maxSurge": "025%"}}}}


def test_an_update_that_only_respells_the_footprint_reaches_the_webhook_and_is_admitted(
    sandbox: Sandbox, deploy: dict[str, Any]
) -> None:
    _, ns, name = _ref(deploy)
    before = webhook_requests(sandbox)
    # The footprint is unchanged, so the webhook admits it at once.
    response = patch(sandbox, path_of("Deployment", ns, name), RESPELLED_SURGE, STRATEGIC)
    assert response.status_code == 200, response.text
    # (more than one when the API server retried the patch after a conflict)
    assert webhook_requests(sandbox) > before


def test_a_server_side_dry_run_without_approval_is_admitted_with_a_warning(
    sandbox: Sandbox, deploy: dict[str, Any]
) -> None:
    _, ns, name = _ref(deploy)
    result = kubectl(
        sandbox,
        "-n",
        ns,
        "set",
        "resources",
        f"deployment/{name}",
        "--requests=cpu=150m",
        "--dry-run=server",
    )
    assert result.returncode == 0, result.stderr
    assert "Warning: sizeguard: dry run admitted; the real CPU request change" in result.stderr
    assert cpu_of(get(sandbox, "Deployment", ns, name)) == "100m"


def test_a_change_beyond_policy_is_denied_even_with_a_valid_approval(
    sandbox: Sandbox, deploy: dict[str, Any]
) -> None:
    _, ns, name = _ref(deploy)
    response = approved_write(
        sandbox,
        "Deployment",
        ns,
        name,
        lambda obj: with_cpu(obj, "1"),  # +900%
        lambda token: patch(
            sandbox, path_of("Deployment", ns, name), cpu_patch("1", token), STRATEGIC
        ),
        response_text,
    )
    assert_denied(response, "this is denied even with an approval")


# --- bypasses ----------------------------------------------------------------------------------


def _foreign_with_trusted_kid(key: SigningKey) -> SigningKey:
    return SigningKey(kid=key.kid, private_key=generate_signing_key().private_key)


BadToken = Callable[[SigningKey, dict[str, Any], dict[str, Any], dict[str, Any]], str]

BYPASSES: dict[str, tuple[BadToken, str]] = {
    # signed by a key this cluster does not trust
    "forged-unknown-key": (
        lambda key, old, new, other: mint(generate_signing_key(), old, new),
        "unknown_key",
    ),
    # signed by another key while naming the trusted kid
    "forged-signature": (
        lambda key, old, new, other: mint(_foreign_with_trusted_kid(key), old, new),
        "bad_signature",
    ),
    # a valid token whose claims were edited afterwards
    "tampered-claims": (
        lambda key, old, new, other: _tamper(mint(key, old, with_cpu(old, "120m"))),
        "bad_signature",
    ),
    "expired": (lambda key, old, new, other: mint(key, old, new, now=time.time() - 400), "expired"),
    "not-yet-valid": (
        lambda key, old, new, other: mint(key, old, new, now=time.time() + 400),
        "not_yet_valid",
    ),
    "other-object": (
        lambda key, old, new, other: mint(key, other, with_cpu(other, "150m")),
        "wrong_target",
    ),
    "other-uid": (
        lambda key, old, new, other: mint(
            key, old, new, target=target_of(old).model_copy(update={"uid": str(uuid.uuid4())})
        ),
        "wrong_uid",
    ),
    "other-values": (
        lambda key, old, new, other: mint(key, old, with_cpu(old, "140m")),
        "to_mismatch",
    ),
    "garbage": (lambda key, old, new, other: "eyJhbGciOiJub25lIn0.e30.", "malformed"),
}


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["to"]["containers"]["app"]["cpu_request"] = 150
    raw = json.dumps(claims, separators=(",", ":")).encode()
    return ".".join([header, base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), signature])


@pytest.mark.parametrize("case", sorted(BYPASSES))
def test_forged_and_misbound_approvals_are_rejected(
    sandbox: Sandbox, ns: str, deploy: dict[str, Any], case: str
) -> None:
    make_token, code = BYPASSES[case]
    other = create(sandbox, workload_manifest("Deployment", ns, f"other-{case}"))
    _, _, name = _ref(deploy)
    for _ in range(6):  # minted against the version the patch meets (see approved_write)
        current = get(sandbox, "Deployment", ns, name)
        token = make_token(signing_key(sandbox), current, with_cpu(current, "150m"), other)
        path = path_of("Deployment", ns, name)
        response = patch(sandbox, path, cpu_patch("150m", token), STRATEGIC)
        if STALE not in response.text:
            break
    assert_denied(response, f"the approval on {ns}/{name} is not valid ({code})", "approval check:")
    assert cpu_of(get(sandbox, "Deployment", ns, name)) == "100m"


def _apply_cpu(box: Sandbox, kind: str, ns: str, name: str, cpu: str) -> str:
    """Apply an approved CPU request change; returns the approval it carried."""
    path = path_of(kind, ns, name)
    response = approved_write(
        box,
        kind,
        ns,
        name,
        lambda obj: with_cpu(obj, cpu),
        lambda token: patch(box, path, cpu_patch(cpu, token), STRATEGIC),
        response_text,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["metadata"]["annotations"][APPROVAL_ANNOTATION]
    return token


def test_a_replayed_approval_is_rejected(sandbox: Sandbox, deploy: dict[str, Any]) -> None:
    kind, ns, name = _ref(deploy)
    path = path_of(kind, ns, name)
    token = _apply_cpu(sandbox, kind, ns, name, "150m")
    # The approval stays on the object; any further guarded change carrying it is a replay.
    assert_denied(patch(sandbox, path, cpu_patch("200m"), STRATEGIC), "(from_mismatch)")
    assert_denied(patch(sandbox, path, cpu_patch("100m", token), STRATEGIC), "(from_mismatch)")
    # ... also with the token set again explicitly, on the object or on a copy of it.
    twin = create(sandbox, workload_manifest("Deployment", ns, "replay-twin"))
    response = patch(sandbox, path_of(kind, ns, "replay-twin"), cpu_patch("150m", token), STRATEGIC)
    assert_denied(response, "(wrong_target)")
    assert cpu_of(get(sandbox, kind, ns, name)) == "150m"
    assert cpu_of(get(sandbox, kind, ns, twin["metadata"]["name"])) == "100m"


def test_an_approval_replayed_after_a_round_trip_is_rejected(
    sandbox: Sandbox, deploy: dict[str, Any]
) -> None:
    kind, ns, name = _ref(deploy)
    path = path_of(kind, ns, name)
    forth = _apply_cpu(sandbox, kind, ns, name, "150m")
    _apply_cpu(sandbox, kind, ns, name, "100m")
    # Back at 100m within the first approval's lifetime: uid, from and to match again, but
    # the object's resourceVersion has moved on (no webhook remembers anything).
    response = patch(sandbox, path, cpu_patch("150m", forth), STRATEGIC)
    assert_denied(response, "(from_mismatch)", STALE)
    assert cpu_of(get(sandbox, kind, ns, name)) == "100m"


def test_an_hpa_approval_replayed_after_a_round_trip_is_rejected(sandbox: Sandbox, ns: str) -> None:
    # Bound to the HPA's resourceVersion like any other approval (HPAs have no generation).
    create(sandbox, _hpa(ns, "replay-hpa"))
    path = path_of("HorizontalPodAutoscaler", ns, "replay-hpa")
    applied = _set_min_replicas(sandbox, ns, "replay-hpa", 3)
    assert applied.status_code == 200, applied.text
    forth = applied.json()["metadata"]["annotations"][APPROVAL_ANNOTATION]
    assert _set_min_replicas(sandbox, ns, "replay-hpa", 2).status_code == 200
    body = {**annotation_patch(forth), "spec": {"minReplicas": 3}}
    assert_denied(patch(sandbox, path, body, MERGE_PATCH), "(from_mismatch)", STALE)
    assert get(sandbox, "HorizontalPodAutoscaler", ns, "replay-hpa")["spec"]["minReplicas"] == 2


def test_retargeting_an_hpa_is_rejected(sandbox: Sandbox, ns: str) -> None:
    create(sandbox, _hpa(ns, "retarget-hpa"))
    path = path_of("HorizontalPodAutoscaler", ns, "retarget-hpa")
    body = {
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"}}
    }
    assert_denied(patch(sandbox, path, body, MERGE_PATCH))


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_kubectl_scale_is_rejected(sandbox: Sandbox, ns: str, kind: str) -> None:
    obj = create(sandbox, workload_manifest(kind, ns, f"scale-{kind.lower()}"))
    name = obj["metadata"]["name"]
    result = kubectl(sandbox, "-n", ns, "scale", f"{kind.lower()}/{name}", "--replicas=5")
    assert result.returncode != 0
    assert 'admission webhook "scale.sizeguard.io" denied the request' in result.stderr
    assert (
        f"sizeguard: scale requests on {ns}/{name} are denied for sizeguard-admin" in result.stderr
    )
    assert get(sandbox, kind, ns, name)["spec"]["replicas"] == 2
    # The scale subresource through PATCH as well.
    response = patch(
        sandbox, path_of(kind, ns, name) + "/scale", {"spec": {"replicas": 7}}, MERGE_PATCH
    )
    assert_denied(response, "scale requests")


def test_the_hpa_controller_may_scale(sandbox: Sandbox, deploy: dict[str, Any]) -> None:
    kind, ns, name = _ref(deploy)
    # What the HPA controller does: GET and PUT the scale subresource, as its service account.
    as_hpa = {"Impersonate-User": "system:serviceaccount:kube-system:horizontal-pod-autoscaler"}
    scale_path = path_of(kind, ns, name) + "/scale"
    response = put_fresh(sandbox, scale_path, lambda s: s["spec"].update(replicas=3), as_hpa)
    assert response.status_code == 200, response.text
    assert get(sandbox, kind, ns, name)["spec"]["replicas"] == 3
    # The same request as anyone else is denied.
    response = put_fresh(sandbox, scale_path, lambda s: s["spec"].update(replicas=4))
    assert_denied(response, "scale requests")


VARIANTS: dict[str, Callable[[str | None], tuple[Any, str, dict[str, str]]]] = {
    "strategic-merge": lambda token: (cpu_patch("150m", token), STRATEGIC, {}),
    "merge-patch": lambda token: (
        # A merge patch replaces the whole containers list.
        {
            **({"metadata": {"annotations": {APPROVAL_ANNOTATION: token}}} if token else {}),
            "spec": {"template": {"spec": {"containers": [container("app", "150m")]}}},
        },
        MERGE_PATCH,
        {},
    ),
    "json-patch": lambda token: (
        [
            {
                "op": "replace",
                "path": "/spec/template/spec/containers/0/resources/requests/cpu",
                "value": "150m",
            },
            *(
                [
                    {
                        "op": "add",
                        "path": "/metadata/annotations",
                        "value": {APPROVAL_ANNOTATION: token},
                    }
                ]
                if token
                else []
            ),
        ],
        JSON_PATCH,
        {},
    ),
    "server-side-apply": lambda token: (
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"annotations": {APPROVAL_ANNOTATION: token}} if token else {},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": "app", "resources": {"requests": {"cpu": "150m"}}}]
                    }
                }
            },
        },
        APPLY,
        {"fieldManager": "sizeguard-it", "force": "true"},
    ),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_patch_variant_of_the_change_is_rejected_without_approval_and_admitted_with_one(
    sandbox: Sandbox, deploy: dict[str, Any], variant: str
) -> None:
    kind, ns, name = _ref(deploy)
    path = path_of(kind, ns, name)
    body, content_type, params = VARIANTS[variant](None)
    if variant == "server-side-apply":
        body["metadata"] = {"name": name, "namespace": ns}
    assert_denied(patch(sandbox, path, body, content_type, params), "needs an approval")
    assert cpu_of(get(sandbox, kind, ns, name)) == "100m"

    def send(token: str) -> httpx.Response:
        body, content_type, params = VARIANTS[variant](token)
        if variant == "server-side-apply":
            body["metadata"].update({"name": name, "namespace": ns})
        return patch(sandbox, path, body, content_type, params)

    response = approved_write(
        sandbox, kind, ns, name, lambda obj: with_cpu(obj, "150m"), send, response_text
    )
    assert response.status_code == 200, response.text
    assert cpu_of(get(sandbox, kind, ns, name)) == "150m"


def test_a_full_update_put_without_approval_is_rejected(
    sandbox: Sandbox, deploy: dict[str, Any]
) -> None:
    kind, ns, name = _ref(deploy)

    def edit(obj: dict[str, Any]) -> None:
        obj["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "150m"

    assert_denied(put_fresh(sandbox, path_of(kind, ns, name), edit), "needs an approval")


def test_replicas_through_the_main_resource_are_guarded(
    sandbox: Sandbox, deploy: dict[str, Any]
) -> None:
    kind, ns, name = _ref(deploy)
    body = [{"op": "replace", "path": "/spec/replicas", "value": 4}]
    assert_denied(patch(sandbox, path_of(kind, ns, name), body, JSON_PATCH), "replicas change")
    body = [{"op": "remove", "path": "/spec/replicas"}]  # defaults to 1
    assert_denied(patch(sandbox, path_of(kind, ns, name), body, JSON_PATCH), "replicas change")


def test_an_init_container_change_is_rejected(sandbox: Sandbox, ns: str) -> None:
    create(sandbox, workload_manifest("Deployment", ns, "with-init", init=True))
    path = path_of("Deployment", ns, "with-init")
    body = cpu_patch("80m", field="initContainers")
    message = assert_denied(patch(sandbox, path, body, STRATEGIC), "needs an approval")
    assert "init container setup: CPU request: 50m → 80m" in message
    response = approved_write(
        sandbox,
        "Deployment",
        ns,
        "with-init",
        lambda obj: with_cpu(obj, "80m", field="initContainers"),
        lambda token: patch(
            sandbox, path, cpu_patch("80m", token, field="initContainers"), STRATEGIC
        ),
        response_text,
    )
    assert response.status_code == 200, response.text


def test_a_daemonset_change_is_rejected(sandbox: Sandbox, ns: str) -> None:
    create(sandbox, workload_manifest("DaemonSet", ns, "agent"))
    response = patch(sandbox, path_of("DaemonSet", ns, "agent"), cpu_patch("150m"), STRATEGIC)
    assert_denied(response, "needs an approval")


def test_pod_level_resources_are_rejected(sandbox: Sandbox, deploy: dict[str, Any]) -> None:
    kind, ns, name = _ref(deploy)
    body = {"spec": {"template": {"spec": {"resources": {"requests": {"cpu": "4"}}}}}}
    # (PodLevelResources is on by default in Kubernetes 1.34: the API server accepts them.)
    response = patch(sandbox, path_of(kind, ns, name), body, STRATEGIC)
    assert_denied(response, "needs an approval", "pod-level resources: CPU request: unset → 4")


def _with_min(obj: dict[str, Any], minimum: int) -> dict[str, Any]:
    changed = copy.deepcopy(obj)
    changed["spec"]["minReplicas"] = minimum
    return changed


def _set_min_replicas(box: Sandbox, ns: str, name: str, minimum: int) -> httpx.Response:
    """An approved change of an HPA's minReplicas, as a merge patch."""
    kind = "HorizontalPodAutoscaler"
    return approved_write(
        box,
        kind,
        ns,
        name,
        lambda obj: _with_min(obj, minimum),
        lambda token: patch(
            box,
            path_of(kind, ns, name),
            {**annotation_patch(token), "spec": {"minReplicas": minimum}},
            MERGE_PATCH,
        ),
        response_text,
    )


def _hpa(ns: str, name: str, minimum: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            # A target that does not exist: the HPA controller has nothing to scale.
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "absent"},
            "minReplicas": minimum,
            "maxReplicas": 10,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


def test_an_hpa_min_replicas_change_is_rejected_through_v2_and_v1(
    sandbox: Sandbox, ns: str
) -> None:
    hpa = create(sandbox, _hpa(ns, "web-hpa"))
    path = path_of("HorizontalPodAutoscaler", ns, "web-hpa")
    assert_denied(
        patch(sandbox, path, {"spec": {"minReplicas": 4}}, MERGE_PATCH), "needs an approval"
    )
    # The same object through autoscaling/v1 (matchPolicy Equivalent converts it to v2).
    v1_path = f"/apis/autoscaling/v1/namespaces/{ns}/horizontalpodautoscalers/web-hpa"
    assert_denied(
        patch(sandbox, v1_path, {"spec": {"minReplicas": 4}}, MERGE_PATCH), "needs an approval"
    )
    result = kubectl(
        sandbox, "-n", ns, "patch", "hpa", "web-hpa", "-p", '{"spec":{"minReplicas":4}}'
    )
    assert result.returncode != 0 and "sizeguard: HPA minReplicas change" in result.stderr
    # With an approval: admitted.
    response = _set_min_replicas(sandbox, ns, "web-hpa", 4)
    assert response.status_code == 200, response.text
    assert hpa["spec"]["minReplicas"] == 2
    # Unguarded HPA fields need none.
    body = {"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}
    assert patch(sandbox, path, body, MERGE_PATCH).status_code == 200


def test_deleting_and_recreating_does_not_revive_an_approval(sandbox: Sandbox, ns: str) -> None:
    first = create(sandbox, workload_manifest("Deployment", ns, "phoenix"))
    token = mint(signing_key(sandbox), first, with_cpu(first, "150m"))
    second = create(sandbox, workload_manifest("Deployment", ns, "phoenix"))  # delete + create
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    response = patch(
        sandbox, path_of("Deployment", ns, "phoenix"), cpu_patch("150m", token), STRATEGIC
    )
    assert_denied(response, "(wrong_uid)", "deleted and recreated")


def test_the_status_subresource_cannot_change_guarded_fields(
    sandbox: Sandbox, deploy: dict[str, Any]
) -> None:
    # deployments/status is not sent to the webhook: the API server's status strategy keeps
    # the stored spec, whatever the request carries.
    kind, ns, name = _ref(deploy)

    def edit(obj: dict[str, Any]) -> None:
        obj["spec"]["replicas"] = 9
        obj["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "999m"

    response = put_fresh(sandbox, path_of(kind, ns, name) + "/status", edit)
    assert response.status_code == 200, response.text
    after = get(sandbox, kind, ns, name)
    assert after["spec"]["replicas"] == 2 and cpu_of(after) == "100m"


# --- the footprint's other paths: HPA create and delete, pods/resize, namespaces ---------------
# (What a user holding only `edit` can and cannot do is the bypass suite, test_bypass.py.)


def _hpa_target(ns: str, name: str) -> Target:
    return Target(
        api_version="autoscaling/v2",
        kind="HorizontalPodAutoscaler",
        namespace=ns,
        name=name,
        uid=None,
    )


def _approved_hpa(key: SigningKey, manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` carrying an approval to create it."""
    meta = manifest["metadata"]
    token = mint_approval(
        key,
        change_set_id=CS,
        op="create",
        target=_hpa_target(meta["namespace"], meta["name"]),
        before=None,
        after=guarded_state(manifest),
        subject="alice@example.com",
    )
    approved = copy.deepcopy(manifest)
    approved["metadata"]["annotations"] = {APPROVAL_ANNOTATION: token}
    return approved


def _delete_approval(key: SigningKey, hpa: dict[str, Any]) -> str:
    return mint_approval(
        key,
        change_set_id=CS,
        op="delete",
        target=target_of(hpa),
        before=guarded_state(hpa),
        after=None,
        subject="alice@example.com",
    )


def _post(box: Sandbox, manifest: dict[str, Any]) -> httpx.Response:
    meta = manifest["metadata"]
    path = path_of(manifest["kind"], meta["namespace"], meta["name"])
    return box.kube.http.post(path.rsplit("/", 1)[0], json=manifest)


@pytest.fixture(scope="module", autouse=True)
def aged_hpa(sandbox: Sandbox, ns: str) -> dict[str, Any]:
    """An HPA created when the module starts (autouse): old enough to delete by the time the
    last test of the module needs it (MIN_AGE_TO_DELETE_SECONDS)."""
    return create(sandbox, _hpa(ns, "aged-hpa"))


def test_creating_an_hpa_needs_a_create_approval(sandbox: Sandbox, ns: str) -> None:
    # (policy: spec section 4, rule 8 — waits on the rewritten admission policy)
    manifest = _hpa(ns, "new-hpa", minimum=3)
    delete(sandbox, path_of("HorizontalPodAutoscaler", ns, "new-hpa"))
    denied = _post(sandbox, manifest)
    assert (
        'admission webhook "hpa.sizeguard.io" denied the request: sizeguard:'
        in (denied.json()["message"])
    ), denied.text
    assert sandbox.kube.http.get(path_of("HorizontalPodAutoscaler", ns, "new-hpa")).status_code == (
        404
    )
    created = _post(sandbox, _approved_hpa(signing_key(sandbox), manifest))
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["minReplicas"] == 3
    # The same approval cannot create it again while it exists (the API server refuses a
    # second create), nor be moved to another name.
    other = _approved_hpa(signing_key(sandbox), manifest)
    other["metadata"]["name"] = "new-hpa-2"
    assert_denied(_post(sandbox, other), "(wrong_target)")


def test_an_hpa_with_bounds_beyond_policy_is_not_created_even_with_an_approval(
    sandbox: Sandbox, ns: str
) -> None:
    # (policy: the replica bounds apply to a new HPA — waits on the rewritten policy)
    manifest = _hpa(ns, "huge-hpa")
    manifest["spec"]["maxReplicas"] = 1000
    delete(sandbox, path_of("HorizontalPodAutoscaler", ns, "huge-hpa"))
    assert_denied(
        _post(sandbox, _approved_hpa(signing_key(sandbox), manifest)),
        "this is denied even with an approval",
    )


def test_deleting_a_young_hpa_is_refused_even_with_a_delete_approval(
    sandbox: Sandbox, ns: str
) -> None:
    # (policy: rule 8, recently_created — waits on the rewritten admission policy)
    hpa = create(sandbox, _hpa(ns, "young-hpa"))
    path = path_of("HorizontalPodAutoscaler", ns, "young-hpa")
    assert_denied(sandbox.kube.http.delete(path))  # no approval
    token = _delete_approval(signing_key(sandbox), hpa)
    # An annotation alone leaves the footprint alone: admitted (never reaches the webhook).
    assert patch(sandbox, path, annotation_patch(token), MERGE_PATCH).status_code == 200
    assert_denied(sandbox.kube.http.delete(path), "less than 2 minutes ago")
    assert sandbox.kube.http.get(path).status_code == 200


def test_pods_resize_is_refused_and_the_pod_keeps_its_resources(sandbox: Sandbox, ns: str) -> None:
    name = "resize-" + uuid.uuid4().hex[:6]
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "containers": [container("app", "100m")],
            # Kept Pending (no node matches): the API server refuses to resize a running pod
            # whose node does not report resizable containers (kwok's), before any webhook.
            "nodeSelector": {"sizeguard.io/test": "no-such-node"},
            "automountServiceAccountToken": False,
        },
    }
    pods = f"/api/v1/namespaces/{ns}/pods"
    created = sandbox.kube.http.post(pods, json=manifest)  # pods are not guarded: only resizes
    assert created.status_code == 201, created.text
    try:
        body = {"spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "2"}}}]}}
        response = patch(sandbox, f"{pods}/{name}/resize", body, STRATEGIC)
        message = assert_denied(response, "container app: CPU request: 100m → 2")
        assert 'admission webhook "resize.sizeguard.io"' in message
        pod = sandbox.kube.http.get(f"{pods}/{name}").json()
        assert pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "100m"
        # A resize to the same values changes nothing and is admitted.
        same = {
            "spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "0.1"}}}]}
        }
        assert patch(sandbox, f"{pods}/{name}/resize", same, STRATEGIC).status_code == 200
    finally:
        sandbox.kube.http.delete(f"{pods}/{name}", params={"gracePeriodSeconds": "0"})


def test_a_namespace_created_a_moment_ago_is_known_to_the_webhook(sandbox: Sandbox) -> None:
    # The watch may not have seen it yet: the webhook reads it directly rather than refusing.
    name = "wh-fresh-" + uuid.uuid4().hex[:6]
    ensure_namespace(sandbox, name)
    try:
        response = _post(sandbox, workload_manifest("Deployment", name, "web"))
        assert response.status_code == 201, response.text
    finally:
        sandbox.kube.http.delete(f"/api/v1/namespaces/{name}")
    context = webhook_setup.ca_context(Path(sandbox.state.info["ca"]))
    base = webhook_info(sandbox)["url"].removesuffix("/validate")
    ready = httpx.get(f"{base}/readyz", verify=context, timeout=5)
    assert ready.status_code == 200 and "namespaces watched" in ready.text, ready.text
    metrics = httpx.get(f"{base}/metrics", verify=context, timeout=5).text
    assert "sizeguard_webhook_namespace_cache_synced 1.0" in metrics


def test_deleting_an_hpa_old_enough_with_a_delete_approval_is_admitted(
    sandbox: Sandbox, ns: str, aged_hpa: dict[str, Any]
) -> None:
    """Last in the module: its HPA was created when the module started."""
    created = datetime.fromisoformat(aged_hpa["metadata"]["creationTimestamp"]).timestamp()
    wait = created + MIN_AGE_TO_DELETE_SECONDS + 2 - time.time()
    if wait > 0:
        time.sleep(wait)
    path = path_of("HorizontalPodAutoscaler", ns, "aged-hpa")
    assert_denied(sandbox.kube.http.delete(path))  # (policy) without an approval
    current = get(sandbox, "HorizontalPodAutoscaler", ns, "aged-hpa")
    token = _delete_approval(signing_key(sandbox), current)
    assert patch(sandbox, path, annotation_patch(token), MERGE_PATCH).status_code == 200
    response = sandbox.kube.http.delete(path)
    assert response.status_code in (200, 202), response.text
    eventually(lambda: sandbox.kube.http.get(path).status_code == 404, what="the HPA gone")


# --- ReplicaSets: the controllers keep working --------------------------------------------------

PROD_NAMESPACE = "wh-it-prod"


def test_an_approved_rollout_in_production_rolls_out_through_its_controllers(
    sandbox: Sandbox,
) -> None:
    # The deployment controller creates the new ReplicaSet in a production namespace (admitted:
    # it is in config.admission.replica_set_controllers) and scales the old one down (replica
    # writes never reach the webhook); the garbage collector deletes them with the Deployment.
    ensure_namespace(sandbox, PROD_NAMESPACE)
    name = "rollout-" + uuid.uuid4().hex[:6]
    deployment = create(sandbox, workload_manifest("Deployment", PROD_NAMESPACE, name))
    (first,) = eventually(lambda: owned_replica_sets(sandbox, deployment), what="first ReplicaSet")
    before = webhook_requests(sandbox)
    result = approved_write(
        sandbox,
        "Deployment",
        PROD_NAMESPACE,
        name,
        lambda obj: with_cpu(obj, "150m"),
        lambda token: patch(
            sandbox,
            path_of("Deployment", PROD_NAMESPACE, name),
            cpu_patch("150m", token),
            STRATEGIC,
        ),
        response_text,
    )
    assert result.status_code == 200, result.text

    def rolled_out() -> tuple[dict[str, Any], dict[str, Any]] | None:
        sets = owned_replica_sets(sandbox, deployment)
        if len(sets) != 2:
            return None
        old, new = sets
        done = old["spec"]["replicas"] == 0 and new["spec"]["replicas"] == 2
        return (old, new) if done else None

    old, new = eventually(rolled_out, timeout=60, what="the new ReplicaSet at 2, the old at 0")
    assert old["metadata"]["uid"] == first["metadata"]["uid"]
    assert cpu_of(new) == "150m" and cpu_of(old) == "100m"
    # The Deployment's write and the controller's ReplicaSet create reached the webhook.
    assert webhook_requests(sandbox) >= before + 2
    path = path_of("Deployment", PROD_NAMESPACE, name)
    # Complete: both pods are of the new template and the old pod is gone (status.replicas
    # counts an old pod until it has terminated, a moment after updatedReplicas reaches 2).
    eventually(
        lambda: (
            (s := get(sandbox, "Deployment", PROD_NAMESPACE, name)["status"]).get("updatedReplicas")
            == 2
            and s.get("replicas") == 2
        ),
        what="the rollout complete",
    )
    delete(sandbox, path)
    eventually(lambda: not owned_replica_sets(sandbox, deployment), what="ReplicaSets collected")


def test_a_deployments_replicasets_may_be_orphaned_and_adopted_by_its_controllers(
    sandbox: Sandbox, ns: str
) -> None:
    # Deleted with propagationPolicy=Orphan (as break-glass), the garbage collector takes the
    # ownerReference off the ReplicaSet; a Deployment of the same selector made again, the
    # deployment controller adopts it. Both are controller writes of the ownerReference.
    name = "orphan-" + uuid.uuid4().hex[:6]
    manifest = workload_manifest("Deployment", ns, name)
    deployment = create(sandbox, manifest)
    (rs,) = eventually(lambda: owned_replica_sets(sandbox, deployment), what="its ReplicaSet")
    rs_path = f"/apis/apps/v1/namespaces/{ns}/replicasets/{rs['metadata']['name']}"
    response = sandbox.kube.http.delete(
        path_of("Deployment", ns, name),
        params={"propagationPolicy": "Orphan"},
        headers=BREAK_GLASS,
    )
    assert response.status_code == 200, response.text
    eventually(
        lambda: not sandbox.kube.http.get(rs_path).json()["metadata"].get("ownerReferences"),
        what="the ReplicaSet orphaned by the garbage collector",
    )
    again = create(sandbox, manifest)
    adopted = eventually(lambda: owned_replica_sets(sandbox, again), what="the ReplicaSet adopted")
    assert [r["metadata"]["uid"] for r in adopted] == [rs["metadata"]["uid"]]
    delete(sandbox, path_of("Deployment", ns, name))
