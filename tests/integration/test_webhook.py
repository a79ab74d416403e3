"""The cluster enforces approvals: every guarded change goes through the real kube-apiserver,
which calls sizeguard's webhook (registered by ``sandbox up --with-webhook``)."""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sizeguard.approvals import (
    APPROVAL_ANNOTATION,
    SigningKey,
    generate_signing_key,
    load_signing_key,
    mint_approval,
)
from sizeguard.changes import Target, guarded_state, target_of
from sizeguard.sandbox import tools, webhook_setup

from .conftest import Sandbox
from .helpers import eventually

NAMESPACE = "wh-it"
CS = "cs-00000000000000000001"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"


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


def create(box: Sandbox, manifest: dict[str, Any]) -> dict[str, Any]:
    meta = manifest["metadata"]
    path = path_of(manifest["kind"], meta["namespace"], meta["name"])
    box.kube.http.delete(path, params={"propagationPolicy": "Background"})
    eventually(lambda: box.kube.http.get(path).status_code == 404, what=f"{path} gone")
    response = box.kube.http.post(path.rsplit("/", 1)[0], json=manifest)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


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
    return mint_approval(
        key,
        change_set_id=CS,
        op="apply",
        target=target or target_of(old),
        before=guarded_state(old),
        after=guarded_state(new),
        subject="alice@example.com",
        generation=old["metadata"].get("generation"),
        now=now,
    )


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
    sandbox.kube.http.delete(path_of("Deployment", ns, name))


def _ref(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]


# --- registration ------------------------------------------------------------------------------


def test_the_registration_is_fail_closed_with_the_real_ca_bundle(sandbox: Sandbox) -> None:
    body = sandbox.kube.http.get(
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/sizeguard"
    ).json()
    ca = Path(sandbox.state.info["ca"]).read_bytes()
    names = {w["name"] for w in body["webhooks"]}
    assert names == {"workloads.sizeguard.io", "scale.sizeguard.io", "hpa.sizeguard.io"}
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
        assert [c["name"] for c in hook["matchConditions"]] == ["guarded-fields-may-change"]
        assert all(r["operations"] == ["UPDATE"] for r in hook["rules"])


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
    token = mint(signing_key(sandbox), deploy, with_cpu(deploy, "150m"))
    result = kubectl(
        sandbox, "-n", ns, "patch", "deployment", name, "-p", json.dumps(cpu_patch("150m", token))
    )
    assert result.returncode == 0, result.stderr
    after = get(sandbox, "Deployment", ns, name)
    assert cpu_of(after) == "150m"
    assert after["metadata"]["annotations"][APPROVAL_ANNOTATION] == token


def test_label_and_image_changes_need_no_approval_and_never_reach_the_webhook(
    sandbox: Sandbox, deploy: dict[str, Any]
) -> None:
    _, ns, name = _ref(deploy)
    before = webhook_requests(sandbox)
    assert kubectl(sandbox, "-n", ns, "label", "deployment", name, "team=shop").returncode == 0
    result = kubectl(
        sandbox, "-n", ns, "set", "image", f"deployment/{name}", "app=registry.example/app:2.0"
    )
    assert result.returncode == 0, result.stderr
    assert kubectl(sandbox, "-n", ns, "rollout", "restart", f"deployment/{name}").returncode == 0
    # matchConditions filtered them out in the API server.
    assert webhook_requests(sandbox) == before


def test_an_update_that_only_respells_resources_reaches_the_webhook_and_is_admitted(
    sandbox: Sandbox, deploy: dict[str, Any]
) -> None:
    _, ns, name = _ref(deploy)
    before = webhook_requests(sandbox)
    # An unguarded resource (ephemeral-storage) changes resources, so matchConditions send it;
    # the guarded state is unchanged, so the webhook admits it at once.
    body = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "resources": {"requests": {"ephemeral-storage": "1Gi"}}}
                    ]
                }
            }
        }
    }
    response = patch(sandbox, path_of("Deployment", ns, name), body, STRATEGIC)
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
    token = mint(signing_key(sandbox), deploy, with_cpu(deploy, "1"))  # +900%
    response = patch(sandbox, path_of("Deployment", ns, name), cpu_patch("1", token), STRATEGIC)
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
    token = make_token(signing_key(sandbox), deploy, with_cpu(deploy, "150m"), other)
    response = patch(sandbox, path_of("Deployment", ns, name), cpu_patch("150m", token), STRATEGIC)
    assert_denied(response, f"the approval on {ns}/{name} is not valid ({code})", "approval check:")
    assert cpu_of(get(sandbox, "Deployment", ns, name)) == "100m"


def test_a_replayed_approval_is_rejected(sandbox: Sandbox, deploy: dict[str, Any]) -> None:
    kind, ns, name = _ref(deploy)
    key = signing_key(sandbox)
    path = path_of(kind, ns, name)
    token = mint(key, deploy, with_cpu(deploy, "150m"))
    assert patch(sandbox, path, cpu_patch("150m", token), STRATEGIC).status_code == 200
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
    key = signing_key(sandbox)
    path = path_of(kind, ns, name)
    forth = mint(key, deploy, with_cpu(deploy, "150m"))
    assert patch(sandbox, path, cpu_patch("150m", forth), STRATEGIC).status_code == 200
    applied = get(sandbox, kind, ns, name)
    back = mint(key, applied, with_cpu(applied, "100m"))
    assert patch(sandbox, path, cpu_patch("100m", back), STRATEGIC).status_code == 200
    # Back at 100m within the first approval's lifetime: uid, from and to match again, but
    # the object's generation has moved on.
    response = patch(sandbox, path, cpu_patch("150m", forth), STRATEGIC)
    assert_denied(response, "(from_mismatch)", "the object changed since the approval")
    assert cpu_of(get(sandbox, kind, ns, name)) == "100m"


def test_an_hpa_approval_replayed_after_a_round_trip_is_rejected(sandbox: Sandbox, ns: str) -> None:
    # HPAs have no generation: the webhook remembers which approvals it admitted.
    hpa = create(sandbox, _hpa(ns, "replay-hpa"))
    path = path_of("HorizontalPodAutoscaler", ns, "replay-hpa")
    key = signing_key(sandbox)
    changed = copy.deepcopy(hpa)
    changed["spec"]["minReplicas"] = 3
    forth = mint(key, hpa, changed)
    body = {**annotation_patch(forth), "spec": {"minReplicas": 3}}
    assert patch(sandbox, path, body, MERGE_PATCH).status_code == 200
    applied = get(sandbox, "HorizontalPodAutoscaler", ns, "replay-hpa")
    restored = copy.deepcopy(applied)
    restored["spec"]["minReplicas"] = 2
    back = mint(key, applied, restored)
    body_back = {**annotation_patch(back), "spec": {"minReplicas": 2}}
    assert patch(sandbox, path, body_back, MERGE_PATCH).status_code == 200
    assert_denied(patch(sandbox, path, body, MERGE_PATCH), "(replayed)")
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
    token = mint(signing_key(sandbox), deploy, with_cpu(deploy, "150m"))
    body, content_type, params = VARIANTS[variant](token)
    if variant == "server-side-apply":
        body["metadata"].update({"name": name, "namespace": ns})
    response = patch(sandbox, path, body, content_type, params)
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
    obj = create(sandbox, workload_manifest("Deployment", ns, "with-init", init=True))
    path = path_of("Deployment", ns, "with-init")
    body = cpu_patch("80m", field="initContainers")
    message = assert_denied(patch(sandbox, path, body, STRATEGIC), "needs an approval")
    assert "init container setup: CPU request: 50m → 80m" in message
    token = mint(signing_key(sandbox), obj, with_cpu(obj, "80m", field="initContainers"))
    response = patch(sandbox, path, cpu_patch("80m", token, field="initContainers"), STRATEGIC)
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
    assert_denied(response, "pod-level resources are not supported by sizeguard")


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
    changed = copy.deepcopy(hpa)
    changed["spec"]["minReplicas"] = 4
    token = mint(signing_key(sandbox), hpa, changed)
    response = patch(
        sandbox, path, {**annotation_patch(token), "spec": {"minReplicas": 4}}, MERGE_PATCH
    )
    assert response.status_code == 200, response.text
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
