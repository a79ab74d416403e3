"""patch_for and create_body: a write sets exactly the approved guarded values and the approval,
nothing else.

The patch is applied here with a small strategic-merge implementation for the shapes
patch_for emits (maps merged, null deletes, container lists merged by ``name``), so that
"the result's guarded state equals ``after``" is checked on plain data — for every footprint
field, set and unset, and for randomly drawn live objects; the integration tests check the
same against the real API server.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from sizeguard.approvals import APPROVAL_ANNOTATION
from sizeguard.changes import (
    FOOTPRINT_PATHS,
    ContainerResources,
    ResourceChange,
    Target,
    guarded_state,
    hpa_object,
    target_of,
)
from sizeguard.cluster import ClusterError, create_body, parse_warning, patch_for, pod_requests
from sizeguard.quantities import cpu_millicores, memory_bytes

TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJpc3MiOiJzaXplZ3VhcmQifQ.c2lnbmF0dXJl"
MI = 1024**2


def deployment(kind: str = "Deployment") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "web:1",
                        "resources": {
                            "requests": {
                                "cpu": "250m",
                                "memory": "256Mi",
                                "ephemeral-storage": "1Gi",
                            },
                            "limits": {"memory": "512Mi", "nvidia.com/gpu": "1"},
                        },
                    },
                    {"name": "envoy", "image": "envoy:1"},
                ],
                "initContainers": [
                    {"name": "migrate", "image": "m:1", "resources": {"requests": {"cpu": "0.5"}}}
                ],
            },
        },
    }
    if kind != "DaemonSet":
        spec["replicas"] = 3
    if kind == "Deployment":
        spec["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
        }
        spec["progressDeadlineSeconds"] = 600
    if kind == "DaemonSet":
        spec["updateStrategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
        }
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "uid-1",
            "generation": 4,
            "annotations": {"team": "shop"},
        },
        "spec": spec,
    }


def hpa() -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-2"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2,
            "maxReplicas": 10,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu"}}],
        },
    }


def change_of(obj: dict[str, Any], new: dict[str, Any]) -> ResourceChange:
    return ResourceChange(
        target=target_of(obj),
        before=guarded_state(obj),
        after=guarded_state(new),
        reason="test",
        source="unit",
    )


# Lists a strategic merge replaces whole (no patchMergeKey in the Kubernetes types).
_REPLACED_LISTS = frozenset({"claims"})


def merge(original: Any, patch: Any) -> Any:
    """Strategic merge for maps and name-keyed lists (what patch_for produces): null deletes,
    ``$patch: delete`` removes a list element, ``$setElementOrder`` directives are order only,
    a container's ``resources.claims`` is replaced whole."""
    if isinstance(patch, dict) and isinstance(original, dict):
        result = dict(original)
        for key, value in patch.items():
            if key.startswith("$setElementOrder/"):
                continue
            if value is None:
                result.pop(key, None)
            elif key in _REPLACED_LISTS:
                result[key] = value
            elif key in result:
                result[key] = merge(result[key], value)
            else:
                result[key] = merge({}, value) if isinstance(value, dict) else value
        return result
    if isinstance(patch, list) and isinstance(original, list):
        by_name = {item["name"]: item for item in patch}
        deleted = {name for name, item in by_name.items() if item.get("$patch") == "delete"}
        merged = [
            merge(item, by_name.pop(item["name"], {}))
            for item in original
            if item["name"] not in deleted
        ]
        return merged + [merge({}, i) for n, i in by_name.items() if n not in deleted]
    return patch


def paths(value: Any, prefix: str = "") -> set[str]:
    """Every leaf path of a patch (list items by name)."""
    if isinstance(value, dict):
        found: set[str] = set()
        for key, item in value.items():
            found |= paths(item, f"{prefix}.{key}")
        return found
    if isinstance(value, list):
        found = set()
        for item in value:
            found |= paths(
                {k: v for k, v in item.items() if k != "name"}, f"{prefix}[{item['name']}]"
            )
        return found
    return {prefix}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def applied(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` merged with the patch for old -> new: its guarded state must be new's."""
    change = change_of(old, new)
    result: dict[str, Any] = merge(old, patch_for(change, TOKEN, live=old))
    assert guarded_state(result) == change.after
    return result


# --- every guarded value of after is written ---------------------------------------------------


def test_a_resize_and_a_scale_patch_set_exactly_after_and_the_annotation() -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 5
    web = pod_spec(new)["containers"][0]["resources"]
    web["requests"]["cpu"] = "300m"
    del web["limits"]["memory"]
    pod_spec(new)["containers"][1]["resources"] = {"limits": {"cpu": "1"}}
    pod_spec(new)["initContainers"][0]["resources"]["requests"]["memory"] = "1Gi"
    change = change_of(old, new)

    body = patch_for(change, TOKEN, live=old)

    assert body["metadata"] == {"annotations": {APPROVAL_ANNOTATION: TOKEN}}
    assert body["spec"]["replicas"] == 5
    containers = {c["name"]: c for c in body["spec"]["template"]["spec"]["containers"]}
    assert containers["web"] == {
        "name": "web",
        "resources": {
            # the GPU request is written as the limit it was (Kubernetes' default on pods)
            "requests": {
                "cpu": "300m",
                "memory": "256Mi",
                "nvidia.com/gpu": "1",
                "ephemeral-storage": "1Gi",
            },
            "limits": {"cpu": None, "memory": None, "nvidia.com/gpu": "1"},
            "claims": None,
        },
        "restartPolicy": None,
    }
    assert containers["envoy"]["resources"] == {
        "requests": {"cpu": "1", "memory": None},  # the request a CPU limit alone implies
        "limits": {"cpu": "1", "memory": None},
        "claims": None,
    }
    init = body["spec"]["template"]["spec"]["initContainers"]
    assert init == [
        {
            "name": "migrate",
            "resources": {
                "requests": {"cpu": "500m", "memory": "1Gi"},
                "limits": {"cpu": None, "memory": None},
                "claims": None,
            },
            "restartPolicy": None,
        }
    ]
    result = merge(old, body)
    assert guarded_state(result) == change.after
    # Nothing else changed: images, labels, other annotations, the selector.
    web_result = result["spec"]["template"]["spec"]["containers"][0]
    assert web_result["resources"]["requests"]["ephemeral-storage"] == "1Gi"
    assert web_result["image"] == "web:1"
    assert result["metadata"]["annotations"] == {"team": "shop", APPROVAL_ANNOTATION: TOKEN}
    assert result["spec"]["selector"] == old["spec"]["selector"]


def _under(path: str, allowed: str) -> bool:
    """``spec.template.spec.containers[web].resources.limits.cpu`` (and the list's
    ``$setElementOrder``) is under the footprint path ``spec.template.spec.containers[]``."""
    if allowed.endswith("[]"):
        parent, key = allowed[:-2].rsplit(".", 1)
        return path.startswith(f"{parent}.{key}[") or path.startswith(
            f"{parent}.$setElementOrder/{key}"
        )
    return path == allowed or path.startswith(allowed + ".")


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet"])
def test_the_patch_touches_only_the_footprint(kind: str) -> None:
    old = deployment(kind)
    new = copy.deepcopy(old)
    pod_spec(new)["runtimeClassName"] = "kata"
    body = patch_for(change_of(old, new), TOKEN, live=old)
    written = {p.lstrip(".") for p in paths(body)}
    written.discard(f"metadata.annotations.{APPROVAL_ANNOTATION}")
    outside = {p for p in written if not any(_under(p, a) for a in FOOTPRINT_PATHS[kind])}
    assert outside == set()
    web = "spec.template.spec.containers[web].resources"
    for resource in ("requests.cpu", "requests.ephemeral-storage", "limits.nvidia.com/gpu"):
        assert f"{web}.{resource}" in written


def test_the_patch_does_not_depend_on_the_live_values() -> None:
    old = deployment()
    new = copy.deepcopy(old)
    pod_spec(new)["containers"][0]["resources"]["requests"]["cpu"] = "2"
    change = change_of(old, new)
    drifted = copy.deepcopy(old)
    drifted["spec"]["replicas"] = 9
    drifted["spec"]["minReadySeconds"] = 30
    drifted["spec"]["strategy"] = {"type": "Recreate"}
    pod_spec(drifted)["runtimeClassName"] = "kata"
    pod_spec(drifted)["resources"] = {"requests": {"cpu": "4"}}
    pod_spec(drifted)["containers"][1]["resources"] = {
        "requests": {"cpu": "7", "example.com/x": "2"}
    }
    pod_spec(drifted)["initContainers"][0]["restartPolicy"] = "Always"
    body = patch_for(change, TOKEN, live=drifted)
    assert guarded_state(merge(drifted, body)) == change.after


# --- each new footprint field, set and unset ---------------------------------------------------


def test_pod_level_resources_set_changed_and_unset() -> None:
    old = deployment()
    with_pod = copy.deepcopy(old)
    pod_spec(with_pod)["resources"] = {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"memory": "2Gi", "hugepages-2Mi": "4Mi"},
    }
    result = applied(old, with_pod)
    assert pod_spec(result)["resources"]["limits"] == {"memory": "2Gi", "hugepages-2Mi": "4Mi"}
    changed = copy.deepcopy(with_pod)
    pod_spec(changed)["resources"] = {"requests": {"cpu": "1500m"}}
    result = applied(with_pod, changed)
    assert pod_spec(result)["resources"] == {"requests": {"cpu": "1500m"}, "limits": {}}
    unset = applied(with_pod, old)
    # removed whole: an empty resources map would change the pod template for nothing
    assert "resources" not in pod_spec(unset)
    body = patch_for(
        change_of(old, old | {"spec": {**old["spec"], "replicas": 4}}), TOKEN, live=old
    )
    assert "resources" not in body["spec"]["template"]["spec"]  # none before, none after


def test_other_resources_are_added_changed_and_removed() -> None:
    old = deployment()
    new = copy.deepcopy(old)
    web = pod_spec(new)["containers"][0]["resources"]
    web["requests"]["ephemeral-storage"] = "2Gi"
    del web["limits"]["nvidia.com/gpu"]
    pod_spec(new)["containers"][1]["resources"] = {"limits": {"example.com/foo": "3"}}
    body = patch_for(change_of(old, new), TOKEN, live=old)
    containers = {c["name"]: c for c in body["spec"]["template"]["spec"]["containers"]}
    assert containers["web"]["resources"]["limits"]["nvidia.com/gpu"] is None
    assert containers["web"]["resources"]["requests"]["ephemeral-storage"] == "2Gi"
    assert containers["envoy"]["resources"]["limits"]["example.com/foo"] == "3"
    result = applied(old, new)
    assert "nvidia.com/gpu" not in pod_spec(result)["containers"][0]["resources"]["limits"]


def test_an_init_container_becomes_a_sidecar_and_back() -> None:
    old = deployment()
    sidecar = copy.deepcopy(old)
    pod_spec(sidecar)["initContainers"][0]["restartPolicy"] = "Always"
    result = applied(old, sidecar)
    assert pod_spec(result)["initContainers"][0]["restartPolicy"] == "Always"
    back = applied(sidecar, old)
    assert "restartPolicy" not in pod_spec(back)["initContainers"][0]


def test_runtime_class_set_and_unset() -> None:
    old = deployment()
    kata = copy.deepcopy(old)
    pod_spec(kata)["runtimeClassName"] = "kata"
    assert pod_spec(applied(old, kata))["runtimeClassName"] == "kata"
    assert "runtimeClassName" not in pod_spec(applied(kata, old))


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ({"type": "Recreate"}, {"type": "Recreate", "rollingUpdate": None}),
        (
            {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}},
            {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}},
        ),
        (
            {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": "010%"}},
            {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": "10%"}},
        ),
    ],
)
def test_a_deployment_strategy_is_written_whole(
    strategy: dict[str, Any], expected: dict[str, Any]
) -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["strategy"] = strategy
    body = patch_for(change_of(old, new), TOKEN, live=old)
    assert body["spec"]["strategy"] == expected
    result = applied(old, new)
    assert ("rollingUpdate" in result["spec"]["strategy"]) == (strategy["type"] != "Recreate")
    applied(new, old)  # and back: the rollingUpdate returns


def test_a_daemonset_update_strategy() -> None:
    old = deployment("DaemonSet")
    on_delete = copy.deepcopy(old)
    on_delete["spec"]["updateStrategy"] = {"type": "OnDelete"}
    assert applied(old, on_delete)["spec"]["updateStrategy"] == {"type": "OnDelete"}
    surge = copy.deepcopy(old)
    surge["spec"]["updateStrategy"]["rollingUpdate"] = {"maxSurge": "50%", "maxUnavailable": 0}
    applied(on_delete, surge)
    body = patch_for(change_of(old, surge), TOKEN, live=old)
    assert "strategy" not in body["spec"] and "progressDeadlineSeconds" not in body["spec"]


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet"])
def test_min_ready_seconds_set_and_unset(kind: str) -> None:
    old = deployment(kind)
    slow = copy.deepcopy(old)
    slow["spec"]["minReadySeconds"] = 3600
    assert applied(old, slow)["spec"]["minReadySeconds"] == 3600
    assert "minReadySeconds" not in applied(slow, old)["spec"]


def test_progress_deadline_seconds() -> None:
    old = deployment()
    patient = copy.deepcopy(old)
    patient["spec"]["progressDeadlineSeconds"] = 86400
    assert applied(old, patient)["spec"]["progressDeadlineSeconds"] == 86400
    assert applied(patient, old)["spec"]["progressDeadlineSeconds"] == 600
    statefulset = deployment("StatefulSet")
    assert (
        "progressDeadlineSeconds"
        not in patch_for(
            change_of(statefulset, statefulset | {"spec": {**statefulset["spec"], "replicas": 1}}),
            TOKEN,
            live=statefulset,
        )["spec"]
    )


def test_termination_grace_period_set_and_back() -> None:
    old = deployment()
    pod_spec(old)["terminationGracePeriodSeconds"] = 30
    slow = copy.deepcopy(old)
    pod_spec(slow)["terminationGracePeriodSeconds"] = 3600
    assert pod_spec(applied(old, slow))["terminationGracePeriodSeconds"] == 3600
    assert pod_spec(applied(slow, old))["terminationGracePeriodSeconds"] == 30


def test_resource_claims_are_added_switched_and_removed() -> None:
    old = deployment()
    with_claims = copy.deepcopy(old)
    pod_spec(with_claims)["resourceClaims"] = [
        {"name": "gpu", "resourceClaimTemplateName": "one-gpu"},
        {"name": "shared", "resourceClaimName": "shared-fpga"},
    ]
    pod_spec(with_claims)["containers"][0]["resources"]["claims"] = [
        {"name": "gpu", "request": "big"},
        {"name": "shared"},
    ]
    result = applied(old, with_claims)
    assert pod_spec(result)["containers"][0]["resources"]["claims"] == [
        {"name": "gpu", "request": "big"},
        {"name": "shared"},
    ]
    switched = copy.deepcopy(with_claims)
    pod_spec(switched)["resourceClaims"] = [{"name": "gpu", "resourceClaimName": "reserved-gpu"}]
    pod_spec(switched)["containers"][0]["resources"]["claims"] = [{"name": "gpu"}]
    result = applied(with_claims, switched)
    assert pod_spec(result)["resourceClaims"] == [
        {"name": "gpu", "resourceClaimName": "reserved-gpu"}
    ]
    body = patch_for(change_of(with_claims, switched), TOKEN, live=with_claims)
    assert {"name": "shared", "$patch": "delete"} in body["spec"]["template"]["spec"][
        "resourceClaims"
    ]
    back = applied(switched, old)
    assert not pod_spec(back).get("resourceClaims")  # the API server omits an empty list
    assert "claims" not in pod_spec(back)["containers"][0]["resources"]
    no_claims = patch_for(
        change_of(old, old | {"spec": {**old["spec"], "replicas": 4}}), TOKEN, live=old
    )
    assert "resourceClaims" not in no_claims["spec"]["template"]["spec"]


# --- random live objects -----------------------------------------------------------------------


def _random_resources(rng: random.Random, pod_level: bool = False) -> dict[str, Any]:
    names = ["cpu", "memory", "ephemeral-storage", "example.com/gpu"]
    if pod_level:
        names = ["cpu", "memory", "hugepages-2Mi"]
    resources: dict[str, Any] = {}
    for group in ("requests", "limits"):
        chosen = {
            n: f"{rng.randint(1, 4) * 2}Mi" if n != "cpu" else f"{rng.randint(1, 900)}m"
            for n in names
            if rng.random() < 0.5
        }
        if chosen:
            resources[group] = chosen
    return resources


def _random_workload(rng: random.Random, kind: str) -> dict[str, Any]:
    obj = deployment(kind)
    pod = pod_spec(obj)
    for container in (*pod["containers"], *pod["initContainers"]):
        container["resources"] = _random_resources(rng)
    if rng.random() < 0.5:
        pod["initContainers"][0]["restartPolicy"] = "Always"
    if rng.random() < 0.5:
        pod["resources"] = _random_resources(rng, pod_level=True)
    if rng.random() < 0.5:
        pod["runtimeClassName"] = rng.choice(["kata", "gvisor"])
    if rng.random() < 0.5:
        pod["terminationGracePeriodSeconds"] = rng.randint(0, 600)
    claims = rng.sample(["a", "b", "c"], rng.randint(0, 3))
    if claims:
        pod["resourceClaims"] = [
            {"name": c, rng.choice(["resourceClaimName", "resourceClaimTemplateName"]): f"x-{c}"}
            for c in claims
        ]
        pod["containers"][0]["resources"]["claims"] = [
            {"name": c, "request": "r"} if rng.random() < 0.5 else {"name": c}
            for c in rng.sample(claims, rng.randint(0, len(claims)))
        ]
    if rng.random() < 0.5:
        obj["spec"]["minReadySeconds"] = rng.randint(0, 100)
    if kind == "Deployment":
        obj["spec"]["progressDeadlineSeconds"] = rng.randint(1, 1000)
        if rng.random() < 0.3:
            obj["spec"]["strategy"] = {"type": "Recreate"}
        else:
            bounds = [rng.randint(0, 5), f"{rng.randint(0, 200)}%"]
            obj["spec"]["strategy"]["rollingUpdate"] = {
                "maxSurge": rng.choice(bounds),
                "maxUnavailable": rng.choice(bounds),
            }
    if kind == "DaemonSet" and rng.random() < 0.3:
        obj["spec"]["updateStrategy"] = {"type": "OnDelete"}
    if kind != "DaemonSet":
        obj["spec"]["replicas"] = rng.randint(0, 20)
    return obj


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet"])
def test_any_footprint_to_any_footprint(kind: str) -> None:
    rng = random.Random(f"sizeguard-{kind}")
    for _ in range(300):
        old, new = _random_workload(rng, kind), _random_workload(rng, kind)
        change = change_of(old, new)
        body = patch_for(change, TOKEN, live=old)
        assert json.loads(json.dumps(body)) == body
        assert guarded_state(merge(old, body)) == change.after


# --- what patch_for does not do ----------------------------------------------------------------


@pytest.mark.parametrize("millicores", [250, 2000, 1, 1500, 0])
def test_cpu_is_written_exactly(millicores: int) -> None:
    old = deployment()
    new = copy.deepcopy(old)
    pod_spec(new)["containers"][0]["resources"]["requests"]["cpu"] = f"{millicores}m"
    body = patch_for(change_of(old, new), TOKEN, live=old)
    written = body["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    assert cpu_millicores(written) == millicores


@pytest.mark.parametrize("value", [1, 1000, 1023, 1024, 3 * MI, 3 * MI + 1, 5 * 1024**3, 2**53 - 1])
def test_memory_is_written_exactly(value: int) -> None:
    old = deployment()
    new = copy.deepcopy(old)
    pod_spec(new)["containers"][0]["resources"]["limits"]["memory"] = value
    body = patch_for(change_of(old, new), TOKEN, live=old)
    written = body["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert isinstance(written, str)
    assert memory_bytes(written) == value


def test_a_daemonset_patch_has_no_replicas() -> None:
    old = deployment("DaemonSet")
    new = copy.deepcopy(old)
    pod_spec(new)["containers"][0]["resources"]["requests"]["cpu"] = "100m"
    body = patch_for(change_of(old, new), TOKEN, live=old)
    assert "replicas" not in body["spec"]
    applied(old, new)


def test_an_hpa_patch_sets_min_and_max_only() -> None:
    old = hpa()
    new = copy.deepcopy(old)
    new["spec"]["minReplicas"] = 4
    change = change_of(old, new)
    body = patch_for(change, TOKEN)
    assert body == {
        "metadata": {"annotations": {APPROVAL_ANNOTATION: TOKEN}},
        "spec": {"minReplicas": 4, "maxReplicas": 10},
    }
    assert guarded_state(merge(old, body)) == change.after


@pytest.mark.parametrize("token", ["", 42])
def test_a_patch_needs_a_token(token: Any) -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 1
    with pytest.raises(ValueError, match="approval token"):
        patch_for(change_of(old, new), token, live=old)


def test_a_workload_patch_needs_the_live_object() -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 1
    with pytest.raises(ValueError, match="needs the live object"):
        patch_for(change_of(old, new), TOKEN)


def test_a_preview_patch_has_no_annotation_and_keeps_the_live_container_order() -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 1
    change = change_of(old, new)
    assert change.after is not None
    reordered = change.model_copy(
        update={
            "after": change.after.model_copy(
                update={"containers": dict(reversed(list(change.after.containers.items())))}
            )
        }
    )
    body = patch_for(reordered, None, live=old)
    assert "metadata" not in body
    live_names = [c["name"] for c in pod_spec(old)["containers"]]
    written = body["spec"]["template"]["spec"]
    assert [c["name"] for c in written["containers"]] == live_names
    assert written["$setElementOrder/containers"] == [{"name": n} for n in live_names]


def test_after_must_fit_the_kind() -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 1
    change = change_of(old, new)
    ds_target = change.target.model_copy(update={"kind": "DaemonSet"})
    with pytest.raises(ValueError, match="null for a DaemonSet"):
        patch_for(change.model_copy(update={"target": ds_target}), TOKEN, live=old)
    sts_target = change.target.model_copy(update={"kind": "StatefulSet"})
    with pytest.raises(ValueError, match="no rollout strategy of a StatefulSet"):
        patch_for(change.model_copy(update={"target": sts_target}), TOKEN, live=old)
    pod = change.target.model_copy(update={"kind": "Pod", "api_version": "v1"})
    with pytest.raises(ValueError, match="not v1 Pod"):
        patch_for(change.model_copy(update={"target": pod}), TOKEN, live=old)
    hpa_target = change.target.model_copy(
        update={"kind": "HorizontalPodAutoscaler", "api_version": "autoscaling/v2"}
    )
    with pytest.raises(ValueError, match="min_replicas"):
        patch_for(change.model_copy(update={"target": hpa_target}), TOKEN)


def test_a_recreate_strategy_with_bounds_is_refused() -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["strategy"]["type"] = "Recreate"  # the API server would refuse the rollingUpdate
    with pytest.raises(ValueError, match="Recreate strategy takes no maxSurge"):
        patch_for(change_of(old, new), TOKEN, live=old)


def test_unset_values_are_nulls_that_delete() -> None:
    old = deployment()
    new = copy.deepcopy(old)
    pod_spec(new)["containers"][0]["resources"] = {}
    change = change_of(old, new)
    assert change.after is not None
    assert change.after.containers["web"] == ContainerResources(
        cpu_request=None, cpu_limit=None, memory_request=None, memory_limit=None
    )
    result = merge(old, patch_for(change, TOKEN, live=old))
    assert pod_spec(result)["containers"][0]["resources"] == {"requests": {}, "limits": {}}


# --- creating and deleting an HPA --------------------------------------------------------------

SPEC = {
    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
    "minReplicas": 2,
    "maxReplicas": 6,
    "metrics": [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        }
    ],
}
NEW_HPA = Target(
    api_version="autoscaling/v2",
    kind="HorizontalPodAutoscaler",
    namespace="shop",
    name="web",
    uid=None,
)


def creation() -> ResourceChange:
    return ResourceChange(
        target=NEW_HPA,
        before=None,
        after=guarded_state(hpa_object(NEW_HPA, SPEC)),
        reason="test",
        source="unit",
        create_spec=SPEC,
    )


def test_a_create_body_is_the_spec_with_the_approval_and_labels() -> None:
    body = create_body(creation(), TOKEN, labels={"team": "shop"})
    assert body == {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "labels": {"team": "shop"},
            "annotations": {APPROVAL_ANNOTATION: TOKEN},
        },
        "spec": SPEC,
    }
    assert guarded_state(body) == creation().after
    assert "annotations" not in create_body(creation(), None)["metadata"]


def test_creates_and_deletes_are_not_patches() -> None:
    with pytest.raises(ValueError, match="creates the object is not a patch"):
        patch_for(creation(), TOKEN)
    live = hpa()
    removal = ResourceChange(
        target=target_of(live), before=guarded_state(live), after=None, reason="", source="unit"
    )
    with pytest.raises(ValueError, match="deletes the object is not a patch"):
        patch_for(removal, TOKEN)
    with pytest.raises(ValueError, match="only a change that creates"):
        create_body(removal, TOKEN)


# --- small pure helpers ------------------------------------------------------------------------


def test_warning_headers_are_decoded() -> None:
    assert parse_warning('299 - "sizeguard: dry run admitted"') == "sizeguard: dry run admitted"
    # The API server sends UTF-8; http.client hands it over decoded as Latin-1.
    mangled = '299 - "3 → 7"'.encode().decode("latin-1")
    assert parse_warning(mangled) == "3 → 7"
    assert parse_warning(r'299 - "say \"hi\""') == 'say "hi"'
    assert parse_warning("not a warning") == "not a warning"


def test_a_cluster_error_is_its_message() -> None:
    error = ClusterError("not_found", "cannot read Deployment a/b: it does not exist")
    assert str(error) == error.message
    assert error.kind == "not_found"


def _c(name: str, cpu: str | None, **extra: Any) -> dict[str, Any]:
    requests = {} if cpu is None else {"cpu": cpu}
    return {"name": name, "resources": {"requests": requests}, **extra}


def test_pod_requests_count_like_the_scheduler() -> None:
    def cpu(spec: dict[str, Any]) -> int:
        return pod_requests({"spec": spec}, "cpu", cpu_millicores)

    assert cpu({"containers": [_c("a", "100m"), _c("b", "250m"), _c("c", None)]}) == 350
    # the largest init container wins when it is larger than the containers' sum
    assert cpu({"containers": [_c("a", "100m")], "initContainers": [_c("i", "1")]}) == 1000
    assert cpu({"containers": [_c("a", "2")], "initContainers": [_c("i", "1")]}) == 2000
    # sidecars (restartable init containers) run alongside everything started after them
    sidecar = _c("s", "200m", restartPolicy="Always")
    spec = {"containers": [_c("a", "100m")], "initContainers": [sidecar, _c("i", "500m")]}
    assert cpu(spec) == 700
    assert cpu({**spec, "overhead": {"cpu": "50m"}}) == 750
    # pod-level requests win
    assert cpu({**spec, "resources": {"requests": {"cpu": "3"}}}) == 3000
    assert cpu({}) == 0


class _Answer:
    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()
        self.headers: dict[str, str] = {}


def test_a_dry_run_delete_says_so_in_its_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a body, the API server reads no DeleteOptions from the query string: a ``dryRun``
    there would be ignored and the DELETE real."""
    from kubernetes import client as k8s

    from sizeguard.cluster import Cluster

    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def record(action: str, what: str, method: Any, *args: Any, **kwargs: Any) -> _Answer:
        calls.append((action, args, kwargs))
        return _Answer({"metadata": {"resourceVersion": "8"}})

    cluster = Cluster(k8s.ApiClient(k8s.Configuration()))
    monkeypatch.setattr(cluster, "_call", record)
    target = target_of(hpa())
    cluster.delete_hpa(target, resource_version="7", approval_token=TOKEN, dry_run=True)
    (patch_action, patch_args, patch_kwargs), (action, args, kwargs) = calls
    assert patch_action == "dry-run patch" and patch_kwargs["dry_run"] == "All"
    assert patch_args[2] == {
        "metadata": {"annotations": {APPROVAL_ANNOTATION: TOKEN}, "resourceVersion": "7"}
    }
    assert action == "dry-run delete" and args == ("web", "shop")
    assert kwargs == {
        "body": {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": "uid-2", "resourceVersion": "8"},
            "dryRun": ["All"],
        }
    }
    calls.clear()
    cluster.delete_hpa(target, resource_version="7", approval_token=None)
    [(action, _, kwargs)] = calls
    assert action == "delete" and "dryRun" not in kwargs["body"]
    with pytest.raises(ClusterError, match="without its uid"):
        cluster.delete_hpa(NEW_HPA, resource_version="7", approval_token=None)
