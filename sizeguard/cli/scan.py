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
from sizeguard.prometheus import PrometheusClient
from sizeguard.recommend import STRATEGIES, ScanResult, scan, settings_for
from sizeguard.report_formats import FORMATS, KrrParseError, from_krr, render
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
        default=70.0,
        metavar="PCT",
        help="CPU utilization target for replica recommendations (70; 0 disables them)",
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
            workloads = reader.workloads(args.namespace or None)
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
            )

    return asyncio.run(go())


def _scan_command(args: argparse.Namespace) -> int:
    result = run_scan(args)
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
    return 0
