"""sizeguard's policies evaluated by a real OPA through sizeguard.policy.

``opa_url`` (tests/integration/conftest.py) is the sandbox's OPA, serving the repository's
``policies/`` including data.json; ``SIZEGUARD_TEST_OPA_URL`` points it at an OPA of your
own. The last tests start a second, private OPA on a free loopback port and stop it, to
show that the client denies when OPA goes away.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from sizeguard.changes import (
    ChangeSet,
    GuardedState,
    ResourceChange,
    Target,
    guarded_state,
    hpa_object,
    target_of,
)
from sizeguard.policy import AdmissionDecision, AsyncPolicyClient, ChangesetDecision, PolicyClient
from sizeguard.sandbox import processes
from sizeguard.sandbox.opa import running_opa
from sizeguard.sandbox.processes import Component

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
GIB = 1024 * MIB

CAPACITY = {
    "nodes": 3,
    "allocatable": {"cpu": 12_000, "memory": 48 * GIB},
    "requested": {"cpu": 4_000, "memory": 16 * GIB},
}

UNAVAILABLE = "sizeguard: the policy engine (OPA) is unavailable: "


def state(
    replicas: int | None, cpu_request: int, memory_request: int = 256 * MIB
) -> dict[str, Any]:
    """A workload's footprint as ``GuardedState.model_dump(mode="json")`` gives it."""
    return GuardedState.model_validate(
        {
            "replicas": replicas,
            "containers": {
                "app": {
                    "cpu_request": cpu_request,
                    "cpu_limit": None,
                    "memory_request": memory_request,
                    "memory_limit": 2 * GIB,
                }
            },
            "init_containers": {},
            "min_replicas": None,
            "max_replicas": None,
        }
    ).model_dump(mode="json")


def hpa_state(min_replicas: int, max_replicas: int) -> dict[str, Any]:
    return GuardedState(
        replicas=None,
        containers={},
        init_containers={},
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        scale_target="apps/v1/Deployment/web",
    ).model_dump(mode="json")


def change(
    namespace: str,
    name: str,
    before: dict[str, Any],
    after: dict[str, Any],
    kind: str = "Deployment",
) -> dict[str, Any]:
    return {
        "target": {
            "apiVersion": "apps/v1",
            "kind": kind,
            "namespace": namespace,
            "name": name,
            "uid": f"uid-{namespace}-{name}",
        },
        "before": before,
        "after": after,
        "reason": "integration test",
        "source": "test",
    }


def changeset_input(
    *changes: dict[str, Any], capacity: dict[str, Any] = CAPACITY
) -> dict[str, Any]:
    return {
        "changes": list(changes),
        "context": {
            "now": "2026-11-21T12:00:00Z",
            "namespaces": {},
            "labels": {},
            "capacity": capacity,
        },
    }


def admission_input(
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    *,
    approval: dict[str, Any] | None = None,
    user: str = "alice@example.com",
    groups: tuple[str, ...] = ("system:authenticated",),
    operation: str = "UPDATE",
    kind: str = "Deployment",
    namespace: str = "shop-prod",
    name: str = "web",
    subresource: str = "",
    dry_run: bool = False,
    namespace_labels: dict[str, str] | None = None,
    recently_created: bool = False,
) -> dict[str, Any]:
    """The input the webhook sends (docs/policies.md), for one request."""
    return {
        "request": {
            "uid": "req-1",
            "operation": operation,
            "user": user,
            "groups": list(groups),
            "kind": kind,
            "namespace": namespace,
            "name": name,
            "subresource": subresource,
            "dry_run": dry_run,
        },
        "before": before,
        "after": after,
        "approval": approval or NO_APPROVAL,
        "context": {
            "labels": {},
            "namespace_labels": namespace_labels or {"kubernetes.io/metadata.name": namespace},
            "recently_created": recently_created,
        },
    }


NO_APPROVAL = {"present": False, "valid": False, "error": None, "claims": None}


def approval(op: str) -> dict[str, Any]:
    """What the webhook passes for an approval it verified (claims trimmed to what matters)."""
    return {"present": True, "valid": True, "error": None, "claims": {"cs": CS, "op": op}}


CS = "cs-0123456789abcdef0123"
NAMESPACE_CONTROLLER = "system:serviceaccount:kube-system:namespace-controller"

VALID = approval("apply")


@pytest.fixture(scope="module")
def opa(opa_url: str) -> Iterator[PolicyClient]:
    with PolicyClient(opa_url, timeout=5) as client:
        yield client


def codes(decision: ChangesetDecision) -> set[str]:
    return {v.code for v in decision.violations}


# --- the examples the project started from -----------------------------------------------


def test_production_increase_100m_to_250m_needs_an_approver(opa: PolicyClient) -> None:
    decision = opa.changeset_decision(
        changeset_input(change("shop-prod", "web", state(3, 100), state(3, 250)))
    )
    assert decision.engine_error is None
    assert decision.allowed is True
    assert decision.requires == ["authenticated_approver", "typed_confirmation"]
    assert decision.risk == "high"  # the same change outside production is "medium"
    outside = opa.changeset_decision(
        changeset_input(change("shop", "web", state(3, 100), state(3, 250)))
    )
    assert (outside.allowed, outside.risk, outside.requires) == (True, "medium", [])


def test_600_percent_increase_denied(opa: PolicyClient) -> None:
    decision = opa.changeset_decision(
        changeset_input(change("shop-prod", "web", state(3, 100), state(3, 700)))
    )
    assert decision.allowed is False
    assert [v.model_dump() for v in decision.violations] == [
        {
            "code": "increase_too_large",
            "target": "Deployment/shop-prod/web",
            "message": (
                "CPU request of container app in shop-prod/web rises 600% (100m → 700m); "
                "the limit is 500%"
            ),
        }
    ]


def test_95_percent_decrease_denied(opa: PolicyClient) -> None:
    decision = opa.changeset_decision(
        changeset_input(change("shop", "api", state(3, 1000, 2 * GIB), state(3, 1000, 100 * MIB)))
    )
    assert decision.allowed is False
    assert codes(decision) == {"decrease_too_large"}
    assert "memory request of container app in shop/api falls 95.1% (2Gi → 100Mi)" in (
        decision.violations[0].message
    )


def test_database_in_production_is_critical(opa: PolicyClient) -> None:
    decision = opa.changeset_decision(
        changeset_input(
            change("shop-prod", "orders-postgres", state(1, 500), state(1, 600), kind="StatefulSet")
        )
    )
    assert decision.allowed is True
    assert decision.risk == "critical"
    assert decision.requires == ["authenticated_approver", "two_approvers", "typed_confirmation"]
    assert {w.code for w in decision.warnings} == {"production_namespace", "critical_workload"}


def test_change_beyond_cluster_capacity_denied(opa: PolicyClient) -> None:
    # 3 replicas x +2500m = +7500m; 4000m + 7500m = 11500m > 12000m less 10% headroom
    decision = opa.changeset_decision(
        changeset_input(change("shop", "web", state(3, 500), state(3, 3000)))
    )
    assert decision.allowed is False
    assert codes(decision) == {"exceeds_capacity"}
    assert decision.violations[0].target == ""
    assert "with 10% headroom at most 10800m may be requested" in decision.violations[0].message


def test_daemonset_capacity_counts_nodes(opa: PolicyClient) -> None:
    big = {**CAPACITY, "nodes": 40}
    decision = opa.changeset_decision(
        changeset_input(
            change("infra", "log-agent", state(None, 100), state(None, 300), kind="DaemonSet"),
            capacity=big,
        )
    )
    # 40 nodes x +200m = +8000m on top of 4000m > 10800m
    assert codes(decision) == {"exceeds_capacity"}


# --- more of the rules -------------------------------------------------------------------


def test_several_rules_in_one_change_set(opa: PolicyClient) -> None:
    decision = opa.changeset_decision(
        changeset_input(
            change("shop-prod", "web", state(2, 100), state(0, 100)),
            change("kube-system", "coredns", state(2, 100), state(2, 110)),
            change("shop", "api", state(2, 100), state(2, 0)),
        )
    )
    assert decision.allowed is False
    assert codes(decision) == {
        "replicas_zero_in_production",
        "decrease_too_large",
        "namespace_frozen",
        "request_not_positive",
    }


def test_empty_change_set_denied(opa: PolicyClient) -> None:
    decision = opa.changeset_decision(changeset_input())
    assert (decision.allowed, codes(decision)) == (False, {"empty_change_set"})


def test_too_many_targets_denied(opa: PolicyClient) -> None:
    changes = [change(f"team-{i:03}", "web", state(1, 100), state(1, 110)) for i in range(51)]
    decision = opa.changeset_decision(changeset_input(*changes))
    assert codes(decision) == {"too_many_targets"}


def test_input_built_by_the_contract_module(opa: PolicyClient) -> None:
    def deployment(cpu: str) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"namespace": "shop-prod", "name": "web", "uid": "u-1"},
            "spec": {
                "replicas": 3,
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "web", "resources": {"requests": {"cpu": cpu}}},
                        ]
                    }
                },
            },
        }

    old, new = deployment("100m"), deployment("250m")
    change_set = ChangeSet(
        changes=(
            ResourceChange(
                target=target_of(old),
                before=guarded_state(old),
                after=guarded_state(new),
                reason="right-size",
                source="test",
            ),
        )
    )
    policy_input = {**change_set.model_dump(mode="json"), "context": {"capacity": CAPACITY}}
    decision = opa.changeset_decision(policy_input)
    assert (decision.allowed, decision.risk, decision.requires) == (
        True,
        "high",
        ["authenticated_approver", "typed_confirmation"],
    )


# --- the footprint, from the contract module ------------------------------------------------


def workload(**spec: Any) -> dict[str, Any]:
    """A Deployment shop/web (3 replicas) with ``spec`` merged into its spec."""
    template_spec = {
        "containers": [
            {"name": "web", "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}}
        ],
        **spec.pop("pod", {}),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"namespace": "shop", "name": "web", "uid": "u-1"},
        "spec": {"replicas": 3, "template": {"spec": template_spec}, **spec},
    }


def footprint_change(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    change_set = ChangeSet(
        changes=(
            ResourceChange(
                target=target_of(old),
                before=guarded_state(old),
                after=guarded_state(new),
                reason="footprint",
                source="test",
            ),
        )
    )
    return {**change_set.model_dump(mode="json"), "context": {"capacity": CAPACITY}}


def test_rollout_fields_are_warned_with_the_peak_pod_count(opa: PolicyClient) -> None:
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}
    surging = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%"}}
    decision = opa.changeset_decision(
        footprint_change(workload(strategy=rolling), workload(strategy=surging))
    )
    assert (decision.allowed, decision.risk) == (True, "medium")
    assert [w.model_dump() for w in decision.warnings] == [
        {
            "code": "rollout_changed",
            "target": "Deployment/shop/web",
            "message": (
                "rollout maxSurge of shop/web: 25% → 100%; a rollout may run up to 6 pods at "
                "once for 3 replicas, 2 times the replicas"
            ),
        }
    ]


def test_sidecar_and_runtime_class_are_warned(opa: PolicyClient) -> None:
    init = {"name": "log", "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}}
    old = workload(pod={"initContainers": [init]})
    new = workload(
        pod={"initContainers": [{**init, "restartPolicy": "Always"}], "runtimeClassName": "kata"}
    )
    decision = opa.changeset_decision(footprint_change(old, new))
    assert decision.allowed is True
    assert {w.code for w in decision.warnings} == {"sidecar_changed", "runtime_class_changed"}
    assert any(
        "(per pod after the change: CPU 150m, memory 320Mi)" in w.message for w in decision.warnings
    )


def test_other_resources_and_pod_level_resources_have_the_size_rules(opa: PolicyClient) -> None:
    def sized(storage: str, pod_cpu: str) -> dict[str, Any]:
        web = {
            "name": "web",
            "resources": {"requests": {"cpu": "100m", "ephemeral-storage": storage}},
        }
        return workload(pod={"containers": [web], "resources": {"requests": {"cpu": pod_cpu}}})

    decision = opa.changeset_decision(footprint_change(sized("1Gi", "1"), sized("10Gi", "50m")))
    assert decision.allowed is False
    assert sorted(v.message for v in decision.violations) == [
        "CPU request of the pod-level resources in shop/web falls 95% (1000m → 50m); "
        "the limit is 90%",
        "ephemeral-storage request of container web in shop/web rises 900% (1Gi → 10Gi); "
        "the limit is 500%",
    ]


def hpa_change(
    namespace: str, before: GuardedState | None, after: GuardedState | None, spec: Any = None
) -> dict[str, Any]:
    target = Target(
        api_version="autoscaling/v2",
        kind="HorizontalPodAutoscaler",
        namespace=namespace,
        name="web",
        uid=None if before is None else "u-hpa",
    )
    change = ResourceChange(
        target=target, before=before, after=after, reason="hpa", source="test", create_spec=spec
    )
    return {**ChangeSet(changes=(change,)).model_dump(mode="json"), "context": {}}


HPA_SPEC = {
    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
    "minReplicas": 2,
    "maxReplicas": 10,
}


def hpa_guarded(namespace: str, spec: dict[str, Any]) -> GuardedState:
    target = Target(
        api_version="autoscaling/v2",
        kind="HorizontalPodAutoscaler",
        namespace=namespace,
        name="web",
        uid=None,
    )
    return guarded_state(hpa_object(target, spec))


def test_hpa_create_from_the_contract_module(opa: PolicyClient) -> None:
    decision = opa.changeset_decision(
        hpa_change("shop", None, hpa_guarded("shop", HPA_SPEC), HPA_SPEC)
    )
    assert (decision.allowed, decision.risk) == (True, "medium")
    assert [w.code for w in decision.warnings] == ["hpa_created"]
    too_big = {**HPA_SPEC, "maxReplicas": 500}
    denied = opa.changeset_decision(hpa_change("shop", None, hpa_guarded("shop", too_big), too_big))
    assert [v.message for v in denied.violations] == [
        "HPA maxReplicas of shop/web would be 500; the allowed range is 0 to 200"
    ]


def test_hpa_delete_in_production_from_the_contract_module(opa: PolicyClient) -> None:
    decision = opa.changeset_decision(
        hpa_change("shop-prod", hpa_guarded("shop-prod", HPA_SPEC), None)
    )
    assert decision.allowed is True
    assert decision.requires == ["authenticated_approver", "typed_confirmation"]
    assert {w.code for w in decision.warnings} == {"hpa_deleted", "production_namespace"}


# --- admission ---------------------------------------------------------------------------


def test_admission_unchanged_state_admitted(opa: PolicyClient) -> None:
    decision = opa.admission_decision(admission_input(state(3, 100), state(3, 100)))
    assert decision == AdmissionDecision(allowed=True, reasons=[], warnings=[])


def test_admission_change_needs_an_approval(opa: PolicyClient) -> None:
    decision = opa.admission_decision(admission_input(state(3, 100), state(3, 250)))
    assert decision.allowed is False
    assert decision.reasons == [
        "sizeguard: CPU request change on shop-prod/web needs an approval; "
        "request one through the sizeguard MCP server"
    ]


def test_admission_valid_approval_admitted(opa: PolicyClient) -> None:
    decision = opa.admission_decision(admission_input(state(3, 100), state(3, 250), approval=VALID))
    assert decision.allowed is True


def test_admission_valid_approval_does_not_admit_a_policy_violation(opa: PolicyClient) -> None:
    decision = opa.admission_decision(admission_input(state(3, 100), state(3, 700), approval=VALID))
    assert decision.allowed is False
    assert all(reason.startswith("sizeguard: ") for reason in decision.reasons)
    assert "[increase_too_large]" in decision.reasons[0]


def test_admission_dry_run_without_approval_admitted_with_warning(opa: PolicyClient) -> None:
    decision = opa.admission_decision(admission_input(state(3, 100), state(3, 250), dry_run=True))
    assert decision.allowed is True
    assert any("dry run admitted" in warning for warning in decision.warnings)
    violating = opa.admission_decision(admission_input(state(3, 100), state(3, 700), dry_run=True))
    assert violating.allowed is False


def test_admission_scale_denied_except_for_the_hpa_controller(opa: PolicyClient) -> None:
    denied = opa.admission_decision(
        admission_input(state(3, 100), state(5, 100), subresource="scale")
    )
    assert denied.allowed is False
    assert "scale requests on shop-prod/web are denied" in denied.reasons[0]
    hpa = opa.admission_decision(
        admission_input(
            state(3, 100),
            state(30, 100),
            subresource="scale",
            user="system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        )
    )
    assert hpa.allowed is True


def test_admission_break_glass_admitted_and_named(opa: PolicyClient) -> None:
    decision = opa.admission_decision(
        admission_input(
            state(3, 100),
            state(3, 900),
            user="oncall",
            groups=("system:authenticated", "sizeguard:break-glass"),
        )
    )
    assert decision.allowed is True
    assert "break-glass: oncall (group sizeguard:break-glass)" in decision.reasons[0]
    assert decision.warnings == decision.reasons


def test_admission_approval_for_another_operation_denied(opa: PolicyClient) -> None:
    decision = opa.admission_decision(
        admission_input(state(3, 100), state(3, 250), approval=approval("create"))
    )
    assert decision.allowed is False
    assert decision.reasons[0] == (
        "sizeguard: the approval on shop-prod/web is not valid (wrong_operation); "
        "request a new one through the sizeguard MCP server"
    )


def test_admission_namespace_production_by_label_only(opa: PolicyClient) -> None:
    def to_one(labels: dict[str, str]) -> AdmissionDecision:
        return opa.admission_decision(
            admission_input(
                state(2, 100),
                state(0, 100),
                approval=VALID,
                namespace="payments",
                namespace_labels=labels,
            )
        )

    def codes_of(decision: AdmissionDecision) -> set[str]:
        return {reason.split("[")[1].split("]")[0] for reason in decision.reasons}

    labelled = to_one({"environment": "production"})
    assert codes_of(labelled) == {"replicas_zero_in_production", "decrease_too_large"}
    unlabelled = to_one({"environment": "staging"})
    assert codes_of(unlabelled) == {"decrease_too_large"}


def test_admission_workload_create_and_delete_left_to_exempt_principals(
    opa: PolicyClient,
) -> None:
    created = opa.admission_decision(admission_input(None, state(3, 100), operation="CREATE"))
    assert created.allowed is False
    assert created.reasons[0].startswith(
        "sizeguard: creating Deployment shop-prod/web is denied for alice@example.com: "
        "in namespace shop-prod (config.admission.lifecycle.workloads: production)"
    )
    assert (
        "a deploying pipeline needs its user in config.admission.lifecycle.exempt_users"
        in (created.reasons[0])
    )
    deleted = opa.admission_decision(
        admission_input(state(3, 100), None, operation="DELETE", user=NAMESPACE_CONTROLLER)
    )
    assert deleted.allowed is True
    outside = opa.admission_decision(
        admission_input(None, state(3, 100), operation="CREATE", namespace="shop")
    )
    assert outside.allowed is True


def test_admission_hpa_create_needs_a_create_approval_and_the_bounds(opa: PolicyClient) -> None:
    def create(after: dict[str, Any], with_approval: dict[str, Any] | None) -> AdmissionDecision:
        return opa.admission_decision(
            admission_input(
                None,
                after,
                approval=with_approval,
                operation="CREATE",
                kind="HorizontalPodAutoscaler",
            )
        )

    unapproved = create(hpa_state(2, 10), None)
    assert unapproved.reasons == [
        "sizeguard: creation of HorizontalPodAutoscaler shop-prod/web needs an approval; "
        "request one through the sizeguard MCP server"
    ]
    approved = create(hpa_state(2, 10), approval("create"))
    assert approved.allowed is True
    assert approved.warnings == [
        "sizeguard: creating the HPA shop-prod/web lets the HPA controller move "
        "apps/v1/Deployment/web to between 2 and 10 replicas within seconds"
    ]
    too_big = create(hpa_state(2, 500), approval("create"))
    assert too_big.allowed is False
    assert "[replicas_out_of_bounds]" in too_big.reasons[0]
    to_zero = create(hpa_state(0, 5), approval("create"))
    assert "[replicas_zero_in_production]" in to_zero.reasons[0]


def test_admission_hpa_delete_of_a_young_hpa_denied(opa: PolicyClient) -> None:
    def delete(recently_created: bool) -> AdmissionDecision:
        return opa.admission_decision(
            admission_input(
                hpa_state(2, 10),
                None,
                approval=approval("delete"),
                operation="DELETE",
                kind="HorizontalPodAutoscaler",
                recently_created=recently_created,
            )
        )

    young = delete(True)
    assert young.allowed is False
    assert "it was created less than 2 minutes ago" in young.reasons[0]
    old = delete(False)
    assert old.allowed is True
    assert any("leaves apps/v1/Deployment/web at the replicas" in w for w in old.warnings)


def test_admission_limit_range_in_production_denied(opa: PolicyClient) -> None:
    limits = {"limits": [{"type": "Container", "default": {"cpu": "2"}}]}
    decision = opa.admission_decision(
        admission_input(None, limits, operation="CREATE", kind="LimitRange", name="defaults")
    )
    assert decision.allowed is False
    assert decision.reasons[0].startswith(
        "sizeguard: creating LimitRange shop-prod/defaults is denied for alice@example.com"
    )


def test_admission_pods_resize_denied(opa: PolicyClient) -> None:
    decision = opa.admission_decision(
        admission_input(
            state(None, 100), state(None, 400), kind="Pod", name="web-7d9f", subresource="resize"
        )
    )
    assert decision == AdmissionDecision(
        allowed=False,
        reasons=[
            "sizeguard: in-place resize (pods/resize) of pod shop-prod/web-7d9f by "
            "alice@example.com is denied; change the resources of the workload that owns the "
            "pod through the sizeguard MCP server, which applies an approved change"
        ],
        warnings=[],
    )


def test_admission_malformed_and_unknown_inputs_denied(opa: PolicyClient) -> None:
    malformed = opa.admission_decision(admission_input(state(3, 100), None))
    assert malformed.allowed is False
    assert malformed.reasons[0].startswith("sizeguard: the admission input is malformed")
    unknown = opa.admission_decision(admission_input(state(3, 100), state(3, 250), kind="Job"))
    assert unknown.allowed is False
    assert "sizeguard decides only workloads" in unknown.reasons[0]


def test_async_client_agrees_with_sync(opa: PolicyClient, opa_url: str) -> None:
    cs = changeset_input(change("shop-prod", "web", state(3, 100), state(3, 250)))
    adm = admission_input(state(3, 100), state(3, 250), dry_run=True)

    async def main() -> tuple[ChangesetDecision, AdmissionDecision]:
        async with AsyncPolicyClient(opa_url, timeout=5) as client:
            return await client.changeset_decision(cs), await client.admission_decision(adm)

    changeset, admission = anyio.run(main)
    assert changeset == opa.changeset_decision(cs)
    assert admission == opa.admission_decision(adm)


# --- OPA going away ----------------------------------------------------------------------


@pytest.fixture
def private_opa(tmp_path: Path) -> Iterator[Component]:
    """A second OPA serving policies/, on a free loopback port, stopped by the test."""
    with running_opa(REPO / "policies", tmp_path) as opa:
        yield opa


def test_client_denies_once_opa_is_stopped(private_opa: Component) -> None:
    url = private_opa.url
    cs = changeset_input(change("shop-prod", "web", state(3, 100), state(3, 250)))
    adm = admission_input(state(3, 100), state(3, 250), approval=VALID)
    with PolicyClient(url, timeout=1) as client:
        assert client.changeset_decision(cs).allowed is True
        assert client.admission_decision(adm).allowed is True

        processes.stop(private_opa)

        changeset = client.changeset_decision(cs)
        admission = client.admission_decision(adm)

    assert changeset.allowed is False
    assert changeset.violations[0].code == "policy_unavailable"
    assert changeset.violations[0].message.startswith(UNAVAILABLE)
    assert admission.allowed is False
    assert admission.reasons[0].startswith(UNAVAILABLE)
    assert admission.reasons[0].endswith("; the change is denied")

    async def main() -> AdmissionDecision:
        async with AsyncPolicyClient(url, timeout=1) as client:
            return await client.admission_decision(adm)

    assert anyio.run(main).allowed is False
