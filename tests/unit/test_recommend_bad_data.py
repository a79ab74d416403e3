"""Bad Prometheus data gives clear per-workload info: never a crash, never a wrong number."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from sizeguard import recommend
from sizeguard.prometheus import PrometheusClient
from sizeguard.recommend import ScanResult
from sizeguard.workloads import ContainerAllocation, Workload

from .test_prometheus_fake_server import Answer, fake_prometheus, vector

PODS = ("web-5d9-a", "web-5d9-b")


def _workloads() -> list[Workload]:
    return [
        Workload(
            "Deployment",
            "shop",
            "web",
            [ContainerAllocation("web", 0.5, None, 512 * 2**20, 512 * 2**20)],
            replicas=2,
            live_pods=list(PODS),
        ),
        Workload(
            "Deployment",
            "other",
            "db",
            [ContainerAllocation("db", 0.5, None, 512 * 2**20, None)],
            replicas=1,
            live_pods=["db-7f-a"],
        ),
    ]


def _series(namespace: str, pod: str, container: str) -> dict[str, str]:
    return {"namespace": namespace, "pod": pod, "container": container}


def responder(
    *,
    cpu: dict[str, Any] | None = None,
    memory: dict[str, Any] | None = None,
    points: float = 20_000,
    fail: str | None = None,
    status: int = 500,
    several: str | None = None,
) -> Callable[[str, dict[str, str]], Answer]:
    cpu = {"web-5d9-a": 0.2, "web-5d9-b": 0.3, "db-7f-a": 0.1} if cpu is None else cpu
    memory = (
        {"web-5d9-a": 200 * 2**20, "web-5d9-b": 250 * 2**20, "db-7f-a": 300 * 2**20}
        if memory is None
        else memory
    )

    def container_of(pod: str) -> tuple[str, str]:
        return ("shop", "web") if pod.startswith("web") else ("other", "db")

    def per_pod(values: dict[str, Any]) -> Answer:
        return vector(
            *((_series(*container_of(p)[:1], p, container_of(p)[1]), v) for p, v in values.items())
        )

    def respond(path: str, params: dict[str, str]) -> Answer:
        if path == "/api/v1/series":
            labels = [_series(*container_of(p)[:1], p, container_of(p)[1]) for p in cpu]
            if several:
                labels.append({**_series("shop", several, "web"), "id": "restarted"})
            return 200, {"status": "success", "data": labels}
        query = params["query"]
        if fail is not None and fail in query:
            return None if status == 0 else (status, {"status": "error", "error": "kaputt"})
        if "kube_replicaset_owner" in query:
            return vector(({"namespace": "shop", "replicaset": "web-5d9", "owner_name": "web"}, 1))
        if "kube_pod_owner" in query:
            return vector(
                *(
                    (
                        {
                            "namespace": "shop",
                            "pod": p,
                            "owner_kind": "ReplicaSet",
                            "owner_name": "web-5d9",
                        },
                        1,
                    )
                    for p in PODS
                ),
                (
                    {
                        "namespace": "other",
                        "pod": "db-7f-a",
                        "owner_kind": "ReplicaSet",
                        "owner_name": "db-7f",
                    },
                    1,
                ),
            )
        if query.startswith("count_over_time"):
            source = cpu if "cpu" in query else memory
            return per_pod({p: points for p in source})
        if query.startswith("quantile_over_time") or query.startswith("avg_over_time"):
            return per_pod(cpu)
        if query.startswith("max_over_time"):
            return per_pod(memory)
        return vector()

    return respond


def _floors(workloads: Sequence[Workload]) -> dict[tuple[str, str, str], recommend.Floor]:
    return {w.key: recommend.Floor(1, "at least 1 replica(s)") for w in workloads}


def _scan(respond: Any, **settings: Any) -> tuple[ScanResult, Any]:
    with fake_prometheus(respond) as prom:

        async def go() -> ScanResult:
            async with PrometheusClient(prom.url, timeout=0.5, retries=1, backoff=0.01) as client:
                return await recommend.scan(
                    client,
                    _workloads(),
                    recommend.settings_for("simple", **settings),
                    at=1_700_000_000,
                    target_utilization=1.0,
                    floors=_floors,
                )

        result = asyncio.run(go())
    return result, prom


def _by_name(result: ScanResult) -> dict[str, recommend.Scan]:
    return {s.object.name: s for s in result.scans}


def test_good_data_gives_numbers_and_the_plan_is_batched() -> None:
    db = {"db-7f-a": 0.1}
    result, prom = _scan(responder(cpu={"web-5d9-a": 0.2, "web-5d9-b": 0.3001, **db}))
    web = _by_name(result)["web"]
    assert web.recommended.requests["cpu"].value == 0.301  # max over pods, rounded up to 1m
    assert web.recommended.requests["memory"].value == 288 * 2**20  # 250Mi x 1.15 -> 287.5 -> 288
    assert web.recommended.limits["cpu"].value is None
    # Two namespaces, one batch: 2 discovery queries, the series index, 4 metric queries
    # (the replica plans work from the percentile: no mean).
    assert len(prom.requests) == 7
    (cpu_query,) = prom.queries("quantile_over_time")
    assert 'namespace=~"other|shop"' in cpu_query and "[14d:75s]" in cpu_query
    # One series per container: no `max by` fold needed.
    assert "max by" not in cpu_query


def test_pods_with_several_series_get_krrs_fold() -> None:
    result, prom = _scan(responder(several="web-5d9-b"))
    assert _by_name(result)["web"].recommended.requests["cpu"].value == 0.3
    plain, folded = sorted(prom.queries("quantile_over_time"), key=len)
    assert 'pod!~"web-5d9-b"' in plain and "max by" not in plain
    assert 'pod=~"web-5d9-b"' in folded
    assert "max by (namespace, pod, container, job) (rate(" in folded
    assert len(prom.requests) == 3 + 2 * 4  # 4 metrics (no mean) per form


def test_an_unusable_series_index_falls_back_to_the_fold() -> None:
    def respond(path: str, params: dict[str, str]) -> Answer:
        if path == "/api/v1/series":
            return 500, {"status": "error", "error": "index busy"}
        return responder()(path, params)

    result, prom = _scan(respond)
    assert _by_name(result)["web"].recommended.requests["cpu"].value == 0.3
    assert all("max by" in q for q in prom.queries("_over_time(") if "owner" not in q)
    assert result.errors == []


def test_nan_for_one_pod_is_unknown_with_the_reason() -> None:
    result, _ = _scan(responder(cpu={"web-5d9-a": 0.2, "web-5d9-b": "NaN", "db-7f-a": 0.1}))
    web = _by_name(result)["web"]
    assert web.recommended.requests["cpu"].value == "?"
    assert web.recommended.info["cpu"] == "Prometheus returned nan for pod web-5d9-b"
    # Memory and the other workload are unaffected.
    assert isinstance(web.recommended.requests["memory"].value, float)
    assert _by_name(result)["db"].recommended.requests["cpu"].value == 0.1


def test_infinite_memory_is_unknown() -> None:
    result, _ = _scan(responder(memory={"web-5d9-a": "+Inf", "web-5d9-b": 1.0, "db-7f-a": 1.0}))
    web = _by_name(result)["web"]
    assert web.recommended.requests["memory"].value == "?"
    assert "inf" in (web.recommended.info["memory"] or "")


def test_missing_series_is_no_data() -> None:
    result, _ = _scan(responder(memory={"db-7f-a": 300 * 2**20}))
    web = _by_name(result)["web"]
    assert web.recommended.requests["memory"].value == "?"
    assert web.recommended.info["memory"] == "No data"
    assert _by_name(result)["db"].recommended.requests["memory"].value == 345 * 2**20


def test_gaps_below_the_points_required_are_not_enough_data() -> None:
    result, _ = _scan(responder(points=40))  # 2 pods x 40 = 80 < 100
    web = _by_name(result)["web"]
    assert web.recommended.requests["cpu"].value == "?"
    assert web.recommended.info == {"cpu": "Not enough data", "memory": "Not enough data"}
    assert _by_name(result)["db"].recommended.info["cpu"] == "Not enough data"  # 40 < 100
    lowered, _ = _scan(responder(points=40), points_required=80)
    assert _by_name(lowered)["web"].recommended.requests["cpu"].value == 0.3


def test_a_500_on_one_metric_is_reported_per_workload() -> None:
    result, prom = _scan(responder(fail="quantile_over_time"))
    for scan in result.scans:
        assert scan.recommended.requests["cpu"].value == "?"
        # The memory queries answered: memory is still recommended.
        assert isinstance(scan.recommended.requests["memory"].value, float)
        info = scan.recommended.info["cpu"] or ""
        assert info.startswith("Prometheus error: cpu: Prometheus answered HTTP 500: kaputt")
    assert len(prom.queries("quantile_over_time")) == 2  # retried once
    assert {e["namespace"] for e in result.errors} == {"shop", "other"}
    assert result.replicas == []  # no replica advice from failed data


def test_a_hanging_query_times_out_into_per_workload_info() -> None:
    result, _ = _scan(responder(fail="container_memory_working_set_bytes", status=0))
    web = _by_name(result)["web"]
    assert web.recommended.requests["memory"].value == "?"
    assert "did not answer within 0.5s" in (web.recommended.info["memory"] or "")
    assert web.recommended.requests["cpu"].value == 0.3


def test_failed_discovery_makes_every_workload_unknown() -> None:
    result, _ = _scan(responder(fail="kube_pod_owner", status=503))
    assert all(s.recommended.requests["cpu"].value == "?" for s in result.scans)
    assert "pod discovery" in (result.scans[0].recommended.info["cpu"] or "")
    assert result.errors[0]["kind"] == "server"


def test_live_pods_missing_from_history_still_count_as_pods() -> None:
    def respond(path: str, params: dict[str, str]) -> Answer:
        if "owner" in params["query"]:
            return vector()
        return responder()(path, params)

    result, _ = _scan(respond)
    web = _by_name(result)["web"]
    assert [p.name for p in web.object.pods] == list(PODS)
    assert web.recommended.requests["cpu"].value == 0.3


def test_nothing_to_scan_sends_no_query() -> None:
    async def go() -> ScanResult:
        async with PrometheusClient("http://127.0.0.1:9") as client:
            return await recommend.scan(client, [], recommend.settings_for("simple"), at=1.0)

    result = asyncio.run(go())
    assert result.scans == [] and result.errors == [] and result.stats["queries"] == 0
