"""The executor's order of operations and its failure handling, on plain data.

The cluster here is a dictionary that applies sizeguard's strategic-merge patches to the
guarded fields and honours ``metadata.resourceVersion`` preconditions (409), which is all the
executor relies on. What the real apiserver and webhook do is tested in
``tests/integration/test_mcp_server.py``; these tests pin the cases that are hard to provoke
there: a patch that lands and then times out, an exception of our own halfway, another
writer between sizeguard's read and its patch, and a restore that would overwrite someone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sizeguard.approvals import generate_signing_key
from sizeguard.changes import ChangeSet, ResourceChange, guarded_state, target_of
from sizeguard.cluster import ClusterError, PatchResult
from sizeguard.ledger import Ledger
from sizeguard.policy import ChangesetDecision, Finding, PolicyClient
from sizeguard.server import executor
from sizeguard.server.service import Service, ServiceError

NS = "shop"


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


class FakeCluster:
    """Objects by name; patches set the guarded fields the way the apiserver would."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = {o["metadata"]["name"]: copy.deepcopy(o) for o in objects}
        self.version = 1
        self.patches: list[str] = []
        # name -> what to do after storing a patch of it (e.g. raise a timeout)
        self.after_store: dict[str, Callable[[], None]] = {}
        # names whose next patch fails with a 500 before anything is stored
        self.refuse_next: dict[str, bool] = {}

    def read_live(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        if name not in self.objects:
            raise ClusterError("not_found", f"{kind} {namespace}/{name} does not exist")
        return copy.deepcopy(self.objects[name])

    def read_object(self, target: Any) -> dict[str, Any]:
        return self.read_live(target.kind, target.namespace, target.name)

    def write(self, name: str, cpu: str) -> None:
        """Another writer (a person with kubectl, a controller) sets the CPU request."""
        obj = self.objects[name]
        obj["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = cpu
        self._bump(obj)

    def status_write(self, name: str) -> None:
        """A controller updates the status: a new resourceVersion, the same generation."""
        self.version += 1
        self.objects[name]["metadata"]["resourceVersion"] = str(self.version)

    def _bump(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        obj["metadata"]["generation"] += 1

    def apply_patch(self, target: Any, body: dict[str, Any], *, dry_run: bool = False) -> Any:
        assert not dry_run
        obj = self.objects.get(target.name)
        if obj is None:
            raise ClusterError("not_found", f"{target.ref()} does not exist")
        wanted = body.get("metadata", {}).get("resourceVersion")
        if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
            raise ClusterError("conflict", f"{target.ref()} changed meanwhile", status=409)
        if self.refuse_next.pop(target.name, False):
            raise ClusterError("server_error", f"cannot patch {target.ref()}: HTTP 500")
        by_name = {c["name"]: c for c in obj["spec"]["template"]["spec"]["containers"]}
        spec = body.get("spec", {})
        containers = spec.get("template", {}).get("spec", {}).get("containers", [])
        for patch in containers:
            resources = by_name[patch["name"]].setdefault("resources", {})
            for group, values in patch.get("resources", {}).items():
                for key, value in values.items():
                    if value is None:
                        resources.get(group, {}).pop(key, None)
                    else:
                        resources.setdefault(group, {})[key] = value
        if "replicas" in spec:
            obj["spec"]["replicas"] = spec["replicas"]
        annotations = body.get("metadata", {}).get("annotations")
        if annotations:
            obj["metadata"].setdefault("annotations", {}).update(annotations)
        self._bump(obj)
        self.patches.append(target.name)
        hook = self.after_store.pop(target.name, None)
        if hook is not None:
            hook()
        return PatchResult(object=copy.deepcopy(obj), warnings=[], dry_run=False)


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
    containers = cluster.objects[name]["spec"]["template"]["spec"]["containers"]
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
    assert "sizeguard.io/approval" in cluster.objects["a"]["metadata"]["annotations"]
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
    fenced = cluster.objects["b"]["metadata"]["annotations"]
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
    del cluster.objects["a"]["metadata"]["resourceVersion"]
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
