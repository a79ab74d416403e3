"""`sizeguard serve` (the MCP server) and `sizeguard approve` (a human approves in a terminal)."""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from sizeguard.approvals import KeyStoreError, SigningKey, load_signing_key
from sizeguard.cli.kubeconfig import kubeconfig_path
from sizeguard.cluster import Cluster, ClusterError
from sizeguard.errors import CommandError
from sizeguard.ledger import Ledger, LedgerError, default_ledger_path
from sizeguard.logs import configure_logging
from sizeguard.policy import PolicyClient, default_opa_url
from sizeguard.server.page.options import add_page_flags, page_options, serve_page
from sizeguard.server.service import (
    DEFAULT_APPROVAL_URL,
    Service,
    ServiceError,
    change_set_op,
    check_typed,
    confirmation_text,
    page_refusal,
    timestamp,
)
from sizeguard.server.strength import needs_page
from sizeguard.server.token_file import (
    NAME_RE,
    TOKEN_FILE_NAME,
    LocalToken,
    TokenFileError,
    load_or_create_token,
)

if TYPE_CHECKING:
    from fastmcp.server.auth import AuthProvider

__all__ = ["build_service", "check_http_flags", "is_loopback", "register", "token_instructions"]

_log = structlog.get_logger("sizeguard.server")

DEFAULT_AUDIENCE = "sizeguard"


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


def _http_flags(parser: argparse.ArgumentParser) -> None:
    http = parser.add_argument_group(
        "HTTP transport",
        "Who may connect: the Host and Origin headers must be loopback names (or ones added "
        "here), and every request needs a bearer token: by default the one in --token-file, "
        "created on the first start; or a JWT (--jwt-*) for use in a cluster.",
    )
    http.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    http.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    http.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests whose Host header is NAME (repeatable; default: loopback "
        "names only); e.g. the Service name clients use in a cluster",
    )
    http.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="also accept requests whose Origin header is ORIGIN, e.g. https://ai.example.com "
        "(repeatable; default: loopback origins only)",
    )
    http.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="the bearer token clients present; created (mode 0600) on the first start, "
        f"never overwritten (default: {TOKEN_FILE_NAME} next to the ledger)",
    )
    http.add_argument(
        "--token-name",
        metavar="NAME",
        help="the name of a new token: its clients are recorded as token:NAME (default: your "
        "user name); an existing token file keeps its name",
    )
    http.add_argument(
        "--jwt-kubernetes",
        action="store_true",
        help="accept Kubernetes ServiceAccount tokens of the server's own cluster (issuer and "
        "keys from its API server) instead of a token file",
    )
    http.add_argument(
        "--jwt-jwks-uri", metavar="URL", help="accept JWTs signed by a key of this JWKS"
    )
    http.add_argument(
        "--jwt-public-key", type=Path, metavar="FILE", help="accept JWTs signed by this PEM key"
    )
    http.add_argument("--jwt-issuer", metavar="ISS", help="the JWTs' issuer (iss)")
    http.add_argument(
        "--jwt-audience",
        default=DEFAULT_AUDIENCE,
        metavar="AUD",
        help=f"the audience the JWTs must name (default {DEFAULT_AUDIENCE})",
    )
    http.add_argument(
        "--jwt-algorithm",
        metavar="ALG",
        help="the JWTs' signing algorithm (default: as the cluster announces, else RS256)",
    )
    http.add_argument(
        "--jwt-subject",
        action="append",
        default=[],
        metavar="PATTERN",
        help="a subject (sub) that may call, e.g. system:serviceaccount:ai:assistant; "
        "shell patterns allowed (repeatable; required with JWTs)",
    )
    http.add_argument(
        "--no-auth",
        action="store_true",
        help="no authentication at all: only with a loopback --host, for a single-user machine",
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
    _http_flags(serve)
    add_page_flags(serve)
    serve.set_defaults(func=_serve)

    approve = subparsers.add_parser(
        "approve",
        help="approve a previewed change set in a terminal (for clients that cannot ask)",
        description=(
            "Shows the same summary the MCP confirmation shows and asks the same question. "
            "Needs a terminal: a person answers, not a script. Only for change sets whose "
            "policy requires at most a typed confirmation: where it requires an enrolled "
            "approver (production, critical workloads by default), approve on the approval "
            "page instead; this command refuses and names its address."
        ),
    )
    approve.add_argument("change_set_id", metavar="CHANGE_SET_ID")
    approve.add_argument(
        "--approval-url",
        default=os.environ.get("SIZEGUARD_APPROVAL_URL", DEFAULT_APPROVAL_URL),
        metavar="URL",
        help="the approval page's address, named when the change set needs it "
        "(default: $SIZEGUARD_APPROVAL_URL or %(default)s)",
    )
    _connection_flags(approve)
    approve.set_defaults(func=_approve)


def build_service(args: argparse.Namespace, *, read_only: bool, need_key: bool) -> Service:
    kubeconfig = kubeconfig_path(args.kubeconfig)
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


def is_loopback(host: str) -> bool:
    """A loopback address or ``localhost``: reachable from this machine only."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


_HTTP_ONLY = (
    "allowed_host",
    "allowed_origin",
    "token_file",
    "token_name",
    "jwt_kubernetes",
    "jwt_jwks_uri",
    "jwt_public_key",
    "jwt_issuer",
    "jwt_algorithm",
    "jwt_subject",
    "no_auth",
)
_ORIGIN_RE = re.compile(r"https?://[A-Za-z0-9.*\[\]:-]+")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_http_flags(args: argparse.Namespace) -> str:
    """Which authentication the flags ask for (``token``, ``jwt`` or ``none``), or a
    :class:`CommandError` saying what does not fit together."""
    given = [name for name in _HTTP_ONLY if getattr(args, name, None)]
    if args.transport != "http":
        if given:
            raise CommandError(
                f"{', '.join(_flag(n) for n in given)}: for --transport http only (over stdio "
                "the client starts the server itself, and needs no token)"
            )
        return "stdio"
    for pattern in args.allowed_host:
        if not pattern.strip() or pattern.strip() == "*":
            raise CommandError(
                f"--allowed-host {pattern!r}: name a host (a bare '*' would answer any Host, "
                "which is what DNS rebinding needs)"
            )
    for origin in args.allowed_origin:
        if origin.strip() == "*" or _ORIGIN_RE.fullmatch(origin.strip().rstrip("/")) is None:
            raise CommandError(
                f"--allowed-origin {origin!r}: give an origin such as https://ai.example.com "
                "(scheme, host and optional port; not '*')"
            )
    jwt_sources = [
        n for n in ("jwt_kubernetes", "jwt_jwks_uri", "jwt_public_key") if getattr(args, n)
    ]
    jwt_options = [n for n in ("jwt_issuer", "jwt_algorithm", "jwt_subject") if getattr(args, n)]
    token_options = [n for n in ("token_file", "token_name") if getattr(args, n)]
    if args.no_auth:
        if not is_loopback(args.host):
            raise CommandError(
                f"--no-auth is refused with --host {args.host}: without authentication the "
                "server may listen on a loopback address only (127.0.0.1, ::1, localhost)"
            )
        others = jwt_sources + jwt_options + token_options
        if others:
            raise CommandError(
                f"--no-auth and {', '.join(_flag(n) for n in others)} contradict each other"
            )
        return "none"
    if jwt_sources or jwt_options:
        if len(jwt_sources) != 1:
            raise CommandError(
                "JWTs need exactly one source of keys: --jwt-kubernetes, --jwt-jwks-uri or "
                "--jwt-public-key"
            )
        if token_options:
            raise CommandError(
                f"{', '.join(_flag(n) for n in token_options)}: not with JWTs (one way to "
                "authenticate at a time)"
            )
        if not args.jwt_subject:
            raise CommandError(
                "name who may call with --jwt-subject (e.g. "
                "system:serviceaccount:NAMESPACE:NAME; repeatable): any holder of a token from "
                "the issuer for this audience would do otherwise"
            )
        if not args.jwt_kubernetes and not args.jwt_issuer:
            raise CommandError("--jwt-issuer is required with --jwt-jwks-uri/--jwt-public-key")
        if not args.jwt_audience:
            raise CommandError("--jwt-audience must not be empty")
        return "jwt"
    if args.token_name is not None and NAME_RE.fullmatch(args.token_name) is None:
        raise CommandError(
            f"--token-name {args.token_name!r}: 1-63 lower-case letters, digits or '-'"
        )
    return "token"


def _jwt_verifier(args: argparse.Namespace, service: Service) -> tuple[AuthProvider, str]:
    from sizeguard.server.auth import SubjectJWTVerifier, kubernetes_issuer

    if args.jwt_kubernetes:
        try:
            issuer = kubernetes_issuer(service.cluster.api.configuration)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        verifier = SubjectJWTVerifier(
            allowed_subjects=args.jwt_subject,
            jwks_uri=issuer.jwks_uri,
            issuer=args.jwt_issuer or issuer.issuer,
            audience=args.jwt_audience,
            algorithm=args.jwt_algorithm or issuer.algorithm,
            http_client=issuer.http_client,
        )
        where = f"the cluster's service-account issuer {verifier.issuer}"
    else:
        key: str | None = None
        if args.jwt_public_key is not None:
            try:
                key = args.jwt_public_key.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"cannot read --jwt-public-key: {exc}") from None
        try:
            verifier = SubjectJWTVerifier(
                allowed_subjects=args.jwt_subject,
                public_key=key,
                jwks_uri=args.jwt_jwks_uri,
                issuer=args.jwt_issuer,
                audience=args.jwt_audience,
                algorithm=args.jwt_algorithm,
            )
        except ValueError as exc:
            raise CommandError(f"JWT settings: {exc}") from None
        where = f"issuer {args.jwt_issuer}"
    return verifier, (
        f"clients authenticate with a JWT from {where} for audience {args.jwt_audience}, "
        f"whose subject is one of {', '.join(args.jwt_subject)}; they are recorded as "
        "jwt:<subject>"
    )


def token_instructions(url: str, token: LocalToken) -> str:
    """How to pass the token to Claude Code and VS Code (the token itself is never printed:
    the commands read it from its file)."""
    where = f"{token.path} ({'created now' if token.created else 'existing'}, mode 0600)"
    vscode = {
        "inputs": [
            {
                "type": "promptString",
                "id": "sizeguard-token",
                "description": f"sizeguard MCP token (cat {token.path})",
                "password": True,
            }
        ],
        "servers": {
            "sizeguard": {
                "type": "http",
                "url": url,
                "headers": {"Authorization": "Bearer ${input:sizeguard-token}"},
            }
        },
    }
    return "\n".join(
        [
            f"clients authenticate with the bearer token in {where}; they are recorded as "
            f"{token.identity}",
            "  Claude Code:",
            f"    claude mcp add --transport http sizeguard {url} "
            f'--header "Authorization: Bearer $(cat {token.path})"',
            "  VS Code (.vscode/mcp.json; VS Code asks for the token once and keeps it as a "
            "secret):",
            "    " + json.dumps(vscode),
        ]
    )


def _serve(args: argparse.Namespace) -> int:
    from sizeguard.server.app import build_app
    from sizeguard.server.auth import LocalTokenVerifier

    mode = check_http_flags(args)
    page = page_options(args)
    configure_logging()  # one JSON event per tool call on stderr; stdout may be the protocol
    service = build_service(args, read_only=args.read_only, need_key=not args.read_only)
    if page is not None:  # its own port over stdio too: the client owns stdin and stdout
        serve_page(page, service)
    else:  # a page another server serves on this ledger, or none
        service.approval_url = args.approval_url
    if mode == "stdio":
        build_app(service).run(transport="stdio", show_banner=False)
        return 0
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{args.port}/mcp"
    auth: AuthProvider | None = None
    if mode == "token":
        path = args.token_file or (args.ledger or default_ledger_path()).parent / TOKEN_FILE_NAME
        try:
            token = load_or_create_token(path, args.token_name)
        except TokenFileError as exc:
            raise CommandError(str(exc)) from None
        auth = LocalTokenVerifier(token)
        how = token_instructions(url, token)
    elif mode == "jwt":
        auth, how = _jwt_verifier(args, service)
    else:
        how = (
            "WARNING: --no-auth: any program on this machine can call the tools, and answer "
            "the confirmation as if it were you; the audit log records it as unauthenticated"
        )
        _log.warning(
            "serve.no_auth",
            host=args.host,
            port=args.port,
            detail="no authentication: any local program can call the tools and answer the "
            "confirmation; requests are recorded as unauthenticated",
        )
    print(f"sizeguard MCP server on {url}", file=sys.stderr)
    print(how, file=sys.stderr)
    if not is_loopback(args.host) and not args.allowed_host:
        print(
            f"note: requests must name a loopback Host (127.0.0.1, localhost); add "
            f"--allowed-host NAME for the name clients reach {args.host} by",
            file=sys.stderr,
        )
    build_app(service, auth=auth).run(
        transport="http",
        host=args.host,
        port=args.port,
        show_banner=False,
        log_level="warning",
        # FastMCP's Host/Origin guard on every request, before authentication and MCP
        host_origin_protection=True,
        allowed_hosts=list(args.allowed_host),
        allowed_origins=[o.strip().rstrip("/") for o in args.allowed_origin],
    )
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
    admitted = preview.policy.allowed and all(d.admitted for d in preview.dry_run)
    if admitted and needs_page(preview.policy.requires):
        service.approval_url = args.approval_url
        raise CommandError(page_refusal(service, cs_id, preview.policy.requires))
    print(confirmation_text(preview, op))
    print()
    if not admitted:
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
