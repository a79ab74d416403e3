"""The executor's order of operations and its failure handling, on plain data.

The cluster here is a dictionary that applies sizeguard's strategic-merge patches the way the
apiserver does for the shapes sizeguard sends, honours ``metadata.resourceVersion``
preconditions (409), creates HPAs (409 when the name is taken) and deletes them with uid and
resourceVersion preconditions, which is all the executor relies on. What the real apiserver
and webhook do is tested in ``tests/integration/test_mcp_server.py`` and
``test_footprint_mcp.py``; these tests pin the cases that are hard to provoke there: a write
that lands and then times out, an exception of our own halfway, another writer between
sizeguard's read and its write, a restore that would overwrite someone, and HPAs created and
removed on the way.
"""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sizeguard.approvals import APPROVAL_ANNOTATION, CREATE_TTL_SECONDS, generate_signing_key
from sizeguard.changes import (
    ChangeSet,
    ResourceChange,
    Target,
    guarded_state,
    hpa_object,
    target_of,
)
from sizeguard.cluster import ClusterError, PatchResult
from sizeguard.ledger import Ledger
from sizeguard.policy import ChangesetDecision, Finding, PolicyClient
from sizeguard.server import executor
from sizeguard.server.service import Service, ServiceError

from .test_cluster_patch import merge

NS = "shop"
HPA = "HorizontalPodAutoscaler"


def deployment(name: str, cpu: str = "100m") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "image": "app:1", "resources": {"requests": {"cpu": cpu}}}
                    ]
                }
            },
        },
    }


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hpa(name: str, *, age: float = 3600, max_replicas: int = 6) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": HPA,
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "resourceVersion": "1",
            "creationTimestamp": _iso(time.time() - age),
            "labels": {"team": "shop"},
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a"},
            "minReplicas": 2,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 60},
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 120}},
        },
    }


class FakeCluster:
    """Objects by (kind, name); writes behave the way the apiserver's do for sizeguard's."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = {(o["kind"], o["metadata"]["name"]): copy.deepcopy(o) for o in objects}
        self.version = 1
        self.uids = 0
        self.patches: list[str] = []
        self.writes: list[tuple[str, str]] = []  # (verb, name), in order
        # name -> what to do after storing a write of it (e.g. raise a timeout)
        self.after_store: dict[str, Callable[[], None]] = {}
        # names whose next patch fails with a 500 before anything is stored
        self.refuse_next: dict[str, bool] = {}
        # names whose next DELETE is denied (after its annotation patch was stored)
        self.deny_delete: set[str] = set()

    def obj(self, name: str, kind: str = "Deployment") -> dict[str, Any]:
        return self.objects[(kind, name)]

    def read_live(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        if (kind, name) not in self.objects:
            raise ClusterError("not_found", f"{kind} {namespace}/{name} does not exist")
        return copy.deepcopy(self.objects[(kind, name)])

    def read_object(self, target: Any) -> dict[str, Any]:
        obj = self.read_live(target.kind, target.namespace, target.name)
        if obj["metadata"]["uid"] != target.uid:
            raise ClusterError("not_found", f"{target.ref()} was deleted and recreated")
        return obj

    def write(self, name: str, cpu: str) -> None:
        """Another writer (a person with kubectl, a controller) sets the CPU request."""
        obj = self.obj(name)
        obj["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = cpu
        self._bump(obj)

    def status_write(self, name: str, kind: str = "Deployment") -> None:
        """A controller updates the status: a new resourceVersion, the same generation."""
        self.version += 1
        self.obj(name, kind)["metadata"]["resourceVersion"] = str(self.version)

    def _bump(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        if "generation" in obj["metadata"]:
            obj["metadata"]["generation"] += 1

    def _stored(self, name: str) -> None:
        hook = self.after_store.pop(name, None)
        if hook is not None:
            hook()

    def apply_patch(self, target: Any, body: dict[str, Any], *, dry_run: bool = False) -> Any:
        assert not dry_run
        obj = self.objects.get((target.kind, target.name))
        if obj is None:
            raise ClusterError("not_found", f"{target.ref()} does not exist")
        wanted = body.get("metadata", {}).get("resourceVersion")
        if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
            raise ClusterError("conflict", f"{target.ref()} changed meanwhile", status=409)
        if self.refuse_next.pop(target.name, False):
            raise ClusterError("server_error", f"cannot patch {target.ref()}: HTTP 500")
        merged = merge(obj, body)
        obj.clear()
        obj.update(merged)
        self._bump(obj)
        self.patches.append(target.name)
        self.writes.append(("patch", target.name))
        self._stored(target.name)
        return PatchResult(object=copy.deepcopy(obj), warnings=[], dry_run=False)

    def create_hpa(self, target: Any, body: dict[str, Any], *, dry_run: bool = False) -> Any:
        assert not dry_run
        name = body["metadata"]["name"]
        if (HPA, name) in self.objects:
            raise ClusterError("conflict", f"{target.ref()} already exists", status=409)
        self.uids += 1
        self.version += 1
        obj = copy.deepcopy(body)
        obj["metadata"].update(
            uid=f"uid-{name}-{self.uids}",
            resourceVersion=str(self.version),
            creationTimestamp=_iso(time.time()),
        )
        self.objects[(HPA, name)] = obj
        self.writes.append(("create", name))
        self._stored(name)
        return PatchResult(object=copy.deepcopy(obj), warnings=[], dry_run=False)

    def delete_hpa(
        self,
        target: Any,
        *,
        resource_version: str,
        approval_token: str | None,
        dry_run: bool = False,
    ) -> Any:
        assert not dry_run and approval_token
        body = {
            "metadata": {
                "resourceVersion": resource_version,
                "annotations": {APPROVAL_ANNOTATION: approval_token},
            }
        }
        annotated = self.apply_patch(target, body).object
        if target.name in self.deny_delete:
            self.deny_delete.discard(target.name)
            raise ClusterError("denied", f"the cluster refused to delete {target.ref()}")
        obj = self.objects.get((HPA, target.name))
        if obj is None:
            raise ClusterError("not_found", f"{target.ref()} does not exist")
        if (obj["metadata"]["uid"], obj["metadata"]["resourceVersion"]) != (
            target.uid,
            annotated["metadata"]["resourceVersion"],
        ):
            raise ClusterError("conflict", "Precondition failed", status=409)
        del self.objects[(HPA, target.name)]
        self.writes.append(("delete", target.name))
        self._stored(target.name)
        return PatchResult(
            object={"kind": "Status", "status": "Success"}, warnings=[], dry_run=False
        )


class FakeService(Service):
    """The real service over the fake cluster, with the policy decision given as data."""

    decision: ChangesetDecision

    def decide(self, change_set: ChangeSet) -> ChangesetDecision:
        return self.decision


ALLOW = ChangesetDecision(allowed=True, risk="low", violations=[], warnings=[], requires=[])


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.db") as ledger:
        yield ledger


def make_service(ledger: Ledger, cluster: FakeCluster) -> FakeService:
    service = FakeService(
        cluster=cluster,  # type: ignore[arg-type]
        policy=PolicyClient("http://127.0.0.1:9"),
        ledger=ledger,
        key=generate_signing_key(),
    )
    service.decision = ALLOW
    return service


def approved(service: Service, *names: str, cpu: str = "250m", typed: tuple[str, ...] = ()) -> str:
    """A change set raising the CPU request of ``names``, stored and approved by a human."""
    changes = []
    for name in names:
        live = service.cluster.read_live("Deployment", NS, name)
        after = copy.deepcopy(live)
        after["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = cpu
        changes.append(
            ResourceChange(
                target=target_of(live),
                before=guarded_state(live),
                after=guarded_state(after),
                reason="test",
                source="edit",
            )
        )
    change_set = ChangeSet(changes=changes)
    service.ledger.put_change_set(change_set, source="edit")
    service.ledger.record_approval(change_set.id, "apply", "human", typed_namespaces=typed)
    return change_set.id


def cpu(cluster: FakeCluster, name: str) -> str:
    containers = cluster.obj(name)["spec"]["template"]["spec"]["containers"]
    return str(containers[0]["resources"]["requests"]["cpu"])


def events(ledger: Ledger, cs_id: str) -> list[tuple[str, str]]:
    return [(e.event, e.result) for e in ledger.audit_entries(change_set_id=cs_id)]


def test_a_clean_apply_patches_every_target_conditionally(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"), deployment("b"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a", "b")
    result = executor.apply_change_set(service, cs_id, actor="mcp:test")
    assert result.status == "applied"
    assert (cpu(cluster, "a"), cpu(cluster, "b")) == ("250m", "250m")
    assert "sizeguard.io/approval" in cluster.obj("a")["metadata"]["annotations"]
    assert ("apply.completed", "applied") in events(ledger, cs_id)


def test_an_unexpected_exception_halfway_restores_what_was_applied(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"), deployment("b"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a", "b")

    def boom(change: ResourceChange) -> None:
        if change.target.name == "b":
            raise RuntimeError("something of our own broke")

    result = executor.apply_change_set(service, cs_id, actor="mcp:test", before_patch=boom)
    assert result.status == "failed_restored"
    assert (cpu(cluster, "a"), cpu(cluster, "b")) == ("100m", "100m")
    outcome = {t.target: t.result for t in result.targets}
    assert outcome == {"Deployment/shop/a": "restored", "Deployment/shop/b": "not_applied"}
    assert "internal error (RuntimeError)" in result.message
    assert ("apply.failed", "failed_restored") in events(ledger, cs_id)


def test_a_patch_that_landed_then_timed_out_is_restored_too(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"), deployment("b"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a", "b")

    def timeout() -> None:
        raise ClusterError("timeout", "no answer from the API server in time")

    cluster.after_store["b"] = timeout
    result = executor.apply_change_set(service, cs_id, actor="mcp:test")
    assert result.status == "failed_restored"
    assert (cpu(cluster, "a"), cpu(cluster, "b")) == ("100m", "100m")
    assert {t.target: t.result for t in result.targets}["Deployment/shop/b"] == "restored"


def test_a_timeout_before_the_patch_landed_leaves_the_target_alone(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a")

    def unreachable(change: ResourceChange) -> None:
        raise ClusterError("timeout", "no answer from the API server in time")

    result = executor.apply_change_set(service, cs_id, actor="mcp:test", before_patch=unreachable)
    assert result.status == "failed_restored"
    assert cpu(cluster, "a") == "100m"
    assert cluster.patches == []


def test_another_writer_between_read_and_patch_gets_a_conflict_not_an_overwrite(
    ledger: Ledger,
) -> None:
    cluster = FakeCluster(deployment("a"), deployment("b"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a", "b")

    def someone_writes_b(change: ResourceChange) -> None:
        if change.target.name == "b":
            cluster.write("b", "333m")

    result = executor.apply_change_set(
        service, cs_id, actor="mcp:test", before_patch=someone_writes_b
    )
    assert result.status == "failed_restored"
    assert (cpu(cluster, "a"), cpu(cluster, "b")) == ("100m", "333m")
    assert cluster.patches == ["a", "a"]  # a applied, a restored; b never written


def test_a_status_write_between_read_and_patch_is_retried_not_a_failure(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"), deployment("b"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a", "b")

    def controller_writes_status(change: ResourceChange) -> None:
        cluster.status_write(change.target.name)

    result = executor.apply_change_set(
        service, cs_id, actor="mcp:test", before_patch=controller_writes_status
    )
    assert result.status == "applied"
    assert (cpu(cluster, "a"), cpu(cluster, "b")) == ("250m", "250m")


def test_a_restore_never_overwrites_what_someone_else_wrote(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"), deployment("b"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a", "b")

    def someone_writes_a_then_b_fails(change: ResourceChange) -> None:
        if change.target.name == "b":
            cluster.write("a", "444m")
            raise ClusterError("denied", "the cluster refused to patch b")

    result = executor.apply_change_set(
        service, cs_id, actor="mcp:test", before_patch=someone_writes_a_then_b_fails
    )
    assert result.status == "failed_not_restored"
    assert cpu(cluster, "a") == "444m"
    outcome = {t.target: t for t in result.targets}
    assert outcome["Deployment/shop/a"].result == "restore_failed"
    assert "someone else changed it" in outcome["Deployment/shop/a"].message
    assert "rollback_changes" in result.message


def test_a_failing_audit_log_does_not_stop_the_restore(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = FakeCluster(deployment("a"), deployment("b"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a", "b")
    real_append = ledger.append_audit

    def failing_append(**entry: Any) -> Any:
        if entry.get("event") == "apply.target":
            raise OSError("disk full")
        return real_append(**entry)

    monkeypatch.setattr(ledger, "append_audit", failing_append)

    def boom(change: ResourceChange) -> None:
        if change.target.name == "b":
            raise ClusterError("denied", "the cluster refused to patch b")

    result = executor.apply_change_set(service, cs_id, actor="mcp:test", before_patch=boom)
    assert result.status == "failed_restored"
    assert cpu(cluster, "a") == "100m"


def test_a_failed_apply_whose_restore_failed_can_be_rolled_back_later(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"), deployment("b"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a", "b")

    def b_fails_and_so_will_restoring_a(change: ResourceChange) -> None:
        if change.target.name == "b":
            cluster.refuse_next["a"] = True
            raise ClusterError("denied", "the cluster refused to patch b")

    result = executor.apply_change_set(
        service, cs_id, actor="mcp:test", before_patch=b_fails_and_so_will_restoring_a
    )
    assert result.status == "failed_not_restored"
    assert cpu(cluster, "a") == "250m"
    rollback = executor.rollback_change_set(service, cs_id, actor="mcp:test")
    assert [c.target.name for c in rollback.change_set.changes] == ["a"]
    assert rollback.change_set.changes[0].after == guarded_state(deployment("a"))
    assert rollback.skipped == []


def test_a_rollback_leaves_out_what_someone_else_changed_since(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"), deployment("b"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a", "b")
    assert executor.apply_change_set(service, cs_id, actor="mcp:test").status == "applied"
    cluster.write("b", "999m")  # another (approved) change of b since
    rollback = executor.rollback_change_set(service, cs_id, actor="mcp:test")
    assert [c.target.name for c in rollback.change_set.changes] == ["a"]
    assert len(rollback.skipped) == 1 and "Deployment/shop/b" in rollback.skipped[0]
    cluster.write("a", "888m")
    with pytest.raises(ServiceError, match="nothing to roll back"):
        executor.rollback_change_set(service, cs_id, actor="mcp:test")


def test_a_patch_whose_answer_was_lost_cannot_land_after_the_restore(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"), deployment("b"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a", "b")
    sent: list[tuple[Any, dict[str, Any]]] = []
    real_apply = cluster.apply_patch

    def lose_the_answer_for_b(target: Any, body: dict[str, Any], *, dry_run: bool = False) -> Any:
        if target.name == "b" and not sent:
            sent.append((target, body))  # the API server has it but has not stored it yet
            raise ClusterError("timeout", "no answer from the API server in time")
        return real_apply(target, body, dry_run=dry_run)

    cluster.apply_patch = lose_the_answer_for_b  # type: ignore[method-assign]
    result = executor.apply_change_set(service, cs_id, actor="mcp:test")
    assert result.status == "failed_restored"
    assert (cpu(cluster, "a"), cpu(cluster, "b")) == ("100m", "100m")
    fenced = cluster.obj("b")["metadata"]["annotations"]
    assert fenced == {executor.FENCE_ANNOTATION: cs_id}
    # The lost patch now reaches the store: its precondition no longer holds.
    target, body = sent[0]
    with pytest.raises(ClusterError) as late:
        real_apply(target, body)
    assert late.value.kind == "conflict"
    assert cpu(cluster, "b") == "100m"


def test_an_object_without_a_resource_version_is_not_written(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a")
    del cluster.obj("a")["metadata"]["resourceVersion"]
    result = executor.apply_change_set(service, cs_id, actor="mcp:test")
    assert result.status == "failed_restored"
    assert "without a resourceVersion" in result.message
    assert cluster.patches == []


def test_production_namespaces_the_human_did_not_type_refuse_the_apply(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a")  # approved while the namespace was not production
    service.decision = ChangesetDecision(
        allowed=True,
        risk="high",
        violations=[],
        warnings=[
            Finding(
                code="production_namespace",
                target=f"Deployment/{NS}/a",
                message="shop is a production namespace",
            )
        ],
        requires=["typed_confirmation"],
    )
    result = executor.apply_change_set(service, cs_id, actor="mcp:test")
    assert result.status == "refused"
    assert "typed_confirmation" in result.message
    assert cluster.patches == []


def test_the_namespaces_the_human_typed_are_enough(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a", typed=(NS,))
    service.decision = ChangesetDecision(
        allowed=True,
        risk="high",
        violations=[],
        warnings=[Finding(code="production_namespace", target=f"Deployment/{NS}/a", message="")],
        requires=["typed_confirmation"],
    )
    assert executor.apply_change_set(service, cs_id, actor="mcp:test").status == "applied"


def test_a_spare_approval_cannot_apply_again_after_a_rollback(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a")
    ledger.record_approval(cs_id, "apply", "human")  # approved twice (MCP and terminal)
    assert executor.apply_change_set(service, cs_id, actor="mcp:test").status == "applied"
    rollback = executor.rollback_change_set(service, cs_id, actor="mcp:test").change_set
    ledger.record_approval(rollback.id, "rollback", "human")
    assert executor.apply_change_set(service, rollback.id, actor="mcp:test").status == "applied"
    assert cpu(cluster, "a") == "100m"
    again = executor.apply_change_set(service, cs_id, actor="mcp:test")
    assert again.status == "refused"
    assert cpu(cluster, "a") == "100m"
    assert ("approval.cancelled", "superseded") in events(ledger, cs_id)


def test_a_read_only_service_applies_nothing(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a")
    service.read_only = True
    with pytest.raises(ServiceError, match="read-only"):
        executor.apply_change_set(service, cs_id, actor="mcp:test")
    assert cluster.patches == []


def test_a_rollback_cannot_be_rolled_back(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a")
    executor.apply_change_set(service, cs_id, actor="mcp:test")
    rollback = executor.rollback_change_set(service, cs_id, actor="mcp:test").change_set
    ledger.record_approval(rollback.id, "rollback", "human")
    executor.apply_change_set(service, rollback.id, actor="mcp:test")
    with pytest.raises(ServiceError, match="itself a rollback"):
        executor.rollback_change_set(service, rollback.id, actor="mcp:test")


def test_a_change_set_never_applied_has_nothing_to_roll_back(ledger: Ledger) -> None:
    service = make_service(ledger, FakeCluster(deployment("a")))
    cs_id = approved(service, "a")
    with pytest.raises(ServiceError, match="never applied"):
        executor.rollback_change_set(service, cs_id, actor="mcp:test")


# --- approvals are bound to the object version -------------------------------------------------


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    result: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return result


def test_each_approval_is_bound_to_the_resource_version_it_was_written_against(
    ledger: Ledger,
) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    cs_id = approved(service, "a")
    versions: list[str] = []

    def controller_writes_status_once(change: ResourceChange) -> None:
        cluster.status_write("a")
        versions.append(cluster.obj("a")["metadata"]["resourceVersion"])

    result = executor.apply_change_set(
        service, cs_id, actor="mcp:test", before_patch=controller_writes_status_once
    )
    assert result.status == "applied"
    token = cluster.obj("a")["metadata"]["annotations"][APPROVAL_ANNOTATION]
    # minted again for the version the status write left, after the first patch got a 409
    assert claims(token)["rv"] == versions[0]
    assert claims(token)["op"] == "apply" and "gen" not in claims(token)


# --- creating and removing HPAs ----------------------------------------------------------------

SPEC = hpa("x")["spec"]
NEW = Target(api_version="autoscaling/v2", kind=HPA, namespace=NS, name="new", uid=None)


def creation(name: str = "new", max_replicas: int = 6) -> ResourceChange:
    target = NEW.model_copy(update={"name": name})
    spec = {**SPEC, "maxReplicas": max_replicas}
    return ResourceChange(
        target=target,
        before=None,
        after=guarded_state(hpa_object(target, spec)),
        reason="test",
        source="edit",
        create_spec=spec,
    )


def removal(live: dict[str, Any]) -> ResourceChange:
    return ResourceChange(
        target=target_of(live), before=guarded_state(live), after=None, reason="test", source="edit"
    )


def resize(live: dict[str, Any], cpu: str = "250m") -> ResourceChange:
    after = copy.deepcopy(live)
    after["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = cpu
    return ResourceChange(
        target=target_of(live),
        before=guarded_state(live),
        after=guarded_state(after),
        reason="test",
        source="edit",
    )


def approve(service: Service, *changes: ResourceChange) -> str:
    change_set = ChangeSet(changes=list(changes))
    service.ledger.put_change_set(change_set, source="edit")
    service.ledger.record_approval(change_set.id, "apply", "human")
    return change_set.id


def age(cluster: FakeCluster, name: str, seconds: float) -> None:
    """Make the HPA ``name`` as old as ``seconds``."""
    cluster.obj(name, HPA)["metadata"]["creationTimestamp"] = _iso(time.time() - seconds)


def test_a_create_makes_the_hpa_with_its_approval_and_records_it(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    cs_id = approve(service, creation())
    result = executor.apply_change_set(service, cs_id, actor="mcp:test")
    assert result.status == "applied", result.message
    made = cluster.obj("new", HPA)
    assert guarded_state(made) == creation().after
    assert made["spec"]["behavior"] == SPEC["behavior"]
    token = claims(made["metadata"]["annotations"][APPROVAL_ANNOTATION])
    assert (token["op"], token["rv"], token["from"], token["target"]["uid"]) == (
        "create",
        None,
        None,
        None,
    )
    assert token["exp"] - token["iat"] == CREATE_TTL_SECONDS
    assert [c.target for c in ledger.created_objects(cs_id)] == [target_of(made)]
    assert result.targets[0].message == f"created (uid {made['metadata']['uid']}) and verified"
    assert result.rollback_hint is not None and "can be removed from" in result.rollback_hint


def test_a_delete_carries_its_approval_on_the_object_and_is_conditional(ledger: Ledger) -> None:
    cluster = FakeCluster(hpa("h"))
    service = make_service(ledger, cluster)
    cs_id = approve(service, removal(hpa("h")))

    def hpa_controller_writes_status(change: ResourceChange) -> None:
        cluster.status_write("h", HPA)  # the first annotation patch gets a 409

    result = executor.apply_change_set(
        service, cs_id, actor="mcp:test", before_patch=hpa_controller_writes_status
    )
    assert result.status == "applied", result.message
    assert ("HorizontalPodAutoscaler", "h") not in cluster.objects
    assert cluster.writes == [("patch", "h"), ("delete", "h")]
    assert result.targets[0].message == "deleted"
    snapshot = ledger.get_snapshot(cs_id, target_of(hpa("h")))
    assert snapshot is not None and snapshot.object["spec"] == hpa("h")["spec"]


def test_a_young_hpa_is_not_removed(ledger: Ledger) -> None:
    cluster = FakeCluster(hpa("h", age=30))
    service = make_service(ledger, cluster)
    cs_id = approve(service, removal(cluster.read_live(HPA, NS, "h")))
    result = executor.apply_change_set(service, cs_id, actor="mcp:test")
    assert result.status == "refused"
    assert "too_young" in result.message and "can be done from" in result.message
    assert cluster.writes == []


def test_a_create_whose_name_is_taken_is_drift(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    cs_id = approve(service, creation("h"))
    cluster.objects[(HPA, "h")] = hpa("h")
    result = executor.apply_change_set(service, cs_id, actor="mcp:test")
    assert result.status == "refused" and "HorizontalPodAutoscaler/shop/h exists already" in (
        result.message
    )
    assert cluster.writes == []


def test_updates_then_deletes_then_creates(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("z"), hpa("a"))
    service = make_service(ledger, cluster)
    cs_id = approve(service, creation("b"), removal(hpa("a")), resize(deployment("z")))
    assert executor.apply_change_set(service, cs_id, actor="mcp:test").status == "applied"
    assert cluster.writes == [("patch", "z"), ("patch", "a"), ("delete", "a"), ("create", "b")]


def test_a_failure_after_a_delete_creates_it_again_from_its_snapshot(ledger: Ledger) -> None:
    cluster = FakeCluster(hpa("h"))
    service = make_service(ledger, cluster)
    cs_id = approve(service, removal(hpa("h")), creation("new"))

    def refuse_the_create(change: ResourceChange) -> None:
        if change.operation == "create":
            raise ClusterError("denied", "the cluster refused to create it")

    result = executor.apply_change_set(
        service, cs_id, actor="mcp:test", before_patch=refuse_the_create
    )
    assert result.status == "failed_restored", result.message
    again = cluster.obj("h", HPA)
    assert guarded_state(again) == guarded_state(hpa("h"))
    assert again["spec"] == hpa("h")["spec"]
    assert again["metadata"]["labels"] == {"team": "shop"}
    assert again["metadata"]["uid"] != "uid-h"
    token = claims(again["metadata"]["annotations"][APPROVAL_ANNOTATION])
    assert (token["op"], token["cs"]) == ("create", cs_id)
    outcome = {t.target: t for t in result.targets}
    assert "created again from its snapshot" in outcome["HorizontalPodAutoscaler/shop/h"].message
    assert ("HorizontalPodAutoscaler", "new") not in cluster.objects


def test_a_delete_refused_after_its_approval_was_written_loses_that_approval(
    ledger: Ledger,
) -> None:
    cluster = FakeCluster(hpa("h"))
    service = make_service(ledger, cluster)
    cs_id = approve(service, removal(hpa("h")))
    cluster.deny_delete.add("h")
    result = executor.apply_change_set(service, cs_id, actor="mcp:test")
    assert result.status == "failed_restored", result.message
    annotations = cluster.obj("h", HPA)["metadata"]["annotations"]
    assert APPROVAL_ANNOTATION not in annotations  # nobody can use it to delete the HPA later
    assert annotations[executor.FENCE_ANNOTATION] == cs_id


def test_a_created_hpa_cannot_be_restored_at_once_and_the_report_says_when(
    ledger: Ledger,
) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    cs_id = approve(service, resize(deployment("a")), creation("h1"), creation("h2"))

    def refuse_the_second_create(change: ResourceChange) -> None:
        if change.target.name == "h2":
            raise ClusterError("denied", "the cluster refused to create it")

    result = executor.apply_change_set(
        service, cs_id, actor="mcp:test", before_patch=refuse_the_second_create
    )
    assert result.status == "failed_not_restored"
    assert cpu(cluster, "a") == "100m"  # the update was restored
    outcome = {t.target.rsplit("/", 1)[1]: t for t in result.targets}
    assert outcome["a"].result == "restored"
    assert outcome["h2"].result == "not_applied"
    assert outcome["h1"].result == "restore_failed"
    assert "younger than 2 minutes" in outcome["h1"].message
    assert f"rollback_changes('{cs_id}') removes it" in outcome["h1"].message
    assert not outcome["h1"].message.startswith("could not restore")
    assert [c.target.name for c in ledger.created_objects(cs_id)] == ["h1"]
    # Once it is old enough, the rollback removes exactly that HPA.
    age(cluster, "h1", 121)
    rollback = executor.rollback_change_set(service, cs_id, actor="mcp:test").change_set
    assert [(c.target.name, c.operation) for c in rollback.changes] == [("h1", "delete")]
    assert rollback.changes[0].target.uid == cluster.obj("h1", HPA)["metadata"]["uid"]


def test_a_create_whose_answer_was_lost_is_found_by_its_approval(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    cs_id = approve(service, creation("h"))

    def timeout() -> None:
        raise ClusterError("timeout", "no answer from the API server in time")

    cluster.after_store["h"] = timeout
    result = executor.apply_change_set(service, cs_id, actor="mcp:test")
    assert result.status == "failed_not_restored"
    assert "can only" not in result.targets[0].message
    assert "from" in result.targets[0].message and "removes it" in result.targets[0].message
    assert [c.target.name for c in ledger.created_objects(cs_id)] == ["h"]


# --- rolling back creates and deletes ----------------------------------------------------------


def applied_and_rolled_back(service: FakeService, cs_id: str) -> ChangeSet:
    assert executor.apply_change_set(service, cs_id, actor="mcp:test").status == "applied"
    return executor.rollback_change_set(service, cs_id, actor="mcp:test").change_set


def approve_rollback(service: Service, rollback: ChangeSet) -> None:
    service.ledger.record_approval(rollback.id, "rollback", "human")


def test_a_rollback_of_a_delete_creates_the_hpa_again(ledger: Ledger) -> None:
    cluster = FakeCluster(hpa("h"))
    service = make_service(ledger, cluster)
    cs_id = approve(service, removal(hpa("h")))
    rollback = applied_and_rolled_back(service, cs_id)
    [change] = rollback.changes
    assert (change.operation, change.target.uid) == ("create", None)
    assert change.create_spec == hpa("h")["spec"]
    approve_rollback(service, rollback)
    result = executor.apply_change_set(service, rollback.id, actor="mcp:test")
    assert result.status == "applied", result.message
    again = cluster.obj("h", HPA)
    assert again["spec"] == hpa("h")["spec"]
    assert again["metadata"]["labels"] == {"team": "shop"}
    # the rollback created it, so a rollback of the rollback is refused like any other
    with pytest.raises(ServiceError, match="itself a rollback"):
        executor.rollback_change_set(service, rollback.id, actor="mcp:test")


def test_a_rollback_of_a_create_waits_until_the_hpa_may_be_removed(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    cs_id = approve(service, creation("h"))
    assert executor.apply_change_set(service, cs_id, actor="mcp:test").status == "applied"
    with pytest.raises(ServiceError, match=r"younger than 2 minutes .* can be done from 20"):
        executor.rollback_change_set(service, cs_id, actor="mcp:test")
    age(cluster, "h", 125)
    rollback = executor.rollback_change_set(service, cs_id, actor="mcp:test").change_set
    [change] = rollback.changes
    assert (change.operation, change.target.uid) == (
        "delete",
        cluster.obj("h", HPA)["metadata"]["uid"],
    )
    approve_rollback(service, rollback)
    assert executor.apply_change_set(service, rollback.id, actor="mcp:test").status == "applied"
    assert (HPA, "h") not in cluster.objects


def test_a_rollback_removes_only_the_hpa_the_change_set_created(ledger: Ledger) -> None:
    cluster = FakeCluster(deployment("a"))
    service = make_service(ledger, cluster)
    cs_id = approve(service, creation("h"))
    assert executor.apply_change_set(service, cs_id, actor="mcp:test").status == "applied"
    del cluster.objects[(HPA, "h")]
    cluster.objects[(HPA, "h")] = hpa("h")  # removed and made again by someone else
    with pytest.raises(ServiceError, match="another HPA of that name exists now"):
        executor.rollback_change_set(service, cs_id, actor="mcp:test")
    del cluster.objects[(HPA, "h")]
    with pytest.raises(ServiceError, match="removed since"):
        executor.rollback_change_set(service, cs_id, actor="mcp:test")


def test_a_rollback_does_not_create_over_another_hpa(ledger: Ledger) -> None:
    cluster = FakeCluster(hpa("h"), deployment("a"))
    service = make_service(ledger, cluster)
    cs_id = approve(service, removal(hpa("h")), resize(deployment("a")))
    assert executor.apply_change_set(service, cs_id, actor="mcp:test").status == "applied"
    cluster.objects[(HPA, "h")] = hpa("h") | {
        "metadata": {**hpa("h")["metadata"], "uid": "someone-elses"}
    }
    rollback = executor.rollback_change_set(service, cs_id, actor="mcp:test")
    assert [c.target.name for c in rollback.change_set.changes] == ["a"]
    assert rollback.skipped == [
        "HorizontalPodAutoscaler/shop/h: another HPA of that name exists now; not created again"
    ]


def test_replicas_of_a_workload_a_new_hpa_will_scale_are_refused(ledger: Ledger) -> None:
    from sizeguard.server.models import Edit

    service = make_service(ledger, FakeCluster(deployment("a")))
    create = Edit.model_validate(
        {"action": "create", "kind": HPA, "namespace": NS, "name": "h", "max_replicas": 4,
         "scale_target": {"kind": "Deployment", "name": "a"}}
    )  # fmt: skip
    scale = Edit(kind="Deployment", namespace=NS, name="a", replicas=3)
    with pytest.raises(ServiceError, match="will be scaled by the new HPA h"):
        service.change_set_from_edits([create, scale], "edit")
