"""`sizeguard serve` (the MCP server) and `sizeguard approve` (a human approves in a terminal)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from sizeguard.approvals import KeyStoreError, SigningKey, load_signing_key
from sizeguard.cluster import Cluster, ClusterError
from sizeguard.errors import CommandError
from sizeguard.ledger import Ledger, LedgerError, default_ledger_path
from sizeguard.logs import configure_logging
from sizeguard.policy import PolicyClient, default_opa_url
from sizeguard.server.service import (
    Service,
    ServiceError,
    change_set_op,
    check_typed,
    confirmation_text,
    timestamp,
)

__all__ = ["build_service", "register"]


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="FILE",
        help="kubeconfig (default: $KUBECONFIG, else ~/.kube/config, else in-cluster)",
    )
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context (default: current)")
    parser.add_argument(
        "--opa-url",
        metavar="URL",
        help="OPA with the sizeguard policies (default: $OPA_URL or http://127.0.0.1:8181)",
    )
    parser.add_argument(
        "--ledger",
        type=Path,
        metavar="PATH",
        help="the SQLite ledger (default: $SIZEGUARD_LEDGER or ~/.local/state/sizeguard/ledger.db)",
    )


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the MCP server the AI assistant talks to",
        description=(
            "Serve sizeguard's MCP tools over stdio (for a client that starts it) or streamable "
            "HTTP on 127.0.0.1. Changes need a human's approval; the private key signs them."
        ),
    )
    serve.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    serve.add_argument(
        "--read-only",
        action="store_true",
        help="hide the mutating tools and refuse them; no key needed",
    )
    _connection_flags(serve)
    serve.add_argument("--prometheus-url", metavar="URL", help="default: $PROMETHEUS_URL")
    serve.add_argument(
        "--key-dir",
        type=Path,
        metavar="DIR",
        help="signing key directory from `sizeguard keys init` (default: $SIZEGUARD_KEY_DIR)",
    )
    serve.set_defaults(func=_serve)

    approve = subparsers.add_parser(
        "approve",
        help="approve a previewed change set in a terminal (for clients that cannot ask)",
        description=(
            "Shows the same summary the MCP confirmation shows and asks the same question. "
            "Needs a terminal: a person answers, not a script."
        ),
    )
    approve.add_argument("change_set_id", metavar="CHANGE_SET_ID")
    _connection_flags(approve)
    approve.set_defaults(func=_approve)


def _kubeconfig(flag: Path | None) -> Path | None:
    if flag is not None:
        return flag
    env = os.environ.get("KUBECONFIG")
    if env:
        return Path(env.split(os.pathsep)[0])
    default = Path.home() / ".kube" / "config"
    return default if default.exists() else None


def build_service(args: argparse.Namespace, *, read_only: bool, need_key: bool) -> Service:
    kubeconfig = _kubeconfig(args.kubeconfig)
    key: SigningKey | None = None
    if need_key:
        key_dir = args.key_dir or (
            Path(os.environ["SIZEGUARD_KEY_DIR"]) if os.environ.get("SIZEGUARD_KEY_DIR") else None
        )
        if key_dir is None:
            raise CommandError(
                "no signing key: pass --key-dir DIR (see `sizeguard keys init`) or --read-only"
            )
        try:
            key = load_signing_key(key_dir)
        except (KeyStoreError, OSError, ValueError) as exc:
            raise CommandError(f"cannot load the signing key from {key_dir}: {exc}") from None
    try:
        cluster = Cluster.connect(kubeconfig, context=args.context)
    except ClusterError as exc:
        raise CommandError(str(exc)) from None
    try:
        ledger = Ledger(args.ledger or default_ledger_path())
    except LedgerError as exc:
        raise CommandError(str(exc)) from None
    return Service(
        cluster=cluster,
        policy=PolicyClient(args.opa_url or default_opa_url()),
        ledger=ledger,
        key=key,
        read_only=read_only,
        kubeconfig=kubeconfig,
        context=args.context,
        prometheus_url=getattr(args, "prometheus_url", None)
        or os.environ.get("PROMETHEUS_URL")
        or None,
    )


def _serve(args: argparse.Namespace) -> int:
    from sizeguard.server.app import build_app

    configure_logging()  # one JSON event per tool call on stderr; stdout may be the protocol
    service = build_service(args, read_only=args.read_only, need_key=not args.read_only)
    app = build_app(service)
    if args.transport == "http":
        print(f"sizeguard MCP server on http://{args.host}:{args.port}/mcp", file=sys.stderr)
        app.run(
            transport="http", host=args.host, port=args.port, show_banner=False, log_level="warning"
        )
    else:
        app.run(transport="stdio", show_banner=False)
    return 0


def _ask(prompt: str) -> str:
    try:
        return input(prompt)
    except EOFError:
        return ""


def _approve(args: argparse.Namespace) -> int:
    if not sys.stdin.isatty():
        raise CommandError("`sizeguard approve` needs a terminal: a person must answer, not a pipe")
    service = build_service(args, read_only=False, need_key=False)
    cs_id = args.change_set_id
    user = getpass.getuser()
    try:
        preview, source = service.stored_preview(cs_id, actor=f"{user} (terminal)")
    except (ServiceError, LedgerError) as exc:
        raise CommandError(str(exc)) from None
    op = change_set_op(source)
    print(confirmation_text(preview, op))
    print()
    if not preview.policy.allowed or any(not d.admitted for d in preview.dry_run):
        for v in preview.policy.violations:
            print(f"  denied: {v.message}")
        for d in preview.dry_run:
            if not d.admitted:
                print(f"  dry run refused: {d.target}: {d.error}")
        raise CommandError(f"{cs_id} cannot be approved (see above)")
    typed = None
    if preview.typed_confirmation:
        typed = _ask(f"Type {' '.join(preview.typed_confirmation)} to approve: ")
        try:
            check_typed(preview.typed_confirmation, typed)
        except ServiceError as exc:
            service.record_refusal(
                cs_id, actor=f"{user} (terminal)", status="declined", channel="terminal"
            )
            raise CommandError(str(exc)) from None
    answer = _ask(f"Approve {op} of {cs_id}? [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        service.record_refusal(
            cs_id, actor=f"{user} (terminal)", status="declined", channel="terminal"
        )
        print("not approved; nothing changes")
        return 1
    try:
        approval = service.approve(
            cs_id, approver=f"{user} (terminal)", typed=typed, channel="terminal"
        )
    except ServiceError as exc:
        raise CommandError(str(exc)) from None
    print(f"approved: {op} of {cs_id} until {timestamp(approval.expires_at)} (one use)")
    print(f"the assistant can now call apply_changes('{cs_id}')")
    return 0
