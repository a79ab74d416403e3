"""Open-loop load on sizeguard's admission webhook over TLS, from vegeta (its own process).

The API server calls the webhook at whatever rate its clients make guarded changes, whether
or not the webhook keeps up: the load is open loop. vegeta (``scripts/install-tools --only
vegeta``) sends AdmissionReviews at a fixed rate, for a fixed time, over HTTP/1.1 keep-alive
and TLS verified against the webhook's CA, with the API server's ``?timeout=5s`` and a 5 s
client timeout, opening connections as it needs them (as the API server does). Per path and
rate it reports the latency percentiles, the errors (no answer within 5 s, or not HTTP 200),
every answer by kind, the webhook's memory (PSS of its process tree, what the container's
memory limit counts) during and after the run, its CPU time per request (and its OPA's, when
the benchmark started that OPA), and how soon after the run a request is answered normally
again.

Paths (one request kind per line, the bodies of ``bench_webhook.py``):

- ``fast``: an UPDATE that leaves the footprint alone (an image change): admitted at once,
  no verification, no OPA.
- ``verify``: a guarded change (CPU request 100m -> 150m): nine in ten carry a valid
  approval (Ed25519 verification, binding checks, the namespace from the webhook's watch, one
  OPA decision) and must be admitted; one in ten carries none and must be denied.

Answers are counted as ``normal`` (admitted, or for the unapproved change denied by the
policy), ``shed`` (a fast deny saying the webhook is overloaded or the request's deadline
passed: a correct fail-closed answer, but the caller must retry), ``other deny`` (a deny
of an approved change for another reason, e.g. OPA's timeout) and ``WRONG`` (an unapproved
change admitted: must always be 0). Errors are requests without a valid AdmissionReview.
After the run, ``recovery`` is when, counted from the end of the load, the first of a row of
sequential requests (one every 50 ms, on a new connection) got a normal answer with every
later one normal too.

By default it starts its own OPA (``--policies``, the repository's) and its own webhook
process (its own keys, CA and certificate; ``--webhook-arg`` passes options to ``sizeguard
webhook``, ``--webhook-src DIR`` runs the webhook from another source tree, e.g. a copy of an
older commit for a before/after comparison) against a sandbox's API server (``--sandbox DIR``,
else a temporary one is started). ``--use-sandbox-webhook`` loads the sandbox's own webhook
and OPA instead.

Run:  .venv/bin/python tests/bench/bench_webhook_load.py [--sandbox DIR] [--paths fast,verify]
      [--rates 200,500,1000] [--duration 60] [--webhook-arg=--workers=2 ...]
e.g.  .venv/bin/python tests/bench/bench_webhook_load.py --sandbox /tmp/sb --paths verify \\
      --rates 200 --duration 60
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import structlog

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sizeguard.approvals import init_key_dir, load_signing_key, mint_approval  # noqa: E402
from sizeguard.changes import guarded_state, target_of  # noqa: E402
from sizeguard.sandbox import lifecycle, processes, tools, webhook_setup  # noqa: E402
from sizeguard.sandbox.kube import KubeClient  # noqa: E402
from sizeguard.sandbox.opa import running_opa  # noqa: E402
from sizeguard.sandbox.pki import CertificateAuthority  # noqa: E402
from sizeguard.sandbox.state import SandboxState  # noqa: E402
from tests.bench.bench_webhook import deployment, review  # noqa: E402

NAMESPACE = "bench"
CHART_MEMORY_LIMIT_MIB = 256  # charts/sizeguard/values.yaml: webhook.resources.limits.memory
TIMEOUT = "5s"  # what the registration's timeoutSeconds makes the API server send


# --- the webhook's memory -----------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants so far, in seconds."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError, ValueError):
            stat = Path(f"/proc/{current}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
        todo.extend(_children(current))
    return total / os.sysconf("SC_CLK_TCK")


def tree_rss_mib(pid: int) -> float:
    """Memory of a process and its descendants (the worker processes) in MiB: the sum of their
    proportional set sizes (PSS), so that pages the forked workers share are counted once, as
    the container's memory limit counts them (for one process, PSS is about its RSS)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        todo.extend(_children(current))
    return total / 1024


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[float] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(tree_rss_mib(self.pid))
            self._stop_event.wait(self.interval)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return max(self.samples, default=0.0)


# --- the requests -------------------------------------------------------------------------------


@dataclass
class Bodies:
    fast: bytes
    approved: bytes
    unapproved: bytes


def bodies(keys: Path, resource_version: str = "1") -> Bodies:
    """The three AdmissionReviews, with an approval minted now (they live 5 minutes)."""
    old = deployment("100m")
    old["metadata"]["resourceVersion"] = resource_version
    new = deployment("150m")
    token = mint_approval(
        load_signing_key(keys),
        change_set_id="cs-0000000000000000be0c",
        op="apply",
        target=target_of(old),
        before=guarded_state(old),
        after=guarded_state(new),
        subject="bench@example.com",
        resource_version=resource_version,
    )
    approved = copy.deepcopy(new)
    approved["metadata"]["annotations"] = {"sizeguard.io/approval": token}
    return Bodies(
        fast=review(old, deployment("100m", image="app:2")),
        approved=review(old, approved),
        unapproved=review(old, new),
    )


def _target(url: str, case: str, body: bytes) -> str:
    return json.dumps(
        {
            "method": "POST",
            "url": f"{url}?timeout={TIMEOUT}&case={case}",
            "body": base64.b64encode(body).decode(),
            "header": {"Content-Type": ["application/json"]},
        }
    )


def targets(url: str, path: str, b: Bodies) -> str:
    if path == "fast":
        return _target(url, "fast", b.fast) + "\n"
    lines = [_target(url, "approved", b.approved)] * 9 + [_target(url, "unapproved", b.unapproved)]
    return "\n".join(lines) + "\n"


def classify(case: str, code: int, body: bytes) -> str:
    """normal | shed | other_deny | WRONG | error, for one result."""
    if code != 200:
        return "error"
    try:
        response = json.loads(body)["response"]
    except (ValueError, KeyError, TypeError):
        return "error"
    allowed = response.get("allowed") is True
    message = (response.get("status") or {}).get("message", "")
    if case == "unapproved":
        return "WRONG" if allowed else "normal"
    if allowed:
        return "normal"
    if "overloaded" in message or "deadline" in message:
        return "shed"
    return "other_deny"


# --- one run ------------------------------------------------------------------------------------


@dataclass
class RunResult:
    path: str
    rate: int
    seconds: float
    requests: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    shed_latency_ms: float | None = None
    kinds: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    rss_peak: float = 0.0
    rss_after: float = 0.0
    recovery_s: float | None = None
    cpu_ms: float = 0.0  # the webhook's CPU time per request sent
    opa_cpu_ms: float | None = None  # its OPA's, when the benchmark started that OPA
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)


class Prober(threading.Thread):
    """Sequential requests after the load (one every ``every`` s, for ``seconds``)."""

    def __init__(self, url: str, ca: Path, body: bytes, start_at: float) -> None:
        super().__init__(daemon=True)
        self.url, self.ca, self.body, self.start_at = url, ca, body, start_at
        self.results: list[tuple[float, float, bool]] = []  # (sent, answered, normal)

    def run(self) -> None:
        time.sleep(max(0.0, self.start_at - time.monotonic()))
        context = webhook_setup.ca_context(self.ca)
        with httpx.Client(verify=context, timeout=5.0) as http:
            until = self.start_at + 3.0
            while time.monotonic() < until:
                sent = time.monotonic()
                normal = False
                try:
                    response = http.post(f"{self.url}?timeout={TIMEOUT}", content=self.body)
                    normal = classify("approved", response.status_code, response.content) == (
                        "normal"
                    )
                except httpx.HTTPError:
                    pass
                answered = time.monotonic()
                self.results.append((sent - self.start_at, answered - self.start_at, normal))
                time.sleep(max(0.0, 0.05 - (answered - sent)))

    def recovery(self) -> float | None:
        """When the first normal answer of the final all-normal row arrived (from the end of
        the load), None if the last answer was not normal."""
        first: float | None = None
        for _, answered, normal in self.results:
            if normal and first is None:
                first = answered
            elif not normal:
                first = None
        return None if first is None else max(0.0, first)


def attack(
    vegeta: Path,
    *,
    url: str,
    ca: Path,
    path: str,
    b: Bodies,
    rate: int,
    seconds: float,
    pid: int,
    work: Path,
    idle_connections: int = 25,
    opa_pid: int | None = None,
) -> RunResult:
    result = RunResult(path, rate, seconds)
    (work / "targets.json").write_text(targets(url, path, b))
    results_bin = work / f"{path}-{rate}.bin"
    sampler = RssSampler(pid)
    sampler.start()
    cpu_before = tree_cpu_seconds(pid)
    opa_before = tree_cpu_seconds(opa_pid) if opa_pid else 0.0
    started = time.monotonic()
    prober = Prober(url, ca, b.approved if path == "verify" else b.fast, started + seconds)
    prober.start()
    with results_bin.open("wb") as out:
        subprocess.run(
            [
                str(vegeta),
                "attack",
                "-format=json",
                f"-targets={work / 'targets.json'}",
                f"-rate={rate}/1s",
                f"-duration={seconds}s",
                f"-timeout={TIMEOUT}",
                f"-root-certs={ca}",
                "-http2=false",
                "-keepalive=true",
                f"-connections={idle_connections}",
                "-max-body=-1",
            ],
            stdout=out,
            check=True,
        )
    prober.join()
    time.sleep(max(0.0, started + seconds + 4.0 - time.monotonic()))
    cpu = tree_cpu_seconds(pid) - cpu_before
    opa_cpu = tree_cpu_seconds(opa_pid) - opa_before if opa_pid else None
    result.rss_peak = sampler.stop()
    result.rss_after = tree_rss_mib(pid)
    result.recovery_s = prober.recovery()
    result.load = os.getloadavg()
    report = json.loads(
        subprocess.run(
            [str(vegeta), "report", "-type=json", str(results_bin)],
            capture_output=True,
            check=True,
        ).stdout
    )
    result.requests = report["requests"]
    result.cpu_ms = 1000 * cpu / max(1, result.requests)
    if opa_cpu is not None:
        result.opa_cpu_ms = 1000 * opa_cpu / max(1, result.requests)
    result.latency_ms = {
        key: report["latencies"][name] / 1e6
        for key, name in (("p50", "50th"), ("p90", "90th"), ("p99", "99th"), ("max", "max"))
    }
    encoded = subprocess.run(
        [str(vegeta), "encode", "-to=json", str(results_bin)], capture_output=True, check=True
    ).stdout
    shed_latencies = []
    for line in encoded.splitlines():
        row = json.loads(line)
        case = row["url"].rsplit("case=", 1)[-1]
        kind = classify(case, row["code"], base64.b64decode(row.get("body") or b""))
        result.kinds[kind] += 1
        if kind == "error":
            error = row.get("error") or f"HTTP {row['code']}"
            result.errors["timeout" if "Timeout" in error or "deadline" in error else error] += 1
        if kind == "shed":
            shed_latencies.append(row["latency"] / 1e6)
    if shed_latencies:
        shed_latencies.sort()
        result.shed_latency_ms = shed_latencies[int(0.99 * (len(shed_latencies) - 1))]
    results_bin.unlink()
    return result


def print_header() -> None:
    print(
        f"   {'path':<7} {'req/s':>6} {'secs':>5} {'sent':>7} {'p50':>9} {'p90':>9} {'p99':>9} "
        f"{'max':>9} {'normal':>7} {'shed':>7} {'shed p99':>9} {'deny':>5} {'WRONG':>5} "
        f"{'errors':>7} {'mem max':>8} {'after':>6} {'recovery':>9} {'CPU/req':>8} "
        f"{'OPA CPU':>8}  load"
    )


def print_result(r: RunResult) -> None:
    lat = r.latency_ms
    shed99 = "-" if r.shed_latency_ms is None else f"{r.shed_latency_ms:.1f}ms"
    recovery = "never" if r.recovery_s is None else f"{r.recovery_s:.2f}s"
    opa_cpu = "-" if r.opa_cpu_ms is None else f"{r.opa_cpu_ms:.2f}ms"
    print(
        f"   {r.path:<7} {r.rate:>6} {r.seconds:>5g} {r.requests:>7} {lat['p50']:>7.2f}ms "
        f"{lat['p90']:>7.2f}ms {lat['p99']:>7.2f}ms {lat['max']:>7.0f}ms "
        f"{r.kinds['normal']:>7} {r.kinds['shed']:>7} {shed99:>9} {r.kinds['other_deny']:>5} "
        f"{r.kinds['WRONG']:>5} {r.kinds['error']:>7} {r.rss_peak:>6.0f}Mi {r.rss_after:>4.0f}Mi "
        f"{recovery:>9} {r.cpu_ms:>6.2f}ms {opa_cpu:>8}  {r.load[0]:.2f}",
        flush=True,
    )
    if r.errors:
        print("          errors: " + ", ".join(f"{k} x{v}" for k, v in r.errors.most_common(4)))


# --- the webhook under test ---------------------------------------------------------------------


@dataclass
class Webhook:
    url: str
    ca: Path
    keys: Path
    pid: int


@contextlib.contextmanager
def own_webhook(
    box: SandboxState, opa_url: str, work: Path, extra: list[str], src: Path | None
) -> Iterator[Webhook]:
    keys = work / "keys"
    init_key_dir(keys)
    ca = CertificateAuthority(work / "pki", common_name="bench-ca")
    serving = ca.issue("webhook", "bench-webhook", server_names=("127.0.0.1",))
    port = processes.free_port()
    kubeconfig = Path(box.info["kubeconfig"])
    argv = webhook_setup.webhook_argv(
        serving.cert, serving.key, keys / "jwks.json", opa_url, port, kubeconfig
    )
    env = dict(os.environ, SIZEGUARD_LOG_LEVEL="warning")
    if src is not None:
        env["PYTHONPATH"] = str(src.resolve())
    proc = processes.start("webhook", [*argv, *extra], work / "webhook.log", cwd=work, env=env)
    try:
        base = f"https://127.0.0.1:{port}"
        webhook_setup.wait_ready(proc, base, ca.cert_path)
        yield Webhook(f"{base}/validate", ca.cert_path, keys, proc.pid)
    finally:
        processes.stop(proc)


def sandbox_webhook(box: SandboxState) -> Webhook:
    component = box.component("webhook")
    assert component is not None, "the sandbox runs no webhook (sandbox up --with-webhook)"
    info = box.info["webhook"]
    return Webhook(info["url"], Path(box.info["ca"]), Path(info["keys"]), component.pid)


def ensure_namespace(box: SandboxState) -> None:
    kube = KubeClient(Path(box.info["kubeconfig"]))
    try:
        response = kube.http.get(f"/api/v1/namespaces/{NAMESPACE}")
        if response.status_code == 404:
            kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    finally:
        kube.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sandbox", type=Path, help="a running sandbox (its API server)")
    parser.add_argument("--paths", default="fast,verify")
    parser.add_argument("--rates", default="200,500,1000", help="requests per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per run")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between runs")
    parser.add_argument("--policies", type=Path, default=REPO / "policies")
    parser.add_argument(
        "--idle-connections",
        type=int,
        default=25,
        help="idle keep-alive connections vegeta keeps (25, as the API server's client-go "
        "transport keeps per webhook host; vegeta's own default is 10,000)",
    )
    parser.add_argument(
        "--webhook-arg",
        action="append",
        default=[],
        help="an option for `sizeguard webhook` (repeat), e.g. --webhook-arg=--workers=2",
    )
    parser.add_argument("--webhook-src", type=Path, help="run the webhook from this source tree")
    parser.add_argument(
        "--use-sandbox-webhook",
        action="store_true",
        help="load the sandbox's own webhook (and its OPA) instead of starting one",
    )
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    vegeta = tools.find("vegeta") or (Path(p) if (p := shutil.which("vegeta")) else None)
    if vegeta is None:
        print("vegeta is missing: run scripts/install-tools --only vegeta", file=sys.stderr)
        return 2
    paths = [p for p in args.paths.split(",") if p]
    rates = [int(r) for r in args.rates.split(",") if r]
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    with tempfile.TemporaryDirectory(prefix="sg-load-") as tmp:
        work = Path(tmp)
        own = args.sandbox is None
        directory = work / "sandbox" if own else args.sandbox.resolve()
        if own:
            lifecycle.up(
                lifecycle.UpOptions(directory=directory, webhook=args.use_sandbox_webhook),
                report=lambda _: None,
            )
        try:
            box = SandboxState.load(directory)
            assert box is not None, f"no sandbox in {directory}"
            ensure_namespace(box)
            with contextlib.ExitStack() as stack:
                opa_pid: int | None = None
                if args.use_sandbox_webhook:
                    hook = sandbox_webhook(box)
                    what = f"the sandbox's webhook ({hook.url}) and OPA"
                else:
                    opa = stack.enter_context(running_opa(args.policies.resolve(), work))
                    opa_pid = opa.pid
                    hook = stack.enter_context(
                        own_webhook(box, opa.url, work, args.webhook_arg, args.webhook_src)
                    )
                    what = (
                        f"webhook {' '.join(args.webhook_arg) or '(defaults)'}"
                        f"{f' from {args.webhook_src}' if args.webhook_src else ''}, "
                        f"OPA over {args.policies}"
                    )
                print(f"{what}; chart memory limit {CHART_MEMORY_LIMIT_MIB} Mi")
                print(f"   idle memory (PSS) {tree_rss_mib(hook.pid):.0f} Mi")
                print_header()
                for path in paths:
                    for rate in rates:
                        b = bodies(hook.keys)
                        result = attack(
                            vegeta,
                            url=hook.url,
                            ca=hook.ca,
                            path=path,
                            b=b,
                            rate=rate,
                            seconds=args.duration,
                            pid=hook.pid,
                            work=work,
                            idle_connections=args.idle_connections,
                            opa_pid=opa_pid,
                        )
                        print_result(result)
                        time.sleep(args.pause)
        finally:
            if own:
                lifecycle.down(directory, report=lambda _: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
