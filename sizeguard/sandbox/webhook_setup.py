"""Run sizeguard's admission webhook in the sandbox and register it with the API server.

`sandbox up --with-webhook` calls :func:`bring_up`: a serving certificate from the sandbox CA
(SAN 127.0.0.1), a signing key directory ``DIR/keys`` whose ``jwks.json`` the webhook trusts
(tests mint approvals with ``load_signing_key(DIR/keys)``), the webhook process as a sandbox
component (watching Namespaces with the sandbox's kubeconfig), and a
``ValidatingWebhookConfiguration`` with the real CA bundle, built by
:mod:`sizeguard.webhook.registration` like the chart's. It returns once the API server really
sends requests to the webhook.
"""

from __future__ import annotations

import base64
import json
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import httpx

from sizeguard.approvals import init_key_dir
from sizeguard.sandbox import processes
from sizeguard.sandbox.kube import KubeClient
from sizeguard.sandbox.pki import CertificateAuthority
from sizeguard.sandbox.processes import Component, StartError
from sizeguard.webhook import registration

CONFIGURATION_NAME: Final = "sizeguard"
_VWC_PATH: Final = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


def configuration(
    url: str,
    ca_bundle: bytes,
    *,
    name: str = CONFIGURATION_NAME,
    extra_namespace_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration for a webhook at ``url`` (``.../validate``): the
    webhooks of :mod:`sizeguard.webhook.registration` (the chart renders the same ones), for
    every namespace but the system ones (and, given ``extra_namespace_labels``, only those
    carrying these labels)."""
    prefix = "" if name == CONFIGURATION_NAME else f"{name}."
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "sizeguard"}},
        "webhooks": registration.webhook_entries(
            {"url": url, "caBundle": base64.b64encode(ca_bundle).decode()},
            prefix=prefix,
            namespace_selector=registration.namespace_selector(match_labels=extra_namespace_labels),
        ),
    }


def apply_configuration(kube: KubeClient, config: dict[str, Any]) -> None:
    """Create the configuration, or replace one of the same name."""
    name = config["metadata"]["name"]
    response = kube.http.post(_VWC_PATH, json=config)
    if response.status_code == 409:
        current = kube.http.get(f"{_VWC_PATH}/{name}")
        current.raise_for_status()
        body = {**config, "metadata": {**config["metadata"], **_rv(current.json())}}
        response = kube.http.put(f"{_VWC_PATH}/{name}", json=body)
    if response.status_code >= 400:
        raise RuntimeError(
            f"registering ValidatingWebhookConfiguration {name}: HTTP {response.status_code}: "
            f"{response.text[:300]}"
        )


def _rv(obj: dict[str, Any]) -> dict[str, str]:
    return {"resourceVersion": obj["metadata"]["resourceVersion"]}


def delete_configuration(kube: KubeClient, name: str) -> None:
    response = kube.http.delete(f"{_VWC_PATH}/{name}")
    if response.status_code not in (200, 202, 404):
        response.raise_for_status()


def webhook_argv(
    cert: Path, key: Path, jwks: Path, opa_url: str, port: int, kubeconfig: Path
) -> list[str]:
    """``sizeguard webhook`` on loopback; it watches Namespaces with ``kubeconfig``."""
    return [
        sys.executable,
        "-m",
        "sizeguard.cli",
        "webhook",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--jwks",
        str(jwks),
        "--opa-url",
        opa_url,
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--kubeconfig",
        str(kubeconfig),
    ]


def ca_context(ca_cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_cert))


def wait_ready(component: Component, url: str, ca_cert: Path, timeout: float = 30) -> None:
    """Wait until the webhook's /readyz says ready, verified against the CA."""
    context = ca_context(ca_cert)

    def ready() -> bool:
        return httpx.get(f"{url}/readyz", verify=context, timeout=2.0).status_code == 200

    processes.wait_until(component, ready, timeout=timeout, what="ready")


def dry_run_probe(kube: KubeClient, namespace: str, name: str) -> bool:
    """True when a server-side dry-run change of replicas on this Deployment is answered by
    the sizeguard webhook (its warning comes back): the registration is effective."""
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
    current = kube.http.get(path)
    current.raise_for_status()
    replicas = current.json()["spec"].get("replicas", 1)
    response = kube.http.patch(
        path,
        params={"dryRun": "All"},
        content=json.dumps({"spec": {"replicas": replicas + 1}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    warnings = " ".join(response.headers.get_list("warning"))
    return "sizeguard: dry run admitted" in warnings


def wait_effective(
    kube: KubeClient,
    namespace: str,
    name: str,
    component: Component | None = None,
    timeout: float = 30,
) -> None:
    deadline = time.monotonic() + timeout
    while not dry_run_probe(kube, namespace, name):
        if component is not None and processes.exited(component):
            raise StartError(component, "the webhook exited before its registration took effect")
        if time.monotonic() > deadline:
            message = f"the webhook registration was not effective after {timeout:.0f}s"
            if component is not None:
                raise StartError(component, message)
            raise RuntimeError(message)
        time.sleep(0.25)


def bring_up(
    *,
    directory: Path,
    ca: CertificateAuthority,
    kube: KubeClient,
    kubeconfig: Path,
    opa_url: str,
    probe: tuple[str, str],
    start: Callable[[str, list[str]], Component],
) -> dict[str, str]:
    """Start and register the webhook; returns what ``sandbox.json`` records about it."""
    serving = ca.issue("webhook", "sizeguard-webhook", server_names=("127.0.0.1",))
    keys = directory / "keys"
    init_key_dir(keys)
    port = processes.free_port()
    url = f"https://127.0.0.1:{port}"
    component = start(
        "webhook",
        webhook_argv(serving.cert, serving.key, keys / "jwks.json", opa_url, port, kubeconfig),
    )
    component.url = url
    wait_ready(component, url, ca.cert_path)
    apply_configuration(kube, configuration(f"{url}/validate", ca.pem))
    wait_effective(kube, probe[0], probe[1], component)
    return {
        "url": f"{url}/validate",
        "keys": str(keys),
        "jwks": str(keys / "jwks.json"),
        "configuration": CONFIGURATION_NAME,
        "cert": str(serving.cert),
        "key": str(serving.key),
    }
