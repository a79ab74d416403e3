"""GuardedState, targets, change sets and their ids, readable diffs."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sizeguard.changes import (
    FOOTPRINT_PATHS,
    HPA_API_VERSION,
    HPA_KIND,
    MAX_SAFE_INTEGER,
    ChangeSet,
    ContainerResources,
    GuardedState,
    ResourceChange,
    Resources,
    Target,
    change_set_id,
    describe_changes,
    guarded_state,
    hpa_object,
    target_of,
)

SETTINGS = settings(max_examples=100, deadline=None)
MI = 1024**2
GI = 1024**3


def workload(
    kind: str = "Deployment",
    *,
    name: str = "web",
    namespace: str = "shop",
    uid: str = "uid-web",
    replicas: Any = 3,
    containers: list[Any] | None = None,
    init_containers: list[Any] | None = None,
) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {
        "containers": containers
        if containers is not None
        else [
            {
                "name": "web",
                "image": "nginx",
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"cpu": "1", "memory": "256Mi"},
                },
            }
        ]
    }
    if init_containers is not None:
        pod_spec["initContainers"] = init_containers
    spec: dict[str, Any] = {"selector": {}, "template": {"metadata": {}, "spec": pod_spec}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": spec,
    }


def hpa(min_replicas: Any = 2, max_replicas: Any = 10) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    }
    if min_replicas is not None:
        spec["minReplicas"] = min_replicas
    if max_replicas is not None:
        spec["maxReplicas"] = max_replicas
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-hpa"},
        "spec": spec,
    }


def resources(
    cpu_request: int | None = None,
    cpu_limit: int | None = None,
    memory_request: int | None = None,
    memory_limit: int | None = None,
) -> ContainerResources:
    return ContainerResources(
        cpu_request=cpu_request,
        cpu_limit=cpu_limit,
        memory_request=memory_request,
        memory_limit=memory_limit,
    )


def state(
    replicas: int | None = 3,
    containers: dict[str, ContainerResources] | None = None,
    init_containers: dict[str, ContainerResources] | None = None,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
) -> GuardedState:
    return GuardedState(
        replicas=replicas,
        containers=containers if containers is not None else {"web": resources(100, 1000)},
        init_containers=init_containers or {},
        min_replicas=min_replicas,
        max_replicas=max_replicas,
    )


def change(
    before: GuardedState,
    after: GuardedState,
    *,
    name: str = "web",
    namespace: str = "shop",
    kind: str = "Deployment",
) -> ResourceChange:
    return ResourceChange(
        target=Target(
            api_version="apps/v1", kind=kind, namespace=namespace, name=name, uid=f"uid-{name}"
        ),
        before=before,
        after=after,
        reason="p95 CPU is 40% of the request",
        source="recommend:krr-simple",
    )


# --- guarded_state -----------------------------------------------------------------------------


def test_deployment() -> None:
    assert guarded_state(workload()) == GuardedState(
        replicas=3,
        containers={"web": resources(100, 1000, 128 * MI, 256 * MI)},
        init_containers={},
        min_replicas=None,
        max_replicas=None,
    )


def test_json_shape_matches_contract() -> None:
    assert json.loads(guarded_state(workload()).model_dump_json()) == {
        "replicas": 3,
        "containers": {
            "web": {
                "cpu_request": 100,
                "cpu_limit": 1000,
                "memory_request": 128 * MI,
                "memory_limit": 256 * MI,
                "other_requests": {},
                "other_limits": {},
                "restart_policy": None,
                "claims": [],
            }
        },
        "init_containers": {},
        "min_replicas": None,
        "max_replicas": None,
        "scale_target": None,
        "pod_resources": None,
        "runtime_class": None,
        "strategy": None,
        "max_surge": None,
        "max_unavailable": None,
        "min_ready_seconds": None,
        "progress_deadline_seconds": None,
        "termination_grace_period_seconds": None,
        "resource_claims": {},
    }


def test_statefulset_replicas_default_to_one() -> None:
    assert guarded_state(workload("StatefulSet", replicas=None)).replicas == 1
    assert guarded_state(workload("Deployment", replicas=None)).replicas == 1


def test_daemonset_has_no_replicas() -> None:
    assert guarded_state(workload("DaemonSet", replicas=None)).replicas is None
    assert guarded_state(workload("DaemonSet", replicas=7)).replicas is None


def test_init_containers_and_unset_values() -> None:
    obj = workload(
        containers=[{"name": "web"}, {"name": "sidecar", "resources": {}}],
        init_containers=[
            {"name": "setup", "resources": {"requests": {"cpu": "0.5"}, "limits": None}}
        ],
    )
    got = guarded_state(obj)
    assert got.containers == {"web": resources(), "sidecar": resources()}
    assert got.init_containers == {"setup": resources(cpu_request=500)}


def test_same_name_in_containers_and_init_containers_is_kept_apart() -> None:
    obj = workload(
        containers=[{"name": "app", "resources": {"requests": {"cpu": "1"}}}],
        init_containers=[{"name": "app", "resources": {"requests": {"cpu": "2"}}}],
    )
    got = guarded_state(obj)
    assert got.containers["app"].cpu_request == 1000
    assert got.init_containers["app"].cpu_request == 2000


def test_every_resource_name_is_guarded() -> None:
    obj = workload(
        containers=[
            {
                "name": "web",
                "resources": {
                    "requests": {"cpu": "1", "ephemeral-storage": "1Gi", "x/gpu": 1},
                    "limits": {"x/gpu": "1", "hugepages-2Mi": "4Mi"},
                },
            }
        ]
    )
    assert guarded_state(obj).containers["web"] == ContainerResources(
        cpu_request=1000,
        cpu_limit=None,
        memory_request=None,
        memory_limit=None,
        other_requests={"ephemeral-storage": GI, "x/gpu": 1, "hugepages-2Mi": 4 * MI},
        other_limits={"x/gpu": 1, "hugepages-2Mi": 4 * MI},
    )
    more = copy.deepcopy(obj)
    more["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["x/gpu"] = 2
    assert describe_changes(guarded_state(obj), guarded_state(more)) == [
        "container web: x/gpu request: 1 → 2 (+100%)"
    ]
    del more["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["x/gpu"]
    more["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"][
        "ephemeral-storage"
    ] = "2Gi"
    # the x/gpu request left unset is still its limit, 1 (Kubernetes sets it so on each pod)
    assert describe_changes(guarded_state(obj), guarded_state(more)) == [
        "container web: ephemeral-storage request: 1Gi → 2Gi (+100%)",
    ]


def test_hpa() -> None:
    assert guarded_state(hpa()) == GuardedState(
        replicas=None,
        containers={},
        init_containers={},
        min_replicas=2,
        max_replicas=10,
        scale_target="apps/v1/Deployment/web",
    )
    assert guarded_state(hpa(min_replicas=None)).min_replicas == 1


def test_retargeting_an_hpa_changes_its_guarded_state() -> None:
    """Pointing an HPA at another workload changes that workload's replicas: guarded."""
    moved = hpa()
    moved["spec"]["scaleTargetRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "db"}
    assert guarded_state(moved) != guarded_state(hpa())
    assert describe_changes(guarded_state(hpa()), guarded_state(moved)) == [
        "HPA scaleTargetRef: apps/v1/Deployment/web → apps/v1/Deployment/db"
    ]
    with pytest.raises(ValueError, match="retarget"):
        ResourceChange(
            target=target_of(hpa()),
            before=guarded_state(hpa()),
            after=guarded_state(moved),
            reason="",
            source="test",
        )
    missing = hpa()
    del missing["spec"]["scaleTargetRef"]
    with pytest.raises(ValueError, match="scaleTargetRef"):
        guarded_state(missing)


def test_a_non_string_kind_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="must be strings"):
        guarded_state({**hpa(), "kind": []})
    with pytest.raises(ValueError, match="must be strings"):
        guarded_state({**hpa(), "apiVersion": {"a": 1}})


def test_spellings_give_equal_states() -> None:
    a = workload(
        containers=[{"name": "w", "resources": {"requests": {"cpu": "0.5", "memory": "1Gi"}}}]
    )
    b = workload(
        containers=[{"name": "w", "resources": {"requests": {"cpu": "500m", "memory": GI}}}]
    )
    assert guarded_state(a) == guarded_state(b)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"apiVersion": "v1", "kind": "Pod"}, "spec: expected an object"),
        ({"apiVersion": "v1", "kind": "Service", "spec": {}}, "unsupported object"),
        ({**workload(), "apiVersion": "apps/v1beta2"}, "unsupported object"),
        ({**workload(), "apiVersion": "extensions/v1beta1"}, "unsupported object"),
        ({**hpa(), "apiVersion": "autoscaling/v1"}, "unsupported object"),
        ({**workload(), "kind": "ReplicationController"}, "unsupported object"),
        ({**workload(), "kind": None}, "unsupported object"),
        ({"spec": {}}, "unsupported object"),
        ({**workload(), "spec": None}, "spec: expected an object"),
        ({**workload(), "spec": []}, "spec: expected an object"),
        ({**workload(), "spec": {"replicas": 1}}, "spec.template: expected an object"),
        ({**workload(), "spec": {"template": {"spec": "x"}}}, "spec.template.spec"),
        (workload(replicas="3"), "spec.replicas: expected an integer"),
        (workload(replicas=True), "spec.replicas: expected an integer"),
        (workload(replicas=2.0), "spec.replicas: expected an integer"),
        (workload(replicas=-1), "spec.replicas: -1 is out of range"),
        (workload(replicas=2**53), "out of range"),
        (workload(containers=[]), "at least one container"),
        (workload(containers={"web": {}}), "containers: expected a list"),  # type: ignore[arg-type]
        (workload(containers="web"), "containers: expected a list"),  # type: ignore[arg-type]
        (workload(containers=["web"]), r"containers\[0\]: expected an object"),
        (workload(containers=[None]), r"containers\[0\]: expected an object"),
        (workload(containers=[{"image": "x"}]), r"containers\[0\]\.name: expected a non-empty"),
        (workload(containers=[{"name": ""}]), r"containers\[0\]\.name"),
        (workload(containers=[{"name": 7}]), r"containers\[0\]\.name"),
        (workload(containers=[{"name": "a"}, {"name": "a"}]), "duplicate container name 'a'"),
        (workload(init_containers=[{"name": "i"}, {"name": "i"}]), "duplicate container name"),
        (workload(init_containers={"i": {}}), "initContainers: expected a list"),  # type: ignore[arg-type]
        (workload(containers=[{"name": "a", "resources": []}]), r"\[a\]\.resources: expected"),
        (
            workload(containers=[{"name": "a", "resources": {"requests": ["cpu"]}}]),
            r"\[a\]\.resources\.requests: expected an object",
        ),
        (
            workload(containers=[{"name": "a", "resources": {"limits": {"cpu": "1 core"}}}]),
            r"\[a\]\.resources\.limits\.cpu: invalid quantity '1 core'",
        ),
        (
            workload(containers=[{"name": "a", "resources": {"requests": {"memory": 1.5}}}]),
            r"requests\.memory: invalid quantity 1\.5",
        ),
        (
            workload(containers=[{"name": "a", "resources": {"requests": {"cpu": "-1"}}}]),
            r"requests\.cpu: '-1' is out of range",
        ),
        (
            workload(containers=[{"name": "a", "resources": {"requests": {"memory": "8Ei"}}}]),
            "out of range",
        ),
        (hpa(max_replicas=None), "maxReplicas: required"),
        (hpa(min_replicas="1"), "minReplicas: expected an integer"),
        (hpa(max_replicas=False), "maxReplicas: expected an integer"),
    ],
)
def test_untrusted_input_is_rejected(obj: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        guarded_state(obj)


@pytest.mark.parametrize("obj", [None, [], "Deployment", 3])
def test_non_mapping_objects_are_rejected(obj: Any) -> None:
    with pytest.raises(ValueError, match="expected an object"):
        guarded_state(obj)


def test_pod_level_resources_are_guarded() -> None:
    obj = workload()
    obj["spec"]["template"]["spec"]["resources"] = {"limits": {"cpu": "4"}}
    assert guarded_state(obj).pod_resources == Resources(
        cpu_request=4000, cpu_limit=4000, memory_request=None, memory_limit=None
    )
    assert describe_changes(guarded_state(workload()), guarded_state(obj)) == [
        "pod-level resources: CPU request: unset → 4",
        "pod-level resources: CPU limit: unset → 4",
    ]
    for empty in ({}, {"requests": {}}, {"requests": None, "limits": {}}):
        obj["spec"]["template"]["spec"]["resources"] = empty
        assert guarded_state(obj) == guarded_state(workload())


def test_guarded_state_does_not_modify_its_input() -> None:
    obj = workload(init_containers=[{"name": "i"}])
    snapshot = copy.deepcopy(obj)
    guarded_state(obj)
    assert obj == snapshot


# --- models ------------------------------------------------------------------------------------


def test_models_are_strict() -> None:
    base = guarded_state(workload()).model_dump()
    with pytest.raises(ValidationError):
        GuardedState.model_validate({**base, "replicas": "3"})
    with pytest.raises(ValidationError):
        GuardedState.model_validate({**base, "replicas": True})
    with pytest.raises(ValidationError):
        GuardedState.model_validate({**base, "replicas": 3.0})
    with pytest.raises(ValidationError):
        GuardedState.model_validate({**base, "extra": 1})
    with pytest.raises(ValidationError):
        GuardedState.model_validate({k: v for k, v in base.items() if k != "min_replicas"})
    with pytest.raises(ValidationError):
        GuardedState.model_validate({**base, "containers": {"": base["containers"]["web"]}})
    with pytest.raises(ValidationError):
        ContainerResources.model_validate({**base["containers"]["web"], "cpu_request": -1})
    with pytest.raises(ValidationError):
        ContainerResources.model_validate(
            {**base["containers"]["web"], "memory_limit": MAX_SAFE_INTEGER + 1}
        )
    assert GuardedState.model_validate(base) == guarded_state(workload())
    assert GuardedState.model_validate_json(json.dumps(base)) == guarded_state(workload())


def test_models_are_frozen() -> None:
    got = guarded_state(workload())
    with pytest.raises(ValidationError):
        got.replicas = 4  # type: ignore[misc]


def test_target_alias() -> None:
    target = Target(api_version="apps/v1", kind="Deployment", namespace="a", name="b", uid="c")
    assert target.model_dump() == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "namespace": "a",
        "name": "b",
        "uid": "c",
    }
    assert Target.model_validate(target.model_dump()) == target
    assert json.loads(target.model_dump_json())["apiVersion"] == "apps/v1"
    with pytest.raises(ValidationError):
        Target.model_validate({**target.model_dump(), "uid": ""})
    with pytest.raises(ValidationError):
        Target.model_validate({**target.model_dump(), "extra": "x"})


def test_target_of() -> None:
    assert target_of(workload()) == Target(
        api_version="apps/v1", kind="Deployment", namespace="shop", name="web", uid="uid-web"
    )
    for field in ("uid", "namespace", "name"):
        obj = workload()
        del obj["metadata"][field]
        with pytest.raises(ValueError, match=f"metadata.{field}"):
            target_of(obj)
    with pytest.raises(ValueError, match="metadata: expected an object"):
        target_of({"apiVersion": "apps/v1", "kind": "Deployment"})


def test_unvalidated_copies_are_revalidated() -> None:
    before = state()
    bad_after = before.model_copy(update={"replicas": -5})
    with pytest.raises(ValidationError):
        change(before, bad_after)


def test_change_must_keep_the_same_containers() -> None:
    with pytest.raises(ValidationError, match="different containers"):
        change(state(), state(containers={"other": resources(1)}))
    with pytest.raises(ValidationError, match="replicas is set on only one"):
        change(state(), state(replicas=None))


# --- change sets -------------------------------------------------------------------------------


def test_change_set_is_sorted_and_unique() -> None:
    b = change(state(3), state(4), name="b", namespace="x")
    a = change(state(3), state(4), name="a", namespace="y")
    c = change(state(3), state(4), name="a", namespace="x")
    changes = ChangeSet(changes=[a, b, c]).changes
    assert [ch.target.ref() for ch in changes] == [
        "Deployment/x/a",
        "Deployment/x/b",
        "Deployment/y/a",
    ]
    with pytest.raises(ValidationError, match="more than once"):
        ChangeSet(changes=[a, a])


def test_change_set_id_is_sha256_of_canonical_json() -> None:
    ch = change(state(3), state(5))
    # Independent oracle: for ASCII strings and small integers JCS equals sorted compact JSON.
    document = json.dumps(
        [ch.model_dump(mode="json")], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    expected = "cs-" + hashlib.sha256(document.encode()).hexdigest()[:20]
    assert change_set_id([ch]) == expected
    assert ChangeSet(changes=[ch]).id == expected
    assert len(expected) == 23


def test_change_set_id_ignores_order() -> None:
    changes = [change(state(3), state(n + 4), name=f"w{n}") for n in range(5)]
    ids = {change_set_id(random.Random(seed).sample(changes, 5)) for seed in range(10)}
    assert len(ids) == 1
    assert ChangeSet(changes=changes[::-1]).id == ids.pop()


def test_change_set_round_trips_through_json() -> None:
    cs = ChangeSet(changes=[change(state(3), state(5)), change(state(1), state(2), name="a")])
    again = ChangeSet.model_validate_json(cs.model_dump_json())
    assert again == cs
    assert again.id == cs.id
    assert json.loads(cs.model_dump_json())["changes"][0]["target"]["apiVersion"] == "apps/v1"


# --- describe_changes --------------------------------------------------------------------------


def test_describe_changes() -> None:
    before = state(
        3,
        containers={"web": resources(100, None, 256 * MI, None)},
        init_containers={"setup": resources(cpu_request=50)},
    )
    after = state(
        5,
        containers={"web": resources(250, None, 128 * MI, 512 * MI)},
        init_containers={"setup": resources()},
    )
    assert describe_changes(before, after) == [
        "replicas: 3 → 5 (+67%)",
        "container web: CPU request: 100m → 250m (+150%)",
        "container web: memory request: 256Mi → 128Mi (-50%)",
        "container web: memory limit: unset → 512Mi",
        "init container setup: CPU request: 50m → unset",
    ]
    assert describe_changes(before, before) == []


def test_describe_hpa_and_small_changes() -> None:
    before = state(None, containers={}, min_replicas=2, max_replicas=10)
    after = state(None, containers={}, min_replicas=4, max_replicas=10)
    assert describe_changes(before, after) == ["HPA minReplicas: 2 → 4 (+100%)"]
    assert describe_changes(state(1000), state(1001)) == ["replicas: 1000 → 1001 (+<1%)"]
    assert describe_changes(state(0), state(2)) == ["replicas: 0 → 2"]
    assert describe_changes(state(3), state(1)) == ["replicas: 3 → 1 (-67%)"]
    cpu = describe_changes(
        state(containers={"web": resources(1000)}), state(containers={"web": resources(2000)})
    )
    assert cpu == ["container web: CPU request: 1 → 2 (+100%)"]


def test_describe_added_and_removed_containers() -> None:
    lines = describe_changes(
        state(containers={"a": resources(100)}), state(containers={"b": resources(100)})
    )
    assert lines == [
        "container a: removed",
        "container a: CPU request: 100m → unset",
        "container b: added",
        "container b: CPU request: unset → 100m",
    ]


# --- properties --------------------------------------------------------------------------------

# (millicore value, spellings)
CPU_SPELLINGS = st.sampled_from(
    [
        (500, ["0.5", "500m", ".5", "5e-1", "500000u", "500000000n"]),
        (1000, ["1", "1000m", "1.0", "1e0", 1]),
        (250, ["250m", "0.25", "250000u"]),
        (2000, ["2", 2, "2000m", "0.002k"]),
    ]
)
MEMORY_SPELLINGS = st.sampled_from(
    [
        (GI, ["1Gi", "1073741824", GI, "1024Mi", "1048576Ki"]),
        (128 * MI, ["128Mi", "134217728", "0.125Gi", "131072Ki"]),
        (10**9, ["1G", "1000M", "1e9", 10**9, "1000000k"]),
    ]
)


def _shuffled(data: Any, rng: random.Random) -> Any:
    """A deep copy of ``data`` with every dict's key order shuffled."""
    if isinstance(data, dict):
        keys = list(data)
        rng.shuffle(keys)
        return {key: _shuffled(data[key], rng) for key in keys}
    if isinstance(data, list):
        return [_shuffled(item, rng) for item in data]
    return data


@SETTINGS
@given(
    cpu=CPU_SPELLINGS,
    memory=MEMORY_SPELLINGS,
    replicas=st.integers(0, 50),
    seed=st.integers(0, 2**32),
    spelling=st.data(),
)
def test_id_stable_under_key_order_and_spelling(
    cpu: tuple[int, list[Any]],
    memory: tuple[int, list[Any]],
    replicas: int,
    seed: int,
    spelling: st.DataObject,
) -> None:
    def spelled() -> dict[str, Any]:
        return workload(
            replicas=replicas,
            containers=[
                {
                    "name": "web",
                    "resources": {
                        "requests": {
                            "cpu": spelling.draw(st.sampled_from(cpu[1])),
                            "memory": spelling.draw(st.sampled_from(memory[1])),
                        }
                    },
                }
            ],
        )

    rng = random.Random(seed)
    after = state(replicas + 1, containers={"web": resources(cpu[0], None, memory[0], None)})
    first = change(guarded_state(spelled()), after)
    second = change(guarded_state(_shuffled(spelled(), rng)), after)
    assert first.before.containers["web"].cpu_request == cpu[0]
    assert first.before.containers["web"].memory_request == memory[0]
    assert change_set_id([first]) == change_set_id([second])
    reordered = ResourceChange.model_validate(_shuffled(first.model_dump(), rng))
    assert change_set_id([reordered]) == change_set_id([first])


optional_count = st.one_of(st.none(), st.integers(0, 10**12))
names = st.text("abcdefghij-", min_size=1, max_size=5)
others = st.dictionaries(st.sampled_from(["ephemeral-storage", "x.io/gpu"]), st.integers(0, 99))
container_resources = st.builds(
    ContainerResources,
    cpu_request=optional_count,
    cpu_limit=optional_count,
    memory_request=optional_count,
    memory_limit=optional_count,
    other_requests=others,
    other_limits=others,
    restart_policy=st.sampled_from([None, "Always"]),
    claims=st.lists(st.sampled_from(["gpu", "gpu/a"]), unique=True).map(sorted),
)
optional_word = st.one_of(st.none(), st.sampled_from(["RollingUpdate", "Recreate"]))
int_or_percent = st.one_of(st.none(), st.integers(0, 9), st.sampled_from(["25%", "100%"]))


@st.composite
def guarded_states(draw: st.DrawFn) -> GuardedState:
    return GuardedState(
        replicas=draw(st.one_of(st.none(), st.integers(0, 1000))),
        containers=draw(st.dictionaries(names, container_resources, min_size=1, max_size=3)),
        init_containers=draw(st.dictionaries(names, container_resources, max_size=2)),
        min_replicas=draw(st.one_of(st.none(), st.integers(0, 1000))),
        max_replicas=draw(st.one_of(st.none(), st.integers(0, 1000))),
        pod_resources=draw(
            st.one_of(
                st.none(),
                st.builds(
                    Resources,
                    cpu_request=optional_count,
                    cpu_limit=optional_count,
                    memory_request=optional_count,
                    memory_limit=optional_count,
                ),
            )
        ),
        runtime_class=draw(st.one_of(st.none(), names)),
        strategy=draw(optional_word),
        max_surge=draw(int_or_percent),
        max_unavailable=draw(int_or_percent),
        min_ready_seconds=draw(st.one_of(st.none(), st.integers(1, 10**6))),
        progress_deadline_seconds=draw(st.one_of(st.none(), st.integers(0, 10**6))),
        termination_grace_period_seconds=draw(st.one_of(st.none(), st.integers(0, 10**6))),
        resource_claims=draw(st.dictionaries(names, st.sampled_from(["claim:a", "template:b"]))),
    )


def _other(current: Any) -> Any:
    """A value of the same field that differs from ``current``."""
    if current is None:
        return 1
    if isinstance(current, str):
        return current + "x" if not current.endswith("%") else "7%" if current != "7%" else "8%"
    return current + 1


def _mutations(value: GuardedState) -> list[GuardedState]:
    """Every state that differs from ``value`` in exactly one guarded value."""
    results: list[GuardedState] = []
    for field in ("replicas", "min_replicas", "max_replicas"):
        current = getattr(value, field)
        if current is not None:
            results.append(value.model_copy(update={field: current + 1}))
    for field in (
        "max_surge",
        "max_unavailable",
        "min_ready_seconds",
        "progress_deadline_seconds",
        "termination_grace_period_seconds",
    ):
        results.append(value.model_copy(update={field: _other(getattr(value, field))}))
    runtime_class = "k" if value.runtime_class is None else value.runtime_class + "x"
    results.append(value.model_copy(update={"runtime_class": runtime_class}))
    results.append(value.model_copy(update={"strategy": "OnDelete"}))
    claims = {**value.resource_claims, "zz": "claim:other"}
    results.append(value.model_copy(update={"resource_claims": claims}))
    empty = Resources(cpu_request=None, cpu_limit=None, memory_request=None, memory_limit=None)
    pod = value.pod_resources or empty
    results.append(
        value.model_copy(
            update={"pod_resources": pod.model_copy(update={"cpu_limit": _other(pod.cpu_limit)})}
        )
    )
    for group in ("containers", "init_containers"):
        members: dict[str, ContainerResources] = getattr(value, group)
        for name, res in members.items():
            for attr in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
                current = getattr(res, attr)
                new = 1 if current is None else (None if current == 0 else current - 1)
                new_res = res.model_copy(update={attr: new})
                results.append(value.model_copy(update={group: {**members, name: new_res}}))
            policy = None if res.restart_policy else "Always"
            variants = [
                res.model_copy(update={"restart_policy": policy}),
                res.model_copy(update={"other_requests": {**res.other_requests, "y/z": 1}}),
                res.model_copy(update={"other_limits": {**res.other_limits, "y/z": 1}}),
                res.model_copy(update={"claims": [*res.claims, "zz"]}),
            ]
            for new_res in variants:
                results.append(value.model_copy(update={group: {**members, name: new_res}}))
    return results


@SETTINGS
@given(guarded_states(), st.text(max_size=20), st.text(max_size=20))
def test_id_changes_when_any_guarded_value_changes(
    value: GuardedState, reason: str, source: str
) -> None:
    target = Target(api_version="apps/v1", kind="Deployment", namespace="n", name="w", uid="u")
    base = ResourceChange(target=target, before=value, after=value, reason=reason, source=source)
    base_id = change_set_id([base])
    mutations = _mutations(value)
    assert mutations
    for mutated in mutations:
        before_changed = base.model_copy(update={"before": mutated})
        after_changed = base.model_copy(update={"after": mutated})
        assert change_set_id([before_changed]) != base_id
        assert change_set_id([after_changed]) != base_id
    other = base.model_copy(update={"reason": reason + "!"})
    assert change_set_id([other]) != base_id
    moved = base.model_copy(update={"target": target.model_copy(update={"uid": "v"})})
    assert change_set_id([moved]) != base_id


@SETTINGS
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
        max_leaves=20,
    )
)
def test_guarded_state_never_crashes_on_garbage(garbage: Any) -> None:
    obj = workload()
    obj["spec"]["template"]["spec"]["containers"][0]["resources"] = garbage
    with contextlib.suppress(ValueError):
        guarded_state(obj)
    obj = workload()
    obj["spec"] = garbage
    with contextlib.suppress(ValueError):
        guarded_state(obj)


# --- the footprint: everything that sets how many pods run and what each may use -------------


def with_spec(obj: dict[str, Any], **spec: Any) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["spec"].update(spec)
    return obj


def test_an_init_container_turned_sidecar_is_a_change() -> None:
    base = workload(init_containers=[{"name": "proxy", "resources": {"requests": {"cpu": "1"}}}])
    sidecar = copy.deepcopy(base)
    sidecar["spec"]["template"]["spec"]["initContainers"][0]["restartPolicy"] = "Always"
    assert guarded_state(sidecar).init_containers["proxy"].restart_policy == "Always"
    assert describe_changes(guarded_state(base), guarded_state(sidecar)) == [
        "init container proxy: restartPolicy: unset → Always (a sidecar: its requests count "
        "for the pod's life)"
    ]


def test_runtime_class_is_guarded() -> None:
    base = workload()
    kata = copy.deepcopy(base)
    kata["spec"]["template"]["spec"]["runtimeClassName"] = "kata"
    assert guarded_state(kata).runtime_class == "kata"
    assert describe_changes(guarded_state(base), guarded_state(kata)) == [
        "runtimeClassName: unset → kata"
    ]
    kata["spec"]["template"]["spec"]["runtimeClassName"] = ""
    assert guarded_state(kata) == guarded_state(base)


def test_deployment_rollout_fields_are_guarded() -> None:
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}}
    base = with_spec(workload(), strategy=rolling, progressDeadlineSeconds=600)
    held = with_spec(
        workload(),
        strategy={
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0},
        },
        minReadySeconds=86400,
        progressDeadlineSeconds=2**31 - 1,
    )
    state_base, state_held = guarded_state(base), guarded_state(held)
    assert (state_base.strategy, state_base.max_surge, state_base.max_unavailable) == (
        "RollingUpdate",
        "25%",
        1,
    )
    assert (state_held.max_surge, state_held.max_unavailable) == ("100%", 0)
    assert describe_changes(state_base, state_held) == [
        "minReadySeconds: unset → 86400",
        f"progressDeadlineSeconds: 600 → {2**31 - 1} (+357913841%)",
        "rollout maxSurge: 25% → 100%",
        "rollout maxUnavailable: 1 → 0",
    ]
    recreate = with_spec(workload(), strategy={"type": "Recreate"})
    assert guarded_state(recreate).strategy == "Recreate"


def test_daemonset_and_statefulset_rollout_fields() -> None:
    daemon = with_spec(
        workload("DaemonSet", replicas=None),
        updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 4}},
        minReadySeconds=30,
    )
    state = guarded_state(daemon)
    assert (state.strategy, state.max_surge, state.min_ready_seconds) == ("RollingUpdate", 4, 30)
    # A StatefulSet runs no surge pods: its updateStrategy does not raise the peak pod count.
    stateful = with_spec(
        workload("StatefulSet"), updateStrategy={"type": "OnDelete"}, minReadySeconds=10
    )
    state = guarded_state(stateful)
    assert (state.strategy, state.max_surge, state.min_ready_seconds) == (None, None, 10)
    # A Deployment's "updateStrategy" is not a field of it: ignored like any unknown field.
    assert (
        guarded_state(with_spec(workload(), updateStrategy={"type": "OnDelete"})).strategy is None
    )


def test_rollout_spellings() -> None:
    def surge(value: Any) -> Any:
        obj = with_spec(workload(), strategy={"rollingUpdate": {"maxSurge": value}})
        return guarded_state(obj).max_surge

    assert surge("025%") == "25%"
    assert surge("0%") == "0%"
    assert surge(3) == 3
    assert surge(None) is None
    for bad in ("25", "x%", "-1%", "1.5%", True, 2.0, -1, "%"):
        with pytest.raises(ValueError, match=r"maxSurge"):
            surge(bad)
    zero = with_spec(workload(), minReadySeconds=0)
    assert guarded_state(zero) == guarded_state(workload())  # Kubernetes omits 0: the same
    with pytest.raises(ValueError, match="minReadySeconds"):
        guarded_state(with_spec(workload(), minReadySeconds="10"))
    with pytest.raises(ValueError, match=r"strategy\.type"):
        guarded_state(with_spec(workload(), strategy={"type": "Rolling Update"}))


def test_a_pod_has_a_footprint_for_resize() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "p"},
        "spec": workload()["spec"]["template"]["spec"],
    }
    assert guarded_state(pod).containers == guarded_state(workload()).containers
    assert guarded_state(pod).replicas is None
    bigger = copy.deepcopy(pod)
    bigger["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "2"
    assert describe_changes(guarded_state(pod), guarded_state(bigger)) == [
        "container web: CPU request: 100m → 2 (+1900%)"
    ]


def test_bad_resource_names_and_restart_policies_are_refused() -> None:
    bad_name = workload(containers=[{"name": "a", "resources": {"requests": {" x": "1"}}}])
    with pytest.raises(ValueError, match="not a resource name"):
        guarded_state(bad_name)
    bad_policy = workload(init_containers=[{"name": "a", "restartPolicy": "Al ways"}])
    with pytest.raises(ValueError, match="restartPolicy"):
        guarded_state(bad_policy)
    bad_quantity = workload(containers=[{"name": "a", "resources": {"limits": {"x/gpu": "one"}}}])
    with pytest.raises(ValueError, match=r"limits\.x/gpu"):
        guarded_state(bad_quantity)


# Every field guarded_state reads lies under FOOTPRINT_PATHS: the webhook registration's
# matchConditions compare exactly those subtrees, so a change they do not see cannot change the
# guarded state. Shown by building an object from those subtrees alone.


def _project(obj: dict[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    projected: dict[str, Any] = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": obj["metadata"],
    }
    for path in paths:
        *parents, leaf = path.split(".")
        source: Any = obj
        target = projected
        for part in parents:
            source = source.get(part) if isinstance(source, dict) else None
            target = target.setdefault(part, {})
        if not isinstance(source, dict):
            continue
        if leaf.endswith("[]"):
            key = leaf[:-2]
            if isinstance(source.get(key), list):
                target[key] = [
                    {k: v for k, v in item.items() if k in ("name", "resources", "restartPolicy")}
                    for item in source[key]
                ]
        elif leaf in source:
            target[leaf] = source[leaf]
    return projected


_NOISE = st.dictionaries(
    st.sampled_from(["image", "env", "ports", "command", "x-extra", "args"]),
    st.one_of(st.text(max_size=5), st.integers(), st.lists(st.text(max_size=3), max_size=2)),
    max_size=3,
)
_QUANTITY = st.sampled_from(["100m", "1", "0.5", "128Mi", "1Gi", 2, "3e2"])
_RESOURCES = st.fixed_dictionaries(
    {},
    optional={
        "requests": st.dictionaries(
            st.sampled_from(["cpu", "memory", "ephemeral-storage", "x/gpu"]), _QUANTITY
        ),
        "limits": st.dictionaries(st.sampled_from(["cpu", "memory", "x/gpu"]), _QUANTITY),
    },
)


@st.composite
def _containers(draw: Any, prefix: str) -> list[dict[str, Any]]:
    count = draw(st.integers(min_value=1, max_value=3))
    result = []
    for index in range(count):
        container = {"name": f"{prefix}{index}", **draw(_NOISE)}
        if draw(st.booleans()):
            container["resources"] = draw(_RESOURCES)
        if prefix == "init" and draw(st.booleans()):
            container["restartPolicy"] = "Always"
        result.append(container)
    return result


@st.composite
def _random_objects(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod"]))
    pod_spec: dict[str, Any] = {
        "containers": draw(_containers("c")),
        "nodeSelector": draw(st.dictionaries(st.text(max_size=3), st.text(max_size=3))),
        "priorityClassName": draw(st.text(max_size=4)),
    }
    if draw(st.booleans()):
        pod_spec["initContainers"] = draw(_containers("init"))
    if draw(st.booleans()):
        pod_spec["resources"] = draw(_RESOURCES)
    if draw(st.booleans()):
        pod_spec["runtimeClassName"] = draw(st.sampled_from(["kata", "gvisor"]))
    if draw(st.booleans()):
        pod_spec["terminationGracePeriodSeconds"] = draw(st.integers(0, 10**6))
    if draw(st.booleans()):
        pod_spec["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": "gpus"}]
        pod_spec["containers"][0].setdefault("resources", {})["claims"] = [{"name": "gpu"}]
    meta = {"name": "x", "namespace": "n", "uid": "u", "labels": {"a": draw(st.text(max_size=3))}}
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}
    spec: dict[str, Any] = {
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod_spec},
        "selector": {"matchLabels": {"a": "b"}},
        "revisionHistoryLimit": draw(st.integers(0, 10)),
        "paused": draw(st.booleans()),
    }
    if kind != "DaemonSet" and draw(st.booleans()):
        spec["replicas"] = draw(st.integers(0, 50))
    surge = st.one_of(st.integers(0, 5), st.sampled_from(["25%", "100%"]))
    rolling = st.fixed_dictionaries({}, optional={"maxSurge": surge, "maxUnavailable": surge})
    strategy = st.fixed_dictionaries(
        {},
        optional={"type": st.sampled_from(["RollingUpdate", "Recreate"]), "rollingUpdate": rolling},
    )
    for key in ("strategy", "updateStrategy"):
        if draw(st.booleans()):
            spec[key] = draw(strategy)
    for key in ("minReadySeconds", "progressDeadlineSeconds"):
        if draw(st.booleans()):
            spec[key] = draw(st.integers(0, 10**6))
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": spec}


@given(_random_objects())
@SETTINGS
def test_guarded_state_reads_only_the_footprint_paths(obj: dict[str, Any]) -> None:
    assert guarded_state(_project(obj, FOOTPRINT_PATHS[obj["kind"]])) == guarded_state(obj)


def test_hpa_footprint_paths() -> None:
    obj = hpa()
    obj["spec"]["metrics"] = [{"type": "Resource"}]
    obj["spec"]["behavior"] = {"scaleUp": {"stabilizationWindowSeconds": 0}}
    assert guarded_state(_project(obj, FOOTPRINT_PATHS[HPA_KIND])) == guarded_state(obj)


# --- changes that create or delete an HPA -----------------------------------------------------

HPA_SPEC: dict[str, Any] = {
    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
    "minReplicas": 2,
    "maxReplicas": 6,
    "metrics": [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80},
            },
        }
    ],
}


def hpa_target(uid: str | None = None) -> Target:
    return Target(api_version=HPA_API_VERSION, kind=HPA_KIND, namespace="shop", name="web", uid=uid)


def test_a_change_can_create_an_hpa() -> None:
    after = guarded_state(hpa_object(hpa_target(), HPA_SPEC))
    created = ResourceChange(
        target=hpa_target(),
        before=None,
        after=after,
        reason="",
        source="edit",
        create_spec=HPA_SPEC,
    )
    assert created.operation == "create"
    assert describe_changes(None, after) == [
        "created: HPA for apps/v1/Deployment/web, minReplicas 2, maxReplicas 6"
    ]
    # The id covers the whole spec it creates, metrics included.
    other_spec = copy.deepcopy(HPA_SPEC)
    other_spec["metrics"][0]["resource"]["target"]["averageUtilization"] = 50
    other = created.model_copy(update={"create_spec": other_spec})
    assert ChangeSet(changes=[created]).id != ChangeSet(changes=[other]).id


def test_a_change_can_delete_an_hpa() -> None:
    before = guarded_state(hpa())
    deleted = ResourceChange(
        target=hpa_target("uid-hpa"), before=before, after=None, reason="", source="edit"
    )
    assert deleted.operation == "delete"
    assert describe_changes(before, None) == [
        "deleted (was: HPA for apps/v1/Deployment/web, minReplicas 2, maxReplicas 10)"
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"before": None, "after": None}, "needs a before or an after"),
        ({"target": "deployment", "after": None}, "creates and deletes"),
        ({"before": None, "uid": "x", "create_spec": HPA_SPEC}, "has a uid exactly when"),
        ({"before": None, "uid": None}, "needs create_spec"),
        ({"uid": "uid-hpa", "create_spec": HPA_SPEC}, "create_spec belongs"),
        (
            {"before": None, "uid": None, "create_spec": {**HPA_SPEC, "maxReplicas": 7}},
            "does not give the state",
        ),
        ({"after": None, "uid": None}, "has a uid exactly when"),
    ],
)
def test_create_and_delete_changes_must_be_consistent(fields: dict[str, Any], message: str) -> None:
    state_hpa = guarded_state(hpa_object(hpa_target(), HPA_SPEC))
    target = hpa_target(fields.get("uid", "uid-hpa"))
    if fields.get("target") == "deployment":
        target = Target(api_version="apps/v1", kind="Deployment", namespace="s", name="w", uid="u")
    values: dict[str, Any] = {
        "target": target,
        "before": fields.get("before", state_hpa),
        "after": fields.get("after", state_hpa),
        "reason": "",
        "source": "edit",
        "create_spec": fields.get("create_spec"),
    }
    with pytest.raises(ValidationError, match=message):
        ResourceChange.model_validate(values)


def test_dra_claims_and_termination_grace_are_guarded() -> None:
    base = workload()
    claimed = copy.deepcopy(base)
    pod_spec = claimed["spec"]["template"]["spec"]
    pod_spec["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": "big-gpus"}]
    pod_spec["containers"][0]["resources"]["claims"] = [{"name": "gpu", "request": "a"}]
    pod_spec["terminationGracePeriodSeconds"] = 31536000
    state = guarded_state(claimed)
    assert state.resource_claims == {"gpu": "template:big-gpus"}
    assert state.containers["web"].claims == ["gpu/a"]
    assert describe_changes(guarded_state(base), state) == [
        "terminationGracePeriodSeconds: unset → 31536000",
        "resource claim gpu: unset → template:big-gpus",
        "container web: resource claims: none → gpu/a",
    ]
    pod_spec["resourceClaims"] = [{"name": "gpu"}]
    with pytest.raises(ValueError, match="one claim or claim template"):
        guarded_state(claimed)


def test_a_replica_set_footprint_is_its_replicas_and_pod_template() -> None:
    rs = with_spec(workload("ReplicaSet", replicas=2), minReadySeconds=5, strategy={"type": "x"})
    state = guarded_state(rs)
    assert state.replicas == 2
    assert state.containers == guarded_state(workload()).containers
    # no rollout of its own: its Deployment's fields are not read on it
    assert (state.min_ready_seconds, state.strategy) == (None, None)
    assert guarded_state(workload("ReplicaSet", replicas=None)).replicas == 1


def test_a_request_left_unset_under_a_limit_is_the_limit() -> None:
    """Kubernetes gives every pod a request equal to its limit where only the limit is set,
    so removing a request under a 2-CPU limit is a 20-fold increase, not a removal."""
    limited = workload(
        containers=[
            {
                "name": "web",
                "resources": {
                    "requests": {"cpu": "100m"},
                    "limits": {"cpu": "2", "memory": "1Gi", "x/gpu": 1},
                },
            }
        ]
    )
    state = guarded_state(limited)
    assert (state.containers["web"].memory_request, state.containers["web"].other_requests) == (
        GI,
        {"x/gpu": 1},
    )
    unset = copy.deepcopy(limited)
    del unset["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert describe_changes(state, guarded_state(unset)) == [
        "container web: CPU request: 100m → 2 (+1900%)"
    ]
    # ...also in a state built by hand, once it is validated (in a change, an approval)
    copied = state.containers["web"].model_copy(update={"cpu_request": None})
    assert ContainerResources.model_validate(copied.model_dump()).cpu_request == 2000
