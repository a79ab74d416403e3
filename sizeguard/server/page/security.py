"""What keeps another web page, or another name for this one, from acting on the approval page.

1. **Host**: a request must name the approval URL's host (or a loopback name on the page's
   own port, which is redirected there): a DNS-rebinding page cannot reach it under its own
   name.
2. **Origin**: every POST carries the browser's ``Origin``, and it must be the approval URL's
   origin exactly (scheme, host, port). The WebAuthn ceremonies check the same origin inside
   the signed client data.
3. **CSRF token**: each browser gets a random cookie (``HttpOnly``, ``SameSite=Strict``); the
   page embeds an HMAC of it under a per-process secret, and every POST must send that HMAC in
   the ``X-CSRF-Token`` header with a JSON body (which a cross-site form cannot send without a
   preflight).
4. Nothing changes on GET. Responses are not cached, not framed, send no Referer (the
   enrolment link holds a token), and run only the page's own script (CSP).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from starlette.requests import Request

__all__ = [
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "SECURITY_HEADERS",
    "ApprovalOrigin",
    "CsrfGuard",
    "parse_approval_url",
]

CSRF_COOKIE: Final = "sizeguard_page"
CSRF_HEADER: Final = "x-csrf-token"
LOOPBACK_NAMES: Final = ("localhost", "127.0.0.1", "[::1]")

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass(frozen=True)
class ApprovalOrigin:
    """The address people reach the page by: ``http://localhost:8765`` by default."""

    url: str  # without a trailing slash
    scheme: str
    host: str  # the WebAuthn relying-party id: the host name, no port
    netloc: str  # host[:port] as the browser sends it in Host

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    def link(self, path: str) -> str:
        return f"{self.url}{path}"


def parse_approval_url(url: str) -> ApprovalOrigin:
    """Check and split ``--approval-url``: http(s), a host name, no query or fragment. A
    WebAuthn relying party needs a name (``localhost`` or a domain), not an IP address, and
    plain http only on ``localhost``."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r}: give an http(s) URL such as http://localhost:8765")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{url!r}: no user, query or fragment in the approval URL")
    host = parts.hostname.lower()
    if host.replace(".", "").isdigit() or ":" in host:
        raise ValueError(
            f"{url!r}: browsers register passkeys for a host name, not an IP address; use "
            "http://localhost:PORT or a DNS name"
        )
    if parts.scheme == "http" and host != "localhost":
        raise ValueError(
            f"{url!r}: browsers use passkeys over plain http only on localhost; use https "
            "(e.g. behind an Ingress) or a port-forward to http://localhost:PORT"
        )
    default_port = 443 if parts.scheme == "https" else 80
    netloc = host if parts.port in (None, default_port) else f"{host}:{parts.port}"
    path = parts.path.rstrip("/")
    if path:
        raise ValueError(f"{url!r}: serve the page at the root of its address (no path)")
    return ApprovalOrigin(f"{parts.scheme}://{netloc}", parts.scheme, host, netloc)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class CsrfGuard:
    """Host and Origin checks and the CSRF token of one page server."""

    approval: ApprovalOrigin
    bound_port: int = 0
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def host_verdict(self, request: Request) -> str:
        """``ok``, ``redirect`` (a loopback name for the page's own port: send the browser to
        the approval URL, the only origin its passkeys work on) or ``refuse``."""
        host = request.headers.get("host", "").lower()
        if host == self.approval.netloc:
            return "ok"
        name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if name in LOOPBACK_NAMES and port == str(self.bound_port):
            return "redirect"
        return "refuse"

    def origin_problem(self, request: Request) -> str | None:
        origin = request.headers.get("origin")
        if origin is None:
            return "the request has no Origin header"
        if origin != self.approval.origin:
            return f"the request comes from {origin}, not {self.approval.origin}"
        site = request.headers.get("sec-fetch-site")
        if site is not None and site != "same-origin":
            return f"the request is {site}, not same-origin"
        return None

    def cookie_value(self, request: Request) -> str | None:
        value = request.cookies.get(CSRF_COOKIE)
        return value if value and 20 <= len(value) <= 100 else None

    @staticmethod
    def new_cookie() -> str:
        return secrets.token_urlsafe(32)

    def token_for(self, cookie: str) -> str:
        return _b64(hmac.new(self.secret, cookie.encode(), hashlib.sha256).digest())

    def csrf_problem(self, request: Request) -> str | None:
        cookie = self.cookie_value(request)
        if cookie is None:
            return "the page's cookie is missing: reload the page"
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), self.token_for(cookie).encode()):
            return "the page's CSRF token is missing or wrong: reload the page"
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return "the request body must be JSON"
        return None
