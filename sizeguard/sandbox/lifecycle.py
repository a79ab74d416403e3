"""Bring the sandbox up, report on it, and take it down.

``up`` starts every component in the background on 127.0.0.1 with free ports, creates the
demo estate, backfills Prometheus, and returns once all of it answers. If any step fails,
everything already started is stopped again and the failing component's log tail is shown.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from sizeguard.errors import CommandError
from sizeguard.sandbox import estate as estate_mod
from sizeguard.sandbox import metrics, processes, tools, webhook_setup
from sizeguard.sandbox.kube import KubeClient, write_kubeconfig
from sizeguard.sandbox.opa import opa_argv
from sizeguard.sandbox.pki import CertificateAuthority, service_account_key
from sizeguard.sandbox.processes import Component, StartError
from sizeguard.sandbox.state import SandboxState

HISTORY_DAYS = 14
# Keep the backfill within a budget so that large estates still come up in minutes: past it,
# the sampling step grows (printed by `up`).
SAMPLE_BUDGET = 15_000_000
ADMIN_USER = "sizeguard-admin"
SHARDS = 2  # parallel writers and promtools: the machines here have 2 cores
DEFAULT_POLICIES = Path(__file__).resolve().parents[2] / "policies"


@dataclass(frozen=True)
class UpOptions:
    directory: Path
    workloads: int | None = None
    seed: int = 42
    policies: Path = DEFAULT_POLICIES
    history_days: int = HISTORY_DAYS
    kwok: bool = True
    metrics_step: int | None = None  # seconds; None: 60, raised to fit SAMPLE_BUDGET
    webhook: bool = False  # run sizeguard's admission webhook and register it


Reporter = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Up:
    def __init__(self, options: UpOptions, report: Reporter) -> None:
        self.options = options
        self.report = report
        self.dir = options.directory.resolve()
        self.state = SandboxState(self.dir)
        self.t0 = time.monotonic()

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        start = time.monotonic()
        self.report(f"==> {what} ...")
        yield
        self.report(f"    {what}: done in {time.monotonic() - start:.1f}s")

    def start(self, name: str, argv: list[str]) -> Component:
        """Start a component with its log in DIR/logs and DIR as its working directory."""
        component = processes.start(name, argv, self.dir / "logs" / f"{name}.log", cwd=self.dir)
        return self.started(component)

    def started(self, component: Component) -> Component:
        self.state.components.append(component)
        self.state.save()
        return component


def _prepare_directory(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise CommandError(f"--dir {directory} exists and is not a directory")
    existing = SandboxState.load(directory) if directory.is_dir() else None
    if existing is not None:
        alive = existing.running()
        if alive:
            names = ", ".join(c.name for c in alive)
            raise CommandError(
                f"--dir {directory} is in use by a running sandbox ({names}); "
                f"run 'sizeguard sandbox down --dir {directory}' first"
            )
        # A sandbox that is down: its generated files are ours to replace.
        for sub in ("pki", "etcd", "prometheus", "logs", "opa", "keys"):
            shutil.rmtree(directory / sub, ignore_errors=True)
        existing.path.unlink(missing_ok=True)
    elif directory.is_dir() and any(directory.iterdir()):
        raise CommandError(
            f"--dir {directory} is not empty and holds no sandbox; choose an empty or new directory"
        )
    directory.mkdir(parents=True, exist_ok=True)


def up(options: UpOptions, report: Reporter = _stderr) -> SandboxState:
    """Start the sandbox. On failure nothing it started is left running."""
    if options.workloads is not None and options.workloads < len(estate_mod.default_workloads()):
        raise CommandError(
            f"--workloads must be at least {len(estate_mod.default_workloads())} "
            "(the default estate)"
        )
    if not options.policies.is_dir():
        raise CommandError(f"policies directory {options.policies} does not exist")
    found = tools.require(*tools.REQUIRED)
    use_kwok = options.kwok and all(tools.find(n) for n in ("kwok", "kube-scheduler"))
    if use_kwok:
        found.update(tools.require("kwok", "kube-scheduler"))
    _prepare_directory(options.directory)
    run = _Up(options, report)
    try:
        _bring_up(run, found, use_kwok)
    except BaseException as exc:
        failed = exc.component if isinstance(exc, StartError) else None
        if os.environ.get("SIZEGUARD_SANDBOX_KEEP_ON_FAILURE") == "1":
            report(
                "SIZEGUARD_SANDBOX_KEEP_ON_FAILURE=1: left running; "
                f"stop it with 'sizeguard sandbox down --dir {run.dir}'"
            )
        else:
            _teardown(run.state, report)
        if isinstance(exc, StartError) and failed is not None:
            tail = processes.log_tail(failed)
            raise CommandError(f"{exc}; log {failed.log}:\n{tail}") from None
        if isinstance(exc, CommandError | KeyboardInterrupt):
            raise
        raise CommandError(f"sandbox up failed: {type(exc).__name__}: {exc}") from exc
    report(f"==> sandbox up in {time.monotonic() - run.t0:.1f}s; environment: {run.dir / 'env'}")
    return run.state


def _bring_up(run: _Up, found: dict[str, Path], use_kwok: bool) -> None:
    d = run.dir
    logs = d / "logs"
    with run.step("certificates"):
        ca = CertificateAuthority(d / "pki")
        host_names = (
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default.svc",
            "127.96.0.1",
        )
        serving = ca.issue("apiserver", "kube-apiserver", server_names=host_names)
        admin = ca.issue("admin", ADMIN_USER, organization="system:masters", client=True)
        kcm = ca.issue("controller-manager", "system:kube-controller-manager", client=True)
        scheduler = ca.issue("scheduler", "system:kube-scheduler", client=True)
        kwok_cert = ca.issue("kwok", "kwok-controller", organization="system:masters", client=True)
        sa_key, sa_pub = service_account_key(d / "pki")

    with run.step("OPA"):
        opa_port = processes.free_port()
        opa_url = f"http://127.0.0.1:{opa_port}"
        opa = run.start("opa", opa_argv(found["opa"], opa_port, run.options.policies, watch=True))
        opa.url = opa_url

    with run.step("etcd"):
        client_port, peer_port = processes.free_port(), processes.free_port()
        etcd_url = f"http://127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        etcd = run.start(
            "etcd",
            [
                str(found["etcd"]),
                "--name",
                "sandbox",
                "--data-dir",
                str(d / "etcd"),
                "--listen-client-urls",
                etcd_url,
                "--advertise-client-urls",
                etcd_url,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"sandbox={peer}",
                "--unsafe-no-fsync",
                "--quota-backend-bytes",
                str(4 * 1024**3),
                "--log-level",
                "warn",
            ],
        )
        etcd.url = etcd_url
        processes.wait_until(
            etcd, lambda: _http_ok(f"{etcd_url}/health"), timeout=30, what="healthy"
        )

    with run.step("kube-apiserver"):
        api_port = processes.free_port()
        api_url = f"https://127.0.0.1:{api_port}"
        apiserver = run.start(
            "kube-apiserver",
            [
                str(found["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={ca.cert_path}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                # Service, pod and node addresses are all loopback: whatever the apiserver
                # dials (a webhook Service, a "kubelet", a pod) stays on this machine.
                "--service-cluster-ip-range=127.96.0.0/16",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                f"--cert-dir={d / 'pki' / 'apiserver-generated'}",
                "--max-requests-inflight=1000",
                "--max-mutating-requests-inflight=500",
                "--v=0",
            ],
        )
        apiserver.url = api_url
        ca_ctx = _tls_context(ca.cert_path, admin.cert, admin.key)
        processes.wait_until(
            apiserver,
            lambda: _http_ok(f"{api_url}/readyz", verify=ca_ctx),
            timeout=90,
            what="ready",
        )
        admin_kubeconfig = d / "kubeconfig"
        write_kubeconfig(admin_kubeconfig, api_url, ca.cert_path, admin, ADMIN_USER)
        kcm_kubeconfig = d / "pki" / "controller-manager.kubeconfig"
        write_kubeconfig(kcm_kubeconfig, api_url, ca.cert_path, kcm, "controller-manager")
        sched_kubeconfig = d / "pki" / "scheduler.kubeconfig"
        write_kubeconfig(sched_kubeconfig, api_url, ca.cert_path, scheduler, "scheduler")
        kwok_kubeconfig = d / "pki" / "kwok.kubeconfig"
        write_kubeconfig(kwok_kubeconfig, api_url, ca.cert_path, kwok_cert, "kwok")

    with run.step("kube-controller-manager" + (", kube-scheduler, kwok" if use_kwok else "")):
        kcm_port = processes.free_port()
        controllers = "*" if use_kwok else "*,-node-lifecycle-controller"
        controller_manager = run.start(
            "kube-controller-manager",
            [
                str(found["kube-controller-manager"]),
                f"--kubeconfig={kcm_kubeconfig}",
                f"--authentication-kubeconfig={kcm_kubeconfig}",
                f"--authorization-kubeconfig={kcm_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={ca.cert_path}",
                "--use-service-account-credentials=true",
                f"--controllers={controllers}",
                "--leader-elect=false",
                "--kube-api-qps=400",
                "--kube-api-burst=800",
                "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10",
                "--concurrent-statefulset-syncs=10",
                f"--cert-dir={d / 'pki' / 'kcm-generated'}",
            ],
        )
        controller_manager.url = f"https://127.0.0.1:{kcm_port}"
        waits: list[tuple[Component, str]] = [(controller_manager, controller_manager.url)]
        if use_kwok:
            sched_port = processes.free_port()
            sched = run.start(
                "kube-scheduler",
                [
                    str(found["kube-scheduler"]),
                    f"--kubeconfig={sched_kubeconfig}",
                    f"--authentication-kubeconfig={sched_kubeconfig}",
                    f"--authorization-kubeconfig={sched_kubeconfig}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={sched_port}",
                    "--leader-elect=false",
                    "--kube-api-qps=400",
                    "--kube-api-burst=800",
                    f"--cert-dir={d / 'pki' / 'scheduler-generated'}",
                ],
            )
            sched.url = f"https://127.0.0.1:{sched_port}"
            waits.append((sched, sched.url))
            kwok_port = processes.free_port()
            kwok = run.start(
                "kwok",
                [
                    str(found["kwok"]),
                    f"--kubeconfig={kwok_kubeconfig}",
                    "--manage-all-nodes=false",
                    "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                    "--cidr=127.244.0.0/16",
                    "--node-ip=127.0.0.1",
                    "--node-lease-duration-seconds=40",
                    f"--server-address=127.0.0.1:{kwok_port}",
                ],
            )
            kwok.url = f"http://127.0.0.1:{kwok_port}"
            waits.append((kwok, kwok.url))
        for component, url in waits:
            processes.wait_until(
                component,
                lambda url=url: _http_ok(f"{url}/healthz", verify=False),  # type: ignore[misc]
                timeout=60,
                what="healthy",
            )
        processes.wait_until(opa, lambda: _http_ok(f"{opa_url}/health"), timeout=30, what="healthy")

    kube = KubeClient(admin_kubeconfig)
    the_estate = estate_mod.build(workloads=run.options.workloads, seed=run.options.seed)
    with run.step(
        f"estate: {len(the_estate.workloads)} workloads in {len(the_estate.namespaces)} "
        f"namespaces on {len(the_estate.nodes)} nodes"
    ):
        pods, replaced = _create_estate(kube, the_estate, controller_manager, run.report)

    webhook_info: dict[str, str] = {}
    if run.options.webhook:
        with run.step("sizeguard admission webhook"):
            probe = next(w for w in the_estate.workloads if w.kind == "Deployment")
            webhook_info = webhook_setup.bring_up(
                directory=d,
                ca=ca,
                kube=kube,
                kubeconfig=admin_kubeconfig,
                opa_url=opa_url,
                probe=(probe.namespace, probe.name),
                start=run.start,
            )

    with run.step("Prometheus history"):
        prom_dir = d / "prometheus"
        (prom_dir / "data").mkdir(parents=True, exist_ok=True)
        plan = _history_plan(
            the_estate, pods, replaced, run.options.history_days, run.options.metrics_step
        )
        run.report(
            f"    {len(plan.pods)} pods, {metrics.count_series(plan)} series, step {plan.step}s, "
            f"{run.options.history_days} days"
        )
        shards = metrics.write_shards(plan, prom_dir, SHARDS)
        run.report(f"    wrote {plan.samples:,} samples; backfilling with promtool")
        _backfill(found["promtool"], shards, prom_dir / "data", logs / "promtool.log")
        for path in shards:
            path.unlink()
        prom_port = processes.free_port()
        prom_url = f"http://127.0.0.1:{prom_port}"
        (prom_dir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1m\nscrape_configs: []\n"
        )
        prometheus = run.start(
            "prometheus",
            [
                str(found["prometheus"]),
                f"--config.file={prom_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={prom_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--storage.tsdb.retention.time=60d",
                "--query.max-samples=200000000",
                "--log.level=warn",
            ],
        )
        prometheus.url = prom_url
        processes.wait_until(
            prometheus, lambda: _http_ok(f"{prom_url}/-/ready"), timeout=120, what="ready"
        )

    run.state.urls = {"kubernetes": api_url, "prometheus": prom_url, "opa": opa_url}
    run.state.info = {
        "kubeconfig": str(admin_kubeconfig),
        "ca": str(ca.cert_path),
        "seed": run.options.seed,
        "workloads": len(the_estate.workloads),
        "nodes": len(the_estate.nodes),
        "pods": len(plan.pods),
        "kwok": use_kwok,
        "history": {
            **plan.extra,
            "step": plan.step,
            "series": plan.series,
            "samples": plan.samples,
        },
        "replaced_pods": replaced,
        "policies": str(run.options.policies),
    }
    if webhook_info:
        run.state.urls["webhook"] = webhook_info["url"]
        run.state.info["webhook"] = webhook_info
    run.state.save()
    (d / "env").write_text(env_file(admin_kubeconfig, prom_url, opa_url, webhook_info))


def env_file(
    kubeconfig: Path, prometheus_url: str, opa_url: str, webhook: dict[str, str] | None
) -> str:
    """``DIR/env``: what a shell sources to use the sandbox. With the webhook, also
    ``SIZEGUARD_KEY_DIR``: the key directory whose JWKS the webhook trusts, so that a
    ``sizeguard serve`` started from this environment signs with a key the cluster accepts."""
    lines = [
        f"export KUBECONFIG={shlex.quote(str(kubeconfig))}",
        f"export PROMETHEUS_URL={shlex.quote(prometheus_url)}",
        f"export OPA_URL={shlex.quote(opa_url)}",
    ]
    if webhook:
        lines.append(f"export SIZEGUARD_KEY_DIR={shlex.quote(webhook['keys'])}")
    return "\n".join(lines) + "\n"


def _create_estate(
    kube: KubeClient,
    the_estate: estate_mod.Estate,
    controller_manager: Component,
    report: Reporter,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Create nodes, namespaces and workloads; wait for the controllers' pods; return them.

    One pod of each workload marked ``replace_pod_midway`` is deleted so that its controller
    replaces it: the history then shows the old pod for the first half of the window and the
    new one after, both with names the controller-manager really created.
    """
    kube.apply_many([estate_mod.node_manifest(n) for n in the_estate.nodes])
    kube.apply_many(
        [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": name,
                    "labels": {**labels, estate_mod.ESTATE_LABEL: "true"},
                },
            }
            for name, labels in the_estate.namespaces.items()
        ]
    )
    kube.apply_many(
        [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": ns},
            }
            for ns in the_estate.namespaces
        ]
    )
    kube.apply_many([estate_mod.manifest(w) for w in the_estate.workloads])
    kube.apply_many([m for w in the_estate.workloads if (m := estate_mod.hpa_manifest(w))])
    expected = sum(
        len(the_estate.nodes) if w.kind == "DaemonSet" else w.replicas for w in the_estate.workloads
    )
    selector = f"{estate_mod.ESTATE_LABEL}=true"

    def all_pods() -> list[dict[str, Any]]:
        return [p for p in kube.list_pods(selector) if not p["metadata"].get("deletionTimestamp")]

    pods = _wait_for(
        lambda: (lambda ps: ps if len(ps) >= expected else None)(all_pods()),
        controller_manager,
        timeout=max(60.0, expected * 0.1),
        what=f"creating {expected} pods",
    )
    before = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods}
    deleted: list[tuple[str, str, str]] = []  # (namespace, workload, old pod)
    for workload in the_estate.workloads:
        if not workload.replace_pod_midway:
            continue
        mine = sorted(
            p["metadata"]["name"]
            for p in pods
            if p["metadata"]["namespace"] == workload.namespace
            and p["metadata"]["labels"].get("app.kubernetes.io/name") == workload.name
        )
        kube.delete_pod(workload.namespace, mine[0])
        deleted.append((workload.namespace, workload.name, mine[0]))
    replaced: dict[str, str] = {}
    if deleted:
        gone = {(ns, old) for ns, _, old in deleted}

        def settled() -> list[dict[str, Any]] | None:
            current = all_pods()
            names = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in current}
            return current if len(current) >= expected and not gone & names else None

        pods = _wait_for(settled, controller_manager, timeout=60, what="replacing pods")
        for namespace, workload_name, old in deleted:
            new = next(
                p["metadata"]["name"]
                for p in pods
                if p["metadata"]["namespace"] == namespace
                and p["metadata"]["labels"].get("app.kubernetes.io/name") == workload_name
                and (namespace, p["metadata"]["name"]) not in before
            )
            replaced[f"{namespace}/{old}"] = f"{namespace}/{new}"
    shown = ", ".join(f"{o} -> {n.split('/', 1)[1]}" for o, n in replaced.items()) or "none"
    report(f"    {len(pods)} pods created by the controllers; replaced {shown}")
    return pods, replaced


def _wait_for(
    probe: Callable[[], Any],
    component: Component,
    *,
    timeout: float,
    what: str,
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if processes.exited(component):
            raise StartError(component, f"{component.name} exited while {what}")
        if time.monotonic() > deadline:
            raise StartError(component, f"timed out after {timeout:.0f}s {what}")
        time.sleep(0.5)


def _history_plan(
    the_estate: estate_mod.Estate,
    pods: list[dict[str, Any]],
    replaced: dict[str, str],
    days: int,
    fixed_step: int | None = None,
) -> metrics.Plan:
    """Map the live pods to their workloads and decide each one's lifetime in the history.

    ``replaced`` maps "namespace/old-pod" to the name of the pod that replaced it: the old
    pod covers the first half of the window and its replacement the second.
    """
    by_key = {(w.namespace, w.name): w for w in the_estate.workloads}
    node_names = [n.name for n in the_estate.nodes]
    staged: list[tuple[estate_mod.WorkloadSpec, dict[str, Any], str]] = []
    for pod in pods:
        meta = pod["metadata"]
        spec = by_key.get((meta["namespace"], meta["labels"].get("app.kubernetes.io/name", "")))
        if spec is None:
            continue
        node = pod.get("spec", {}).get("nodeName") or node_names[len(staged) % len(node_names)]
        staged.append((spec, pod, node))
    series = sum(2 + 6 * len(s.containers) for s, _, _ in staged) + 8 * len(replaced)
    samples_per_series = days * 1440
    step = fixed_step or 60 * max(1, -(-series * samples_per_series // SAMPLE_BUDGET))
    end = int(time.time()) // step * step - step
    start = end - days * 86_400
    middle = start + (end - start) // 2 // step * step
    replacement_of = {new: old for old, new in replaced.items()}
    histories: list[metrics.PodHistory] = []
    for spec, pod, node in staged:
        meta = pod["metadata"]
        owner = (meta.get("ownerReferences") or [{}])[0]
        owner_kind, owner_name = owner.get("kind", spec.kind), owner.get("name", spec.name)
        history = metrics.PodHistory(
            namespace=spec.namespace,
            pod=meta["name"],
            node=node,
            owner_kind=owner_kind,
            owner_name=owner_name,
            containers=spec.containers,
            start=start
            if spec.history_minutes is None
            else end - spec.history_minutes * 60 // step * step,
            end=end,
            deployment=spec.name if owner_kind == "ReplicaSet" else None,
            oom_container=next((c.name for c in spec.containers if c.usage.oom_at), None),
        )
        old = replacement_of.get(f"{spec.namespace}/{meta['name']}")
        if old is not None:
            histories.append(dataclasses.replace(history, pod=old.split("/", 1)[1], end=middle))
            history = dataclasses.replace(history, start=middle + step)
        histories.append(history)
    plan = metrics.Plan(pods=histories, step=step, seed=the_estate.seed)
    plan.extra.update({"start": start, "end": end, "middle": middle})
    return plan


def _backfill(promtool: Path, sources: list[Path], data_dir: Path, log: Path) -> None:
    """Turn each OpenMetrics file into TSDB blocks, one promtool per file, in parallel."""
    procs = []
    with log.open("ab") as out:
        for source in sources:
            argv = [
                str(promtool),
                "tsdb",
                "create-blocks-from",
                # One pass over the input per block: blocks as long as the history allows.
                "--max-block-duration=720h",
                "openmetrics",
                "--quiet",
                str(source),
                str(data_dir),
            ]
            procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))
        codes = [proc.wait() for proc in procs]
    if any(codes):
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
        raise CommandError(f"promtool backfill failed (exit {max(codes)}); log {log}:\n{tail}")


def _tls_context(ca: Path, cert: Any, key: Any = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if key is None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    else:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _http_ok(url: str, verify: ssl.SSLContext | bool = True, timeout: float = 2.0) -> bool:
    response = httpx.get(url, verify=verify, timeout=timeout)
    return response.status_code == 200


def _teardown(state: SandboxState, report: Reporter) -> list[str]:
    stopped: list[str] = []
    for component in reversed(state.components):
        if processes.stop(component):
            stopped.append(component.name)
    # The record stays (marked down) so that the directory is known as a sandbox's: `up` may
    # reuse it, `status` reports everything stopped, and a second `down` has nothing to do.
    if state.path.exists():
        state.info["down"] = True
        state.save()
    if stopped:
        report(f"stopped {', '.join(stopped)}")
    return stopped


def down(directory: Path, report: Reporter = _stderr) -> list[str]:
    state = _load(directory)
    return _teardown(state, report)


def _load(directory: Path) -> SandboxState:
    try:
        state = SandboxState.load(directory.resolve())
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if state is None:
        raise CommandError(f"no sandbox in {directory} (no sandbox.json); nothing to do")
    return state


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int
    running: bool
    healthy: bool
    url: str
    detail: str


def status(directory: Path) -> list[ComponentStatus]:
    state = _load(directory)
    ca = Path(state.info.get("ca", state.directory / "pki" / "ca.crt"))
    admin = state.directory / "pki" / "admin.crt", state.directory / "pki" / "admin.key"
    out: list[ComponentStatus] = []
    for component in state.components:
        running = processes.is_running(component)
        healthy, detail = False, "not running"
        if running:
            healthy, detail = _probe(component, ca, admin)
        out.append(
            ComponentStatus(component.name, component.pid, running, healthy, component.url, detail)
        )
    return out


_HEALTH_PATHS = {
    "etcd": "/health",
    "kube-apiserver": "/readyz",
    "kube-controller-manager": "/healthz",
    "kube-scheduler": "/healthz",
    "kwok": "/healthz",
    "opa": "/health",
    "prometheus": "/-/ready",
    "webhook": "/readyz",
}


def _probe(component: Component, ca: Path, admin: tuple[Path, Path]) -> tuple[bool, str]:
    path = _HEALTH_PATHS.get(component.name)
    if not component.url or path is None:
        return True, "running"
    verify: ssl.SSLContext | bool = True
    if component.name == "kube-apiserver":
        verify = _tls_context(ca, admin[0], admin[1])
    elif component.name == "webhook":
        verify = ssl.create_default_context(cafile=str(ca))  # served with the sandbox CA
    elif component.url.startswith("https"):
        verify = False  # self-signed serving certificates of the controllers; loopback only
    try:
        response = httpx.get(component.url + path, verify=verify, timeout=3.0)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}"
    return response.status_code == 200, f"HTTP {response.status_code}"


def load_config(directory: Path) -> dict[str, Any]:
    """The kubeconfig of a running sandbox, parsed (used by tests and tools)."""
    state = _load(directory)
    data: dict[str, Any] = yaml.safe_load(Path(state.info["kubeconfig"]).read_text())
    return data
