"""Read the live workloads, their HPAs and pods from the kube-apiserver (read-only).

Only what a scan needs: for each Deployment, StatefulSet and DaemonSet its containers'
requests and limits, replicas, labels and annotations; the ``autoscaling/v2`` HPAs that
target them; and the names of the pods that exist now (so that pods seen only in Prometheus'
history can be marked as deleted). Talks to the API with httpx and the kubeconfig's
credentials (client certificates, inline or in files, or a bearer token).
"""

from __future__ import annotations

import base64
import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml

from sizeguard.quantities import cpu_millicores, memory_bytes
from sizeguard.texts import bad_namespace_names, describe_http_error

__all__ = [
    "KINDS",
    "ContainerAllocation",
    "HpaInfo",
    "Workload",
    "WorkloadReadError",
    "WorkloadReader",
    "hpa_info",
    "workload_from_object",
]

KINDS: dict[str, str] = {
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
}


@dataclass(frozen=True)
class ContainerAllocation:
    """One container's current requests/limits: CPU in cores, memory in bytes, None if unset."""

    name: str
    cpu_request: float | None = None
    cpu_limit: float | None = None
    memory_request: float | None = None
    memory_limit: float | None = None


@dataclass(frozen=True)
class HpaInfo:
    name: str
    min_replicas: int
    max_replicas: int
    current_replicas: int | None
    desired_replicas: int | None
    target_cpu_utilization_percentage: float | None
    target_memory_utilization_percentage: float | None
    scales_on_cpu: bool
    scales_on_memory: bool


@dataclass
class Workload:
    kind: str
    namespace: str
    name: str
    containers: list[ContainerAllocation]
    replicas: int | None = None  # None for DaemonSets
    uid: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    hpa: HpaInfo | None = None
    live_pods: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)


def _cores(value: object) -> float | None:
    return None if value is None else cpu_millicores(value) / 1000


def _bytes(value: object) -> float | None:
    return None if value is None else float(memory_bytes(value))


def workload_from_object(obj: dict[str, Any]) -> Workload:
    meta = obj.get("metadata", {})
    spec = obj.get("spec", {})
    pod_spec = spec.get("template", {}).get("spec", {})
    containers = []
    for c in pod_spec.get("containers", []):
        resources = c.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        containers.append(
            ContainerAllocation(
                c["name"],
                _cores(requests.get("cpu")),
                _cores(limits.get("cpu")),
                _bytes(requests.get("memory")),
                _bytes(limits.get("memory")),
            )
        )
    kind = obj.get("kind", "")
    replicas = None if kind == "DaemonSet" else int(spec.get("replicas", 1))
    return Workload(
        kind=kind,
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        containers=containers,
        replicas=replicas,
        uid=meta.get("uid", ""),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
    )


def hpa_info(obj: dict[str, Any]) -> tuple[tuple[str, str, str], HpaInfo]:
    """(target key, info) for an ``autoscaling/v2`` HorizontalPodAutoscaler."""
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status") or {}
    ref = spec.get("scaleTargetRef", {})
    targets: dict[str, float | None] = {"cpu": None, "memory": None}
    scales: dict[str, bool] = {"cpu": False, "memory": False}
    for metric in spec.get("metrics") or []:
        source = metric.get("resource") or metric.get("containerResource")
        if metric.get("type") not in ("Resource", "ContainerResource") or not source:
            continue
        name = source.get("name")
        if name not in targets:
            continue
        scales[name] = True
        target = source.get("target") or {}
        if target.get("type") == "Utilization" and target.get("averageUtilization") is not None:
            targets[name] = float(target["averageUtilization"])
    info = HpaInfo(
        name=meta.get("name", ""),
        min_replicas=int(spec.get("minReplicas", 1)),
        max_replicas=int(spec.get("maxReplicas", 1)),
        current_replicas=status.get("currentReplicas"),
        desired_replicas=status.get("desiredReplicas"),
        target_cpu_utilization_percentage=targets["cpu"],
        target_memory_utilization_percentage=targets["memory"],
        scales_on_cpu=scales["cpu"],
        scales_on_memory=scales["memory"],
    )
    return (ref.get("kind", ""), meta.get("namespace", ""), ref.get("name", "")), info


class WorkloadReadError(Exception):
    """The API server did not give the workloads; the message is a sentence naming the
    request and its answer (:func:`sizeguard.texts.describe_http_error`)."""


class WorkloadReader:
    """A read-only view of the cluster through one kubeconfig context."""

    def __init__(self, kubeconfig: Path, *, context: str | None = None, timeout: float = 30.0):
        with _client_settings(kubeconfig, context) as (server, verify, cert, headers):
            self.http = httpx.Client(
                base_url=server, verify=verify, cert=cert, headers=headers, timeout=timeout
            )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> WorkloadReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _list(self, path: str) -> Iterator[dict[str, Any]]:
        token = ""
        while True:
            params = {"limit": "500"}
            if token:
                params["continue"] = token
            try:
                response = self.http.get(path, params=params)
                if response.status_code == 404:
                    return
                response.raise_for_status()
                body = response.json()
            except httpx.HTTPError as exc:
                raise WorkloadReadError(describe_http_error(exc)) from None
            except ValueError:
                raise WorkloadReadError(
                    f"the API server's answer to GET {path} is not JSON"
                ) from None
            yield from body.get("items", [])
            token = body.get("metadata", {}).get("continue", "")
            if not token:
                return

    def _paths(self, group: str, resource: str, namespaces: Iterable[str] | None) -> list[str]:
        """The list paths of ``resource``: one per namespace (names checked and quoted: ``..``
        would list the whole cluster), or the cluster-wide one."""
        if not namespaces:
            return [f"{group}/{resource}"]
        names = list(namespaces)
        problem = bad_namespace_names(names)
        if problem is not None:
            raise WorkloadReadError(problem)
        return [f"{group}/namespaces/{quote(ns, safe='')}/{resource}" for ns in names]

    def workloads(self, namespaces: Iterable[str] | None = None) -> list[Workload]:
        """All Deployments, StatefulSets and DaemonSets with their HPA and live pod names."""
        ns = sorted(set(namespaces or ()))
        found: dict[tuple[str, str, str], Workload] = {}
        for kind, resource in KINDS.items():
            for path in self._paths("/apis/apps/v1", resource, ns):
                for obj in self._list(path):
                    obj.setdefault("kind", kind)
                    workload = workload_from_object(obj)
                    found[workload.key] = workload
        for path in self._paths("/apis/autoscaling/v2", "horizontalpodautoscalers", ns):
            for obj in self._list(path):
                key, info = hpa_info(obj)
                if key in found:
                    found[key].hpa = info
        replicasets: dict[tuple[str, str], str] = {}
        for path in self._paths("/apis/apps/v1", "replicasets", ns):
            for obj in self._list(path):
                meta = obj.get("metadata", {})
                for ref in meta.get("ownerReferences") or []:
                    if ref.get("kind") == "Deployment" and ref.get("controller"):
                        replicasets[(meta.get("namespace", ""), meta["name"])] = ref["name"]
        for path in self._paths("/api/v1", "pods", ns):
            for obj in self._list(path):
                meta = obj.get("metadata", {})
                if meta.get("deletionTimestamp"):
                    continue
                namespace = meta.get("namespace", "")
                for ref in meta.get("ownerReferences") or []:
                    if not ref.get("controller"):
                        continue
                    kind, name = ref.get("kind"), ref.get("name", "")
                    if kind == "ReplicaSet":
                        kind, name = "Deployment", replicasets.get((namespace, name), "")
                    target = found.get((str(kind), namespace, name))
                    if target is not None:
                        target.live_pods.append(meta["name"])
        return sorted(found.values(), key=lambda w: (w.namespace, w.kind, w.name))


@contextlib.contextmanager
def _client_settings(
    kubeconfig: Path, context: str | None
) -> Iterator[tuple[str, ssl.SSLContext | bool, tuple[str, str] | None, dict[str, str]]]:
    """Server, TLS verification, client cert files and headers of a kubeconfig context."""
    config = yaml.safe_load(kubeconfig.read_text()) or {}
    name = context or config.get("current-context")
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
    ctx = contexts.get(name) if name else None
    if ctx is None and contexts:
        ctx = next(iter(contexts.values()))
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
    users = {u["name"]: u.get("user") or {} for u in config.get("users") or []}
    if ctx is None or ctx.get("cluster") not in clusters:
        raise ValueError(f"{kubeconfig}: no usable context")
    cluster = clusters[ctx["cluster"]]
    user = users.get(ctx.get("user", ""), {})
    base = kubeconfig.parent

    def resolve(value: str) -> str:
        return str(value if Path(value).is_absolute() else base / value)

    verify: ssl.SSLContext | bool = True
    if cluster.get("insecure-skip-tls-verify"):
        verify = False
    elif cluster.get("certificate-authority-data"):
        verify = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
    elif cluster.get("certificate-authority"):
        verify = ssl.create_default_context(cafile=resolve(cluster["certificate-authority"]))
    headers: dict[str, str] = {}
    if user.get("token"):
        headers["Authorization"] = f"Bearer {user['token']}"
    with tempfile.TemporaryDirectory(prefix="sizeguard-kube-") as tmp:
        cert: tuple[str, str] | None = None
        if user.get("client-certificate-data") and user.get("client-key-data"):
            cert_path, key_path = Path(tmp) / "client.crt", Path(tmp) / "client.key"
            old = os.umask(0o077)
            try:
                cert_path.write_bytes(base64.b64decode(user["client-certificate-data"]))
                key_path.write_bytes(base64.b64decode(user["client-key-data"]))
            finally:
                os.umask(old)
            cert = (str(cert_path), str(key_path))
        elif user.get("client-certificate") and user.get("client-key"):
            cert = (resolve(user["client-certificate"]), resolve(user["client-key"]))
        if cert is not None and isinstance(verify, ssl.SSLContext):
            # Load the pair now so that the temporary files can go when we leave.
            verify.load_cert_chain(*cert)
            cert = None
        elif cert is not None:
            tls = ssl.create_default_context()
            if verify is False:
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
            tls.load_cert_chain(*cert)
            verify, cert = tls, None
        yield cluster["server"], verify, cert, headers
