"""The bypass suite (issue 14): every path around sizeguard an attacker with ``edit`` could take.

Each attack is sent as ``mallory`` (the admin kubeconfig impersonating a user who holds only the
built-in ``edit`` ClusterRole in the test namespaces) through the real kube-apiserver with the
sandbox's webhook registered. Each test asserts that sizeguard's webhook refused the request
(HTTP 403, ``admission webhook "...sizeguard.io" denied the request: sizeguard: ...``) and that
the object read back afterwards is unchanged (for an HPA create: that no HPA exists and the
workload's replicas did not move).

Tests are named after the path of the issue they close: ``test_path1_...`` to ``test_path9_...``,
then the direct edits and forged approvals sizeguard already refused, then ``test_extra_...``:
further paths found by the red team. Extras that issue 14's design does not cover are marked
``xfail(strict=True)`` with the reason, so they show as XFAIL until someone closes them (then
XPASS fails the run: remove the mark). ``test_premise_...`` checks a fact the threat model rests
on (what ``edit`` cannot do).

Run against a sandbox of your own::

    .venv/bin/sizeguard sandbox up --dir /tmp/redteam-sb --with-webhook
    SIZEGUARD_TEST_SANDBOX_DIR=/tmp/redteam-sb .venv/bin/pytest tests/integration/test_bypass.py -v
"""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sizeguard.approvals import APPROVAL_ANNOTATION, APPROVAL_TYP, Op, generate_signing_key

from .conftest import Sandbox
from .redteam import (
    APPLY,
    HPA_KIND,
    JSON_PATCH,
    KWOK_TOLERATIONS,
    MALLORY,
    MERGE_PATCH,
    REPLAYS,
    STRATEGIC,
    NotRefusedError,
    Stage,
    approved_update,
    assert_unchanged,
    clean,
    collection,
    grant,
    hpa,
    hpa_v1,
    kubectl_refused,
    message_of,
    mint,
    must_read,
    name_of,
    new,
    owned_replica_set,
    path_of,
    pod_cpu,
    pods,
    poll,
    put_edit,
    read,
    refused,
    replay,
    replayable,
    replicas_of,
    report_resize_support,
    round_trip,
    running_pods,
    set_cpu,
    setup_create,
    sizeguard_denial,
    stage,
    unique,
    with_token,
    workload,
)

HPA = HPA_KIND
NOT_COVERED = pytest.mark.xfail(
    strict=True,
    raises=NotRefusedError,
    reason="open: not covered by issue 14's design (see the red team's report)",
)


@pytest.fixture(scope="module")
def st(sandbox: Sandbox) -> Iterator[Stage]:
    yield from stage(sandbox)


@pytest.fixture(autouse=True)
def _clean(st: Stage) -> Iterator[None]:
    yield
    clean(st.box, st.namespaces)


@pytest.fixture(scope="module")
def runtime_classes(sandbox: Sandbox) -> Iterator[tuple[str, str]]:
    """Two RuntimeClasses created by the admin: one plain, one with a 250m CPU / 256Mi overhead."""
    suffix = unique("bp")
    plain, heavy = f"{suffix}-plain", f"{suffix}-overhead"
    path = "/apis/node.k8s.io/v1/runtimeclasses"
    overhead = {"overhead": {"podFixed": {"cpu": "250m", "memory": "256Mi"}}}
    for name, extra in ((plain, {}), (heavy, overhead)):
        body: dict[str, Any] = {
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": name},
            "handler": "runc",
            **extra,
        }
        response = sandbox.kube.http.post(path, json=body)
        assert response.status_code == 201, response.text
    yield plain, heavy
    for name in (plain, heavy):
        sandbox.kube.http.delete(f"{path}/{name}")


@pytest.fixture(scope="module")
def resize_granted(st: Stage) -> str:
    """``edit`` cannot resize pods (see the premise test): mallory gets a narrow Role for
    ``pods/resize`` in the dev namespace, as a cluster might give a team or an autoscaler."""
    rules = [{"apiGroups": [""], "resources": ["pods/resize"], "verbs": ["get", "patch", "update"]}]
    grant(st.box, st.dev, "pod-resizer", rules)
    return st.dev


@pytest.fixture(scope="module")
def limitranges_granted(st: Stage) -> tuple[str, str]:
    """``edit`` cannot write LimitRanges: mallory gets a Role for them in both production
    namespaces (a namespace owner's custom role)."""
    rules = [
        {
            "apiGroups": [""],
            "resources": ["limitranges"],
            "verbs": ["get", "list", "create", "update", "patch", "delete"],
        }
    ]
    for ns in (st.prod, st.labelled):
        grant(st.box, ns, "limitrange-writer", rules)
    return st.prod, st.labelled


# =============================================================================================
# Path 1: HPAs. Creating one hands the workload's replica count to the (exempt) HPA controller.
# =============================================================================================

HPA_CREATES: dict[str, tuple[str, str, int, int]] = {
    # case: (workload kind, how, minReplicas, maxReplicas); the workload runs 2 replicas
    "deployment-up": ("Deployment", "v2", 5, 6),
    "deployment-down": ("Deployment", "v2", 1, 1),
    "statefulset-up": ("StatefulSet", "v2", 5, 6),
    "deployment-through-autoscaling-v1": ("Deployment", "v1", 5, 6),
    "deployment-kubectl-autoscale": ("Deployment", "kubectl", 5, 6),
}


def _hpa_evidence(st: Stage, target: dict[str, Any], hpa_name: str) -> str:
    """When an HPA got through: how far the HPA controller moved the workload (for the report)."""
    ns = target["metadata"]["namespace"]
    if read(st.box, HPA, ns, hpa_name) is None:
        return ""
    start = target["spec"]["replicas"]
    moved = poll(lambda: (replicas_of(st.box, target) or start) != start, 15)
    return f"HPA {ns}/{hpa_name} exists; the HPA controller " + (
        f"moved replicas {start} → {replicas_of(st.box, target)}"
        if moved
        else "has not moved it yet"
    )


@pytest.mark.parametrize("case", sorted(HPA_CREATES))
def test_path1_creating_an_hpa_is_refused(st: Stage, case: str) -> None:
    kind, how, minimum, maximum = HPA_CREATES[case]
    target = new(st, kind, st.dev, "hpa-target")
    name = name_of(target)
    if how == "kubectl":
        result = st.mallory.kubectl(
            "-n", st.dev, "autoscale", f"deployment/{name}", f"--min={minimum}",
            f"--max={maximum}", "--cpu=50%",
        )  # fmt: skip
        evidence = _hpa_evidence(st, target, name)
        kubectl_refused(result, evidence)
    else:
        body = (
            hpa_v1(st.dev, name, target=name, minimum=minimum, maximum=maximum)
            if how == "v1"
            else hpa(st.dev, name, target_kind=kind, target=name, minimum=minimum, maximum=maximum)
        )
        response = st.mallory.create(body, HPA if how == "v2" else "HorizontalPodAutoscaler/v1")
        refused(response, _hpa_evidence(st, target, name))
    assert read(st.box, HPA, st.dev, name) is None, "an HPA exists after a refused create"
    assert_unchanged(st.box, target)


def test_path1_deleting_a_guarded_hpa_is_refused(st: Stage) -> None:
    target = new(st, "Deployment", st.dev, "hpa-guarded")
    guard = setup_create(st.box, hpa(st.dev, name_of(target), target=name_of(target)))
    response = st.mallory.delete(path_of(HPA, st.dev, name_of(guard)))
    refused(response)
    assert_unchanged(st.box, guard)


def test_path1_recreating_a_removed_hpa_with_other_bounds_is_refused(st: Stage) -> None:
    target = new(st, "Deployment", st.dev, "hpa-recreated")
    name = name_of(target)
    setup_create(st.box, hpa(st.dev, name, target=name, minimum=2, maximum=4))
    # An operator removes the HPA (break-glass); the attacker puts it back with other bounds.
    assert st.operator.delete(path_of(HPA, st.dev, name)).status_code == 200
    poll(lambda: read(st.box, HPA, st.dev, name) is None, 10)
    response = st.mallory.create(hpa(st.dev, name, target=name, minimum=6, maximum=8))
    refused(response, _hpa_evidence(st, target, name))
    assert read(st.box, HPA, st.dev, name) is None
    assert_unchanged(st.box, target)


def test_path1_retargeting_an_hpa_is_refused(st: Stage) -> None:
    first = new(st, "Deployment", st.dev, "hpa-first")
    second = new(st, "Deployment", st.dev, "hpa-second", replicas=1)
    guard = setup_create(st.box, hpa(st.dev, unique("retarget"), target=name_of(first)))
    body = {"spec": {"scaleTargetRef": {"name": name_of(second)}}}
    response = st.mallory.patch(path_of(HPA, st.dev, name_of(guard)), body, MERGE_PATCH)
    refused(response)
    assert_unchanged(st.box, guard)
    assert_unchanged(st.box, second)


# =============================================================================================
# Path 2: a rollout held open (old and new pods side by side for as long as the attacker likes).
# =============================================================================================


def _held_open_ssa(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "strategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}},
            "minReadySeconds": 86400,
            "progressDeadlineSeconds": 172800,
        },
    }


HELD_OPEN = {
    "spec": {
        "strategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}},
        "minReadySeconds": 86400,
        "progressDeadlineSeconds": 172800,
        "template": {"metadata": {"annotations": {"redteam/rollout": "now"}}},
    }
}

ROLLOUTS: dict[str, tuple[str, Callable[[str, str], Any], str]] = {
    "deployment-max-surge-100-percent": (
        "Deployment",
        lambda ns, name: {"spec": {"strategy": {"rollingUpdate": {"maxSurge": "100%"}}}},
        STRATEGIC,
    ),
    "deployment-max-unavailable-0": (
        "Deployment",
        lambda ns, name: {"spec": {"strategy": {"rollingUpdate": {"maxUnavailable": 0}}}},
        STRATEGIC,
    ),
    "deployment-min-ready-seconds": (
        "Deployment",
        lambda ns, name: {"spec": {"minReadySeconds": 300}},
        STRATEGIC,
    ),
    "deployment-progress-deadline-seconds": (
        "Deployment",
        lambda ns, name: {"spec": {"progressDeadlineSeconds": 2147483647}},
        STRATEGIC,
    ),
    "deployment-held-open-with-a-template-edit": (
        "Deployment",
        lambda ns, name: HELD_OPEN,
        STRATEGIC,
    ),
    "deployment-held-open-json-patch": (
        "Deployment",
        lambda ns, name: [
            {"op": "replace", "path": "/spec/strategy/rollingUpdate/maxSurge", "value": "100%"},
            {"op": "replace", "path": "/spec/strategy/rollingUpdate/maxUnavailable", "value": 0},
            {"op": "add", "path": "/spec/minReadySeconds", "value": 86400},
            {"op": "replace", "path": "/spec/progressDeadlineSeconds", "value": 172800},
        ],
        JSON_PATCH,
    ),
    "deployment-held-open-server-side-apply": ("Deployment", _held_open_ssa, APPLY),
    "daemonset-max-surge": (
        "DaemonSet",
        lambda ns, name: {
            "spec": {"updateStrategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}}}
        },
        STRATEGIC,
    ),
    "daemonset-min-ready-seconds": (
        "DaemonSet",
        lambda ns, name: {"spec": {"minReadySeconds": 300}},
        STRATEGIC,
    ),
    "statefulset-min-ready-seconds": (
        "StatefulSet",
        lambda ns, name: {"spec": {"minReadySeconds": 300}},
        STRATEGIC,
    ),
}


@pytest.mark.parametrize("case", sorted(ROLLOUTS))
def test_path2_a_rollout_held_open_is_refused(st: Stage, case: str) -> None:
    kind, body, content_type = ROLLOUTS[case]
    obj = new(st, kind, st.dev, "rollout")
    params = {"fieldManager": MALLORY, "force": "true"} if content_type == APPLY else None
    path = path_of(kind, st.dev, name_of(obj))
    refused(st.mallory.patch(path, body(st.dev, name_of(obj)), content_type, params))
    assert_unchanged(st.box, obj)


# =============================================================================================
# Path 3: an init container turned into a sidecar (its requests then count for the pod's life).
# =============================================================================================

SIDECARS: dict[str, tuple[str, Any, str]] = {
    "deployment": (
        "Deployment",
        {
            "spec": {
                "template": {
                    "spec": {"initContainers": [{"name": "setup", "restartPolicy": "Always"}]}
                }
            }
        },
        STRATEGIC,
    ),
    "deployment-json-patch": (
        "Deployment",
        [
            {
                "op": "add",
                "path": "/spec/template/spec/initContainers/0/restartPolicy",
                "value": "Always",
            }
        ],
        JSON_PATCH,
    ),
    "statefulset": (
        "StatefulSet",
        [
            {
                "op": "add",
                "path": "/spec/template/spec/initContainers/0/restartPolicy",
                "value": "Always",
            }
        ],
        JSON_PATCH,
    ),
    "daemonset": (
        "DaemonSet",
        [
            {
                "op": "add",
                "path": "/spec/template/spec/initContainers/0/restartPolicy",
                "value": "Always",
            }
        ],
        JSON_PATCH,
    ),
}


@pytest.mark.parametrize("case", sorted(SIDECARS))
def test_path3_an_init_container_turned_into_a_sidecar_is_refused(st: Stage, case: str) -> None:
    kind, body, content_type = SIDECARS[case]
    obj = new(st, kind, st.dev, "sidecar", init=True)
    refused(st.mallory.patch(path_of(kind, st.dev, name_of(obj)), body, content_type))
    assert_unchanged(st.box, obj)


# =============================================================================================
# Path 4: runtimeClassName switched to a RuntimeClass with overhead.
# =============================================================================================


@pytest.mark.parametrize(
    ("kind", "start"),
    [
        ("Deployment", "unset"),
        ("Deployment", "plain"),
        ("StatefulSet", "unset"),
        ("DaemonSet", "unset"),
    ],
)
def test_path4_switching_to_a_runtime_class_with_overhead_is_refused(
    st: Stage, runtime_classes: tuple[str, str], kind: str, start: str
) -> None:
    plain, heavy = runtime_classes
    pod_spec = {"runtimeClassName": plain} if start == "plain" else None
    obj = new(st, kind, st.dev, "runtime", pod_spec=pod_spec)
    body = {"spec": {"template": {"spec": {"runtimeClassName": heavy}}}}
    refused(st.mallory.patch(path_of(kind, st.dev, name_of(obj)), body))
    assert_unchanged(st.box, obj)


# =============================================================================================
# Path 5: pod-level resources, and resources other than cpu and memory.
# =============================================================================================


def _container_resources(resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "spec": {"template": {"spec": {"containers": [{"name": "app", "resources": resources}]}}}
    }


RESOURCES: dict[str, dict[str, Any]] = {
    "pod-level-resources": {
        "spec": {
            "template": {
                "spec": {
                    "resources": {
                        "requests": {"cpu": "4", "memory": "1Gi"},
                        "limits": {"cpu": "4", "memory": "1Gi"},
                    }
                }
            }
        }
    },
    "ephemeral-storage-request": _container_resources({"requests": {"ephemeral-storage": "50Gi"}}),
    "ephemeral-storage-limit": _container_resources({"limits": {"ephemeral-storage": "100Gi"}}),
    "extended-resource": _container_resources(
        {"requests": {"example.com/gpu": "4"}, "limits": {"example.com/gpu": "4"}}
    ),
    "hugepages": _container_resources(
        {"requests": {"hugepages-2Mi": "1Gi"}, "limits": {"hugepages-2Mi": "1Gi"}}
    ),
}


@pytest.mark.parametrize("case", sorted(RESOURCES))
def test_path5_pod_level_and_other_resources_are_refused(st: Stage, case: str) -> None:
    obj = new(st, "Deployment", st.dev, "resources")
    refused(st.mallory.patch(path_of("Deployment", st.dev, name_of(obj)), RESOURCES[case]))
    assert_unchanged(st.box, obj)


# =============================================================================================
# Path 6: in-place pod resize (pods/resize) of a running pod of a guarded workload.
# =============================================================================================

RESIZES = {
    "cpu-request": {"requests": {"cpu": "2"}},
    "memory-request": {"requests": {"memory": "8Gi"}},
}


@pytest.mark.parametrize("case", sorted(RESIZES))
def test_path6_in_place_pod_resize_is_refused(st: Stage, resize_granted: str, case: str) -> None:
    if not st.box.state.info.get("kwok"):
        pytest.skip("the sandbox runs without kwok: no pod is Running")
    obj = new(st, "Deployment", resize_granted, "resize", replicas=1)
    pod = running_pods(st.box, resize_granted, name_of(obj), 1)[0]
    report_resize_support(st.box, pod)
    pod_name = pod["metadata"]["name"]
    body = {"spec": {"containers": [{"name": "app", "resources": RESIZES[case]}]}}
    path = f"{collection('Pod', resize_granted)}/{pod_name}/resize"
    refused(st.mallory.patch(path, body))
    after = must_read(st.box, "Pod", resize_granted, pod_name)
    assert after["spec"]["containers"] == pod["spec"]["containers"], "the pod was resized"
    assert_unchanged(st.box, obj)


def test_premise_edit_alone_cannot_resize_pods(st: Stage) -> None:
    # Where mallory holds only `edit`, RBAC refuses pods/resize before any webhook is asked
    # (the pod need not even exist): path 6 needs a principal granted pods/resize.
    path = f"{collection('Pod', st.labelled)}/any-pod/resize"
    body = {"spec": {"containers": [{"name": "app", "resources": RESIZES["cpu-request"]}]}}
    response = st.mallory.patch(path, body)
    message = message_of(response)
    assert response.status_code == 403, response.text
    assert 'cannot patch resource "pods/resize"' in message and not sizeguard_denial(message)


def test_premise_a_pod_is_not_resized_through_its_main_resource(st: Stage) -> None:
    # Only pods/resize may change a pod's resources: the API server refuses it on the pod.
    obj = new(st, "Deployment", st.dev, "pod-main", replicas=1)
    found = poll(lambda: pods(st.box, st.dev, name_of(obj)), 30)
    assert found, "no pod appeared"
    pod = found[0]
    body = {"spec": {"containers": [{"name": "app", "resources": RESIZES["cpu-request"]}]}}
    response = st.mallory.patch(path_of("Pod", st.dev, pod["metadata"]["name"]), body)
    assert response.status_code == 422 and "sizeguard" not in response.text, response.text
    after = must_read(st.box, "Pod", st.dev, pod["metadata"]["name"])
    assert after["spec"]["containers"] == pod["spec"]["containers"]


# =============================================================================================
# Path 7: approval replay — A→B approved, B→A approved, then the A→B annotation again.
# =============================================================================================


@pytest.mark.parametrize("kind", ["Deployment", HPA])
def test_path7_an_approval_replayed_after_a_round_trip_is_refused(st: Stage, kind: str) -> None:
    obj = replayable(st, kind, st.dev)
    token = round_trip(st, kind, obj)
    before = must_read(st.box, kind, st.dev, name_of(obj))
    refused(replay(st, kind, obj, token))
    # ... and as a merge patch carrying just the field and the annotation.
    forth, _ = REPLAYS[kind]
    changed = copy.deepcopy(before)
    forth(changed)
    body = {"metadata": {"annotations": {APPROVAL_ANNOTATION: token}}, "spec": changed["spec"]}
    refused(st.mallory.patch(path_of(kind, st.dev, name_of(obj)), body, MERGE_PATCH))
    assert_unchanged(st.box, before)


# =============================================================================================
# Path 8: a namespace that is production by label only (environment: production).
# =============================================================================================


def _remove_memory_limit(o: dict[str, Any]) -> None:
    o["spec"]["template"]["spec"]["containers"][0]["resources"].pop("limits")


LABELLED: dict[str, tuple[Callable[[dict[str, Any]], None], Op]] = {
    # Production rules: a memory limit stays set (keep_limits), replicas never go to 0.
    "memory-limit-removed": (_remove_memory_limit, "apply"),
    "replicas-to-zero": (lambda o: o["spec"].update(replicas=0), "rollback"),
}


@pytest.mark.parametrize("case", sorted(LABELLED))
def test_path8_a_namespace_production_by_label_only_gets_the_production_rules(
    st: Stage, case: str
) -> None:
    edit, op = LABELLED[case]
    # Control: the same approved change is admitted in an ordinary namespace.
    control = new(st, "Deployment", st.dev, "label-control", memory_limit="128Mi")
    response, _ = approved_update(
        st.box, st.mallory, st.key, "Deployment", st.dev, name_of(control), edit, op=op
    )
    assert response.status_code == 200, f"control: {response.text[:500]}"
    obj = new(st, "Deployment", st.labelled, "label-prod", memory_limit="128Mi")
    response, _ = approved_update(
        st.box, st.mallory, st.key, "Deployment", st.labelled, name_of(obj), edit, op=op
    )
    message = refused(response)
    assert "production" in message, f"refused, but not by a production rule: {message}"
    assert_unchanged(st.box, obj)


def test_a_held_open_rollout_is_refused_even_with_an_approval(st: Stage) -> None:
    """The peak of a rollout (replicas plus maxSurge) is held to the same limits as replicas:
    a human's approval of maxSurge 100000% (3 replicas: 3003 pods at once) is not enough."""
    obj = new(st, "Deployment", st.dev, "surge-approved")

    def surge(o: dict[str, Any]) -> None:
        o["spec"]["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "100000%", "maxUnavailable": 0},
        }

    response, _ = approved_update(
        st.box, st.mallory, st.key, "Deployment", st.dev, name_of(obj), surge
    )
    message = refused(response)
    assert "rollout_peak_too_large" in message, message
    assert_unchanged(st.box, obj)


# =============================================================================================
# Path 9: LimitRanges in production, and delete-and-recreate of a production workload.
# =============================================================================================


def _limit_range(ns: str, name: str, cpu: str = "4") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {"cpu": cpu, "memory": "8Gi"},
                    "defaultRequest": {"cpu": cpu, "memory": "8Gi"},
                }
            ]
        },
    }


@pytest.mark.parametrize("case", ["create", "create-in-the-labelled-namespace", "update", "delete"])
def test_path9_a_limitrange_in_a_production_namespace_is_refused(
    st: Stage, limitranges_granted: tuple[str, str], case: str
) -> None:
    ns = st.labelled if case.endswith("labelled-namespace") else st.prod
    name = unique("defaults")
    if case.startswith("create"):
        refused(st.mallory.create(_limit_range(ns, name)))
        assert read(st.box, "LimitRange", ns, name) is None, (
            "a LimitRange exists after a refused create"
        )
        return
    existing = setup_create(st.box, _limit_range(ns, name, cpu="100m"))
    path = path_of("LimitRange", ns, name)
    if case == "update":
        body = {
            "spec": {"limits": [{"type": "Container", "default": {"cpu": "4", "memory": "8Gi"}}]}
        }
        refused(st.mallory.patch(path, body, MERGE_PATCH))
    else:
        refused(st.mallory.delete(path))
    after = read(st.box, "LimitRange", ns, name)
    assert after is not None and after["spec"] == existing["spec"]


@pytest.mark.parametrize(
    "case",
    [
        "kubectl-replace-force",
        "delete",
        "delete-orphaning-the-pods",
        "delete-in-the-labelled-namespace",
        "create",
    ],
)
def test_path9_deleting_or_creating_a_production_workload_is_refused(
    st: Stage, tmp_path: Path, case: str
) -> None:
    ns = st.labelled if case.endswith("labelled-namespace") else st.prod
    if case == "create":
        name = unique("newcomer")
        refused(st.mallory.create(workload("Deployment", ns, name, cpu="4", replicas=20)))
        assert read(st.box, "Deployment", ns, name) is None
        return
    obj = new(st, "Deployment", ns, "phoenix")
    path = path_of("Deployment", ns, name_of(obj))
    if case == "kubectl-replace-force":
        bigger = workload("Deployment", ns, name_of(obj), cpu="4", replicas=20)
        manifest = tmp_path / "bigger.json"
        manifest.write_text(json.dumps(bigger))
        kubectl_refused(st.mallory.kubectl("replace", "--force", "-f", str(manifest)))
    elif case == "delete-orphaning-the-pods":
        refused(st.mallory.delete(path, {"propagationPolicy": "Orphan"}))
    else:
        refused(st.mallory.delete(path))
    assert_unchanged(st.box, obj)


# =============================================================================================
# What sizeguard refused before issue 14: direct edits without an approval, forged approvals.
# =============================================================================================

DIRECT_EDITS: dict[str, Callable[[Stage, str], httpx.Response | Any]] = {
    "kubectl-set-resources": lambda st, name: st.mallory.kubectl(
        "-n", st.dev, "set", "resources", f"deployment/{name}", "--requests=cpu=150m"
    ),
    "kubectl-scale": lambda st, name: st.mallory.kubectl(
        "-n", st.dev, "scale", f"deployment/{name}", "--replicas=5"
    ),
    "scale-subresource": lambda st, name: st.mallory.patch(
        path_of("Deployment", st.dev, name) + "/scale", {"spec": {"replicas": 7}}, MERGE_PATCH
    ),
    "replicas-json-patch": lambda st, name: st.mallory.patch(
        path_of("Deployment", st.dev, name),
        [{"op": "replace", "path": "/spec/replicas", "value": 5}],
        JSON_PATCH,
    ),
    "replicas-removed": lambda st, name: st.mallory.patch(
        path_of("Deployment", st.dev, name),
        [{"op": "remove", "path": "/spec/replicas"}],  # defaults to 1
        JSON_PATCH,
    ),
    "memory-limit-removed": lambda st, name: st.mallory.patch(
        path_of("Deployment", st.dev, name),
        [{"op": "remove", "path": "/spec/template/spec/containers/0/resources/limits"}],
        JSON_PATCH,
    ),
    "container-added": lambda st, name: st.mallory.patch(
        path_of("Deployment", st.dev, name),
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "miner", "image": "x", "resources": {"requests": {"cpu": "4"}}}
                        ]
                    }
                }
            }
        },
    ),
    "full-put": lambda st, name: put_edit(
        st.box,
        st.mallory,
        "Deployment",
        st.dev,
        name,
        set_cpu("150m"),
    ),
}


@pytest.mark.parametrize("case", sorted(DIRECT_EDITS))
def test_a_direct_edit_without_an_approval_is_refused(st: Stage, case: str) -> None:
    obj = new(st, "Deployment", st.dev, "direct", memory_limit="128Mi")
    result = DIRECT_EDITS[case](st, name_of(obj))
    if isinstance(result, httpx.Response):
        refused(result)
    else:
        kubectl_refused(result)
    assert_unchanged(st.box, obj)


# Spellings of a CPU request the API server accepts; all of them are more than 100m.
SPELLINGS = ["100001u", "1001e-4", "0.1001", "100.5m", "16e-4294967296", "1Ki", "+0.2"]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_quantity_spellings_of_a_bigger_request_are_refused(st: Stage, spelling: str) -> None:
    obj = new(st, "Deployment", st.dev, "spelling")
    body = _container_resources({"requests": {"cpu": spelling}})
    response = st.mallory.patch(path_of("Deployment", st.dev, name_of(obj)), body)
    if response.status_code == 422:  # the API server itself refuses this spelling: no bypass
        assert "sizeguard" not in response.text
    else:
        refused(response)
    assert_unchanged(st.box, obj)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def _alg_none(token: str) -> str:
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    header["alg"] = "none"
    return ".".join([_b64(json.dumps(header).encode()), token.split(".")[1], ""])


def _tampered(token: str) -> str:
    header, _, signature = token.split(".")
    claims = _claims(token)
    claims["to"]["containers"]["app"]["cpu_request"] = 150
    return ".".join([header, _b64(json.dumps(claims, separators=(",", ":")).encode()), signature])


def _changed(obj: dict[str, Any], cpu: str) -> dict[str, Any]:
    changed = copy.deepcopy(obj)
    set_cpu(cpu)(changed)
    return changed


# Each forgery claims a change the policy would admit with a valid approval (100m → 150m), so
# that the approval check is the only thing that can refuse it.
FORGERIES: dict[str, Callable[[Stage, dict[str, Any], dict[str, Any]], str]] = {
    "another-key": lambda st, obj, twin: mint(generate_signing_key(), obj, _changed(obj, "150m")),
    "alg-none": lambda st, obj, twin: _alg_none(mint(st.key, obj, _changed(obj, "150m"))),
    "another-object": lambda st, obj, twin: mint(st.key, twin, _changed(twin, "150m")),
    "tampered-claims": lambda st, obj, twin: _tampered(mint(st.key, obj, _changed(obj, "120m"))),
    "expired": lambda st, obj, twin: mint(
        st.key, obj, _changed(obj, "150m"), now=time.time() - 3600
    ),
    "other-values": lambda st, obj, twin: mint(st.key, obj, _changed(obj, "120m")),
    "typ-header-only": lambda st, obj, twin: ".".join(
        [_b64(json.dumps({"alg": "EdDSA", "typ": APPROVAL_TYP}).encode()), "e30", ""]
    ),
}


@pytest.mark.parametrize("case", sorted(FORGERIES))
def test_a_forged_approval_is_refused(st: Stage, case: str) -> None:
    obj = new(st, "Deployment", st.dev, "forged")
    twin = new(st, "Deployment", st.dev, "twin")
    token = FORGERIES[case](st, obj, twin)

    def edit(o: dict[str, Any]) -> None:
        set_cpu("150m")(o)
        o["metadata"] = with_token(o, token)["metadata"]

    response = put_edit(st.box, st.mallory, "Deployment", st.dev, name_of(obj), edit)
    message = refused(response)
    assert "not valid" in message, f"refused, but not for its approval: {message}"
    assert_unchanged(st.box, obj)
    assert_unchanged(st.box, twin)


# =============================================================================================
# Extra paths found by the red team.
# =============================================================================================


def _owned_rs_edit(st: Stage, case: str) -> None:
    obj = new(st, "Deployment", st.dev, "owned-rs")
    name = name_of(obj)
    running_pods(st.box, st.dev, name, 2)
    rs = owned_replica_set(st.box, obj)
    rs_path = path_of("ReplicaSet", st.dev, name_of(rs))
    evidence = ""
    if case == "template-resources-while-paused":
        # `paused` is not part of the footprint: admitted. The Deployment controller then
        # neither rolls nor corrects the ReplicaSet's template.
        paused = st.mallory.patch(path_of("Deployment", st.dev, name), {"spec": {"paused": True}})
        assert paused.status_code == 200, paused.text
        response = st.mallory.patch(rs_path, _container_resources({"requests": {"cpu": "2"}}))
        if response.status_code == 200:
            victim = pods(st.box, st.dev, name)[0]["metadata"]["name"]
            st.mallory.delete(path_of("Pod", st.dev, victim))
            fat = poll(lambda: [p for p in pods(st.box, st.dev, name) if pod_cpu(p) == "2"], 20)
            evidence = (
                f"a new pod of Deployment {name} requests cpu 2 ({len(fat or [])} such pod(s)) "
                "while the Deployment still says 100m"
            )
    else:  # orphaned and relabelled: the Deployment lets it go and makes a new ReplicaSet
        body = {
            "metadata": {"ownerReferences": None, "labels": {"app.kubernetes.io/name": "orphan"}}
        }
        response = st.mallory.patch(rs_path, body, MERGE_PATCH)
        if response.status_code == 200:
            seen = poll(
                lambda: len(pods(st.box, st.dev, name)) >= 4 and len(pods(st.box, st.dev, name)), 20
            )
            evidence = f"pods with Deployment {name}'s labels: {seen or 'still 2'} (replicas: 2)"
    refused(response, evidence)
    assert_unchanged(st.box, rs)


@pytest.mark.parametrize("case", ["template-resources-while-paused", "orphaned-and-relabelled"])
def test_extra_editing_the_replicaset_a_deployment_owns_is_refused(st: Stage, case: str) -> None:
    if not st.box.state.info.get("kwok"):
        pytest.skip("the sandbox runs without kwok: no pod is Running")
    _owned_rs_edit(st, case)


@pytest.mark.parametrize("case", ["replicas", "orphaning-delete"])
def test_extra_scaling_or_orphaning_the_replicaset_a_deployment_owns_is_refused(
    st: Stage, case: str
) -> None:
    # The deployment controller does not always put back a count someone else wrote (a paused
    # Deployment with two active ReplicaSets), and a ReplicaSet deleted with its pods
    # orphaned leaves them running beside the new one its Deployment makes.
    obj = new(st, "Deployment", st.dev, "owned-rs-scale")
    rs = owned_replica_set(st.box, obj)
    rs_path = path_of("ReplicaSet", st.dev, name_of(rs))
    if case == "replicas":
        response = st.mallory.patch(rs_path, {"spec": {"replicas": 40}}, MERGE_PATCH)
    else:
        response = st.mallory.delete(rs_path, params={"propagationPolicy": "Orphan"})
    refused(response)
    assert_unchanged(st.box, rs)


@NOT_COVERED
def test_extra_a_pod_relabelled_into_a_workloads_replicaset_is_refused(st: Stage) -> None:
    # A Running pod of any size, given the labels of the Deployment's ReplicaSet, is adopted by
    # it; with a high deletion cost, the ReplicaSet then deletes a legitimate pod instead. The
    # workload keeps its replica count, one of its pods now requests 2 CPUs / 4Gi, and the
    # Deployment still says 100m. (A pod created with those labels at once is deleted first:
    # the ReplicaSet removes unscheduled pods before anything else.)
    if not st.box.state.info.get("kwok"):
        pytest.skip("the sandbox runs without kwok: no pod is Running")
    obj = new(st, "Deployment", st.dev, "adopted")
    name = name_of(obj)
    running_pods(st.box, st.dev, name, 2)
    rs = owned_replica_set(st.box, obj)
    fat = f"{name}-fat"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": fat,
            "namespace": st.dev,
            "labels": {"redteam": "not-yet"},
            "annotations": {"controller.kubernetes.io/pod-deletion-cost": "1000000"},
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example/app:1.0",
                    "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
                }
            ],
            "tolerations": KWOK_TOLERATIONS,
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
        },
    }
    created = st.mallory.create(pod)
    assert created.status_code == 201, created.text
    ran = poll(
        lambda: must_read(st.box, "Pod", st.dev, fat)["status"].get("phase") == "Running", 30
    )
    assert ran, f"pod {fat} did not run"
    labels = rs["spec"]["template"]["metadata"]["labels"]
    response = st.mallory.patch(path_of("Pod", st.dev, fat), {"metadata": {"labels": labels}})
    evidence = ""
    if response.status_code == 200:

        def swapped() -> bool:
            names = [p["metadata"]["name"] for p in pods(st.box, st.dev, name)]
            return len(names) == 2 and fat in names

        evidence = (
            "the ReplicaSet adopted the 2-CPU/4Gi pod and deleted a legitimate one"
            if poll(swapped, 20)
            else "the pod now carries the ReplicaSet's labels"
        )
    refused(response, evidence)


def _clone(kind: str, ns: str, name: str) -> dict[str, Any]:
    """Pods like the workload's (its labels), of another size, run by another controller."""
    base = workload("Deployment", ns, name, cpu="2", replicas=10)
    template = base["spec"]["template"]
    if kind == "Pod":
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {**template["metadata"], "name": name, "namespace": ns},
            "spec": template["spec"],
        }
    if kind == "Job":
        template["spec"]["restartPolicy"] = "Never"
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"parallelism": 10, "completions": 10, "template": template},
        }
    if kind == "ReplicationController":
        base["spec"]["selector"] = base["spec"]["selector"]["matchLabels"]
        base["apiVersion"] = "v1"
    base["kind"] = kind
    return base


@pytest.mark.parametrize(
    "kind",
    [
        "ReplicaSet",
        *(
            pytest.param(kind, marks=NOT_COVERED)
            for kind in ("ReplicationController", "Job", "Pod")
        ),
    ],
)
def test_extra_a_clone_of_a_production_workload_is_refused(st: Stage, kind: str) -> None:
    # Workload creates are guarded in production, ReplicaSet creates too (a standalone
    # ReplicaSet is a workload); other kinds that run the same pods are not.
    obj = new(st, "Deployment", st.prod, "cloned")
    name = f"{name_of(obj)}-{kind.lower()}"
    response = st.mallory.create(_clone(kind, st.prod, name), kind)
    refused(response, f"a {kind} running 2-CPU pods with the workload's labels was created")
    assert read(st.box, kind, st.prod, name) is None


@NOT_COVERED
def test_extra_widening_a_daemonsets_node_selection_is_refused(st: Stage) -> None:
    # Left out of the footprint on purpose (issue 14's example); it still multiplies pods.
    obj = new(st, "DaemonSet", st.dev, "nodes", pod_spec={"nodeSelector": {"redteam": "nowhere"}})
    body = [{"op": "remove", "path": "/spec/template/spec/nodeSelector"}]
    response = st.mallory.patch(path_of("DaemonSet", st.dev, name_of(obj)), body, JSON_PATCH)
    evidence = ""
    if response.status_code == 200:
        seen = poll(lambda: len(pods(st.box, st.dev, name_of(obj))), 10)
        evidence = f"the DaemonSet went from 0 pods to {seen}"
    refused(response, evidence)
    assert_unchanged(st.box, obj)


def test_extra_dra_resource_claims_added_to_a_template_are_refused(st: Stage) -> None:
    # Each pod would claim devices (e.g. 4 GPUs) through a ResourceClaimTemplate that `edit`
    # may create; resources.claims and spec.resourceClaims are part of the footprint.
    if st.box.kube.http.get("/apis/resource.k8s.io/v1").status_code != 200:
        pytest.skip("resource.k8s.io/v1 is not served")
    obj = new(st, "Deployment", st.dev, "claims")
    template = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": f"{name_of(obj)}-gpus", "namespace": st.dev},
        "spec": {
            "spec": {
                "devices": {
                    "requests": [
                        {
                            "name": "gpu",
                            "exactly": {"deviceClassName": "gpu.example.com", "count": 4},
                        }
                    ]
                }
            }
        },
    }
    created = st.mallory.create(template)
    assert created.status_code == 201, created.text
    body = {
        "spec": {
            "template": {
                "spec": {
                    "resourceClaims": [
                        {"name": "gpu", "resourceClaimTemplateName": f"{name_of(obj)}-gpus"}
                    ],
                    "containers": [{"name": "app", "resources": {"claims": [{"name": "gpu"}]}}],
                }
            }
        }
    }
    refused(st.mallory.patch(path_of("Deployment", st.dev, name_of(obj)), body))
    assert_unchanged(st.box, obj)


def test_extra_pods_kept_terminating_for_a_year_are_refused(st: Stage) -> None:
    # A year-long grace period with a preStop sleep: every pod replaced in a rollout (or
    # deleted by the attacker, which `edit` allows) keeps running, and holding its requests,
    # next to its replacement. (kwok deletes at once, so the effect needs a real kubelet.)
    obj = new(st, "Deployment", st.dev, "lingering")
    body = {
        "spec": {
            "template": {
                "spec": {
                    "terminationGracePeriodSeconds": 31536000,
                    "containers": [
                        {"name": "app", "lifecycle": {"preStop": {"sleep": {"seconds": 31535000}}}}
                    ],
                }
            }
        }
    }
    refused(st.mallory.patch(path_of("Deployment", st.dev, name_of(obj)), body))
    assert_unchanged(st.box, obj)


@pytest.mark.parametrize("case", ["production-deployment", "hpa"])
def test_extra_a_garbage_collector_delete_is_refused(st: Stage, case: str) -> None:
    # ownerReferences are not footprint, so the edit that makes the object a dependent of a
    # ConfigMap may pass; deleting the ConfigMap then makes the garbage collector delete it.
    if case == "hpa":
        target = setup_create(st.box, hpa(st.dev, unique("gc")))
    else:
        target = new(st, "Deployment", st.prod, "gc")
    ns, kind = target["metadata"]["namespace"], target["kind"]
    owner_name = unique("owner")
    owner = st.mallory.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": owner_name, "namespace": ns}}
    )
    assert owner.status_code == 201, owner.text
    reference = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner_name,
        "uid": owner.json()["metadata"]["uid"],
    }
    canary = st.mallory.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"{owner_name}-canary",
                "namespace": ns,
                "ownerReferences": [reference],
            },
        }
    )
    assert canary.status_code == 201, canary.text
    adopted = st.mallory.patch(
        path_of(kind, ns, name_of(target)),
        {"metadata": {"ownerReferences": [reference]}},
        MERGE_PATCH,
    )
    if adopted.status_code == 403 and sizeguard_denial(message_of(adopted)):
        return  # refused at the first step: fine
    assert adopted.status_code == 200, adopted.text
    before = must_read(st.box, kind, ns, name_of(target))
    assert st.mallory.delete(path_of("ConfigMap", ns, owner_name)).status_code == 200
    # The canary (another dependent) going away shows the garbage collector has acted.
    gone = poll(lambda: read(st.box, "ConfigMap", ns, f"{owner_name}-canary") is None, 30)
    assert gone, "the garbage collector did not act on the canary within 30s"
    # The target's own attempt runs beside the canary's: give it a moment to land.
    deleted = poll(lambda: read(st.box, kind, ns, name_of(target)) is None, 3)
    if deleted:
        raise NotRefusedError(f"the garbage collector deleted {kind} {ns}/{name_of(target)}")
    assert_unchanged(st.box, before)


def test_premise_an_editor_cannot_relabel_its_namespace(st: Stage) -> None:
    # Namespace labels decide production-ness: `edit` may not change them (RBAC refuses).
    body = {"metadata": {"labels": {"environment": "dev"}}}
    response = st.mallory.patch(f"/api/v1/namespaces/{st.labelled}", body, MERGE_PATCH)
    assert response.status_code == 403 and "cannot patch resource" in response.text, response.text
    labels = must_read_namespace(st)["metadata"]["labels"]
    assert labels.get("environment") == "production"


def must_read_namespace(st: Stage) -> dict[str, Any]:
    response = st.box.kube.http.get(f"/api/v1/namespaces/{st.labelled}")
    response.raise_for_status()
    ns: dict[str, Any] = response.json()
    return ns
