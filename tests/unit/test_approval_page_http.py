"""The approval page's HTTP layer, on a real ledger and approvers registry: the Host, Origin
and CSRF checks, no decision by GET or without an assertion, invites, security headers.
(The passkey ceremonies themselves run in a real browser: tests/integration/
test_approval_page.py.)"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from sizeguard.approvers import Approvers
from sizeguard.changes import ChangeSet, ContainerResources, GuardedState, ResourceChange, Target
from sizeguard.ledger import Ledger
from sizeguard.server.decisions import (
    DecisionError,
    approval_status,
    open_request,
    record_page_decision,
)
from sizeguard.server.models import Preview
from sizeguard.server.page.app import build_page_app
from sizeguard.server.page.security import SECURITY_HEADERS, parse_approval_url
from sizeguard.server.service import Service

URL = "http://localhost:8765"
PORT = 41234  # the port the page "listens" on: loopback names on it are redirected


def _state(cpu: int) -> GuardedState:
    container = ContainerResources(
        cpu_request=cpu, cpu_limit=None, memory_request=268435456, memory_limit=None
    )
    return GuardedState(
        replicas=3, containers={"api": container}, init_containers={}, min_replicas=None,
        max_replicas=None,
    )  # fmt: skip


def _preview(cs_id: str) -> Preview:
    target = "Deployment/shop-prod/api"
    return Preview.model_validate(
        {
            "change_set_id": cs_id,
            "targets": 1,
            "diff": [
                {
                    "target": target,
                    "lines": ["api: cpu request 500m → 250m"],
                    "monthly_cost_before": 40.0,
                    "monthly_cost_after": 22.5,
                }
            ],
            "policy": {
                "allowed": True,
                "risk": "high",
                "violations": [],
                "warnings": [
                    {"code": "production_namespace", "target": target, "message": "production"}
                ],
                "requires": ["typed_confirmation", "authenticated_approver"],
            },
            "dry_run": [{"target": target, "admitted": True, "warnings": [], "error": None}],
            "cost": {"monthly_before": 40.0, "monthly_after": 22.5, "monthly_delta": -17.5},
            "confirmation": "apply",
            "typed_confirmation": ["shop-prod"],
            "next_step": "approve on the page",
        }
    )


class Page:
    def __init__(self, tmp_path: Path) -> None:
        self.ledger = Ledger(tmp_path / "ledger.db")
        # The page only reads and records through the ledger here; nothing reaches a cluster.
        self.service = Service(
            cluster=cast(Any, None), policy=cast(Any, None), ledger=self.ledger, key=None
        )
        self.service.approval_url = URL
        self.registry = Approvers(self.ledger)
        change = ResourceChange(
            target=Target.model_validate(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "namespace": "shop-prod",
                    "name": "api",
                    "uid": "uid-api",
                }
            ),
            before=_state(500),
            after=_state(250),
            reason="p95",
            source="scan",
        )
        self.cs_id = self.ledger.put_change_set(ChangeSet(changes=[change]), source="preview").id
        open_request(self.service, _preview(self.cs_id), op="apply", requester="token:bob")
        app = build_page_app(self.service, parse_approval_url(URL), bound_port=PORT)
        self.client = TestClient(app, base_url=URL, follow_redirects=False)

    def csrf(self, path: str = "/") -> str:
        page = self.client.get(path)
        match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
        assert match is not None, page.text
        return match.group(1)

    def post(self, path: str, body: Any, **headers: str) -> Any:
        return self.client.post(path, json=body, headers=headers)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    page = Page(tmp_path)
    yield page
    page.ledger.close()


def test_the_approval_url_must_be_a_name_browsers_give_passkeys_to() -> None:
    origin = parse_approval_url("http://localhost:8765/")
    assert (origin.url, origin.origin, origin.host) == (URL, URL, "localhost")
    secure = parse_approval_url("https://approvals.example.com")
    assert (secure.origin, secure.host, secure.secure) == (
        "https://approvals.example.com",
        "approvals.example.com",
        True,
    )
    for bad in (
        "http://approvals.example.com",  # plain http off localhost: no passkeys
        "http://127.0.0.1:8765",  # an IP address is no relying party
        "ftp://localhost",
        "http://localhost:8765/approvals",
        "http://localhost:8765/?x=1",
        "localhost:8765",
    ):
        with pytest.raises(ValueError):
            parse_approval_url(bad)


def test_the_lists_and_the_summary_render_with_a_csrf_cookie_and_locked_down_headers(
    page: Page,
) -> None:
    index = page.client.get("/")
    assert index.status_code == 200
    assert page.cs_id in index.text and "token:bob" in index.text
    assert "an enrolled approver&#39;s passkey approval" in index.text
    cookie = index.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    for name, value in SECURITY_HEADERS.items():
        assert index.headers[name] == value
    summary = page.client.get(f"/changes/{page.cs_id}")
    assert summary.status_code == 200
    shown = ["Deployment/shop-prod/api", "api: cpu request 500m → 250m", "risk high"]
    shown += ["production", "admitted", "-17.50 $/month", 'id="approve"', 'id="decline"']
    for text in shown:
        assert text in summary.text, text
    assert page.client.get("/changes/cs-00000000000000000000").status_code == 404
    assert page.client.get("/changes/not-an-id").status_code == 404


def test_the_change_page_shows_its_change_set_id_where_the_approver_decides(page: Page) -> None:
    """The id the assistant named is in the title, beside the buttons and on Approve itself:
    a page that shows another change set than the one asked about is visible as such."""
    summary = page.client.get(f"/changes/{page.cs_id}").text
    title = re.search(r"<title>(.*?)</title>", summary, re.S)
    assert title is not None and page.cs_id in title.group(1)
    approve = re.search(r'<button[^>]*id="approve"[^>]*>(.*?)</button>', summary, re.S)
    assert approve is not None
    assert " ".join(re.sub(r"<[^>]+>", " ", approve.group(1)).split()) == f"Approve {page.cs_id}"
    near = re.search(r'id="decision-change-set">([^<]*)<', summary)
    assert near is not None and near.group(1) == page.cs_id


def test_no_decision_by_get(page: Page) -> None:
    for path in (f"/changes/{page.cs_id}/decide", f"/changes/{page.cs_id}/options"):
        assert page.client.get(path, params={"action": "approve"}).status_code == 405
    status = approval_status(page.service, page.cs_id)
    assert status is not None and status.state == "pending" and not status.approvers


def test_a_post_needs_the_approval_origin_and_the_csrf_token(page: Page) -> None:
    token = page.csrf()
    path = f"/changes/{page.cs_id}/options"
    body = {"action": "approve"}
    refused = [
        page.post(path, body, **{"X-CSRF-Token": token}),  # no Origin
        page.post(path, body, Origin="http://evil.example", **{"X-CSRF-Token": token}),
        page.post(path, body, Origin="http://localhost:9999", **{"X-CSRF-Token": token}),
        page.post(path, body, Origin=URL),  # no token
        page.post(path, body, Origin=URL, **{"X-CSRF-Token": token + "x"}),
        page.post(
            path, body, Origin=URL, **{"X-CSRF-Token": token, "Sec-Fetch-Site": "cross-site"}
        ),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert all(r.json()["ok"] is False for r in refused)
    # a form post (not JSON) with the right token is refused too
    form = page.client.post(
        path, data={"action": "approve"}, headers={"Origin": URL, "X-CSRF-Token": token}
    )
    assert form.status_code == 403
    # another browser's cookie does not go with this token
    other = TestClient(page.client.app, base_url=URL)
    other.get("/")
    stolen = other.post(path, json=body, headers={"Origin": URL, "X-CSRF-Token": token})
    assert stolen.status_code == 403
    ok = page.post(path, body, Origin=URL, **{"X-CSRF-Token": token})
    assert ok.status_code == 200, ok.text
    options = ok.json()
    assert options["rpId"] == "localhost" and options["userVerification"] == "required"
    assert len(options["challenge"]) >= 80  # 64 bytes, base64url


def test_a_decision_without_an_assertion_records_nothing(page: Page) -> None:
    token = page.csrf()
    headers = {"Origin": URL, "X-CSRF-Token": token}
    path = f"/changes/{page.cs_id}/decide"
    for body in ({"action": "approve"}, {"action": "approve", "credential": None},
                 {"action": "approve", "credential": "yes"}):  # fmt: skip
        answer = page.post(path, body, **headers)
        assert answer.status_code == 400
        assert "passkey assertion" in answer.json()["message"]
    forged = page.post(
        path, {"action": "approve", "credential": {"id": "x", "response": {}}}, **headers
    )
    assert forged.status_code == 403
    assert page.post(path, {"action": "ship-it", "credential": {}}, **headers).status_code == 400
    status = approval_status(page.service, page.cs_id)
    assert status is not None and status.state == "pending" and not status.approvers
    assert page.ledger.approvals(page.cs_id) == []


def test_other_host_names_are_refused_and_loopback_names_sent_to_the_approval_url(
    page: Page,
) -> None:
    evil = page.client.get("/", headers={"Host": "evil.example"})
    assert evil.status_code == 400
    assert evil.headers["X-Frame-Options"] == "DENY"
    moved = page.client.get(f"/changes/{page.cs_id}", headers={"Host": f"127.0.0.1:{PORT}"})
    assert moved.status_code == 303
    assert moved.headers["location"] == f"{URL}/changes/{page.cs_id}"
    wrong_port = page.client.get("/", headers={"Host": "127.0.0.1:1"})
    assert wrong_port.status_code == 400
    post = page.client.post("/enroll/x/options", headers={"Host": f"127.0.0.1:{PORT}"})
    assert post.status_code == 400


def test_invites_the_page_shows_and_refuses(page: Page) -> None:
    invite = page.registry.invite("alice")
    shown = page.client.get(f"/enroll/{invite.token}")
    assert shown.status_code == 200
    assert "Register a passkey, alice" in shown.text
    expired = page.registry.invite("carol", ttl=60, now=time.time() - 120)
    gone = page.client.get(f"/enroll/{expired.token}")
    assert gone.status_code == 410 and "expired" in gone.text
    unknown = page.client.get("/enroll/" + "A" * 43)
    assert unknown.status_code == 404 and "not valid" in unknown.text
    token = page.csrf()
    headers = {"Origin": URL, "X-CSRF-Token": token}
    late = page.post(f"/enroll/{expired.token}/options", {}, **headers)
    assert late.status_code == 410 and "expired" in late.json()["message"]
    options = page.post(f"/enroll/{invite.token}/options", {}, **headers).json()
    assert options["rp"]["id"] == "localhost" and options["user"]["name"] == "alice"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    no_key = page.post(f"/enroll/{invite.token}/finish", {}, **headers)
    assert no_key.status_code == 400
    assert page.registry.list() == []


def test_enrolment_tokens_never_reach_the_log(page: Page) -> None:
    invite = page.registry.invite("dave")
    with capture_logs() as logs:
        page.post(f"/enroll/{invite.token}/options", {})  # refused: no Origin
        page.post(f"/enroll/{invite.token}/finish", {"credential": {}}, Origin=URL)
    assert logs, "each refusal is logged"
    assert invite.token not in repr(logs)


def test_an_invited_person_without_a_passkey_cannot_decide(page: Page) -> None:
    """The lower half of a decision (after a verified assertion) refuses a name that has no
    enrolled passkey; the page still lists the change set as pending."""
    page.registry.invite("erin")
    with pytest.raises(DecisionError) as refused:
        record_page_decision(page.service, page.cs_id, "erin", "decline")
    assert refused.value.reason == "revoked"
    status = approval_status(page.service, page.cs_id)
    assert status is not None and status.state == "pending" and not status.declined_by
    assert page.cs_id in page.client.get("/").text
