"""Serve the webhook over TLS with uvicorn (httptools on uvloop), reloading the certificate
when its files change.

uvicorn is given our own :class:`ssl.SSLContext` (``ssl_context_factory``). A background task
stats the certificate and key files about once a second; when either changed, the pair is
first loaded into a scratch context (so a half-written or mismatched pair is refused and the
old certificate keeps serving), then into the live context, which every new TLS handshake
uses. Rotation (e.g. cert-manager renewing the Secret) needs no restart.

With ``workers`` > 1 (:func:`run`), the process binds the listening socket, then forks that
many workers, each with its own event loop, app, OPA connections and Namespace watch, all
accepting on the one socket (the kernel hands each new connection to one of them). The parent
only supervises: it forwards SIGTERM/SIGINT, and starts a worker again when one dies (it
stops everything when a worker fails within seconds of its start: a broken configuration).
Nothing a decision needs is shared between workers, so none of them needs another's memory:
an approval is bound to the object's resourceVersion (docs/webhook.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import structlog
import uvicorn
import uvloop
from cryptography import x509
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sizeguard.webhook.app import WebhookApp
from sizeguard.webhook.overload import DEFAULT_MAX_CONNECTIONS

_log = structlog.get_logger("sizeguard.webhook.server")

Identity = tuple[tuple[int, int, int, int] | None, tuple[int, int, int, int] | None]


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def certificate_not_after(path: Path) -> float | None:
    """The expiry (Unix time) of the first certificate in a PEM file, None if unreadable."""
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    return certificate.not_valid_after_utc.timestamp()


def _new_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


class ReloadingTLS:
    """One live server-side SSLContext whose certificate follows two files."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key
        self.context = _new_context()
        self.context.load_cert_chain(str(cert), str(key))  # fails loudly at startup
        self._identity: Identity = (_identity(cert), _identity(key))
        self.last_error: str | None = None
        self.not_after = certificate_not_after(cert)

    def maybe_reload(self) -> bool | None:
        """Reload if the files changed: True when reloaded, False when refused, None if same."""
        identity = (_identity(self.cert), _identity(self.key))
        if identity == self._identity:
            return None
        try:
            _new_context().load_cert_chain(str(self.cert), str(self.key))
        except (OSError, ssl.SSLError) as exc:
            message = f"{type(exc).__name__}: {exc}"
            if message != self.last_error:
                _log.error(
                    "tls.reload_failed", cert=str(self.cert), key=str(self.key), error=message
                )
            self.last_error = message
            return False  # retried on the next tick: the files may still be being written
        self.context.load_cert_chain(str(self.cert), str(self.key))
        self._identity = identity
        self.last_error = None
        self.not_after = certificate_not_after(self.cert)
        _log.info("tls.reloaded", cert=str(self.cert))
        return True


HANDSHAKE_TIMEOUT_SECONDS = 5.0
"""A TLS handshake that takes longer gives its connection slot back (the API server's own
timeout for a webhook call is at most 30 s, and 5 s in the chart)."""


class _GatedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol that gives its connection slot back when it ends."""

    release: Callable[[], None] | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.release is not None:
            self.release()
            self.release = None


class _GatedServer(uvicorn.Server):
    """uvicorn's server, accepting connections itself: at most ``max_connections`` are open
    or in their TLS handshake at once. While all slots are taken, nothing more is accepted:
    new connections wait in the kernel's accept queue (``backlog``) and beyond it are not
    taken, so a storm of new connections (a caller that opens one per request once its pool
    of idle ones is used up, as the API server's HTTP/1.1 client does) costs neither a TLS
    handshake nor memory for each. (uvicorn alone accepts every connection and only then
    compares the count with ``limit_concurrency``: the handshakes and buffers come first.)"""

    def __init__(self, config: uvicorn.Config, sock: socket.socket, max_connections: int):
        super().__init__(config)
        self.sock = sock
        self.slots = asyncio.Semaphore(max_connections)
        self.pending: set[asyncio.Task[None]] = set()
        self.accepting: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            raise SystemExit(3)  # uvicorn's STARTUP_FAILURE
        self.servers = []
        self.sock.setblocking(False)
        self.accepting = asyncio.create_task(self._accept())
        self.started = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.accepting is not None:
            self.accepting.cancel()
        for task in list(self.pending):
            task.cancel()
        await super().shutdown(sockets=None)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.slots.acquire()
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as exc:  # e.g. out of file descriptors: try again shortly
                self.slots.release()
                _log.warning("webhook.accept_failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._connect(conn))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def _connect(self, conn: socket.socket) -> None:
        config = self.config
        protocol = config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=self.server_state, app_state=self.lifespan.state
        )
        assert isinstance(protocol, _GatedHttpTools)
        protocol.release = self.slots.release
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=config.ssl,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT_SECONDS,
            )
        except (OSError, ssl.SSLError, TimeoutError, asyncio.CancelledError):
            # the handshake failed or timed out, or we are stopping: connection_made never
            # ran, so the slot is given back here
            conn.close()
            if protocol.release is not None:
                protocol.release = None
                self.slots.release()


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    cert: Path
    key: Path
    reload_interval: float = 1.0
    limit_concurrency: int = DEFAULT_MAX_CONNECTIONS  # per pod, shared by the workers
    workers: int = 1
    backlog: int = 256


async def serve(app: WebhookApp, options: ServeOptions, sock: socket.socket | None = None) -> None:
    """Serve ``app`` in this process (on ``sock`` when given, else on host:port)."""
    tls = ReloadingTLS(options.cert, options.key)
    app.metrics.tls_reloads.labels("ok").inc()
    if tls.not_after is not None:
        app.metrics.tls_not_after.set(tls.not_after)

    def factory(config: uvicorn.Config, default: Any) -> ssl.SSLContext:
        return tls.context

    per_worker = max(16, options.limit_concurrency // max(1, options.workers))
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        ssl_context_factory=factory,
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        # The connections a worker holds are bounded by _GatedServer (it stops accepting),
        # the decisions in flight by the app's Gate (the rest are denied at once). uvicorn's
        # own check, on connections or on request tasks (which can outlive a connection its
        # caller closed), answers 503 instead of an AdmissionReview: a backstop only.
        limit_concurrency=2 * per_worker + 1,
        timeout_keep_alive=30,
        # a short accept queue: under a connection storm the kernel holds back new
        # connections instead of queueing thousands whose callers give up before they are
        # read (each would still cost a TLS handshake once the storm ends)
        backlog=options.backlog,
        # httptools (llhttp, C) parses HTTP/1.1; with uvloop's TLS transport (50 KiB per
        # connection where asyncio's holds a 256 KiB buffer) the fast path costs about half
        # the CPU of h11 on asyncio (docs/operations.md, sizing).
        http=_GatedHttpTools,
        ws="none",
    )
    if sock is None:
        sock = listening_socket(options.host, options.port, options.backlog)
    server = _GatedServer(config, sock, max_connections=per_worker)

    async def watch() -> None:
        while True:
            await asyncio.sleep(options.reload_interval)
            try:
                result = tls.maybe_reload()
            except Exception as exc:  # never let the watcher die
                _log.error("tls.reload_failed", error=f"{type(exc).__name__}: {exc}")
                continue
            if result is not None:
                app.metrics.tls_reloads.labels("ok" if result else "failed").inc()
            if result and tls.not_after is not None:
                app.metrics.tls_not_after.set(tls.not_after)
            app.jwks.refresh()

    watcher = asyncio.create_task(watch())
    try:
        await server.serve()
    finally:
        watcher.cancel()


def listening_socket(host: str, port: int, backlog: int = 256) -> socket.socket:
    """A bound, listening TCP socket (shared by the worker processes)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


QUICK_FAILURE_SECONDS = 5.0
"""A worker that exits with an error this soon after its start stops the whole webhook."""


def run(make_app: Callable[[], WebhookApp], options: ServeOptions) -> int:
    """Serve until SIGTERM/SIGINT: in this process, or in ``options.workers`` forked worker
    processes sharing one listening socket. Returns the exit status."""
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if options.workers <= 1:
        asyncio.run(serve(make_app(), options))
        return 0
    sock = listening_socket(options.host, options.port, options.backlog)
    return _Supervisor(make_app, options, sock).run()


class _Supervisor:
    def __init__(
        self, make_app: Callable[[], WebhookApp], options: ServeOptions, sock: socket.socket
    ) -> None:
        self.make_app = make_app
        self.options = options
        self.sock = sock
        self.children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, started)
        self.stopping = False
        self.status = 0

    def _worker(self, index: int) -> None:  # pragma: no cover - runs in the forked child
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        code = 0
        try:
            asyncio.run(serve(self.make_app(), self.options, self.sock))
        except KeyboardInterrupt:
            pass
        except SystemExit as exc:  # uvicorn's startup failure
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:
            code = 1
            _log.error("webhook.worker_failed", worker=index, error=f"{exc!r}"[:500])
        finally:
            os._exit(code)

    def _spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            self._worker(index)
        self.children[pid] = (index, time.monotonic())

    def _signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def run(self) -> int:
        gc.collect()
        gc.freeze()  # the objects imported so far stay shared with the workers (copy on write)
        previous = {
            sig: signal.signal(sig, self._signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for index in range(self.options.workers):
                self._spawn(index)
            _log.info("webhook.workers_started", workers=self.options.workers)
            while self.children:
                try:
                    pid, wait_status = os.wait()
                except ChildProcessError:
                    break
                if pid not in self.children:
                    continue
                index, started = self.children.pop(pid)
                code = os.waitstatus_to_exitcode(wait_status)
                if self.stopping:
                    continue
                _log.error("webhook.worker_exited", worker=index, pid=pid, status=code)
                if code != 0 and time.monotonic() - started < QUICK_FAILURE_SECONDS:
                    self.status = 1
                    self._signal(signal.SIGTERM, None)
                    continue
                time.sleep(0.5)
                if not self.stopping:
                    self._spawn(index)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.sock.close()
        return self.status
