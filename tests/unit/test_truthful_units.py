"""The parts of truthful tool results that need no cluster: progress that only goes up, cursors,
error texts in words, a scan's progress per batch, and a refused dry run's warnings.
(tests/integration/test_truthful_results.py holds the same claims through the MCP client
against the sandbox.)"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sizeguard.changes import ResourceChange, Target, guarded_state
from sizeguard.cluster import Cluster, ClusterError, UnknownNamespacesError
from sizeguard.prometheus import PrometheusClient
from sizeguard.recommend import ScanResult, scan, settings_for
from sizeguard.recommend.collection import collect
from sizeguard.recommend.results import coverage
from sizeguard.server.models import (
    ChangeSetId,
    Edit,
    RecommendationFilter,
    describe_validation_error,
)
from sizeguard.server.paging import page, workload_key
from sizeguard.server.service import Service, ServiceError
from sizeguard.server.tools.common import Progress
from sizeguard.workloads import Workload, WorkloadReader, WorkloadReadError

from .api_stub import json_server
from .test_prometheus_fake_server import fake_prometheus
from .test_recommend_bad_data import _workloads, responder

# --- progress -----------------------------------------------------------------------------------


class Recorder:
    """Stands in for the MCP context: what ``report_progress`` was told."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, float | None, str | None]] = []

    async def report_progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        self.sent.append((progress, total, message))


def test_progress_never_repeats_nor_goes_back_and_parts_map_into_their_range() -> None:
    ctx = Recorder()
    steps = Progress(ctx)  # type: ignore[arg-type]

    async def go() -> None:
        await steps.at(0.0, "start")
        with steps.part(0.0, 0.5):
            await steps.at(0.0, "inner start")  # 0 again: not sent
            await steps.at(0.5, "inner half")  # 25
            await steps.at(1.0, "inner end")  # 50
        await steps.at(0.4, "back")  # 40 < 50: not sent
        await steps.at(0.5, "same")  # 50 again: not sent
        await steps.done()
        await steps.done()  # once only

    asyncio.run(go())
    assert ctx.sent == [
        (0.0, 100.0, "start"),
        (25.0, 100.0, "inner half"),
        (50.0, 100.0, "inner end"),
        (100.0, 100.0, "done"),
    ]


def test_a_scan_reports_each_batch_of_namespaces() -> None:
    told: list[tuple[int, int]] = []

    async def on_batch(done: int, total: int) -> None:
        told.append((done, total))

    with fake_prometheus(responder()) as prom:

        async def go() -> None:
            async with PrometheusClient(prom.url, timeout=2, retries=0) as client:
                await collect(
                    client,
                    settings_for("simple"),
                    ["other", "shop"],
                    at=1_700_000_000,
                    batch_pods=1,  # one namespace per batch
                    progress=on_batch,
                )

        asyncio.run(go())
    assert told == [(0, 2), (1, 2), (2, 2)]


# --- cursors ------------------------------------------------------------------------------------

ITEMS = [
    ("ns-b", "web", "Deployment"),
    ("ns-a", "db", "StatefulSet"),
    ("ns-a", "api", "Deployment"),
]


def key(item: tuple[str, str, str]) -> tuple[str, ...]:
    return workload_key(item[2], item[0], item[1])


def pages(items: list[tuple[str, str, str]], limit: int, **arguments: Any) -> list[list[Any]]:
    out, cursor = [], None
    while True:
        chosen = page(items, key, tool="t", arguments=arguments, cursor=cursor, limit=limit)
        out.append(chosen.items)
        cursor = chosen.next_cursor
        if cursor is None:
            return out


def test_pages_are_in_key_order_and_hold_each_item_once() -> None:
    assert pages(ITEMS, 2) == [
        [("ns-a", "api", "Deployment"), ("ns-a", "db", "StatefulSet")],
        [("ns-b", "web", "Deployment")],
    ]
    assert pages(ITEMS, 3) == [sorted(ITEMS)]  # exactly full: no empty page after it
    assert pages([], 3) == [[]]


def test_a_page_after_a_deletion_starts_after_the_last_key_seen() -> None:
    first = page(ITEMS, key, tool="t", arguments={}, cursor=None, limit=1)
    rest = [i for i in ITEMS if i != ("ns-a", "api", "Deployment")]  # the one seen is gone
    second = page(rest, key, tool="t", arguments={}, cursor=first.next_cursor, limit=1)
    assert second.items == [("ns-a", "db", "StatefulSet")]


@pytest.mark.parametrize(
    ("cursor", "tool", "arguments"),
    [
        ("garbage!", "t", {}),
        ("e30", "t", {}),  # {} : no version
        (None, "other-tool", {}),  # a good cursor, for another tool
        (None, "t", {"namespaces": ["x"]}),  # a good cursor, for other arguments
    ],
)
def test_a_cursor_not_issued_for_this_call_is_refused_in_words(
    cursor: str | None, tool: str, arguments: dict[str, Any]
) -> None:
    issued = page(ITEMS, key, tool="t", arguments={}, cursor=None, limit=1).next_cursor
    with pytest.raises(ServiceError) as refused:
        page(ITEMS, key, tool=tool, arguments=arguments, cursor=cursor or issued, limit=1)
    assert str(refused.value) == (
        f"the cursor is not one {tool} gave for these arguments; call it again without a "
        "cursor to start from the first page"
    )


# --- error texts --------------------------------------------------------------------------------


def test_a_malformed_change_set_id_reads_as_a_sentence() -> None:
    from pydantic import TypeAdapter

    with pytest.raises(ValidationError) as bad:
        TypeAdapter(ChangeSetId).validate_python("cs-XYZ")
    text = describe_validation_error(bad.value)
    assert text == "is not a change-set id (cs- and 20 hex digits, as preview_changes returns it)"


@pytest.mark.parametrize(
    ("model", "fields", "expected"),
    [
        (
            RecommendationFilter,
            {"namespaces": ["Bad_NS"]},
            "namespaces.0: is not a Kubernetes name",
        ),
        (RecommendationFilter, {"colour": 1}, "colour: is not a field this tool takes"),
        (RecommendationFilter, {"max_targets": 0}, "max_targets: must be greater than or equal"),
        (Edit, {"namespace": "a", "name": "b"}, "kind: is required"),
    ],
)
def test_argument_errors_read_as_words_not_pydantics_phrases(
    model: Any, fields: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ValidationError) as bad:
        model(**fields)
    text = describe_validation_error(bad.value)
    assert text.startswith(expected), text
    for phrase in ("should match pattern", "Field required", "Input should", "Extra inputs"):
        assert phrase not in text


# --- a refused dry run --------------------------------------------------------------------------

ADMITTED = (
    "sizeguard: dry run admitted; the real replicas change on ns/web needs an approval from "
    "the sizeguard MCP server"
)


class RefusingService(Service):
    """A service whose API server refuses the dry run after sizeguard's webhook admitted it
    (another admission plugin said no)."""

    def _send_dry_run(self, change: ResourceChange, live: dict[str, Any] | None) -> Any:
        raise ClusterError("denied", "quota exceeded", warnings=(ADMITTED, "other warning"))


def test_a_refused_dry_run_does_not_say_admitted() -> None:
    service = RefusingService(cluster=None, policy=None, ledger=None, key=None)  # type: ignore[arg-type]
    live = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"namespace": "ns", "name": "web", "uid": "u1"},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "app"}]}}},
    }
    before = guarded_state(live)
    change = ResourceChange(
        target=Target(
            api_version="apps/v1", kind="Deployment", namespace="ns", name="web", uid="u1"
        ),
        before=before,
        after=before.model_copy(update={"replicas": 3}),
        reason="a test",
        source="edit",
    )
    answer = service._dry_run_answer(change, live)
    assert answer.admitted is False and answer.error == "quota exceeded"
    assert answer.warnings == [
        "sizeguard's webhook did not object; the real replicas change on ns/web needs an "
        "approval from the sizeguard MCP server",
        "other warning",
    ]
    assert not any("dry run admitted" in w for w in answer.warnings)


# --- coverage: one answer for the tools and the command line -------------------------------------


def test_too_few_points_is_not_covered() -> None:
    """krr's "Not enough data" gives "?": the workload is not covered, and says why."""
    with fake_prometheus(responder(points=10)) as prom:

        async def go() -> ScanResult:
            async with PrometheusClient(prom.url, timeout=2, retries=0) as client:
                return await scan(client, _workloads(), settings_for("simple"), at=1_700_000_000)

        result = asyncio.run(go())
    covered = coverage(result)
    assert covered.workloads == 2 and covered.with_data == 0, covered
    (web,) = [g for g in covered.gaps if g.name == "web"]
    assert web.reason == "not_enough_data" and "points_required" in web.detail
    assert not covered.failures and not covered.answered_nothing


def test_a_workload_without_containers_is_counted_when_named() -> None:
    result = ScanResult(scans=[], strategy="simple", settings={})
    empty = Workload("Deployment", "shop", "empty", [], replicas=1)
    covered = coverage(result, [empty])
    assert (covered.workloads, covered.with_data) == (1, 0)
    assert [(g.target, g.reason) for g in covered.gaps] == [
        ("Deployment/shop/empty", "no_containers")
    ]


# --- API server errors in words ------------------------------------------------------------------


NAMESPACE_ANSWERS: dict[str, tuple[int, dict[str, Any]]] = {
    "/api/v1/namespaces/shop": (
        200,
        {"kind": "Namespace", "metadata": {"name": "shop", "labels": {"env": "production"}}},
    ),
    "/api/v1/namespaces/secret": (403, {"kind": "Status", "code": 403, "message": "forbidden"}),
}


def _namespaces_or(status: int, path: str) -> tuple[int, object]:
    path = path.split("?")[0]
    if path in NAMESPACE_ANSWERS:
        return NAMESPACE_ANSWERS[path]
    return (404 if path.startswith("/api/v1/namespaces/") else status), {"kind": "Status"}


@contextmanager
def api_server(status: int) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering ``status`` (with a Kubernetes Status body) to
    every GET, except the namespaces of :data:`NAMESPACE_ANSWERS` (404 for other
    namespaces)."""
    with json_server(lambda path: _namespaces_or(status, path)) as (url, _seen):
        yield url


def kubeconfig_for(server: str, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def test_a_forbidden_list_is_one_sentence_naming_the_request(tmp_path: Path) -> None:
    with (
        api_server(403) as url,
        WorkloadReader(kubeconfig_for(url, tmp_path)) as reader,
        pytest.raises(WorkloadReadError) as refused,
    ):
        reader.workloads(["shop"])
    assert str(refused.value) == (
        "the API server answered 403 Forbidden to GET /apis/apps/v1/namespaces/shop/deployments"
    )


def test_an_unreachable_api_server_is_named_with_the_reason(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        WorkloadReader(kubeconfig_for(f"http://127.0.0.1:{port}", tmp_path)) as reader,
        pytest.raises(WorkloadReadError) as refused,
    ):
        reader.workloads()
    assert str(refused.value) == f"cannot reach 127.0.0.1:{port}: connection refused"


def test_the_namespace_check_reads_labels_refuses_unknown_and_lets_forbidden_through(
    tmp_path: Path,
) -> None:
    """One GET per namespace: 404 is unknown (named), 403 is scanned as asked (None), so that
    namespace-scoped credentials work."""
    with api_server(500) as url, Cluster.from_kubeconfig(kubeconfig_for(url, tmp_path)) as cluster:
        assert cluster.namespace_labels(["shop", "secret"]) == {
            "secret": None,
            "shop": {"env": "production"},
        }
        with pytest.raises(UnknownNamespacesError) as unknown:
            cluster.namespace_labels(["shop", "gone-b", "gone-a"])
    assert unknown.value.names == ("gone-a", "gone-b")
    assert str(unknown.value) == "no namespaces gone-a, gone-b in the cluster"
