"""`sizeguard scan`: krr-compatible right-sizing recommendations from Prometheus.

Reads the live workloads from the cluster (``--kubeconfig`` or ``KUBECONFIG``) and their
history from Prometheus (``--prometheus-url`` or ``PROMETHEUS_URL``), or takes an existing
krr JSON report with ``--from-krr FILE``; prints krr's JSON, YAML, CSV or a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from sizeguard.cli.kubeconfig import kubeconfig_path
from sizeguard.cluster import Cluster, ClusterError, UnknownNamespacesError
from sizeguard.cost import PriceModel
from sizeguard.errors import CommandError
from sizeguard.policy import PolicyClient, default_opa_url
from sizeguard.prometheus import PrometheusClient
from sizeguard.recommend import STRATEGIES, ScanResult, opa_floors, scan, settings_for
from sizeguard.recommend.results import Coverage, coverage
from sizeguard.recommend.strategies import StrategySettings
from sizeguard.report_formats import FORMATS, KrrParseError, describe_error, from_krr, render
from sizeguard.texts import bad_namespace_names, no_namespaces
from sizeguard.workloads import Workload, WorkloadReader, WorkloadReadError

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
    parser.add_argument(
        "--cpu-min", "--cpu_min", dest="cpu_min", type=_millicores, default=10, metavar="M"
    )
    parser.add_argument(
        "--mem-min", "--mem_min", dest="mem_min", type=int, default=100, metavar="MI"
    )
    # Replicas and cost.
    parser.add_argument(
        "--target-utilization",
        type=_percent,
        default=None,
        metavar="PCT",
        help="make replica plans: CPU usage at the percentile as a share of the request "
        "(100, the default when plans are made: krr's request at today's replicas; 0: no plans)",
    )
    parser.add_argument(
        "--opa-url",
        default=None,
        metavar="URL",
        help="OPA with sizeguard's policies, for the plans' availability floors; with it (or "
        "$OPA_URL, or --target-utilization) the report has replica plans "
        "(default URL: $OPA_URL or http://127.0.0.1:8181)",
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


def _percent(text: str) -> float:
    """``--target-utilization``: 0 (no plans) or above 0 and at most 100."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value == 0 or 0 < value <= 100):  # NaN fails both
        raise argparse.ArgumentTypeError(
            f"{text!r:.40} is not a target utilization: give a percentage above 0 and at most "
            "100 (0: no replica plans)"
        )
    return value


def _millicores(text: str) -> int:
    """``--cpu-min``: whole millicores, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r:.40} is not a CPU minimum: give whole millicores, 0 or more (krr's is 10)"
        )
    return value


def run_scan(args: argparse.Namespace) -> ScanResult:
    if args.from_krr is not None:
        return _read_krr(args.from_krr)
    url = args.prometheus_url or os.environ.get("PROMETHEUS_URL", "")
    if not url:
        raise CommandError("no Prometheus: pass --prometheus-url or set PROMETHEUS_URL")
    problem = bad_namespace_names(args.namespace)
    if problem is not None:
        raise CommandError(f"{problem}; nothing was scanned")
    kubeconfig = _kubeconfig(args)
    settings = _settings(args)
    labels = _check_namespaces(kubeconfig, args.context, args.namespace)
    workloads = _read_workloads(kubeconfig, args.context, args.namespace)

    async def go() -> ScanResult:
        async with _prometheus(args, url) as client:
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
                target_utilization=plan_target(args),
                floors=opa_floors(policy, kubeconfig, args.context, labels),
            )

    with PolicyClient(args.opa_url or default_opa_url()) as policy:
        return asyncio.run(go())


def plan_target(args: argparse.Namespace) -> float | None:
    """The target utilization of the replica plans (a share), or None for no plans. Plans are
    made when asked for: ``--target-utilization`` (0: none), ``--opa-url`` or ``$OPA_URL``
    (their availability floors come from OPA). A krr-style scan without them needs no OPA
    and writes krr's report alone."""
    if args.target_utilization is not None:
        return (args.target_utilization / 100) or None
    if args.opa_url or os.environ.get("OPA_URL"):
        return 1.0
    return None


PLANS_SKIPPED = (
    "no replica plans: they need OPA for the availability floors; pass --opa-url or set "
    "OPA_URL (or --target-utilization PCT) to get them."
)


def _read_krr(path: Path) -> ScanResult:
    try:
        document = json.loads(path.read_text())
        return from_krr(document)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, KrrParseError) as exc:
        raise CommandError(f"{path} is not a krr JSON report: {exc}") from None


def _kubeconfig(args: argparse.Namespace) -> Path:
    """The kubeconfig to scan through (:func:`kubeconfig_path`), or a :class:`CommandError`."""
    path = kubeconfig_path(args.kubeconfig)
    if path is None:
        raise CommandError("no cluster: pass --kubeconfig or set KUBECONFIG")
    return path


_SETTINGS = (
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


def _settings(args: argparse.Namespace) -> StrategySettings:
    try:
        return settings_for(args.strategy, **{name: getattr(args, name) for name in _SETTINGS})
    except ValueError as exc:
        raise CommandError(f"invalid strategy settings: {exc}") from None


def _read_workloads(kubeconfig: Path, context: str | None, namespaces: list[str]) -> list[Workload]:
    try:
        with WorkloadReader(kubeconfig, context=context) as reader:
            return reader.workloads(namespaces or None)
    except WorkloadReadError as exc:
        raise CommandError(f"cannot read workloads through {kubeconfig}: {exc}") from None
    except OSError as exc:
        raise CommandError(f"cannot read {kubeconfig}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise CommandError(_not_a_kubeconfig(kubeconfig, exc)) from None
    except (ValueError, KeyError, TypeError) as exc:  # a kubeconfig without what it needs
        raise CommandError(f"cannot use {kubeconfig}: {exc}") from None


def _not_a_kubeconfig(kubeconfig: Path, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}" if mark is not None else ""
    return f"cannot use {kubeconfig}: it is not a kubeconfig (YAML error{where})"


def _prometheus(args: argparse.Namespace, url: str) -> PrometheusClient:
    return PrometheusClient(
        url,
        timeout=args.prometheus_timeout,
        retries=args.prometheus_retries,
        max_concurrency=args.max_concurrency,
        headers={"Authorization": args.prometheus_auth_header}
        if args.prometheus_auth_header
        else None,
    )


def _check_namespaces(
    kubeconfig: Path, context: str | None, names: list[str]
) -> dict[str, dict[str, str] | None]:
    """The labels of the namespaces asked for (the floors use them), refusing those the API
    server does not have: listing in one answers an empty list. One GET per namespace
    (:meth:`Cluster.namespace_labels`): a namespace the credentials may not read (403) is
    scanned as asked; its workloads, if any, are still listed."""
    if not names:
        return {}
    try:
        with Cluster.from_kubeconfig(kubeconfig, context=context) as cluster:
            return cluster.namespace_labels(names)
    except UnknownNamespacesError as exc:
        raise CommandError(
            f"the cluster of {kubeconfig} has {no_namespaces(exc.names)}; nothing was scanned"
        ) from None
    except ClusterError as exc:
        raise CommandError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise CommandError(_not_a_kubeconfig(kubeconfig, exc)) from None


def _notes(result: ScanResult, args: argparse.Namespace, covered: Coverage) -> list[str]:
    """What the report does not cover, as sentences for stderr."""
    notes = [describe_error(e).rstrip(".") + "." for e in result.errors]
    gaps = covered.gaps
    if gaps:
        shown = [f"{g.label} ({g.detail})" for g in gaps[:20]]
        more = f" and {len(gaps) - 20} more" if len(gaps) > 20 else ""
        notes.append(
            f"{len(gaps)} of {covered.workloads} workloads lack data in Prometheus (their values "
            f'are "?" where it is missing): {"; ".join(shown)}{more}.'
        )
    if args.from_krr is None and args.target_utilization is None and plan_target(args) is None:
        notes.append(PLANS_SKIPPED)
    if not result.scans and args.from_krr is None:
        where = f"namespace {', '.join(args.namespace)}" if args.namespace else "the cluster"
        notes.append(f"there are no Deployments, StatefulSets or DaemonSets in {where}.")
    return notes


def _scan_command(args: argparse.Namespace) -> int:
    result = run_scan(args)
    covered = coverage(result)
    if args.from_krr is None and covered.answered_nothing:
        # The whole-scan failures (pod discovery) name the cause once; per-namespace copies
        # of the same failure add nothing.
        failures = covered.failures
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
    for note in _notes(result, args, covered):
        print(f"sizeguard: {note}", file=sys.stderr)
    if args.from_krr is None and covered.failures:
        raise CommandError(
            "some Prometheus queries failed (the errors above); the report is written, with "
            '"?" for what they left without data'
        )
    return 0
