"""The red team's kit: an attacker with the ``edit`` ClusterRole, through the real API server.

Every attack is sent with the sandbox's admin credentials *impersonating* ``mallory``, who holds
nothing but a RoleBinding to the built-in ``edit`` ClusterRole in the test namespaces (plus, for
the two paths ``edit`` does not reach, a narrow Role a cluster might hand out: ``pods/resize``,
``limitranges``). Setup runs as an operator in ``system:masters`` and sizeguard's break-glass
group, so that it works the same before and after creates and deletes are guarded.

A refusal counts only when it comes from sizeguard's admission webhook: HTTP 403 whose message
reads ``admission webhook "<name>.sizeguard.io" denied the request: sizeguard: ...``. An RBAC
403 ("User "mallory" cannot ...") is never taken for one.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import httpx
import pytest

from sizeguard.approvals import (
    APPROVAL_ANNOTATION,
    Op,
    SigningKey,
    load_signing_key,
    mint_approval,
)
from sizeguard.changes import guarded_state, target_of
from sizeguard.sandbox import tools

from .conftest import Sandbox

T = TypeVar("T")

MALLORY: Final = "mallory"
OPERATOR: Final = "sizeguard-redteam-operator"
BREAK_GLASS: Final = "sizeguard:break-glass"
CS: Final = "cs-00000000000000000014"
APPROVER: Final = "alice@example.com"

JSON_PATCH: Final = "application/json-patch+json"
MERGE_PATCH: Final = "application/merge-patch+json"
STRATEGIC: Final = "application/strategic-merge-patch+json"
APPLY: Final = "application/apply-patch+yaml"

KWOK_TOLERATIONS: Final = [
    {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"},
]

_RESOURCES: Final[dict[str, tuple[str, str]]] = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "DaemonSet": ("/apis/apps/v1", "daemonsets"),
    "ReplicaSet": ("/apis/apps/v1", "replicasets"),
    "ReplicationController": ("/api/v1", "replicationcontrollers"),
    "Job": ("/apis/batch/v1", "jobs"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "HorizontalPodAutoscaler/v1": ("/apis/autoscaling/v1", "horizontalpodautoscalers"),
    "Pod": ("/api/v1", "pods"),
    "LimitRange": ("/api/v1", "limitranges"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "ResourceClaimTemplate": ("/apis/resource.k8s.io/v1", "resourceclaimtemplates"),
}


# --- paths and plain reads ---------------------------------------------------------------------


def collection(kind: str, namespace: str) -> str:
    prefix, plural = _RESOURCES[kind]
    return f"{prefix}/namespaces/{namespace}/{plural}"


def path_of(kind: str, namespace: str, name: str) -> str:
    return f"{collection(kind, namespace)}/{name}"


def read(box: Sandbox, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object as stored (read as admin), or None when it does not exist."""
    response = box.kube.http.get(path_of(kind, namespace, name))
    if response.status_code == 404:
        return None
    response.raise_for_status()
    obj: dict[str, Any] = response.json()
    return obj


def must_read(box: Sandbox, kind: str, namespace: str, name: str) -> dict[str, Any]:
    obj = read(box, kind, namespace, name)
    assert obj is not None, f"{kind} {namespace}/{name} does not exist"
    return obj


def poll(probe: Callable[[], T | None], timeout: float, interval: float = 0.25) -> T | None:
    """The first truthy value of ``probe`` within ``timeout`` seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# --- who sends the request ---------------------------------------------------------------------


class Actor:
    """Requests as ``user`` (and ``groups``), impersonated with the sandbox's admin client."""

    def __init__(self, box: Sandbox, user: str, groups: Sequence[str] = ()) -> None:
        self.box = box
        self.user = user
        self.groups = tuple(groups)
        self._identity = [("Impersonate-User", user)] + [("Impersonate-Group", g) for g in groups]

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        headers = list(self._identity)
        content: str | None = None
        json_body: Any = None
        if content_type is not None:
            headers.append(("Content-Type", content_type))
            content = body if isinstance(body, str) else json.dumps(body)
        else:
            json_body = body
        return self.box.kube.http.request(
            method, path, json=json_body, content=content, headers=headers, params=params or {}
        )

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)

    def create(self, manifest: dict[str, Any], kind: str | None = None) -> httpx.Response:
        meta = manifest["metadata"]
        return self.request(
            "POST", collection(kind or manifest["kind"], meta["namespace"]), body=manifest
        )

    def put(self, path: str, obj: dict[str, Any]) -> httpx.Response:
        return self.request("PUT", path, body=obj)

    def patch(
        self,
        path: str,
        body: Any,
        content_type: str = STRATEGIC,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        return self.request("PATCH", path, body=body, content_type=content_type, params=params)

    def delete(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        return self.request("DELETE", path, params=params)

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        binary = tools.find("kubectl")
        if binary is None:
            pytest.skip("kubectl is not installed: run scripts/install-tools")
        identity = [f"--as={self.user}", *(f"--as-group={g}" for g in self.groups)]
        return subprocess.run(
            [str(binary), f"--kubeconfig={self.box.kubeconfig}", *identity, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def operator(box: Sandbox) -> Actor:
    """Setup: cluster admin *and* break-glass, so that guarded creates and deletes pass."""
    return Actor(box, OPERATOR, ("system:masters", BREAK_GLASS))


def mallory(box: Sandbox) -> Actor:
    return Actor(box, MALLORY)


# --- verdicts ----------------------------------------------------------------------------------


def sizeguard_denial(message: str) -> bool:
    """True for a denial by one of sizeguard's webhooks (never for RBAC or validation)."""
    head, found, tail = message.partition("denied the request:")
    return (
        bool(found)
        and 'admission webhook "' in head
        and ".sizeguard.io" in head
        and ("sizeguard" in tail)
    )


class NotRefusedError(AssertionError):
    """sizeguard let the request through (or something else answered it): the path is open."""


class ChangedError(AssertionError):
    """The object moved although its request was refused."""


def message_of(response: httpx.Response) -> str:
    """The Status message of an API server answer (its text when it is not a Status)."""
    try:
        return str(response.json().get("message", ""))
    except (ValueError, AttributeError):
        return response.text


def refused(response: httpx.Response, what: str = "") -> str:
    """Assert that sizeguard's webhook refused the request; return its message."""
    message = message_of(response)
    if response.status_code != 403 or not sizeguard_denial(message):
        label = f"{what}: " if what else ""
        raise NotRefusedError(
            f"{label}NOT refused by sizeguard: HTTP {response.status_code} "
            f"{message[:500] or response.text[:500]}"
        )
    return message


def kubectl_refused(result: subprocess.CompletedProcess[str], what: str = "") -> str:
    output = result.stdout + result.stderr
    if result.returncode == 0 or not sizeguard_denial(output):
        label = f"{what}: " if what else ""
        raise NotRefusedError(
            f"{label}NOT refused by sizeguard (exit {result.returncode}): {output[:600]}"
        )
    return output


def view(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """What must not move when a request is refused: the uid, the spec and the approval."""
    if obj is None:
        return None
    meta = obj["metadata"]
    return {
        "uid": meta.get("uid"),
        "spec": obj.get("spec"),
        # Controllers write their own annotations (deployment.kubernetes.io/revision): only
        # sizeguard's is compared.
        "approval": (meta.get("annotations") or {}).get(APPROVAL_ANNOTATION),
    }


def assert_unchanged(box: Sandbox, before: dict[str, Any], what: str = "") -> dict[str, Any] | None:
    kind, meta = before["kind"], before["metadata"]
    after = read(box, kind, meta["namespace"], meta["name"])
    if view(after) != view(before):
        raise ChangedError(
            f"{what or kind + ' ' + meta['name']}: the object changed although the request was "
            f"refused:\nbefore {view(before)}\nafter  {view(after)}"
        )
    return after


# --- manifests ---------------------------------------------------------------------------------


def container(
    name: str,
    cpu: str = "100m",
    memory: str = "64Mi",
    memory_limit: str | None = None,
) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": cpu, "memory": memory}}
    if memory_limit is not None:
        resources["limits"] = {"memory": memory_limit}
    return {"name": name, "image": f"registry.example/{name}:1.0", "resources": resources}


def workload(
    kind: str,
    namespace: str,
    name: str,
    *,
    cpu: str = "100m",
    replicas: int = 2,
    init: bool = False,
    memory_limit: str | None = None,
    pod_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name}
    spec: dict[str, Any] = {
        "containers": [container("app", cpu, memory_limit=memory_limit)],
        "tolerations": copy.deepcopy(KWOK_TOLERATIONS),
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 0,
    }
    if init:
        spec["initContainers"] = [container("setup", "50m")]
    spec.update(pod_spec or {})
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": dict(labels)}, "spec": spec},
        },
    }
    if kind != "DaemonSet":
        body["spec"]["replicas"] = replicas
    if kind == "StatefulSet":
        body["spec"]["serviceName"] = name
        body["spec"]["podManagementPolicy"] = "Parallel"
    return body


def hpa(
    namespace: str,
    name: str,
    *,
    target_kind: str = "Deployment",
    target: str = "absent",
    minimum: int = 2,
    maximum: int = 4,
) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": target_kind, "name": target},
            "minReplicas": minimum,
            "maxReplicas": maximum,
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


def hpa_v1(namespace: str, name: str, *, target: str, minimum: int, maximum: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": minimum,
            "maxReplicas": maximum,
            "targetCPUUtilizationPercentage": 70,
        },
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# --- setting the stage -------------------------------------------------------------------------


def _ok(response: httpx.Response, what: str, allowed: tuple[int, ...] = (200, 201)) -> None:
    assert response.status_code in allowed, (
        f"{what}: HTTP {response.status_code} {response.text[:400]}"
    )


def setup_create(box: Sandbox, manifest: dict[str, Any], kind: str | None = None) -> dict[str, Any]:
    """Create an object as the operator; returns it as stored."""
    response = operator(box).create(manifest, kind)
    _ok(response, f"creating {manifest['kind']} {manifest['metadata']['name']}", (201,))
    created: dict[str, Any] = response.json()
    return created


def make_namespace(box: Sandbox, name: str, labels: dict[str, str] | None = None) -> str:
    """A namespace where mallory holds ``edit`` (and nothing else)."""
    admin = box.kube.http
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels or {}},
    }
    _ok(admin.post("/api/v1/namespaces", json=body), f"namespace {name}", (201,))
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": name},
    }
    _ok(admin.post(collection("ServiceAccount", name), json=account), "service account", (201, 409))
    bind(box, name, "mallory-edit", {"kind": "ClusterRole", "name": "edit"})
    return name


def bind(box: Sandbox, namespace: str, name: str, role_ref: dict[str, str]) -> None:
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", **role_ref},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": MALLORY}],
    }
    _ok(box.kube.http.post(collection("RoleBinding", namespace), json=binding), f"binding {name}")


def grant(box: Sandbox, namespace: str, name: str, rules: list[dict[str, Any]]) -> None:
    """Give mallory one more Role in ``namespace`` (for paths ``edit`` alone does not reach)."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": rules,
    }
    _ok(box.kube.http.post(collection("Role", namespace), json=role), f"role {name}")
    bind(box, namespace, name, {"kind": "Role", "name": name})


CLEANED: Final = (
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "HorizontalPodAutoscaler",
    "LimitRange",
    "Pod",
)


def clean(box: Sandbox, namespaces: Sequence[str]) -> None:
    """Delete what one test made (and what an admitted attack made), so that the kwok nodes
    keep room for the next test's pods. As the operator: break-glass passes every guard."""
    actor = operator(box)
    for namespace in namespaces:
        for kind in CLEANED:
            actor.delete(collection(kind, namespace), {"propagationPolicy": "Background"})


def delete_namespace(box: Sandbox, name: str) -> None:
    box.kube.http.delete(f"/api/v1/namespaces/{name}")


@dataclass
class Stage:
    """The module's namespaces: ``dev`` (nothing special), ``prod`` (production by name) and
    ``labelled`` (production by the label ``environment: production`` only)."""

    box: Sandbox
    dev: str
    prod: str
    labelled: str
    key: SigningKey

    @property
    def mallory(self) -> Actor:
        return mallory(self.box)

    @property
    def operator(self) -> Actor:
        return operator(self.box)

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return self.dev, self.prod, self.labelled


def stage(box: Sandbox) -> Generator[Stage, None, None]:
    info = box.state.info.get("webhook")
    if not info:
        pytest.fail(
            "the sandbox runs without the webhook: start it with `sandbox up --with-webhook`"
        )
    run = uuid.uuid4().hex[:5]
    names = [f"bp-{run}-dev", f"bp-{run}-prod", f"bp-{run}-lbl"]
    try:
        make_namespace(box, names[0])
        make_namespace(box, names[1])
        make_namespace(box, names[2], {"environment": "production"})
        yield Stage(box, names[0], names[1], names[2], load_signing_key(Path(info["keys"])))
    finally:
        for name in names:
            delete_namespace(box, name)


# --- pods --------------------------------------------------------------------------------------


def pods(box: Sandbox, namespace: str, app: str) -> list[dict[str, Any]]:
    response = box.kube.http.get(
        collection("Pod", namespace), params={"labelSelector": f"app.kubernetes.io/name={app}"}
    )
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def running_pods(
    box: Sandbox, namespace: str, app: str, count: int, timeout: float = 60
) -> list[dict[str, Any]]:
    def probe() -> list[dict[str, Any]] | None:
        found = [
            p for p in pods(box, namespace, app) if p.get("status", {}).get("phase") == "Running"
        ]
        return found if len(found) >= count else None

    found = poll(probe, timeout)
    assert found, f"{count} running pod(s) of {namespace}/{app} (kwok) did not appear in {timeout}s"
    return found


def report_resize_support(box: Sandbox, pod: dict[str, Any]) -> None:
    """Report the running containers' resources in the pod's status, as a kubelet of 1.33 or
    later does. kwok does not, and without them the API server refuses any resize of a running
    pod ("Pod running on node without support for resize") before admission is asked."""
    statuses = copy.deepcopy(pod["status"]["containerStatuses"])
    by_name = {c["name"]: c.get("resources", {}) for c in pod["spec"]["containers"]}
    for status in statuses:
        status["resources"] = by_name[status["name"]]
    meta = pod["metadata"]
    response = box.kube.http.patch(
        f"{path_of('Pod', meta['namespace'], meta['name'])}/status",
        content=json.dumps({"status": {"containerStatuses": statuses}}),
        headers={"Content-Type": STRATEGIC},
    )
    _ok(response, f"reporting the resources of pod {meta['name']}")


def pod_cpu(pod: dict[str, Any]) -> str:
    value: str = pod["spec"]["containers"][0]["resources"].get("requests", {}).get("cpu", "")
    return value


def owned_replica_set(
    box: Sandbox, deployment: dict[str, Any], timeout: float = 30
) -> dict[str, Any]:
    ns, uid = deployment["metadata"]["namespace"], deployment["metadata"]["uid"]

    def probe() -> dict[str, Any] | None:
        items = box.kube.http.get(collection("ReplicaSet", ns)).json()["items"]
        owned = [
            rs
            for rs in items
            if any(ref.get("uid") == uid for ref in rs["metadata"].get("ownerReferences", []))
        ]
        # A list's items carry no apiVersion and kind: put them back (assert_unchanged reads them).
        return (
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", **owned[0]} if len(owned) == 1 else None
        )

    found = poll(probe, timeout)
    assert found, f"the ReplicaSet of {ns}/{deployment['metadata']['name']} did not appear"
    return found


# --- approvals ---------------------------------------------------------------------------------


def mint(
    key: SigningKey,
    old: dict[str, Any],
    new: dict[str, Any],
    *,
    op: Op = "apply",
    now: float | None = None,
) -> str:
    """An approval for ``old`` -> ``new``, bound to ``old``'s resourceVersion."""
    return mint_approval(
        key,
        change_set_id=CS,
        op=op,
        target=target_of(old),
        before=guarded_state(old),
        after=guarded_state(new),
        subject=APPROVER,
        resource_version=old["metadata"]["resourceVersion"],
        now=now,
    )


def with_token(obj: dict[str, Any], token: str) -> dict[str, Any]:
    changed = copy.deepcopy(obj)
    changed["metadata"].setdefault("annotations", {})[APPROVAL_ANNOTATION] = token
    return changed


def approved_update(
    box: Sandbox,
    actor: Actor,
    key: SigningKey,
    kind: str,
    namespace: str,
    name: str,
    edit: Callable[[dict[str, Any]], None],
    *,
    op: Op = "apply",
    attempts: int = 20,
) -> tuple[httpx.Response, str]:
    """GET, edit, mint an approval for exactly that write, PUT it (with the resourceVersion as
    precondition, so a conflict is a 409 and is retried). Returns the response and the token."""
    path = path_of(kind, namespace, name)
    for _ in range(attempts):
        current = must_read(box, kind, namespace, name)
        changed = copy.deepcopy(current)
        edit(changed)
        token = mint(key, current, changed, op=op)
        response = actor.put(path, with_token(changed, token))
        if response.status_code != 409:
            return response, token
        time.sleep(0.1)
    raise AssertionError(f"PUT {path}: conflicts kept coming")


def put_edit(
    box: Sandbox,
    actor: Actor,
    kind: str,
    namespace: str,
    name: str,
    edit: Callable[[dict[str, Any]], None],
) -> httpx.Response:
    """GET, edit, PUT as ``actor``; again on a conflict (controllers write status meanwhile)."""
    path = path_of(kind, namespace, name)
    for _ in range(20):
        changed = copy.deepcopy(must_read(box, kind, namespace, name))
        edit(changed)
        response = actor.put(path, changed)
        if response.status_code != 409:
            return response
        time.sleep(0.1)
    raise AssertionError(f"PUT {path}: conflicts kept coming")


# --- workloads made for one test ---------------------------------------------------------------


def name_of(obj: dict[str, Any]) -> str:
    name: str = obj["metadata"]["name"]
    return name


def settled(box: Sandbox, obj: dict[str, Any]) -> dict[str, Any]:
    """Read back once the controller has seen the object (observedGeneration), so that later
    reads compare against what the controller made of it."""
    kind, meta = obj["kind"], obj["metadata"]

    def probe() -> dict[str, Any] | None:
        current = must_read(box, kind, meta["namespace"], meta["name"])
        seen = current.get("status", {}).get("observedGeneration")
        return current if seen == current["metadata"].get("generation") else None

    return poll(probe, 20) or must_read(box, kind, meta["namespace"], meta["name"])


def new(st: Stage, kind: str, ns: str, prefix: str, **options: Any) -> dict[str, Any]:
    """A fresh workload created by the operator, read back once its controller settled."""
    return settled(st.box, setup_create(st.box, workload(kind, ns, unique(prefix), **options)))


def replicas_of(box: Sandbox, obj: dict[str, Any]) -> int | None:
    current = read(box, obj["kind"], obj["metadata"]["namespace"], name_of(obj))
    return None if current is None else current["spec"].get("replicas")


def set_cpu(cpu: str) -> Callable[[dict[str, Any]], None]:
    """An edit that sets the CPU request of a workload's first container."""

    def edit(obj: dict[str, Any]) -> None:
        obj["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = cpu

    return edit


def set_min_replicas(value: int) -> Callable[[dict[str, Any]], None]:
    def edit(obj: dict[str, Any]) -> None:
        obj["spec"]["minReplicas"] = value

    return edit


# --- approval replay: A→B approved, B→A approved, then A→B's approval again ---------------------

HPA_KIND: Final = "HorizontalPodAutoscaler"
REPLAYS: Final[
    dict[str, tuple[Callable[[dict[str, Any]], None], Callable[[dict[str, Any]], None]]]
] = {
    "Deployment": (set_cpu("150m"), set_cpu("100m")),
    HPA_KIND: (set_min_replicas(3), set_min_replicas(2)),
}


def replayable(st: Stage, kind: str, ns: str) -> dict[str, Any]:
    """A Deployment (cpu 100m) or an HPA (minReplicas 2, on a target that does not exist)."""
    if kind == HPA_KIND:
        return setup_create(st.box, hpa(ns, unique("replay")))
    return new(st, "Deployment", ns, "replay")


def round_trip(st: Stage, kind: str, obj: dict[str, Any]) -> str:
    """Apply A→B and B→A as mallory, each with its own approval; return A→B's token."""
    forth, back = REPLAYS[kind]
    ns, name = obj["metadata"]["namespace"], name_of(obj)
    response, token = approved_update(st.box, st.mallory, st.key, kind, ns, name, forth)
    assert response.status_code == 200, f"the approved A→B was refused: {response.text[:500]}"
    response, _ = approved_update(st.box, st.mallory, st.key, kind, ns, name, back, op="rollback")
    assert response.status_code == 200, f"the approved B→A was refused: {response.text[:500]}"
    return token


def replay(st: Stage, kind: str, obj: dict[str, Any], token: str) -> httpx.Response:
    """A→B again, carrying A→B's approval (PUT of the whole object, as mallory)."""
    forth, _ = REPLAYS[kind]

    def edit(changed: dict[str, Any]) -> None:
        forth(changed)
        changed["metadata"].setdefault("annotations", {})[APPROVAL_ANNOTATION] = token

    return put_edit(st.box, st.mallory, kind, obj["metadata"]["namespace"], name_of(obj), edit)
