"""`sizeguard audit verify|show` through the real command line entry point, on real ledgers."""

from __future__ import annotations

import itertools
import json
import sqlite3
from pathlib import Path

import pytest

from sizeguard import cli
from sizeguard.changes import Target
from sizeguard.ledger import GENESIS_HASH, Ledger, entry_hash

REGISTERED = cli.COMMAND_MODULES  # as cli.py declares it, before any test patches it

CS_A = "cs-aaaaaaaaaaaaaaaaaaaa"
CS_B = "cs-bbbbbbbbbbbbbbbbbbbb"
TARGET = Target(api_version="apps/v1", kind="Deployment", namespace="shop", name="web", uid="uid-1")


@pytest.fixture(autouse=True)
def only_audit_commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Other command groups are developed in parallel; these tests exercise ours alone.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("sizeguard.cli.audit",))
    # Never fall back to the real user's ledger.
    monkeypatch.delenv("SIZEGUARD_LEDGER", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what setting up the ledger printed
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    with Ledger(path) as ledger:
        ledger.append_audit(actor="mcp:claude", event="tool.called", result="ok", now=1.0e9)
        ledger.append_audit(
            actor="mcp:claude",
            event="change_set.previewed",
            result="allowed",
            change_set_id=CS_A,
            details={"targets": 1, "risk": "low"},
            now=1.0e9 + 1,
        )
        ledger.append_audit(
            actor="alice (terminal)",
            event="confirmation.accepted",
            result="approved",
            change_set_id=CS_A,
            target=TARGET,
            details={"channel": "terminal", "op": "apply"},
            now=1.0e9 + 2,
        )
        ledger.append_audit(
            actor="mcp:claude",
            event="change_set.previewed",
            result="denied",
            change_set_id=CS_B,
            details={"violations": ["increase_too_large"]},
            now=1.0e9 + 3,
        )
    return path


def head_of(out: str) -> str:
    heads = [line for line in out.splitlines() if line.startswith("head: ")]
    assert len(heads) == 1, out
    return heads[0].removeprefix("head: ")


def tamper(path: Path, sql: str, *params: object) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute("DROP TRIGGER audit_no_update")
        db.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        db.execute(sql, params)
        db.commit()
    finally:
        db.close()


def test_audit_is_a_registered_command_group() -> None:
    assert "sizeguard.cli.audit" in REGISTERED


# --- verify -------------------------------------------------------------------------------------


def test_verify_an_intact_log(ledger_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "audit", "verify", "--ledger", str(ledger_path))
    assert code == 0, err
    assert "ok: 4 entries, hash chain intact" in out
    seq, _, digest = head_of(out).partition(":")
    assert seq == "4"
    with Ledger(ledger_path, create=False) as ledger:
        assert digest == ledger.audit_entries()[-1].hash
    assert err == ""


def test_verify_an_empty_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Ledger(tmp_path / "empty.db").close()
    code, out, _ = run(capsys, "audit", "verify", "--ledger", str(tmp_path / "empty.db"))
    assert code == 0
    assert out.startswith("ok: the audit log in ") and "is empty" in out


def test_verify_uses_sizeguard_ledger_from_the_environment(
    ledger_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIZEGUARD_LEDGER", str(ledger_path))
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0 and "ok: 4 entries" in out


def test_an_edited_entry_is_found(ledger_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(ledger_path, "UPDATE audit SET result = 'declined' WHERE seq = 3")
    code, out, err = run(capsys, "audit", "verify", "--ledger", str(ledger_path))
    assert code == 1, out
    assert "BROKEN at seq 3:" in out
    assert "contents were edited" in out
    assert "entries before it verified: 2" in out
    assert err == ""


def test_an_edited_and_rehashed_entry_breaks_the_next_link(
    ledger_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The attacker re-computes the edited entry's own hash, but cannot fix entry 3's prev_hash
    # without re-hashing the rest of the chain too.
    with Ledger(ledger_path, create=False) as ledger:
        second = ledger.audit_entries()[1]
    edited = second.model_copy(update={"actor": "mallory"})
    tamper(
        ledger_path,
        "UPDATE audit SET actor = ?, hash = ? WHERE seq = 2",
        "mallory",
        entry_hash(edited.hashed_document()),
    )
    code, out, _ = run(capsys, "audit", "verify", "--ledger", str(ledger_path))
    assert code == 1
    assert "BROKEN at seq 3:" in out and "prev_hash" in out


def test_a_deleted_entry_is_found(ledger_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(ledger_path, "DELETE FROM audit WHERE seq = 2")
    code, out, _ = run(capsys, "audit", "verify", "--ledger", str(ledger_path))
    assert code == 1
    assert "BROKEN at seq 2:" in out and "missing" in out


def test_an_anchor_from_an_earlier_verify_passes(
    ledger_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, "audit", "verify", "--ledger", str(ledger_path))
    anchor = head_of(out)
    with Ledger(ledger_path, create=False) as ledger:
        ledger.append_audit(actor="mcp:claude", event="tool.called", result="ok")
    code, out, _ = run(capsys, "audit", "verify", "--ledger", str(ledger_path), "--anchor", anchor)
    assert code == 0, out
    assert "ok: 5 entries" in out


def test_a_wrong_anchor_fails(ledger_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = "2:" + "0" * 64
    code, out, _ = run(capsys, "audit", "verify", "--ledger", str(ledger_path), "--anchor", wrong)
    assert code == 1
    assert "BROKEN at seq 2:" in out and "rewritten" in out


def test_an_anchor_beyond_the_log_means_it_was_truncated(
    ledger_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, "audit", "verify", "--ledger", str(ledger_path))
    anchor = head_of(out)
    tamper(ledger_path, "DELETE FROM audit WHERE seq = 4")
    code, out, _ = run(capsys, "audit", "verify", "--ledger", str(ledger_path), "--anchor", anchor)
    assert code == 1
    assert "BROKEN at seq 4:" in out and "truncated" in out


@pytest.mark.parametrize("anchor", ["4", "x:" + "0" * 64, "4:abc", ":" + "0" * 64])
def test_a_malformed_anchor_is_a_one_line_error(
    ledger_path: Path, capsys: pytest.CaptureFixture[str], anchor: str
) -> None:
    code, out, err = run(
        capsys, "audit", "verify", "--ledger", str(ledger_path), "--anchor", anchor
    )
    assert code != 0
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("sizeguard: ")
    assert "--anchor must be SEQ:HASH" in err


@pytest.mark.parametrize("action", ["verify", "show"])
def test_a_missing_ledger_is_a_one_line_error_and_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    missing = tmp_path / "nowhere" / "ledger.db"
    code, out, err = run(capsys, "audit", action, "--ledger", str(missing))
    assert code != 0
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("sizeguard: no ledger at ") and str(missing) in err
    assert not missing.exists()


def test_the_default_ledger_missing_names_the_ways_to_choose_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "audit", "verify")
    assert code != 0
    assert str(tmp_path / "home") in err and "SIZEGUARD_LEDGER" in err
    assert not (tmp_path / "home" / ".local" / "state" / "sizeguard" / "ledger.db").exists()


def test_a_file_that_is_not_a_ledger_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    other.chmod(0o600)
    code, out, err = run(capsys, "audit", "verify", "--ledger", str(other))
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and "not a sizeguard ledger" in err


# --- show ---------------------------------------------------------------------------------------


def test_show_json_lines(ledger_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "audit", "show", "--ledger", str(ledger_path), "--json")
    assert code == 0
    entries = [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert entries[2]["actor"] == "alice (terminal)"
    assert entries[2]["target"]["name"] == "web"
    assert entries[2]["details"] == {"channel": "terminal", "op": "apply"}
    assert entries[0]["prev_hash"] == GENESIS_HASH
    for before, after in itertools.pairwise(entries):
        assert after["prev_hash"] == before["hash"]


def test_show_one_change_set(ledger_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "audit", "show", "--ledger", str(ledger_path), "--json", "--change-set", CS_A
    )
    assert code == 0
    entries = [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in entries] == [2, 3]
    assert {e["change_set_id"] for e in entries} == {CS_A}


def test_show_a_table(ledger_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "audit", "show", "--ledger", str(ledger_path), "--change-set", CS_B)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "SEQ", "AT", "ACTOR", "EVENT", "CHANGE", "SET", "TARGET", "RESULT", "DETAILS"
    ]  # fmt: skip
    assert len(lines) == 2
    assert lines[1].split()[:4] == [
        "4",
        "2001-09-09T01:46:43Z",
        "mcp:claude",
        "change_set.previewed",
    ]
    assert CS_B in lines[1] and "denied" in lines[1] and "increase_too_large" in lines[1]


def test_show_the_table_names_the_target(
    ledger_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, "audit", "show", "--ledger", str(ledger_path))
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == {"1", "2", "3", "4"}
    assert "Deployment/shop/web" in rows["3"]
    assert "Deployment/shop/web" not in rows["2"]


def test_show_limit_keeps_the_last_entries(
    ledger_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "audit", "show", "--ledger", str(ledger_path), "--json", "--limit", "2"
    )
    assert code == 0
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [3, 4]


def test_show_nothing(ledger_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("audit", "show", "--ledger", str(ledger_path), "--change-set", "cs-" + "0" * 20)
    assert run(capsys, *args) == (0, "no audit entries\n", "")
    assert run(capsys, *args, "--json") == (0, "", "")


def test_show_refuses_a_bad_limit(ledger_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["audit", "show", "--ledger", str(ledger_path), "--limit", "0"])
    assert exited.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_show_json_stays_json_when_the_ledger_is_readable_by_others(
    ledger_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger_path.chmod(0o644)
    code, out, _ = run(capsys, "audit", "show", "--ledger", str(ledger_path), "--json")
    assert code == 0
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [1, 2, 3, 4]
