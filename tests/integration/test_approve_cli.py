"""`sizeguard approve` in a real pseudo-terminal, against the sandbox: a change set previewed
through the MCP server is approved (or not) by a person typing in a terminal, and the server
then applies it (or refuses to).

Workloads are created in ``approve-it``; the production case previews an edit of
``shop-prod/worker`` and never approves or applies it.

The terminal is only for change sets whose policy requires at most a typed confirmation. With
the shipped data, production needs an enrolled approver's passkey on the approval page (the
command refuses and names the page); the typed-namespace cases run against a private OPA whose
data says what a security team may choose: production and critical workloads need the
namespace typed, no passkey (``config.approval`` in ``policies/data.json``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from mcp_types import Implementation

from sizeguard.changes import guarded_state
from sizeguard.policy import PolicyClient
from sizeguard.quantities import cpu_millicores
from sizeguard.sandbox.opa import running_opa
from sizeguard.server.app import build_app
from sizeguard.server.service import Service

from .conftest import Sandbox
from .test_mcp_server import sandbox_service
from .test_webhook import (
    create,
    ensure_namespace,
    get,
    workload_manifest,
)

NS = "approve-it"
CLIENT = Implementation(name="sizeguard-approve-tests", version="1.0")
QUESTION = re.compile(rb"Approve (apply|rollback) of cs-[0-9a-f]{20}\? \[y/N\] ")
TYPE_PROMPT = re.compile(rb"Type [a-z0-9 -]+ to approve: ")
TIMEOUT = 120.0
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ledger_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("approve-ledger") / "ledger.db"


@pytest.fixture(scope="module")
def typed_opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """OPA over the shipped policies with approval data that asks for a typed namespace only."""
    work = tmp_path_factory.mktemp("typed-opa")
    shutil.copytree(ROOT / "policies", work / "policies")
    data_path = work / "policies" / "data.json"
    data = json.loads(data_path.read_text())
    data["sizeguard"]["config"]["approval"] = {
        "other": [],
        "production": ["typed_confirmation"],
        "critical": ["typed_confirmation"],
        "critical_production": ["typed_confirmation"],
    }
    data_path.write_text(json.dumps(data))
    with running_opa(work / "policies", work) as opa:
        yield opa.url


@pytest.fixture(scope="module")
def service(sandbox: Sandbox, ledger_path: Path, typed_opa: str) -> Iterator[Service]:
    ensure_namespace(sandbox, NS, {"environment": "test"})
    with sandbox_service(sandbox, ledger_path) as service:
        service.policy = PolicyClient(typed_opa)
        yield service


@pytest.fixture(scope="module")
def app(service: Service) -> FastMCP:
    return build_app(service)


async def _call(app: FastMCP, tool: str, args: dict[str, Any]) -> Any:
    async with Client(app, client_info=CLIENT) as client:
        result = await client.call_tool(tool, args)
        return result.structured_content


def call(app: FastMCP, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = asyncio.run(_call(app, tool, args))
    return result


def deployment(sandbox: Sandbox, replicas: int = 2) -> dict[str, Any]:
    name = "a-" + uuid.uuid4().hex[:8]
    return create(sandbox, workload_manifest("Deployment", NS, name, replicas=replicas))


def preview(app: FastMCP, edit: dict[str, Any]) -> dict[str, Any]:
    result = call(app, "preview_changes", {"edits": [{**edit, "reason": "approve-cli test"}]})
    assert result["policy"]["allowed"], result["policy"]
    assert [d["admitted"] for d in result["dry_run"]] == [True], result["dry_run"]
    return result


def preview_replicas(app: FastMCP, obj: dict[str, Any], replicas: int) -> dict[str, Any]:
    meta = obj["metadata"]
    return preview(
        app,
        {
            "kind": "Deployment",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "replicas": replicas,
        },
    )


# --- driving `sizeguard approve` in a pseudo-terminal -------------------------------------------


@dataclass
class Terminal:
    """``sizeguard approve`` running with a pty as its stdin, stdout and stderr."""

    process: subprocess.Popen[bytes]
    master: int
    output: bytearray

    def read_until(self, pattern: re.Pattern[bytes], timeout: float = TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        while not pattern.search(self.output):
            if not self._read(deadline - time.monotonic()):
                raise AssertionError(
                    f"no {pattern.pattern!r} from `sizeguard approve`; it printed:\n" + self.text()
                )
        return bytes(self.output)

    def answer(self, text: str) -> None:
        os.write(self.master, text.encode() + b"\r")

    def finish(self, timeout: float = TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while self._read(deadline - time.monotonic()):
            pass
        code = self.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        os.close(self.master)
        return code

    def text(self) -> str:
        return self.output.decode("utf-8", "replace").replace("\r\n", "\n")

    def _read(self, timeout: float) -> bool:
        """Read what is there; False at end of output or when time is up."""
        if timeout <= 0:
            return False
        ready, _, _ = select.select([self.master], [], [], min(timeout, 1.0))
        if not ready:  # nothing yet: go on while the child runs
            return self.process.poll() is None
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not chunk:
            return False
        self.output.extend(chunk)
        return True


Approve = Callable[..., Terminal]


@pytest.fixture
def approve(sandbox: Sandbox, ledger_path: Path, typed_opa: str) -> Iterator[Approve]:
    started: list[Terminal] = []

    def start(cs: str, *extra: str, opa_url: str = typed_opa) -> Terminal:
        master, slave = os.openpty()
        env = {
            **os.environ,
            "PYTHONIOENCODING": "utf-8",
            "TERM": "dumb",
            "KUBECONFIG": str(sandbox.kubeconfig),
        }
        env.pop("SIZEGUARD_LEDGER", None)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sizeguard.cli",
                "approve",
                cs,
                "--ledger",
                str(ledger_path),
                "--kubeconfig",
                str(sandbox.kubeconfig),
                "--opa-url",
                opa_url,
                *extra,
            ],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        terminal = Terminal(process, master, bytearray())
        started.append(terminal)
        return terminal

    yield start
    for terminal in started:
        if terminal.process.poll() is None:
            terminal.process.kill()
            terminal.process.wait(timeout=10)


# --- the tests ----------------------------------------------------------------------------------


def test_a_person_approves_in_the_terminal_and_the_server_applies(
    sandbox: Sandbox, app: FastMCP, service: Service, approve: Approve
) -> None:
    obj = deployment(sandbox, replicas=2)
    name = obj["metadata"]["name"]
    cs = preview_replicas(app, obj, 3)["change_set_id"]
    assert service.ledger.approvals(cs) == []

    terminal = approve(cs)
    terminal.read_until(QUESTION)
    summary = terminal.text()
    assert f"sizeguard: apply change set {cs} (1 object, risk " in summary
    assert f"Deployment/{NS}/{name}" in summary
    assert "replicas: 2 → 3 (+50%)" in summary
    assert f"Approve apply of {cs}? [y/N]" in summary
    assert "Type " not in summary  # not a production target
    terminal.answer("y")
    code = terminal.finish()
    out = terminal.text()
    assert code == 0, out
    assert f"approved: apply of {cs} until " in out
    assert f"apply_changes('{cs}')" in out

    approvals = service.ledger.approvals(cs)
    assert len(approvals) == 1 and approvals[0].op == "apply"
    assert "(terminal)" in approvals[0].approver
    accepted = [
        e
        for e in service.ledger.audit_entries(change_set_id=cs)
        if e.event == "confirmation.accepted"
    ]
    assert len(accepted) == 1 and accepted[0].details["channel"] == "terminal"

    # Approving changed nothing in the cluster; applying does.
    assert get(sandbox, "Deployment", NS, name)["spec"]["replicas"] == 2
    execution = call(app, "apply_changes", {"change_set_id": cs})
    assert execution["status"] == "applied", execution
    now = get(sandbox, "Deployment", NS, name)
    assert now["spec"]["replicas"] == 3
    assert guarded_state(now) == service.ledger.load_change_set(cs).changes[0].after
    # The approval was used up.
    again = call(app, "apply_changes", {"change_set_id": cs})
    assert again["status"] == "refused", again


@pytest.mark.parametrize("answer", ["n", "", "yes please", "N"])
def test_anything_but_yes_records_no_approval(
    sandbox: Sandbox, app: FastMCP, service: Service, approve: Approve, answer: str
) -> None:
    obj = deployment(sandbox, replicas=2)
    cs = preview_replicas(app, obj, 4)["change_set_id"]

    terminal = approve(cs)
    terminal.read_until(QUESTION)
    terminal.answer(answer)
    code = terminal.finish()
    assert code == 1, terminal.text()
    assert "not approved; nothing changes" in terminal.text()
    assert service.ledger.approvals(cs) == []
    declined = [
        e
        for e in service.ledger.audit_entries(change_set_id=cs)
        if e.event == "confirmation.declined"
    ]
    assert len(declined) == 1

    execution = call(app, "apply_changes", {"change_set_id": cs})
    assert execution["status"] == "refused", execution
    assert get(sandbox, "Deployment", NS, obj["metadata"]["name"])["spec"]["replicas"] == 2


def test_an_unknown_change_set_is_refused(service: Service, approve: Approve) -> None:
    cs = "cs-" + uuid.uuid4().hex[:20]
    terminal = approve(cs)
    code = terminal.finish()
    out = terminal.text()
    assert code == 1, out
    assert f"sizeguard: there is no change set {cs}" in out
    assert "[y/N]" not in out
    assert service.ledger.approvals(cs) == []


def _production_edit(sandbox: Sandbox) -> dict[str, Any]:
    worker = get(sandbox, "Deployment", "shop-prod", "worker")
    containers = worker["spec"]["template"]["spec"]["containers"]
    current = next(c for c in containers if c["name"] == "worker")
    millicores = cpu_millicores(current["resources"]["requests"]["cpu"])
    return {
        "kind": "Deployment",
        "namespace": "shop-prod",
        "name": "worker",
        "container": "worker",
        "cpu_request": f"{millicores + max(1, millicores // 10)}m",  # e.g. 200m -> 220m
    }


@pytest.mark.parametrize("typed", ["shop-staging", "", "shop-prod-x", "shop"])
def test_a_production_target_needs_the_namespace_typed(
    sandbox: Sandbox, app: FastMCP, service: Service, approve: Approve, typed: str
) -> None:
    before = guarded_state(get(sandbox, "Deployment", "shop-prod", "worker"))
    result = preview(app, _production_edit(sandbox))
    cs = result["change_set_id"]
    assert result["typed_confirmation"] == ["shop-prod"]

    terminal = approve(cs)
    terminal.read_until(TYPE_PROMPT)
    summary = terminal.text()
    assert f"change set {cs}" in summary
    assert "Deployment/shop-prod/worker" in summary
    assert "container worker: CPU request: " in summary
    assert "type shop-prod to approve" in summary
    assert "Type shop-prod to approve: " in summary
    terminal.answer(typed)
    code = terminal.finish()
    out = terminal.text()
    assert code != 0, out
    assert "namespace typed exactly (shop-prod)" in out
    assert "[y/N]" not in out  # refused before the question
    assert service.ledger.approvals(cs) == []
    assert guarded_state(get(sandbox, "Deployment", "shop-prod", "worker")) == before


def test_typing_the_namespace_leads_to_the_question_and_no_still_approves_nothing(
    sandbox: Sandbox, app: FastMCP, service: Service, approve: Approve
) -> None:
    before = guarded_state(get(sandbox, "Deployment", "shop-prod", "worker"))
    cs = preview(app, _production_edit(sandbox))["change_set_id"]

    terminal = approve(cs)
    terminal.read_until(TYPE_PROMPT)
    terminal.answer("shop-prod")
    terminal.read_until(QUESTION)
    terminal.answer("n")
    code = terminal.finish()
    assert code == 1, terminal.text()
    assert "not approved; nothing changes" in terminal.text()
    assert service.ledger.approvals(cs) == []
    assert guarded_state(get(sandbox, "Deployment", "shop-prod", "worker")) == before


def test_with_the_shipped_policy_production_is_approved_on_the_page_not_here(
    sandbox: Sandbox, app: FastMCP, service: Service, approve: Approve
) -> None:
    before = guarded_state(get(sandbox, "Deployment", "shop-prod", "worker"))
    cs = preview(app, _production_edit(sandbox))["change_set_id"]
    terminal = approve(
        cs, "--approval-url", "http://approvals.example:8765", opa_url=sandbox.opa_url
    )
    code = terminal.finish()
    out = terminal.text()
    assert code == 1, out
    assert "authenticated_approver" in out
    assert f"http://approvals.example:8765/changes/{cs}" in out
    assert "Type shop-prod" not in out and "[y/N]" not in out
    assert service.ledger.approvals(cs) == []
    assert guarded_state(get(sandbox, "Deployment", "shop-prod", "worker")) == before
