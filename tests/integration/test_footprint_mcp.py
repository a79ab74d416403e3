"""Every footprint field, and HPA create and remove, end to end through the MCP server
(``fastmcp.Client``) against the real sandbox: previewed (OPA's decision and a server-side dry
run through the admission chain), confirmed by the human (the test's elicitation handler),
applied (signed, admitted by the webhook, verified) and rolled back.

An HPA cannot be removed before it is ``MIN_AGE_TO_DELETE_SECONDS`` (2 minutes) old, so the
module starts both clocks first — it creates one HPA through sizeguard and one directly — runs
the field tests while they tick, and polls the tools near the end until they accept the
removals.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from fastmcp.exceptions import ToolError
from mcp_types import Implementation

from sizeguard.approvals import (
    APPROVAL_ANNOTATION,
    MIN_AGE_TO_DELETE_SECONDS,
    TrustedKeys,
    verify_transition,
)
from sizeguard.changes import guarded_state
from sizeguard.server.app import build_app
from sizeguard.server.service import Service

from .conftest import Sandbox
from .test_mcp_server import sandbox_service
from .test_webhook import create, ensure_namespace, get, path_of, webhook_info, workload_manifest

NS = "footprint-it"
CLIENT = Implementation(name="sizeguard-footprint-tests", version="1.0")
HPA = "HorizontalPodAutoscaler"
RUNTIME_CLASS = "sizeguard-overhead"
# module state shared by the HPA tests at the start and at the end of the module
STATE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def service(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    ensure_namespace(sandbox, NS, {"environment": "test"})
    runtime_class = {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": RUNTIME_CLASS},
        "handler": "runc",
        "overhead": {"podFixed": {"cpu": "250m", "memory": "64Mi"}},
    }
    response = sandbox.kube.http.post("/apis/node.k8s.io/v1/runtimeclasses", json=runtime_class)
    assert response.status_code in (201, 409), response.text
    with sandbox_service(sandbox, tmp_path_factory.mktemp("ledger") / "ledger.db") as service:
        yield service


@pytest.fixture(scope="module")
def app(service: Service) -> FastMCP:
    return build_app(service)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def approve_all(handler_messages: list[str]) -> Callable[..., Any]:
    async def handler(message: str, response_type: Any, params: Any, context: Any) -> Any:
        handler_messages.append(message)
        return {"approve": True, "namespace": ""}

    return handler


async def _call(app: FastMCP, tool: str, args: dict[str, Any], handler: Any = None) -> Any:
    kwargs: dict[str, Any] = {"client_info": CLIENT}
    if handler is not None:
        kwargs["elicitation_handler"] = handler
    async with Client(app, **kwargs) as client:
        result = await client.call_tool(tool, args)
        return result.structured_content


def call(app: FastMCP, tool: str, args: dict[str, Any], handler: Any = None) -> Any:
    return run(_call(app, tool, args, handler))


def workload(sandbox: Sandbox, kind: str, **options: Any) -> dict[str, Any]:
    name = f"{kind[:2].lower()}-{uuid.uuid4().hex[:8]}"
    return create(sandbox, workload_manifest(kind, NS, name, **options))


def absent(sandbox: Sandbox, kind: str, name: str) -> bool:
    return bool(sandbox.kube.http.get(path_of(kind, NS, name)).status_code == 404)


def footprint(sandbox: Sandbox, kind: str, name: str) -> Any:
    return guarded_state(get(sandbox, kind, NS, name))


def preview(app: FastMCP, edit: dict[str, Any]) -> dict[str, Any]:
    """preview_changes of one edit, which the policy and the admission chain must accept."""
    result: dict[str, Any] = call(app, "preview_changes", {"edits": [{"reason": "test", **edit}]})
    assert result["policy"]["allowed"], result["policy"]
    assert [d["admitted"] for d in result["dry_run"]] == [True], result["dry_run"]
    return result


def confirm_and_apply(app: FastMCP, cs: str, shown: str) -> dict[str, Any]:
    """The human approves (and sees ``shown``), then apply_changes."""
    messages: list[str] = []
    confirmation = call(app, "request_confirmation", {"change_set_id": cs}, approve_all(messages))
    assert confirmation["status"] == "approved", confirmation
    assert shown in messages[0], messages[0]
    execution: dict[str, Any] = call(app, "apply_changes", {"change_set_id": cs})
    assert execution["status"] == "applied", execution
    return execution


def roll_back(app: FastMCP, cs: str, shown: str) -> dict[str, Any]:
    """rollback_changes: its own confirmation (showing ``shown``), then applied."""
    messages: list[str] = []
    outcome: dict[str, Any] = call(
        app, "rollback_changes", {"change_set_id": cs}, approve_all(messages)
    )
    assert outcome["confirmation"]["status"] == "approved", outcome["confirmation"]
    assert outcome["execution"]["status"] == "applied", outcome["execution"]
    assert shown in messages[0], messages[0]
    return outcome


def poll_until_accepted(attempt: Callable[[], Any], what: str) -> Any:
    """Call ``attempt`` until sizeguard stops refusing it for the HPA's age (its message says
    from when), at most a little longer than the minimum age."""
    deadline = time.monotonic() + MIN_AGE_TO_DELETE_SECONDS + 60
    while True:
        try:
            return attempt()
        except ToolError as exc:
            if "can be done from" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still refused for the HPA's age: {exc}") from None
        time.sleep(3)


def hpa_manifest(name: str, target: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": HPA,
        "metadata": {"name": name, "namespace": NS, "labels": {"team": "footprint"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": 2,
            "maxReplicas": 5,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 65},
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
        },
    }


# --- first: start the clocks of the two HPAs the end of the module removes ---------------------


def test_an_hpa_is_created_through_sizeguard(
    sandbox: Sandbox, app: FastMCP, service: Service
) -> None:
    # One HPA made directly (the removal test at the end), one made through sizeguard.
    target = workload(sandbox, "Deployment", replicas=2)["metadata"]["name"]
    existing = create(sandbox, hpa_manifest("fp-existing-" + uuid.uuid4().hex[:6], target))
    STATE["existing"] = existing

    scaled = workload(sandbox, "Deployment", replicas=2)["metadata"]["name"]
    name = "fp-new-" + uuid.uuid4().hex[:6]
    edit = {
        "action": "create",
        "kind": HPA,
        "namespace": NS,
        "name": name,
        "scale_target": {"kind": "Deployment", "name": scaled},
        "min_replicas": 2,
        "max_replicas": 4,
        "target_cpu_utilization": 70,
    }
    proposed = preview(app, edit)
    [diff] = proposed["diff"]
    assert diff["operation"] == "create"
    assert diff["lines"][0] == (
        f"created: HPA for apps/v1/Deployment/{scaled}, minReplicas 2, maxReplicas 4"
    )
    assert (diff["monthly_cost_before"], diff["monthly_cost_after"]) == (0, 0)
    assert absent(sandbox, HPA, name)  # the preview (a dry run) created nothing

    cs = proposed["change_set_id"]
    execution = confirm_and_apply(app, cs, "a new HPA can be removed only 2 minutes after")
    assert "can be removed from" in (execution["rollback_hint"] or "")
    made = get(sandbox, HPA, NS, name)
    assert guarded_state(made) == service.ledger.load_change_set(cs).changes[0].after
    assert made["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert [c.target.uid for c in service.ledger.created_objects(cs)] == [made["metadata"]["uid"]]
    check = verify_transition(
        made["metadata"]["annotations"][APPROVAL_ANNOTATION],
        kind=HPA,
        namespace=NS,
        name=name,
        old_object=None,
        new_object=made,
        jwks=TrustedKeys.from_file(Path(webhook_info(sandbox)["jwks"])),
    )
    assert check.ok and check.claims is not None and check.claims.op == "create", check.message
    STATE["created"] = (cs, name)


def test_a_young_hpa_cannot_be_removed_and_sizeguard_says_from_when(app: FastMCP) -> None:
    cs, name = STATE["created"]
    removal = {"action": "delete", "kind": HPA, "namespace": NS, "name": name}
    with pytest.raises(ToolError) as refused:
        call(app, "preview_changes", {"edits": [removal]})
    message = str(refused.value)
    assert "younger than 2 minutes cannot be removed" in message
    assert "so this can be done from 20" in message
    with pytest.raises(ToolError, match="can be done from"):
        call(app, "rollback_changes", {"change_set_id": cs}, approve_all([]))


def test_invalid_edits_are_refused_in_plain_words(app: FastMCP) -> None:
    bad = {"kind": "Deployment", "namespace": NS, "name": "x", "max_surge": "lots"}
    with pytest.raises(ToolError) as refused:
        call(app, "preview_changes", {"edits": [bad]})
    message = str(refused.value)
    assert message.startswith("sizeguard: invalid arguments for preview_changes: edits.0.max_surge")
    assert "input_value" not in message and "errors.pydantic.dev" not in message
    with pytest.raises(ToolError) as wrong:
        call(app, "preview_changes", {"edits": [{**bad, "max_surge": 1, "action": "delete"}]})
    assert "creates and removes HorizontalPodAutoscalers only" in str(wrong.value)


# --- each footprint field: preview, confirm, apply, roll back ----------------------------------


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


CASES: list[tuple[str, str, dict[str, Any], str, Callable[[dict[str, Any]], Any], Any]] = [
    (
        "pod-level resources",
        "Deployment",
        {"pod_level": True, "cpu_request": "500m", "memory_request": "256Mi", "cpu_limit": "1"},
        "pod-level resources: CPU request: unset → 500m",
        lambda o: _pod(o)["resources"],
        {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"cpu": "1"}},
    ),
    (
        "ephemeral-storage",
        "Deployment",
        {
            "container": "app",
            "other_requests": {"ephemeral-storage": "1Gi"},
            "other_limits": {"ephemeral-storage": "2Gi"},
        },
        "container app: ephemeral-storage request: unset → 1Gi",
        lambda o: _pod(o)["containers"][0]["resources"]["limits"],
        {"ephemeral-storage": "2Gi"},
    ),
    (
        "extended resource",
        "StatefulSet",
        {
            "container": "app",
            "other_requests": {"example.com/gpu": "1"},
            "other_limits": {"example.com/gpu": "1"},
        },
        "container app: example.com/gpu limit: unset → 1",
        lambda o: _pod(o)["containers"][0]["resources"]["limits"],
        {"example.com/gpu": "1"},
    ),
    (
        "sidecar",
        "Deployment",
        {"container": "setup", "restart_policy": "Always"},
        "init container setup: restartPolicy: unset → Always (a sidecar",
        lambda o: _pod(o)["initContainers"][0].get("restartPolicy"),
        "Always",
    ),
    (
        "runtimeClassName",
        "Deployment",
        {"runtime_class": RUNTIME_CLASS},
        f"runtimeClassName: unset → {RUNTIME_CLASS}",
        lambda o: _pod(o).get("runtimeClassName"),
        RUNTIME_CLASS,
    ),
    (
        "Recreate",
        "Deployment",
        {"strategy": "Recreate"},
        "rollout strategy: RollingUpdate → Recreate",
        lambda o: o["spec"]["strategy"],
        {"type": "Recreate"},
    ),
    (
        "maxSurge/maxUnavailable",
        "Deployment",
        {"max_surge": "50%", "max_unavailable": 0},
        "rollout maxSurge: 25% → 50%",
        lambda o: o["spec"]["strategy"]["rollingUpdate"],
        {"maxSurge": "50%", "maxUnavailable": 0},
    ),
    (
        "DaemonSet maxSurge",
        "DaemonSet",
        {"max_surge": 1, "max_unavailable": 0},
        "rollout maxSurge: 0 → 1",
        lambda o: o["spec"]["updateStrategy"]["rollingUpdate"],
        {"maxSurge": 1, "maxUnavailable": 0},
    ),
    (
        "DaemonSet OnDelete",
        "DaemonSet",
        {"strategy": "OnDelete"},
        "rollout strategy: RollingUpdate → OnDelete",
        lambda o: o["spec"]["updateStrategy"],
        {"type": "OnDelete"},
    ),
    (
        "minReadySeconds",
        "StatefulSet",
        {"min_ready_seconds": 30},
        "minReadySeconds: unset → 30",
        lambda o: o["spec"].get("minReadySeconds"),
        30,
    ),
    (
        "minReadySeconds",
        "DaemonSet",
        {"min_ready_seconds": 30},
        "minReadySeconds: unset → 30",
        lambda o: o["spec"].get("minReadySeconds"),
        30,
    ),
    (
        "terminationGracePeriodSeconds",
        "StatefulSet",
        {"termination_grace_period_seconds": 120},
        "terminationGracePeriodSeconds: 30 → 120 (+300%)",
        lambda o: _pod(o)["terminationGracePeriodSeconds"],
        120,
    ),
    (
        "resource claims",
        "Deployment",
        {"resource_claims": {"gpu": "template:one-gpu"}, "container": "app", "claims": ["gpu"]},
        "resource claim gpu: unset → template:one-gpu",
        lambda o: (_pod(o)["resourceClaims"], _pod(o)["containers"][0]["resources"]["claims"]),
        ([{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}], [{"name": "gpu"}]),
    ),
    (
        "progressDeadlineSeconds",
        "Deployment",
        {"progress_deadline_seconds": 1200, "min_ready_seconds": 10},
        "progressDeadlineSeconds: 600 → 1200 (+100%)",
        lambda o: (o["spec"]["progressDeadlineSeconds"], o["spec"]["minReadySeconds"]),
        (1200, 10),
    ),
]


@pytest.mark.parametrize(
    ("field", "kind", "edit", "shown", "read", "expected"),
    CASES,
    ids=[f"{c[0]}-{c[1]}" for c in CASES],
)
def test_a_footprint_field_is_previewed_confirmed_applied_and_rolled_back(
    sandbox: Sandbox,
    app: FastMCP,
    service: Service,
    field: str,
    kind: str,
    edit: dict[str, Any],
    shown: str,
    read: Callable[[dict[str, Any]], Any],
    expected: Any,
) -> None:
    obj = workload(sandbox, kind, init=True, replicas=1)
    name = obj["metadata"]["name"]
    original = footprint(sandbox, kind, name)

    proposed = preview(app, {"kind": kind, "namespace": NS, "name": name, **edit})
    assert any(shown in line for line in proposed["diff"][0]["lines"]), proposed["diff"]
    assert footprint(sandbox, kind, name) == original  # a preview changes nothing
    cs = proposed["change_set_id"]

    confirm_and_apply(app, cs, shown)
    now = get(sandbox, kind, NS, name)
    assert guarded_state(now) == service.ledger.load_change_set(cs).changes[0].after
    assert read(now) == expected
    assert APPROVAL_ANNOTATION in now["metadata"]["annotations"]  # admitted with its approval

    roll_back(app, cs, shown.split(":")[0])
    assert footprint(sandbox, kind, name) == original
    sandbox.kube.http.delete(path_of(kind, NS, name))


def test_the_history_records_every_apply_and_rollback(app: FastMCP) -> None:
    history = call(app, "get_execution_history", {"limit": 1000})
    events = [e["event"] for e in history["entries"]]
    assert events.count("rollback.completed") >= len(CASES)
    assert history["audit_intact"]


# --- last: the HPAs are old enough to be removed -----------------------------------------------


def test_an_hpa_is_removed_and_its_rollback_creates_it_again(
    sandbox: Sandbox, app: FastMCP, service: Service
) -> None:
    existing = STATE["existing"]
    name = existing["metadata"]["name"]
    target = existing["spec"]["scaleTargetRef"]["name"]
    removal = {"action": "delete", "kind": HPA, "namespace": NS, "name": name}
    proposed = poll_until_accepted(lambda: preview(app, removal), f"removing {name}")
    [diff] = proposed["diff"]
    assert diff["operation"] == "delete"
    assert diff["lines"][0].startswith(f"deleted (was: HPA for apps/v1/Deployment/{target}")
    assert get(sandbox, HPA, NS, name)["metadata"]["uid"] == existing["metadata"]["uid"]  # dry run
    cs = proposed["change_set_id"]
    replicas = get(sandbox, "Deployment", NS, target)["spec"]["replicas"]

    confirm_and_apply(app, cs, "nothing autoscales it any more")
    assert absent(sandbox, HPA, name)
    assert get(sandbox, "Deployment", NS, target)["spec"]["replicas"] == replicas
    snapshot = service.ledger.snapshots(cs)[0]
    assert snapshot.target.uid == existing["metadata"]["uid"]

    roll_back(app, cs, "created: HPA for")
    again = get(sandbox, HPA, NS, name)
    assert again["metadata"]["uid"] != existing["metadata"]["uid"]
    assert again["metadata"]["labels"] == existing["metadata"]["labels"]
    for key in ("scaleTargetRef", "minReplicas", "maxReplicas", "metrics"):
        assert again["spec"][key] == existing["spec"][key], key
    assert (
        again["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
        == existing["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
    )


def test_a_created_hpa_is_rolled_back_once_it_may_be_removed(
    sandbox: Sandbox, app: FastMCP, service: Service
) -> None:
    cs, name = STATE["created"]
    uid = get(sandbox, HPA, NS, name)["metadata"]["uid"]
    outcome = poll_until_accepted(
        lambda: roll_back(app, cs, "deleted (was: HPA for"), f"rolling back {cs}"
    )
    [change] = service.ledger.load_change_set(outcome["change_set_id"]).changes
    assert (change.operation, change.target.uid) == ("delete", uid)  # that very HPA
    assert outcome["execution"]["targets"][0]["message"] == "deleted"
    assert absent(sandbox, HPA, name)
