"""`sizeguard webhook`: serve the validating admission webhook over TLS."""

from __future__ import annotations

import argparse
import contextlib
import ssl
from pathlib import Path
from typing import Any

import structlog

from sizeguard.errors import CommandError
from sizeguard.logs import configure_logging
from sizeguard.policy import DEFAULT_TIMEOUT, AsyncPolicyClient, default_opa_url
from sizeguard.webhook.overload import DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IN_FLIGHT


def register(subparsers: Any) -> None:
    """Add the ``webhook`` command to the top-level sub-parsers."""
    webhook = subparsers.add_parser(
        "webhook",
        help="serve the validating admission webhook (HTTPS) that enforces approvals",
        description=(
            "Serve POST /validate (admission.k8s.io/v1 AdmissionReview), /healthz, /readyz and "
            "/metrics over TLS. Changes of a workload's footprint need a valid sizeguard "
            "approval and OPA's admission decision; everything unexpected is denied. It "
            "watches Namespaces (their labels go to the policy), so it needs get/list/watch "
            "on namespaces. The certificate and the JWKS are reloaded when their files "
            "change. Logs are JSON on stderr."
        ),
    )
    webhook.add_argument("--tls-cert", required=True, type=Path, metavar="FILE")
    webhook.add_argument("--tls-key", required=True, type=Path, metavar="FILE")
    webhook.add_argument(
        "--jwks", required=True, type=Path, metavar="FILE", help="public keys (JWKS) to trust"
    )
    webhook.add_argument(
        "--opa-url", default=None, help="OPA base URL (default: $OPA_URL or http://127.0.0.1:8181)"
    )
    webhook.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        metavar="FILE",
        help="kubeconfig for watching Namespaces (default: in-cluster when running in a pod, "
        "else $KUBECONFIG or ~/.kube/config)",
    )
    webhook.add_argument("--port", type=_port, default=8443, help="HTTPS port (8443)")
    webhook.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    webhook.add_argument(
        "--opa-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"time allowed for one OPA decision before denying ({DEFAULT_TIMEOUT:g})",
    )
    webhook.add_argument(
        "--max-in-flight",
        type=_positive,
        default=None,
        metavar="N",
        help="admission decisions one worker works on at once; more are denied at once as "
        f"overloaded ({DEFAULT_MAX_IN_FLIGHT})",
    )
    webhook.add_argument(
        "--max-connections",
        type=_positive,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="connections the pod holds open or in their TLS handshake at once, shared by "
        f"its workers; more wait in the kernel's accept queue ({DEFAULT_MAX_CONNECTIONS})",
    )
    webhook.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="worker processes sharing the port (1); each has its own OPA connections and "
        "Namespace watch",
    )
    webhook.set_defaults(func=_run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if not 0 < value <= 1024:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and 1024")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port {value} is out of range")
    return value


def _run(args: argparse.Namespace) -> int:
    from sizeguard.webhook.app import WebhookApp
    from sizeguard.webhook.keys import JwksFile
    from sizeguard.webhook.metrics import Metrics
    from sizeguard.webhook.namespaces import (
        KubernetesNamespaces,
        NamespaceWatch,
        client_configuration,
    )
    from sizeguard.webhook.server import ReloadingTLS, ServeOptions, run

    if not 0 < args.opa_timeout <= 10:
        raise CommandError("--opa-timeout must be between 0 and 10 seconds")
    opa_url = args.opa_url or default_opa_url()
    try:
        AsyncPolicyClient(opa_url)  # validates the URL; the real client is made in the loop
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    try:
        ReloadingTLS(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(f"cannot load the TLS certificate/key: {exc}") from None
    try:
        namespace_api = KubernetesNamespaces(client_configuration(args.kubeconfig))
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    configure_logging(cache=True)
    max_in_flight = args.max_in_flight or DEFAULT_MAX_IN_FLIGHT

    def make_app() -> WebhookApp:
        # Called in each worker process (after the fork): its own keys, watch and OPA pool.
        metrics = Metrics()

        def reloaded(ok: bool) -> None:
            metrics.jwks_reloads.labels("ok" if ok else "failed").inc()

        return WebhookApp(
            jwks=JwksFile(args.jwks, on_reload=reloaded),
            namespaces=NamespaceWatch(namespace_api, metrics=metrics),
            policy_factory=lambda: AsyncPolicyClient(
                opa_url, timeout=args.opa_timeout, pool_size=max_in_flight
            ),
            metrics=metrics,
            max_in_flight=max_in_flight,
        )

    structlog.get_logger("sizeguard.webhook").info(
        "webhook.starting",
        host=args.host,
        port=args.port,
        jwks=str(args.jwks),
        opa_url=opa_url,
        opa_timeout=args.opa_timeout,
        kubernetes=namespace_api.server,
        workers=args.workers,
        max_in_flight=max_in_flight,
    )
    options = ServeOptions(
        args.host,
        args.port,
        args.tls_cert,
        args.tls_key,
        workers=args.workers,
        limit_concurrency=args.max_connections,
    )
    with contextlib.suppress(KeyboardInterrupt):
        return run(make_app, options)
    return 0
