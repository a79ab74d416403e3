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
    MAX_SAFE_INTEGER,
    ChangeSet,
    ContainerResources,
    GuardedState,
    ResourceChange,
    Target,
    change_set_id,
    describe_changes,
    guarded_state,
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
            }
        },
        "init_containers": {},
        "min_replicas": None,
        "max_replicas": None,
        "scale_target": None,
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


def test_other_resources_are_not_guarded() -> None:
    obj = workload(
        containers=[
            {
                "name": "web",
                "resources": {"requests": {"cpu": "1", "ephemeral-storage": "1Gi", "x/gpu": 1}},
            }
        ]
    )
    assert guarded_state(obj).containers["web"] == resources(cpu_request=1000)


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
        ({"apiVersion": "v1", "kind": "Pod"}, "unsupported object"),
        ({**workload(), "apiVersion": "apps/v1beta2"}, "unsupported object"),
        ({**workload(), "apiVersion": "extensions/v1beta1"}, "unsupported object"),
        ({**hpa(), "apiVersion": "autoscaling/v1"}, "unsupported object"),
        ({**workload(), "kind": "ReplicaSet"}, "unsupported object"),
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


def test_pod_level_resources_are_refused() -> None:
    obj = workload()
    obj["spec"]["template"]["spec"]["resources"] = {"limits": {"cpu": "4"}}
    with pytest.raises(ValueError, match="pod-level resources"):
        guarded_state(obj)
    obj["spec"]["template"]["spec"]["resources"] = {}
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
container_resources = st.builds(
    ContainerResources,
    cpu_request=optional_count,
    cpu_limit=optional_count,
    memory_request=optional_count,
    memory_limit=optional_count,
)
names = st.text("abcdefghij-", min_size=1, max_size=5)


@st.composite
def guarded_states(draw: st.DrawFn) -> GuardedState:
    return GuardedState(
        replicas=draw(st.one_of(st.none(), st.integers(0, 1000))),
        containers=draw(st.dictionaries(names, container_resources, min_size=1, max_size=3)),
        init_containers=draw(st.dictionaries(names, container_resources, max_size=2)),
        min_replicas=draw(st.one_of(st.none(), st.integers(0, 1000))),
        max_replicas=draw(st.one_of(st.none(), st.integers(0, 1000))),
    )


def _mutations(value: GuardedState) -> list[GuardedState]:
    """Every state that differs from ``value`` in exactly one guarded value."""
    results: list[GuardedState] = []
    for field in ("replicas", "min_replicas", "max_replicas"):
        current = getattr(value, field)
        if current is not None:
            results.append(value.model_copy(update={field: current + 1}))
    for group in ("containers", "init_containers"):
        members: dict[str, ContainerResources] = getattr(value, group)
        for name, res in members.items():
            for attr in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
                current = getattr(res, attr)
                new = 1 if current is None else (None if current == 0 else current - 1)
                new_res = res.model_copy(update={attr: new})
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
