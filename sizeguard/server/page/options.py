"""`sizeguard serve`'s approval-page flags, and starting the page for it.

--approval-url URL      the address people reach the page by (default
                        http://localhost:PORT); its host is the passkeys' relying party
--approval-host ADDR    where the page listens (default 127.0.0.1; with a localhost
                        approval URL, on ::1 as well)
--approval-port PORT    its port (default 8765; 0 picks one free on every address); a
                        port taken on any of them stops serve: nothing else may answer
                        the approval URL
--no-approval-page      do not serve it (changes that need an authenticated approver
                        are then approved on the page of another server on this ledger)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import structlog
from starlette.types import ASGIApp

from sizeguard.errors import CommandError
from sizeguard.server.page.security import ApprovalOrigin, parse_approval_url

if TYPE_CHECKING:
    from sizeguard.server.page.runner import PageServer
    from sizeguard.server.service import Service

__all__ = [
    "DEFAULT_APPROVAL_PORT",
    "PageOptions",
    "add_page_flags",
    "default_approval_url",
    "page_options",
    "serve_page",
    "start_page",
]

DEFAULT_APPROVAL_PORT: Final = 8765
APPROVAL_URL_ENV: Final = "SIZEGUARD_APPROVAL_URL"  # also `sizeguard approvers invite`'s default

_log = structlog.get_logger("sizeguard.page")


def default_approval_url(port: int = DEFAULT_APPROVAL_PORT) -> str:
    return f"http://localhost:{port}"


def add_page_flags(parser: argparse.ArgumentParser) -> None:
    page = parser.add_argument_group(
        "approval page",
        "People enrolled with `sizeguard approvers invite` approve the changes the policy "
        "gives to an authenticated approver on this page, with a passkey. It is served "
        "whatever the MCP transport, on its own port.",
    )
    page.add_argument(
        "--approval-url",
        metavar="URL",
        default=os.environ.get(APPROVAL_URL_ENV) or None,
        help="the address people open the page by; its host is the passkeys' relying party "
        f"(default ${APPROVAL_URL_ENV}, else http://localhost:APPROVAL-PORT; https and a DNS "
        "name behind an Ingress, or a port-forward to localhost, in a cluster)",
    )
    page.add_argument(
        "--approval-host",
        default="127.0.0.1",
        metavar="ADDR",
        help="the address the page listens on (default 127.0.0.1; 0.0.0.0 in a pod); with a "
        "localhost approval URL it listens on ::1 too, where browsers look first",
    )
    page.add_argument(
        "--approval-port",
        type=int,
        default=DEFAULT_APPROVAL_PORT,
        metavar="PORT",
        help=f"the page's port (default {DEFAULT_APPROVAL_PORT}; 0: a free port). serve "
        "refuses to start when it is taken on any address the page listens on",
    )
    page.add_argument(
        "--no-approval-page",
        action="store_true",
        help="do not serve the page (another `sizeguard serve` on the same ledger may)",
    )


@dataclass(frozen=True)
class PageOptions:
    host: str
    port: int
    approval: ApprovalOrigin | None
    """None: http://localhost:<the port bound> (``--approval-port 0`` picks a free one)."""

    def origin_for(self, bound_port: int) -> ApprovalOrigin:
        return self.approval or parse_approval_url(default_approval_url(bound_port))

    @property
    def localhost(self) -> bool:
        """The approval URL names ``localhost``: the page must own both loopback addresses."""
        return self.approval is None or self.approval.host == "localhost"


def page_options(args: argparse.Namespace) -> PageOptions | None:
    """The page's settings from the flags, None with ``--no-approval-page`` or
    ``--read-only``, or a :class:`CommandError` naming the flag that does not fit."""
    if args.no_approval_page or getattr(args, "read_only", False):
        return None
    if not 0 <= args.approval_port <= 65535:
        raise CommandError(f"--approval-port {args.approval_port}: 0-65535")
    url = args.approval_url
    if url is None and args.approval_port:
        url = default_approval_url(args.approval_port)
    try:
        approval = None if url is None else parse_approval_url(url)
    except ValueError as exc:
        raise CommandError(f"--approval-url {exc}") from None
    return PageOptions(args.approval_host, args.approval_port, approval)


def start_page(
    options: PageOptions, build: Callable[[ApprovalOrigin, int], ASGIApp]
) -> tuple[PageServer, ApprovalOrigin]:
    """Listen first (the bound port decides which loopback names redirect to the approval
    URL), then serve the app ``build(approval, port)`` makes. With a ``localhost`` approval
    URL the page listens on 127.0.0.1 and ::1 alike (:func:`.runner.page_addresses`).

    Fails closed: a port that is taken on any of those addresses, or a page that does not
    start, is a :class:`CommandError` before any approval URL is handed out. A program
    already listening there would answer the approvers' browsers under the page's origin."""
    from sizeguard.server.page.runner import (
        PageStartError,
        listen_page,
        show,
        start_page_server,
    )

    url = options.approval.url if options.approval else "http://localhost:PORT"
    try:
        socks = listen_page(options.host, options.port, localhost=options.localhost)
    except PageStartError as exc:
        _log.error("page.not_started", detail=str(exc))
        raise CommandError(_not_started(exc, url)) from None
    port = int(socks[0].getsockname()[1])
    approval = options.origin_for(port)
    try:
        server = start_page_server(build(approval, port), socks)
    except PageStartError as exc:
        _log.error("page.not_started", detail=str(exc))
        raise CommandError(_not_started(exc, approval.url)) from None
    where = " and ".join(show(address, port) for address in server.addresses)
    print(f"approval page on {approval.url} (listening on {where})", file=sys.stderr)
    return server, approval


def _not_started(exc: Exception, url: str) -> str:
    return (
        f"{exc}; serve does not start rather than send approvers to {url}, which another "
        "program could answer: free the port, choose another with --approval-port PORT "
        "(0: a free one), or serve without the page with --no-approval-page"
    )


def serve_page(options: PageOptions, service: Service) -> PageServer:
    """The approval page over ``service``'s ledger, for `sizeguard serve`; the service learns
    its address (the URL ``request_confirmation`` gives and invites link to)."""
    from sizeguard.server.page.app import build_page_app

    server, approval = start_page(
        options, lambda origin, port: build_page_app(service, origin, bound_port=port)
    )
    service.approval_url = approval.url
    return server
