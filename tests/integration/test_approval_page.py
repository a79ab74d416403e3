"""The approval page in a real browser: Debian's Chromium through Selenium, with Chrome's
virtual WebAuthn authenticator as each person's passkey, against the real sandbox (its
kube-apiserver with sizeguard's webhook, OPA with the shipped policies).

One browser and one page server for the module. Each person has an authenticator of their
own (:meth:`Browser.as_person`). People enrol through invite links, approve or decline on
the page; the MCP client's ``apply_changes`` then applies what the page approved and the
cluster admits it. Every refusal the page makes goes through the browser too (its Origin, its
cookie and CSRF token), so only the thing under test is wrong.

``SIZEGUARD_PAGE_SCREENSHOTS=DIR`` saves the page's screenshots there (docs/img).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastmcp import FastMCP

from sizeguard.approvals import APPROVAL_ANNOTATION
from sizeguard.approvers import Approvers
from sizeguard.changes import guarded_state
from sizeguard.sandbox.browser import Browser, start_browser
from sizeguard.server.app import build_app
from sizeguard.server.decisions import approval_status, open_request
from sizeguard.server.models import Edit
from sizeguard.server.page.app import build_page_app
from sizeguard.server.page.runner import PageServer, listen_page, start_page_server
from sizeguard.server.page.security import ApprovalOrigin, parse_approval_url
from sizeguard.server.service import Service

from .conftest import Sandbox
from .helpers import eventually
from .test_mcp_server import accept, call, run, sandbox_service
from .test_webhook import create, ensure_namespace, get, webhook_info, workload_manifest

NS = "page-prod"  # production by name (-prod)
SHOTS = os.environ.get("SIZEGUARD_PAGE_SCREENSHOTS")


# --- fixtures: one page, one browser, one MCP app for the module -------------------------------


@pytest.fixture(scope="module")
def service(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    ensure_namespace(sandbox, NS, {"environment": "production"})
    with sandbox_service(sandbox, tmp_path_factory.mktemp("ledger") / "ledger.db") as service:
        yield service


@pytest.fixture(scope="module")
def page(service: Service) -> Iterator[ApprovalOrigin]:
    # as `sizeguard serve` listens for a localhost URL: 127.0.0.1 and ::1, one free port
    socks = listen_page("127.0.0.1", 0, localhost=True)
    port = int(socks[0].getsockname()[1])
    approval = parse_approval_url(f"http://localhost:{port}")
    service.approval_url = approval.url
    app = build_page_app(service, approval, bound_port=port)
    server: PageServer = start_page_server(app, socks)
    yield approval
    server.stop()


@pytest.fixture(scope="module")
def app(service: Service) -> FastMCP:
    return build_app(service)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with start_browser() as b:
        yield b


@pytest.fixture(scope="module")
def registry(service: Service) -> Approvers:
    return Approvers(service.ledger)


@pytest.fixture(scope="module")
def people(browser: Browser, registry: Approvers, page: ApprovalOrigin) -> list[str]:
    """alice, bob and carol, enrolled through their invite links in the browser."""
    for name in ("alice", "bob", "carol"):
        browser.as_person(name)
        kind, text = enroll(browser, registry.invite(name).link(page.url))
        assert kind == "done", text
        assert f"Enrolled: {name}" in text
        assert len(browser.passkeys()) == 1
    return ["alice", "bob", "carol"]


# --- the browser's side --------------------------------------------------------------------------


def _status(browser: Browser, timeout: float = 30.0) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    def settled() -> tuple[str, str] | None:
        element = browser.driver.find_element(By.ID, "status")
        kind = (element.get_attribute("class") or "").replace("status", "").strip()
        return (kind, element.text) if kind in ("done", "refused") else None

    return eventually(settled, timeout, "the page's answer")


def enroll(browser: Browser, link: str) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    browser.driver.get(link)
    browser.driver.find_element(By.ID, "enroll").click()
    return _status(browser)


def decide(browser: Browser, url: str, action: str, shot: str = "") -> tuple[str, str]:
    """Open a change set's page and press Approve or Decline; the page's answer."""
    from selenium.webdriver.common.by import By

    browser.driver.get(url)
    if shot:
        screenshot(browser, shot)
    buttons = browser.driver.find_elements(By.ID, action)
    if not buttons:
        return "no-button", browser.driver.find_element(By.ID, "state").text
    buttons[0].click()
    return _status(browser)


# The page's own helpers (passkey.js: post, fromB64url, toB64url, csrf) drive a ceremony by
# hand, so that a test can send an assertion where the page would not.
CEREMONY = """
const [optionsUrl, decideUrl, action, times, body] = arguments;
const done = arguments[arguments.length - 1];
async function send(url, payload) {
  const r = await fetch(url, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify(payload)});
  let answer = {};
  try { answer = await r.json(); } catch (e) {}
  return [r.status, answer.message || ""];
}
(async () => {
  if (body !== null) return [await send(decideUrl, body)];
  const options = await post(optionsUrl, {action: action});
  options.challenge = fromB64url(options.challenge);
  const c = await navigator.credentials.get({publicKey: options});
  const payload = {action: action, credential: {id: c.id, rawId: toB64url(c.rawId),
    type: c.type, response: {clientDataJSON: toB64url(c.response.clientDataJSON),
    authenticatorData: toB64url(c.response.authenticatorData),
    signature: toB64url(c.response.signature),
    userHandle: c.response.userHandle ? toB64url(c.response.userHandle) : null}}};
  const answers = [];
  for (let i = 0; i < times; i++) answers.push(await send(decideUrl, payload));
  return answers;
})().then(done, (e) => done([[0, String(e)]]));
"""


def ceremony(
    browser: Browser,
    page: ApprovalOrigin,
    options_for: str,
    decide_for: str,
    *,
    action: str = "approve",
    times: int = 1,
    body: dict[str, Any] | None = None,
) -> list[tuple[int, str]]:
    """Assertion options for ``options_for``, the passkey's answer sent to ``decide_for``'s
    decide URL ``times`` times (or ``body`` as it is). Returns (HTTP status, message) each."""
    browser.driver.get(f"{page.url}/")
    answers = browser.driver.execute_async_script(
        CEREMONY,
        f"/changes/{options_for}/options",
        f"/changes/{decide_for}/decide",
        action,
        times,
        body,
    )
    return [(int(status), str(message)) for status, message in answers]


def screenshot(browser: Browser, name: str) -> None:
    if SHOTS:
        browser.screenshot(Path(SHOTS) / f"{name}.png")


# --- the cluster's and the assistant's side ------------------------------------------------------


def workload(sandbox: Sandbox, prefix: str, replicas: int = 2) -> dict[str, Any]:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    return create(sandbox, workload_manifest("Deployment", NS, name, replicas=replicas))


def live_state(sandbox: Sandbox, obj: dict[str, Any]) -> Any:
    return guarded_state(get(sandbox, "Deployment", NS, obj["metadata"]["name"]))


def requested(service: Service, obj: dict[str, Any], replicas: int, requester: str) -> str:
    """A previewed change of ``obj``'s replicas put on the page as ``requester`` asked for it
    (what request_confirmation does for a change that needs an approver)."""
    edit = Edit(kind="Deployment", namespace=NS, name=obj["metadata"]["name"], replicas=replicas)
    change_set = service.change_set_from_edits([edit], "edit")
    preview = service.preview(change_set, actor=requester, source="preview")
    assert preview.policy.allowed, preview.policy
    open_request(service, preview, op="apply", requester=requester)
    return preview.change_set_id


def jws_claims(obj: dict[str, Any]) -> dict[str, Any]:
    token = obj["metadata"]["annotations"][APPROVAL_ANNOTATION]
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def page_url_in(answer: Any) -> str | None:
    match = re.search(r"http://localhost:\d+/changes/cs-[0-9a-f]{20}", json.dumps(answer))
    return match.group(0) if match else None


# --- the flow ------------------------------------------------------------------------------------


def test_a_production_change_is_approved_on_the_page_then_applied_and_admitted(
    sandbox: Sandbox,
    service: Service,
    app: FastMCP,
    browser: Browser,
    page: ApprovalOrigin,
    people: list[str],
) -> None:
    from selenium.webdriver.common.by import By

    obj = workload(sandbox, "web")
    before = live_state(sandbox, obj)
    edit = {"kind": "Deployment", "namespace": NS, "name": obj["metadata"]["name"], "replicas": 3}
    preview = run(call(app, "preview_changes", {"edits": [edit]}))
    cs = preview["change_set_id"]
    assert "authenticated_approver" in preview["policy"]["requires"], preview["policy"]

    # The MCP client answers its own question, namespace typed: that is not an approval.
    self_answering = accept(NS)
    asked = run(call(app, "request_confirmation", {"change_set_id": cs}, self_answering))
    assert asked["status"] != "approved", asked
    url = page_url_in(asked)
    assert url == f"{page.url}/changes/{cs}", asked
    early = run(call(app, "apply_changes", {"change_set_id": cs}))
    assert early["status"] != "applied", early
    assert live_state(sandbox, obj) == before

    browser.as_person("alice")
    browser.driver.get(f"{page.url}/")
    screenshot(browser, "approval-page-pending")
    kind, text = decide(browser, url, "approve", shot="approval-page-change")
    assert kind == "done", text
    assert "Approved by alice" in text
    # a passkey approval meets the weaker levels too: nothing is still needed
    assert "still needed" not in text and "typed by a person" not in text, text
    status = approval_status(service, cs)
    assert status is not None and status.state == "approved" and status.approvers == ["alice"]
    browser.driver.get(url)
    state = browser.driver.find_element(By.ID, "state-message").text
    assert "met" in state and "still needed" not in state, state

    applied = run(call(app, "apply_changes", {"change_set_id": cs}))
    assert applied["status"] == "applied", applied
    now = get(sandbox, "Deployment", NS, obj["metadata"]["name"])
    assert now["spec"]["replicas"] == 3  # the webhook admitted it
    claims = jws_claims(now)
    assert claims["sub"] == "approver:alice"
    assert claims["approvers"] == ["alice"]
    audit = [e for e in service.ledger.audit_entries() if e.change_set_id == cs]
    assert any(e.actor == "approver:alice" and e.event == "page.approved" for e in audit)
    browser.driver.get(f"{page.url}/")
    screenshot(browser, "approval-page-history")
    assert cs in browser.driver.page_source


def test_declining_changes_nothing(
    sandbox: Sandbox,
    service: Service,
    app: FastMCP,
    browser: Browser,
    page: ApprovalOrigin,
    people: list[str],
) -> None:
    obj = workload(sandbox, "shop")
    before = live_state(sandbox, obj)
    cs = requested(service, obj, 4, "token:assistant")
    browser.as_person("bob")
    kind, text = decide(browser, f"{page.url}/changes/{cs}", "decline")
    assert kind == "done", text
    assert "Declined by bob" in text
    status = approval_status(service, cs)
    assert status is not None and status.state == "declined" and status.declined_by == ["bob"]
    refused = run(call(app, "apply_changes", {"change_set_id": cs}))
    assert refused["status"] != "applied", refused
    assert live_state(sandbox, obj) == before
    assert service.ledger.approvals(cs) == [] or all(
        a.state != "pending" for a in service.ledger.approvals(cs)
    )
    # nothing to press any more
    assert decide(browser, f"{page.url}/changes/{cs}", "approve")[0] == "no-button"


def test_two_approvers_neither_the_requester_nor_the_same_person_twice(
    sandbox: Sandbox,
    service: Service,
    app: FastMCP,
    browser: Browser,
    page: ApprovalOrigin,
    people: list[str],
) -> None:
    obj = workload(sandbox, "orders-db")  # a database (critical) in production
    before = live_state(sandbox, obj)
    cs = requested(service, obj, 3, "token:carol")
    status = approval_status(service, cs)
    assert status is not None and "two_approvers" in status.requires
    url = f"{page.url}/changes/{cs}"

    browser.as_person("carol")  # the requester, enrolled as an approver
    kind, text = decide(browser, url, "approve")
    assert kind == "refused" and "carol requested" in text, text

    browser.as_person("alice")
    kind, text = decide(browser, url, "approve")
    assert kind == "done", text
    kind, text = decide(browser, url, "approve")
    assert kind == "refused" and "already approved" in text, text
    status = approval_status(service, cs)
    assert status is not None and status.state == "pending" and status.approvers == ["alice"]
    assert run(call(app, "apply_changes", {"change_set_id": cs}))["status"] != "applied"
    assert live_state(sandbox, obj) == before

    browser.as_person("bob")
    kind, text = decide(browser, url, "approve")
    assert kind == "done", text
    applied = run(call(app, "apply_changes", {"change_set_id": cs}))
    assert applied["status"] == "applied", applied
    now = get(sandbox, "Deployment", NS, obj["metadata"]["name"])
    assert now["spec"]["replicas"] == 3
    assert jws_claims(now)["approvers"] == ["alice", "bob"]


def test_a_post_without_an_assertion_is_refused(
    sandbox: Sandbox, service: Service, browser: Browser, page: ApprovalOrigin, people: list[str]
) -> None:
    cs = requested(service, workload(sandbox, "noassert"), 3, "token:assistant")
    browser.as_person("alice")
    answers = ceremony(browser, page, cs, cs, body={"action": "approve"})
    assert answers[0][0] == 400 and "passkey assertion" in answers[0][1], answers
    forged = {"action": "approve", "credential": {"id": "AAAA", "rawId": "AAAA",
              "type": "public-key", "response": {}}}  # fmt: skip
    answers = ceremony(browser, page, cs, cs, body=forged)
    assert answers[0][0] == 403, answers
    status = approval_status(service, cs)
    assert status is not None and status.state == "pending" and not status.approvers


def test_an_assertion_for_another_change_set_is_refused(
    sandbox: Sandbox, service: Service, browser: Browser, page: ApprovalOrigin, people: list[str]
) -> None:
    first = requested(service, workload(sandbox, "first"), 3, "token:assistant")
    second = requested(service, workload(sandbox, "second"), 3, "token:assistant")
    browser.as_person("alice")
    answers = ceremony(browser, page, first, second)
    assert answers[0][0] == 403 and "not for approve of" in answers[0][1], answers
    # and one given for declining does not approve
    answers = ceremony(browser, page, second, second, action="decline", times=1, body=None)
    assert answers[0][0] == 200
    for cs in (first, second):
        status = approval_status(service, cs)
        assert status is not None and not status.approvers


def test_a_replayed_assertion_is_refused(
    sandbox: Sandbox, service: Service, browser: Browser, page: ApprovalOrigin, people: list[str]
) -> None:
    cs = requested(service, workload(sandbox, "replay-db"), 3, "token:assistant")  # two needed
    browser.as_person("alice")
    answers = ceremony(browser, page, cs, cs, times=2)
    assert answers[0][0] == 200, answers
    assert answers[1][0] == 409 and "replay" in answers[1][1], answers
    status = approval_status(service, cs)
    assert status is not None and status.approvers == ["alice"] and status.state == "pending"


def test_an_expired_invite_is_refused(
    browser: Browser, registry: Approvers, page: ApprovalOrigin
) -> None:
    from selenium.webdriver.common.by import By

    late = registry.invite("dave", ttl=60, now=time.time() - 120)
    browser.as_person("dave")
    browser.driver.get(late.link(page.url))
    assert "expired" in browser.driver.find_element(By.ID, "message").text
    assert not browser.driver.find_elements(By.ID, "enroll")
    assert browser.passkeys() == []
    assert "dave" not in {a.name for a in registry.list()}


def test_a_revoked_approver_is_refused(
    sandbox: Sandbox,
    service: Service,
    browser: Browser,
    registry: Approvers,
    page: ApprovalOrigin,
) -> None:
    browser.as_person("mallory")
    kind, text = enroll(browser, registry.invite("mallory").link(page.url))
    assert kind == "done", text
    registry.revoke("mallory")
    cs = requested(service, workload(sandbox, "revoked"), 3, "token:assistant")
    kind, text = decide(browser, f"{page.url}/changes/{cs}", "approve")
    assert kind == "refused" and "revoked" in text, text
    status = approval_status(service, cs)
    assert status is not None and status.state == "pending" and not status.approvers


def test_an_invite_link_enrols_once(
    browser: Browser, registry: Approvers, page: ApprovalOrigin
) -> None:
    """The enrolment page as an invited person sees it; the link does not work twice."""
    from selenium.webdriver.common.by import By

    browser.as_person("erin")
    link = registry.invite("erin").link(page.url)
    browser.driver.get(link)
    assert "Register a passkey, erin" in browser.driver.page_source
    screenshot(browser, "approval-page-enroll")
    browser.driver.find_element(By.ID, "enroll").click()
    assert _status(browser)[0] == "done"
    browser.driver.get(link)
    assert "already used" in browser.driver.find_element(By.ID, "message").text
    assert len(browser.passkeys()) == 1


def test_serve_over_stdio_opens_the_page_on_a_loopback_port_of_its_own(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """`sizeguard serve` over stdio (as Claude Desktop starts it): the page listens on its own
    loopback port, and stdout stays the MCP protocol's alone."""
    info = webhook_info(sandbox)
    env = {**os.environ, "KUBECONFIG": str(sandbox.kubeconfig), "OPA_URL": sandbox.opa_url}
    argv = [sys.executable, "-m", "sizeguard.cli", "serve", "--key-dir", str(info["keys"]),
            "--ledger", str(tmp_path / "ledger.db"), "--approval-port", "0"]  # fmt: skip
    process = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        cwd=tmp_path,
    )  # fmt: skip
    try:
        assert process.stderr is not None and process.stdin is not None
        assert process.stdout is not None
        url = ""
        deadline = time.monotonic() + 60
        while not url and time.monotonic() < deadline:
            line = process.stderr.readline().decode()
            assert line or process.poll() is None, "serve exited"
            found = re.search(r"approval page on (http://localhost:\d+)", line)
            url = found.group(1) if found else ""
        assert url, "serve did not say where the page is"
        assert re.fullmatch(r"http://localhost:\d+", url)
        page = httpx.get(f"{url}/", timeout=10)
        assert page.status_code == 200 and "Pending change sets" in page.text
        initialize = {
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}},
        }  # fmt: skip
        process.stdin.write((json.dumps(initialize) + "\n").encode())
        process.stdin.flush()
        answer = json.loads(process.stdout.readline())
        assert answer["id"] == 1 and "result" in answer, answer
    finally:
        process.kill()
        process.wait(10)
