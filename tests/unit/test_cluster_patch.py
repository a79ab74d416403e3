"""patch_for: the patch sets exactly the approved guarded values and the approval, nothing else.

The patch is applied here with a small strategic-merge implementation for the shapes
patch_for emits (maps merged, null deletes, container lists merged by ``name``), so that
"the result's guarded state equals ``after``" is checked on plain data; the integration tests
check the same against the real API server.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from sizeguard.approvals import APPROVAL_ANNOTATION
from sizeguard.changes import ContainerResources, ResourceChange, guarded_state, target_of
from sizeguard.cluster import ClusterError, parse_warning, patch_for, pod_requests
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


def merge(original: Any, patch: Any) -> Any:
    """Strategic merge for maps and name-keyed lists (what patch_for produces)."""
    if isinstance(patch, dict) and isinstance(original, dict):
        result = dict(original)
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            elif key in result:
                result[key] = merge(result[key], value)
            else:
                result[key] = merge({}, value) if isinstance(value, dict) else value
        return result
    if isinstance(patch, list) and isinstance(original, list):
        by_name = {item["name"]: item for item in patch}
        merged = [merge(item, by_name.pop(item["name"], {})) for item in original]
        return merged + list(by_name.values())
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


def test_a_resize_and_a_scale_patch_set_exactly_after_and_the_annotation() -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 5
    web = new["spec"]["template"]["spec"]["containers"][0]["resources"]
    web["requests"]["cpu"] = "300m"
    del web["limits"]["memory"]
    new["spec"]["template"]["spec"]["containers"][1]["resources"] = {"limits": {"cpu": "1"}}
    new["spec"]["template"]["spec"]["initContainers"][0]["resources"]["requests"]["memory"] = "1Gi"
    change = change_of(old, new)

    body = patch_for(change, TOKEN)

    assert body["metadata"] == {"annotations": {APPROVAL_ANNOTATION: TOKEN}}
    assert body["spec"]["replicas"] == 5
    containers = {c["name"]: c for c in body["spec"]["template"]["spec"]["containers"]}
    assert containers["web"] == {
        "name": "web",
        "resources": {
            "requests": {"cpu": "300m", "memory": "256Mi"},
            "limits": {"cpu": None, "memory": None},
        },
    }
    assert containers["envoy"]["resources"] == {
        "requests": {"cpu": None, "memory": None},
        "limits": {"cpu": "1", "memory": None},
    }
    init = body["spec"]["template"]["spec"]["initContainers"]
    assert init == [
        {
            "name": "migrate",
            "resources": {
                "requests": {"cpu": "500m", "memory": "1Gi"},
                "limits": {"cpu": None, "memory": None},
            },
        }
    ]
    result = merge(old, body)
    assert guarded_state(result) == change.after
    # Nothing else changed: other resources, images, labels, other annotations.
    web_result = result["spec"]["template"]["spec"]["containers"][0]
    assert web_result["resources"]["requests"]["ephemeral-storage"] == "1Gi"
    assert web_result["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert web_result["image"] == "web:1"
    assert result["metadata"]["annotations"] == {"team": "shop", APPROVAL_ANNOTATION: TOKEN}
    assert result["spec"]["selector"] == old["spec"]["selector"]


def test_the_patch_touches_only_guarded_fields() -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 4
    body = patch_for(change_of(old, new), TOKEN)
    allowed = {f"metadata.annotations.{APPROVAL_ANNOTATION}", "spec.replicas"}
    for group, names in (("containers", ("web", "envoy")), ("initContainers", ("migrate",))):
        for name in names:
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    allowed.add(f"spec.template.spec.{group}[{name}].resources.{kind}.{resource}")
    assert {p.lstrip(".") for p in paths(body)} == allowed


def test_the_patch_does_not_depend_on_the_live_values() -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "2"
    change = change_of(old, new)
    body = patch_for(change, TOKEN)
    drifted = copy.deepcopy(old)
    drifted["spec"]["replicas"] = 9
    drifted["spec"]["template"]["spec"]["containers"][1]["resources"] = {"requests": {"cpu": "7"}}
    assert guarded_state(merge(drifted, body)) == change.after


@pytest.mark.parametrize(
    ("millicores", "text"), [(250, "250m"), (2000, "2"), (1, "1m"), (1500, "1500m"), (0, "0")]
)
def test_cpu_is_written_exactly(millicores: int, text: str) -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = (
        f"{millicores}m"
    )
    body = patch_for(change_of(old, new), TOKEN)
    written = body["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    assert written == text
    assert cpu_millicores(written) == millicores


@pytest.mark.parametrize("value", [1, 1000, 1023, 1024, 3 * MI, 3 * MI + 1, 5 * 1024**3, 2**53 - 1])
def test_memory_is_written_exactly(value: int) -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = value
    body = patch_for(change_of(old, new), TOKEN)
    written = body["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert isinstance(written, str)
    assert memory_bytes(written) == value


def test_a_daemonset_patch_has_no_replicas() -> None:
    old = deployment("DaemonSet")
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "100m"
    change = change_of(old, new)
    body = patch_for(change, TOKEN)
    assert "replicas" not in body["spec"]
    assert guarded_state(merge(old, body)) == change.after


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


def test_the_body_is_json() -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 1
    body = patch_for(change_of(old, new), TOKEN)
    assert json.loads(json.dumps(body)) == body


@pytest.mark.parametrize("token", ["", 42])
def test_a_patch_needs_a_token(token: Any) -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 1
    with pytest.raises(ValueError, match="approval token"):
        patch_for(change_of(old, new), token)


def test_a_preview_patch_has_no_annotation_and_keeps_the_live_container_order() -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 1
    change = change_of(old, new)
    reordered = change.model_copy(
        update={
            "after": change.after.model_copy(
                update={"containers": dict(reversed(list(change.after.containers.items())))}
            )
        }
    )
    body = patch_for(reordered, None, live=old)
    assert "metadata" not in body
    live_names = [c["name"] for c in old["spec"]["template"]["spec"]["containers"]]
    pod_spec = body["spec"]["template"]["spec"]
    assert [c["name"] for c in pod_spec["containers"]] == live_names
    assert pod_spec["$setElementOrder/containers"] == [{"name": n} for n in live_names]


def test_after_must_fit_the_kind() -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 1
    change = change_of(old, new)
    ds_target = change.target.model_copy(update={"kind": "DaemonSet"})
    with pytest.raises(ValueError, match="null for a DaemonSet"):
        patch_for(change.model_copy(update={"target": ds_target}), TOKEN)
    pod = change.target.model_copy(update={"kind": "Pod", "api_version": "v1"})
    with pytest.raises(ValueError, match="not v1 Pod"):
        patch_for(change.model_copy(update={"target": pod}), TOKEN)
    hpa_target = change.target.model_copy(
        update={"kind": "HorizontalPodAutoscaler", "api_version": "autoscaling/v2"}
    )
    with pytest.raises(ValueError, match="min_replicas"):
        patch_for(change.model_copy(update={"target": hpa_target}), TOKEN)


def test_unset_values_are_nulls_that_delete() -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["resources"] = {}
    change = change_of(old, new)
    assert change.after.containers["web"] == ContainerResources(
        cpu_request=None, cpu_limit=None, memory_request=None, memory_limit=None
    )
    result = merge(old, patch_for(change, TOKEN))
    resources = result["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources == {
        "requests": {"ephemeral-storage": "1Gi"},
        "limits": {"nvidia.com/gpu": "1"},
    }


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
