"""Serve the webhook over TLS with uvicorn, reloading the certificate when its files change.

uvicorn is given our own :class:`ssl.SSLContext` (``ssl_context_factory``). A background task
stats the certificate and key files about once a second; when either changed, the pair is
first loaded into a scratch context (so a half-written or mismatched pair is refused and the
old certificate keeps serving), then into the live context, which every new TLS handshake
uses. Rotation (e.g. cert-manager renewing the Secret) needs no restart.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from cryptography import x509

from sizeguard.webhook.app import WebhookApp

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


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    cert: Path
    key: Path
    reload_interval: float = 1.0
    limit_concurrency: int = 1000


async def serve(app: WebhookApp, options: ServeOptions) -> None:
    tls = ReloadingTLS(options.cert, options.key)
    app.metrics.tls_reloads.labels("ok").inc()
    if tls.not_after is not None:
        app.metrics.tls_not_after.set(tls.not_after)

    def factory(config: uvicorn.Config, default: Any) -> ssl.SSLContext:
        return tls.context

    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        ssl_context_factory=factory,
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        limit_concurrency=options.limit_concurrency,
        timeout_keep_alive=30,
        http="h11",
        ws="none",
    )
    server = uvicorn.Server(config)

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
