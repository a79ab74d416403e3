"""`sizeguard audit`: verify the ledger's hash-chained audit log, and print it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sizeguard.cli.ledger import add_ledger_flag, open_ledger
from sizeguard.errors import CommandError
from sizeguard.ledger import AuditEntry, Ledger

_DETAILS_WIDTH = 60


def register(subparsers: Any) -> None:
    """Add the ``audit`` command group to the top-level sub-parsers."""
    audit = subparsers.add_parser(
        "audit",
        help="verify and show the audit log in the ledger",
        description=(
            "The ledger (SQLite) holds an append-only, hash-chained audit log of every tool "
            "call and decision. Default ledger: $SIZEGUARD_LEDGER, else "
            "~/.local/state/sizeguard/ledger.db."
        ),
    )
    actions = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    verify = actions.add_parser(
        "verify",
        help="check the hash chain; exit 0 if intact, 1 at the first broken entry",
    )
    add_ledger_flag(verify)
    verify.add_argument(
        "--anchor",
        metavar="SEQ:HASH",
        help="an earlier head (printed by a previous verify) the log must still contain",
    )
    verify.set_defaults(func=_verify)

    show = actions.add_parser("show", help="print audit entries (oldest first)")
    add_ledger_flag(show)
    show.add_argument("--change-set", metavar="ID", help="only entries of this change set")
    show.add_argument("--json", action="store_true", help="JSON lines, with details and hashes")
    show.add_argument("--limit", type=_positive, metavar="N", help="only the last N entries")
    show.set_defaults(func=_show)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _open(args: argparse.Namespace) -> Ledger:
    return open_ledger(args.ledger)


def _anchor(text: str | None) -> tuple[int, str] | None:
    if text is None:
        return None
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise CommandError(f"--anchor must be SEQ:HASH (64 hex digits), not {text!r}")
    return int(seq), digest.lower()


def _verify(args: argparse.Namespace) -> int:
    anchor = _anchor(args.anchor)
    with _open(args) as ledger:
        result = ledger.verify_audit(anchor=anchor)
    if result.ok:
        if result.head_seq is None:
            print(f"ok: the audit log in {ledger.path} is empty")
        else:
            print(f"ok: {result.entries} entries, hash chain intact")
            print(f"head: {result.head_seq}:{result.head_hash}")
        return 0
    print(f"BROKEN at seq {result.first_bad_seq}: {result.reason}")
    print(f"entries before it verified: {result.entries}")
    return 1


def _show(args: argparse.Namespace) -> int:
    with _open(args) as ledger:
        entries = ledger.audit_entries(change_set_id=args.change_set, limit=args.limit)
    if args.json:
        for entry in entries:
            print(json.dumps(entry.model_dump(mode="json"), sort_keys=True))
        return 0
    if not entries:
        print("no audit entries")
        return 0
    rows = [_row(entry) for entry in entries]
    header = ("SEQ", "AT", "ACTOR", "EVENT", "CHANGE SET", "TARGET", "RESULT", "DETAILS")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        print("  ".join([*cells, row[-1]]).rstrip())
    return 0


def _row(entry: AuditEntry) -> tuple[str, ...]:
    details = json.dumps(entry.details, sort_keys=True, separators=(",", ":"))
    if details == "{}":
        details = ""
    elif len(details) > _DETAILS_WIDTH:
        details = details[: _DETAILS_WIDTH - 1] + "…"
    return (
        str(entry.seq),
        entry.at[:19] + "Z",
        entry.actor,
        entry.event,
        entry.change_set_id or "-",
        entry.target.ref() if entry.target is not None else "-",
        entry.result,
        details,
    )
