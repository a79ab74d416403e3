"""Run the approval page beside the MCP server, whatever the MCP transport.

Over stdio the client owns stdin/stdout, so the page gets a loopback port of its own; over
HTTP it listens on its own port too (``--approval-port``), apart from the MCP endpoint and its
bearer tokens: the people approving have passkeys, not the assistant's token. The server runs
in a daemon thread with its own event loop; uvicorn's access log is off (an enrolment path
holds a one-time token), the page logs its own events without it.

Owning the port: browsers resolve ``localhost`` to ``::1`` as well as ``127.0.0.1`` (Chromium
tries ``::1`` first), and on a shared machine any local user may listen on a loopback port.
When the approval URL's host is ``localhost`` the page therefore listens on both loopback
addresses on the same port, and refuses to start if either is taken: otherwise another
user's program on ``[::1]:PORT`` would get the approver's browser, with the page's origin and
relying-party id, and could relay real challenges for a change set of its choosing. ``::1`` is
skipped only on a machine without an IPv6 loopback.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import structlog
import uvicorn
from starlette.types import ASGIApp

__all__ = [
    "PageServer",
    "PageStartError",
    "PortTakenError",
    "listen_page",
    "page_addresses",
    "start_page_server",
]

_log = structlog.get_logger("sizeguard.page")

IPV4_LOOPBACK: Final = "127.0.0.1"
IPV6_LOOPBACK: Final = "::1"
NO_IPV6: Final = (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)
FREE_PORT_ATTEMPTS: Final = 32


class PageStartError(RuntimeError):
    """The page could not listen (the port is taken, the address is not this machine's)."""


class PortTakenError(PageStartError):
    """Another socket (another program, perhaps another user's) holds the port."""

    def __init__(self, address: str, port: int) -> None:
        super().__init__(
            f"the approval port {port} is taken on {show(address, port)} (another program, "
            "perhaps another user's, listens there)"
        )
        self.address = address
        self.port = port


@dataclass
class PageServer:
    server: uvicorn.Server
    thread: threading.Thread
    port: int
    addresses: tuple[str, ...] = ()
    """Every address the page listens on."""

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def show(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _normal(host: str) -> str:
    host = host.strip().lower().removeprefix("[").removesuffix("]")
    return IPV4_LOOPBACK if host == "localhost" else host


def page_addresses(host: str, *, localhost: bool) -> list[tuple[str, bool]]:
    """The addresses the page must own, each with whether it may be skipped (``::1`` added
    for a ``localhost`` URL, on a machine without an IPv6 loopback). ``--approval-host`` comes
    first; with a ``localhost`` approval URL both loopback addresses follow unless it covers
    them already (``0.0.0.0`` covers ``127.0.0.1``; ``::``, served dual-stack, covers both)."""
    host = _normal(host)
    addresses = [(host, False)]
    if not localhost or host == "::":
        return addresses
    if host not in (IPV4_LOOPBACK, "0.0.0.0"):  # noqa: S104 - compared, not bound
        addresses.append((IPV4_LOOPBACK, False))
    if host != IPV6_LOOPBACK:
        addresses.append((IPV6_LOOPBACK, True))
    return addresses


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not listening yet), or the OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR lets a restarted page reuse its port while old connections linger
        # (TIME_WAIT); it never lets two sockets listen on one address. No SO_REUSEPORT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # "::" serves IPv4 too; "::1" only itself
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _refusal(host: str, port: int, exc: OSError) -> PageStartError:
    if exc.errno == errno.EADDRINUSE:
        return PortTakenError(host, port)
    return PageStartError(
        f"the approval page cannot listen on {show(host, port)}: {exc.strerror or exc}"
    )


class _RetryError(Exception):
    """Port 0: the port picked on the first address is taken on another one."""


def _listen_once(addresses: list[tuple[str, bool]], port: int) -> list[socket.socket]:
    socks: list[socket.socket] = []
    try:
        chosen = port
        for address, optional in addresses:
            try:
                sock = _bind(address, chosen)
            except OSError as exc:
                if optional and exc.errno in NO_IPV6:
                    _log.warning(
                        "page.no_ipv6_loopback",
                        address=address,
                        port=chosen,
                        detail=exc.strerror or str(exc),
                        note="this machine has no IPv6 loopback: the page listens without it",
                    )
                    continue
                if port == 0 and exc.errno == errno.EADDRINUSE:
                    raise _RetryError from None
                raise _refusal(address, chosen, exc) from None
            socks.append(sock)
            chosen = chosen or int(sock.getsockname()[1])
        for sock in socks:
            sock.listen(128)
            sock.set_inheritable(True)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def listen_page(host: str, port: int, *, localhost: bool) -> list[socket.socket]:
    """Listening sockets on every address of :func:`page_addresses`, all on one port (0: one
    that is free on all of them), or :class:`PageStartError` (:class:`PortTakenError` when a
    socket of someone else holds the port on one of them) with none left open."""
    addresses = page_addresses(host, localhost=localhost)
    for _ in range(FREE_PORT_ATTEMPTS if port == 0 else 1):
        try:
            return _listen_once(addresses, port)
        except _RetryError:
            continue
    where = ", ".join(address for address, _ in addresses)
    raise PageStartError(
        f"the approval page found no port free on all of {where} in {FREE_PORT_ATTEMPTS} tries"
    )


def start_page_server(
    app: ASGIApp, socks: Sequence[socket.socket], *, timeout: float = 10.0
) -> PageServer:
    """Serve ``app`` on the sockets from :func:`listen_page` in a daemon thread."""
    addresses = tuple(str(s.getsockname()[0]) for s in socks)
    bound = int(socks[0].getsockname()[1])
    where = ", ".join(show(a, bound) for a in addresses)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)  # in a thread, uvicorn leaves the signal handlers alone

    def run() -> None:
        try:
            server.run(sockets=list(socks))
        finally:
            for each in socks:
                with contextlib.suppress(OSError):
                    each.close()

    thread = threading.Thread(target=run, name="sizeguard-approval-page", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise PageStartError(f"the approval page did not start on {where}")
        time.sleep(0.02)
    _log.info("page.started", addresses=list(addresses), port=bound)
    return PageServer(server, thread, bound, addresses)
