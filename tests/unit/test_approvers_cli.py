"""`sizeguard approvers invite|list|revoke` on a real ledger."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sizeguard.approvers import Approvers
from sizeguard.cli import main
from sizeguard.ledger import Ledger

from .passkeys import ORIGIN, RP_ID, SoftPasskey

LINK = re.compile(r"^(http://[^/]+)/enroll/([A-Za-z0-9_-]{43})$", re.MULTILINE)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_explains_who_can_enrol(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["approvers", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "passkey" in text and "whoever can write the ledger file can enrol" in text
    with pytest.raises(SystemExit):
        main(["approvers", "invite", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--ttl DURATION" in text and "whoever opens it first becomes NAME" in text


def test_invite_enrol_list_revoke(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.db"
    code, out, _ = run(
        capsys, "approvers", "invite", "Alice", "--ttl", "10m", "--ledger", str(ledger_path),
        "--approval-url", "http://approvals.example:8765/",
    )  # fmt: skip
    assert code == 0
    match = LINK.search(out)
    assert match is not None and match.group(1) == "http://approvals.example:8765"
    assert "enrolment link for alice (one use, until " in out
    token = match.group(2)

    with Ledger(ledger_path) as ledger:
        registry = Approvers(ledger)
        assert registry.invite_name(token) == "alice"
        options = registry.registration_options(token, rp_id=RP_ID)
        registry.finish_registration(
            token, SoftPasskey().register(options), rp_id=RP_ID, origin=ORIGIN
        )

    code, out, _ = run(capsys, "approvers", "list", "--ledger", str(ledger_path))
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["NAME", "ENROLLED", "PASSKEYS", "LAST", "USED", "REVOKED"]
    assert row.split()[0] == "alice" and row.split()[3] == "1" and row.endswith("-")

    code, out, _ = run(capsys, "approvers", "revoke", "ALICE", "--ledger", str(ledger_path))
    assert (code, out.strip()) == (0, "revoked alice: their passkeys and invites no longer work")
    with Ledger(ledger_path) as ledger:
        assert not Approvers(ledger).is_active("alice")
        assert [e.actor.startswith("cli:") for e in ledger.audit_entries()] == [True, False, True]


def test_refusals_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.db"
    code, _, err = run(capsys, "approvers", "list", "--ledger", str(ledger_path))
    assert code == 1 and err.startswith("sizeguard: no ledger at ")
    code, _, err = run(capsys, "approvers", "invite", "bad name", "--ledger", str(ledger_path))
    assert code == 1 and "is not a valid approver name" in err
    code, _, err = run(capsys, "approvers", "revoke", "nobody", "--ledger", str(ledger_path))
    assert (code, err.strip()) == (1, "sizeguard: there is no approver nobody")
    code, out, _ = run(capsys, "approvers", "list", "--ledger", str(ledger_path))
    assert (code, out.strip()) == (0, "no approvers (sizeguard approvers invite NAME enrols one)")
    with pytest.raises(SystemExit) as usage:
        main(["approvers", "invite", "bob", "--ttl", "2d", "--ledger", str(ledger_path)])
    assert usage.value.code == 2


def test_link_and_unlink_a_requester_identity(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ledger_path = str(tmp_path / "ledger.db")
    run(capsys, "approvers", "invite", "alice", "--ledger", ledger_path)
    code, out, _ = run(capsys, "approvers", "link", "Alice", "token:local", "--ledger", ledger_path)
    assert (code, out.strip()) == (
        0,
        "linked token:local to alice: alice does not count as one of two approvers of a "
        "change token:local requested",
    )
    code, out, _ = run(capsys, "approvers", "list", "--ledger", ledger_path)
    assert out.splitlines()[-2:] == [
        "requester identities linked to approvers:",
        "  token:local -> alice",
    ]
    with Ledger(ledger_path) as ledger:
        assert Approvers(ledger).linked_approvers(["token:local"]) == {"alice"}
        assert ledger.audit_entries()[-1].event == "approver.linked"
    code, _, err = run(capsys, "approvers", "link", "alice", "local", "--ledger", ledger_path)
    assert code == 1 and "token:NAME, jwt:SUBJECT or stdio:USER" in err
    code, out, _ = run(
        capsys, "approvers", "unlink", "alice", "token:local", "--ledger", ledger_path
    )
    assert (code, out.strip()) == (0, "unlinked token:local from alice")
    code, _, err = run(
        capsys, "approvers", "unlink", "alice", "token:local", "--ledger", ledger_path
    )
    assert (code, err.strip()) == (1, "sizeguard: token:local is not linked to alice")
