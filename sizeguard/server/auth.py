"""Who may call the HTTP transport, and who the requester of a tool call is.

The HTTP transport is guarded in two layers, both FastMCP's own and both before any MCP
processing (``sizeguard serve`` wires them):

1. Host and Origin (FastMCP's ``HostOriginGuardMiddleware``, strict mode): a request whose
   ``Host`` is not a loopback name or an ``--allowed-host`` is answered 421; one whose
   ``Origin`` is neither loopback nor an ``--allowed-origin`` nor the server's own is answered
   403. This stops DNS rebinding and web pages.
2. A bearer token (FastMCP's ``RequireAuthMiddleware`` with a token verifier): no credentials,
   or wrong ones, are answered 401 with ``WWW-Authenticate: Bearer``. The verifier is either

   - :class:`LocalTokenVerifier`: the token in a file of the server's data directory
     (:mod:`sizeguard.server.token_file`), compared in constant time. The token carries its
     name: the requester is ``token:<name>``;
   - :class:`SubjectJWTVerifier`: FastMCP's ``JWTVerifier`` (signature by a JWKS or a public
     key, issuer, audience, expiry), and the subject must be one the operator allowed.
     :func:`kubernetes_issuer` points it at the cluster's service-account issuer, so that
     in-cluster clients present a ServiceAccount token (TokenRequest with audience
     ``sizeguard``). The requester is ``jwt:<sub>``, e.g.
     ``jwt:system:serviceaccount:ai:assistant``.

:func:`requester` is the identity recorded in the ledger and the audit log for every tool
call: the authenticated one; over stdio (no token: the client started the process) the
server's effective OS user from the password database (not ``$USER``/``$LOGNAME``, which the
client's configuration sets), ``stdio:<user>``; without authentication (``--no-auth``)
``unauthenticated``.
The client's self-reported name (:func:`~sizeguard.server.confirm.client_name`) is kept beside
it as a detail, never trusted.
"""

from __future__ import annotations

import hmac
import os
import pwd
import ssl
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Final

import httpx2
import structlog
from fastmcp import Context
from fastmcp.server.auth import AccessToken, TokenVerifier
from fastmcp.server.auth.providers.jwt import JWTVerifier
from fastmcp.server.dependencies import get_access_token
from kubernetes import client as k8s

from sizeguard.server.token_file import LocalToken

__all__ = [
    "IDENTITY_CLAIM",
    "KubernetesIssuer",
    "LocalTokenVerifier",
    "SubjectJWTVerifier",
    "identity_of",
    "kubernetes_issuer",
    "requester",
]

IDENTITY_CLAIM: Final = "sizeguard_identity"
_MAX_IDENTITY: Final = 200

_log = structlog.get_logger("sizeguard.server")


# --- verifiers ---------------------------------------------------------------------------------


class LocalTokenVerifier(TokenVerifier):
    """Accepts exactly the server's token (compared in constant time)."""

    def __init__(self, token: LocalToken) -> None:
        super().__init__()
        self._secret = token.secret.encode("ascii")
        self._identity = token.identity

    async def verify_token(self, token: str) -> AccessToken | None:
        given = token.strip().encode("utf-8", "replace")
        if not hmac.compare_digest(given, self._secret):
            return None
        return AccessToken(
            token=token,
            client_id=self._identity,
            scopes=[],
            expires_at=None,
            subject=self._identity,
            claims={IDENTITY_CLAIM: self._identity},
        )


# --- JWTs ------------------------------------------------------------------------------------


def _clean(text: str) -> str:
    return "".join(ch for ch in text if ch.isprintable() and not ch.isspace())[:_MAX_IDENTITY]


class SubjectJWTVerifier(JWTVerifier):
    """FastMCP's ``JWTVerifier``, and the token's ``sub`` must match one of
    ``allowed_subjects`` (shell-style patterns: ``system:serviceaccount:ai:*``)."""

    def __init__(self, *, allowed_subjects: Sequence[str], **kwargs: Any) -> None:
        if not allowed_subjects:
            raise ValueError("name the subjects that may call (at least one)")
        super().__init__(**kwargs)
        self.allowed_subjects = tuple(allowed_subjects)

    async def verify_token(self, token: str) -> AccessToken | None:
        access = await super().verify_token(token)
        if access is None:
            return None
        subject = access.claims.get("sub")
        if not isinstance(subject, str) or not _clean(subject) or _clean(subject) != subject:
            _log.warning("auth.refused", reason="the token has no usable subject")
            return None
        if not any(fnmatchcase(subject, pattern) for pattern in self.allowed_subjects):
            _log.warning("auth.refused", reason="subject not allowed", subject=subject)
            return None
        identity = f"jwt:{subject}"
        return access.model_copy(
            update={
                "client_id": identity,
                "subject": subject,
                "claims": {**access.claims, IDENTITY_CLAIM: identity},
            }
        )


class _KubernetesAuth(httpx2.Auth):
    """The server's own credentials for its cluster (a bearer token, refreshed as the
    Kubernetes client refreshes it; client certificates are in the TLS context)."""

    def __init__(self, configuration: k8s.Configuration) -> None:
        self._configuration = configuration

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        settings = self._configuration.auth_settings().get("BearerToken")
        if settings and settings.get("value"):
            request.headers["Authorization"] = str(settings["value"])
        yield request


def _tls(configuration: k8s.Configuration) -> ssl.SSLContext | bool:
    if not configuration.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file and configuration.key_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


@dataclass(frozen=True)
class KubernetesIssuer:
    """The cluster's service-account token issuer, as its API server announces it."""

    issuer: str
    jwks_uri: str
    algorithm: str
    http_client: httpx2.AsyncClient


def kubernetes_issuer(
    configuration: k8s.Configuration, *, timeout: float = 10.0
) -> KubernetesIssuer:
    """Discover the issuer from ``/.well-known/openid-configuration`` of the API server,
    reached with ``configuration`` (the server's kubeconfig or its pod's service account).
    The keys are then read from the API server's ``/openid/v1/jwks`` with the same
    credentials (the address in the discovery document may not be reachable from here)."""
    host = str(configuration.host).rstrip("/")
    verify = _tls(configuration)
    auth = _KubernetesAuth(configuration)
    try:
        with httpx2.Client(verify=verify, auth=auth, timeout=timeout) as http:
            response = http.get(f"{host}/.well-known/openid-configuration")
            response.raise_for_status()
            document = response.json()
    except (httpx2.HTTPError, ValueError) as exc:
        raise ValueError(
            f"cannot read the service-account issuer of {host} "
            f"(/.well-known/openid-configuration): {exc}"
        ) from None
    issuer = document.get("issuer") if isinstance(document, dict) else None
    if not isinstance(issuer, str) or not issuer:
        raise ValueError(f"{host} announces no service-account issuer")
    algorithms = document.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithm = str(algorithms[0]) if isinstance(algorithms, list) and algorithms else "RS256"
    return KubernetesIssuer(
        issuer=issuer,
        jwks_uri=f"{host}/openid/v1/jwks",
        algorithm=algorithm,
        http_client=httpx2.AsyncClient(verify=verify, auth=auth, timeout=timeout),
    )


# --- the requester of a tool call -------------------------------------------------------------


def identity_of(access: AccessToken | None) -> str | None:
    """The identity an access token authenticates (set by this module's verifiers), or None."""
    if access is None:
        return None
    claimed = access.claims.get(IDENTITY_CLAIM) if isinstance(access.claims, dict) else None
    text = _clean(claimed) if isinstance(claimed, str) else ""
    return text or None


def requester(ctx: Context) -> str:
    """Who asked: the authenticated identity (``token:<name>``, ``jwt:<sub>``); over stdio,
    ``stdio:<the server's OS user>``; otherwise ``unauthenticated``."""
    identity = identity_of(get_access_token())
    if identity is not None:
        return identity
    if ctx.transport == "stdio":
        return f"stdio:{_clean(effective_user()) or 'unknown'}"
    return "unauthenticated"


def effective_user() -> str:
    """The name of the process's effective user (its uid when it has none), never
    $LOGNAME/$USER: whoever configures the process (an MCP client's configuration) sets those."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
