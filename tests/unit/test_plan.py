"""One plan per workload: replicas and the per-pod CPU request from the same demand."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sizeguard.changes import ContainerResources, GuardedState
from sizeguard.cli.scan import plan_target
from sizeguard.policy import PolicyClient
from sizeguard.prometheus import PrometheusClient
from sizeguard.recommend import (
    Demand,
    Floor,
    PlanSettings,
    ScanResult,
    plan_workload,
    scan,
    settings_for,
)
from sizeguard.recommend.floors import (
    FloorsUnavailableError,
    floors_input,
    opa_floors,
    parse_floors,
)
from sizeguard.server.service import _hpa_bounds, _planned
from sizeguard.workloads import ContainerAllocation, HpaInfo, Workload

from .test_prometheus_fake_server import fake_prometheus
from .test_recommend_bad_data import _workloads as bad_data_workloads
from .test_recommend_bad_data import responder

ONE = Floor(1, "at least 1 replica(s)")
TWO = Floor(
    2, "shop-prod/x is in production namespace shop-prod: at least 2 replicas", "production"
)


def workload(
    replicas: int = 1,
    requests: tuple[float | None, ...] = (0.05,),
    hpa: HpaInfo | None = None,
    kind: str = "Deployment",
) -> Workload:
    containers = [ContainerAllocation(f"c{i}", r) for i, r in enumerate(requests)]
    return Workload(kind, "ns", "app", containers, replicas=replicas, hpa=hpa)


def demand(*cpu: float, defined: bool = True, limits: tuple[float, ...] = ()) -> Demand:
    return Demand(
        cpu={f"c{i}": v for i, v in enumerate(cpu)},
        cpu_limits={f"c{i}": v for i, v in enumerate(limits)},
        krr_defined=defined,
    )


def hpa(
    min_replicas: int = 3, max_replicas: int = 10, current: int = 3, cpu: bool = True
) -> HpaInfo:
    return HpaInfo(
        name="app",
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        current_replicas=current,
        desired_replicas=current,
        target_cpu_utilization_percentage=70 if cpu else None,
        target_memory_utilization_percentage=None if cpu else 80,
        scales_on_cpu=cpu,
        scales_on_memory=not cpu,
    )


def test_an_under_provisioned_workload_gets_krrs_request_and_keeps_its_replicas() -> None:
    """The issue's data/redis: 50m -> 293m *and* 1 -> 9 replicas was the double count."""
    plan = plan_workload(workload(1, (0.05,)), demand(0.2925), ONE)
    assert plan is not None
    assert plan.recommended_replicas == 1 and plan.planned_replicas == 1
    assert plan.cpu_requests == {"c0": 0.293}  # krr's number, rounded as krr rounds
    assert plan.assumed_cpu_request == 0.293
    assert plan.target_utilization == 1.0 and plan.band == (0.9, 1.0)
    assert plan.within_band and 0.99 < plan.utilization <= 1.0
    assert "the request absorbs it" in plan.reason


def test_an_over_provisioned_workload_keeps_its_replicas_and_cuts_the_request() -> None:
    """The issue's shop-prod/checkout: 2 -> 74m *and* 2 -> 1 replicas was the double count."""
    plan = plan_workload(workload(2, (2.0,)), demand(0.0735), TWO)
    assert plan is not None
    assert plan.recommended_replicas == 2
    assert plan.cpu_requests == {"c0": 0.074}
    assert plan.current_cpu_request == 2.0 and plan.within_band


def test_the_floor_adds_replicas_and_the_request_shrinks_for_the_same_demand() -> None:
    plan = plan_workload(workload(1, (0.5,)), demand(0.3), TWO)
    assert plan is not None and plan.recommended_replicas == 2
    assert plan.cpu_requests == {"c0": 0.15}  # 300m of demand over two pods
    assert plan.floor is TWO and "availability floor" in plan.reason
    assert plan.to_json()["floor"] == {
        "min_replicas": 2,
        "class": "production",
        "max_pod_cpu": None,
        "reason": TWO.reason,
    }


def test_the_request_is_split_in_proportion_to_krrs_numbers() -> None:
    plan = plan_workload(workload(2, (0.5, 0.1)), demand(0.2, 0.05), Floor(4, "four"))
    assert plan is not None and plan.recommended_replicas == 4
    assert plan.cpu_requests == {"c0": 0.1, "c1": 0.025}
    assert plan.assumed_cpu_request == 0.125 and plan.within_band


def test_krrs_minimum_holds_the_request_above_the_demand_and_the_plan_says_so() -> None:
    plan = plan_workload(workload(3, (0.1,)), demand(0.003), ONE)
    assert plan is not None and plan.cpu_requests == {"c0": 0.01}
    assert plan.recommended_replicas == 3  # no replicas removed: that would cut both
    assert not plan.within_band and math.isclose(plan.utilization, 0.3)
    assert "10m minimum per container" in plan.reason
    assert plan.to_json()["within_band"] is False


def test_a_lower_target_leaves_headroom_in_the_request() -> None:
    plan = plan_workload(workload(2, (0.1,)), demand(0.2), ONE, PlanSettings(0.8))
    assert plan is not None and plan.cpu_requests == {"c0": 0.25}
    assert plan.band == pytest.approx((0.72, 0.8)) and plan.within_band


def test_the_cap_adds_replicas_without_raising_the_request() -> None:
    capped = Floor(1, "one", max_pod_cpu=1.0)
    # Today 500m, below the 1-core cap: 6 cores of demand go to pods of at most 500m.
    plan = plan_workload(workload(2, (0.5,)), demand(3.0), capped)
    assert plan is not None and plan.recommended_replicas == 12
    assert plan.assumed_cpu_request == 0.5 and plan.within_band
    assert "1000m cap" in plan.reason
    # Today 2 cores, above the cap: pods of at most the cap.
    plan = plan_workload(workload(2, (2.0,)), demand(3.0), capped)
    assert plan is not None and plan.recommended_replicas == 6
    assert plan.assumed_cpu_request == 1.0
    # Below the cap nothing changes.
    plan = plan_workload(workload(2, (0.5,)), demand(0.4), capped)
    assert plan is not None and plan.recommended_replicas == 2


def test_the_cap_with_rounding_still_never_raises_the_request() -> None:
    capped = Floor(1, "one", max_pod_cpu=0.1)
    plan = plan_workload(workload(3, (0.1, 0.1, 0.1)), demand(0.1001, 0.1001, 0.1001), capped)
    assert plan is not None and plan.assumed_cpu_request <= 0.3
    assert plan.recommended_replicas is not None and plan.recommended_replicas > 3


def test_the_cap_adds_no_replicas_when_todays_request_is_below_krrs_minimum() -> None:
    """Pods of at most today's 5m would need krr's 10m: the request rises, replicas do not."""
    plan = plan_workload(workload(2, (0.005,)), demand(0.5), Floor(1, "one", max_pod_cpu=0.2))
    assert plan is not None and plan.recommended_replicas == 2
    assert plan.cpu_requests == {"c0": 0.5} and "no replicas are added" in plan.reason


def test_a_cap_below_krrs_minimum_for_the_containers_says_so_and_stops_at_the_minimum() -> None:
    """Six containers at krr's 10m are 60m a pod: a 50m cap cannot be met. The plan adds pods
    until each is at 60m (never more than today's 600m) and says why, not that today's
    request is below the minimum."""
    cap = Floor(1, "r", max_pod_cpu=0.05)
    plan = plan_workload(workload(2, (0.1,) * 6), demand(*(0.2,) * 6), cap)
    assert plan is not None and plan.recommended_replicas == 40  # 2.4 cores at 60m a pod
    assert plan.assumed_cpu_request == pytest.approx(0.06)
    assert "50m cap" in plan.reason and "below krr's minimum of 6 container(s) x 10m" in plan.reason
    assert "today's request is below" not in plan.reason
    # A cap below a single container's minimum: pods at 10m.
    plan = plan_workload(workload(2, (0.5,)), demand(2.0), Floor(1, "r", max_pod_cpu=0.005))
    assert plan is not None and plan.cpu_requests == {"c0": 0.01}
    assert plan.recommended_replicas == 400 and "5m cap" in plan.reason
    # Both the cap and today's request below the minimum: the request rises, no pods added.
    plan = plan_workload(workload(2, (0.005,)), demand(0.5), Floor(1, "r", max_pod_cpu=0.005))
    assert plan is not None and plan.recommended_replicas == 2
    assert "the cap and today's request are below krr's minimum" in plan.reason


def test_odd_plan_settings_are_refused_and_a_zero_minimum_divides_by_nothing() -> None:
    for bad in ({"target_utilization": math.nan}, {"target_utilization": -0.5},
                {"target_utilization": 0.0}, {"target_utilization": 1.5},
                {"cpu_min_value": -1}, {"tolerance": 1.0}, {"hpa_headroom": -1.0}):  # fmt: skip
        with pytest.raises(ValueError, match=r"must be|cannot be"):
            PlanSettings(**bad)  # type: ignore[arg-type]
    # --cpu-min 0 with an idle container under an HPA on CPU: a plan at 1m, no crash.
    zero = PlanSettings(cpu_min_value=0)
    for today in (None, 0.1):
        plan = plan_workload(workload(1, (today,), hpa(1, 10, 1)), demand(0.0), ONE, zero)
        assert plan is not None and plan.cpu_requests == {"c0": 0.001}
    # An HPA "on CPU" with a 0% target (the API server refuses it) is planned as not on CPU.
    autoscaler = dataclasses.replace(hpa(1, 10, 1), target_cpu_utilization_percentage=0)
    plan = plan_workload(workload(1, (0.1,), autoscaler), demand(0.05), ONE)
    assert plan is not None and plan.target_utilization == 1.0


def test_the_cap_finds_the_fewest_pods_that_fit_however_many() -> None:
    """Close to krr's minimum the rounding needs many more pods than the plain division."""
    plan = plan_workload(workload(50, (0.0101,)), demand(8.0), Floor(1, "one", max_pod_cpu=1.0))
    assert plan is not None and plan.cpu_requests == {"c0": 0.01}
    assert plan.recommended_replicas == 40_000  # 400 cores at 10m a pod


def test_an_hpa_on_cpu_owns_replicas_and_krrs_question_mark_keeps_todays_request() -> None:
    plan = plan_workload(
        workload(3, (0.25,), hpa()), demand(0.22, defined=False), TWO
    )  # 660m of demand
    assert plan is not None
    assert plan.recommended_replicas is None and plan.cpu_requests is None
    assert plan.assumed_cpu_request == 0.25 and plan.target_utilization == 0.7
    assert plan.hpa_name == "app"
    # ceil(0.66 / (0.25 x 0.7)) = 4 pods at the percentile; min stays 3, max stays 10.
    assert plan.planned_replicas == 4
    assert plan.hpa_min_replicas == (3, 3) and plan.hpa_max_replicas == (10, 10)
    assert math.isclose(plan.utilization, 0.66)
    assert plan.within_band  # 66% within 63%-70%
    body = plan.to_json()
    assert body["hpa"]["name"] == "app" and body["assumed_cpu_request"] == 0.25


def test_hpa_bounds_follow_the_demand_and_min_never_goes_below_the_floor() -> None:
    # Demand needs 20 pods at 100m x 70%: max rises to 25 (25% headroom).
    plan = plan_workload(workload(5, (0.1,), hpa(1, 10, 5)), demand(0.28, defined=False), TWO)
    assert plan is not None
    assert plan.hpa_min_replicas == (1, 2)  # raised to the floor
    assert plan.hpa_max_replicas == (10, 25) and plan.planned_replicas == 20
    assert "minReplicas raised to the availability floor" in plan.reason
    # Tiny demand: the demand alone needs 1 pod, but minReplicas is never lowered.
    plan = plan_workload(workload(5, (0.1,), hpa(5, 10, 5)), demand(0.001, defined=False), TWO)
    assert plan is not None and plan.hpa_min_replicas == (5, 5)
    assert plan.planned_replicas == 5 and plan.cpu_requests is None
    assert not plan.within_band and "whole pods" in plan.reason
    assert "never lowers minReplicas (5" in plan.reason


def test_krrs_minimum_under_an_hpa_never_cuts_the_request_and_the_pods() -> None:
    """The review's H1: 100m -> 10m *and* minReplicas 5 -> 2 for the same demand."""
    plan = plan_workload(workload(5, (0.1,), hpa(5, 10, 5)), demand(0.001), TWO)
    assert plan is not None
    assert plan.hpa_min_replicas == (5, 5) and plan.planned_replicas == 5
    assert plan.cpu_requests == {"c0": 0.01}  # krr's minimum; the HPA's min holds 5 pods
    assert "keeps the HPA at 2" not in plan.reason
    # Above minReplicas the HPA would drop pods at krr's request: today's request stays.
    plan = plan_workload(workload(8, (0.1,), hpa(2, 10, 8)), demand(0.001), TWO)
    assert plan is not None and plan.cpu_requests is None
    assert plan.assumed_cpu_request == 0.1 and plan.hpa_min_replicas == (2, 2)
    assert plan.planned_replicas == 2  # the HPA's own scaling, at today's request
    assert "the plan keeps today's request" in plan.reason
    # A request that rises to krr's minimum may let the HPA run fewer pods: no double cut.
    plan = plan_workload(workload(8, (0.005,), hpa(2, 10, 8)), demand(0.001), TWO)
    assert plan is not None and plan.cpu_requests == {"c0": 0.01}
    assert plan.planned_replicas == 2 and plan.hpa_min_replicas == (2, 2)


def test_an_hpa_on_cpu_with_krrs_number_gets_the_request_that_keeps_its_count() -> None:
    plan = plan_workload(workload(3, (0.25,), hpa()), demand(0.21), TWO)
    assert plan is not None
    assert plan.cpu_requests == {"c0": 0.3}  # 210m / 70%
    assert plan.planned_replicas == 3 and plan.within_band


def test_an_hpa_on_memory_keeps_its_bounds_and_the_request_is_krrs() -> None:
    plan = plan_workload(workload(3, (0.25,), hpa(cpu=False)), demand(0.21), TWO)
    assert plan is not None
    assert plan.cpu_requests == {"c0": 0.21} and plan.target_utilization == 1.0
    assert plan.hpa_min_replicas == (3, 3) and plan.hpa_max_replicas == (10, 10)
    assert "does not scale on CPU" in plan.reason


def test_simple_limits_scale_with_the_request() -> None:
    plan = plan_workload(workload(1, (0.5,)), demand(0.2, limits=(0.4,)), TWO)
    assert plan is not None and plan.cpu_requests == {"c0": 0.1}
    assert plan.cpu_limits == {"c0": 0.2}


def test_no_plan_for_daemonsets_workloads_at_zero_or_without_a_request_under_an_hpa() -> None:
    daemon = Workload("DaemonSet", "ns", "x", [ContainerAllocation("c0", 0.1)], replicas=None)
    assert plan_workload(daemon, demand(0.1), ONE) is None
    assert plan_workload(workload(0), demand(0.1), ONE) is None
    assert plan_workload(workload(1), Demand(cpu={}), ONE) is None
    unset = workload(3, (None,), hpa())
    assert plan_workload(unset, demand(0.1, defined=False), ONE) is None


_MIN = PlanSettings().cpu_min_value / 1000


def _min_binds(plan: Any) -> bool:
    """krr's minimum per container holds the planned request above the demand."""
    return plan.cpu_requests is not None and any(
        v <= _MIN + 1e-9 for v in plan.cpu_requests.values()
    )


def _hpa_holds(plan: Any) -> bool:
    """Today's request under an HPA: it runs whole pods (one fewer would go beyond the
    target) or its minReplicas, which a plan never lowers, holds the count."""
    if plan.cpu_requests is not None or plan.hpa_min_replicas is None:
        return False
    total = plan.cpu_demand * plan.current_replicas
    fewer = (plan.planned_replicas - 1) * plan.assumed_cpu_request * plan.target_utilization
    return fewer < total - 1e-9 or plan.planned_replicas == plan.hpa_min_replicas[1]


@st.composite
def _hpas(draw: st.DrawFn, replicas: int) -> HpaInfo | None:
    """No HPA, or one running ``replicas`` pods: within its bounds, or fewer than its
    minReplicas (its status lags a raised minimum)."""
    if draw(st.booleans()):
        return None
    least = draw(st.integers(1, replicas + 4))
    return hpa(
        min_replicas=least,
        max_replicas=draw(st.integers(max(least, replicas), max(least, replicas) + 20)),
        current=replicas,
        cpu=draw(st.booleans()),
    )


@given(
    data=st.data(),
    replicas=st.integers(1, 50),
    floor=st.integers(1, 5),
    # Caps from far below krr's minimum for the containers (3 x 10m) to far above a pod.
    cap=st.one_of(st.none(), st.floats(0.0005, 0.04), st.floats(0.005, 4)),
    today=st.lists(st.floats(0.001, 8), min_size=1, max_size=3),
    usage=st.lists(st.floats(0.0005, 8), min_size=3, max_size=3),
    target=st.sampled_from([0.5, 0.7, 1.0]),
    defined=st.booleans(),
)
def test_no_plan_moves_requests_and_replicas_the_same_way(
    data: st.DataObject,
    replicas: int,
    floor: int,
    cap: float | None,
    today: list[float],
    usage: list[float],
    target: float,
    defined: bool,
) -> None:
    autoscaler = data.draw(_hpas(replicas))
    on_cpu = autoscaler is not None and autoscaler.scales_on_cpu
    work = workload(replicas, tuple(today), autoscaler)
    plan = plan_workload(
        work,
        # krr gives "?" for CPU only under an HPA on CPU.
        demand(*usage[: len(today)], defined=defined or not on_cpu),
        Floor(floor, "f", max_pod_cpu=cap),
        PlanSettings(target),
    )
    assert plan is not None
    least = max(replicas, floor, autoscaler.min_replicas if autoscaler else 1)
    request_up = plan.assumed_cpu_request > sum(today) + 1e-6  # assumed: 6 decimals
    request_down = plan.assumed_cpu_request < sum(today) - 1e-6
    assert not (request_up and plan.planned_replicas > least)
    assert not (request_down and plan.planned_replicas < replicas)
    if autoscaler is None:
        assert plan.recommended_replicas == plan.planned_replicas
        if cap is None:
            assert plan.recommended_replicas == least  # demand adds none, removes none
    else:
        assert plan.hpa_min_replicas is not None and plan.hpa_max_replicas is not None
        assert plan.hpa_min_replicas[1] == max(floor, autoscaler.min_replicas)  # never lower
        assert plan.hpa_max_replicas[1] >= max(plan.hpa_min_replicas[1], autoscaler.max_replicas)
        assert plan.hpa_min_replicas[1] <= plan.planned_replicas <= plan.hpa_max_replicas[1]
    # The planned pods hold the demand at the target: within the band unless krr's minimum
    # binds or, with today's request under an HPA, its whole pods and bounds hold the count.
    total = sum(usage[: len(today)]) * replicas
    carried = plan.utilization * plan.assumed_cpu_request * plan.planned_replicas
    rounding = plan.utilization * plan.planned_replicas * 5e-7  # assumed_cpu_request: 6 decimals
    assert math.isclose(carried, total, rel_tol=1e-9, abs_tol=rounding + 1e-12)
    assert plan.within_band == (plan.band[0] - 1e-9 <= plan.utilization <= plan.band[1] + 1e-9)
    assert plan.within_band or _min_binds(plan) or _hpa_holds(plan), plan.reason
    if autoscaler is None and cap is not None and "max_pod_cpu" in plan.reason:
        # The cap binds. Unless today's request is below krr's minimum for the pod, pods are
        # added at a request no larger than today's and the cap (or, when the cap is below
        # that minimum, at the minimum); the reason names what is below the minimum.
        smallest = len(today) * _MIN
        today_below, cap_below = sum(today) < smallest - 1e-9, cap < smallest - 1e-9
        if not today_below:
            assert plan.assumed_cpu_request <= min(sum(today), max(cap, smallest)) + 1e-9
        assert ("below krr's minimum" in plan.reason) == (today_below or cap_below)
        assert ("today's request" in plan.reason) == today_below


# --- the floors, from OPA's answer -----------------------------------------------------------


def test_floors_input_names_workloads_and_namespace_labels() -> None:
    work = workload()
    work.labels = {"app": "x"}
    assert floors_input([work], {"ns": {"environment": "production"}}) == {
        "workloads": [
            {"kind": "Deployment", "namespace": "ns", "name": "app", "labels": {"app": "x"}}
        ],
        "namespaces": {"ns": {"labels": {"environment": "production"}}},
    }


def test_floors_are_parsed_and_a_missing_or_bad_one_fails_them_all() -> None:
    work = workload()
    answer = {
        "Deployment/ns/app": {
            "class": "production",
            "min_replicas": 2,
            "max_pod_cpu": None,
            "reason": "r",
        }
    }
    assert parse_floors(answer, [work]) == {work.key: Floor(2, "r", "production")}
    with pytest.raises(FloorsUnavailableError, match="no availability floor for Deployment ns/app"):
        parse_floors({}, [work])
    bad = {"Deployment/ns/app": {"class": "x", "min_replicas": "two", "reason": "r"}}
    with pytest.raises(FloorsUnavailableError, match="is not valid \\(min_replicas"):
        parse_floors(bad, [work])
    with pytest.raises(FloorsUnavailableError, match="not an object"):
        parse_floors(["x"], [work])


def test_an_unreachable_opa_gives_no_floors(tmp_path: object) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    policy = PolicyClient("http://127.0.0.1:9", transport=httpx.MockTransport(refuse))
    from sizeguard.policy import PolicyUnavailableError

    with pytest.raises(PolicyUnavailableError, match="gave no sizeguard/plan/floors: cannot reach"):
        policy.query("sizeguard/plan/floors", {"workloads": []})
    # No workloads with replicas: nothing to ask.
    assert opa_floors(policy, kubeconfig=None, context=None)([]) == {}  # type: ignore[arg-type]


def _fake_scan(floors: object) -> ScanResult:
    with fake_prometheus(
        responder(cpu={"web-5d9-a": 0.2, "web-5d9-b": 0.3, "db-7f-a": 0.1})
    ) as prom:

        async def go() -> ScanResult:
            async with PrometheusClient(prom.url, timeout=0.5, retries=0) as client:
                return await scan(
                    client,
                    bad_data_workloads(),
                    settings_for("simple"),
                    at=1_700_000_000,
                    target_utilization=1.0,
                    floors=floors,  # type: ignore[arg-type]
                )

        return asyncio.run(go())


def test_a_scan_makes_plans_only_with_floors_and_says_why_not() -> None:
    def floors(found: Any) -> dict[Any, Floor]:
        return {w.key: TWO for w in found}

    planned = _fake_scan(floors)
    web = next(p for p in planned.replicas if p.name == "web")
    assert web.recommended_replicas == 2 and web.cpu_requests == {"web": 0.3}
    without = _fake_scan(None)
    assert without.replicas == [] and without.errors == [
        {
            "kind": "availability_floors",
            "message": "no replica plans: no policy engine (OPA) was given to answer the "
            "availability floors",
        }
    ]
    assert [s.recommended for s in without.scans] == [s.recommended for s in planned.scans]

    def down(found: Any) -> dict[Any, Floor]:
        raise FloorsUnavailableError("the policy engine (OPA) gave no sizeguard/plan/floors: x")

    refused = _fake_scan(down)
    assert refused.replicas == []
    assert refused.errors[0]["message"].endswith("gave no sizeguard/plan/floors: x")


# --- one change set from the plan ------------------------------------------------------------


def _state(replicas: int | None, cpu: int) -> GuardedState:
    return GuardedState.model_validate(
        {
            "replicas": replicas,
            "containers": {
                "c0": ContainerResources(
                    cpu_request=cpu, cpu_limit=None, memory_request=100 * 2**20, memory_limit=None
                )
            },
            "init_containers": {},
            "min_replicas": None,
            "max_replicas": None,
        }
    )


def test_the_change_takes_the_plans_request_and_replicas_with_krrs_memory() -> None:
    plan = plan_workload(workload(1, (0.5,)), demand(0.3), TWO)
    assert plan is not None
    krr = {
        "requests": {"cpu": {"value": 0.3}, "memory": {"value": 200 * 2**20}},
        "limits": {"cpu": {"value": None}, "memory": {"value": 200 * 2**20}},
    }
    after = _planned(_state(1, 500), {"c0": krr}, plan)
    assert after.replicas == 2
    assert after.containers["c0"].cpu_request == 150  # the plan's, not krr's 300m
    assert after.containers["c0"].memory_request == 200 * 2**20
    assert after.containers["c0"].cpu_limit is None
    # Without a plan, krr's numbers as they are.
    assert _planned(_state(1, 500), {"c0": krr}, None).containers["c0"].cpu_request == 300


def test_a_plan_keeping_todays_request_keeps_it_in_the_change_whatever_krr_says() -> None:
    """An HPA on CPU with krr's number far below today's (allow_hpa): the plan keeps today's
    100m and runs the pods; the change must not write krr's 10m (and its limit) beside it."""
    plan = plan_workload(workload(5, (0.1,), hpa(2, 10, 5)), demand(0.001), TWO)
    assert plan is not None and plan.cpu_requests is None and plan.assumed_cpu_request == 0.1
    krr = {
        "requests": {"cpu": {"value": 0.01}, "memory": {"value": 200 * 2**20}},
        "limits": {"cpu": {"value": 0.02}, "memory": {"value": 200 * 2**20}},
    }
    before = _state(5, 100)
    before = before.model_copy(
        update={"containers": {"c0": before.containers["c0"].model_copy(update={"cpu_limit": 400})}}
    )
    after = _planned(before, {"c0": krr}, plan)
    assert after.containers["c0"].cpu_request == 100  # today's, as the plan says
    assert after.containers["c0"].cpu_limit == 400  # today's, not krr's 20m
    assert after.containers["c0"].memory_request == 200 * 2**20  # krr's memory still


def test_the_hpa_change_takes_the_plans_bounds() -> None:
    plan = plan_workload(workload(5, (0.1,), hpa(1, 10, 5)), demand(0.28, defined=False), TWO)
    assert plan is not None
    before = GuardedState.model_validate(
        {
            "replicas": None,
            "containers": {},
            "init_containers": {},
            "min_replicas": 1,
            "max_replicas": 10,
        }
    )
    after = _hpa_bounds(before, plan)
    assert (after.min_replicas, after.max_replicas) == (2, 25)


# --- sizeguard scan: plans only when asked for -----------------------------------------------


@pytest.mark.parametrize(
    ("flags", "env", "target"),
    [
        ({}, {}, None),  # krr's drop-in: no OPA needed, no plans
        ({}, {"OPA_URL": "http://opa:8181"}, 1.0),
        ({"opa_url": "http://opa:8181"}, {}, 1.0),
        ({"target_utilization": 80.0}, {}, 0.8),
        ({"target_utilization": 0.0}, {"OPA_URL": "http://opa:8181"}, None),
    ],
)
def test_the_scan_command_plans_only_when_asked(
    flags: dict[str, Any], env: dict[str, str], target: float | None, monkeypatch: Any
) -> None:
    monkeypatch.delenv("OPA_URL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = argparse.Namespace(**({"target_utilization": None, "opa_url": None} | flags))
    assert plan_target(args) == target
