"""`sizeguard scan`: krr-compatible right-sizing recommendations from Prometheus.

Reads the live workloads from the cluster (``--kubeconfig`` or ``KUBECONFIG``) and their
history from Prometheus (``--prometheus-url`` or ``PROMETHEUS_URL``), or takes an existing
krr JSON report with ``--from-krr FILE``; prints krr's JSON, YAML, CSV or a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from sizeguard.cost import PriceModel
from sizeguard.errors import CommandError
from sizeguard.policy import PolicyClient, default_opa_url
from sizeguard.prometheus import PrometheusClient
from sizeguard.recommend import STRATEGIES, ScanResult, opa_floors, scan, settings_for
from sizeguard.recommend.results import (
    prometheus_failures,
    scanned_nothing,
    workloads_without_data,
)
from sizeguard.report_formats import FORMATS, KrrParseError, describe_error, from_krr, render
from sizeguard.workloads import WorkloadReader

__all__ = ["register", "run_scan"]


def _flag(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """A krr-style flag, accepted with dashes and with underscores."""
    dashed, underscored = f"--{name.replace('_', '-')}", f"--{name}"
    names = [dashed] if dashed == underscored else [dashed, underscored]
    parser.add_argument(*names, dest=name, **kwargs)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "scan",
        help="recommend requests/limits (krr-compatible) and replicas from Prometheus",
        description=(
            "Right-sizing recommendations with krr's semantics, batched per namespace. "
            "KUBECONFIG and PROMETHEUS_URL are read from the environment when no flag is given."
        ),
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="repeatable; default all",
    )
    parser.add_argument(
        "--strategy",
        default="simple",
        type=lambda s: s.replace("_", "-"),
        choices=sorted(STRATEGIES),
        help="simple (default) or simple-limit",
    )
    parser.add_argument("--format", "-f", default="table", choices=FORMATS)
    parser.add_argument("--output", type=Path, metavar="FILE", help="write the report here")
    parser.add_argument("--from-krr", type=Path, metavar="FILE", help="read a krr JSON report")
    parser.add_argument("--prometheus-url", "-p", metavar="URL")
    parser.add_argument(
        "--prometheus-auth-header",
        "--prometheus_auth_header",
        metavar="VALUE",
        help="Authorization header for Prometheus, e.g. 'Bearer TOKEN' (as krr's)",
    )
    parser.add_argument("--kubeconfig", type=Path, metavar="FILE")
    parser.add_argument("--context", metavar="NAME")
    parser.add_argument("--cluster", metavar="NAME", help="cluster name shown in the report")
    parser.add_argument(
        "--prometheus-timeout", type=float, default=120.0, metavar="SECONDS", help="per query (120)"
    )
    parser.add_argument("--prometheus-retries", type=int, default=3, metavar="N")
    parser.add_argument("--max-concurrency", type=int, default=4, metavar="N")
    parser.add_argument(
        "--batch-pods", type=int, default=500, metavar="N", help="pods per batched query (500)"
    )
    parser.add_argument("--at", type=float, metavar="UNIX", help="evaluate at this time (now)")
    # krr's strategy settings.
    _flag(parser, "history_duration", type=float, metavar="HOURS", help="336")
    _flag(parser, "timeframe_duration", type=float, metavar="MINUTES", help="1.25")
    _flag(parser, "cpu_percentile", type=float, metavar="PCT", help="simple: 95")
    _flag(parser, "cpu_request", type=float, metavar="PCT", help="simple-limit: 66")
    _flag(parser, "cpu_limit", type=float, metavar="PCT", help="simple-limit: 96")
    _flag(parser, "memory_buffer_percentage", type=float, metavar="PCT", help="15")
    _flag(parser, "points_required", type=int, metavar="N", help="100")
    _flag(parser, "allow_hpa", action="store_true", default=None)
    _flag(parser, "use_oomkill_data", action="store_true", default=None)
    _flag(parser, "oom_memory_buffer_percentage", type=float, metavar="PCT", help="25")
    parser.add_argument("--cpu-min", "--cpu_min", dest="cpu_min", type=int, default=10, metavar="M")
    parser.add_argument(
        "--mem-min", "--mem_min", dest="mem_min", type=int, default=100, metavar="MI"
    )
    # Replicas and cost.
    parser.add_argument(
        "--target-utilization",
        type=float,
        default=100.0,
        metavar="PCT",
        help="CPU usage at the percentile as a share of the request, for the replica plans "
        "(100: krr's request at today's replicas; 0 disables the plans)",
    )
    parser.add_argument(
        "--opa-url",
        default=None,
        metavar="URL",
        help="OPA with sizeguard's policies, for the plans' availability floors "
        "(default: $OPA_URL or http://127.0.0.1:8181)",
    )
    parser.add_argument("--cpu-hourly-price", type=float, default=PriceModel.cpu_hourly)
    parser.add_argument(
        "--memory-gib-hourly-price", type=float, default=PriceModel.memory_gib_hourly
    )
    parser.add_argument("--hours-per-month", type=float, default=PriceModel.hours_per_month)
    parser.add_argument(
        "--colour", "--color", dest="colour", choices=("auto", "always", "never"), default="auto"
    )
    parser.set_defaults(func=_scan_command)


def run_scan(args: argparse.Namespace) -> ScanResult:
    if args.from_krr is not None:
        try:
            document = json.loads(args.from_krr.read_text())
            return from_krr(document)
        except OSError as exc:
            raise CommandError(f"cannot read {args.from_krr}: {exc.strerror}") from None
        except (ValueError, KrrParseError) as exc:
            raise CommandError(f"{args.from_krr} is not a krr JSON report: {exc}") from None
    url = args.prometheus_url or os.environ.get("PROMETHEUS_URL", "")
    if not url:
        raise CommandError("no Prometheus: pass --prometheus-url or set PROMETHEUS_URL")
    kubeconfig = args.kubeconfig or (
        Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
        if os.environ.get("KUBECONFIG")
        else None
    )
    if kubeconfig is None:
        default = Path.home() / ".kube" / "config"
        if not default.exists():
            raise CommandError("no cluster: pass --kubeconfig or set KUBECONFIG")
        kubeconfig = default
    overrides = {
        name: getattr(args, name)
        for name in (
            "history_duration",
            "timeframe_duration",
            "cpu_percentile",
            "cpu_request",
            "cpu_limit",
            "memory_buffer_percentage",
            "points_required",
            "allow_hpa",
            "use_oomkill_data",
            "oom_memory_buffer_percentage",
        )
    }
    try:
        settings = settings_for(args.strategy, **overrides)
    except ValueError as exc:
        raise CommandError(f"invalid strategy settings: {exc}") from None
    try:
        with WorkloadReader(kubeconfig, context=args.context) as reader:
            _check_namespaces(reader, args.namespace, kubeconfig)
            workloads = reader.workloads(args.namespace or None)
    except CommandError:
        raise
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read workloads through {kubeconfig}: {exc}") from None
    except Exception as exc:  # httpx errors carry the useful part in their message
        raise CommandError(f"cannot read workloads through {kubeconfig}: {exc}") from None

    async def go() -> ScanResult:
        async with PrometheusClient(
            url,
            timeout=args.prometheus_timeout,
            retries=args.prometheus_retries,
            max_concurrency=args.max_concurrency,
            headers={"Authorization": args.prometheus_auth_header}
            if args.prometheus_auth_header
            else None,
        ) as client:
            return await scan(
                client,
                workloads,
                settings,
                namespaces=args.namespace or None,
                at=args.at,
                cluster=args.cluster,
                cpu_min_value=args.cpu_min,
                memory_min_value=args.mem_min,
                batch_pods=args.batch_pods,
                target_utilization=(args.target_utilization / 100) or None,
                floors=opa_floors(policy, kubeconfig, args.context),
            )

    with PolicyClient(args.opa_url or default_opa_url()) as policy:
        return asyncio.run(go())


def _check_namespaces(reader: WorkloadReader, names: list[str], kubeconfig: Path) -> None:
    """Refuse namespaces the API server does not have: listing in one answers an empty list.

    A namespace the credentials may not read (403) is scanned as asked; its workloads, if
    any, are still listed."""
    unknown = [
        ns
        for ns in sorted(set(names))
        if reader.http.get(f"/api/v1/namespaces/{ns}").status_code == 404
    ]
    if unknown:
        listed = ", ".join(unknown)
        noun = "namespace" if len(unknown) == 1 else "namespaces"
        raise CommandError(
            f"the cluster of {kubeconfig} has no {noun} {listed}; nothing was scanned"
        )


def _notes(result: ScanResult, args: argparse.Namespace) -> list[str]:
    """What the report does not cover, as sentences for stderr."""
    notes = [describe_error(e).rstrip(".") + "." for e in result.errors]
    gaps = workloads_without_data(result)
    if gaps:
        workloads = len({(s.object.kind, s.object.namespace, s.object.name) for s in result.scans})
        shown = [f"{name} ({_gap_text(missing)})" for name, missing in list(gaps.items())[:20]]
        more = f" and {len(gaps) - 20} more" if len(gaps) > 20 else ""
        notes.append(
            f"{len(gaps)} of {workloads} workloads lack data in Prometheus (their values are "
            f'"?" where it is missing): {"; ".join(shown)}{more}.'
        )
    if not result.scans and args.from_krr is None:
        where = f"namespace {', '.join(args.namespace)}" if args.namespace else "the cluster"
        notes.append(f"there are no Deployments, StatefulSets or DaemonSets in {where}.")
    return notes


_GAPS = {
    "NoPrometheusPods": "Prometheus lists none of its pods",
    "NoPrometheusCPUMetrics": "no CPU metrics",
    "NoPrometheusMemoryMetrics": "no memory metrics",
}


def _gap_text(missing: list[str]) -> str:
    return ", ".join(_GAPS.get(w, w) for w in missing)


def _scan_command(args: argparse.Namespace) -> int:
    result = run_scan(args)
    if args.from_krr is None and scanned_nothing(result):
        # The whole-scan failures (pod discovery) name the cause once; per-namespace copies
        # of the same failure add nothing.
        failures = prometheus_failures(result)
        overall = [e for e in failures if not e.get("namespace")] or failures
        causes = "; ".join(dict.fromkeys(describe_error(e).rstrip(".") for e in overall))
        raise CommandError(
            f"Prometheus gave no data for any workload, so there is no report: {causes}."
        )
    prices = PriceModel(args.cpu_hourly_price, args.memory_gib_hourly_price, args.hours_per_month)
    to_file = args.output is not None
    colour = args.colour == "always" or (
        args.colour == "auto"
        and not to_file
        and sys.stdout.isatty()
        and "NO_COLOR" not in os.environ
    )
    text = render(result, args.format, colour=colour, prices=prices)
    if to_file:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    for note in _notes(result, args):
        print(f"sizeguard: {note}", file=sys.stderr)
    if args.from_krr is None and prometheus_failures(result):
        raise CommandError(
            "some Prometheus queries failed (the errors above); the report is written, with "
            '"?" for what they left without data'
        )
    return 0
