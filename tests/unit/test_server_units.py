"""The MCP server's plain-data logic: edits (every footprint field, HPA create and remove),
typed confirmations, krr values, the text the human reads, the age rule for removing an HPA,
and the single-use request states of the elicitation round trip."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest
from pydantic import ValidationError

from sizeguard.changes import (
    ContainerResources,
    GuardedState,
    ResourceChange,
    Resources,
    Target,
    guarded_state,
    hpa_object,
)
from sizeguard.cost import PriceModel
from sizeguard.policy import ChangesetDecision, Finding
from sizeguard.server.confirm import PendingConfirmations
from sizeguard.server.models import (
    CostDelta,
    DryRun,
    Edit,
    PolicyView,
    Preview,
    TargetDiff,
    describe_validation_error,
)
from sizeguard.server.service import (
    ServiceError,
    _recommended,
    apply_edit,
    change_set_op,
    check_typed,
    confirmation_text,
    diff_lines,
    drift_problem,
    hpa_create_spec,
    pod_cost,
    refuse_young,
    typed_namespaces,
)

MIB = 2**20
CS = "cs-0123456789abcdef0123"


def resources(
    cpu: int | None = 100,
    cpu_limit: int | None = 500,
    memory: int | None = 64 * MIB,
    memory_limit: int | None = 128 * MIB,
) -> ContainerResources:
    return ContainerResources(
        cpu_request=cpu, cpu_limit=cpu_limit, memory_request=memory, memory_limit=memory_limit
    )


def workload(replicas: int | None = 2) -> GuardedState:
    return GuardedState(
        replicas=replicas,
        containers={"app": resources(), "sidecar": resources(cpu=10, cpu_limit=None)},
        init_containers={"setup": resources(cpu=50)},
        min_replicas=None,
        max_replicas=None,
    )


def hpa() -> GuardedState:
    return GuardedState(
        replicas=None,
        containers={},
        init_containers={},
        min_replicas=2,
        max_replicas=10,
        scale_target="apps/v1/Deployment/web",
    )


def edit(kind: str = "Deployment", **fields: Any) -> Edit:
    return Edit(kind=kind, namespace="shop", name="web", **fields)  # type: ignore[arg-type]


# --- apply_edit ---------------------------------------------------------------------------------


def test_resizing_a_container_changes_only_that_container() -> None:
    before = workload()
    after = apply_edit(
        before, edit(container="app", cpu_request="250m", memory_limit="1Gi"), "Deployment"
    )
    assert after.containers["app"] == resources(cpu=250, memory_limit=1024 * MIB)
    assert after.containers["sidecar"] == before.containers["sidecar"]
    assert after.init_containers == before.init_containers
    assert after.replicas == 2
    assert before.containers["app"].cpu_request == 100  # the input is not modified


def test_cpu_is_rounded_up_to_millicores_and_memory_parsed_to_bytes() -> None:
    after = apply_edit(
        workload(), edit(container="app", cpu_request="0.0001", memory_request="1.5"), "Deployment"
    )
    assert after.containers["app"].cpu_request == 1
    assert after.containers["app"].memory_request == 2


def test_an_init_container_can_be_resized() -> None:
    after = apply_edit(workload(), edit(container="setup", cpu_request="75m"), "StatefulSet")
    assert after.init_containers["setup"].cpu_request == 75
    assert after.containers == workload().containers


@pytest.mark.parametrize("spelling", ["unset", "UNSET", " Unset "])
def test_unset_removes_a_limit(spelling: str) -> None:
    after = apply_edit(workload(), edit(container="app", cpu_limit=spelling), "Deployment")
    assert after.containers["app"] == resources(cpu_limit=None)


def test_replicas_of_a_deployment() -> None:
    after = apply_edit(workload(), edit(replicas=5), "Deployment")
    assert after.replicas == 5
    assert after.containers == workload().containers


def test_replicas_may_go_to_zero_here_the_policy_decides() -> None:
    assert apply_edit(workload(), edit(replicas=0), "StatefulSet").replicas == 0


def test_hpa_min_and_max() -> None:
    after = apply_edit(
        hpa(), edit("HorizontalPodAutoscaler", min_replicas=3), "HorizontalPodAutoscaler"
    )
    assert (after.min_replicas, after.max_replicas) == (3, 10)
    after = apply_edit(
        hpa(),
        edit("HorizontalPodAutoscaler", min_replicas=4, max_replicas=20),
        "HorizontalPodAutoscaler",
    )
    assert (after.min_replicas, after.max_replicas) == (4, 20)
    assert after.scale_target == "apps/v1/Deployment/web"


@pytest.mark.parametrize(
    "fields",
    [
        {"container": "app"},
        {"container": "app", "cpu_request": "100m"},
        {"memory_limit": "1Gi"},
    ],
)
def test_an_hpa_refuses_container_edits(fields: dict[str, Any]) -> None:
    with pytest.raises(ServiceError, match="an HPA has no containers"):
        apply_edit(hpa(), edit("HorizontalPodAutoscaler", **fields), "HorizontalPodAutoscaler")


def test_an_hpa_refuses_replicas() -> None:
    with pytest.raises(ServiceError, match="min_replicas/max_replicas on an HPA"):
        apply_edit(hpa(), edit("HorizontalPodAutoscaler", replicas=3), "HorizontalPodAutoscaler")


def test_a_workload_refuses_hpa_fields() -> None:
    with pytest.raises(ServiceError, match="belong to an HPA"):
        apply_edit(workload(), edit(min_replicas=2), "Deployment")


def test_a_daemonset_has_no_replicas() -> None:
    with pytest.raises(ServiceError, match="DaemonSet/shop/web: a DaemonSet has no replicas"):
        apply_edit(workload(None), edit("DaemonSet", replicas=3), "DaemonSet")


def test_an_unknown_container_is_refused_naming_the_existing_ones() -> None:
    with pytest.raises(ServiceError) as refused:
        apply_edit(workload(), edit(container="ap", cpu_request="1"), "Deployment")
    message = str(refused.value)
    assert "no container 'ap'" in message
    assert "(it has: app, sidecar, setup)" in message


def test_a_resize_must_name_the_container() -> None:
    with pytest.raises(ServiceError, match="name the container"):
        apply_edit(workload(), edit(cpu_request="1"), "Deployment")


def test_a_container_without_values_is_refused() -> None:
    with pytest.raises(ServiceError, match="nothing to change for container 'app'"):
        apply_edit(workload(), edit(container="app"), "Deployment")


@pytest.mark.parametrize("value", ["abc", "1.2.3", "100mm", "1Gb", "", " "])
def test_an_invalid_quantity_is_refused(value: str) -> None:
    if not value:
        with pytest.raises(ValueError, match="at least 1 character"):
            edit(container="app", cpu_request=value)
        return
    with pytest.raises(ServiceError, match="is not a valid quantity"):
        apply_edit(workload(), edit(container="app", cpu_request=value), "Deployment")


@pytest.mark.parametrize("field", ["cpu_request", "cpu_limit", "memory_request", "memory_limit"])
def test_a_negative_quantity_is_refused(field: str) -> None:
    with pytest.raises(ServiceError, match="is negative"):
        apply_edit(workload(), edit(container="app", **{field: "-1"}), "Deployment")


def test_negative_replicas_are_refused_by_the_edit_model() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        edit(replicas=-1)


# --- the new footprint fields ------------------------------------------------------------------

GI = 1024 * MIB


def rollout(kind: str = "Deployment", **fields: Any) -> GuardedState:
    defaults: dict[str, Any] = {
        "Deployment": {
            "strategy": "RollingUpdate",
            "max_surge": "25%",
            "max_unavailable": "25%",
            "progress_deadline_seconds": 600,
        },
        "DaemonSet": {"strategy": "RollingUpdate", "max_surge": 0, "max_unavailable": 1},
        "StatefulSet": {},
    }[kind]
    state = workload(None if kind == "DaemonSet" else 2)
    return GuardedState.model_validate(state.model_copy(update={**defaults, **fields}))


def test_pod_level_resources_are_set_changed_and_removed() -> None:
    after = apply_edit(
        workload(), edit(pod_level=True, cpu_request="2", memory_limit="4Gi"), "Deployment"
    )
    assert after.pod_resources == Resources(
        cpu_request=2000, cpu_limit=None, memory_request=None, memory_limit=4 * GI
    )
    assert after.containers == workload().containers
    again = apply_edit(
        after, edit(pod_level=True, other_limits={"hugepages-2Mi": "8Mi"}), "Deployment"
    )
    assert again.pod_resources is not None and again.pod_resources.other_limits == {
        "hugepages-2Mi": 8 * MIB
    }
    # A request left unset under a limit is the limit (Kubernetes sets it so on each pod):
    # removing the limit alone keeps that request.
    assert after.pod_resources.memory_request == 4 * GI
    kept = apply_edit(after, edit(pod_level=True, memory_limit="unset"), "Deployment")
    assert kept.pod_resources is not None and kept.pod_resources.memory_request == 4 * GI
    gone = apply_edit(
        after,
        edit(pod_level=True, cpu_request="unset", memory_request="unset", memory_limit="unset"),
        "Deployment",
    )
    assert gone.pod_resources is None  # nothing left: no pod-level resources at all


def test_other_resources_per_container_are_set_kept_and_unset() -> None:
    after = apply_edit(
        workload(),
        edit(
            container="app",
            other_requests={"ephemeral-storage": "2Gi"},
            other_limits={"nvidia.com/gpu": "1"},
        ),
        "Deployment",
    )
    app = after.containers["app"]
    assert (app.other_requests, app.other_limits) == (
        {"ephemeral-storage": 2 * GI, "nvidia.com/gpu": 1},  # a GPU request is its limit
        {"nvidia.com/gpu": 1},
    )
    assert app.cpu_request == 100  # the rest stays
    more = apply_edit(
        after, edit(container="app", other_requests={"example.com/x": "3"}), "Deployment"
    )
    assert more.containers["app"].other_requests == {
        "ephemeral-storage": 2 * GI,
        "example.com/x": 3,
        "nvidia.com/gpu": 1,
    }
    fewer = apply_edit(
        more, edit(container="app", other_limits={"nvidia.com/gpu": "unset"}), "Deployment"
    )
    assert fewer.containers["app"].other_limits == {}


def test_cpu_and_memory_are_not_other_resources() -> None:
    with pytest.raises(ServiceError, match="set cpu with cpu_request/cpu_limit"):
        apply_edit(workload(), edit(container="app", other_requests={"cpu": "1"}), "Deployment")


def test_an_init_container_becomes_a_sidecar_and_back() -> None:
    sidecar = apply_edit(workload(), edit(container="setup", restart_policy="Always"), "Deployment")
    assert sidecar.init_containers["setup"].restart_policy == "Always"
    assert sidecar.init_containers["setup"].cpu_request == 50
    plain = apply_edit(sidecar, edit(container="setup", restart_policy="unset"), "Deployment")
    assert plain.init_containers["setup"].restart_policy is None


def test_a_regular_container_has_no_restart_policy_to_set() -> None:
    with pytest.raises(ServiceError, match="restart_policy is for init containers"):
        apply_edit(workload(), edit(container="app", restart_policy="Always"), "Deployment")
    with pytest.raises(ServiceError, match="name the container"):
        apply_edit(workload(), edit(restart_policy="Always"), "Deployment")


def test_runtime_class_is_set_and_unset() -> None:
    kata = apply_edit(workload(), edit(runtime_class="kata"), "StatefulSet")
    assert kata.runtime_class == "kata"
    assert apply_edit(kata, edit(runtime_class="unset"), "StatefulSet").runtime_class is None


def test_a_deployment_goes_to_recreate_and_back_with_the_default_bounds() -> None:
    recreate = apply_edit(rollout(), edit(strategy="Recreate"), "Deployment")
    assert (recreate.strategy, recreate.max_surge, recreate.max_unavailable) == (
        "Recreate",
        None,
        None,
    )
    rolling = apply_edit(recreate, edit(strategy="RollingUpdate"), "Deployment")
    assert (rolling.max_surge, rolling.max_unavailable) == ("25%", "25%")  # what k8s would set
    held_open = apply_edit(rolling, edit(max_surge="100%", max_unavailable=0), "Deployment")
    assert (held_open.strategy, held_open.max_surge, held_open.max_unavailable) == (
        "RollingUpdate",
        "100%",
        0,
    )


def test_a_daemonset_update_strategy() -> None:
    on_delete = apply_edit(
        rollout("DaemonSet"), edit("DaemonSet", strategy="OnDelete"), "DaemonSet"
    )
    assert (on_delete.strategy, on_delete.max_surge, on_delete.max_unavailable) == (
        "OnDelete",
        None,
        None,
    )
    back = apply_edit(
        on_delete, edit("DaemonSet", strategy="RollingUpdate", max_surge=2), "DaemonSet"
    )
    assert (back.max_surge, back.max_unavailable) == (2, 1)


@pytest.mark.parametrize(
    ("kind", "fields", "message"),
    [
        ("Deployment", {"strategy": "OnDelete"}, "RollingUpdate or Recreate, not OnDelete"),
        ("DaemonSet", {"strategy": "Recreate"}, "RollingUpdate or OnDelete, not Recreate"),
        ("StatefulSet", {"max_surge": 1}, "Deployments and DaemonSets"),
        ("Deployment", {"strategy": "Recreate", "max_surge": 1}, "Recreate strategy takes no"),
        ("DaemonSet", {"progress_deadline_seconds": 60}, "belongs to a Deployment"),
    ],
)
def test_rollout_edits_that_do_not_fit_are_refused(
    kind: str, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ServiceError, match=message):
        apply_edit(rollout(kind), edit(kind, **fields), kind)


def test_min_ready_and_progress_deadline_seconds() -> None:
    slow = apply_edit(
        rollout(), edit(min_ready_seconds=3600, progress_deadline_seconds=7200), "Deployment"
    )
    assert (slow.min_ready_seconds, slow.progress_deadline_seconds) == (3600, 7200)
    assert apply_edit(slow, edit(min_ready_seconds=0), "Deployment").min_ready_seconds is None
    sts = apply_edit(
        rollout("StatefulSet"), edit("StatefulSet", min_ready_seconds=10), "StatefulSet"
    )
    assert sts.min_ready_seconds == 10


def test_termination_grace_period_and_resource_claims() -> None:
    after = apply_edit(
        workload(),
        edit(
            termination_grace_period_seconds=120,
            resource_claims={"gpu": "template:one-gpu", "fpga": "claim:shared"},
            container="app",
            claims=["gpu/big", "fpga", "gpu/big"],
        ),
        "Deployment",
    )
    assert after.termination_grace_period_seconds == 120
    assert after.resource_claims == {"fpga": "claim:shared", "gpu": "template:one-gpu"}
    assert after.containers["app"].claims == ["fpga", "gpu/big"]
    assert after.containers["app"].cpu_request == 100
    fewer = apply_edit(
        after,
        edit(resource_claims={"fpga": "unset"}, container="app", claims=["gpu/big"]),
        "Deployment",
    )
    assert fewer.resource_claims == {"gpu": "template:one-gpu"}
    assert (
        apply_edit(fewer, edit(container="app", claims=[]), "Deployment").containers["app"].claims
        == []
    )
    with pytest.raises(ValidationError) as bad:
        edit(resource_claims={"gpu": "device:x"})
    assert "resource_claims.gpu" in describe_validation_error(bad.value)


def test_container_and_pod_level_are_exclusive() -> None:
    with pytest.raises(ServiceError, match="either container or pod_level"):
        apply_edit(workload(), edit(container="app", pod_level=True, cpu_request="1"), "Deployment")
    with pytest.raises(ServiceError, match="pod_level needs a resource"):
        apply_edit(workload(), edit(pod_level=True), "Deployment")


@pytest.mark.parametrize(
    "fields",
    [
        {"runtime_class": "kata"},
        {"strategy": "Recreate"},
        {"min_ready_seconds": 5},
        {"pod_level": True, "cpu_request": "1"},
        {"container": "app", "other_limits": {"nvidia.com/gpu": "1"}},
    ],
)
def test_an_hpa_refuses_workload_fields(fields: dict[str, Any]) -> None:
    with pytest.raises(ServiceError, match="an HPA has no containers"):
        apply_edit(hpa(), edit("HorizontalPodAutoscaler", **fields), "HorizontalPodAutoscaler")


# --- the Edit model: create and delete ----------------------------------------------------------


def hpa_edit(**fields: Any) -> Edit:
    return Edit(kind="HorizontalPodAutoscaler", namespace="shop", name="web", **fields)


def test_a_create_edit_becomes_the_spec_the_human_approves() -> None:
    create = hpa_edit(
        action="create",
        scale_target={"kind": "Deployment", "name": "web"},
        min_replicas=2,
        max_replicas=5,
        target_cpu_utilization=70,
    )
    spec = hpa_create_spec(create)
    assert spec == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 2,
        "maxReplicas": 5,
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
    defaults = hpa_create_spec(
        hpa_edit(
            action="create", scale_target={"kind": "StatefulSet", "name": "db"}, max_replicas=3
        )
    )
    assert defaults["minReplicas"] == 1
    assert defaults["metrics"][0]["resource"]["target"]["averageUtilization"] == 80


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"action": "create", "max_replicas": 3}, "needs scale_target and max_replicas"),
        (
            {"action": "create", "scale_target": {"kind": "Deployment", "name": "w"}},
            "needs scale_target and max_replicas",
        ),
        (
            {
                "action": "create",
                "scale_target": {"kind": "Deployment", "name": "w"},
                "max_replicas": 3,
                "replicas": 2,
            },
            "a new HPA has no replicas",
        ),
        ({"action": "delete", "max_replicas": 3}, "removing an HPA takes no other fields"),
        ({"scale_target": {"kind": "Deployment", "name": "w"}}, "are for action create"),
        (
            {
                "action": "create",
                "scale_target": {"kind": "DaemonSet", "name": "w"},
                "max_replicas": 3,
            },
            "must be 'Deployment' or 'StatefulSet'",
        ),
    ],
)
def test_create_and_delete_edits_that_do_not_fit_are_refused_clearly(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        hpa_edit(**fields)
    text = describe_validation_error(refused.value)
    assert message in text
    assert "input_value" not in text and "pydantic" not in text and "Value error" not in text


def test_only_hpas_are_created_or_removed() -> None:
    with pytest.raises(ValidationError) as refused:
        edit(action="delete")
    assert describe_validation_error(refused.value) == (
        "sizeguard creates and removes HorizontalPodAutoscalers only, not a Deployment"
    )


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"max_surge": "lots"}, "max_surge"),
        ({"max_surge": -1}, "max_surge"),
        ({"other_requests": {"bad name!": "1"}}, "other_requests.bad name!"),
        ({"restart_policy": "Never"}, "restart_policy"),
        ({"min_ready_seconds": -5}, "min_ready_seconds"),
        ({"colour": "blue"}, "colour: is not a field this tool takes"),
    ],
)
def test_shape_errors_name_the_field(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as refused:
        edit(**fields)
    assert where in describe_validation_error(refused.value)


def test_an_update_edit_is_not_a_create() -> None:
    with pytest.raises(ServiceError, match="takes only that one edit"):
        apply_edit(hpa(), hpa_edit(action="delete"), "HorizontalPodAutoscaler")


# --- removing an HPA: not before it is 2 minutes old ---------------------------------------------


def live_hpa(created: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "shop", "uid": "u", "creationTimestamp": created},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "maxReplicas": 4,
        },
    }


def test_a_young_hpa_is_refused_saying_from_when() -> None:
    created = 1_795_300_000.0  # 2026-11-21T22:26:40Z
    obj = live_hpa("2026-11-21T22:26:40Z")
    with pytest.raises(ServiceError) as refused:
        refuse_young(obj, now=created + 119)
    assert str(refused.value) == (
        "HorizontalPodAutoscaler/shop/web was created at 2026-11-21T22:26:40Z; an HPA younger "
        "than 2 minutes cannot be removed (so that no approval to create it can be used again), "
        "so this can be done from 2026-11-21T22:28:40Z"
    )
    refuse_young(obj, now=created + 120)


@pytest.mark.parametrize("created", ["", "yesterday", "2026-11-21 22:26:40"])
def test_an_unreadable_age_is_refused(created: str) -> None:
    with pytest.raises(ServiceError, match="cannot tell its age"):
        refuse_young(live_hpa(created), now=2e9)


# --- diffs, cost and drift of creates and deletes -----------------------------------------------

NEW = Target(
    api_version="autoscaling/v2",
    kind="HorizontalPodAutoscaler",
    namespace="shop",
    name="web",
    uid=None,
)


def test_creates_and_deletes_read_well_and_cost_nothing_by_themselves() -> None:
    spec = hpa_create_spec(
        hpa_edit(
            action="create",
            max_replicas=5,
            min_replicas=2,
            scale_target={"kind": "Deployment", "name": "web"},
        )
    )
    create = ResourceChange(
        target=NEW,
        before=None,
        after=guarded_state(hpa_object(NEW, spec)),
        reason="",
        source="edit",
        create_spec=spec,
    )
    assert diff_lines(create) == [
        "created: HPA for apps/v1/Deployment/web, minReplicas 2, maxReplicas 5",
        "scales on: cpu at 80% of requests",
        "a new HPA can be removed only 2 minutes after it is created",
    ]
    obj = live_hpa("2026-11-21T22:26:40Z")
    delete = ResourceChange(
        target=Target.model_validate(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "namespace": "shop",
                "name": "web",
                "uid": "u",
            }
        ),
        before=guarded_state(obj),
        after=None,
        reason="",
        source="edit",
    )
    assert diff_lines(delete) == [
        "deleted (was: HPA for apps/v1/Deployment/web, minReplicas 1, maxReplicas 4)",
        "the workload keeps the replicas it has now; nothing autoscales it any more",
    ]
    assert pod_cost(None, PriceModel()) == 0.0
    assert drift_problem(create, None) is None
    assert drift_problem(create, obj) == "HorizontalPodAutoscaler/shop/web exists already"
    assert drift_problem(delete, None) == "HorizontalPodAutoscaler/shop/web no longer exists"
    assert drift_problem(delete, obj) is None


def test_a_sidecar_and_pod_level_requests_count_in_the_cost() -> None:
    prices = PriceModel()
    plain = workload()
    sidecar = apply_edit(plain, edit(container="setup", restart_policy="Always"), "Deployment")
    assert pod_cost(sidecar, prices) > pod_cost(plain, prices)
    pod_level = apply_edit(plain, edit(pod_level=True, cpu_request="4"), "Deployment")
    assert pod_cost(pod_level, prices) == pytest.approx(prices.monthly(4, 2 * 64 * MIB))


# --- typed confirmations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "shop-prod data",
        "data shop-prod",
        "data,shop-prod",
        " shop-prod ,  data ",
        "data\tshop-prod\n",
    ],
)
def test_check_typed_accepts_the_exact_namespaces_in_any_order(typed: str) -> None:
    check_typed(["data", "shop-prod"], typed)


@pytest.mark.parametrize(
    "typed",
    [
        None,
        "",
        "shop-prod",
        "data",
        "shop-prod data extra",
        "Shop-Prod data",
        "shop-prod data data",
        "shop",
    ],
)
def test_check_typed_refuses_anything_else(typed: str | None) -> None:
    with pytest.raises(ServiceError, match=r"namespace typed exactly \(data shop-prod\)"):
        check_typed(["data", "shop-prod"], typed)


def test_nothing_to_type_accepts_anything() -> None:
    check_typed([], None)
    check_typed([], "whatever")


def finding(code: str, target: str) -> Finding:
    return Finding(code=code, target=target, message=f"{code} on {target}")


def decision(warnings: list[Finding], requires: list[str]) -> ChangesetDecision:
    return ChangesetDecision.model_validate(
        {
            "allowed": True,
            "risk": "high" if requires else "low",
            "violations": [],
            "warnings": [w.model_dump() for w in warnings],
            "requires": requires,
        }
    )


def test_typed_namespaces_come_from_production_and_critical_warnings() -> None:
    result = typed_namespaces(
        decision(
            [
                finding("production_namespace", "Deployment/shop-prod/web"),
                finding("critical_workload", "StatefulSet/data/postgres"),
                finding("production_namespace", "Deployment/shop-prod/worker"),
                finding("large_change", "Deployment/staging/api"),
                finding("production_namespace", ""),
            ],
            ["typed_confirmation"],
        )
    )
    assert result == ["data", "shop-prod"]


def test_no_typed_namespaces_for_ordinary_targets() -> None:
    assert typed_namespaces(decision([finding("large_change", "Deployment/a/b")], [])) == []


def test_a_typed_confirmation_without_a_namespace_is_refused() -> None:
    with pytest.raises(ServiceError, match="names no namespace"):
        typed_namespaces(
            decision([finding("large_change", "Deployment/a/b")], ["typed_confirmation"])
        )


# --- krr recommendations ------------------------------------------------------------------------


def krr(
    cpu: object = "?", memory: object = "?", cpu_limit: object = "?", memory_limit: object = "?"
) -> dict[str, Any]:
    def entry(value: object) -> dict[str, Any]:
        return {"value": value, "severity": "WARNING"}

    return {
        "requests": {"cpu": entry(cpu), "memory": entry(memory)},
        "limits": {"cpu": entry(cpu_limit), "memory": entry(memory_limit)},
        "info": {},
    }


def test_cores_become_millicores_rounded_up_and_bytes_stay_bytes() -> None:
    result = _recommended(resources(), krr(cpu=0.0151, memory=1234.5, memory_limit=256 * MIB))
    assert result == resources(cpu=16, memory=1235, memory_limit=256 * MIB)


def test_whole_cores() -> None:
    assert _recommended(resources(), krr(cpu=2, cpu_limit=4.0)).cpu_request == 2000
    assert _recommended(resources(), krr(cpu=2, cpu_limit=4.0)).cpu_limit == 4000


def test_none_unsets_and_question_mark_keeps() -> None:
    result = _recommended(resources(), krr(cpu=0.25, cpu_limit=None))
    assert result == resources(cpu=250, cpu_limit=None)


def test_all_question_marks_change_nothing() -> None:
    assert _recommended(resources(), krr()) == resources()


def test_plain_values_are_accepted_too() -> None:
    plain = {"requests": {"cpu": 0.3, "memory": "?"}, "limits": {"cpu": "?", "memory": "?"}}
    assert _recommended(resources(), plain) == resources(cpu=300)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (math.nan, "is not a number"),
        (math.inf, "is not a number"),
        (-math.inf, "is not a number"),
        (True, "is not a number"),
        (False, "is not a number"),
        ("0.5", "is not a number"),
        ("100m", "is not a number"),
        ([1], "is not a number"),
        ({"v": 1}, "is not a number"),
        (-0.1, "is negative"),
        (-1, "is negative"),
    ],
)
def test_bad_recommendation_values_are_refused(bad: object, why: str) -> None:
    with pytest.raises(ServiceError, match=why):
        _recommended(resources(), krr(cpu=bad))
    with pytest.raises(ServiceError, match=why):
        _recommended(resources(), krr(memory_limit=bad))


def test_zero_is_a_value_not_unset() -> None:
    assert _recommended(resources(), krr(cpu=0)).cpu_request == 0


# --- the confirmation text ----------------------------------------------------------------------


def preview(typed: list[str], *, warnings: list[str] | None = None, targets: int = 2) -> Preview:
    diffs = [
        TargetDiff(
            target="Deployment/shop-prod/web",
            lines=["container app: CPU request: 100m → 250m (+150%)", "replicas: 2 → 3 (+50%)"],
            monthly_cost_before=10.0,
            monthly_cost_after=37.5,
        ),
        TargetDiff(
            target="StatefulSet/data/postgres",
            lines=["container db: memory limit: 1Gi → unset"],
            monthly_cost_before=1000.0,
            monthly_cost_after=1000.0,
        ),
    ][:targets]
    return Preview(
        change_set_id=CS,
        targets=targets,
        diff=diffs,
        policy=PolicyView(
            allowed=True,
            risk="high",
            violations=[],
            warnings=[finding("production_namespace", "Deployment/shop-prod/web")],
            requires=["typed_confirmation"] if typed else [],
        ),
        dry_run=[DryRun(target=d.target, admitted=True, warnings=warnings or []) for d in diffs],
        cost=CostDelta(monthly_before=1010.0, monthly_after=1037.5, monthly_delta=27.5),
        confirmation="",
        typed_confirmation=typed,
        next_step="",
    )


def test_the_confirmation_names_the_change_set_every_line_the_cost_and_what_to_type() -> None:
    text = confirmation_text(preview(["data", "shop-prod"], warnings=["dry run ok"]), "apply")
    lines = text.splitlines()
    assert lines[0] == f"sizeguard: apply change set {CS} (2 objects, risk high)"
    for line in (
        "  Deployment/shop-prod/web",
        "    container app: CPU request: 100m → 250m (+150%)",
        "    replicas: 2 → 3 (+50%)",
        "  StatefulSet/data/postgres",
        "    container db: memory limit: 1Gi → unset",
        "  cost: $1,010.00/month → $1,037.50/month (+$27.50)",
        "    - production_namespace on Deployment/shop-prod/web",
        "    - dry run ok",
        "  production/critical targets: type data shop-prod to approve",
    ):
        assert line in lines, line
    assert lines[-1] == "  The approval is good for one use within 5 minutes."


def test_a_rollback_saving_money_without_typed_namespaces() -> None:
    saving = preview([], targets=1).model_copy(
        update={"cost": CostDelta(monthly_before=37.5, monthly_after=10.0, monthly_delta=-27.5)}
    )
    text = confirmation_text(saving, "rollback")
    assert text.startswith(f"sizeguard: roll back change set {CS} (1 object, risk high)")
    assert "(-$27.50)" in text
    assert "type " not in text
    assert "admission (dry run)" not in text


# --- change_set_op ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "op"),
    [
        ("rollback:cs-0123456789abcdef0123", "rollback"),
        ("rollback:", "rollback"),
        ("recommendation", "apply"),
        ("edits", "apply"),
        ("", "apply"),
        ("not-a-rollback:", "apply"),
        ("Rollback:cs-0", "apply"),
    ],
)
def test_change_set_op(source: str, op: str) -> None:
    assert change_set_op(source) == op


# --- PendingConfirmations -----------------------------------------------------------------------


def test_a_state_is_good_once() -> None:
    pending = PendingConfirmations()
    state = pending.issue(CS, "apply")
    assert json.loads(state)["change_set_id"] == CS
    assert pending.take(state, CS, "apply") is None
    second = pending.take(state, CS, "apply")
    assert second is not None and "already used" in second


def test_states_are_independent() -> None:
    pending = PendingConfirmations()
    first, second = pending.issue(CS, "apply"), pending.issue(CS, "apply")
    assert first != second
    assert pending.take(second, CS, "apply") is None
    assert pending.take(first, CS, "apply") is None


@pytest.mark.parametrize("state", [None, ""])
def test_no_state_is_refused(state: str | None) -> None:
    pending = PendingConfirmations()
    pending.issue(CS, "apply")
    problem = pending.take(state, CS, "apply")
    assert problem is not None and "without the request state" in problem


@pytest.mark.parametrize(
    "state", ["garbage", "[]", "null", "42", '{"change_set_id": "x"}', '{"nonce": null', "{}"]
)
def test_garbage_is_refused(state: str) -> None:
    pending = PendingConfirmations()
    pending.issue(CS, "apply")
    problem = pending.take(state, CS, "apply")
    assert problem is not None and "not one this server issued" in problem


def test_a_forged_nonce_is_refused() -> None:
    pending = PendingConfirmations()
    real = json.loads(pending.issue(CS, "apply"))
    last = real["nonce"][-1]
    forged = json.dumps({**real, "nonce": real["nonce"][:-1] + ("y" if last == "x" else "x")})
    problem = pending.take(forged, CS, "apply")
    assert problem is not None and "unknown" in problem
    assert pending.take(json.dumps(real), CS, "apply") is None


def test_another_servers_state_is_refused() -> None:
    state = PendingConfirmations().issue(CS, "apply")
    problem = PendingConfirmations().take(state, CS, "apply")
    assert problem is not None and "unknown" in problem


@pytest.mark.parametrize(("cs", "op"), [("cs-ffffffffffffffffffff", "apply"), (CS, "rollback")])
def test_a_state_for_another_change_set_or_op_is_refused_and_used_up(cs: str, op: str) -> None:
    pending = PendingConfirmations()
    state = pending.issue(CS, "apply")
    problem = pending.take(state, cs, op)
    assert problem is not None
    assert f"issued for apply of {CS}, not {op} of {cs}" in problem
    # A misused state cannot be retried for the right change set either.
    assert pending.take(state, CS, "apply") is not None


def test_the_claimed_change_set_in_the_state_does_not_matter() -> None:
    pending = PendingConfirmations()
    state = json.loads(pending.issue(CS, "apply"))
    lied = json.dumps({**state, "change_set_id": "cs-ffffffffffffffffffff", "op": "rollback"})
    problem = pending.take(lied, "cs-ffffffffffffffffffff", "rollback")
    assert problem is not None and f"issued for apply of {CS}" in problem


def test_a_state_expires() -> None:
    pending = PendingConfirmations(ttl=0.01)
    state = pending.issue(CS, "apply")
    time.sleep(0.05)
    problem = pending.take(state, CS, "apply")
    assert problem is not None and "expired" in problem


def test_expired_states_are_dropped_when_new_ones_are_issued() -> None:
    pending = PendingConfirmations(ttl=0.01)
    old = pending.issue(CS, "apply")
    time.sleep(0.05)
    pending.issue(CS, "apply")
    problem = pending.take(old, CS, "apply")
    assert problem is not None and "expired" in problem


def test_a_fresh_state_within_its_ttl_is_good() -> None:
    pending = PendingConfirmations(ttl=60)
    state = pending.issue(CS, "rollback")
    assert pending.take(state, CS, "rollback") is None


# --- client names in the audit log -------------------------------------------------------------


class _Params:
    def __init__(self, name: str) -> None:
        self.client_info = type("Info", (), {"name": name})()


class _Ctx:
    def __init__(self, name: str) -> None:
        self.session = type("Session", (), {"client_params": _Params(name)})()
        self.request_context = None


def test_a_client_name_is_printable_and_short() -> None:
    from sizeguard.server.confirm import client_name

    name = client_name(_Ctx("Claude\x1b[31m Code" + "x" * 100))  # type: ignore[arg-type]
    assert name == "mcp:" + ("Claude[31m Code" + "x" * 100)[:64]


def test_a_client_named_like_a_token_is_not_recorded() -> None:
    from sizeguard.server.confirm import client_name

    token = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJlc2ln"
    assert client_name(_Ctx(token)) == "mcp:redacted"  # type: ignore[arg-type]
