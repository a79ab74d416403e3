"""The replica plans on the sandbox's estate: real Prometheus history, floors from the real OPA.

For every workload with replicas, its plan never moves requests and replicas the same way for
the same demand, and it gives a utilization at the percentile within the target band (or says
why not); krr's per-container numbers are the same with and without the plans.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from sizeguard import recommend
from sizeguard.policy import PolicyClient
from sizeguard.prometheus import PrometheusClient
from sizeguard.recommend import (
    FloorLookup,
    PlanSettings,
    ReplicaRecommendation,
    ScanResult,
    opa_floors,
)
from sizeguard.report_formats import to_krr
from sizeguard.server.models import Edit
from sizeguard.server.service import Service
from sizeguard.workloads import Workload, WorkloadReader

from .conftest import Sandbox
from .test_mcp_server import sandbox_service


@pytest.fixture(scope="module")
def workloads(sandbox: Sandbox) -> list[Workload]:
    with WorkloadReader(sandbox.kubeconfig) as reader:
        return reader.workloads()


@pytest.fixture(scope="module")
def policy(sandbox: Sandbox) -> Iterator[PolicyClient]:
    with PolicyClient(sandbox.opa_url) as client:
        yield client


def _scan(
    sandbox: Sandbox,
    workloads: list[Workload],
    floors: FloorLookup | None,
    target_utilization: float | None = 1.0,
) -> ScanResult:
    async def go() -> ScanResult:
        async with PrometheusClient(sandbox.prometheus_url) as client:
            return await recommend.scan(
                client,
                workloads,
                recommend.settings_for("simple"),
                at=sandbox.state.info["history"]["end"],
                target_utilization=target_utilization,
                floors=floors,
            )

    return asyncio.run(go())


@pytest.fixture(scope="module")
def planned(sandbox: Sandbox, workloads: list[Workload], policy: PolicyClient) -> ScanResult:
    return _scan(sandbox, workloads, opa_floors(policy, sandbox.kubeconfig))


def _plans(result: ScanResult) -> dict[tuple[str, str], ReplicaRecommendation]:
    return {(p.namespace, p.name): p for p in result.replicas}


def _request(workload: Workload) -> float:
    return sum(c.cpu_request or 0.0 for c in workload.containers)


# The plans of the estate whose utilization is outside the band, by name, each with the reason
# its numbers show (_why_outside): krr's 10m minimum per container, or an HPA keeping today's
# request that runs whole pods or its (never lowered) minReplicas. On the sandbox's estate,
# every plan is within the band.
OUTSIDE_THE_BAND: dict[tuple[str, str], str] = {}


def _why_outside(plan: ReplicaRecommendation) -> str | None:
    """Why a plan's utilization may be outside the band, from its numbers (not its text)."""
    minimum = PlanSettings().cpu_min_value / 1000
    if plan.cpu_requests is not None:
        # A container at the minimum: krr rounds its share of the demand up to 10m, which
        # holds the request above the demand (utilization below the band, never above).
        binds = any(v <= minimum + 1e-9 for v in plan.cpu_requests.values())
        return "krr's minimum" if binds and plan.utilization < plan.band[0] else None
    if plan.hpa_min_replicas is not None:
        total = plan.cpu_demand * plan.current_replicas
        need = math.ceil(total / (plan.assumed_cpu_request * plan.target_utilization) - 1e-9)
        if plan.planned_replicas == plan.hpa_min_replicas[1] > need:
            return "the HPA's minReplicas"
        fewer = (plan.planned_replicas - 1) * plan.assumed_cpu_request
        if fewer * plan.target_utilization < total - 1e-9:
            return "the HPA's whole pods"
    return None


def test_no_plan_raises_requests_and_replicas_or_cuts_both(
    planned: ScanResult, workloads: list[Workload]
) -> None:
    by_key = {w.key: w for w in workloads}
    assert not [e for e in planned.errors if e.get("kind") == "availability_floors"]
    assert len(planned.replicas) >= 10
    outside: dict[tuple[str, str], str | None] = {}
    for plan in planned.replicas:
        workload = by_key[plan.key]
        where = f"{plan.kind} {plan.namespace}/{plan.name}: {plan.to_json()}"
        current = plan.current_replicas
        hpa_min = workload.hpa.min_replicas if workload.hpa else 1
        floor = max(current, plan.floor.min_replicas, hpa_min)
        today = _request(workload)
        assumed = plan.assumed_cpu_request
        requests_up, requests_down = assumed > today + 1e-6, assumed < today - 1e-6
        assert not (requests_up and plan.planned_replicas > floor), where
        assert not (requests_down and plan.planned_replicas < current), where
        if plan.recommended_replicas is not None:
            assert plan.recommended_replicas == floor, where  # demand adds none, removes none
        if plan.hpa_min_replicas is not None:
            assert plan.hpa_min_replicas[1] >= plan.hpa_min_replicas[0], where  # never lower
        # The demand at the percentile is what the planned pods carry at this utilization.
        total = plan.cpu_demand * current
        carried = plan.utilization * assumed * plan.planned_replicas
        assert math.isclose(carried, total, rel_tol=1e-5), where
        low, high = plan.band
        assert high == plan.target_utilization and math.isclose(low, high * 0.9), where
        assert plan.within_band == (low - 1e-9 <= plan.utilization <= high + 1e-9), where
        if not plan.within_band:
            outside[(plan.namespace, plan.name)] = _why_outside(plan)
    assert outside == OUTSIDE_THE_BAND


def test_every_workload_with_replicas_and_cpu_history_has_a_plan(
    planned: ScanResult, workloads: list[Workload]
) -> None:
    unknown = {
        (s.object.kind, s.object.namespace, s.object.name)
        for s in planned.scans
        if s.recommended.info.get("cpu") in ("No data", "Not enough data")
    }
    expected = {
        w.key for w in workloads if w.kind != "DaemonSet" and w.replicas and w.key not in unknown
    }
    assert {p.key for p in planned.replicas} == expected
    assert ("Deployment", "data", "etl") in unknown  # too little history: no plan


def test_the_issues_double_counts_are_gone(planned: ScanResult) -> None:
    plans = _plans(planned)
    krr = {
        (s.object.namespace, s.object.name): s.recommended.requests["cpu"].value
        for s in planned.scans
    }
    redis = plans[("data", "redis")]  # was 50m -> 293m *and* 1 -> 9 replicas
    assert redis.recommended_replicas == 1 and redis.floor.workload_class == "fixed"
    assert redis.cpu_requests == {"redis": krr[("data", "redis")]}
    checkout = plans[("shop-prod", "checkout")]  # was 2 -> 74m *and* 2 -> 1 replica
    assert checkout.recommended_replicas == 2 and checkout.floor.min_replicas == 2
    assert checkout.cpu_requests == {"checkout": krr[("shop-prod", "checkout")]}
    assert checkout.floor.workload_class == "production"
    postgres = plans[("shop-prod", "postgres")]  # a StatefulSet: its replicas are its own
    assert postgres.floor.workload_class == "fixed" and postgres.recommended_replicas == 1
    web = plans[("shop-prod", "web")]  # HPA on CPU: krr says "?", the HPA owns replicas
    assert web.cpu_requests is None and web.assumed_cpu_request == 0.25
    assert web.target_utilization == 0.7 and web.hpa_min_replicas is not None
    assert web.hpa_min_replicas[1] >= 2 and web.hpa_name == "web"


def test_krrs_numbers_are_the_same_with_and_without_plans(
    sandbox: Sandbox, workloads: list[Workload], planned: ScanResult
) -> None:
    bare = _scan(sandbox, workloads, None, target_utilization=None)
    assert bare.replicas == [] and bare.errors == []
    assert to_krr(bare)["scans"] == to_krr(planned)["scans"]


def test_without_opa_there_is_no_plan_and_the_result_says_why(
    sandbox: Sandbox, workloads: list[Workload]
) -> None:
    chosen = [w for w in workloads if w.namespace == "shop-prod"]
    with PolicyClient("http://127.0.0.1:9", timeout=0.5) as dead:
        result = _scan(sandbox, chosen, opa_floors(dead, sandbox.kubeconfig))
    assert result.replicas == []
    (error,) = [e for e in result.errors if e.get("kind") == "availability_floors"]
    assert error["message"].startswith("no replica plans: the policy engine (OPA) gave no ")
    assert "cannot reach http://127.0.0.1:9" in error["message"]
    assert result.scans  # krr's numbers are still there


@pytest.fixture(scope="module")
def service(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with sandbox_service(sandbox, tmp_path_factory.mktemp("ledger") / "ledger.db") as service:
        yield service


def test_a_plan_is_one_change_set_of_requests_and_replicas(
    sandbox: Sandbox, workloads: list[Workload], service: Service
) -> None:
    """A floor of 3 for shop-prod/checkout (policy data can say so): one change with 3
    replicas and the same demand spread over them, krr's memory, checked by OPA and a dry run."""
    chosen = [w for w in workloads if (w.namespace, w.name) == ("shop-prod", "checkout")]
    real = service.availability_floors

    def three(found: Any) -> Any:
        return {
            k: recommend.Floor(3, "three for the test", f.workload_class)
            for k, f in real(found).items()
        }

    result = _scan(sandbox, chosen, three)
    (plan,) = result.replicas
    scans = to_krr(result)["scans"]
    change_set = service.change_set_from_recommendations(scans, "recommendation", [plan])
    (change,) = change_set.changes
    assert change.target.kind == "Deployment" and change.target.name == "checkout"
    assert change.before is not None and change.after is not None
    assert (change.before.replicas, change.after.replicas) == (2, 3)
    per_pod = plan.cpu_demand * 2 / 3
    assert change.after.containers["checkout"].cpu_request == math.ceil(per_pod * 1000 - 1e-6)
    memory = scans[0]["recommended"]["requests"]["memory"]["value"]
    assert change.after.containers["checkout"].memory_request == math.ceil(memory)
    assert change.reason.startswith("plan: ")
    preview = service.preview(change_set, actor="test", source="preview")
    assert [d.target for d in preview.dry_run] == ["Deployment/shop-prod/checkout"]


def _scan_cli(sandbox: Sandbox, *args: str, opa: bool) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPA_URL", "KUBECONFIG", "PROMETHEUS_URL")
    }
    env |= {"KUBECONFIG": str(sandbox.kubeconfig), "PROMETHEUS_URL": sandbox.prometheus_url}
    if opa:
        env["OPA_URL"] = sandbox.opa_url
    return subprocess.run(
        [sys.executable, "-m", "sizeguard.cli", "scan", "-n", "shop-prod", "-f", "json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_the_scan_command_makes_plans_only_when_asked(sandbox: Sandbox) -> None:
    """krr's drop-in needs no OPA: without --opa-url, OPA_URL or --target-utilization it
    writes krr's report alone (no error entry) and says once how to get the plans."""
    at = str(sandbox.state.info["history"]["end"])
    plain = _scan_cli(sandbox, "--at", at, opa=False)
    assert plain.returncode == 0, plain.stderr
    report = json.loads(plain.stdout)
    assert report["errors"] == [] and report["sizeguard"]["replicas"] == []
    notes = [line for line in plain.stderr.splitlines() if "replica plans" in line]
    assert notes == [
        "sizeguard: no replica plans: they need OPA for the availability floors; pass "
        "--opa-url or set OPA_URL (or --target-utilization PCT) to get them."
    ]
    planned = _scan_cli(sandbox, "--at", at, opa=True)  # OPA_URL
    assert planned.returncode == 0, planned.stderr
    assert "replica plans" not in planned.stderr
    with_plans = json.loads(planned.stdout)
    assert with_plans["errors"] == [] and with_plans["scans"] == report["scans"]
    names = {p["name"] for p in with_plans["sizeguard"]["replicas"]}
    assert {"checkout", "web", "postgres"} <= names
    explicit = _scan_cli(sandbox, "--at", at, "--opa-url", sandbox.opa_url, opa=False)
    assert explicit.returncode == 0 and "replica plans" not in explicit.stderr
    plans = json.loads(explicit.stdout)["sizeguard"]["replicas"]
    assert plans == with_plans["sizeguard"]["replicas"]
    off = _scan_cli(sandbox, "--at", at, "--target-utilization", "0", opa=True)
    assert off.returncode == 0 and "replica plans" not in off.stderr
    assert json.loads(off.stdout)["sizeguard"]["replicas"] == []


FLOOR_MESSAGE = (
    "{what} of shop-prod/{name} would be 1, below its availability floor of 2: shop-prod/{name} "
    "is in production namespace shop-prod: at least 2 replicas (policy data "
    "config.availability.min_replicas)"
)


@pytest.mark.parametrize("source", ["preview", "scale"])
def test_the_policy_refuses_replicas_below_the_availability_floor(
    service: Service, source: str
) -> None:
    """preview_changes edits and scale_workload (source "scale") go through the change set
    decision, with the cluster's context, which keeps production workloads at their floor."""
    edit = Edit(kind="Deployment", namespace="shop-prod", name="checkout", replicas=1)
    preview = service.preview(
        service.change_set_from_edits([edit], source), actor="test", source=source
    )
    assert not preview.policy.allowed
    found = [v for v in preview.policy.violations if v.code == "replicas_below_availability_floor"]
    assert [v.message for v in found] == [FLOOR_MESSAGE.format(what="replicas", name="checkout")]
    hpa = Edit(kind="HorizontalPodAutoscaler", namespace="shop-prod", name="web", min_replicas=1)
    preview = service.preview(
        service.change_set_from_edits([hpa], source), actor="test", source=source
    )
    assert [v.message for v in preview.policy.violations] == [
        FLOOR_MESSAGE.format(what="HPA minReplicas", name="web")
    ]
    raised = Edit(kind="Deployment", namespace="shop-prod", name="checkout", replicas=3)
    preview = service.preview(
        service.change_set_from_edits([raised], source), actor="test", source=source
    )
    assert preview.policy.allowed, preview.policy.violations
