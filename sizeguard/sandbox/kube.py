"""Just enough of the Kubernetes REST API to seed the sandbox, over mutual TLS."""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import yaml

from sizeguard.sandbox.pki import CertPair

# Collection paths of the kinds the sandbox creates.
_PATHS = {
    "Node": "/api/v1/nodes",
    "Namespace": "/api/v1/namespaces",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "StatefulSet": "/apis/apps/v1/namespaces/{ns}/statefulsets",
    "DaemonSet": "/apis/apps/v1/namespaces/{ns}/daemonsets",
    "HorizontalPodAutoscaler": "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
}


def write_kubeconfig(path: Path, server: str, ca: Path, pair: CertPair, user: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "sizeguard-sandbox",
                "cluster": {"server": server, "certificate-authority": str(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate": str(pair.cert), "client-key": str(pair.key)},
            }
        ],
        "contexts": [
            {"name": "sizeguard-sandbox", "context": {"cluster": "sizeguard-sandbox", "user": user}}
        ],
        "current-context": "sizeguard-sandbox",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


class KubeClient:
    """A small client reading the sandbox's own kubeconfig layout (file-based certs)."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        ctx = ssl.create_default_context(cafile=cluster["certificate-authority"])
        ctx.load_cert_chain(user["client-certificate"], user["client-key"])
        self.server = cluster["server"]
        self.http = httpx.Client(
            base_url=self.server,
            verify=ctx,
            timeout=30.0,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )

    def close(self) -> None:
        self.http.close()

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create an object; an existing one (409) is left as it is and None returned."""
        path = _PATHS[obj["kind"]].format(ns=obj["metadata"].get("namespace", ""))
        response = self.http.post(path, json=obj)
        if response.status_code == 409:
            return None
        if response.status_code >= 400:
            raise RuntimeError(
                f"creating {obj['kind']} {obj['metadata'].get('namespace', '')}/"
                f"{obj['metadata']['name']}: HTTP {response.status_code}: {response.text[:300]}"
            )
        created: dict[str, Any] = response.json()
        return created

    def apply_many(self, objects: Iterable[dict[str, Any]], workers: int = 16) -> None:
        items = list(objects)
        if not items:
            return
        with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
            for _ in pool.map(self.create, items):
                pass

    def list_pods(self, label_selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            params = {"labelSelector": label_selector, "limit": "500"}
            if token:
                params["continue"] = token
            response = self.http.get("/api/v1/pods", params=params)
            response.raise_for_status()
            body = response.json()
            items.extend(body.get("items", []))
            token = body.get("metadata", {}).get("continue", "")
            if not token:
                return items

    def delete_pod(self, namespace: str, name: str) -> None:
        response = self.http.delete(
            f"/api/v1/namespaces/{namespace}/pods/{name}", params={"gracePeriodSeconds": "0"}
        )
        if response.status_code not in (200, 202, 404):
            response.raise_for_status()
