"""Throughput of approval minting and end-to-end verification on this machine.

Run: ``python tests/bench/bench_approvals.py [--seconds S] [--containers N]``

``verify`` is :func:`sizeguard.approvals.verify_transition` end to end: size and header
checks, kid lookup, EdDSA signature, strict claims model, time window, target, binding, and
``guarded_state`` of both the old and the new object. ``verify*`` is the same with both
footprints given, as the webhook calls it (it has computed them already to route the request).
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from collections.abc import Callable
from typing import Any

from sizeguard.approvals import TrustedKeys, generate_signing_key, mint_approval, verify_transition
from sizeguard.changes import guarded_state, target_of


def workload(containers: int, replicas: int, cpu: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "2b4d6f80-0000-4000-8000-000000000001",
            "resourceVersion": "7",
        },
        "spec": {
            "replicas": replicas,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": f"c{index}",
                            "image": "registry.example/app:1.2.3",
                            "resources": {
                                "requests": {"cpu": cpu, "memory": "256Mi"},
                                "limits": {"cpu": "2", "memory": "512Mi"},
                            },
                        }
                        for index in range(containers)
                    ]
                }
            },
        },
    }


def rate(label: str, seconds: float, operation: Callable[[], object]) -> float:
    for _ in range(50):  # warm up
        operation()
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            operation()
        count += 100
    per_second = count / (time.perf_counter() - started)
    print(f"{label:<8} {per_second:>10,.0f}/s   ({1e6 / per_second:,.1f} µs each)")
    return per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--containers", type=int, default=2, help="containers per workload")
    args = parser.parse_args()

    key = generate_signing_key()
    trusted = TrustedKeys([key.public_key])
    old = workload(args.containers, 3, "100m")
    new = workload(args.containers, 5, "250m")
    target, before, after = target_of(old), guarded_state(old), guarded_state(new)
    now = time.time()

    def mint() -> str:
        return mint_approval(
            key,
            change_set_id="cs-0123456789abcdef0123",
            op="apply",
            target=target,
            before=before,
            after=after,
            subject="alice@example.com",
            resource_version="7",
            now=now,
        )

    token = mint()
    annotated = copy.deepcopy(new)
    annotated["metadata"]["annotations"] = {"sizeguard.io/approval": token}

    def verify(states: tuple[Any, Any] | None = None) -> object:
        result = verify_transition(
            token,
            kind="Deployment",
            namespace="shop",
            name="web",
            old_object=old,
            new_object=annotated,
            jwks=trusted,
            now=now,
            states=states,
        )
        if not result.ok:
            raise SystemExit(f"verification failed: {result.code}: {result.message}")
        return result

    print(
        f"python {platform.python_version()} on {platform.machine()}, "
        f"{args.containers} container(s), token {len(token)} bytes, {args.seconds:g} s each"
    )
    rate("mint", args.seconds, mint)
    rate("verify", args.seconds, verify)
    rate("verify*", args.seconds, lambda: verify((before, after)))


if __name__ == "__main__":
    main()
