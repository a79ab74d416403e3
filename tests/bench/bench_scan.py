"""Scan time, PromQL queries and peak memory of `sizeguard scan` at 200 and 2,000 workloads.

Run: ``.venv/bin/python tests/bench/bench_scan.py [--sizes 200,2000] [--keep]``

For each size it brings up its own sandbox (``sizeguard sandbox up --workloads N``), with
14 days of history at a 60 s sample interval for 200 workloads and 300 s for 2,000 (to keep
the backfill small), runs the scan in a fresh process (so that peak RSS is the scan's own),
prints the figures and takes the sandbox down.

With 300 s samples the default 75 s rate window never holds two samples, so at 2,000 the
scan is run twice: with krr's defaults (same query cost, but CPU comes back "?") and with
``--timeframe-duration 10`` (a 600 s window, so CPU has numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "sizeguard.cli"]
METRICS_STEP = {200: 60, 2000: 300}


def _one_scan(directory: Path, timeframe: float | None) -> dict[str, object]:
    """Runs in the child process: one full scan (apiserver + Prometheus), measured."""
    from sizeguard import recommend
    from sizeguard.prometheus import PrometheusClient
    from sizeguard.sandbox.state import SandboxState
    from sizeguard.workloads import WorkloadReader

    state = SandboxState.load(directory)
    assert state is not None, f"no sandbox in {directory}"
    tracemalloc.start()
    started = time.perf_counter()
    with WorkloadReader(Path(state.info["kubeconfig"])) as reader:
        workloads = reader.workloads()
    listed = time.perf_counter()
    settings = recommend.settings_for("simple", timeframe_duration=timeframe)

    async def go() -> tuple[recommend.ScanResult, int]:
        async with PrometheusClient(state.urls["prometheus"], timeout=600) as client:
            result = await recommend.scan(
                client, workloads, settings, at=float(state.info["history"]["end"])
            )
            return result, client.queries

    result, queries = asyncio.run(go())
    done = time.perf_counter()
    _, peak_traced = tracemalloc.get_traced_memory()
    numbers = sum(1 for s in result.scans if isinstance(s.recommended.requests["cpu"].value, float))
    containers = len(result.scans)
    return {
        "workloads": len(workloads),
        "containers": containers,
        "cpu_recommended": numbers,
        "errors": len(result.errors),
        "list_seconds": round(listed - started, 2),
        "prometheus_seconds": round(done - listed, 2),
        "total_seconds": round(done - started, 2),
        "promql_queries": queries,
        # What a per-container plan like krr's issues: 4 metric queries per container and
        # 2 pod-discovery queries per workload (3 for Deployments).
        "per_container_plan_queries": containers * 4
        + sum(3 if w.kind == "Deployment" else 2 for w in workloads),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_python_heap_mib": round(peak_traced / 1024**2, 1),
    }


def _per_container_plan(directory: Path, sample: int) -> dict[str, object]:
    """Runs in the child: krr-shaped queries (per workload and container) for a sample.

    Per workload the pod discovery (``kube_replicaset_owner`` for Deployments, then
    ``kube_pod_owner``; krr fetches these as raw 32-day range vectors, which is heavier than
    the ``last_over_time`` used here), per container the four metric queries of krr's
    ``simple`` strategy
    with a ``pod=~"..."`` selector, 10 at a time (krr's ``max_workers``). The time for all
    containers is extrapolated linearly from the sample.
    """
    from sizeguard.prometheus import PrometheusClient
    from sizeguard.sandbox.state import SandboxState
    from sizeguard.workloads import WorkloadReader

    state = SandboxState.load(directory)
    assert state is not None
    at = float(state.info["history"]["end"])
    with WorkloadReader(Path(state.info["kubeconfig"])) as reader:
        workloads = reader.workloads()
    chosen = workloads[:: max(1, len(workloads) // sample)][:sample]

    async def one(client: PrometheusClient, w: object) -> None:
        from sizeguard.workloads import Workload

        assert isinstance(w, Workload)
        ns = f'namespace="{w.namespace}"'
        if w.kind == "Deployment":
            rs = await client.query(
                "last_over_time(kube_replicaset_owner"
                f'{{owner_name="{w.name}", owner_kind="Deployment", {ns}}}[14d])',
                at,
            )
            owners = "|".join(sorted({r.labels["replicaset"] for r in rs})) or "none"
            kind = "ReplicaSet"
        else:
            owners, kind = w.name, w.kind
        pods = await client.query(
            "last_over_time(kube_pod_owner"
            f'{{owner_name=~"{owners}", owner_kind="{kind}", {ns}}}[14d])',
            at,
        )
        regex = "|".join(sorted(p.labels["pod"] for p in pods)) or "none"
        for c in w.containers:
            sel = f'{ns}, pod=~"{regex}", container="{c.name}"'
            cpu = f"container_cpu_usage_seconds_total{{{sel}}}"
            mem = f"container_memory_working_set_bytes{{{sel}}}"
            by = "by (container, pod, job)"
            await asyncio.gather(
                client.query(f"quantile_over_time(0.95, max(rate({cpu}[75s])) {by} [14d:75s])", at),
                client.query(f"count_over_time(max({cpu}) {by} [14d:75s])", at),
                client.query(f"max_over_time(max({mem}) {by} [14d:75s])", at),
                client.query(f"count_over_time(max({mem}) {by} [14d:75s])", at),
            )

    async def go() -> tuple[float, int]:
        async with PrometheusClient(state.urls["prometheus"], timeout=600, max_concurrency=10) as c:
            started = time.perf_counter()
            await asyncio.gather(*(one(c, w) for w in chosen))
            return time.perf_counter() - started, c.queries

    seconds, queries = asyncio.run(go())
    containers = sum(len(w.containers) for w in chosen)
    total = sum(len(w.containers) for w in workloads)
    return {
        "sample_containers": containers,
        "sample_seconds": round(seconds, 2),
        "sample_queries": queries,
        "extrapolated_seconds": round(seconds * total / max(1, containers), 1),
    }


def _bench(size: int, keep: bool, compare: int = 0, wide: bool = True) -> list[dict[str, object]]:
    directory = Path(tempfile.mkdtemp(prefix=f"sg-bench-{size}-"))
    step = METRICS_STEP.get(size, 300)
    print(f"== {size} workloads: sandbox up in {directory} (--metrics-step {step})", flush=True)
    started = time.perf_counter()
    up = subprocess.run(
        [
            *CLI,
            "sandbox",
            "up",
            "--dir",
            str(directory),
            "--workloads",
            str(size),
            "--metrics-step",
            str(step),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if up.returncode != 0:
        print(up.stdout[-2000:], up.stderr[-2000:], sep="\n")
        raise SystemExit(f"sandbox up failed for {size}")
    print(f"   sandbox ready in {time.perf_counter() - started:.0f}s", flush=True)
    results = []
    try:
        timeframes: list[float | None] = [None]
        if wide and step * 2 > 75:
            timeframes.append(step * 2 / 60)
        for timeframe in timeframes:
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(directory),
                    "--timeframe",
                    str(timeframe or 0),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            if child.returncode != 0:
                print(child.stderr[-3000:])
                raise SystemExit("scan failed")
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            figures["metrics_step_seconds"] = step
            figures["timeframe_minutes"] = timeframe or 1.25
            results.append(figures)
            _print(size, figures)
        if compare:
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--compare-child",
                    str(directory),
                    "--sample",
                    str(compare),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            if child.returncode != 0:
                print(child.stderr[-3000:])
                raise SystemExit("comparison failed")
            other = json.loads(child.stdout.strip().splitlines()[-1])
            results.append({"per_container_plan": other})
            print(
                f"   per-container (krr-shaped) plan on {other['sample_containers']} containers: "
                f"{other['sample_seconds']}s, {other['sample_queries']} queries; extrapolated to "
                f"all {size} workloads: {other['extrapolated_seconds']}s",
                flush=True,
            )
    finally:
        if not keep:
            subprocess.run(
                [*CLI, "sandbox", "down", "--dir", str(directory)],
                cwd=ROOT,
                check=False,
                capture_output=True,
            )
            shutil.rmtree(directory, ignore_errors=True)
    return results


def _print(size: int, f: dict[str, object]) -> None:
    print(
        f"   {size} workloads / {f['containers']} containers, step {f['timeframe_minutes']} min "
        f"(samples every {f['metrics_step_seconds']}s):\n"
        f"     scan {f['total_seconds']}s (apiserver {f['list_seconds']}s, Prometheus "
        f"{f['prometheus_seconds']}s), {f['promql_queries']} PromQL queries "
        f"(a per-container plan: {f['per_container_plan_queries']}), peak RSS "
        f"{f['peak_rss_mib']} MiB, peak Python heap {f['peak_python_heap_mib']} MiB, "
        f"CPU recommended for {f['cpu_recommended']}/{f['containers']}, errors {f['errors']}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="200,2000")
    parser.add_argument("--keep", action="store_true", help="leave the sandboxes running")
    parser.add_argument(
        "--compare",
        type=int,
        default=0,
        metavar="N",
        help="also time a per-container (krr-shaped) query plan on N sampled workloads",
    )
    parser.add_argument(
        "--only-timeframe-default", action="store_true", help="skip the second, wider-step scan"
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--compare-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sample", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--timeframe", type=float, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_one_scan(args.child, args.timeframe or None)))
        return
    if args.compare_child:
        print(json.dumps(_per_container_plan(args.compare_child, args.sample)))
        return
    summary = []
    for size in (int(s) for s in args.sizes.split(",")):
        summary += _bench(size, args.keep, args.compare, not args.only_timeframe_default)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
