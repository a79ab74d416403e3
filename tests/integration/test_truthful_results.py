"""Tool results that tell the truth, through ``fastmcp.Client`` against the real sandbox.

- A Prometheus that does not answer (a closed port on 127.0.0.1) is a tool error naming it,
  for every tool that reads it; a partial answer (the real Prometheus, with one namespace's
  queries failing on the way) is a result whose ``coverage`` names what it lacks.
- A namespace the sandbox's API server does not know is a tool error naming it.
- Progress notifications of one call strictly increase and end at total/total.
- Paging: every workload exactly once, in a stable order; a bad cursor is refused in words.
- A read-only server names no tool it does not offer; error texts are sentences; the server
  reports sizeguard's version.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from fastmcp import Client, FastMCP
from mcp_types import ElicitResult as WireElicitResult

import sizeguard
from sizeguard.server.app import MUTATING_TOOLS, build_app
from sizeguard.server.service import Service

from .conftest import Sandbox
from .test_mcp_server import sandbox_service
from .test_webhook import create, ensure_namespace, get, workload_manifest

NS = "truth-it"
DOCS = Path(__file__).resolve().parents[2] / "docs"
Progress = list[tuple[float, float | None, str | None]]


@pytest.fixture(scope="module")
def service(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    ensure_namespace(sandbox, NS, {"environment": "test"})
    with sandbox_service(sandbox, tmp_path_factory.mktemp("ledger") / "ledger.db") as service:
        yield service


@pytest.fixture(scope="module")
def app(service: Service) -> FastMCP:
    return build_app(service)


def with_prometheus(service: Service, url: str | None) -> FastMCP:
    return build_app(
        Service(
            cluster=service.cluster,
            policy=service.policy,
            ledger=service.ledger,
            key=service.key,
            kubeconfig=service.kubeconfig,
            prometheus_url=url,
        )
    )


def read_only(service: Service) -> FastMCP:
    return build_app(
        Service(
            cluster=service.cluster,
            policy=service.policy,
            ledger=service.ledger,
            key=None,
            read_only=True,
            kubeconfig=service.kubeconfig,
            prometheus_url=service.prometheus_url,
        )
    )


async def _call(
    app: FastMCP, tool: str, args: dict[str, Any], **client: Any
) -> tuple[Any, Progress]:
    seen: Progress = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(app, progress_handler=on_progress, **client) as session:
        result = await session.call_tool(tool, args, raise_on_error=False)
    return result, seen


def call(app: FastMCP, tool: str, args: dict[str, Any], **client: Any) -> tuple[Any, Progress]:
    return asyncio.run(_call(app, tool, args, **client))


def error_text(result: Any) -> str:
    assert result.is_error, result.structured_content
    return str(result.content[0].text)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- a Prometheus that does not answer, or answers in part --------------------------------------

PROMETHEUS_READERS = [
    ("scan_recommendations", {"filter": {"namespaces": ["shop-staging"]}}),
    ("recommend_scaling", {"namespaces": ["shop-staging"]}),
    ("get_metrics", {"namespaces": ["shop-staging"]}),
    ("preview_changes", {"from_recommendations": {"namespaces": ["shop-staging"]}}),
]


@pytest.mark.parametrize(
    ("tool", "args"), PROMETHEUS_READERS, ids=[t for t, _ in PROMETHEUS_READERS]
)
def test_a_dead_prometheus_is_a_tool_error_naming_it(
    service: Service, tool: str, args: dict[str, Any]
) -> None:
    port = closed_port()
    result, _ = call(with_prometheus(service, f"http://127.0.0.1:{port}"), tool, args)
    message = error_text(result)
    assert f"Prometheus at http://127.0.0.1:{port}" in message, message
    assert message.startswith("sizeguard: no ") and "nothing matched" not in message


@contextmanager
def failing_namespace(upstream: str, namespace: str) -> Iterator[str]:
    """The real Prometheus behind a proxy on 127.0.0.1 that answers HTTP 503 to range queries
    about one namespace (a partial outage); everything else is passed through."""

    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path.startswith("/api/v1/query_range") and f"%22{namespace}%22" in str(body):
                self._answer(503, b'{"status":"error","errorType":"unavailable","error":"down"}')
                return
            answer = httpx.post(
                upstream + self.path,
                content=body,
                headers={"Content-Type": self.headers.get("Content-Type", "")},
                timeout=30,
            )
            self._answer(answer.status_code, answer.content)

        def _answer(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_partial_data_is_a_result_that_says_which_workloads_it_covers(
    service: Service, sandbox: Sandbox
) -> None:
    flt = {"namespaces": ["data", "shop-staging"], "strategy": "simple-limit", "min_severity": "OK"}
    with failing_namespace(sandbox.prometheus_url, "data") as url:
        result, _ = call(with_prometheus(service, url), "scan_recommendations", {"filter": flt})
    assert not result.is_error, result.content
    report = result.structured_content
    coverage = report["coverage"]
    missing = {m["target"].split("/")[1] for m in coverage["without"]}
    assert missing == {"data"}, coverage
    assert coverage["workloads"] == report["total_workloads"]
    assert coverage["with_data"] == coverage["workloads"] - len(coverage["without"]) > 0
    assert all("namespace data failed" in m["reason"] for m in coverage["without"])
    assert {m["kind"] for m in coverage["without"]} == {"query_failed"}
    assert any(e.get("namespace") == "data" for e in report["errors"])
    # krr's strategy description, without advice about a flag this tool does not have
    assert "HPA" in report["description"] and "--allow-hpa" not in report["description"]


# --- namespaces the API server does not know ----------------------------------------------------

MISSING = ["no-such-ns-b", "no-such-ns-a"]
NAMESPACE_READERS = [
    ("get_cluster_state", {"namespaces": ["shop-prod", *MISSING]}),
    ("get_metrics", {"namespaces": ["shop-prod", *MISSING]}),
    ("scan_recommendations", {"filter": {"namespaces": ["shop-prod", *MISSING]}}),
    ("recommend_scaling", {"namespaces": ["shop-prod", *MISSING]}),
    ("preview_changes", {"from_recommendations": {"namespaces": ["shop-prod", *MISSING]}}),
]


@pytest.mark.parametrize(("tool", "args"), NAMESPACE_READERS, ids=[t for t, _ in NAMESPACE_READERS])
def test_an_unknown_namespace_is_a_tool_error_naming_it(
    app: FastMCP, tool: str, args: dict[str, Any]
) -> None:
    result, _ = call(app, tool, args)
    assert (
        error_text(result) == "sizeguard: no namespaces no-such-ns-a, no-such-ns-b in the cluster"
    )


def test_one_unknown_namespace_is_named_alone(app: FastMCP) -> None:
    result, _ = call(app, "get_metrics", {"namespaces": ["no-such-ns-a"]})
    assert error_text(result) == "sizeguard: no namespace no-such-ns-a in the cluster"


# --- names that match no workload ----------------------------------------------------------------

NAME_READERS = [
    ("get_metrics", {"namespaces": ["shop-staging"], "names": ["web", "no-such-app"]}),
    (
        "scan_recommendations",
        {"filter": {"namespaces": ["shop-staging"], "names": ["web", "no-such-app"]}},
    ),
    ("recommend_scaling", {"namespaces": ["shop-staging"], "names": ["web", "no-such-app"]}),
    (
        "preview_changes",
        {"from_recommendations": {"namespaces": ["shop-staging"], "names": ["no-such-app"]}},
    ),
]


@pytest.mark.parametrize(("tool", "args"), NAME_READERS, ids=[t for t, _ in NAME_READERS])
def test_a_name_no_workload_has_is_a_tool_error_naming_it(
    app: FastMCP, tool: str, args: dict[str, Any]
) -> None:
    result, _ = call(app, tool, args)
    assert error_text(result) == (
        "sizeguard: no Deployment, StatefulSet or DaemonSet named no-such-app in namespace "
        "shop-staging"
    )


# --- a preview from recommendations, and the plans, say what they cover --------------------------

COVERED = ["shop-staging", "data", "shop-prod"]


def test_a_preview_from_recommendations_says_what_it_covers_and_what_it_left_out(
    app: FastMCP,
) -> None:
    flt = {"namespaces": COVERED}
    scanned, _ = call(app, "scan_recommendations", {"filter": flt})
    report = scanned.structured_content
    with_recommendations = {
        (s["object"]["kind"], s["object"]["namespace"], s["object"]["name"])
        for s in report["scans"]
    }
    assert len(with_recommendations) >= 2, report["scans"]  # the estate has several
    result, _ = call(app, "preview_changes", {"from_recommendations": {**flt, "max_targets": 1}})
    assert not result.is_error, result.content
    preview = result.structured_content
    assert preview["coverage"]["workloads"] == report["total_workloads"]
    assert preview["coverage"]["with_data"] == report["coverage"]["with_data"]
    assert preview["truncated"] == len(with_recommendations) - 1
    assert f"max_targets left out {preview['truncated']} more" in preview["next_step"]


def test_a_preview_from_recommendations_names_workloads_without_data(
    service: Service, sandbox: Sandbox
) -> None:
    flt = {"namespaces": ["data", "shop-staging"], "min_severity": "OK"}
    with failing_namespace(sandbox.prometheus_url, "data") as url:
        result, _ = call(
            with_prometheus(service, url), "preview_changes", {"from_recommendations": flt}
        )
    assert not result.is_error, result.content
    preview = result.structured_content
    without = preview["coverage"]["without"]
    assert without and {m["target"].split("/")[1] for m in without} == {"data"}, without
    workloads = preview["coverage"]["workloads"]
    said = f"{len(without)} of {workloads} selected workloads lack usage data"
    assert said in preview["next_step"], preview["next_step"]


def test_the_plans_page_and_count_every_workload_of_a_page(app: FastMCP) -> None:
    seen: list[str] = []
    cursor = None
    totals = set()
    while True:
        args: dict[str, Any] = {"namespaces": ["shop-staging", "data"], "limit": 2}
        if cursor:
            args["cursor"] = cursor
        result, _ = call(app, "recommend_scaling", args)
        assert not result.is_error, result.content
        report = result.structured_content
        totals.add(report["total_workloads"])
        assert report["coverage"]["workloads"] <= 2
        seen += [f"{p['namespace']}/{p['name']}" for p in report["recommendations"]]
        counted = report["coverage"]["workloads"]
        assert counted == 2 or report["next_cursor"] is None
        cursor = report["next_cursor"]
        if cursor is None:
            break
    (total,) = totals
    assert total > 2 and len(seen) == len(set(seen)), seen


# --- progress -----------------------------------------------------------------------------------


def assert_monotonic(seen: Progress) -> None:
    assert seen, "no progress notification"
    values = [p for p, _, _ in seen]
    assert all(a < b for a, b in itertools.pairwise(values)), seen
    assert {t for _, t, _ in seen} == {seen[-1][1]}, seen  # one total for the call
    assert seen[-1][0] == seen[-1][1], seen  # ends at total/total


PROGRESSING = [
    ("scan_recommendations", {"filter": {"namespaces": ["shop-staging", "data"]}}),
    ("recommend_scaling", {"namespaces": ["shop-staging"]}),
    ("get_metrics", {"namespaces": ["shop-staging"]}),
    ("preview_changes", {"from_recommendations": {"namespaces": ["shop-staging"]}}),
    (
        "preview_changes",
        {
            "edits": [
                {"kind": "Deployment", "namespace": "shop-staging", "name": "web", "replicas": 2}
            ]
        },
    ),
    ("get_cluster_state", {"namespaces": ["shop-staging"]}),
]


@pytest.mark.parametrize(
    ("tool", "args"), PROGRESSING, ids=[f"{t}-{i}" for i, (t, _) in enumerate(PROGRESSING)]
)
def test_progress_strictly_increases_and_ends_at_the_total(
    app: FastMCP, tool: str, args: dict[str, Any]
) -> None:
    result, seen = call(app, tool, args)
    assert not result.is_error, result.content
    assert_monotonic(seen)
    if tool in ("scan_recommendations", "recommend_scaling"):
        assert any("batches of namespaces" in (m or "") for _, _, m in seen), seen


def test_a_failed_call_still_reports_in_order(service: Service) -> None:
    app = with_prometheus(service, f"http://127.0.0.1:{closed_port()}")
    _, seen = call(app, "preview_changes", PROMETHEUS_READERS[3][1])
    values = [p for p, _, _ in seen]
    assert values == sorted(set(values)), seen


# --- paging -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "args", "items"),
    [
        ("get_cluster_state", {}, "workloads"),
        ("get_metrics", {"window_hours": 24 * 14}, "workloads"),
        ("scan_recommendations", {"filter": {"min_severity": "GOOD"}}, "scans"),
    ],
)
def test_pages_hold_every_workload_once_in_a_stable_order(
    app: FastMCP, tool: str, args: dict[str, Any], items: str
) -> None:
    whole, _ = call(app, tool, args)
    assert whole.structured_content["next_cursor"] is None
    total = whole.structured_content["total_workloads"]
    pages, cursor = [], None
    while True:
        result, _ = call(app, tool, {**args, "limit": 4, "cursor": cursor})
        content = result.structured_content
        assert content["total_workloads"] == total
        pages.append(content[items])
        cursor = content["next_cursor"]
        if cursor is None:
            break
    assert len(pages) == -(-total // 4)
    joined = [identity(item) for page in pages for item in page]
    assert joined == [identity(item) for item in whole.structured_content[items]]
    assert len(set(joined)) == len(joined)


def identity(item: dict[str, Any]) -> str:
    """A workload (or a scan's container) by name: values may move between two calls."""
    if "object" in item:
        obj = item["object"]
        return f"{obj['kind']}/{obj['namespace']}/{obj['name']}/{obj['container']}"
    target = item["target"]
    return (
        target
        if isinstance(target, str)
        else f"{target['kind']}/{target['namespace']}/{target['name']}"
    )


def test_a_cluster_state_page_carries_its_workloads_hpas_and_namespaces(app: FastMCP) -> None:
    whole, _ = call(app, "get_cluster_state", {})
    state = whole.structured_content
    hpas, namespaces, cursor = [], set(), None
    while True:
        result, _ = call(app, "get_cluster_state", {"limit": 3, "cursor": cursor})
        page = result.structured_content
        hpas += page["hpas"]
        namespaces |= set(page["namespaces"])
        for workload in page["workloads"]:
            if workload["hpa"]:
                names = {(h["target"]["namespace"], h["target"]["name"]) for h in page["hpas"]}
                assert (workload["target"]["namespace"], workload["hpa"]) in names
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(h["target"]["name"] + h["target"]["namespace"] for h in hpas) == sorted(
        h["target"]["name"] + h["target"]["namespace"] for h in state["hpas"]
    )
    assert namespaces == set(state["namespaces"])


def test_a_bad_cursor_is_refused_in_words(app: FastMCP) -> None:
    first, _ = call(app, "get_cluster_state", {"limit": 2})
    cursor = first.structured_content["next_cursor"]
    for args in (
        {"cursor": "not-a-cursor"},
        {"cursor": cursor, "namespaces": ["shop-prod"]},  # issued for other arguments
    ):
        result, _ = call(app, "get_cluster_state", args)
        assert error_text(result) == (
            "sizeguard: the cursor is not one get_cluster_state gave for these arguments; call "
            "it again without a cursor to start from the first page"
        )
    result, _ = call(app, "get_metrics", {"cursor": cursor})  # another tool's
    assert "the cursor is not one get_metrics gave" in error_text(result)


# --- a read-only server, error texts, the version -----------------------------------------------


def test_a_read_only_server_names_no_tool_it_does_not_offer(service: Service) -> None:
    app = read_only(service)
    edit = {"kind": "Deployment", "namespace": "shop-staging", "name": "web", "replicas": 2}

    async def go() -> tuple[str, list[Any], Any, Any, Any]:
        async with Client(app) as session:
            tools = list(await session.list_tools())
            preview = await session.call_tool("preview_changes", {"edits": [edit]})
            refused = await session.call_tool(
                "apply_changes", {"change_set_id": unheard}, raise_on_error=False
            )
            history = await session.call_tool("get_execution_history", {"change_set_id": unheard})
            return str(session.instructions), tools, preview, refused, history

    unheard = "cs-" + uuid.uuid4().hex[:20]
    instructions, tools, preview, refused, history = asyncio.run(go())
    # The refusal is in the audit log like every other refused call.
    audited = [
        (e["event"], e["result"])
        for e in history.structured_content["entries"]
        if e["change_set_id"] == unheard
    ]
    assert audited == [("tool.apply_changes", "error")], history.structured_content
    texts = [instructions, preview.structured_content["next_step"]]
    texts += [str(t.description) for t in tools]
    texts += [str(t.output_schema) + str(t.input_schema) for t in tools]
    for text in texts:
        assert not any(tool in text for tool in MUTATING_TOOLS), text
    assert "read-only" in instructions and "read-only" in preview.structured_content["next_step"]
    printed = error_text(refused)
    assert printed.startswith("sizeguard: this sizeguard server is read-only"), printed
    # The docs quote what the server prints.
    quoted = printed.removeprefix("sizeguard: ").split(";")[0]
    assert quoted in (DOCS / "ai-users.md").read_text()


def test_the_server_reports_sizeguards_version(app: FastMCP) -> None:
    async def go() -> Any:
        async with Client(app) as session:
            return session.server_info

    info = asyncio.run(go())
    assert info.name == "sizeguard" and info.version == sizeguard.__version__


def test_a_malformed_argument_is_refused_in_a_sentence(app: FastMCP) -> None:
    result, _ = call(app, "get_safety_report", {"change_set_id": "cs-XYZ"})
    assert error_text(result) == (
        "sizeguard: invalid arguments for get_safety_report: change_set_id: is not a change-set "
        "id (cs- and 20 hex digits, as preview_changes returns it)"
    )


# --- the human's answer, and the rollback's words -----------------------------------------------


def deployment(sandbox: Sandbox) -> dict[str, Any]:
    name = "t-" + uuid.uuid4().hex[:8]
    return create(sandbox, workload_manifest("Deployment", NS, name, replicas=2))


def raw_answer(content: dict[str, Any]) -> Callable[..., Any]:
    """An elicitation callback of a client that does not check its answer against the form
    (fastmcp's own client does; others may not)."""

    async def answer(context: Any, params: Any) -> WireElicitResult:
        return WireElicitResult(action="accept", content=content)

    return answer


def test_an_accepted_form_without_approve_is_a_decline(app: FastMCP, sandbox: Sandbox) -> None:
    obj = deployment(sandbox)
    edit = {"kind": "Deployment", "namespace": NS, "name": obj["metadata"]["name"], "replicas": 3}
    preview, _ = call(app, "preview_changes", {"edits": [edit]})
    cs = preview.structured_content["change_set_id"]

    async def go() -> Any:
        client = Client(app, mode="legacy", elicitation_handler=lambda *a: {"approve": True})
        client._elicitation_callback = raw_answer({"namespace": ""})
        client._session_kwargs["elicitation_callback"] = client._elicitation_callback
        async with client as session:
            return await session.call_tool("request_confirmation", {"change_set_id": cs})

    confirmation = asyncio.run(go()).structured_content
    assert confirmation["status"] == "declined", confirmation
    assert confirmation["message"].startswith("the human did not approve")
    assert "Field required" not in confirmation["message"]


def test_a_client_error_instead_of_an_answer_is_a_sentence_and_logged(
    app: FastMCP, sandbox: Sandbox
) -> None:
    obj = deployment(sandbox)
    edit = {"kind": "Deployment", "namespace": NS, "name": obj["metadata"]["name"], "replicas": 3}
    preview, _ = call(app, "preview_changes", {"edits": [edit]})
    cs = preview.structured_content["change_set_id"]

    async def broken(message: str, response_type: Any, params: Any, context: Any) -> Any:
        raise RuntimeError("the dialog could not be shown")

    with structlog.testing.capture_logs() as logs:
        result, _ = call(
            app,
            "request_confirmation",
            {"change_set_id": cs},
            mode="legacy",
            elicitation_handler=broken,
        )
    assert not result.is_error, result.content
    confirmation = result.structured_content
    assert confirmation["status"] == "refused"
    assert confirmation["message"].startswith(
        "the MCP client could not ask the human: it answered the question with an error "
        "(the dialog could not be shown), so nothing was approved"
    ), confirmation
    assert "MCPError" not in confirmation["message"]
    failed = [e for e in logs if e["event"] == "confirm.elicitation_failed"]
    assert failed and failed[0]["change_set_id"] == cs and failed[0]["error_type"] == "MCPError"
    assert get(sandbox, "Deployment", NS, obj["metadata"]["name"])["spec"]["replicas"] == 2


def test_a_rollbacks_preview_reads_roll_back(app: FastMCP, sandbox: Sandbox) -> None:
    obj = deployment(sandbox)
    edit = {"kind": "Deployment", "namespace": NS, "name": obj["metadata"]["name"], "replicas": 3}
    preview, _ = call(app, "preview_changes", {"edits": [edit]})
    cs = preview.structured_content["change_set_id"]

    async def approve(message: str, response_type: Any, params: Any, context: Any) -> Any:
        return {"approve": True, "namespace": ""}

    approved, _ = call(
        app,
        "request_confirmation",
        {"change_set_id": cs},
        mode="legacy",
        elicitation_handler=approve,
    )
    assert approved.structured_content["status"] == "approved", approved.structured_content
    applied, seen = call(app, "apply_changes", {"change_set_id": cs})
    assert applied.structured_content["status"] == "applied"
    assert_monotonic(seen)
    rolled, seen = call(
        app, "rollback_changes", {"change_set_id": cs}, mode="legacy", elicitation_handler=approve
    )
    outcome = rolled.structured_content
    assert outcome["preview"]["confirmation"].startswith("sizeguard: roll back change set ")
    assert outcome["execution"]["status"] == "applied", outcome
    assert_monotonic(seen)
