"""End-to-end latency of sizeguard's MCP flow on one change set of N Deployments.

Against a running sandbox (``sizeguard sandbox up --with-webhook``): the MCP server is built in
this process exactly as tests/integration/test_mcp_server.py builds it (``Service`` +
``build_app`` + ``fastmcp.Client`` with an elicitation handler), with a fresh ledger in a
temporary directory for every round. In namespace ``bench-mcp`` (label environment=test) it
creates, or reuses, N Deployments (2 replicas, one container requesting 100m CPU), then times
with ``time.perf_counter``, in one MCP session:

1. ``preview_changes``: one change set resizing all N (CPU request 100m -> 120m, explicit
   ``edits``): reads, OPA's change-set decision, N server-side dry runs through the webhook;
2. ``request_confirmation``: the elicitation handler approves at once (a human clicking
   "approve"); the server re-checks the change set (policy + dry runs) before recording it;
3. ``apply_changes``: policy again, N reads, N snapshots, N signed patches through the
   webhook, each verified;
4. ``rollback_changes``: the rollback change set, its confirmation and its apply.

Each figure is printed in seconds and in ms per target, with the execution status (which must
be "applied") and how many OPA decisions, dry runs and patches the step made. With
``--repeat N`` every round is printed and the median reported.

Two things about the sandbox shape the defaults, both printed:

- The shipped policy data allows at most ``max_targets`` (50) objects per change set. When N is
  larger, the change set would be denied, so the server under test talks to a private OPA
  serving a copy of ``policies/`` with only ``max_targets`` raised to N (same binary, same
  Rego). The webhook keeps using the sandbox's OPA (its admission decision is per object).
  ``--opa sandbox`` forces the sandbox's OPA.
- The Deployments are created paused (``spec.paused: true``): they keep 2 replicas in their
  spec (what sizeguard guards and patches) but the controller creates no pods, so the bench
  neither fills the shared sandbox's capacity (the policy's capacity rule counts every pod's
  requests and would deny this and other users' change sets) nor times 2 x N rollouts.
  ``--pods`` creates them unpaused (real pods and rollouts; needs a sandbox with room).

Run:  python -m tests.bench.bench_mcp [--sandbox-dir DIR] [--targets 100] [--repeat N] [--keep]
      [--opa auto|sandbox|private] [--pods] [--legacy]
At the end the namespace's Deployments are deleted (not with --keep; the namespace stays).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from fastmcp import Client  # noqa: E402
from mcp_types import Implementation  # noqa: E402

from sizeguard.approvals import load_signing_key  # noqa: E402
from sizeguard.changes import guarded_state  # noqa: E402
from sizeguard.cluster import Cluster  # noqa: E402
from sizeguard.ledger import Ledger  # noqa: E402
from sizeguard.policy import PolicyClient  # noqa: E402
from sizeguard.sandbox import lifecycle  # noqa: E402
from sizeguard.sandbox.kube import KubeClient  # noqa: E402
from sizeguard.sandbox.opa import running_opa  # noqa: E402
from sizeguard.sandbox.state import SandboxState  # noqa: E402
from sizeguard.server.app import build_app  # noqa: E402
from sizeguard.server.service import Service  # noqa: E402

NAMESPACE = "bench-mcp"
CONTAINER = "app"
CPU_BEFORE, CPU_AFTER = "100m", "120m"
REPLICAS = 2
CLIENT = Implementation(name="sizeguard-bench", version="1.0")
STEPS = ("preview_changes", "request_confirmation", "apply_changes", "rollback_changes")
DEPLOYMENTS = "/apis/apps/v1/namespaces/{ns}/deployments"


# --- the cluster side (small copies of tests/integration/test_webhook.py's helpers) --------------


def ensure_namespace(kube: KubeClient, name: str, labels: dict[str, str]) -> None:
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    response = kube.http.patch(  # a reused namespace gets the labels too
        f"/api/v1/namespaces/{name}",
        content=json.dumps({"metadata": {"labels": labels}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    response.raise_for_status()
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": name},
        }
    )


def workload_manifest(namespace: str, name: str, *, paused: bool) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "bench-mcp"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": REPLICAS,
            "paused": paused,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": CONTAINER,
                            "image": "registry.example/app:1.0",
                            "resources": {"requests": {"cpu": CPU_BEFORE, "memory": "64Mi"}},
                        }
                    ],
                    "tolerations": [
                        {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "automountServiceAccountToken": False,
                },
            },
        },
    }


def list_deployments(kube: KubeClient, namespace: str) -> dict[str, dict[str, Any]]:
    response = kube.http.get(DEPLOYMENTS.format(ns=namespace), params={"limit": "5000"})
    response.raise_for_status()
    found: dict[str, dict[str, Any]] = {}
    for item in response.json().get("items", []):
        item.setdefault("apiVersion", "apps/v1")  # list items carry neither
        item.setdefault("kind", "Deployment")
        found[item["metadata"]["name"]] = item
    return found


def sized(obj: dict[str, Any]) -> tuple[Any, ...]:
    """What the bench sets: replicas and containers (the manifest leaves the rollout fields of
    the footprint to the API server's defaults, so whole guarded states never compare equal)."""
    state = guarded_state(obj)
    return (state.replicas, state.containers, state.init_containers)


def cpu_requests(kube: KubeClient, namespace: str, names: list[str]) -> dict[int | None, int]:
    """How many of ``names`` request how much CPU (millicores) in their container."""
    live = list_deployments(kube, namespace)
    counts: dict[int | None, int] = {}
    for name in names:
        value = guarded_state(live[name]).containers[CONTAINER].cpu_request
        counts[value] = counts.get(value, 0) + 1
    return counts


def eventually(probe: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.25)


def ensure_deployments(
    kube: KubeClient, namespace: str, count: int, *, paused: bool
) -> tuple[list[str], int]:
    """N Deployments at 100m / 2 replicas; existing ones in that state are reused, others
    (left at another state, or paused differently) are recreated. Returns (names, reused)."""
    names = [f"bench-{i:04d}" for i in range(count)]
    wanted = {name: workload_manifest(namespace, name, paused=paused) for name in names}
    live = list_deployments(kube, namespace)
    fresh = [
        name
        for name in names
        if name not in live
        or sized(live[name]) != sized(wanted[name])
        or bool(live[name]["spec"].get("paused")) != paused
    ]
    stale = [name for name in fresh if name in live]
    path = DEPLOYMENTS.format(ns=namespace)

    def delete(name: str) -> None:
        response = kube.http.delete(f"{path}/{name}", params={"propagationPolicy": "Background"})
        if response.status_code not in (200, 202, 404):
            response.raise_for_status()

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(delete, stale))
    if stale:
        eventually(
            lambda: not set(stale) & set(list_deployments(kube, namespace)),
            f"{len(stale)} stale Deployments to go",
        )
    kube.apply_many(wanted[name] for name in fresh)

    def ready() -> bool:
        now = list_deployments(kube, namespace)
        return all(name in now and sized(now[name]) == sized(wanted[name]) for name in names)

    eventually(ready, f"{count} Deployments in {namespace}")
    return names, count - len(fresh)


def delete_deployments(kube: KubeClient, namespace: str) -> int:
    path = DEPLOYMENTS.format(ns=namespace)
    count = len(list_deployments(kube, namespace))
    response = kube.http.delete(path, params={"propagationPolicy": "Background"})
    response.raise_for_status()
    eventually(lambda: not list_deployments(kube, namespace), f"Deployments in {namespace} to go")
    return count


# --- policy --------------------------------------------------------------------------------------


def max_targets(opa_url: str) -> int:
    response = httpx.get(f"{opa_url}/v1/data/sizeguard/config/max_targets", timeout=10)
    response.raise_for_status()
    return int(response.json()["result"])


@contextmanager
def private_opa(policies: Path, targets: int, work: Path) -> Iterator[str]:
    """``opa run --server`` on a copy of ``policies`` whose only change is max_targets."""
    copy = work / "policies"
    shutil.copytree(policies, copy, ignore=shutil.ignore_patterns("*_test.rego"))
    data_file = copy / "data.json"
    data = json.loads(data_file.read_text())
    data["sizeguard"]["config"]["max_targets"] = targets
    data_file.write_text(json.dumps(data, indent=2))
    with running_opa(copy, work) as opa:
        yield opa.url


# --- the MCP flow --------------------------------------------------------------------------------


@dataclass
class Counts:
    """Calls the server makes, per step (instance-level wrappers, nothing is changed)."""

    decisions: int = 0
    dry_runs: int = 0
    patches: int = 0

    def text(self) -> str:
        return f"{self.decisions} OPA, {self.dry_runs} dry runs, {self.patches} patches"


@dataclass
class Round:
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, Counts] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    change_set: str = ""
    risk: str = ""


def instrument(cluster: Cluster, policy: PolicyClient, current: list[Counts]) -> None:
    """Count dry runs, patches and OPA decisions into ``current[0]``."""
    apply_patch = cluster.apply_patch
    decide = policy.changeset_decision

    def counted_patch(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("dry_run"):
            current[0].dry_runs += 1
        else:
            current[0].patches += 1
        return apply_patch(*args, **kwargs)

    def counted_decision(*args: Any, **kwargs: Any) -> Any:
        current[0].decisions += 1
        return decide(*args, **kwargs)

    cluster.apply_patch = counted_patch  # type: ignore[method-assign]
    policy.changeset_decision = counted_decision  # type: ignore[method-assign]


def structured(result: Any) -> dict[str, Any]:
    content = result.structured_content
    assert isinstance(content, dict), result
    return content


async def one_round(
    service: Service,
    kube: KubeClient,
    namespace: str,
    names: list[str],
    counts: list[Counts],
    legacy: bool,
) -> Round:
    app = build_app(service)
    edits = [
        {
            "kind": "Deployment",
            "namespace": namespace,
            "name": name,
            "container": CONTAINER,
            "cpu_request": CPU_AFTER,
            "reason": "bench",
        }
        for name in names
    ]
    out = Round()
    typed: list[str] = []
    kwargs: dict[str, Any] = {"client_info": CLIENT}
    if legacy:
        kwargs["mode"] = "legacy"

    async def handler(message: str, response_type: Any, params: Any, context: Any) -> Any:
        """A human who reads the confirmation and clicks "approve" at once (typing the
        namespaces if the preview asked for them)."""
        return {"approve": True, "namespace": " ".join(typed)}

    async with Client(app, elicitation_handler=handler, **kwargs) as client:

        async def step(tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
            counts[0] = Counts()
            started = time.perf_counter()
            result = await client.call_tool(tool, arguments, timeout=600)
            out.seconds[tool] = time.perf_counter() - started
            out.counts[tool] = counts[0]
            return structured(result)

        preview = await step("preview_changes", {"edits": edits})
        cs = str(preview["change_set_id"])
        out.change_set, out.risk = cs, str(preview["policy"]["risk"])
        refused = [d for d in preview["dry_run"] if not d["admitted"]]
        if not preview["policy"]["allowed"] or refused or preview["targets"] != len(names):
            problems = [v["message"] for v in preview["policy"]["violations"]]
            problems += [f"{d['target']}: {d['error']}" for d in refused]
            raise SystemExit(
                f"the preview of {cs} ({preview['targets']} targets) cannot be approved: "
                + "; ".join(problems[:5])
            )
        typed.extend(preview["typed_confirmation"])
        out.status["preview_changes"] = "allowed"

        confirmation = await step("request_confirmation", {"change_set_id": cs})
        out.status["request_confirmation"] = str(confirmation["status"])
        if confirmation["status"] != "approved":
            raise SystemExit(f"request_confirmation: {confirmation}")

        execution = await step("apply_changes", {"change_set_id": cs})
        out.status["apply_changes"] = str(execution["status"])
        if execution["status"] != "applied":
            return out

        counts_after_apply = cpu_requests(kube, namespace, names)
        if counts_after_apply != {120: len(names)}:
            raise SystemExit(f"after apply_changes, CPU requests are {counts_after_apply}")

        outcome = await step("rollback_changes", {"change_set_id": cs})
        rollback = outcome.get("execution") or {}
        out.status["rollback_changes"] = str(
            rollback.get("status") or "not run: " + str(outcome["confirmation"]["message"])
        )
    return out


# --- output --------------------------------------------------------------------------------------


def print_round(index: int, r: Round) -> None:
    short = dict(zip(STEPS, ("preview", "confirm", "apply", "rollback"), strict=True))
    parts = [f"{short[tool]} {r.seconds[tool]:.2f} s" for tool in r.seconds]
    statuses = "/".join(r.status.get(t, "-") for t in ("apply_changes", "rollback_changes"))
    print(f"round {index}: " + ", ".join(parts) + f"; apply/rollback: {statuses}", flush=True)


def print_summary(rounds: list[Round], targets: int) -> None:
    label = f"median of {len(rounds)} rounds" if len(rounds) > 1 else "1 round"
    last = rounds[-1]
    print(f"\n{label}, {targets} targets, change set {last.change_set} (risk {last.risk})")
    print(
        f"  {'step':<22} {'seconds':>9} {'ms/target':>10}  {'status':<10} "
        "calls made by the server (last round)"
    )
    for tool in STEPS:
        values = [r.seconds[tool] for r in rounds if tool in r.seconds]
        if not values:
            print(f"  {tool:<22} {'-':>9} {'-':>10}  not reached")
            continue
        median = statistics.median(values)
        status = rounds[-1].status.get(tool, "-")
        print(
            f"  {tool:<22} {median:>9.3f} {median * 1000 / targets:>10.2f}  {status:<10} "
            f"{rounds[-1].counts[tool].text()}"
        )
    total = [sum(r.seconds.values()) for r in rounds]
    print(
        f"  {'all four':<22} {statistics.median(total):>9.3f} "
        f"{statistics.median(total) * 1000 / targets:>10.2f}"
    )
    if len(rounds) > 1:
        for tool in STEPS:
            values = sorted(r.seconds[tool] for r in rounds if tool in r.seconds)
            if values:
                print(f"  {tool:<22} min {values[0]:.3f} s, max {values[-1]:.3f} s")


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring (tests/bench/bench_mcp.py) for what is measured.",
    )
    parser.add_argument(
        "--sandbox-dir",
        type=Path,
        help="a running sandbox started --with-webhook (default: start a temporary one)",
    )
    parser.add_argument("--targets", type=int, default=100, help="Deployments in the change set")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the median is reported")
    parser.add_argument("--keep", action="store_true", help="leave the Deployments in place")
    parser.add_argument(
        "--opa",
        choices=("auto", "sandbox", "private"),
        default="auto",
        help="the server's OPA: the sandbox's, or a private one with max_targets raised to "
        "--targets (auto: private only when --targets exceeds the sandbox's max_targets)",
    )
    parser.add_argument(
        "--pods", action="store_true", help="unpaused Deployments: real pods and rollouts"
    )
    parser.add_argument(
        "--legacy", action="store_true", help="elicitation/create instead of input-required"
    )
    args = parser.parse_args()
    if args.targets < 1 or args.repeat < 1:
        parser.error("--targets and --repeat must be at least 1")

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.sandbox_dir is not None:
        return run(args, args.sandbox_dir.resolve())
    with tempfile.TemporaryDirectory(prefix="sg-bench-mcp-sandbox-") as tmp:
        directory = Path(tmp) / "sandbox"
        print("starting a temporary sandbox with the webhook (1 day of history) ...", flush=True)
        lifecycle.up(
            lifecycle.UpOptions(directory=directory, webhook=True, history_days=1),
            report=lambda _: None,
        )
        try:
            return run(args, directory)
        finally:
            lifecycle.down(directory, report=lambda _: None)


def run(args: argparse.Namespace, directory: Path) -> int:
    """Every round against the sandbox in ``directory``."""
    box = SandboxState.load(directory)
    if box is None or "webhook" not in box.info:
        raise SystemExit(f"no sandbox started --with-webhook in {directory}")
    kubeconfig = Path(box.info["kubeconfig"])
    policies = Path(box.info.get("policies") or REPO / "policies")

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)

    limit = max_targets(box.urls["opa"])
    use_private = args.opa == "private" or (args.opa == "auto" and args.targets > limit)

    kube = KubeClient(kubeconfig)
    rounds: list[Round] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="sg-bench-mcp-") as tmp:
        work = Path(tmp)
        try:
            ensure_namespace(kube, NAMESPACE, {"environment": "test"})
            started = time.perf_counter()
            names, reused = ensure_deployments(kube, NAMESPACE, args.targets, paused=not args.pods)
            print(
                f"{args.targets} Deployments in {NAMESPACE} ({reused} reused, "
                f"{'unpaused' if args.pods else 'paused'}, {REPLICAS} replicas, "
                f"{CONTAINER} {CPU_BEFORE}) ready in {time.perf_counter() - started:.1f} s"
            )
            with (
                private_opa(policies, max(args.targets, limit), work)
                if use_private
                else _given(box.urls["opa"]) as opa_url,
                Cluster.from_kubeconfig(kubeconfig, timeout=20) as cluster,
                PolicyClient(opa_url) as policy,
            ):
                print(
                    "server's OPA: "
                    + (
                        f"private, {opa_url}, {policies} with max_targets {limit} -> "
                        f"{max(args.targets, limit)}"
                        if use_private
                        else f"the sandbox's, {opa_url} (max_targets {limit})"
                    )
                    + "; webhook's OPA: the sandbox's; protocol: "
                    + ("elicitation/create" if args.legacy else "auto (input-required)")
                )
                counts = [Counts()]
                instrument(cluster, policy, counts)
                key = load_signing_key(Path(box.info["webhook"]["keys"]))
                for index in range(1, args.repeat + 1):
                    ledger = Ledger(work / f"ledger-{index}" / "ledger.db")
                    service = Service(
                        cluster=cluster,
                        policy=policy,
                        ledger=ledger,
                        key=key,
                        kubeconfig=kubeconfig,
                        prometheus_url=box.urls["prometheus"],
                    )
                    try:
                        result = asyncio.run(
                            one_round(service, kube, NAMESPACE, names, counts, args.legacy)
                        )
                    finally:
                        ledger.close()
                    rounds.append(result)
                    print_round(index, result)
                    if any(
                        result.status.get(t) != "applied"
                        for t in ("apply_changes", "rollback_changes")
                    ):
                        failed = True
                        break
                    after = cpu_requests(kube, NAMESPACE, names)
                    if after != {100: args.targets}:
                        raise SystemExit(f"after rollback_changes, CPU requests are {after}")
            print_summary(rounds, args.targets)
            print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        finally:
            if not args.keep:
                deleted = delete_deployments(kube, NAMESPACE)
                print(f"cleanup: deleted {deleted} Deployments in {NAMESPACE}")
            kube.close()
    return 1 if failed else 0


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    sys.exit(main())
