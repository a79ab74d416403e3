"""The approval page: a small Starlette app, server-rendered with Jinja2.

Routes (nothing changes on GET; every POST passes :mod:`.security`'s Origin and CSRF checks):

1. ``GET /``: the pending change sets, and the decided ones with their approvers.
2. ``GET /changes/ID``: the summary the confirmation shows (diff per field, policy risk and
   reasons, dry run through the webhook, cost delta, requester and time, expiry) and the
   approvals the policy requires and the ledger holds; Approve/Decline buttons.
3. ``POST /changes/ID/options`` ``{"action": "approve"|"decline"}``: WebAuthn assertion
   options whose challenge the server issued for this change set and this action.
4. ``POST /changes/ID/decide`` ``{"action", "credential"}``: the assertion is verified (who
   the person is) and the decision recorded (whether they may).
5. ``GET /enroll/TOKEN``, ``POST /enroll/TOKEN/options``, ``POST /enroll/TOKEN/finish``: an
   invited person registers a passkey.

The page owns HTTP only: who an approver is and whether an assertion is good is
:mod:`sizeguard.approvers`'s business, what a decision does is the service's
(:mod:`.backend` holds the calls). Refusals are JSON ``{"ok": false, "message": ...}`` with
a 4xx status, and one log line each, without tokens or credentials.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

import structlog
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from sizeguard.server.page.backend import PageBackend, PageRefusalError
from sizeguard.server.page.security import (
    CSRF_COOKIE,
    SECURITY_HEADERS,
    ApprovalOrigin,
    CsrfGuard,
)
from sizeguard.server.service import Service

__all__ = ["build_page_app"]

HERE: Final = Path(__file__).parent
CHANGE_SET_RE: Final = re.compile(r"^cs-[0-9a-f]{20}$")
TOKEN_RE: Final = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
MAX_BODY: Final = 64 * 1024
ACTIONS: Final = ("approve", "decline")

_log = structlog.get_logger("sizeguard.page")


class _Headers:
    """Security headers on every response, the Host check before any route."""

    def __init__(self, app: ASGIApp, guard: CsrfGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        verdict = self.guard.host_verdict(request)
        if verdict != "ok":
            response: Response
            if verdict == "redirect" and request.method == "GET":
                response = RedirectResponse(self.guard.approval.link(request.url.path), 303)
            else:
                response = _refuse(
                    400, f"open the approval page at {self.guard.approval.url}", "host"
                )
            await self._send_secured(response, scope, receive, send)
            return

        async def secured(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, secured)

    async def _send_secured(
        self, response: Response, scope: Scope, receive: Receive, send: Send
    ) -> None:
        for key, value in SECURITY_HEADERS.items():
            response.headers[key] = value
        await response(scope, receive, send)


def _refuse(status: int, message: str, reason: str, **fields: Any) -> JSONResponse:
    _log.warning("page.refused", reason=reason, status=status, detail=message, **fields)
    return JSONResponse({"ok": False, "message": message}, status_code=status)


class _Page:
    def __init__(self, backend: PageBackend, guard: CsrfGuard) -> None:
        self.backend = backend
        self.guard = guard
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(("html",)),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["when"] = _when

    # -- rendering ---------------------------------------------------------------------------
    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> Response:
        cookie = self.guard.cookie_value(request)
        fresh = cookie is None
        if cookie is None:
            cookie = self.guard.new_cookie()
        html = self.templates.get_template(template).render(
            csrf_token=self.guard.token_for(cookie), **context
        )
        response = HTMLResponse(html, status_code=status)
        if fresh:
            response.set_cookie(
                CSRF_COOKIE,
                cookie,
                httponly=True,
                samesite="strict",
                secure=self.guard.approval.secure,
                path="/",
            )
        return response

    def message(self, request: Request, status: int, title: str, text: str) -> Response:
        return self.render(request, "message.html", status, title=title, message=text)

    # -- POST plumbing -----------------------------------------------------------------------
    async def body(self, request: Request) -> dict[str, Any] | JSONResponse:
        problem = self.guard.origin_problem(request) or self.guard.csrf_problem(request)
        if problem is not None:
            return _refuse(403, f"refused: {problem}", "csrf", path=_safe_path(request))
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return _refuse(413, "refused: the request body is too large", "size")
        try:
            document = json.loads(raw or b"{}")
        except ValueError:
            return _refuse(400, "refused: the request body is not JSON", "json")
        if not isinstance(document, dict):
            return _refuse(400, "refused: the request body must be a JSON object", "json")
        return document

    # -- pages -------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        pending, history = await run_in_threadpool(self.backend.overview)
        return self.render(request, "index.html", pending=pending, history=history)

    async def change(self, request: Request) -> Response:
        cs_id = request.path_params["cs"]
        if not CHANGE_SET_RE.fullmatch(cs_id):
            return self.message(request, 404, "Not found", "No such change set.")
        try:
            item = await run_in_threadpool(self.backend.change, cs_id)
        except PageRefusalError as exc:
            return self.message(request, exc.status, "Change set", exc.message)
        return self.render(request, "change.html", item=item)

    async def decide_options(self, request: Request) -> Response:
        body = await self.body(request)
        if isinstance(body, Response):
            return body
        cs_id, action = request.path_params["cs"], body.get("action")
        if not CHANGE_SET_RE.fullmatch(cs_id) or action not in ACTIONS:
            return _refuse(400, "refused: name a change set and approve or decline", "input")
        try:
            options = await run_in_threadpool(
                self.backend.decision_options, cs_id, str(action), self.guard.approval
            )
        except PageRefusalError as exc:
            return _refuse(exc.status, exc.message, "options", change_set=cs_id)
        return JSONResponse(options)

    async def decide(self, request: Request) -> Response:
        body = await self.body(request)
        if isinstance(body, Response):
            return body
        cs_id, action, credential = (
            request.path_params["cs"],
            body.get("action"),
            body.get("credential"),
        )
        if not CHANGE_SET_RE.fullmatch(cs_id) or action not in ACTIONS:
            return _refuse(400, "refused: name a change set and approve or decline", "input")
        if not isinstance(credential, dict):
            return _refuse(
                400,
                "refused: a decision needs a passkey assertion; nothing was recorded",
                "no_assertion",
                change_set=cs_id,
            )
        try:
            outcome = await run_in_threadpool(
                self.backend.decide, cs_id, str(action), credential, self.guard.approval
            )
        except PageRefusalError as exc:
            return _refuse(exc.status, exc.message, "decide", change_set=cs_id, action=action)
        _log.info("page.decided", change_set=cs_id, action=action, approver=outcome.approver)
        return JSONResponse({"ok": True, "message": outcome.message, "next": f"/changes/{cs_id}"})

    async def enroll(self, request: Request) -> Response:
        token = request.path_params["token"]
        if not TOKEN_RE.fullmatch(token):
            return self.message(request, 404, "Invitation", "This enrolment link is not valid.")
        try:
            invite = await run_in_threadpool(self.backend.invite, token)
        except PageRefusalError as exc:
            return self.message(request, exc.status, "Invitation", exc.message)
        return self.render(
            request,
            "enroll.html",
            name=invite.name,
            token=token,
            rp_id=self.guard.approval.host,
        )

    async def enroll_options(self, request: Request) -> Response:
        body = await self.body(request)
        if isinstance(body, Response):
            return body
        token = request.path_params["token"]
        if not TOKEN_RE.fullmatch(token):
            return _refuse(404, "refused: this enrolment link is not valid", "input")
        try:
            options = await run_in_threadpool(
                self.backend.enrollment_options, token, self.guard.approval
            )
        except PageRefusalError as exc:
            return _refuse(exc.status, exc.message, "enroll_options")
        return JSONResponse(options)

    async def enroll_finish(self, request: Request) -> Response:
        body = await self.body(request)
        if isinstance(body, Response):
            return body
        token, credential = request.path_params["token"], body.get("credential")
        if not TOKEN_RE.fullmatch(token):
            return _refuse(404, "refused: this enrolment link is not valid", "input")
        if not isinstance(credential, dict):
            return _refuse(400, "refused: enrolment needs a new passkey", "no_credential")
        try:
            name = await run_in_threadpool(
                self.backend.finish_enrollment, token, credential, self.guard.approval
            )
        except PageRefusalError as exc:
            return _refuse(exc.status, exc.message, "enroll_finish")
        _log.info("page.enrolled", approver=name)
        return JSONResponse(
            {
                "ok": True,
                "message": f"Enrolled: {name} can now approve changes on this page.",
                "next": "/",
            }
        )


def _when(iso: str) -> str:
    """``2026-12-06T22:17:52Z`` -> ``2026-12-06 22:17:52 UTC``."""
    return iso.replace("T", " ").replace("Z", " UTC") if iso else "—"


async def _unexpected(request: Request, exc: Exception) -> Response:
    """A failure of the page or behind it (OPA, the apiserver): logged, answered in one
    sentence; nothing was recorded unless the ledger says so."""
    _log.error(
        "page.error", path=_safe_path(request), error=type(exc).__name__, detail=str(exc)[:300]
    )
    return JSONResponse(
        {"ok": False, "message": f"the server failed ({type(exc).__name__}); see its log"},
        status_code=500,
    )


def _safe_path(request: Request) -> str:
    """The path for a log line, without an enrolment token."""
    path = request.url.path
    return "/enroll/…" if path.startswith("/enroll/") else path


def build_page_app(
    service: Service,
    approval: ApprovalOrigin,
    *,
    bound_port: int = 0,
    backend: PageBackend | None = None,
) -> ASGIApp:
    """The approval page over ``service`` (the MCP server's), reached at ``approval``.
    ``bound_port`` is the port it listens on: a loopback name on that port is redirected to
    the approval URL (passkeys work on that origin only)."""
    page = _Page(backend or PageBackend(service), CsrfGuard(approval, bound_port))
    app = Starlette(
        routes=[
            Route("/", page.index, methods=["GET"]),
            Route("/changes/{cs}", page.change, methods=["GET"]),
            Route("/changes/{cs}/options", page.decide_options, methods=["POST"]),
            Route("/changes/{cs}/decide", page.decide, methods=["POST"]),
            Route("/enroll/{token}", page.enroll, methods=["GET"]),
            Route("/enroll/{token}/options", page.enroll_options, methods=["POST"]),
            Route("/enroll/{token}/finish", page.enroll_finish, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        exception_handlers={Exception: _unexpected},
    )
    return _Headers(app, page.guard)
