"""Key rotation and certificate rotation without a restart, on a real webhook process
(its own keys and CA; the session sandbox's OPA answers the policy questions)."""

from __future__ import annotations

import hashlib
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sizeguard.approvals import init_key_dir, load_signing_key, rotate_key_dir
from sizeguard.sandbox import processes, webhook_setup
from sizeguard.sandbox.pki import CertificateAuthority
from sizeguard.sandbox.processes import Component
from sizeguard.webhook.server import certificate_not_after

from .conftest import Sandbox
from .helpers import eventually
from .test_webhook import ensure_namespace, mint, with_cpu, workload_manifest


@dataclass
class Hook:
    url: str
    port: int
    keys: Path
    ca: CertificateAuthority
    cert: Path
    key: Path
    process: Component

    def client(self) -> httpx.Client:
        return httpx.Client(verify=webhook_setup.ca_context(self.ca.cert_path), timeout=10)


@pytest.fixture
def hook(sandbox: Sandbox, tmp_path: Path) -> Iterator[Hook]:
    keys = tmp_path / "keys"
    init_key_dir(keys)
    ca = CertificateAuthority(tmp_path / "pki", common_name="sizeguard-reload-ca")
    serving = ca.issue("webhook", "sizeguard-webhook", server_names=("127.0.0.1",))
    port = processes.free_port()
    ensure_namespace(sandbox, "reload")  # the webhook learns the labels of the namespace
    argv = webhook_setup.webhook_argv(
        serving.cert, serving.key, keys / "jwks.json", sandbox.opa_url, port, sandbox.kubeconfig
    )
    process = processes.start("webhook", argv, tmp_path / "webhook.log", cwd=tmp_path)
    url = f"https://127.0.0.1:{port}"
    try:
        webhook_setup.wait_ready(process, url, ca.cert_path)
        yield Hook(url, port, keys, ca, serving.cert, serving.key, process)
    finally:
        processes.stop(process)


def _review(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "1b6f4a9e-0000-4000-8000-00000000abcd",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": old["metadata"]["name"],
            "namespace": old["metadata"]["namespace"],
            "operation": "UPDATE",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": new,
            "oldObject": old,
            "dryRun": False,
        },
    }


def _approved_review(hook: Hook) -> dict[str, Any]:
    old = workload_manifest("Deployment", "reload", "web")
    old["metadata"]["uid"] = "5d7c0a51-0000-4000-8000-000000000001"
    old["metadata"]["resourceVersion"] = "1"
    new = with_cpu(old, "150m")
    token = mint(load_signing_key(hook.keys), old, new)
    new["metadata"]["annotations"] = {"sizeguard.io/approval": token}
    return _review(old, new)


def _allowed(hook: Hook, review: dict[str, Any]) -> tuple[bool, str]:
    with hook.client() as client:
        response = client.post(f"{hook.url}/validate", json=review)
    assert response.status_code == 200
    body = response.json()["response"]
    return body["allowed"], body.get("status", {}).get("message", "")


def test_a_rotated_jwks_is_picked_up_without_a_restart(hook: Hook) -> None:
    assert _allowed(hook, _approved_review(hook)) == (True, "")
    rotate_key_dir(hook.keys)  # new active key, first in jwks.json
    review = _approved_review(hook)  # signed with the new key

    def accepted() -> bool:
        return _allowed(hook, review)[0]

    # Within about a second (the minimum interval between two checks of the file).
    eventually(accepted, timeout=10, what="the new key to be trusted")
    assert processes.is_running(hook.process)
    # A broken JWKS keeps the last good keys.
    (hook.keys / "jwks.json").write_text("{not json")
    time.sleep(1.5)
    assert accepted()
    with hook.client() as client:
        assert client.get(f"{hook.url}/readyz").status_code == 200
        metrics = client.get(f"{hook.url}/metrics").text
    assert 'sizeguard_webhook_jwks_reloads_total{result="failed"}' in metrics


def _served_fingerprint(hook: Hook) -> str:
    context = webhook_setup.ca_context(hook.ca.cert_path)
    with (
        socket.create_connection(("127.0.0.1", hook.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def _file_fingerprint(path: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(path.read_text())
    return hashlib.sha256(der).hexdigest()


def _expiry_metric(hook: Hook) -> float | None:
    with hook.client() as client:
        text = client.get(f"{hook.url}/metrics").text
    for line in text.splitlines():
        if line.startswith("sizeguard_webhook_tls_certificate_expiry_timestamp_seconds "):
            return float(line.split()[1])
    return None


def test_a_renewed_certificate_is_served_without_a_restart(hook: Hook) -> None:
    first = _served_fingerprint(hook)
    assert first == _file_fingerprint(hook.cert)
    # Renew: a new key and certificate from the same CA, written over the files.
    renewed = hook.ca.issue("renewed", "sizeguard-webhook", server_names=("127.0.0.1",))
    hook.key.write_bytes(renewed.key.read_bytes())
    hook.cert.write_bytes(renewed.cert.read_bytes())
    expected = _file_fingerprint(hook.cert)
    assert expected != first
    eventually(lambda: _served_fingerprint(hook) == expected, timeout=10, what="the new cert")
    not_after = certificate_not_after(hook.cert)
    assert not_after is not None and not_after > time.time() + 86400
    eventually(
        lambda: _expiry_metric(hook) == not_after, timeout=10, what="the expiry of the new cert"
    )
    # A broken pair (key from elsewhere) is refused; the renewed certificate keeps serving.
    other = hook.ca.issue("other", "x", server_names=("127.0.0.1",))
    hook.key.write_bytes(other.key.read_bytes())
    time.sleep(2.5)
    assert _served_fingerprint(hook) == expected
    with hook.client() as client:
        metrics = client.get(f"{hook.url}/metrics").text
        assert client.post(f"{hook.url}/validate", content=b"{}").status_code == 200
    assert 'sizeguard_webhook_tls_reloads_total{result="failed"}' in metrics
    assert processes.is_running(hook.process)
