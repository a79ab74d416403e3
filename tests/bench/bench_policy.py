"""Decision latency of sizeguard's policies through the Python client and a real OPA.

Starts its own OPA (``opa run --server`` on a free 127.0.0.1 port, serving ``policies/``),
then measures, through :class:`sizeguard.policy.PolicyClient` (one pooled connection):

- the changeset decision for a 1-target and a 1,000-target change set (p50, p99, mean);
- the admission decision for one change (what the webhook asks on every guarded UPDATE);
- decisions per second, sequentially and with concurrent requests (AsyncPolicyClient);
- where the time of each decision goes inside OPA (``?metrics=true``, asked directly, not
  through the client): parsing the input, evaluating the policy, the whole handler.

Run:  .venv/bin/python tests/bench/bench_policy.py [--rounds N] [--big-rounds N] [--policies DIR]
(``--policies`` serves another copy of the policies, e.g. an older commit's, to compare.)
Tools come from ${SIZEGUARD_TOOLS:-~/.cache/sizeguard/tools}/bin (scripts/install-tools).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import structlog

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sizeguard.changes import GuardedState  # noqa: E402
from sizeguard.policy import AsyncPolicyClient, PolicyClient  # noqa: E402
from sizeguard.sandbox import tools  # noqa: E402
from sizeguard.sandbox.opa import running_opa  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB


def container(
    cpu: int | None, cpu_limit: int | None, memory: int, memory_limit: int | None
) -> dict[str, Any]:
    return {
        "cpu_request": cpu,
        "cpu_limit": cpu_limit,
        "memory_request": memory,
        "memory_limit": memory_limit,
        "other_requests": {},
        "other_limits": {},
        "restart_policy": None,
    }


def state(replicas: int, cpu: int) -> dict[str, Any]:
    """A Deployment's footprint as ``guarded_state`` gives it (JSON), with the API server's
    defaults for the rollout fields; validated against the contract's model."""
    footprint = {
        "replicas": replicas,
        "containers": {
            "app": {
                **container(cpu, cpu * 2, 256 * MIB, 512 * MIB),
                "other_requests": {"ephemeral-storage": GIB},
                "other_limits": {"ephemeral-storage": 2 * GIB},
            },
            "proxy": container(50, 100, 64 * MIB, 128 * MIB),
        },
        "init_containers": {
            "migrate": container(100, None, 128 * MIB, None),
            "log-shipper": {**container(20, None, 32 * MIB, None), "restart_policy": "Always"},
        },
        "min_replicas": None,
        "max_replicas": None,
        "scale_target": None,
        "pod_resources": None,
        "runtime_class": None,
        "strategy": "RollingUpdate",
        "max_surge": "25%",
        "max_unavailable": "25%",
        "min_ready_seconds": None,
        "progress_deadline_seconds": 600,
    }
    return GuardedState.model_validate(footprint).model_dump(mode="json")


def change_set(targets: int) -> dict[str, Any]:
    """A change set mixing production, critical and plain targets and change sizes."""
    changes = []
    for i in range(targets):
        namespace = f"team-{i % 40}-prod" if i % 2 else f"team-{i % 40}"
        name = f"redis-{i}" if i % 10 == 0 else f"svc-{i}"
        after_cpu = 260 if i % 3 == 0 else 150
        changes.append(
            {
                "target": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "namespace": namespace,
                    "name": name,
                    "uid": f"uid-{i}",
                },
                "before": state(3, 100),
                "after": state(3, after_cpu),
                "reason": "benchmark",
                "source": "bench",
            }
        )
    return {
        "changes": changes,
        "context": {
            "now": "2026-11-21T12:00:00Z",
            "namespaces": {},
            "labels": {},
            "capacity": {
                "nodes": 200,
                "allocatable": {"cpu": 10_000_000, "memory": 100_000 * GIB},
                "requested": {"cpu": 100_000, "memory": 1_000 * GIB},
            },
        },
    }


def admission_request() -> dict[str, Any]:
    return {
        "request": {
            "uid": "req-1",
            "operation": "UPDATE",
            "user": "sizeguard-server",
            "groups": ["system:authenticated"],
            "kind": "Deployment",
            "namespace": "shop-prod",
            "name": "web",
            "subresource": "",
            "dry_run": False,
        },
        "before": state(3, 100),
        "after": state(3, 250),
        "approval": {"present": True, "valid": True, "error": None, "claims": {"op": "apply"}},
        "context": {
            "labels": {"app": "web"},
            "namespace_labels": {"kubernetes.io/metadata.name": "shop-prod"},
            "recently_created": False,
        },
    }


@contextmanager
def private_opa(policies: Path) -> Iterator[str]:
    with (
        tempfile.TemporaryDirectory(prefix="sg-bench-opa-") as work,
        running_opa(policies, Path(work)) as opa,
    ):
        yield opa.url


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def measure(label: str, rounds: int, call: Callable[[], bool], expect: bool) -> list[float]:
    for _ in range(min(5, rounds)):  # warm up: connection, OPA's caches
        call()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        allowed = call()
        samples.append((time.perf_counter() - started) * 1000)
        if allowed is not expect:
            raise SystemExit(f"{label}: unexpected decision allowed={allowed}")
    print(
        f"{label:<34} n={rounds:<5} p50={percentile(samples, 50):8.2f} ms  "
        f"p99={percentile(samples, 99):8.2f} ms  mean={statistics.fmean(samples):8.2f} ms  "
        f"-> {1000 / statistics.fmean(samples):7.1f} decisions/s"
    )
    return samples


def inside_opa(
    label: str, url: str, decision: str, policy_input: dict[str, Any], rounds: int
) -> None:
    """OPA's own timers for a decision (median of ``rounds``): input parsing, evaluation and
    the whole handler; the rest of a client's latency is HTTP, JSON and Python."""
    body = json.dumps({"input": policy_input}, separators=(",", ":")).encode()
    timers: dict[str, list[float]] = {}
    with httpx.Client(timeout=60, headers={"Content-Type": "application/json"}) as http:
        for _ in range(rounds):
            answer = http.post(
                f"{url}/v1/data/sizeguard/{decision}/decision?metrics=true", content=body
            )
            answer.raise_for_status()
            for name, value in answer.json()["metrics"].items():
                timers.setdefault(name, []).append(value / 1e6)
    parse, evaluate, handler = (
        statistics.median(timers[f"timer_{name}_ns"])
        for name in ("rego_input_parse", "rego_query_eval", "server_handler")
    )
    print(
        f"{label + ', in OPA':<34} n={rounds:<5} parse={parse:8.2f} ms  "
        f"eval={evaluate:8.2f} ms  handler={handler:8.2f} ms  (medians)"
    )


async def concurrent_rate(url: str, policy_input: dict[str, Any], total: int, width: int) -> float:
    async with AsyncPolicyClient(url, timeout=10) as client:
        queue = iter(range(total))

        async def worker() -> None:
            for _ in queue:
                decision = await client.changeset_decision(policy_input)
                if decision.engine_error is not None:
                    raise SystemExit(f"concurrent run failed: {decision.engine_error}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(width)))
        return total / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=500, help="1-target / admission rounds")
    parser.add_argument("--big-rounds", type=int, default=30, help="1,000-target rounds")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--policies", type=Path, default=REPO / "policies", help="policy directory")
    args = parser.parse_args()
    args.policies = args.policies.resolve()  # OPA runs in a scratch directory

    # One log event per decision is the client's contract; keep it out of the timings.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    one, big, admission = change_set(1), change_set(1000), admission_request()
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"opa {tools.require('opa')['opa'].resolve().parent.parent.name}; "
        f"loopback HTTP, one pooled connection"
    )
    with private_opa(args.policies) as url, PolicyClient(url, timeout=30) as client:
        measure(
            "changeset, 1 target",
            args.rounds,
            lambda: client.changeset_decision(one).allowed,
            expect=True,
        )
        # 1,000 targets exceed max_targets (50) in data.json: denied, but fully evaluated.
        measure(
            "changeset, 1,000 targets",
            args.big_rounds,
            lambda: client.changeset_decision(big).allowed,
            expect=False,
        )
        measure(
            "admission, 1 change",
            args.rounds,
            lambda: client.admission_decision(admission).allowed,
            expect=True,
        )
        rate = asyncio.run(concurrent_rate(url, one, args.rounds, args.concurrency))
        print(
            f"{'changeset, 1 target, concurrent':<34} n={args.rounds:<5} "
            f"{args.concurrency} in flight (AsyncPolicyClient) -> {rate:7.1f} decisions/s"
        )
        inside_opa("changeset, 1 target", url, "changeset", one, args.rounds)
        inside_opa("changeset, 1,000 targets", url, "changeset", big, args.big_rounds)
        inside_opa("admission, 1 change", url, "admission", admission, args.rounds)


if __name__ == "__main__":
    main()
