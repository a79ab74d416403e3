"""The webhook's ASGI app, called directly with plain data (no server, no OPA)."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from sizeguard.approvals import (
    APPROVAL_ANNOTATION,
    MIN_AGE_TO_DELETE_SECONDS,
    Op,
    SigningKey,
    generate_signing_key,
    init_key_dir,
    load_signing_key,
    mint_approval,
    public_jwk,
    rotate_key_dir,
)
from sizeguard.changes import Target, guarded_state, target_of
from sizeguard.key_trust import PREFIX, trusted_key_sets, verdict
from sizeguard.policy import AdmissionDecision
from sizeguard.webhook.app import WebhookApp
from sizeguard.webhook.keys import JwksFile
from sizeguard.webhook.metrics import Metrics
from sizeguard.webhook.namespaces import Lookup, StaticNamespaces
from sizeguard.webhook.review import MAX_BODY_BYTES
from sizeguard.webhook.routes import recently_created

UID = "705ab4f5-6393-11e8-b7cc-42010a800002"
OBJ_UID = "3f1c0b4e-0000-4000-8000-000000000001"
CS = "cs-0123456789abcdef0123"
RV = "1001"
CREATED = "2026-01-01T00:00:00Z"
NAMESPACES = {"shop": {"kubernetes.io/metadata.name": "shop", "team": "web"}}


def deployment(
    *,
    cpu: str = "100m",
    replicas: int | None = 3,
    image: str = "web:1",
    uid: str = OBJ_UID,
    rv: str = RV,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": image,
                        "resources": {"requests": {"cpu": cpu, "memory": "128Mi"}},
                    }
                ]
            },
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": uid,
            "resourceVersion": rv,
            "creationTimestamp": CREATED,
            "labels": {"app": "web"},
        },
        "spec": spec,
    }


def hpa(
    *, minimum: int = 2, maximum: int = 10, uid: str = OBJ_UID, rv: str = RV, target: str = "web"
) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": uid,
            "resourceVersion": rv,
            "creationTimestamp": CREATED,
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": minimum,
            "maxReplicas": maximum,
        },
    }


def pod(cpu: str = "100m") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "shop", "uid": OBJ_UID, "resourceVersion": RV},
        "spec": {
            "containers": [
                {"name": "web", "image": "web:1", "resources": {"requests": {"cpu": cpu}}}
            ]
        },
    }


def limit_range(cpu: str | None = "250m") -> dict[str, Any]:
    spec = {} if cpu is None else {"limits": [{"type": "Container", "default": {"cpu": cpu}}]}
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "defaults", "namespace": "shop", "uid": OBJ_UID},
        "spec": spec,
    }


OWNER = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "name": "web",
    "uid": "3f1c0b4e-0000-4000-8000-0000000000d0",
}


def replica_set(
    *,
    cpu: str = "100m",
    replicas: int = 3,
    owner: Mapping[str, str] | None = OWNER,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ReplicaSet a Deployment ``web`` owns (``owner`` None: a standalone one)."""
    obj = deployment(cpu=cpu, replicas=replicas)
    obj["kind"] = "ReplicaSet"
    obj["metadata"]["name"] = "web-5d8f9c7b6d"
    obj["metadata"]["labels"] = dict(labels or {"app": "web", "pod-template-hash": "5d8f9c7b6d"})
    if owner is not None:
        reference = {**owner, "controller": True, "blockOwnerDeletion": True}
        obj["metadata"]["ownerReferences"] = [reference]
    return obj


def scale(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": "web", "namespace": "shop", "uid": OBJ_UID},
        "spec": {"replicas": replicas},
    }


_RESOURCES = {
    "Deployment": ("apps", "v1", "deployments"),
    "ReplicaSet": ("apps", "v1", "replicasets"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"),
    "HorizontalPodAutoscaler": ("autoscaling", "v2", "horizontalpodautoscalers"),
    "Pod": ("", "v1", "pods"),
    "LimitRange": ("", "v1", "limitranges"),
}


def review(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    *,
    operation: str = "UPDATE",
    sub_resource: str = "",
    dry_run: bool = False,
    user: str = "bob",
    groups: list[str] | None = None,
    resource: tuple[str, str, str] | None = None,
) -> dict[str, Any]:
    """An AdmissionReview as the API server sends it; kind and resource follow the objects
    (a Deployment when neither says), or the Scale of a Deployment for ``scale``."""
    sample = new if isinstance(new, Mapping) else old if isinstance(old, Mapping) else {}
    if sub_resource == "scale":
        kind = {"group": "autoscaling", "version": "v1", "kind": "Scale"}
        resource = resource or ("apps", "v1", "deployments")
    else:
        name = sample.get("kind") if sample.get("kind") in _RESOURCES else "Deployment"
        group, version, _ = _RESOURCES[str(name)]
        kind = {"group": group, "version": version, "kind": name}
        resource = resource or _RESOURCES[str(name)]
    group, version, plural = resource
    resource_map = {"group": group, "version": version, "resource": plural}
    metadata = sample.get("metadata") if isinstance(sample.get("metadata"), Mapping) else {}
    request: dict[str, Any] = {
        "uid": UID,
        "kind": kind,
        "resource": resource_map,
        "requestKind": kind,
        "requestResource": resource_map,
        "name": metadata.get("name", "web"),
        "namespace": "shop",
        "operation": operation,
        "userInfo": {"username": user, "groups": groups or ["system:authenticated"]},
        "object": new,
        "oldObject": old,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions"},
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def approve(
    key: SigningKey,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    now: float | None = None,
    *,
    op: Op | None = None,
    approvers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The object that carries an approval of old -> new (None: no object): ``new``, or for
    a delete ``old``. An update's approval is bound to ``old``'s resourceVersion."""
    carrier = new if new is not None else old
    assert carrier is not None
    if old is not None:
        target = target_of(old)
    else:
        metadata = carrier["metadata"]
        target = Target(
            api_version=carrier["apiVersion"],
            kind=carrier["kind"],
            namespace=metadata["namespace"],
            name=metadata["name"],
            uid=None,
        )
    token = mint_approval(
        key,
        change_set_id=CS,
        op=op or ("create" if old is None else "delete" if new is None else "apply"),
        target=target,
        before=None if old is None else guarded_state(old),
        after=None if new is None else guarded_state(new),
        subject=f"approver:{approvers[0]}" if approvers else "alice@example.com",
        approvers=approvers,
        resource_version=old["metadata"].get("resourceVersion")
        if old is not None and new is not None
        else None,
        now=now,
    )
    approved = copy.deepcopy(dict(carrier))
    approved["metadata"].setdefault("annotations", {})[APPROVAL_ANNOTATION] = token
    return approved


class FakePolicy:
    """Admits a change carrying a valid approval, or a dry run (with a warning); denies the
    rest, as the admission policy does for a non-exempt user. Records its inputs."""

    def __init__(self, *, error: str | None = None, raises: bool = False) -> None:
        self.inputs: list[Mapping[str, Any]] = []
        self.timeouts: list[float | None] = []
        self.error = error
        self.raises = raises

    async def admission_decision(
        self, policy_input: Mapping[str, Any], *, timeout: float | None = None
    ) -> AdmissionDecision:
        self.inputs.append(policy_input)
        self.timeouts.append(timeout)
        if self.raises:
            raise RuntimeError("boom")
        if self.error is not None:
            return AdmissionDecision.unavailable(self.error)
        request = policy_input.get("request", {})
        if request.get("operation") not in ("CREATE", "UPDATE", "DELETE"):
            return AdmissionDecision(allowed=True, reasons=[], warnings=[])  # the readyz probe
        if policy_input["approval"]["valid"]:
            return AdmissionDecision(allowed=True, reasons=["sizeguard: ok"], warnings=[])
        if request.get("dry_run"):
            return AdmissionDecision(
                allowed=True, reasons=[], warnings=["sizeguard: dry run admitted\nsecond line"]
            )
        return AdmissionDecision(
            allowed=False,
            reasons=["sizeguard: change on shop/web needs an approval; request one"],
            warnings=["sizeguard: a warning"],
        )


class AllowAll:
    async def admission_decision(
        self, policy_input: Mapping[str, Any], *, timeout: float | None = None
    ) -> AdmissionDecision:
        return AdmissionDecision(allowed=True, reasons=[], warnings=[])


def call(
    app: WebhookApp,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    chunks: int = 1,
) -> tuple[int, dict[bytes, bytes], bytes]:
    return asyncio.run(acall(app, method, path, body, headers, chunks))


async def acall(
    app: WebhookApp,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    chunks: int = 1,
) -> tuple[int, dict[bytes, bytes], bytes]:
    size = max(1, -(-len(body) // chunks))
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers or []}
    await app(scope, receive, send)
    start = sent[0]
    out = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), out


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys") / "keys"
    init_key_dir(directory)
    return directory


@pytest.fixture(scope="module")
def key(key_dir: Path) -> SigningKey:
    return load_signing_key(key_dir)


def make_app(
    key_dir: Path, policy: Any = None, namespaces: Any = None, **kwargs: Any
) -> WebhookApp:
    return WebhookApp(
        jwks=JwksFile(key_dir / "jwks.json"),
        namespaces=namespaces or StaticNamespaces(NAMESPACES),
        policy=policy or FakePolicy(),
        **kwargs,
    )


def validate(app: WebhookApp, document: Any) -> dict[str, Any]:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    status, headers, out = call(app, "POST", "/validate", body)
    assert status == 200
    assert headers[b"content-type"] == b"application/json"
    answer: dict[str, Any] = json.loads(out)
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    assert isinstance(answer["response"]["allowed"], bool)
    return answer["response"]


# --- decisions ---------------------------------------------------------------------------------


def test_unchanged_guarded_state_is_admitted_without_asking_the_policy(key_dir: Path) -> None:
    policy = FakePolicy()
    namespaces = CountingNamespaces(NAMESPACES)
    app = make_app(key_dir, policy, namespaces)
    # Image change and the same CPU spelled differently: the guarded state is equal.
    response = validate(app, review(deployment(), deployment(cpu="0.1", image="web:2")))
    assert response == {"uid": UID, "allowed": True}
    assert policy.inputs == [] and namespaces.asked == []


def test_guarded_change_without_approval_is_denied_with_a_message_naming_sizeguard(
    key_dir: Path,
) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    response = validate(app, review(deployment(), deployment(cpu="150m")))
    assert response["allowed"] is False
    assert response["uid"] == UID
    assert response["status"]["code"] == 403
    message = response["status"]["message"]
    assert message.startswith("sizeguard: ")
    assert "container web: CPU request: 100m → 150m (+50%)" in message
    assert response["warnings"] == ["sizeguard: a warning"]
    (sent,) = policy.inputs
    assert sent["approval"] == {
        "present": False,
        "valid": False,
        "error": "missing",
        "claims": None,
    }
    assert sent["request"] == {
        "uid": UID,
        "operation": "UPDATE",
        "user": "bob",
        "groups": ["system:authenticated"],
        "kind": "Deployment",
        "namespace": "shop",
        "name": "web",
        "subresource": "",
        "dry_run": False,
        "orphan": False,
    }
    assert sent["before"]["containers"]["web"]["cpu_request"] == 100
    assert sent["after"]["containers"]["web"]["cpu_request"] == 150
    assert sent["before"] == guarded_state(deployment()).model_dump(mode="json")
    assert sent["context"] == {
        "labels": {"app": "web"},
        "namespace_labels": NAMESPACES["shop"],
        "recently_created": False,
        "owner_before": None,
        "owner_after": None,
        "labels_changed": False,
    }


def test_valid_approval_is_verified_and_passed_to_the_policy(
    key_dir: Path, key: SigningKey
) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    old, new = deployment(), deployment(cpu="150m")
    response = validate(app, review(old, approve(key, old, new)))
    assert response == {"uid": UID, "allowed": True}
    approval = policy.inputs[0]["approval"]
    assert approval["valid"] is True and approval["claims"]["sub"] == "alice@example.com"
    assert approval["claims"]["rv"] == RV
    text = app.metrics.render().decode()
    assert (
        'sizeguard_webhook_requests_total{decision="allowed",dry_run="false",reason="approved"} 1.0'
        in text
    )
    assert 'sizeguard_webhook_approval_checks_total{code="ok"} 1.0' in text
    assert 'sizeguard_webhook_namespace_lookups_total{source="cache"}' not in text  # static


def test_a_page_approval_with_its_approvers_is_admitted_and_logged(
    key_dir: Path, key: SigningKey
) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    old, new = deployment(), deployment(cpu="150m")
    with structlog.testing.capture_logs() as logs:
        response = validate(app, review(old, approve(key, old, new, approvers=("alice", "carol"))))
    assert response == {"uid": UID, "allowed": True}
    claims = policy.inputs[0]["approval"]["claims"]
    assert (claims["sub"], claims["approvers"]) == ("approver:alice", ["alice", "carol"])
    logged = [e for e in logs if e.get("approval_approvers")]
    assert logged and logged[0]["approval_approvers"] == ["alice", "carol"]


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda old, new, key: approve(generate_signing_key(), old, new), "unknown_key"),
        (
            lambda old, new, key: approve(key, old, new, now=time.time() - 1000),
            "expired",
        ),
        (lambda old, new, key: approve(key, old, deployment(cpu="151m")), "to_mismatch"),
        (
            lambda old, new, key: approve(
                key, deployment(uid="00000000-0000-4000-8000-000000000009"), new
            ),
            "wrong_uid",
        ),
        # Minted against another version of the object: it was written since.
        (lambda old, new, key: approve(key, deployment(rv="999"), new), "from_mismatch"),
        (lambda old, new, key: approve(key, old, new, op="rollback"), "ok"),
    ],
)
def test_invalid_approvals_are_denied_with_the_verifier_message(
    key_dir: Path, key: SigningKey, mutate: Any, code: str
) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    old, new = deployment(), deployment(cpu="150m")
    carried = mutate(old, new, key)
    # The new object must be the change being made, with whatever approval it carries.
    carried["spec"] = new["spec"]
    carried["metadata"]["uid"], carried["metadata"]["resourceVersion"] = OBJ_UID, RV
    response = validate(app, review(old, carried))
    if code == "ok":
        assert response["allowed"] is True
        return
    assert response["allowed"] is False
    assert policy.inputs[0]["approval"]["error"] == code
    assert "approval check:" in response["status"]["message"]


def test_token_never_appears_in_logs(key_dir: Path, key: SigningKey) -> None:
    old, new = deployment(), deployment(cpu="150m")
    approved = approve(key, old, new)
    token = approved["metadata"]["annotations"][APPROVAL_ANNOTATION]
    with structlog.testing.capture_logs() as logs:
        validate(make_app(key_dir), review(old, approved))
    (event,) = [e for e in logs if e["event"] == "admission.decision"]
    assert event["approval"] == "ok" and event["approval_jti"]
    assert token not in json.dumps(logs, default=str)
    for field in ("uid", "kind", "namespace", "name", "user", "operation", "dry_run", "reason"):
        assert field in event
    assert event["namespace_labels_from"] == "cache"


def test_dry_run_warning_is_passed_through_on_one_line(key_dir: Path, key: SigningKey) -> None:
    response = validate(
        make_app(key_dir), review(deployment(), deployment(cpu="150m"), dry_run=True)
    )
    assert response["allowed"] is True
    assert response["warnings"] == [
        f"sizeguard: trusted approval keys: {key.kid}",
        "sizeguard: dry run admitted second line",
    ]


def test_a_dry_run_answer_names_the_trusted_keys_and_a_real_one_does_not(
    key_dir: Path, key: SigningKey, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    shutil.copytree(key_dir, keys)
    rotated = rotate_key_dir(keys)
    app = make_app(keys, FakePolicy(error="OPA is down"))
    denied = validate(app, review(deployment(), deployment(cpu="150m"), dry_run=True))
    assert denied["allowed"] is False  # denied or not, the answer says which keys it trusts
    sets, others = trusted_key_sets(denied["warnings"])
    assert sets == [frozenset({key.kid, rotated.kid})]
    assert verdict(key.kid, sets).trusted is True
    assert verdict("A" * 43, sets).trusted is False
    assert all(not w.startswith(PREFIX) for w in others)
    real = validate(app, review(deployment(), deployment(cpu="150m")))
    assert not any(w.startswith(PREFIX) for w in real.get("warnings") or [])


def test_a_webhook_without_keys_says_it_trusts_none(tmp_path: Path) -> None:
    app = make_app(tmp_path)  # no jwks.json: no keys loaded
    response = validate(app, review(deployment(), deployment(cpu="150m"), dry_run=True))
    assert response["warnings"][0] == "sizeguard: trusted approval keys: none"
    sets, _ = trusted_key_sets(response["warnings"])
    assert sets == [frozenset()]
    assert verdict("A" * 43, sets).trusted is False


def test_scale_subresource_passes_replicas_only_and_no_approval(key_dir: Path) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    response = validate(app, review(scale(3), scale(5), sub_resource="scale"))
    assert response["allowed"] is False
    (sent,) = policy.inputs
    assert sent["request"]["kind"] == "Deployment"
    assert sent["request"]["subresource"] == "scale"
    assert sent["before"]["replicas"] == 3 and sent["after"]["replicas"] == 5
    assert sent["before"]["containers"] == {}
    assert sent["approval"] == {"present": False, "valid": False, "error": None, "claims": None}
    assert 'reason="scale_denied"' in app.metrics.render().decode()


def test_scale_without_replicas_means_zero(key_dir: Path) -> None:
    policy = FakePolicy()
    zero = scale(0)
    del zero["spec"]["replicas"]
    response = validate(make_app(key_dir, policy), review(scale(0), zero, sub_resource="scale"))
    assert response["allowed"] is True and policy.inputs == []


def test_pod_level_resources_are_part_of_the_footprint(key_dir: Path) -> None:
    policy = FakePolicy()
    new = deployment()
    new["spec"]["template"]["spec"]["resources"] = {"requests": {"cpu": "4"}}
    response = validate(make_app(key_dir, policy), review(deployment(), new))
    assert response["allowed"] is False
    assert "pod-level resources: CPU request: unset → 4" in response["status"]["message"]
    assert policy.inputs[0]["after"]["pod_resources"]["cpu_request"] == 4000


def test_object_of_another_kind_than_the_request_says_is_denied(key_dir: Path) -> None:
    new = deployment(cpu="150m")
    new["kind"] = "StatefulSet"
    response = validate(make_app(key_dir), review(deployment(), new))
    assert response["allowed"] is False and "as the request says" in response["status"]["message"]


def test_an_unreadable_object_is_denied_before_the_policy(key_dir: Path) -> None:
    policy = FakePolicy()
    new = deployment()
    new["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "lots"
    response = validate(make_app(key_dir, policy), review(deployment(), new))
    assert response["allowed"] is False and policy.inputs == []
    assert response["status"]["message"].startswith("sizeguard: cannot check this update")


# --- routes: every kind of request sizeguard decides, and nothing else -------------------------


def test_workload_create_and_delete_reach_the_policy_without_an_approval_check(
    key_dir: Path,
) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    created = validate(app, review(None, deployment(), operation="CREATE"))
    deleted = validate(app, review(deployment(), None, operation="DELETE"))
    assert created["allowed"] is False and deleted["allowed"] is False
    create, delete = policy.inputs
    assert create["before"] is None
    assert create["after"] == guarded_state(deployment()).model_dump(mode="json")
    assert delete["before"] == guarded_state(deployment()).model_dump(mode="json")
    assert delete["after"] is None
    for sent in (create, delete):
        assert sent["approval"] == {"present": False, "valid": False, "error": None, "claims": None}
        assert sent["context"]["labels"] == {"app": "web"}
        assert sent["context"]["namespace_labels"] == NAMESPACES["shop"]
    assert create["context"]["recently_created"] is False
    assert delete["context"]["recently_created"] is False  # created in 2026-01
    assert 'reason="lifecycle_denied"' in app.metrics.render().decode()


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet"])
def test_other_workload_kinds_are_routed(key_dir: Path, kind: str) -> None:
    policy = FakePolicy()
    old, new = deployment(), deployment(cpu="150m")
    for obj in (old, new):
        obj["kind"] = kind
        if kind == "DaemonSet":
            del obj["spec"]["replicas"]
    response = validate(make_app(key_dir, policy), review(old, new))
    assert response["allowed"] is False
    assert policy.inputs[0]["request"]["kind"] == kind


def test_an_hpa_create_carries_a_create_approval(key_dir: Path, key: SigningKey) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    new = hpa(minimum=3)
    del new["metadata"]["uid"]  # not assigned yet when admission runs
    response = validate(app, review(None, approve(key, None, new), operation="CREATE"))
    assert response["allowed"] is True
    (sent,) = policy.inputs
    assert sent["request"]["kind"] == "HorizontalPodAutoscaler"
    assert sent["before"] is None and sent["after"]["min_replicas"] == 3
    assert sent["approval"]["valid"] is True and sent["approval"]["claims"]["op"] == "create"
    # Without one: the policy is asked, with the verifier's "missing".
    validate(app, review(None, new, operation="CREATE"))
    assert policy.inputs[-1]["approval"]["error"] == "missing"


def test_an_hpa_delete_reads_the_approval_from_the_old_object(
    key_dir: Path, key: SigningKey
) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    old = hpa()
    response = validate(app, review(approve(key, old, None), None, operation="DELETE"))
    assert response["allowed"] is True
    (sent,) = policy.inputs
    assert sent["before"]["max_replicas"] == 10 and sent["after"] is None
    assert sent["approval"]["claims"]["op"] == "delete"
    assert sent["context"]["recently_created"] is False
    # A delete approval of another HPA of that name (deleted and recreated since): refused.
    other = approve(key, hpa(uid="00000000-0000-4000-8000-000000000009"), None)
    other["metadata"]["uid"] = OBJ_UID
    assert validate(app, review(other, None, operation="DELETE"))["allowed"] is False
    assert policy.inputs[-1]["approval"]["error"] == "wrong_uid"


def test_an_approval_for_another_operation_is_refused(key_dir: Path, key: SigningKey) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    old, new = hpa(), hpa(minimum=5)
    # An update approval presented on a delete (the token rides on the old object).
    carrier = approve(key, old, new)
    carrier["spec"] = old["spec"]
    assert validate(app, review(carrier, None, operation="DELETE"))["allowed"] is False
    assert policy.inputs[-1]["approval"]["error"] == "wrong_operation"


def test_hpa_updates_are_verified(key_dir: Path, key: SigningKey) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    old, new = hpa(), hpa(target="api")
    response = validate(app, review(old, new))
    assert response["allowed"] is False
    assert (
        "HPA scaleTargetRef: apps/v1/Deployment/web → apps/v1/Deployment/api"
        in (response["status"]["message"])
    )
    assert policy.inputs[-1]["approval"]["error"] == "missing"
    assert validate(app, review(old, approve(key, old, new)))["allowed"] is True


def test_pods_resize_is_routed_with_the_pods_footprint(key_dir: Path) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    response = validate(app, review(pod(), pod("500m"), sub_resource="resize"))
    assert response["allowed"] is False
    (sent,) = policy.inputs
    assert sent["request"]["kind"] == "Pod" and sent["request"]["subresource"] == "resize"
    assert sent["request"]["name"] == "web-1"
    assert sent["before"]["containers"]["web"]["cpu_request"] == 100
    assert sent["after"]["containers"]["web"]["cpu_request"] == 500
    assert sent["before"]["replicas"] is None
    assert sent["approval"]["present"] is False
    assert 'reason="resize_denied"' in app.metrics.render().decode()
    # A resize that changes nothing (the same value respelled) needs nobody.
    assert validate(app, review(pod(), pod("0.1"), sub_resource="resize"))["allowed"] is True


@pytest.mark.parametrize(
    ("operation", "old", "new", "before", "after"),
    [
        ("CREATE", None, limit_range(), None, {"limits": limit_range()["spec"]["limits"]}),
        ("UPDATE", limit_range(), limit_range("1"), ..., ...),
        ("UPDATE", limit_range(None), limit_range(), {"limits": []}, ...),
        ("DELETE", limit_range(), None, ..., None),
    ],
)
def test_limit_ranges_are_routed_with_their_limits(
    key_dir: Path, operation: str, old: Any, new: Any, before: Any, after: Any
) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    response = validate(app, review(old, new, operation=operation))
    assert response["allowed"] is False
    (sent,) = policy.inputs
    assert sent["request"]["kind"] == "LimitRange"
    expected_before = {"limits": old["spec"].get("limits", [])} if before is ... else before
    expected_after = {"limits": new["spec"]["limits"]} if after is ... else after
    assert sent["before"] == expected_before and sent["after"] == expected_after
    assert sent["approval"]["present"] is False
    assert "LimitRange" in response["status"]["message"]
    # The same limits again: admitted without the policy.
    if operation == "UPDATE":
        assert validate(app, review(new, copy.deepcopy(new)))["allowed"] is True


@pytest.mark.parametrize(
    ("resource", "sub_resource", "operation", "obj", "fragment"),
    [
        (("apps", "v1", "controllerrevisions"), "", "UPDATE", deployment(), "controllerrevisions"),
        (("apps", "v1", "replicationcontrollers"), "scale", "UPDATE", scale(2), "scale"),
        (("apps", "v1", "deployments"), "status", "UPDATE", deployment(), "deployments/status"),
        (("apps", "v1", "daemonsets"), "scale", "UPDATE", deployment(), "daemonsets/scale"),
        (("", "v1", "pods"), "", "UPDATE", pod(), "v1/pods"),
        (("", "v1", "pods"), "resize", "CREATE", pod(), "CREATE of v1/pods/resize"),
        (("apps", "v1", "deployments"), "scale", "CREATE", scale(2), "CREATE of"),
        (("apps", "v1", "deployments"), "", "CONNECT", deployment(), "CONNECT of"),
        (("autoscaling", "v1", "horizontalpodautoscalers"), "", "UPDATE", hpa(), "autoscaling/v1"),
    ],
)
def test_requests_sizeguard_does_not_decide_are_denied(
    key_dir: Path,
    resource: tuple[str, str, str],
    sub_resource: str,
    operation: str,
    obj: dict[str, Any],
    fragment: str,
) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    document = review(obj, obj, operation=operation, resource=resource, sub_resource=sub_resource)
    response = validate(app, document)
    assert response["allowed"] is False and policy.inputs == []
    message = response["status"]["message"]
    assert message.startswith("sizeguard: ") and fragment in message
    assert 'reason="unknown_request"' in app.metrics.render().decode()


# --- ReplicaSets: the pod template, and what ties them to their Deployment ---------------------


def test_a_replicaset_template_change_reaches_the_policy_with_its_owner(key_dir: Path) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    response = validate(app, review(replica_set(), replica_set(cpu="2")))
    assert response["allowed"] is False
    (sent,) = policy.inputs
    assert sent["request"]["kind"] == "ReplicaSet" and sent["request"]["name"] == "web-5d8f9c7b6d"
    assert sent["before"] == guarded_state(replica_set()).model_dump(mode="json")
    assert sent["after"]["containers"]["web"]["cpu_request"] == 2000
    assert sent["before"]["replicas"] == 3
    # sizeguard approves no ReplicaSet change: nothing is verified.
    assert sent["approval"] == {"present": False, "valid": False, "error": None, "claims": None}
    context = sent["context"]
    assert context["owner_before"] == context["owner_after"] == OWNER
    assert context["labels_changed"] is False
    assert context["labels"] == {"app": "web", "pod-template-hash": "5d8f9c7b6d"}
    assert "container web: CPU request: 100m → 2 (+1900%)" in response["status"]["message"]
    assert 'reason="replicaset_denied"' in app.metrics.render().decode()


def test_a_standalone_replicasets_replicas_reach_the_policy(key_dir: Path) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    standalone = replica_set(owner=None)
    response = validate(app, review(standalone, replica_set(owner=None, replicas=8)))
    assert response["allowed"] is False
    (sent,) = policy.inputs
    assert (sent["before"]["replicas"], sent["after"]["replicas"]) == (3, 8)
    assert sent["context"]["owner_before"] is None
    # ...and through its scale subresource, like any scale request
    scaled = review(
        scale(3), scale(8), resource=("apps", "v1", "replicasets"), sub_resource="scale"
    )
    assert validate(app, scaled)["allowed"] is False
    assert policy.inputs[-1]["request"]["kind"] == "ReplicaSet"
    assert policy.inputs[-1]["request"]["subresource"] == "scale"


def test_replica_writes_of_a_deployments_replicaset_reach_the_policy(key_dir: Path) -> None:
    """Its controller does not always put back someone else's count (two active ReplicaSets
    of a paused Deployment), so the policy sees every replica write and decides by writer."""
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    scaled = replica_set(replicas=5)
    scaled["metadata"]["annotations"] = {"deployment.kubernetes.io/desired-replicas": "5"}
    validate(app, review(replica_set(), scaled))
    (sent,) = policy.inputs
    assert (sent["before"]["replicas"], sent["after"]["replicas"]) == (3, 5)
    assert sent["context"]["owner_before"] == OWNER
    # A non-controller owner added (the garbage collector's kind of write) alone changes nothing.
    annotated = replica_set()
    annotated["metadata"]["ownerReferences"].append(
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u-1"}
    )
    assert validate(app, review(replica_set(), annotated)) == {"uid": UID, "allowed": True}
    assert len(policy.inputs) == 1


@pytest.mark.parametrize(
    ("options", "orphan"),
    [
        (None, False),
        ({"propagationPolicy": "Background"}, False),
        ({"propagationPolicy": "Orphan"}, True),
        ({"orphanDependents": True}, True),
        ({"orphanDependents": False}, False),
        ({"propagationPolicy": "Foreground", "orphanDependents": True}, False),
    ],
)
def test_a_delete_says_whether_it_orphans(
    key_dir: Path, options: dict[str, Any] | None, orphan: bool
) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    document = review(replica_set(), None, operation="DELETE")
    if options is not None:
        document["request"]["options"] = {"apiVersion": "meta.k8s.io/v1", **options}
    validate(app, document)
    assert policy.inputs[-1]["request"]["orphan"] is orphan


def test_delete_options_sizeguard_cannot_read_are_refused(key_dir: Path) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    for options in ({"propagationPolicy": "Sideways"}, {"orphanDependents": "yes"}, ["x"]):
        document = review(replica_set(), None, operation="DELETE")
        document["request"]["options"] = options
        response = validate(app, document)
        assert response["allowed"] is False and "options" in response["status"]["message"]
    assert policy.inputs == []


@pytest.mark.parametrize(
    ("new", "owner_after", "labels_changed", "lines"),
    [
        (
            replica_set(owner=None, labels={"app": "orphan"}),
            None,
            True,
            ["controller owner: Deployment web → none", "labels changed"],
        ),
        (replica_set(labels={"app": "elsewhere"}), OWNER, True, ["labels changed"]),
        (
            replica_set(owner={**OWNER, "name": "api", "uid": "u-2"}),
            {**OWNER, "name": "api", "uid": "u-2"},
            False,
            ["controller owner: Deployment web → Deployment api"],
        ),
    ],
)
def test_a_replicaset_taken_from_its_deployment_reaches_the_policy(
    key_dir: Path,
    new: dict[str, Any],
    owner_after: dict[str, str] | None,
    labels_changed: bool,
    lines: list[str],
) -> None:
    policy = FakePolicy()
    response = validate(make_app(key_dir, policy), review(replica_set(), new))
    assert response["allowed"] is False
    (sent,) = policy.inputs
    assert sent["before"] == sent["after"]  # the same pod template
    context = sent["context"]
    assert context["owner_before"] == OWNER and context["owner_after"] == owner_after
    assert context["labels_changed"] is labels_changed
    assert f"(change: {'; '.join(lines)})" in response["status"]["message"]


def test_replicaset_create_and_delete_carry_their_owner(key_dir: Path) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    validate(app, review(None, replica_set(owner=None), operation="CREATE"))
    validate(app, review(replica_set(), None, operation="DELETE"))
    create, delete = policy.inputs
    assert create["before"] is None and create["after"] is not None
    assert create["context"]["owner_before"] is None and create["context"]["owner_after"] is None
    assert delete["context"]["owner_before"] == OWNER and delete["context"]["owner_after"] is None
    assert create["context"]["labels_changed"] is delete["context"]["labels_changed"] is False


@pytest.mark.parametrize(
    ("references", "fragment"),
    [
        ("not a list", "ownerReferences must be a list"),
        (["not an object"], "ownerReferences[0] must be an object"),
        ([{"controller": True, "kind": "Deployment", "name": "web"}], "needs apiVersion, kind"),
        ([{**OWNER, "controller": True}, {**OWNER, "uid": "u-2", "controller": True}], "more than"),
    ],
)
def test_unreadable_owner_references_are_denied_before_the_policy(
    key_dir: Path, references: Any, fragment: str
) -> None:
    policy = FakePolicy()
    new = replica_set(cpu="2")
    new["metadata"]["ownerReferences"] = references
    response = validate(make_app(key_dir, policy), review(replica_set(), new))
    assert response["allowed"] is False and policy.inputs == []
    message = response["status"]["message"]
    assert message.startswith(
        "sizeguard: cannot check this update of ReplicaSet shop/web-5d8f9c7b6d"
    )
    assert fragment in message


def test_a_request_kind_that_does_not_match_its_resource_is_denied(key_dir: Path) -> None:
    document = review(deployment(), deployment(cpu="2"), resource=("apps", "v1", "statefulsets"))
    response = validate(make_app(key_dir), document)
    assert response["allowed"] is False
    assert "must carry a StatefulSet" in response["status"]["message"]


def test_create_and_delete_need_their_object(key_dir: Path) -> None:
    app = make_app(key_dir)
    for document in (
        review(deployment(), None, operation="CREATE"),
        review(None, deployment(), operation="DELETE"),
    ):
        response = validate(app, document)
        assert response["allowed"] is False
        assert "must carry" in response["status"]["message"]


# --- namespaces --------------------------------------------------------------------------------


class CountingNamespaces(StaticNamespaces):
    def __init__(self, labels: Mapping[str, Mapping[str, str]], **kwargs: Any) -> None:
        super().__init__(labels, **kwargs)
        self.asked: list[str] = []

    async def lookup(self, name: str) -> Lookup:
        self.asked.append(name)
        return await super().lookup(name)


class BrokenNamespaces(StaticNamespaces):
    async def lookup(self, name: str) -> Lookup:
        return Lookup(None, "error", "NamespaceError: HTTP 500: boom")


def test_a_namespace_the_webhook_cannot_learn_is_denied_without_the_policy(
    key_dir: Path,
) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy, StaticNamespaces({}))
    response = validate(app, review(deployment(), deployment(cpu="150m")))
    assert response["allowed"] is False and policy.inputs == []
    message = response["status"]["message"]
    assert message.startswith("sizeguard: cannot learn the labels of namespace shop: it does not")
    broken = make_app(key_dir, policy, BrokenNamespaces({}))
    response = validate(broken, review(None, deployment(), operation="CREATE"))
    assert response["allowed"] is False and policy.inputs == []
    assert "could not be read (NamespaceError: HTTP 500: boom)" in response["status"]["message"]
    assert 'reason="namespace_unknown"' in broken.metrics.render().decode()


def test_the_namespace_labels_are_the_ones_the_watch_knows(key_dir: Path) -> None:
    policy = FakePolicy()
    labels = {"shop": {"environment": "production"}}
    validate(
        make_app(key_dir, policy, StaticNamespaces(labels)),
        review(None, deployment(), operation="CREATE"),
    )
    assert policy.inputs[0]["context"]["namespace_labels"] == {"environment": "production"}


# --- recently created --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-03-01T11:58:01Z", True),  # 119 s old
        ("2026-03-01T11:58:00Z", False),  # exactly MIN_AGE_TO_DELETE_SECONDS
        ("2026-03-01T11:00:00Z", False),
        ("2026-03-01T12:05:00Z", True),  # in the future (a clock ahead): fail closed
        ("2026-03-01T11:00:00", True),  # no zone: unreadable
        ("yesterday", True),
        (None, True),
        (1700000000, True),
    ],
)
def test_recently_created_is_true_when_young_or_unreadable(stamp: Any, expected: bool) -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    assert MIN_AGE_TO_DELETE_SECONDS == 120
    obj = {"metadata": {} if stamp is None else {"creationTimestamp": stamp}}
    assert recently_created(obj, now) is expected
    assert recently_created({}, now) is True


def test_a_delete_of_a_young_object_says_so_to_the_policy(key_dir: Path) -> None:
    policy = FakePolicy()
    now = datetime(2026, 1, 1, 0, 1, 0, tzinfo=UTC).timestamp()  # 60 s after CREATED
    app = make_app(key_dir, policy, clock=lambda: now)
    validate(app, review(hpa(), None, operation="DELETE"))
    validate(app, review(hpa(), hpa(minimum=5)))
    delete, update = policy.inputs
    assert delete["context"]["recently_created"] is True
    assert update["context"]["recently_created"] is False  # DELETE only


def test_policy_unavailable_denies(key_dir: Path) -> None:
    app = make_app(key_dir, FakePolicy(error="no answer within 2s"))
    response = validate(app, review(deployment(), deployment(cpu="150m")))
    assert response["allowed"] is False
    assert "policy engine (OPA) is unavailable" in response["status"]["message"]
    assert 'decision="error",dry_run="false",reason="policy_unavailable"' in (
        app.metrics.render().decode()
    )


def test_an_exception_denies_and_does_not_escape(key_dir: Path) -> None:
    app = make_app(key_dir, FakePolicy(raises=True))
    response = validate(app, review(deployment(), deployment(cpu="150m")))
    assert response["allowed"] is False and response["uid"] == UID
    assert "internal error" in response["status"]["message"]


def test_a_slow_policy_is_bounded_by_the_client_timeout() -> None:
    # The real client: OPA at an address that never answers (a listening socket that does not
    # accept HTTP) -> the client's timeout -> deny.
    import socket

    from sizeguard.policy import AsyncPolicyClient

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        async def run() -> dict[str, Any]:
            client = AsyncPolicyClient(f"http://127.0.0.1:{port}", timeout=0.3)
            directory = Path(__file__).parent  # any path: keys are not needed for this request
            app = WebhookApp(
                jwks=JwksFile(directory / "missing.json"),
                namespaces=StaticNamespaces(NAMESPACES),
                policy=client,
            )
            started = time.monotonic()
            body = json.dumps(review(deployment(), deployment(cpu="150m"))).encode()
            _, _, out = await acall(app, "POST", "/validate", body)
            assert time.monotonic() - started < 2
            await client.aclose()
            response: dict[str, Any] = json.loads(out)["response"]
            return response

        response = asyncio.run(run())
    assert response["allowed"] is False
    assert "no answer" in response["status"]["message"]


# --- HTTP surface ------------------------------------------------------------------------------


def test_malformed_body_gets_a_valid_review_with_the_uid(key_dir: Path) -> None:
    document = review(deployment(), deployment(cpu="150m"))
    document["request"]["operation"] = 7
    response = validate(make_app(key_dir), document)
    assert response["allowed"] is False and response["uid"] == UID
    assert "malformed AdmissionReview" in response["status"]["message"]


def test_not_json_gets_a_valid_review_without_uid(key_dir: Path) -> None:
    response = validate(make_app(key_dir), b"\xff{not json")
    assert response["allowed"] is False and response["uid"] == ""


def test_oversized_body_is_denied_without_reading_it(key_dir: Path) -> None:
    app = make_app(key_dir)
    headers = [(b"content-length", str(MAX_BODY_BYTES + 1).encode())]
    status, _, out = call(app, "POST", "/validate", b"{}", headers)
    assert status == 200 and json.loads(out)["response"]["allowed"] is False
    status, _, out = call(app, "POST", "/validate", b" " * (MAX_BODY_BYTES + 10), chunks=7)
    response = json.loads(out)["response"]
    assert status == 200 and response["allowed"] is False
    assert "larger than" in response["status"]["message"]


def test_body_in_chunks_is_read_whole(key_dir: Path) -> None:
    body = json.dumps(review(deployment(), deployment(image="x"))).encode()
    status, _, out = call(make_app(key_dir), "POST", "/validate", body, chunks=5)
    assert status == 200 and json.loads(out)["response"]["allowed"] is True


def test_routes(key_dir: Path) -> None:
    app = make_app(key_dir)
    assert call(app, "GET", "/healthz")[0] == 200
    assert call(app, "GET", "/validate")[0] == 405
    assert call(app, "GET", "/nope")[0] == 404
    status, headers, body = call(app, "GET", "/metrics")
    assert status == 200 and b"sizeguard_webhook_requests_total" in body
    assert headers[b"content-type"].startswith(b"text/plain")


def test_ready_only_with_keys_and_a_policy_answer(key_dir: Path, tmp_path: Path) -> None:
    assert call(make_app(key_dir), "GET", "/readyz")[0] == 200
    status, _, body = call(make_app(key_dir, FakePolicy(error="down")), "GET", "/readyz")
    assert status == 503 and b"OPA" in body
    no_keys = WebhookApp(
        jwks=JwksFile(tmp_path / "absent.json"),
        namespaces=StaticNamespaces(NAMESPACES),
        policy=FakePolicy(),
    )
    status, _, body = call(no_keys, "GET", "/readyz")
    assert status == 503 and b"no trusted keys" in body


def test_not_ready_until_the_namespace_cache_is_synced(key_dir: Path) -> None:
    unsynced = StaticNamespaces(NAMESPACES, ready=False)
    status, _, body = call(make_app(key_dir, namespaces=unsynced), "GET", "/readyz")
    assert status == 503 and body == b"not ready: not synced (static)\n"
    status, _, body = call(make_app(key_dir), "GET", "/readyz")
    assert status == 200
    assert body.startswith(b"ready: 1 trusted key(s), 1 namespaces (static), OPA answers")


def test_without_keys_approvals_cannot_verify_and_unapproved_changes_stay_denied(
    tmp_path: Path, key: SigningKey
) -> None:
    policy = FakePolicy()
    app = WebhookApp(
        jwks=JwksFile(tmp_path / "absent.json"),
        namespaces=StaticNamespaces(NAMESPACES),
        policy=policy,
    )
    old, new = deployment(), deployment(cpu="150m")
    assert validate(app, review(old, new))["allowed"] is False
    assert validate(app, review(old, approve(key, old, new)))["allowed"] is False
    assert [i["approval"]["error"] for i in policy.inputs] == ["missing", "unknown_key"]


# --- JWKS reload -------------------------------------------------------------------------------


def test_jwks_reload_on_change_and_keep_last_good_keys(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    first, second = generate_signing_key(), generate_signing_key()
    path.write_text(json.dumps({"keys": [public_jwk(first.public_key)]}))
    clock = [0.0]
    results: list[bool] = []
    jwks = JwksFile(path, min_interval=1.0, clock=lambda: clock[0], on_reload=results.append)
    current = jwks.current()
    assert current is not None and current.kids == (first.kid,)
    path.write_text(
        json.dumps({"keys": [public_jwk(second.public_key), public_jwk(first.public_key)]})
    )
    assert jwks.current().kids == (first.kid,)  # type: ignore[union-attr]  # within 1 s
    clock[0] = 1.5
    assert jwks.current().kids == (second.kid, first.kid)  # type: ignore[union-attr]
    path.write_text("{broken")
    clock[0] = 3.0
    assert jwks.current().kids == (second.kid, first.kid)  # type: ignore[union-attr]
    assert jwks.last_error is not None
    path.unlink()
    clock[0] = 4.5
    assert jwks.current() is not None  # within the grace period (a file being rewritten)
    clock[0] = 14.0
    assert jwks.current() is None  # past it: trust nothing rather than a stale key
    assert results == [True, True, False, False, False]


def test_an_empty_jwks_revokes_every_key_at_once(tmp_path: Path) -> None:
    """Emptying the JWKS is how an operator revokes a compromised key: it must take effect
    without a restart, and the webhook must then trust nothing."""
    path = tmp_path / "jwks.json"
    key = generate_signing_key()
    path.write_text(json.dumps({"keys": [public_jwk(key.public_key)]}))
    clock = [0.0]
    jwks = JwksFile(path, min_interval=1.0, clock=lambda: clock[0])
    assert jwks.current() is not None
    path.write_text(json.dumps({"keys": []}))
    clock[0] = 1.5
    assert jwks.current() is None
    assert jwks.last_error is not None and "no keys" in jwks.last_error
    path.write_text(json.dumps({"keys": [public_jwk(key.public_key)]}))
    clock[0] = 3.0
    assert jwks.current() is not None


def test_metrics_registry_is_per_app() -> None:
    assert Metrics().registry is not Metrics().registry


def test_a_client_that_disconnects_mid_body_gets_no_answer_and_no_error(key_dir: Path) -> None:
    app = make_app(key_dir)
    sent: list[dict[str, Any]] = []
    messages = [
        {"type": "http.request", "body": b'{"apiVersion"', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/validate", "headers": []}
    asyncio.run(app(scope, receive, send))
    assert sent == []


def test_the_command_refuses_a_bad_certificate_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sizeguard.cli import main

    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    code = main(
        ["webhook", "--tls-cert", str(cert), "--tls-key", str(key), "--jwks", str(tmp_path / "j")]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("sizeguard: cannot load the TLS certificate/key") and err.count("\n") == 1


def test_an_approval_admits_one_write_with_no_memory_in_any_replica(
    key_dir: Path, key: SigningKey
) -> None:
    # A -> B approved, applied; B -> A approved, applied; the first approval presented again
    # on A (now at another resourceVersion): refused by a fresh replica and by the one that
    # admitted it alike, since the approval names the version it was minted for.
    a, b = deployment(rv="1"), deployment(cpu="150m", rv="2")
    forth = approve(key, a, b)
    first, second = make_app(key_dir), make_app(key_dir)
    assert validate(first, review(a, forth))["allowed"] is True
    assert validate(first, review(b, approve(key, b, deployment(rv="3"))))["allowed"] is True
    replayed = copy.deepcopy(forth)
    for app in (first, second):
        response = validate(app, review(deployment(rv="3"), replayed))
        assert response["allowed"] is False
        assert "written since the approval" in response["status"]["message"]
    assert not hasattr(first, "seen")


def test_the_api_server_retrying_the_same_write_gets_the_same_answer(
    key_dir: Path, key: SigningKey
) -> None:
    # Admission may run twice for one write (a retry after a conflict re-reads the object:
    # then its resourceVersion moved and the approval no longer fits, as it should).
    a, b = deployment(), deployment(cpu="150m")
    document = review(a, approve(key, a, b))
    app = make_app(key_dir)
    assert validate(app, document)["allowed"] is True
    assert validate(app, document)["allowed"] is True


def test_lone_surrogates_in_the_request_cannot_break_the_answer(key_dir: Path) -> None:
    document = review(deployment(), deployment(cpu="150m"))
    text = (
        json.dumps(document)
        .replace(UID, "\\ud800-uid")
        .replace('"name": "web"', '"name": "w\\udfff"')
    )
    status, _, out = call(make_app(key_dir), "POST", "/validate", text.encode())
    assert status == 200
    response = json.loads(out)["response"]
    assert response["uid"] == "\ud800-uid" and response["allowed"] is False


def test_the_command_refuses_an_unusable_kubeconfig_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sizeguard.cli import main
    from sizeguard.sandbox.pki import CertificateAuthority

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    serving = CertificateAuthority(tmp_path / "pki").issue(
        "webhook", "webhook", server_names=("127.0.0.1",)
    )
    code = main(
        [
            "webhook",
            "--tls-cert",
            str(serving.cert),
            "--tls-key",
            str(serving.key),
            "--jwks",
            str(tmp_path / "jwks.json"),
            "--kubeconfig",
            str(tmp_path / "absent"),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sizeguard: cannot use {tmp_path / 'absent'} to watch namespaces")
    assert err.count("\n") == 1
