"""Failure modes through the real kube-apiserver: OPA down, webhook down.

The session sandbox's OPA and webhook are left alone: each test runs a second, private stack
(its own CA, OPA and webhook process) registered by a second ValidatingWebhookConfiguration,
built by the same code as the sandbox's, that only selects one test namespace. The session
webhook keeps answering there too, so every guarded change below carries a valid approval:
whatever denies it is the failure under test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sizeguard.sandbox import lifecycle, processes, tools, webhook_setup
from sizeguard.sandbox.opa import opa_argv
from sizeguard.sandbox.pki import CertificateAuthority
from sizeguard.sandbox.processes import Component

from .conftest import Sandbox
from .helpers import eventually
from .test_webhook import (
    MERGE_PATCH,
    RESPELLED_SURGE,
    STRATEGIC,
    approved_write,
    cpu_of,
    cpu_patch,
    create,
    ensure_namespace,
    get,
    mint,
    patch,
    path_of,
    response_text,
    signing_key,
    webhook_info,
    with_cpu,
    workload_manifest,
)

NAMESPACE = "wh-failures"
LABEL = {"sizeguard-it": "failures"}


@dataclass
class Stack:
    name: str
    url: str
    ca: CertificateAuthority
    opa: Component
    webhook: Component

    def requests(self, reason: str | None = None) -> float:
        context = webhook_setup.ca_context(self.ca.cert_path)
        text = httpx.get(f"{self.url}/metrics", verify=context, timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("sizeguard_webhook_requests_total{") and (
                reason is None or f'reason="{reason}"' in line
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture
def stack(sandbox: Sandbox, tmp_path: Path) -> Iterator[Stack]:
    ensure_namespace(sandbox, NAMESPACE, LABEL)
    opa_bin = tools.find("opa")
    assert opa_bin is not None
    ca = CertificateAuthority(tmp_path / "pki", common_name="sizeguard-it-ca")
    serving = ca.issue("webhook", "sizeguard-it-webhook", server_names=("127.0.0.1",))
    opa_port, port = processes.free_port(), processes.free_port()
    started: list[Component] = []
    name = "sizeguard-it-" + uuid.uuid4().hex[:6]
    try:
        opa = processes.start(
            "opa",
            opa_argv(opa_bin, opa_port, lifecycle.DEFAULT_POLICIES),
            tmp_path / "opa.log",
            cwd=tmp_path,
        )
        started.append(opa)
        opa_url = f"http://127.0.0.1:{opa_port}"
        processes.wait_until(
            opa,
            lambda: httpx.get(f"{opa_url}/health", timeout=1).status_code == 200,
            timeout=30,
            what="healthy",
        )
        jwks = Path(webhook_info(sandbox)["jwks"])
        url = f"https://127.0.0.1:{port}"
        webhook = processes.start(
            "webhook",
            webhook_setup.webhook_argv(
                serving.cert, serving.key, jwks, opa_url, port, sandbox.kubeconfig
            ),
            tmp_path / "webhook.log",
            cwd=tmp_path,
        )
        started.append(webhook)
        webhook_setup.wait_ready(webhook, url, ca.cert_path)
        config = webhook_setup.configuration(
            f"{url}/validate", ca.pem, name=name, extra_namespace_labels=LABEL
        )
        webhook_setup.apply_configuration(sandbox.kube, config)
        box = Stack(name, url, ca, opa, webhook)
        probe = create(sandbox, workload_manifest("Deployment", NAMESPACE, "probe"))
        path = path_of("Deployment", NAMESPACE, "probe")

        def effective() -> bool:
            before = box.requests()
            changed = {"spec": {"replicas": probe["spec"]["replicas"] + 1}}
            patch(sandbox, path, changed, MERGE_PATCH, {"dryRun": "All"})
            return box.requests() > before

        eventually(effective, what="the private webhook registration to take effect")
        yield box
    finally:
        webhook_setup.delete_configuration(sandbox.kube, name)
        for component in reversed(started):
            processes.stop(component)


def _approved_change(sandbox: Sandbox, name: str) -> tuple[str, dict[str, Any]]:
    """An approved change of a Deployment created (and settled) before the failure: once the
    webhook or its OPA is down, creating objects in the namespace is refused too."""
    obj = get(sandbox, "Deployment", NAMESPACE, name)
    token = mint(signing_key(sandbox), obj, with_cpu(obj, "150m"))
    return path_of("Deployment", NAMESPACE, name), cpu_patch("150m", token)


def test_opa_down_denies_guarded_changes_and_admits_unguarded_ones(
    sandbox: Sandbox, stack: Stack
) -> None:
    # With OPA up, an approved change passes both webhooks.
    create(sandbox, workload_manifest("Deployment", NAMESPACE, "opa-up"))
    path = path_of("Deployment", NAMESPACE, "opa-up")
    response = approved_write(
        sandbox,
        "Deployment",
        NAMESPACE,
        "opa-up",
        lambda obj: with_cpu(obj, "150m"),
        lambda token: patch(sandbox, path, cpu_patch("150m", token), STRATEGIC),
        response_text,
    )
    assert response.status_code == 200, response.text

    create(sandbox, workload_manifest("Deployment", NAMESPACE, "opa-down"))
    processes.stop(stack.opa)
    path, body = _approved_change(sandbox, "opa-down")
    response = patch(sandbox, path, body, STRATEGIC)
    assert response.status_code == 403, response.text
    message = response.json()["message"]
    assert f'admission webhook "{stack.name}.workloads.sizeguard.io" denied the request' in message
    assert "sizeguard: the policy engine (OPA) is unavailable" in message
    assert cpu_of(get(sandbox, "Deployment", NAMESPACE, "opa-down")) == "100m"
    # The webhook is no longer ready (kubelet would take it out of the Service); readiness
    # is cached for a second.
    context = webhook_setup.ca_context(stack.ca.cert_path)

    def not_ready() -> str | None:
        readyz = httpx.get(f"{stack.url}/readyz", verify=context, timeout=5)
        return readyz.text if readyz.status_code == 503 else None

    assert "OPA" in eventually(not_ready, timeout=5, what="/readyz to fail")

    # Unguarded changes: filtered by matchConditions, or admitted by the webhook's fast path
    # (the strategy is respelled, the footprint is the same) without asking OPA.
    assert (
        patch(sandbox, path, {"metadata": {"labels": {"x": "y"}}}, MERGE_PATCH).status_code == 200
    )
    unchanged_before = stack.requests("unchanged")
    assert patch(sandbox, path, RESPELLED_SURGE, STRATEGIC).status_code == 200
    assert stack.requests("unchanged") > unchanged_before


def test_webhook_down_the_api_server_rejects_guarded_changes(
    sandbox: Sandbox, stack: Stack
) -> None:
    create(sandbox, workload_manifest("Deployment", NAMESPACE, "hook-down"))
    processes.stop(stack.webhook)
    path, body = _approved_change(sandbox, "hook-down")
    response = patch(sandbox, path, body, STRATEGIC)
    assert response.status_code == 500 or response.status_code == 403, response.text
    message = response.json()["message"]
    assert f'failed calling webhook "{stack.name}.workloads.sizeguard.io"' in message
    assert cpu_of(get(sandbox, "Deployment", NAMESPACE, "hook-down")) == "100m"
    # Creating a workload needs the webhook too (fail closed).
    created = sandbox.kube.http.post(
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
        json=workload_manifest("Deployment", NAMESPACE, "while-down"),
    )
    assert created.status_code == 500, created.text
    message = created.json()["message"]
    assert f'failed calling webhook "{stack.name}.workloads.sizeguard.io"' in message
    # Unguarded changes never call it, so they still go through.
    response = patch(sandbox, path, {"metadata": {"labels": {"x": "y"}}}, MERGE_PATCH)
    assert response.status_code == 200, response.text
    result = patch(sandbox, path + "/scale", {"spec": {"replicas": 5}}, MERGE_PATCH)
    assert f'failed calling webhook "{stack.name}.scale.sizeguard.io"' in result.json()["message"]
