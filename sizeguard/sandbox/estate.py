"""The demo estate: namespaces, nodes and workloads, and how each container uses resources.

Everything is derived from a seed, so the same ``--seed`` gives the same estate and the same
synthetic history. The usage profile of a container is what the metrics generator turns into
14 days of samples, and what tests compare Prometheus' answers against.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

MI = 1024**2
GI = 1024**3

CRITICAL_LABEL = "sizeguard.io/critical"
ESTATE_LABEL = "sizeguard.io/sandbox"


@dataclass(frozen=True)
class Usage:
    """How one container behaves over time.

    CPU (cores) follows a daily cycle around ``cpu_base`` with relative amplitude
    ``cpu_daily``, plus noise and rare spikes. Memory (bytes) starts at ``mem_base``, grows by
    ``mem_growth_per_day`` and drops back at each restart (every ``restart_days``). With
    ``oom_at`` set, the container is killed for memory when it reaches that size.
    """

    cpu_base: float
    cpu_daily: float = 0.4
    cpu_noise: float = 0.08
    spike_chance: float = 0.002
    spike_factor: float = 3.0
    mem_base: int = 128 * MI
    mem_growth_per_day: int = 8 * MI
    restart_days: float = 4.0
    oom_at: int | None = None


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    cpu_request: str | None
    memory_request: str | None
    cpu_limit: str | None = None
    memory_limit: str | None = None
    usage: Usage = field(default_factory=lambda: Usage(cpu_base=0.05))

    def resources(self) -> dict[str, dict[str, str]]:
        requests = {
            k: v
            for k, v in (("cpu", self.cpu_request), ("memory", self.memory_request))
            if v is not None
        }
        limits = {
            k: v
            for k, v in (("cpu", self.cpu_limit), ("memory", self.memory_limit))
            if v is not None
        }
        out: dict[str, dict[str, str]] = {}
        if requests:
            out["requests"] = requests
        if limits:
            out["limits"] = limits
        return out


@dataclass(frozen=True)
class HPASpec:
    min_replicas: int
    max_replicas: int
    cpu_utilization: int = 70


@dataclass(frozen=True)
class WorkloadSpec:
    kind: str  # Deployment | StatefulSet | DaemonSet
    namespace: str
    name: str
    containers: tuple[ContainerSpec, ...]
    replicas: int = 1
    init_containers: tuple[ContainerSpec, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    hpa: HPASpec | None = None
    history_minutes: int | None = None  # None: the whole history window
    replace_pod_midway: bool = False
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    cpu: str
    memory: str
    pods: int = 110
    zone: str = "zone-a"


@dataclass(frozen=True)
class Estate:
    namespaces: dict[str, dict[str, str]]
    nodes: tuple[NodeSpec, ...]
    workloads: tuple[WorkloadSpec, ...]
    seed: int


def _c(
    name: str,
    cpu: str | None,
    mem: str | None,
    cpu_limit: str | None = None,
    mem_limit: str | None = None,
    **usage: Any,
) -> ContainerSpec:
    return ContainerSpec(name, cpu, mem, cpu_limit, mem_limit, Usage(**usage))


def default_workloads() -> list[WorkloadSpec]:
    """The hand-written part of the estate; each entry exercises something."""
    crit = {CRITICAL_LABEL: "true"}
    return [
        # shop-prod: a production namespace by name and by label.
        WorkloadSpec(
            "Deployment",
            "shop-prod",
            "web",
            (_c("web", "250m", "256Mi", "1", "512Mi", cpu_base=0.18, mem_base=180 * MI),),
            replicas=3,
            hpa=HPASpec(3, 10, 70),
            note="scaled by an HPA on CPU",
        ),
        WorkloadSpec(
            "Deployment",
            "shop-prod",
            "api",
            (
                _c("api", "500m", "512Mi", None, "1Gi", cpu_base=0.3, mem_base=300 * MI),
                _c("envoy", "100m", "128Mi", "200m", "128Mi", cpu_base=0.04, mem_base=60 * MI),
            ),
            replicas=2,
            replace_pod_midway=True,
            note="one pod replaced in the middle of the history",
        ),
        WorkloadSpec(
            "Deployment",
            "shop-prod",
            "checkout",
            (
                _c(
                    "checkout",
                    "2",
                    "4Gi",
                    "4",
                    "4Gi",
                    cpu_base=0.05,
                    mem_base=200 * MI,
                    mem_growth_per_day=2 * MI,
                ),
            ),
            replicas=2,
            note="over-provisioned",
        ),
        WorkloadSpec(
            "Deployment",
            "shop-prod",
            "worker",
            (_c("worker", "200m", "256Mi", None, "512Mi", cpu_base=0.12, mem_base=150 * MI),),
            replicas=2,
            init_containers=(_c("migrate", "100m", "64Mi", "100m", "64Mi", cpu_base=0.01),),
            note="has an init container",
        ),
        WorkloadSpec(
            "StatefulSet",
            "shop-prod",
            "postgres",
            (_c("postgres", "1", "2Gi", "2", "4Gi", cpu_base=0.35, mem_base=1200 * MI),),
            labels=crit,
            note="critical database",
        ),
        # shop-staging: not production.
        WorkloadSpec(
            "Deployment",
            "shop-staging",
            "web",
            (_c("web", "250m", "256Mi", "1", "512Mi", cpu_base=0.03, mem_base=120 * MI),),
        ),
        WorkloadSpec(
            "Deployment",
            "shop-staging",
            "api",
            (_c("api", "500m", "512Mi", None, "1Gi", cpu_base=0.05, mem_base=200 * MI),),
        ),
        WorkloadSpec(
            "StatefulSet",
            "shop-staging",
            "postgres",
            (_c("postgres", "500m", "1Gi", "1", "2Gi", cpu_base=0.05, mem_base=400 * MI),),
        ),
        # data: production by label only; brokers and caches.
        WorkloadSpec(
            "StatefulSet",
            "data",
            "kafka",
            (_c("kafka", "1", "2Gi", "2", "4Gi", cpu_base=0.4, mem_base=1500 * MI),),
            replicas=3,
            note="critical by name (a broker)",
        ),
        WorkloadSpec(
            "Deployment",
            "data",
            "redis",
            (
                _c(
                    "redis",
                    "50m",
                    "128Mi",
                    None,
                    "256Mi",
                    cpu_base=0.2,
                    mem_base=150 * MI,
                    mem_growth_per_day=60 * MI,
                    restart_days=30.0,
                    oom_at=256 * MI,
                ),
            ),
            note="under-provisioned, OOM-killed",
        ),
        WorkloadSpec(
            "Deployment",
            "data",
            "etl",
            (_c("etl", "300m", "512Mi", None, "1Gi", cpu_base=0.1, mem_base=200 * MI),),
            history_minutes=60,
            note="too little history (deployed an hour ago)",
        ),
        # tools: nothing production here.
        WorkloadSpec(
            "Deployment",
            "tools",
            "grafana",
            (_c("grafana", "100m", "256Mi", None, "512Mi", cpu_base=0.02, mem_base=90 * MI),),
        ),
        WorkloadSpec(
            "Deployment",
            "tools",
            "ci-runner",
            (
                _c(
                    "runner",
                    "1",
                    "1Gi",
                    "2",
                    "2Gi",
                    cpu_base=0.15,
                    cpu_daily=0.9,
                    mem_base=300 * MI,
                ),
            ),
            replicas=2,
        ),
        WorkloadSpec(
            "DaemonSet",
            "monitoring",
            "node-exporter",
            (_c("node-exporter", "50m", "64Mi", "200m", "128Mi", cpu_base=0.01, mem_base=30 * MI),),
            note="one pod per node",
        ),
    ]


NAMESPACES: dict[str, dict[str, str]] = {
    "shop-prod": {"environment": "production", "team": "shop"},
    "shop-staging": {"environment": "staging", "team": "shop"},
    "data": {"environment": "production", "team": "data"},
    "tools": {"team": "platform"},
    "monitoring": {"team": "platform"},
}


def build(*, workloads: int | None = None, seed: int = 42) -> Estate:
    """The default estate, grown to ``workloads`` workloads with generated Deployments."""
    rng = random.Random(seed)
    specs = default_workloads()
    namespaces = dict(NAMESPACES)
    target = workloads if workloads is not None else len(specs)
    if target < len(specs):
        raise ValueError(f"--workloads must be at least {len(specs)} (the default estate)")
    extra = target - len(specs)
    per_namespace = 50
    for index in range(extra):
        namespace = f"team-{index // per_namespace:03d}"
        namespaces.setdefault(namespace, {"team": namespace})
        cpu_m = rng.choice([50, 100, 200, 250, 500, 1000])
        mem_mi = rng.choice([64, 128, 256, 512, 1024])
        specs.append(
            WorkloadSpec(
                "Deployment",
                namespace,
                f"svc-{index:05d}",
                (
                    _c(
                        "app",
                        f"{cpu_m}m",
                        f"{mem_mi}Mi",
                        None,
                        f"{mem_mi * 2}Mi",
                        cpu_base=cpu_m / 1000 * rng.uniform(0.1, 1.2),
                        mem_base=int(mem_mi * MI * rng.uniform(0.3, 0.9)),
                        mem_growth_per_day=rng.choice([0, 2, 8]) * MI,
                    ),
                ),
            )
        )
    # Enough nodes that the estate fits with room to spare, but not so much that a large
    # increase always fits: capacity rules need a real limit to hit.
    node_count = max(4, -(-target // 40))
    nodes = tuple(
        NodeSpec(f"node-{i:03d}", "8", "32Gi", zone=f"zone-{'abc'[i % 3]}")
        for i in range(node_count)
    )
    return Estate(namespaces, nodes, tuple(specs), seed)


def manifest(spec: WorkloadSpec) -> dict[str, Any]:
    """The apps/v1 object for a workload (pods tolerate and select the kwok nodes)."""
    selector = {"app.kubernetes.io/name": spec.name}
    labels = {**selector, ESTATE_LABEL: "true", **spec.labels}
    pod_spec: dict[str, Any] = {
        "containers": [_container(c) for c in spec.containers],
        "tolerations": [
            {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"},
            # Without kwok the nodes never turn Ready; DaemonSet pods would not be placed.
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"},
        ],
        "automountServiceAccountToken": False,
    }
    if spec.init_containers:
        pod_spec["initContainers"] = [_container(c) for c in spec.init_containers]
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": spec.kind,
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
    if spec.kind != "DaemonSet":
        body["spec"]["replicas"] = spec.replicas
    if spec.kind == "StatefulSet":
        body["spec"]["serviceName"] = spec.name
        # Without kubelets, OrderedReady would wait forever for pod 0 to become Ready.
        body["spec"]["podManagementPolicy"] = "Parallel"
    return body


def _container(c: ContainerSpec) -> dict[str, Any]:
    return {
        "name": c.name,
        "image": f"registry.example/{c.name}:1.0",
        "resources": c.resources(),
    }


def hpa_manifest(spec: WorkloadSpec) -> dict[str, Any] | None:
    if spec.hpa is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": spec.name, "namespace": spec.namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": spec.kind, "name": spec.name},
            "minReplicas": spec.hpa.min_replicas,
            "maxReplicas": spec.hpa.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": spec.hpa.cpu_utilization,
                        },
                    },
                }
            ],
        },
    }


def node_manifest(node: NodeSpec) -> dict[str, Any]:
    # Allocatable is what the kubelet would report after system reservations.
    cpu_m = int(node.cpu) * 1000 - 90
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "m5.2xlarge",
                "topology.kubernetes.io/zone": node.zone,
                "type": "kwok",
            },
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
        "status": {
            "capacity": {"cpu": node.cpu, "memory": node.memory, "pods": str(node.pods)},
            "allocatable": {
                "cpu": f"{cpu_m}m",
                "memory": f"{32 * 1024 - 1100}Mi",
                "pods": str(node.pods),
            },
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
                "containerRuntimeVersion": "fake",
                "kernelVersion": "fake",
                "osImage": "fake",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
            "phase": "Running",
        },
    }
