"""The ledger: change sets, single-use approvals (under real concurrency), snapshots, the
objects change sets created, audit, and its schema's migration."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from sizeguard.changes import ChangeSet, ContainerResources, GuardedState, ResourceChange, Target
from sizeguard.ledger import (
    APPROVAL_TTL_SECONDS,
    GENESIS_HASH,
    SCHEMA_VERSION,
    ApprovalRefusal,
    ApprovalRefusedError,
    ChangeSetMismatchError,
    Ledger,
    LedgerNotFoundError,
    LedgerSchemaError,
    SecretInDetailsError,
    UnknownChangeSetError,
    default_ledger_path,
    find_secrets,
    scrub_details,
)

NOW = 1_795_300_000.0
JWS = (
    "eyJhbGciOiJFZERTQSIsImtpZCI6IkxBdVNaempr"
    ".eyJpc3MiOiJzaXplZ3VhcmQiLCJzdWIiOiJhbGljZSJ9"
    ".c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl"
)


def target(name: str) -> Target:
    return Target.model_validate(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "namespace": "shop",
            "name": name,
            "uid": f"uid-{name}",
        }
    )


def state(cpu: int) -> GuardedState:
    container = ContainerResources(
        cpu_request=cpu, cpu_limit=None, memory_request=268435456, memory_limit=None
    )
    return GuardedState(
        replicas=3,
        containers={"web": container},
        init_containers={},
        min_replicas=None,
        max_replicas=None,
    )


def change_set(*names: str, cpu: int = 250) -> ChangeSet:
    return ChangeSet(
        changes=[
            ResourceChange(
                target=target(name),
                before=state(100),
                after=state(cpu),
                reason="p95",
                source="scan",
            )
            for name in names
        ]
    )


def deployment(name: str, cpu: str = "100m") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}", "generation": 4},
        "spec": {
            "replicas": 3,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "web", "resources": {"requests": {"cpu": cpu, "memory": "256Mi"}}}
                    ]
                }
            },
        },
    }


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.db"


@pytest.fixture
def ledger(path: Path) -> Iterator[Ledger]:
    with Ledger(path) as opened:
        yield opened


# --- the file ----------------------------------------------------------------------------------


def test_file_is_0600_in_wal_mode_with_schema_version(path: Path) -> None:
    old = os.umask(0)
    try:
        with Ledger(path) as ledger:
            assert ledger.journal_mode() == "wal"
            assert ledger.schema_version() == SCHEMA_VERSION
            ledger.append_audit(actor="t", event="test.write", result="ok")
            modes = {
                p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir() if p.is_file()
            }
    finally:
        os.umask(old)
    assert modes["ledger.db"] == 0o600
    assert modes.get("ledger.db-wal", 0o600) == 0o600  # SQLite copies the database's mode
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_reopen_keeps_data(path: Path) -> None:
    cs = change_set("a")
    with Ledger(path) as ledger:
        ledger.put_change_set(cs, source="preview")
    with Ledger(path, create=False) as ledger:
        assert ledger.load_change_set(cs.id) == cs


def test_missing_ledger_without_create(path: Path) -> None:
    with pytest.raises(LedgerNotFoundError, match="no ledger at"):
        Ledger(path, create=False)
    assert not path.exists()


def test_newer_schema_is_refused(path: Path) -> None:
    Ledger(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(
        LedgerSchemaError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this sizeguard"
    ):
        Ledger(path)


_VERSION_3_TABLES = (
    "page_decisions",
    "approval_requests",
    "webauthn_challenges",
    "approver_invites",
    "approver_credentials",
    "approvers",
    "approver_links",
)


def _as_version_2(path: Path) -> None:
    """Make ``path`` what sizeguard's schema version 2 created: no approvers registry, no
    approval requests or page decisions, approvals without their approvers."""
    with sqlite3.connect(path) as raw:
        for table in _VERSION_3_TABLES:
            raw.execute(f"DROP TABLE {table}")
        raw.execute("ALTER TABLE approvals DROP COLUMN approvers_json")
        raw.execute("UPDATE schema_version SET version = 2")


def _as_version_1(path: Path) -> None:
    """Make ``path`` what sizeguard's schema version 1 created: version 2 without the
    created_objects table."""
    _as_version_2(path)
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TABLE created_objects")
        raw.execute("UPDATE schema_version SET version = 1")


def test_a_version_2_ledger_is_migrated_and_keeps_its_approvals(path: Path) -> None:
    cs = change_set("a")
    with Ledger(path) as ledger:
        ledger.put_change_set(cs, source="preview")
        ledger.record_approval(cs.id, "apply", "human via token:alice", now=NOW)
    _as_version_2(path)
    with sqlite3.connect(path) as raw:
        columns = [row[1] for row in raw.execute("PRAGMA table_info(approvals)")]
        assert "approvers_json" not in columns
    with capture_logs() as logs, Ledger(path) as ledger:
        assert ledger.schema_version() == SCHEMA_VERSION == 3
        (old,) = ledger.approvals(cs.id)
        assert (old.approver, old.approvers) == ("human via token:alice", ())
        assert ledger.verify_audit().ok
        page = ledger.record_approval(
            cs.id, "apply", "approver:bob", now=NOW, approvers=("bob", "carol")
        )
        assert ledger.approvals(cs.id)[-1] == page
        assert page.approvers == ("bob", "carol")
        with ledger.snapshot() as db:  # the registry's tables exist, empty
            for table in _VERSION_3_TABLES:
                assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    assert [e["event"] for e in logs if e["event"] == "ledger.schema_migrated"] == [
        "ledger.schema_migrated"
    ]


def test_a_version_1_ledger_is_migrated_and_keeps_its_data(path: Path) -> None:
    cs = change_set("a")
    with Ledger(path) as ledger:
        ledger.put_change_set(cs, source="preview")
        ledger.append_audit(actor="t", event="test.write", result="ok")
    _as_version_1(path)
    with capture_logs() as logs, Ledger(path) as ledger:
        assert ledger.schema_version() == SCHEMA_VERSION == 3
        assert ledger.load_change_set(cs.id) == cs
        assert ledger.verify_audit().ok and ledger.verify_audit().entries == 1
        ledger.record_created(cs.id, deployment("a"), now=NOW)
        assert [c.target for c in ledger.created_objects(cs.id)] == [target("a")]
    assert [e["event"] for e in logs if e["event"] == "ledger.schema_migrated"] == [
        "ledger.schema_migrated"
    ]
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(3,)]
    with capture_logs() as again, Ledger(path):
        pass
    assert not [e for e in again if e["event"] == "ledger.schema_migrated"]


def test_a_failed_migration_changes_nothing(path: Path) -> None:
    Ledger(path).close()
    _as_version_1(path)
    with sqlite3.connect(path) as raw:  # something in the way of the new table
        raw.execute("CREATE VIEW created_objects AS SELECT 1")
    with pytest.raises(LedgerSchemaError):
        Ledger(path)
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(1,)]


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a database at all, just some text\n" * 20)
    with pytest.raises(LedgerSchemaError, match="not a sizeguard ledger"):
        Ledger(text)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as raw:
        raw.execute("CREATE TABLE t (x)")
    with pytest.raises(LedgerSchemaError, match="not a sizeguard ledger"):
        Ledger(other)


def test_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SIZEGUARD_LEDGER", str(tmp_path / "x.db"))
    assert default_ledger_path() == tmp_path / "x.db"
    monkeypatch.delenv("SIZEGUARD_LEDGER")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_ledger_path() == tmp_path / ".local/state/sizeguard/ledger.db"


# --- change sets -------------------------------------------------------------------------------


def test_change_set_round_trip_and_idempotence(ledger: Ledger) -> None:
    cs = change_set("b", "a")
    stored = ledger.put_change_set(cs, source="preview", now=NOW)
    assert stored.id == cs.id
    assert ledger.put_change_set(cs, source="again", now=NOW + 5) == stored
    assert ledger.load_change_set(cs.id) == cs
    assert ledger.get_change_set("cs-00000000000000000000") is None
    with pytest.raises(UnknownChangeSetError):
        ledger.load_change_set("cs-00000000000000000000")


def test_modified_change_set_is_detected(ledger: Ledger, path: Path) -> None:
    cs = change_set("a")
    ledger.put_change_set(cs, source="preview")
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE change_sets SET canonical_json = replace(canonical_json, '250', '990')")
    with pytest.raises(ChangeSetMismatchError, match=f"{cs.id} in the ledger was modified"):
        ledger.load_change_set(cs.id)


# --- approvals ---------------------------------------------------------------------------------


def test_approval_is_single_use(ledger: Ledger) -> None:
    cs = change_set("a")
    ledger.put_change_set(cs, source="preview")
    approval = ledger.record_approval(cs.id, "apply", "alice@example.com", now=NOW)
    assert approval.state == "pending"
    assert approval.expires_at == NOW + APPROVAL_TTL_SECONDS
    used = ledger.consume_approval(cs.id, "apply", NOW + 10)
    assert (used.id, used.state, used.used_at) == (approval.id, "used", NOW + 10)
    with pytest.raises(ApprovalRefusedError, match="already used") as refused:
        ledger.consume_approval(cs.id, "apply", NOW + 11)
    assert refused.value.reason is ApprovalRefusal.USED
    assert [a.state for a in ledger.approvals(cs.id)] == ["used"]


def test_using_an_approval_cancels_the_spare_ones(ledger: Ledger) -> None:
    cs = change_set("a")
    ledger.put_change_set(cs, source="preview")
    ledger.record_approval(cs.id, "apply", "alice", now=NOW)
    ledger.record_approval(cs.id, "apply", "bob", now=NOW + 1)
    ledger.record_approval(cs.id, "rollback", "carol", now=NOW + 2)
    used = ledger.consume_approval(cs.id, "apply", NOW + 3)
    assert used.approver == "bob"
    assert [a.state for a in ledger.approvals(cs.id)] == ["cancelled", "used", "cancelled"]
    with pytest.raises(ApprovalRefusedError) as refused:
        ledger.consume_approval(cs.id, "apply", NOW + 4)
    assert refused.value.reason is ApprovalRefusal.USED
    assert ledger.verify_audit().ok


def test_the_typed_namespaces_are_kept_with_the_approval(ledger: Ledger) -> None:
    cs = change_set("a")
    ledger.put_change_set(cs, source="preview")
    approval = ledger.record_approval(
        cs.id, "apply", "alice", now=NOW, typed_namespaces=("shop-prod", "data", "data")
    )
    assert approval.typed_namespaces == ("data", "shop-prod")
    assert ledger.consume_approval(cs.id, "apply", NOW + 1).typed_namespaces == (
        "data",
        "shop-prod",
    )


def test_approval_expires_after_300_seconds(ledger: Ledger) -> None:
    cs = change_set("a")
    ledger.put_change_set(cs, source="preview")
    ledger.record_approval(cs.id, "apply", "alice", now=NOW)
    with pytest.raises(ApprovalRefusedError, match="expired at") as refused:
        ledger.consume_approval(cs.id, "apply", NOW + APPROVAL_TTL_SECONDS)
    assert refused.value.reason is ApprovalRefusal.EXPIRED
    assert [a.state for a in ledger.approvals(cs.id)] == ["expired"]
    ledger.record_approval(cs.id, "apply", "alice", now=NOW + 400)  # a fresh one works
    assert ledger.consume_approval(cs.id, "apply", NOW + 699).state == "used"


def test_no_approval_wrong_change_set_wrong_op(ledger: Ledger) -> None:
    first, second = change_set("a"), change_set("a", cpu=300)
    ledger.put_change_set(first, source="preview")
    ledger.put_change_set(second, source="preview")
    with pytest.raises(ApprovalRefusedError, match="has no approval") as refused:
        ledger.consume_approval(first.id, "apply", NOW)
    assert refused.value.reason is ApprovalRefusal.NONE
    approval = ledger.record_approval(first.id, "apply", "alice", now=NOW)
    # the human approved `first`; `second` (a modified change set) is not approved
    with pytest.raises(ApprovalRefusedError) as refused:
        ledger.consume_approval(second.id, "apply", NOW + 1)
    assert refused.value.reason is ApprovalRefusal.NONE
    with pytest.raises(ApprovalRefusedError, match=f"is for change set {first.id}") as refused:
        ledger.consume_approval(second.id, "apply", NOW + 1, approval_id=approval.id)
    assert refused.value.reason is ApprovalRefusal.WRONG_CHANGE_SET
    with pytest.raises(ApprovalRefusedError, match="approved for apply, not rollback") as refused:
        ledger.consume_approval(first.id, "rollback", NOW + 1)
    assert refused.value.reason is ApprovalRefusal.WRONG_OP
    with pytest.raises(ApprovalRefusedError) as refused:
        ledger.consume_approval(first.id, "rollback", NOW + 1, approval_id=approval.id)
    assert refused.value.reason is ApprovalRefusal.WRONG_OP
    with pytest.raises(ApprovalRefusedError) as refused:
        ledger.consume_approval(first.id, "apply", NOW + 1, approval_id=approval.id + 100)
    assert refused.value.reason is ApprovalRefusal.NONE
    assert ledger.consume_approval(first.id, "apply", NOW + 2, approval_id=approval.id).id == (
        approval.id
    )


def test_cancelled_approval(ledger: Ledger) -> None:
    cs = change_set("a")
    ledger.put_change_set(cs, source="preview")
    approval = ledger.record_approval(cs.id, "rollback", "alice", now=NOW)
    assert ledger.cancel_approval(approval.id, actor="alice", now=NOW + 1)
    assert not ledger.cancel_approval(approval.id, actor="alice", now=NOW + 2)
    with pytest.raises(ApprovalRefusedError) as refused:
        ledger.consume_approval(cs.id, "rollback", NOW + 3)
    assert refused.value.reason is ApprovalRefusal.CANCELLED


def test_approval_needs_a_stored_change_set(ledger: Ledger) -> None:
    with pytest.raises(UnknownChangeSetError):
        ledger.record_approval("cs-00000000000000000000", "apply", "alice")
    cs = change_set("a")
    ledger.put_change_set(cs, source="preview")
    with pytest.raises(ValueError, match="ttl"):
        ledger.record_approval(cs.id, "apply", "alice", ttl=301)


def test_eight_threads_race_one_approval(path: Path) -> None:
    rounds = 10
    with Ledger(path) as setup:
        ids = []
        for index in range(rounds):
            cs = change_set("a", cpu=200 + index)
            setup.put_change_set(cs, source="preview")
            setup.record_approval(cs.id, "apply", "alice")
            ids.append(cs.id)
    wins: list[tuple[str, int]] = []
    refusals: list[ApprovalRefusal] = []
    barrier = threading.Barrier(8)
    mutex = threading.Lock()

    def contender(worker: int) -> None:
        with Ledger(path) as own:  # one connection per thread, as separate callers would have
            for cs_id in ids:
                barrier.wait()
                try:
                    own.consume_approval(cs_id, "apply")
                except ApprovalRefusedError as exc:
                    with mutex:
                        refusals.append(exc.reason)
                else:
                    with mutex:
                        wins.append((cs_id, worker))

    threads = [threading.Thread(target=contender, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(cs_id for cs_id, _ in wins) == sorted(ids)  # exactly one winner per approval
    assert refusals == [ApprovalRefusal.USED] * (7 * rounds)


def _race_in_process(path: str, ids: list[str], barrier: Any, results: Any) -> None:
    with Ledger(path) as own:
        for cs_id in ids:
            barrier.wait()
            try:
                own.consume_approval(cs_id, "apply")
            except ApprovalRefusedError as exc:
                results.put((cs_id, str(exc.reason)))
            else:
                results.put((cs_id, "won"))


def test_four_processes_race_one_approval(path: Path) -> None:
    rounds = 5
    with Ledger(path) as setup:
        ids = []
        for index in range(rounds):
            cs = change_set("a", cpu=200 + index)
            setup.put_change_set(cs, source="preview")
            setup.record_approval(cs.id, "apply", "alice")
            ids.append(cs.id)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    results = context.Queue()
    processes = [
        context.Process(target=_race_in_process, args=(str(path), ids, barrier, results))
        for _ in range(4)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=30) for _ in range(4 * rounds)]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    for cs_id in ids:
        mine = sorted(outcome for cid, outcome in outcomes if cid == cs_id)
        assert mine == ["used", "used", "used", "won"]


def test_approval_events_are_audited(ledger: Ledger) -> None:
    cs = change_set("a")
    ledger.put_change_set(cs, source="preview")
    ledger.record_approval(cs.id, "apply", "alice", now=NOW)
    ledger.consume_approval(cs.id, "apply", NOW + 1)
    events = [(e.event, e.actor, e.change_set_id) for e in ledger.audit_entries()]
    assert events == [("approval.recorded", "alice", cs.id), ("approval.used", "alice", cs.id)]


# --- snapshots ---------------------------------------------------------------------------------


def test_snapshots_first_one_wins(ledger: Ledger) -> None:
    cs = change_set("a", "b")
    ledger.put_change_set(cs, source="preview")
    original = deployment("a")
    saved = ledger.save_snapshot(cs.id, original, now=NOW)
    assert saved.target == target("a")
    ledger.save_snapshot(cs.id, deployment("b"), now=NOW)
    assert ledger.save_snapshot(cs.id, deployment("a", cpu="250m"), now=NOW + 5) == saved
    got = ledger.get_snapshot(cs.id, target("a"))
    assert got is not None
    assert got.object == original
    assert [s.target.name for s in ledger.snapshots(cs.id)] == ["a", "b"]
    assert ledger.get_snapshot(cs.id, target("c")) is None
    with pytest.raises(UnknownChangeSetError):
        ledger.save_snapshot("cs-00000000000000000000", original)


# --- objects created ---------------------------------------------------------------------------


def hpa_object(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": "shop", "uid": uid},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a"},
            "maxReplicas": 4,
        },
    }


def test_created_objects_are_recorded_by_uid_once(ledger: Ledger) -> None:
    cs = change_set("a")
    ledger.put_change_set(cs, source="preview")
    assert ledger.created_objects(cs.id) == []
    first = ledger.record_created(cs.id, hpa_object("h", "uid-1"), now=NOW)
    ledger.record_created(cs.id, hpa_object("h", "uid-1"), now=NOW + 5)  # the same object
    ledger.record_created(cs.id, hpa_object("h", "uid-2"), now=NOW + 9)  # created again later
    recorded = ledger.created_objects(cs.id)
    assert [(c.target.uid, c.created_at) for c in recorded] == [("uid-1", NOW), ("uid-2", NOW + 9)]
    assert recorded[0] == first
    assert recorded[0].target.ref() == "HorizontalPodAutoscaler/shop/h"
    assert ledger.created_objects("cs-ffffffffffffffffffff") == []
    with pytest.raises(UnknownChangeSetError):
        ledger.record_created("cs-00000000000000000000", hpa_object("h", "uid-3"))
    with pytest.raises(ValueError, match="uid"):
        ledger.record_created(
            cs.id, {**hpa_object("h", "x"), "metadata": {"name": "h", "namespace": "shop"}}
        )


# --- audit log ---------------------------------------------------------------------------------


def fill(ledger: Ledger, count: int = 5) -> None:
    for index in range(count):
        ledger.append_audit(
            actor="mcp:claude",
            event="tool.preview_changes",
            result="ok",
            change_set_id="cs-0123456789abcdef0123",
            target=target(f"w{index}"),
            details={"index": index, "note": "é ✓", "ratio": 0.25},
            now=NOW + index,
        )


def test_audit_chain(ledger: Ledger) -> None:
    assert ledger.verify_audit().ok
    fill(ledger)
    entries = ledger.audit_entries()
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert entries[2].at == "2026-11-21T22:26:42.000000Z"
    result = ledger.verify_audit()
    assert (result.ok, result.entries, result.head_seq, result.head_hash) == (
        True,
        5,
        5,
        entries[-1].hash,
    )
    assert ledger.verify_audit(anchor=(3, entries[2].hash)).ok
    assert [e.seq for e in ledger.audit_entries(limit=2)] == [4, 5]
    assert ledger.audit_entries(change_set_id="cs-ffffffffffffffffffff") == []


def test_audit_rows_cannot_be_updated_or_deleted(ledger: Ledger, path: Path) -> None:
    fill(ledger, 2)
    with sqlite3.connect(path) as raw:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("UPDATE audit SET result = 'denied' WHERE seq = 1")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("DELETE FROM audit WHERE seq = 2")
    assert not any(name.startswith(("update", "delete")) for name in dir(ledger))
    assert ledger.verify_audit().ok


def tamper(path: Path, *statements: str) -> None:
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TRIGGER audit_no_update")
        raw.execute("DROP TRIGGER audit_no_delete")
        for statement in statements:
            raw.execute(statement)


def test_edited_field_is_detected(ledger: Ledger, path: Path) -> None:
    fill(ledger)
    tamper(path, "UPDATE audit SET result = 'denied' WHERE seq = 3")
    result = ledger.verify_audit()
    assert (result.ok, result.first_bad_seq, result.entries) == (False, 3, 2)
    assert "contents were edited" in (result.reason or "")


def test_edited_details_is_detected(ledger: Ledger, path: Path) -> None:
    fill(ledger)
    tamper(path, """UPDATE audit SET details_json = '{"index":9}' WHERE seq = 2""")
    assert ledger.verify_audit().first_bad_seq == 2


def test_edited_and_rehashed_entry_breaks_the_next_link(ledger: Ledger, path: Path) -> None:
    fill(ledger)
    entry = ledger.audit_entries()[1]
    forged = entry.model_copy(update={"actor": "someone-else"})
    from sizeguard.ledger import entry_hash

    new_hash = entry_hash(forged.hashed_document())
    tamper(path, f"UPDATE audit SET actor = 'someone-else', hash = '{new_hash}' WHERE seq = 2")
    result = ledger.verify_audit()
    assert result.first_bad_seq == 3
    assert "prev_hash does not match the hash of entry 2" in (result.reason or "")


def test_deleted_row_is_detected(ledger: Ledger, path: Path) -> None:
    fill(ledger)
    tamper(path, "DELETE FROM audit WHERE seq = 3")
    result = ledger.verify_audit()
    assert result.first_bad_seq == 3
    assert result.reason == "entry 3 is missing (deleted?); the next entry is 4"


def test_deleted_first_row_is_detected(ledger: Ledger, path: Path) -> None:
    fill(ledger)
    tamper(path, "DELETE FROM audit WHERE seq = 1")
    assert ledger.verify_audit().first_bad_seq == 1


def test_swapped_rows_are_detected(ledger: Ledger, path: Path) -> None:
    fill(ledger)
    tamper(
        path,
        "UPDATE audit SET seq = -2 WHERE seq = 2",
        "UPDATE audit SET seq = 2 WHERE seq = 4",
        "UPDATE audit SET seq = 4 WHERE seq = -2",
    )
    result = ledger.verify_audit()
    assert result.first_bad_seq == 2
    assert "prev_hash does not match" in (result.reason or "")


def test_inserted_row_is_detected(ledger: Ledger, path: Path) -> None:
    fill(ledger)
    entries = ledger.audit_entries()
    # make room at seq 3 and insert a well-formed entry that links to entry 2
    from sizeguard.ledger import entry_hash

    forged = entries[2].model_copy(update={"actor": "intruder", "prev_hash": entries[1].hash})
    forged_hash = entry_hash(forged.hashed_document())
    shift = [f"UPDATE audit SET seq = seq + 1 WHERE seq = {seq}" for seq in (5, 4, 3)]
    insert = (
        "INSERT INTO audit (seq, at, actor, event, change_set_id, target_json, result, "
        "details_json, prev_hash, hash) SELECT 3, at, 'intruder', event, change_set_id, "
        f"target_json, result, details_json, '{entries[1].hash}', '{forged_hash}' "
        "FROM audit WHERE seq = 4"
    )
    tamper(path, *shift, insert)
    result = ledger.verify_audit()
    assert result.first_bad_seq == 4  # the forged 3 links, but the real 3 (now 4) does not
    assert not result.ok


def test_appended_garbage_row_is_detected(ledger: Ledger, path: Path) -> None:
    fill(ledger, 2)
    tamper(
        path,
        "INSERT INTO audit (seq, at, actor, event, change_set_id, target_json, result, "
        "details_json, prev_hash, hash) VALUES (3, 'x', 'a', 'e', NULL, NULL, 'ok', '{}', "
        f"'{GENESIS_HASH}', '{GENESIS_HASH}')",
    )
    assert ledger.verify_audit().first_bad_seq == 3


def test_anchor_detects_truncation_and_rewrite(ledger: Ledger, path: Path) -> None:
    fill(ledger)
    head = ledger.verify_audit()
    assert head.head_seq == 5
    assert head.head_hash is not None
    tamper(path, "DELETE FROM audit WHERE seq = 5")
    assert ledger.verify_audit().ok  # a cut tail is invisible without an anchor...
    cut = ledger.verify_audit(anchor=(5, head.head_hash))
    assert (cut.ok, cut.first_bad_seq) == (False, 5)
    assert "truncated" in (cut.reason or "")
    wrong = ledger.verify_audit(anchor=(4, head.head_hash))
    assert (wrong.ok, wrong.first_bad_seq) == (False, 4)
    assert "rewritten" in (wrong.reason or "")


@pytest.mark.parametrize(
    "details",
    [
        {"token": "abc"},
        {"args": {"apiKey": "abc"}},
        {"signing_key": "x"},
        {"client_secret": "x"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"headers": [{"X-Auth-Token": "x"}]},
        {"password": "x"},
        {"approval": JWS},
        {"note": f"Bearer {JWS}"},
        {"items": ["fine", JWS]},
        {"pem": "x"},
        {"blob": "-----BEGIN PRIVATE KEY-----\nMC4CAQAw\n-----END PRIVATE KEY-----"},
    ],
)
def test_secrets_are_refused_in_details(ledger: Ledger, details: dict[str, Any]) -> None:
    with pytest.raises(SecretInDetailsError, match="refusing to write secrets") as refused:
        ledger.append_audit(actor="mcp", event="tool.call", result="ok", details=details)
    assert JWS not in str(refused.value)
    assert "abc" not in str(refused.value)
    assert ledger.audit_entries() == []
    scrubbed = scrub_details(details)
    assert find_secrets(scrubbed) == []
    ledger.append_audit(actor="mcp", event="tool.call", result="ok", details=scrubbed)
    assert "[redacted]" in str(ledger.audit_entries()[0].details)


def test_harmless_names_are_accepted(ledger: Ledger) -> None:
    details = {"kid": "LAuSZzjkWMrQ7i1McH-gWnHBkPOTsKjsosiNgLh_Zv8", "monkey": 1, "jti": "x"}
    assert find_secrets(details) == []
    assert ledger.append_audit(actor="a", event="e", result="ok", details=details).seq == 1


def test_secret_in_actor_is_refused(ledger: Ledger) -> None:
    with pytest.raises(SecretInDetailsError, match="actor looks like a secret"):
        ledger.append_audit(actor=JWS, event="tool.call", result="ok")


def test_bad_audit_input(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="event must match"):
        ledger.append_audit(actor="a", event="Not An Event", result="ok")
    with pytest.raises(ValueError, match="must be JSON"):
        ledger.append_audit(actor="a", event="e", result="ok", details={"n": 2**60})
    with pytest.raises(ValueError, match="actor must be 1 to 256"):
        ledger.append_audit(actor="", event="e", result="ok")


def test_log_events_carry_no_secrets(ledger: Ledger) -> None:
    cs = change_set("a")
    with capture_logs() as logs:
        ledger.put_change_set(cs, source="preview")
        ledger.record_approval(cs.id, "apply", "alice")
        ledger.consume_approval(cs.id, "apply")
        ledger.save_snapshot(cs.id, deployment("a"))
        ledger.append_audit(actor="a", event="tool.apply", result="ok", details={"n": 1})
    events = [log["event"] for log in logs]
    assert events == [
        "ledger.change_set_stored",
        "ledger.approval_recorded",
        "ledger.approval_used",
        "ledger.snapshot_saved",
        "ledger.audit_appended",
    ]
    assert "details" not in str(logs)
