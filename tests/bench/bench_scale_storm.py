"""A scale storm through the API server: 1,000 HPAs' worth of scale requests from the HPA
controller's user, each one decided by sizeguard's webhook and OPA.

Every ``deployments/scale`` write reaches the webhook (matchConditions send a replica change),
and the admission policy admits it for the exempt principal
``system:serviceaccount:kube-system:horizontal-pod-autoscaler`` (``policies/data.json``). When
load on a cluster turns, every HPA scales at once: this is that moment. The benchmark creates
``--deployments`` Deployments (default 1,000) in a namespace of its own, then vegeta (its own
process) sends one scale update per Deployment (a PUT of the Scale, as the HPA controller
writes it) through the sandbox's API server, as the HPA controller's user (the admin
kubeconfig impersonates it), open loop at ``--rate`` per second
(default 1,000 per 15 s, the HPA controller's sync period: every HPA scaling within one sync;
the controller's own client is limited to 20 requests/s by default, so this is an upper bound).
It reports the latency percentiles and errors of each round (``--rounds``: up, down, up ...),
and what the webhook answered (its metrics). The namespace is deleted at the end (``--keep``
keeps it).

Run:  .venv/bin/python tests/bench/bench_scale_storm.py [--sandbox DIR] [--deployments 1000]
      [--rate 67] [--rounds 2]
Without --sandbox a temporary sandbox with the webhook is started and stopped.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import structlog
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sizeguard.sandbox import lifecycle, tools, webhook_setup  # noqa: E402
from sizeguard.sandbox.kube import KubeClient  # noqa: E402
from sizeguard.sandbox.state import SandboxState  # noqa: E402

NAMESPACE = "scale-storm"
HPA_USER = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
HPA_GROUPS = ["system:serviceaccounts", "system:serviceaccounts:kube-system"]


def deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.example/app:1",
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                        }
                    ]
                },
            },
        },
    }


def namespace_phase(kube: KubeClient) -> str | None:
    """The phase of the benchmark's namespace, None when there is none (a 404's body is a
    Status object, whose ``status`` is a string)."""
    response = kube.http.get(f"/api/v1/namespaces/{NAMESPACE}")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    phase = response.json().get("status", {}).get("phase")
    return phase if isinstance(phase, str) else None


def create_estate(kube: KubeClient, count: int) -> list[str]:
    deadline = time.monotonic() + 180
    while namespace_phase(kube) == "Terminating":  # the previous run's, being deleted
        assert time.monotonic() < deadline, f"namespace {NAMESPACE} is still terminating"
        time.sleep(1)
    response = kube.http.post(
        "/api/v1/namespaces",
        json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
    )
    assert response.status_code in (201, 409), response.text
    names = [f"storm-{n:04d}" for n in range(count)]
    path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"

    def create(name: str) -> None:
        response = kube.http.post(path, json=deployment(name))
        assert response.status_code in (201, 409), response.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, names))
    return names


def scale_body(name: str, replicas: int) -> str:
    """A Scale written with PUT, base64 for vegeta's JSON targets: what the HPA controller
    sends (it updates the scale subresource; its RBAC role grants update, not patch)."""
    scale = {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"replicas": replicas},
    }
    return base64.b64encode(json.dumps(scale).encode()).decode()


def webhook_answers(box: SandboxState) -> Counter[str]:
    """The sandbox webhook's answers so far, by decision/reason."""
    info = box.info["webhook"]
    base = info["url"].rsplit("/", 1)[0]
    context = webhook_setup.ca_context(Path(box.info["ca"]))
    text = httpx.get(f"{base}/metrics", verify=context, timeout=5).text
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("sizeguard_webhook_requests_total{"):
            inside = line[line.index("{") + 1 : line.index("}")]
            labels = {k: v.strip('"') for k, v in (p.split("=", 1) for p in inside.split(","))}
            counts[f"{labels['decision']}/{labels['reason']}"] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def storm(
    vegeta: Path, box: SandboxState, names: list[str], replicas: int, rate: float, work: Path
) -> dict[str, Any]:
    config = yaml.safe_load(Path(box.info["kubeconfig"]).read_text())
    server = config["clusters"][0]["cluster"]["server"]
    user = config["users"][0]["user"]
    header = {
        "Content-Type": ["application/json"],
        "Impersonate-User": [HPA_USER],
        "Impersonate-Group": HPA_GROUPS,
    }
    targets = work / "targets.json"
    targets.write_text(
        "".join(
            json.dumps(
                {
                    "method": "PUT",
                    "url": f"{server}/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}/scale",
                    "body": scale_body(name, replicas),
                    "header": header,
                }
            )
            + "\n"
            for name in names
        )
    )
    results = work / "results.bin"
    seconds = len(names) / rate
    with results.open("wb") as out:
        subprocess.run(
            [
                str(vegeta),
                "attack",
                "-format=json",
                f"-targets={targets}",
                f"-rate={round(rate * 100)}/100s",  # vegeta takes an integer count per period
                f"-duration={seconds:.3f}s",
                "-timeout=30s",
                f"-root-certs={config['clusters'][0]['cluster']['certificate-authority']}",
                f"-cert={user['client-certificate']}",
                f"-key={user['client-key']}",
                "-http2=false",
            ],
            stdout=out,
            check=True,
        )
    report = json.loads(
        subprocess.run(
            [str(vegeta), "report", "-type=json", str(results)], capture_output=True, check=True
        ).stdout
    )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sandbox", type=Path, help="a running sandbox started --with-webhook")
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000 / 15, help="scale requests per second")
    parser.add_argument("--rounds", type=int, default=2, help="storms (up, down, up, ...)")
    parser.add_argument("--keep", action="store_true", help="keep the namespace and Deployments")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    vegeta = tools.find("vegeta")
    if vegeta is None:
        print("vegeta is missing: run scripts/install-tools --only vegeta", file=sys.stderr)
        return 2
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    with tempfile.TemporaryDirectory(prefix="sg-storm-") as tmp:
        work = Path(tmp)
        own = args.sandbox is None
        directory = work / "sandbox" if own else args.sandbox.resolve()
        if own:
            lifecycle.up(
                lifecycle.UpOptions(directory=directory, webhook=True, history_days=1),
                report=lambda _: None,
            )
        try:
            box = SandboxState.load(directory)
            assert box is not None and "webhook" in box.info, "need a sandbox --with-webhook"
            kube = KubeClient(Path(box.info["kubeconfig"]))
            try:
                started = time.monotonic()
                names = create_estate(kube, args.deployments)
                print(
                    f"{len(names)} Deployments in namespace {NAMESPACE} "
                    f"({time.monotonic() - started:.1f} s); scale requests as {HPA_USER}, "
                    f"open loop at {args.rate:.1f}/s through the API server"
                )
                print(
                    f"   {'round':<12} {'requests':>8} {'p50':>10} {'p90':>10} {'p99':>10} "
                    f"{'max':>10} {'success':>8}  errors  load"
                )
                for index in range(args.rounds):
                    replicas = 2 if index % 2 == 0 else 1
                    before = webhook_answers(box)
                    report = storm(vegeta, box, names, replicas, args.rate, work)
                    answered = webhook_answers(box) - before
                    lat = report["latencies"]
                    errors = ", ".join(report.get("errors") or []) or "-"
                    codes = report.get("status_codes", {})
                    print(
                        f"   {'to ' + str(replicas) + ' replicas':<12} {report['requests']:>8} "
                        f"{lat['50th'] / 1e6:>8.2f}ms {lat['90th'] / 1e6:>8.2f}ms "
                        f"{lat['99th'] / 1e6:>8.2f}ms {lat['max'] / 1e6:>8.2f}ms "
                        f"{report['success'] * 100:>7.1f}%  {errors[:60]}  "
                        f"{os.getloadavg()[0]:.2f}"
                    )
                    print(
                        f"      HTTP {dict(sorted(codes.items()))}; the webhook answered "
                        + ", ".join(f"{k} x{v}" for k, v in answered.most_common())
                    )
                    time.sleep(2)
            finally:
                if not args.keep:
                    kube.http.delete(f"/api/v1/namespaces/{NAMESPACE}")
                kube.close()
        finally:
            if own:
                lifecycle.down(directory, report=lambda _: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
