"""Every report sizeguard writes holds to krr v1.29's result model (``krr_model``), and the
object warnings are krr's, set where krr sets them.

The reports come from real scans over HTTP against a scripted Prometheus (and a closed port
for a dead one), written as krr JSON and YAML (``sizeguard scan --format json|yaml``) and as
the scans the MCP tools return (``to_krr``)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from sizeguard import recommend
from sizeguard.prometheus import PrometheusClient
from sizeguard.recommend import (
    Allocations,
    ObjectData,
    PodRef,
    RecommendationValue,
    Recommended,
    Scan,
    ScanResult,
    Severity,
)
from sizeguard.recommend.results import NO_PODS_TEXT, coverage, object_warnings, prometheus_failures
from sizeguard.recommend.strategies import ContainerData
from sizeguard.report_formats import describe_error, render, to_krr
from sizeguard.workloads import ContainerAllocation, HpaInfo, Workload

from .krr_model import Recommendation, ResourceScan, Result, formatter_problems, krr_score
from .test_prometheus_fake_server import fake_prometheus
from .test_recommend_bad_data import responder

KRR_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "krr" / "simple-3-workloads.json"
AT = 1_700_000_000
NO_PODS, NO_CPU, NO_MEMORY = (
    "NoPrometheusPods",
    "NoPrometheusCPUMetrics",
    "NoPrometheusMemoryMetrics",
)
MI = 2**20


def _hpa(desired: int | None) -> HpaInfo:
    return HpaInfo("web", 2, 6, 2, desired, 70.0, None, scales_on_cpu=True, scales_on_memory=False)


def _estate(desired_replicas: int | None = None) -> list[Workload]:
    """What the API server lists: two workloads Prometheus knows (one under an HPA whose
    controller has not written a status yet), one with a live pod Prometheus never saw, and
    one with no pod at all."""
    return [
        Workload(
            "Deployment",
            "shop",
            "web",
            [ContainerAllocation("web", 0.5, None, 512 * MI, 512 * MI)],
            replicas=2,
            live_pods=["web-5d9-a", "web-5d9-b"],
            hpa=_hpa(desired_replicas),
            labels={"app": "web"},
        ),
        Workload(
            "StatefulSet",
            "other",
            "db",
            [ContainerAllocation("db", 0.5, None, 512 * MI, None)],
            replicas=1,
            live_pods=["db-7f-a"],
        ),
        Workload(
            "Deployment",
            "shop",
            "fresh",
            [ContainerAllocation("fresh", 0.1, None, 64 * MI, None)],
            replicas=1,
            live_pods=["fresh-6c-x"],
        ),
        Workload(
            "Deployment",
            "shop",
            "idle",
            [ContainerAllocation("idle", None, None, None, None)],
            replicas=0,
        ),
    ]


def _responder(**kwargs: Any) -> Any:
    """The scripted Prometheus of test_recommend_bad_data, with db owned by a StatefulSet."""
    respond = responder(**kwargs)

    def answer(path: str, params: dict[str, str]) -> Any:
        status_body = respond(path, params)
        if status_body and "kube_pod_owner" in params.get("query", ""):
            for series in status_body[1]["data"]["result"]:
                if series["metric"]["pod"] == "db-7f-a":
                    series["metric"].update(owner_kind="StatefulSet", owner_name="db")
        return status_body

    return answer


def _scan(url: str, workloads: list[Workload], **settings: Any) -> ScanResult:
    async def go() -> ScanResult:
        async with PrometheusClient(url, timeout=2, retries=0) as client:
            return await recommend.scan(
                client, workloads, recommend.settings_for("simple", **settings), at=AT
            )

    return asyncio.run(go())


def _scripted(workloads: list[Workload], **kwargs: Any) -> ScanResult:
    with fake_prometheus(_responder(**kwargs)) as prom:
        return _scan(prom.url, workloads)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: connections are refused


def _as_krr_reads_it(result: ScanResult) -> list[Result]:
    """The report as krr would parse it: the JSON and the YAML, and the MCP scans."""
    documents = [
        json.loads(render(result, "json")),
        yaml.safe_load(render(result, "yaml")),
    ]
    parsed = [Result.model_validate(d) for d in documents]
    for scan in to_krr(result)["scans"]:  # what scan_recommendations returns, one by one
        ResourceScan.model_validate(scan)
    for report, document in zip(parsed, documents, strict=True):
        assert formatter_problems(report) == []
        assert document["score"] == krr_score(report)
    return parsed


def _warnings(report: Result) -> dict[str, set[str]]:
    return {s.object.name: set(s.object.warnings) for s in report.scans}


# --- the model is krr's: it reads krr's own output and refuses what krr refuses ------------


def test_the_model_reads_krrs_own_report() -> None:
    document = json.loads(KRR_FIXTURE.read_text())
    report = Result.model_validate(document)
    assert krr_score(report) == document["score"] == 76
    assert report.config is not None and report.config["strategy"] == "simple"
    assert formatter_problems(report) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("object", "warnings"), ["NoPodsFound"]),
        (("object", "kind"), "Pod"),
        (("object", "allocations", "requests", "cpu"), "?"),
        (("object", "hpa"), {"max_replicas": 3, "desired_replicas": None}),
        (("object", "pods"), [{"name": "p"}]),
        (("recommended", "requests", "cpu"), {"value": "n/a", "severity": "OK"}),
        (("recommended", "requests", "cpu"), {"value": 0.1, "severity": "FINE"}),
        (("recommended", "info", "gpu"), None),
        (("severity",), "SEVERE"),
    ],
)
def test_the_model_refuses_what_krr_refuses(path: tuple[str, ...], value: object) -> None:
    document = json.loads(KRR_FIXTURE.read_text())
    target = document["scans"][0]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError):
        Result.model_validate(document)


def test_the_model_takes_what_krr_takes() -> None:
    document = json.loads(KRR_FIXTURE.read_text())
    obj = document["scans"][0]["object"]
    obj["kind"] = "GroupedJob"
    obj["warnings"] = [NO_PODS, NO_CPU, NO_MEMORY, NO_CPU]
    obj["allocations"]["requests"] = {"cpu": "50m", "memory": "2048Mi"}
    obj["allocations"]["limits"] = {"cpu": math.nan, "memory": None}
    for key in ("cluster", "hpa", "labels", "annotations"):
        del obj[key]
    document["sizeguard"] = {"anything": 1}
    del document["config"]
    scan = Result.model_validate(document).scans[0].object
    assert scan.warnings == {NO_PODS, NO_CPU, NO_MEMORY}
    assert scan.allocations.requests == {"cpu": 0.05, "memory": 2048 * MI}
    assert scan.allocations.limits == {"cpu": "?", "memory": None}


# --- sizeguard's reports hold to it, with krr's warnings where krr sets them ----------------


def test_a_scan_with_workloads_without_pods_and_an_hpa_is_a_krr_report() -> None:
    result = _scripted(_estate())
    for report in _as_krr_reads_it(result):
        assert _warnings(report) == {
            "web": set(),
            "db": set(),
            # The API server lists a pod Prometheus never saw: krr falls back to it and warns.
            "fresh": {NO_PODS, NO_CPU, NO_MEMORY},
            # No pod anywhere: krr queries no pod, gets nothing, and warns on the metrics only.
            "idle": {NO_CPU, NO_MEMORY},
        }
        web = next(s for s in report.scans if s.object.name == "web")
        assert web.object.hpa is not None and web.object.hpa.desired_replicas == 2
        assert web.recommended.info["cpu"] == "HPA detected"
        cpu = web.recommended.requests["cpu"]
        assert isinstance(cpu, Recommendation) and (cpu.value, cpu.severity) == ("?", "UNKNOWN")
        idle = next(s for s in report.scans if s.object.name == "idle")
        assert idle.object.pods == [] and idle.recommended.info == {
            "cpu": "No data",
            "memory": "No data",
        }
    covered = coverage(result)
    assert {g.label: (g.reason, g.detail) for g in covered.gaps} == {
        "Deployment shop/fresh": ("pods_unseen", "Prometheus lists none of its pods"),
        "Deployment shop/idle": ("no_pods", NO_PODS_TEXT),
    }
    assert covered.with_data == covered.workloads - 2 and not covered.answered_nothing


def test_an_hpa_with_a_status_keeps_its_desired_replicas() -> None:
    report = _as_krr_reads_it(_scripted(_estate(desired_replicas=5)))[0]
    web = next(s for s in report.scans if s.object.name == "web")
    assert web.object.hpa is not None and web.object.hpa.desired_replicas == 5


def test_a_failed_memory_query_is_an_error_and_krrs_memory_warning() -> None:
    result = _scripted(_estate(), fail="max_over_time")
    assert {e["namespace"] for e in prometheus_failures(result)} == {"shop", "other"}
    for report in _as_krr_reads_it(result):
        assert report.errors == result.errors
        warnings = _warnings(report)
        assert warnings["web"] == warnings["db"] == {NO_MEMORY}
        assert warnings["idle"] == {NO_CPU, NO_MEMORY}
    covered = coverage(result)
    assert {g.name: (g.reason, set(g.missing)) for g in covered.gaps if g.name != "idle"} == {
        "web": ("query_failed", {"memory"}),
        "db": ("query_failed", {"memory"}),
        "fresh": ("query_failed", {"cpu", "memory"}),
    }
    assert not covered.answered_nothing  # the CPU queries answered


def test_a_dead_prometheus_is_a_krr_report_of_nothing_and_says_so() -> None:
    result = _scan(f"http://127.0.0.1:{_closed_port()}", _estate())
    assert coverage(result).answered_nothing
    assert any("cannot reach Prometheus" in describe_error(e) for e in result.errors)
    for report in _as_krr_reads_it(result):
        # Discovery failed: like krr, the live pods stand in, with NoPrometheusPods.
        assert _warnings(report) == {
            "web": {NO_PODS, NO_CPU, NO_MEMORY},
            "db": {NO_PODS, NO_CPU, NO_MEMORY},
            "fresh": {NO_PODS, NO_CPU, NO_MEMORY},
            "idle": {NO_CPU, NO_MEMORY},
        }


def test_a_report_read_from_krr_is_written_back_as_krr() -> None:
    from sizeguard.report_formats import from_krr

    document = json.loads(KRR_FIXTURE.read_text())
    document["errors"] = [
        {"name": "HistoryRangeError"},
        {"name": "NotEnoughHistoryAvailable", "retry_after": "2026-07-30T10:00:00"},
    ]
    document["scans"][0]["object"]["warnings"] = [NO_CPU]
    report = _as_krr_reads_it(from_krr(document))[0]
    assert report.errors == document["errors"]
    assert report.scans[0].object.warnings == {NO_CPU}


# --- the warnings' conditions, one by one (krr's gather_data and runner) --------------------


def _data(**values: dict[str, Any]) -> ContainerData:
    return ContainerData(**values)  # type: ignore[arg-type]


FULL: dict[str, Any] = {
    "cpu": {"p": 0.1},
    "cpu_samples": {"p": [0.1]},
    "cpu_points": {"p": 200.0},
    "memory_max": {"p": 1.0e8},
    "memory_points": {"p": 200.0},
}


@pytest.mark.parametrize(
    ("strategy", "settings", "missing", "expected"),
    [
        ("simple", {}, (), []),
        ("simple", {}, ("cpu",), [NO_CPU]),
        ("simple", {}, ("cpu_points",), [NO_CPU]),  # CPUAmountLoader is a CPU loader too
        ("simple", {}, ("cpu_samples",), []),  # simple has no raw-rate loader
        ("simple", {}, ("memory_max",), [NO_MEMORY]),
        ("simple", {}, ("memory_points",), [NO_MEMORY]),
        ("simple-limit", {}, ("cpu",), []),
        ("simple-limit", {}, ("cpu_samples",), [NO_CPU]),
        # krr's MaxOOMKilledMemoryLoader is empty when nothing was OOM-killed: krr warns.
        ("simple", {"use_oomkill_data": True}, (), [NO_MEMORY]),
    ],
)
def test_metric_warnings_follow_krrs_loaders(
    strategy: str, settings: dict[str, Any], missing: tuple[str, ...], expected: list[str]
) -> None:
    data = _data(**{k: v for k, v in FULL.items() if k not in missing})
    chosen = recommend.settings_for(strategy, **settings)
    assert object_warnings({"p"}, {"p"}, data, chosen) == expected


def test_oom_data_silences_krrs_memory_warning() -> None:
    data = _data(**FULL, oom_limit={"p": 2.0e8})
    chosen = recommend.settings_for("simple", use_oomkill_data=True)
    assert object_warnings({"p"}, {"p"}, data, chosen) == []


@pytest.mark.parametrize(
    ("prometheus", "live", "pods_warning"),
    [
        ({"a"}, {"a"}, False),
        ({"a"}, set(), False),  # Prometheus saw it (a deleted pod): no fallback
        (set(), {"a"}, True),  # only the API server lists one: krr's fallback warns
        (set(), set(), False),  # neither: krr adds no pod warning
    ],
)
def test_the_pod_warning_is_krrs_fallback(
    prometheus: set[str], live: set[str], pods_warning: bool
) -> None:
    data = _data(**FULL)
    warnings = object_warnings(prometheus, live, data, recommend.settings_for("simple"))
    assert (NO_PODS in warnings) is pods_warning


# --- CSV: krr's columns and cells -----------------------------------------------------------


def _krr_csv_fixture() -> ScanResult:
    """The input of krr's own CSV test (tests/formatters/test_csv_formatter.py), plus a
    second container of the same workload and an unset one."""

    def scan(container: str, requests: dict[str, Any], limits: dict[str, Any]) -> Scan:
        rec = Recommended(
            requests={
                "cpu": RecommendationValue(requests["cpu"], Severity.CRITICAL),
                "memory": RecommendationValue(requests["memory"], Severity.CRITICAL),
            },
            limits={
                "cpu": RecommendationValue(limits["cpu"], Severity.UNKNOWN),
                "memory": RecommendationValue(limits["memory"], Severity.CRITICAL),
            },
            info={"cpu": None, "memory": None},
        )
        obj = ObjectData(
            cluster="mock-cluster",
            name="mock-object-1",
            container=container,
            pods=[PodRef("p1", False), PodRef("p2", False), PodRef("p3", True)],
            hpa=None,
            namespace="default",
            kind="Deployment",
            allocations=Allocations(
                {"cpu": 0.05, "memory": 2048.0 * MI}, {"cpu": 2.0, "memory": 2.0}
            ),
        )
        return Scan(obj, rec, Severity.CRITICAL)

    return ScanResult(
        scans=[
            scan("mock-container-1", {"cpu": 0.0065, "memory": 0.5}, {"cpu": "?", "memory": 0.5}),
            scan(
                "mock-container-2",
                {"cpu": None, "memory": 4 * 1024.0**3},
                {"cpu": None, "memory": None},
            ),
        ],
        strategy="simple",
        settings={},
    )


def test_csv_has_krrs_columns_and_krrs_expected_row() -> None:
    text = render(_krr_csv_fixture(), "csv")
    assert text.splitlines()[0] == (
        "Namespace,Name,Pods,Old Pods,Type,Container,Severity,"
        "CPU Diff,CPU Requests,CPU Limits,Memory Diff,Memory Requests,Memory Limits"
    )
    assert text.endswith("\r\n")  # csv.DictWriter's default dialect, as krr's
    first, second = list(csv.DictReader(io.StringIO(text)))
    # krr's own expected first row, verbatim.
    assert first == {
        "Namespace": "default",
        "Name": "mock-object-1",
        "Pods": "2",
        "Old Pods": "1",
        "Type": "Deployment",
        "Container": "mock-container-1",
        "Severity": "CRITICAL",
        "CPU Diff": "-87m",
        "CPU Requests": "(-43m) 50m -> 6m",
        "CPU Limits": "2.0 -> ?",
        "Memory Diff": "-4096Mi",
        "Memory Requests": "(-2048Mi) 2048Mi -> 500m",
        "Memory Limits": "2.0 -> 500m",
    }
    # The same workload's next container: its cells only; unset recommendations count as 0.
    assert second == {
        "Namespace": "",
        "Name": "",
        "Pods": "",
        "Old Pods": "",
        "Type": "",
        "Container": "mock-container-2",
        "Severity": "CRITICAL",
        "CPU Diff": "-100m",
        "CPU Requests": "(-50m) 50m -> unset",
        "CPU Limits": "2.0 -> unset",
        "Memory Diff": "+4096Mi",
        "Memory Requests": "(+2048Mi) 2048Mi -> 4096Mi",
        "Memory Limits": "2.0 -> unset",
    }


def test_csv_of_a_real_scan_says_unset_and_question_marks() -> None:
    rows = list(csv.DictReader(io.StringIO(render(_scripted(_estate()), "csv"))))
    idle = next(r for r in rows if r["Name"] == "idle")
    assert (idle["Pods"], idle["Old Pods"], idle["CPU Diff"]) == ("0", "0", "")
    assert (idle["CPU Requests"], idle["Memory Limits"]) == ("unset -> ?", "unset -> ?")
    web = next(r for r in rows if r["Name"] == "web")
    assert web["CPU Requests"] == "500m -> ?" and web["Pods"] == "2"
