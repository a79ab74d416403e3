"""Reading workloads and HPAs as the scan sees them."""

from __future__ import annotations

from sizeguard.workloads import hpa_info, workload_from_object


def test_workload_allocations_in_cores_and_bytes() -> None:
    workload = workload_from_object(
        {
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"a": "b"}},
            "spec": {
                "replicas": 3,
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "web",
                                "resources": {
                                    "requests": {"cpu": "250m", "memory": "256Mi"},
                                    "limits": {"memory": "1Gi"},
                                },
                            },
                            {"name": "sidecar"},
                        ]
                    }
                },
            },
        }
    )
    assert workload.replicas == 3 and workload.labels == {"a": "b"}
    web, sidecar = workload.containers
    assert (web.cpu_request, web.cpu_limit, web.memory_request, web.memory_limit) == (
        0.25,
        None,
        256 * 2**20,
        2**30,
    )
    assert sidecar.cpu_request is None
    daemon = workload_from_object({"kind": "DaemonSet", "metadata": {"name": "x"}, "spec": {}})
    assert daemon.replicas is None


def test_hpa_targets() -> None:
    key, info = hpa_info(
        {
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "web"},
                "minReplicas": 3,
                "maxReplicas": 10,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 70},
                        },
                    },
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "memory",
                            "target": {"type": "AverageValue", "averageValue": "1Gi"},
                        },
                    },
                ],
            },
            "status": {"currentReplicas": 4, "desiredReplicas": 5},
        }
    )
    assert key == ("Deployment", "shop", "web")
    assert (info.min_replicas, info.max_replicas, info.current_replicas) == (3, 10, 4)
    assert info.target_cpu_utilization_percentage == 70.0
    assert info.target_memory_utilization_percentage is None
    assert info.scales_on_cpu and info.scales_on_memory
