"""`sizeguard approvers`: enrol the people who approve on the approval page, list, revoke, and
link the requester identities they use."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from typing import Any

from sizeguard.approvers import (
    DEFAULT_INVITE_TTL_SECONDS,
    MAX_INVITE_TTL_SECONDS,
    ApproverError,
    Approvers,
    normalize_identity,
    normalize_name,
)
from sizeguard.cli.ledger import add_ledger_flag, open_ledger
from sizeguard.errors import CommandError
from sizeguard.ledger import Ledger
from sizeguard.server.auth import effective_user
from sizeguard.server.service import DEFAULT_APPROVAL_URL


def register(subparsers: Any) -> None:
    """Add the ``approvers`` command group to the top-level sub-parsers."""
    approvers = subparsers.add_parser(
        "approvers",
        help="enrol, list and revoke the people who approve changes with a passkey",
        description=(
            "Approvers are the people who approve change sets on sizeguard's approval page "
            "with a passkey (WebAuthn, user verification required). Where the policy requires "
            "an authenticated approver (by default: production namespaces and critical "
            "workloads; two different approvers for a critical workload in production), only "
            "their approvals let apply_changes run. The registry lives in the ledger: whoever "
            "can write the ledger file can enrol an approver, so protect it like the signing "
            "key."
        ),
        epilog=(
            "example: sizeguard approvers invite alice --ttl 10m   (send alice the link it "
            "prints; she opens it in a browser and creates her passkey)"
        ),
    )
    actions = approvers.add_subparsers(dest="approvers_command", metavar="ACTION", required=True)

    invite = actions.add_parser(
        "invite",
        help="print a one-time enrolment link for NAME",
        description=(
            "Prints a one-time enrolment link (APPROVAL_URL/enroll/TOKEN). The person opens it "
            "in a browser on the approval page and registers a passkey; the link then stops "
            "working. It expires after --ttl. Only the token's hash is stored. Inviting an "
            "enrolled approver adds a passkey (a second device); inviting a revoked one "
            "enrols them again with the new passkey only. Send the link over a channel you "
            "trust: whoever opens it first becomes NAME."
        ),
    )
    invite.add_argument(
        "name",
        metavar="NAME",
        help="the approver's name (a-z 0-9 . _ @ + -; compared without case with the "
        "requester's identity, e.g. alice for token:alice)",
    )
    invite.add_argument(
        "--ttl",
        type=_duration,
        default=DEFAULT_INVITE_TTL_SECONDS,
        metavar="DURATION",
        help="how long the link works: seconds, or with s/m/h (default: 15m, at most 24h)",
    )
    invite.add_argument(
        "--approval-url",
        default=os.environ.get("SIZEGUARD_APPROVAL_URL", DEFAULT_APPROVAL_URL),
        metavar="URL",
        help="the approval page's address as people reach it (sizeguard serve "
        "--approval-url; default: $SIZEGUARD_APPROVAL_URL or %(default)s)",
    )
    add_ledger_flag(invite)
    invite.set_defaults(func=_invite)

    listing = actions.add_parser(
        "list", help="the approvers: enrolled when, passkeys, last used, revoked"
    )
    add_ledger_flag(listing)
    listing.set_defaults(func=_list)

    revoke = actions.add_parser(
        "revoke",
        help="revoke NAME: their passkeys and open invites stop working at once",
        description=(
            "Revokes an approver: their passkeys are refused from now on, their open invites "
            "are cancelled, and approvals they gave that were not yet used no longer count "
            "when apply_changes checks them. Their past decisions stay in the history and the "
            "audit log."
        ),
    )
    revoke.add_argument("name", metavar="NAME")
    add_ledger_flag(revoke)
    revoke.set_defaults(func=_revoke)

    link = actions.add_parser(
        "link",
        help="record that the requester IDENTITY is the approver NAME",
        description=(
            "Records that the requester identity IDENTITY (token:NAME, jwt:SUBJECT or "
            "stdio:USER, as sizeguard records who called request_confirmation) is the "
            "approver NAME: NAME then never counts as one of the two approvers of a change "
            "IDENTITY requested. Without a link only an identity whose name part equals "
            "NAME (token:NAME, stdio:NAME) is NAME: link every token, service account and "
            "login an approver uses (the HTTP transport's default token is token:local)."
        ),
        epilog="example: sizeguard approvers link alice token:local",
    )
    link.add_argument("name", metavar="NAME")
    link.add_argument("identity", metavar="IDENTITY")
    add_ledger_flag(link)
    link.set_defaults(func=_link)

    unlink = actions.add_parser("unlink", help="remove a link made by approvers link")
    unlink.add_argument("name", metavar="NAME")
    unlink.add_argument("identity", metavar="IDENTITY")
    add_ledger_flag(unlink)
    unlink.set_defaults(func=_unlink)


def _duration(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    value = text.strip().lower()
    scale = units.get(value[-1:], 0)
    number = value[:-1] if scale else value
    try:
        seconds = int(number) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 900, 15m, 1h)") from None
    if not 0 < seconds <= MAX_INVITE_TTL_SECONDS:
        raise argparse.ArgumentTypeError("must be between 1 second and 24 hours")
    return seconds


def _open(args: argparse.Namespace, *, create: bool) -> Ledger:
    return open_ledger(args.ledger, create=create)


def _actor() -> str:
    return f"cli:{effective_user()}"


def _when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _invite(args: argparse.Namespace) -> int:
    with _open(args, create=True) as ledger:
        try:
            invite = Approvers(ledger).invite(args.name, ttl=args.ttl, actor=_actor())
        except ApproverError as exc:
            raise CommandError(str(exc)) from None
    print(f"enrolment link for {invite.name} (one use, until {_when(invite.expires_at)}):")
    print(invite.link(args.approval_url))
    print(
        f"{invite.name} opens it in a browser and creates a passkey; the approval page must "
        "be running (sizeguard serve) at that address."
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    with _open(args, create=False) as ledger:
        entries = Approvers(ledger).list()
        links = Approvers(ledger).links()
    if not entries:
        print("no approvers (sizeguard approvers invite NAME enrols one)")
    rows = [("NAME", "ENROLLED", "PASSKEYS", "LAST USED", "REVOKED")] if entries else []
    rows += [
        (e.name, _when(e.enrolled_at), str(e.passkeys), _when(e.last_used_at), _when(e.revoked_at))
        for e in entries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    if links:
        print("requester identities linked to approvers:")
        for name, identity in links:
            print(f"  {identity} -> {name}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    with _open(args, create=False) as ledger:
        try:
            Approvers(ledger).revoke(args.name, actor=_actor())
        except ApproverError as exc:
            raise CommandError(str(exc)) from None
    print(f"revoked {args.name.strip().lower()}: their passkeys and invites no longer work")
    return 0


def _link(args: argparse.Namespace) -> int:
    with _open(args, create=False) as ledger:
        try:
            registry = Approvers(ledger)
            registry.link(args.name, args.identity, actor=_actor())
        except ApproverError as exc:
            raise CommandError(str(exc)) from None
    name, identity = normalize_name(args.name), normalize_identity(args.identity)
    print(
        f"linked {identity} to {name}: {name} does not count as one of two approvers of a "
        f"change {identity} requested"
    )
    return 0


def _unlink(args: argparse.Namespace) -> int:
    with _open(args, create=False) as ledger:
        try:
            Approvers(ledger).unlink(args.name, args.identity, actor=_actor())
        except ApproverError as exc:
            raise CommandError(str(exc)) from None
    print(f"unlinked {normalize_identity(args.identity)} from {normalize_name(args.name)}")
    return 0
