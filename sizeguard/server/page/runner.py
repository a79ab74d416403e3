"""Run the approval page beside the MCP server, whatever the MCP transport.

Over stdio the client owns stdin/stdout, so the page gets a loopback port of its own; over
HTTP it listens on its own port too (``--approval-port``), apart from the MCP endpoint and its
bearer tokens: the people approving have passkeys, not the assistant's token. The server runs
in a daemon thread with its own event loop; uvicorn's access log is off (an enrolment path
holds a one-time token), the page logs its own events without it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass

import structlog
import uvicorn
from starlette.types import ASGIApp

__all__ = ["PageServer", "PageStartError", "listen", "start_page_server"]

_log = structlog.get_logger("sizeguard.page")


class PageStartError(RuntimeError):
    """The page could not listen (the port is taken, the address is not this machine's)."""


@dataclass
class PageServer:
    server: uvicorn.Server
    thread: threading.Thread
    host: str
    port: int

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: a free port), or :class:`PageStartError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PageStartError(f"the approval page cannot listen on {host}:{port}: {exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def start_page_server(app: ASGIApp, sock: socket.socket, *, timeout: float = 10.0) -> PageServer:
    """Serve ``app`` on the socket from :func:`listen` in a daemon thread."""
    host, bound = str(sock.getsockname()[0]), int(sock.getsockname()[1])
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
            server.run(sockets=[sock])
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    thread = threading.Thread(target=run, name="sizeguard-approval-page", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise PageStartError(f"the approval page did not start on {host}:{bound}")
        time.sleep(0.02)
    _log.info("page.started", host=host, port=bound)
    return PageServer(server, thread, host, bound)
