"""`sizeguard sandbox up|status|down`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sizeguard.sandbox import lifecycle


def register(subparsers: Any) -> None:
    sandbox = subparsers.add_parser(
        "sandbox",
        help="run a real local control plane with OPA and Prometheus for tests and the demo",
        description=(
            "A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, "
            "and kube-scheduler + kwok when built), OPA and Prometheus with 14 days of "
            "synthetic history, all on 127.0.0.1. Tools come from scripts/install-tools."
        ),
    )
    actions = sandbox.add_subparsers(dest="action", metavar="ACTION", required=True)

    up = actions.add_parser(
        "up", help="start a sandbox in the background and wait until it is ready"
    )
    up.add_argument(
        "--dir", required=True, type=Path, help="directory for its state, logs and kubeconfig"
    )
    up.add_argument(
        "--workloads",
        type=_positive,
        default=None,
        help="grow the estate to N workloads with generated Deployments (for benchmarks)",
    )
    up.add_argument("--seed", type=int, default=42, help="seed of the estate and its history (42)")
    up.add_argument(
        "--policies",
        type=Path,
        default=lifecycle.DEFAULT_POLICIES,
        help="Rego policies OPA loads and watches (default: the repository's policies/)",
    )
    up.add_argument(
        "--history-days",
        type=_positive,
        default=lifecycle.HISTORY_DAYS,
        help="days of history (14)",
    )
    up.add_argument(
        "--metrics-step",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help=(
            "sample interval of the history (default 60, raised automatically for large estates "
            f"to keep the backfill under {lifecycle.SAMPLE_BUDGET:,} samples)"
        ),
    )
    up.add_argument(
        "--no-kwok",
        action="store_true",
        help="do not run kube-scheduler and kwok (pods then stay Pending)",
    )
    up.add_argument(
        "--with-webhook",
        action="store_true",
        help=(
            "also run sizeguard's admission webhook (keys in DIR/keys) and register it with a "
            "ValidatingWebhookConfiguration"
        ),
    )
    up.set_defaults(func=_up)

    status = actions.add_parser("status", help="report each component's health")
    status.add_argument("--dir", required=True, type=Path)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=_status)

    down = actions.add_parser("down", help="stop everything the sandbox started, and nothing else")
    down.add_argument("--dir", required=True, type=Path)
    down.set_defaults(func=_down)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _up(args: argparse.Namespace) -> int:
    state = lifecycle.up(
        lifecycle.UpOptions(
            directory=args.dir,
            workloads=args.workloads,
            seed=args.seed,
            policies=args.policies.resolve(),
            history_days=args.history_days,
            kwok=not args.no_kwok,
            metrics_step=args.metrics_step,
            webhook=args.with_webhook,
        )
    )
    for name, url in state.urls.items():
        print(f"{name:<11} {url}")
    print(f"kubeconfig  {state.info['kubeconfig']}")
    if "webhook" in state.info:
        print(f"keys        {state.info['webhook']['keys']}   # sign approvals with this key dir")
    what = "KUBECONFIG, PROMETHEUS_URL, OPA_URL" + (
        ", SIZEGUARD_KEY_DIR" if "webhook" in state.info else ""
    )
    print(f"\nsource {state.directory / 'env'}   # sets {what}")
    return 0


def _status(args: argparse.Namespace) -> int:
    rows = lifecycle.status(args.dir)
    if args.json:
        print(json.dumps([row.__dict__ for row in rows], indent=2))
    else:
        print(f"{'COMPONENT':<24} {'PID':>8}  {'STATE':<9} {'URL':<28} DETAIL")
        for row in rows:
            state = "healthy" if row.healthy else ("running" if row.running else "stopped")
            print(f"{row.name:<24} {row.pid:>8}  {state:<9} {row.url:<28} {row.detail}")
    return 0 if rows and all(r.healthy for r in rows) else 1


def _down(args: argparse.Namespace) -> int:
    stopped = lifecycle.down(args.dir)
    if not stopped:
        print("nothing was running", file=sys.stderr)
    return 0
