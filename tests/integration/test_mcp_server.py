"""The MCP server end to end, through ``fastmcp.Client``, against the real sandbox: kube-apiserver
with sizeguard's webhook, OPA with the shipped policies, and Prometheus with 14 days of history.

The full flow uses ``shop-staging/api`` (its recommendations come from Prometheus) and restores
it by a confirmed rollback; bypass tests use Deployments they create in ``mcp-it``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from fastmcp.client.elicitation import ElicitResult
from fastmcp.exceptions import ToolError
from mcp_types import ElicitResult as WireElicitResult
from mcp_types import Implementation

from sizeguard.approvals import APPROVAL_ANNOTATION, TrustedKeys, verify_transition
from sizeguard.changes import ResourceChange, guarded_state
from sizeguard.cluster import Cluster
from sizeguard.ledger import Ledger
from sizeguard.policy import PolicyClient
from sizeguard.server.app import MUTATING_TOOLS, build_app
from sizeguard.server.confirm import INPUT_KEY
from sizeguard.server.service import Service

from .conftest import Sandbox
from .test_webhook import (
    create,
    ensure_namespace,
    get,
    path_of,
    signing_key,
    webhook_info,
    workload_manifest,
)

NS = "mcp-it"
CLIENT = Implementation(name="sizeguard-tests", version="1.0")

Handler = Callable[..., Any]


@contextlib.contextmanager
def sandbox_service(sandbox: Sandbox, ledger_path: Path) -> Iterator[Service]:
    """A Service over the sandbox — its cluster, OPA, Prometheus and the webhook's signing
    key — with a ledger of its own."""
    webhook_info(sandbox)
    ledger = Ledger(ledger_path)
    try:
        with Cluster.from_kubeconfig(sandbox.kubeconfig, timeout=20) as cluster:
            yield Service(
                cluster=cluster,
                policy=PolicyClient(sandbox.opa_url),
                ledger=ledger,
                key=signing_key(sandbox),
                kubeconfig=sandbox.kubeconfig,
                prometheus_url=sandbox.prometheus_url,
            )
    finally:
        ledger.close()


@pytest.fixture(scope="module")
def service(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    ensure_namespace(sandbox, NS, {"environment": "test"})
    with sandbox_service(sandbox, tmp_path_factory.mktemp("ledger") / "ledger.db") as service:
        yield service


@pytest.fixture(scope="module")
def app(service: Service) -> FastMCP:
    return build_app(service)


def deployment(sandbox: Sandbox, replicas: int = 2) -> dict[str, Any]:
    name = "m-" + uuid.uuid4().hex[:8]
    return create(sandbox, workload_manifest("Deployment", NS, name, replicas=replicas))


def accept(typed: str = "") -> Handler:
    async def handler(message: str, response_type: Any, params: Any, context: Any) -> Any:
        handler.messages.append(message)  # type: ignore[attr-defined]
        return {"approve": True, "namespace": typed}

    handler.messages = []  # type: ignore[attr-defined]
    return handler


def answer(action: str) -> Handler:
    async def handler(message: str, response_type: Any, params: Any, context: Any) -> Any:
        return ElicitResult(action=action)  # type: ignore[arg-type]

    return handler


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def call(
    app: FastMCP,
    tool: str,
    args: dict[str, Any],
    handler: Handler | None = None,
    *,
    legacy: bool = False,
) -> Any:
    kwargs: dict[str, Any] = {"client_info": CLIENT}
    if handler is not None:
        kwargs["elicitation_handler"] = handler
    if legacy:
        kwargs["mode"] = "legacy"
    async with Client(app, **kwargs) as client:
        result = await client.call_tool(tool, args)
        return result.structured_content


def preview_replicas(app: FastMCP, obj: dict[str, Any], replicas: int) -> dict[str, Any]:
    meta = obj["metadata"]
    edit = {
        "kind": "Deployment",
        "namespace": meta["namespace"],
        "name": meta["name"],
        "replicas": replicas,
        "reason": "test",
    }
    preview: dict[str, Any] = run(call(app, "preview_changes", {"edits": [edit]}))
    return preview


def live(sandbox: Sandbox, obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return get(sandbox, obj["kind"], meta["namespace"], meta["name"])


# --- the tools ----------------------------------------------------------------------------------


def test_tools_are_listed_with_truthful_annotations_and_schemas(app: FastMCP) -> None:
    async def tools() -> list[Any]:
        async with Client(app) as client:
            return list(await client.list_tools())

    listed = {t.name: t for t in run(tools())}
    read = {
        "get_cluster_state",
        "get_metrics",
        "scan_recommendations",
        "recommend_scaling",
        "preview_changes",
        "get_safety_report",
        "get_execution_history",
        "generate_report",
    }
    assert read | set(MUTATING_TOOLS) == set(listed)
    for name in read:
        assert listed[name].annotations.read_only_hint is True, name
        assert listed[name].output_schema is not None, name
    for name in ("apply_changes", "scale_workload", "rollback_changes"):
        hints = listed[name].annotations
        assert hints.read_only_hint is False and hints.destructive_hint is True, name
        assert hints.idempotent_hint is False, name
    assert listed["request_confirmation"].annotations.destructive_hint is False


def test_read_only_hides_and_refuses_the_mutating_tools(service: Service) -> None:
    read_only = Service(
        cluster=service.cluster,
        policy=service.policy,
        ledger=service.ledger,
        key=None,
        read_only=True,
    )
    app = build_app(read_only)

    async def go() -> tuple[set[str], str]:
        async with Client(app) as client:
            names = {t.name for t in await client.list_tools()}
            with pytest.raises(ToolError) as refused:
                await client.call_tool("apply_changes", {"change_set_id": "cs-" + "0" * 20})
            return names, str(refused.value)

    names, message = run(go())
    assert not names & set(MUTATING_TOOLS)
    assert "apply_changes" in message


def test_cluster_state_reads_workloads_hpas_and_capacity(app: FastMCP) -> None:
    state = run(call(app, "get_cluster_state", {"namespaces": ["shop-prod"]}))
    refs = {w["target"]["name"]: w for w in state["workloads"]}
    assert refs["web"]["hpa"] == "web"
    assert refs["postgres"]["target"]["kind"] == "StatefulSet"
    assert state["capacity"]["allocatable"]["cpu"] > 0


def test_metrics_and_scaling_come_from_prometheus(app: FastMCP) -> None:
    metrics = run(call(app, "get_metrics", {"namespaces": ["shop-prod"], "window_hours": 24 * 14}))
    by_target = {w["target"]: w for w in metrics["workloads"]}
    checkout = by_target["Deployment/shop-prod/checkout"]
    assert checkout["pods"] >= 1
    assert checkout["cpu_utilization"] is not None and checkout["cpu_utilization"] < 0.5
    scaling = run(call(app, "recommend_scaling", {"namespaces": ["shop-prod"]}))
    assert any(r["name"] == "web" and "hpa" in r for r in scaling["recommendations"])


# --- the full flow ------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [True, False], ids=["elicitation-create", "input-required"])
def test_scan_preview_confirm_apply_history_rollback(
    sandbox: Sandbox, app: FastMCP, service: Service, legacy: bool
) -> None:
    original = get(sandbox, "Deployment", "shop-staging", "api")
    original_resources = [
        c["resources"] for c in original["spec"]["template"]["spec"]["containers"]
    ]

    report = run(
        call(
            app,
            "scan_recommendations",
            {"filter": {"namespaces": ["shop-staging"], "min_severity": "OK"}},
        )
    )
    assert any(s["object"]["name"] == "api" for s in report["scans"])
    flt = {"namespaces": ["shop-staging"], "names": ["api"], "min_severity": "OK"}
    preview = run(call(app, "preview_changes", {"from_recommendations": flt}))
    cs = preview["change_set_id"]
    assert preview["policy"]["allowed"], preview["policy"]
    assert [d["admitted"] for d in preview["dry_run"]] == [True]
    assert any("sizeguard" in w for w in preview["dry_run"][0]["warnings"])  # the webhook's
    assert preview["diff"][0]["target"] == "Deployment/shop-staging/api"
    assert guarded_state(get(sandbox, "Deployment", "shop-staging", "api")) == guarded_state(
        original
    )

    handler = accept()
    confirmation = run(
        call(app, "request_confirmation", {"change_set_id": cs}, handler, legacy=legacy)
    )
    assert confirmation["status"] == "approved", confirmation
    assert cs in handler.messages[0] and "shop-staging/api" in handler.messages[0]

    execution = run(call(app, "apply_changes", {"change_set_id": cs}))
    assert execution["status"] == "applied", execution
    now = get(sandbox, "Deployment", "shop-staging", "api")
    stored = service.ledger.load_change_set(cs)
    assert guarded_state(now) == stored.changes[0].after
    token = now["metadata"]["annotations"][APPROVAL_ANNOTATION]
    keys = TrustedKeys.from_file(Path(webhook_info(sandbox)["jwks"]))

    def verify(old: dict[str, Any]) -> Any:
        return verify_transition(
            token,
            kind="Deployment",
            namespace="shop-staging",
            name="api",
            old_object=old,
            new_object=now,
            jwks=keys,
        )

    # The approval is for the version the executor read right before its write (controllers
    # write status meanwhile, so that is at or after the one this test read).
    claims = verify(original).claims
    assert claims is not None and claims.rv is not None
    assert int(claims.rv) >= int(original["metadata"]["resourceVersion"])
    at_approval = copy.deepcopy(original)
    at_approval["metadata"]["resourceVersion"] = claims.rv
    check = verify(at_approval)
    assert check.ok, check.message
    assert verify(now).code == "from_mismatch"  # good for one write: not for another

    history = run(call(app, "get_execution_history", {"change_set_id": cs}))
    events = [e["event"] for e in history["entries"]]
    assert "apply.completed" in events and "confirmation.accepted" in events
    assert history["audit_intact"]
    assert "shop-staging/api" in run(call(app, "generate_report", {}))["markdown"]

    outcome = run(call(app, "rollback_changes", {"change_set_id": cs}, accept(), legacy=legacy))
    assert outcome["confirmation"]["status"] == "approved", outcome["confirmation"]["message"]
    assert outcome["execution"]["status"] == "applied", outcome
    restored = get(sandbox, "Deployment", "shop-staging", "api")
    assert guarded_state(restored) == guarded_state(original)
    assert [
        c["resources"] for c in restored["spec"]["template"]["spec"]["containers"]
    ] == original_resources


# --- no human, no change ------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["decline", "cancel"])
@pytest.mark.parametrize("legacy", [True, False], ids=["elicitation-create", "input-required"])
def test_a_declined_or_cancelled_confirmation_changes_nothing(
    sandbox: Sandbox, app: FastMCP, service: Service, action: str, legacy: bool
) -> None:
    obj = deployment(sandbox)
    cs = preview_replicas(app, obj, 3)["change_set_id"]
    confirmation = run(
        call(app, "request_confirmation", {"change_set_id": cs}, answer(action), legacy=legacy)
    )
    assert confirmation["status"] == {"decline": "declined", "cancel": "cancelled"}[action]
    assert service.ledger.approvals(cs) == []
    assert run(call(app, "apply_changes", {"change_set_id": cs}))["status"] == "refused"
    assert live(sandbox, obj)["spec"]["replicas"] == 2


def test_apply_without_an_approval_is_refused(sandbox: Sandbox, app: FastMCP) -> None:
    obj = deployment(sandbox)
    cs = preview_replicas(app, obj, 3)["change_set_id"]
    execution = run(call(app, "apply_changes", {"change_set_id": cs}))
    assert execution["status"] == "refused"
    assert f"sizeguard approve {cs}" in execution["message"]
    assert live(sandbox, obj)["spec"]["replicas"] == 2


def test_an_invented_change_set_id_is_refused(app: FastMCP) -> None:
    with pytest.raises(ToolError, match="no change set"):
        run(call(app, "apply_changes", {"change_set_id": "cs-0123456789abcdef0123"}))
    with pytest.raises(ToolError):
        run(call(app, "apply_changes", {"change_set_id": "../../etc/passwd"}))


def test_an_approval_is_used_once(sandbox: Sandbox, app: FastMCP) -> None:
    obj = deployment(sandbox)
    cs = preview_replicas(app, obj, 3)["change_set_id"]
    assert (
        run(call(app, "request_confirmation", {"change_set_id": cs}, accept()))["status"]
        == "approved"
    )
    assert run(call(app, "apply_changes", {"change_set_id": cs}))["status"] == "applied"
    second = run(call(app, "apply_changes", {"change_set_id": cs}))
    assert second["status"] == "refused" and "already used" in second["message"]


def test_an_approval_does_not_cover_a_modified_change_set(
    sandbox: Sandbox, app: FastMCP, service: Service
) -> None:
    obj = deployment(sandbox)
    cs = preview_replicas(app, obj, 3)["change_set_id"]
    assert (
        run(call(app, "request_confirmation", {"change_set_id": cs}, accept()))["status"]
        == "approved"
    )
    other = preview_replicas(app, obj, 4)["change_set_id"]
    assert other != cs
    assert run(call(app, "apply_changes", {"change_set_id": other}))["status"] == "refused"
    # Editing the approved change set in the ledger file is detected: its content no longer
    # hashes to its id.
    db = sqlite3.connect(service.ledger.path)
    db.execute(
        "UPDATE change_sets SET canonical_json = replace(canonical_json, '\"replicas\":3', "
        "'\"replicas\":9') WHERE id = ?",
        (cs,),
    )
    db.commit()
    db.close()
    execution = run(call(app, "apply_changes", {"change_set_id": cs}))
    assert execution["status"] == "refused" and "modified" in execution["message"]
    assert live(sandbox, obj)["spec"]["replicas"] == 2


def test_a_client_that_cannot_elicit_is_told_to_use_sizeguard_approve(
    sandbox: Sandbox, app: FastMCP, service: Service
) -> None:
    obj = deployment(sandbox)
    cs = preview_replicas(app, obj, 3)["change_set_id"]
    for legacy in (True, False):
        confirmation = run(call(app, "request_confirmation", {"change_set_id": cs}, legacy=legacy))
        assert confirmation["status"] == "refused"
        assert f"sizeguard approve {cs}" in confirmation["message"]
    assert service.ledger.approvals(cs) == []


def test_a_round_trip_answer_needs_the_servers_single_use_state(
    sandbox: Sandbox, app: FastMCP, service: Service
) -> None:
    obj = deployment(sandbox)
    cs = preview_replicas(app, obj, 3)["change_set_id"]
    yes = {INPUT_KEY: WireElicitResult(action="accept", content={"approve": True, "namespace": ""})}

    async def go() -> list[Any]:
        async with Client(app, elicitation_handler=accept()) as client:
            session = client.session
            args = {"change_set_id": cs}
            # 1. an answer without any request state
            no_state = await session.call_tool(
                "request_confirmation", args, input_responses=yes, allow_input_required=True
            )
            # 2. a real state, answered once (approved) ...
            first = await session.call_tool("request_confirmation", args, allow_input_required=True)
            state = first.request_state
            used = await session.call_tool(
                "request_confirmation",
                args,
                input_responses=yes,
                request_state=state,
                allow_input_required=True,
            )
            # 3. ... and replayed
            replayed = await session.call_tool(
                "request_confirmation",
                args,
                input_responses=yes,
                request_state=state,
                allow_input_required=True,
            )
            return [no_state, first, used, replayed]

    no_state, first, used, replayed = run(go())
    assert no_state.structured_content["status"] == "refused"
    assert "request state" in no_state.structured_content["message"]
    assert first.result_type == "input_required"
    assert used.structured_content["status"] == "approved"
    assert replayed.structured_content["status"] == "refused"
    assert len(service.ledger.approvals(cs)) == 1


def test_two_concurrent_applies_exactly_one_wins(sandbox: Sandbox, app: FastMCP) -> None:
    obj = deployment(sandbox)
    cs = preview_replicas(app, obj, 3)["change_set_id"]
    assert (
        run(call(app, "request_confirmation", {"change_set_id": cs}, accept()))["status"]
        == "approved"
    )
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def one() -> None:
        barrier.wait()
        results.append(run(call(app, "apply_changes", {"change_set_id": cs})))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(r["status"] for r in results) == ["applied", "refused"]
    assert live(sandbox, obj)["spec"]["replicas"] == 3


def test_production_targets_go_to_the_approval_page(app: FastMCP, service: Service) -> None:
    """Typing the namespace in the client is not enough in production: an enrolled approver's
    passkey on the approval page is (test_approval_flow.py follows it through)."""
    edit = {
        "kind": "Deployment",
        "namespace": "shop-prod",
        "name": "worker",
        "container": "worker",
        "cpu_request": "220m",
        "reason": "test",
    }
    preview = run(call(app, "preview_changes", {"edits": [edit]}))
    cs = preview["change_set_id"]
    assert preview["typed_confirmation"] == ["shop-prod"]
    assert preview["policy"]["requires"] == ["authenticated_approver", "typed_confirmation"]
    typed = run(call(app, "request_confirmation", {"change_set_id": cs}, accept("shop-prod")))
    assert typed["status"] == "pending" and typed["approval_url"].endswith(f"/changes/{cs}")
    assert service.ledger.approvals(cs) == []


def test_replicas_of_a_workload_an_hpa_scales_are_refused(app: FastMCP) -> None:
    edit = {"kind": "Deployment", "namespace": "shop-prod", "name": "web", "replicas": 9}
    with pytest.raises(ToolError, match="scaled by the HPA"):
        run(call(app, "preview_changes", {"edits": [edit]}))
    scale = {"namespace": "shop-prod", "name": "web", "replicas": 9, "reason": "test"}
    with pytest.raises(ToolError, match="scaled by the HPA"):
        run(call(app, "scale_workload", scale, accept("shop-prod")))


# --- drift and partial failure ------------------------------------------------------------------


def test_drift_after_approval_refuses_and_changes_nothing(sandbox: Sandbox, app: FastMCP) -> None:
    obj = deployment(sandbox)
    cs = preview_replicas(app, obj, 3)["change_set_id"]
    assert (
        run(call(app, "request_confirmation", {"change_set_id": cs}, accept()))["status"]
        == "approved"
    )
    recreated = create(sandbox, workload_manifest("Deployment", NS, obj["metadata"]["name"]))
    execution = run(call(app, "apply_changes", {"change_set_id": cs}))
    assert execution["status"] == "refused" and "recreated" in execution["message"]
    assert live(sandbox, recreated)["spec"]["replicas"] == 2


def test_a_partial_failure_restores_what_was_applied(sandbox: Sandbox, service: Service) -> None:
    first, second, third = (deployment(sandbox) for _ in range(3))
    originals = {
        o["metadata"]["name"]: guarded_state(live(sandbox, o)) for o in (first, second, third)
    }
    doomed = sorted(originals)[1]  # applied in (namespace, kind, name) order: the middle one fails

    def delete_the_middle_one(change: ResourceChange) -> None:
        if change.target.name == doomed:
            sandbox.kube.http.delete(path_of("Deployment", NS, doomed))

    app = build_app(service, before_patch=delete_the_middle_one)
    edits = [
        {"kind": "Deployment", "namespace": NS, "name": name, "replicas": 4, "reason": "test"}
        for name in sorted(originals)
    ]
    cs = run(call(app, "preview_changes", {"edits": edits}))["change_set_id"]
    assert (
        run(call(app, "request_confirmation", {"change_set_id": cs}, accept()))["status"]
        == "approved"
    )
    execution = run(call(app, "apply_changes", {"change_set_id": cs}))

    assert execution["status"] == "failed_restored", execution
    outcome = {t["target"].rsplit("/", 1)[1]: t["result"] for t in execution["targets"]}
    names = sorted(originals)
    assert outcome == {names[0]: "restored", names[1]: "not_applied", names[2]: "unchanged"}
    assert "restored" in execution["message"]
    for name in (names[0], names[2]):
        assert guarded_state(get(sandbox, "Deployment", NS, name)) == originals[name]
    snapshots = service.ledger.snapshots(cs)
    assert {s.target.name for s in snapshots} == set(names)  # nothing lost
    events = [e.event for e in service.ledger.audit_entries(change_set_id=cs)]
    assert "apply.failed" in events and "rollback.target" in events
