"""Scan reports: krr's JSON schema (read and written), YAML, CSV and a terminal table.

The JSON is krr's (``scans[].object``, ``recommended``, ``severity``, ``score``,
``strategy``, ...), so that existing krr consumers work; sizeguard's additions (replica
recommendations, cost, query statistics) live under one extra top-level key, ``sizeguard``,
that krr consumers ignore.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from typing import Any, get_args

import yaml

from sizeguard.cost import CostSummary, PriceModel, container_cost, summarize
from sizeguard.quantities import format_cpu, format_memory
from sizeguard.recommend import (
    Allocations,
    ObjectData,
    PodRef,
    RecommendationValue,
    Recommended,
    Scan,
    ScanResult,
    Severity,
    Value,
    score,
)
from sizeguard.recommend.results import ObjectWarning
from sizeguard.workloads import HpaInfo

__all__ = [
    "FORMATS",
    "KrrParseError",
    "costs",
    "describe_error",
    "from_krr",
    "render",
    "to_krr",
]

FORMATS = ("json", "table", "yaml", "csv")
_KRR_STRATEGY_NAMES = {"simple": "simple", "simple-limit": "simple_limit"}


class KrrParseError(ValueError):
    """A krr report that cannot be read (the message says where)."""


# ---------------------------------------------------------------------------------------------
# Writing


def _hpa_json(hpa: HpaInfo | None) -> dict[str, Any] | None:
    if hpa is None:
        return None
    return {
        "min_replicas": hpa.min_replicas,
        "max_replicas": hpa.max_replicas,
        "current_replicas": hpa.current_replicas,
        # krr requires a number here; an HPA whose controller has not written its status yet
        # wants the replicas it has (or its minimum when that is unknown too).
        "desired_replicas": _desired_replicas(hpa),
        "target_cpu_utilization_percentage": hpa.target_cpu_utilization_percentage,
        "target_memory_utilization_percentage": hpa.target_memory_utilization_percentage,
    }


def _desired_replicas(hpa: HpaInfo) -> int:
    if hpa.desired_replicas is not None:
        return hpa.desired_replicas
    return hpa.current_replicas if hpa.current_replicas is not None else hpa.min_replicas


def _values(values: Mapping[str, Value]) -> dict[str, Value]:
    return {k: (float(v) if isinstance(v, int | float) else v) for k, v in values.items()}


def _scan_json(scan: Scan) -> dict[str, Any]:
    obj = scan.object
    rec = scan.recommended
    return {
        "object": {
            "cluster": obj.cluster,
            "name": obj.name,
            "container": obj.container,
            "pods": [{"name": p.name, "deleted": p.deleted} for p in obj.pods],
            "hpa": _hpa_json(obj.hpa),
            "namespace": obj.namespace,
            "kind": obj.kind,
            "allocations": {
                "requests": _values(obj.allocations.requests),
                "limits": _values(obj.allocations.limits),
                "info": dict(obj.allocations.info),
            },
            "warnings": list(obj.warnings),
            "labels": dict(obj.labels),
            "annotations": dict(obj.annotations),
        },
        "recommended": {
            selector: {
                resource: {
                    "value": float(v.value) if isinstance(v.value, int | float) else v.value,
                    "severity": v.severity.value,
                }
                for resource, v in getattr(rec, selector).items()
            }
            for selector in ("requests", "limits")
        }
        | {"info": dict(rec.info)},
        "severity": scan.severity.value,
    }


def costs(result: ScanResult, prices: PriceModel | None = None) -> CostSummary:
    """Monthly cost now and as recommended, per container (current pods x requests)."""
    items = []
    for scan in result.scans:
        obj = scan.object
        replicas = sum(1 for p in obj.pods if not p.deleted)
        rec = scan.recommended.requests
        items.append(
            container_cost(
                namespace=obj.namespace,
                kind=obj.kind,
                name=obj.name,
                container=obj.container,
                replicas=replicas,
                current=(
                    obj.allocations.requests.get("cpu"),
                    obj.allocations.requests.get("memory"),
                ),
                recommended=(rec["cpu"].value, rec["memory"].value),
                prices=prices,
            )
        )
    return summarize(items, prices)


def to_krr(result: ScanResult, prices: PriceModel | None = None) -> dict[str, Any]:
    """The report as krr's JSON document (plus the ``sizeguard`` key)."""
    return {
        "scans": [_scan_json(s) for s in result.scans],
        "score": result.score,
        "resources": ["cpu", "memory"],
        "description": result.description,
        "strategy": {
            "name": _KRR_STRATEGY_NAMES.get(result.strategy, result.strategy),
            "settings": dict(result.settings),
        },
        "errors": list(result.errors),
        "clusterSummary": {},
        "sizeguard": {
            "replicas": [r.to_json() for r in result.replicas],
            "cost": costs(result, prices).to_json(),
            "stats": dict(result.stats),
        },
    }


# ---------------------------------------------------------------------------------------------
# Reading krr's JSON


def _expect(mapping: object, key: str, where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise KrrParseError(f"{where}: missing {key!r}")
    return mapping[key]


def _value(raw: object, where: str) -> Value:
    if raw is None or raw == "?":
        return None if raw is None else "?"
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise KrrParseError(f"{where}: not a resource value: {raw!r}")
    try:
        number = float(raw)
    except ValueError as exc:
        raise KrrParseError(f"{where}: not a resource value: {raw!r}") from exc
    return "?" if math.isnan(number) else number


def _warnings(raw: object, where: str) -> list[str]:
    """krr's object warnings; krr's model refuses a report with any other value."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise KrrParseError(f"{where}: not a list")
    known = get_args(ObjectWarning)
    for value in raw:
        if value not in known:
            raise KrrParseError(
                f"{where}: {value!r} is not one of krr's warnings ({', '.join(known)})"
            )
    return [str(w) for w in dict.fromkeys(raw)]


def _severity(raw: object, where: str) -> Severity:
    try:
        return Severity(str(raw).upper())
    except ValueError as exc:
        raise KrrParseError(f"{where}: unknown severity {raw!r}") from exc


def _hpa(raw: object) -> HpaInfo | None:
    if not isinstance(raw, dict):
        return None
    cpu = raw.get("target_cpu_utilization_percentage")
    memory = raw.get("target_memory_utilization_percentage")
    return HpaInfo(
        name="",
        min_replicas=int(raw.get("min_replicas") or 1),
        max_replicas=int(raw.get("max_replicas") or 1),
        current_replicas=raw.get("current_replicas"),
        desired_replicas=raw.get("desired_replicas"),
        target_cpu_utilization_percentage=None if cpu is None else float(cpu),
        target_memory_utilization_percentage=None if memory is None else float(memory),
        scales_on_cpu=cpu is not None,
        scales_on_memory=memory is not None,
    )


def from_krr(document: object) -> ScanResult:
    """A krr JSON report (as parsed JSON) as a :class:`ScanResult`."""
    raw_scans = _expect(document, "scans", "report")
    if not isinstance(raw_scans, list):
        raise KrrParseError("report: 'scans' is not a list")
    assert isinstance(document, dict)
    scans = []
    for index, item in enumerate(raw_scans):
        where = f"scans[{index}]"
        obj = _expect(item, "object", where)
        alloc = _expect(obj, "allocations", f"{where}.object")
        rec = _expect(item, "recommended", where)
        recommended = Recommended(
            requests={},
            limits={},
            info={k: (None if v is None else str(v)) for k, v in (rec.get("info") or {}).items()},
        )
        for selector in ("requests", "limits"):
            values = _expect(rec, selector, f"{where}.recommended")
            for resource in ("cpu", "memory"):
                entry = _expect(values, resource, f"{where}.recommended.{selector}")
                getattr(recommended, selector)[resource] = RecommendationValue(
                    _value(entry.get("value"), f"{where}.recommended.{selector}.{resource}"),
                    _severity(entry.get("severity", "UNKNOWN"), where),
                )
        scans.append(
            Scan(
                object=ObjectData(
                    cluster=obj.get("cluster"),
                    name=str(_expect(obj, "name", f"{where}.object")),
                    container=str(_expect(obj, "container", f"{where}.object")),
                    pods=[
                        PodRef(str(p.get("name", "")), bool(p.get("deleted", False)))
                        for p in obj.get("pods") or []
                    ],
                    hpa=_hpa(obj.get("hpa")),
                    namespace=str(_expect(obj, "namespace", f"{where}.object")),
                    kind=str(obj.get("kind", "")),
                    allocations=Allocations(
                        requests={
                            r: _value((alloc.get("requests") or {}).get(r), where)
                            for r in ("cpu", "memory")
                        },
                        limits={
                            r: _value((alloc.get("limits") or {}).get(r), where)
                            for r in ("cpu", "memory")
                        },
                        info=dict(alloc.get("info") or {}),
                    ),
                    warnings=_warnings(obj.get("warnings"), f"{where}.object.warnings"),
                    labels=dict(obj.get("labels") or {}),
                    annotations=dict(obj.get("annotations") or {}),
                ),
                recommended=recommended,
                severity=_severity(item.get("severity", "UNKNOWN"), where),
            )
        )
    strategy = document.get("strategy") or {}
    name = str(strategy.get("name", "simple")).replace("_", "-")
    result = ScanResult(
        scans=scans,
        strategy=name,
        settings=dict(strategy.get("settings") or {}),
        description=str(document.get("description", "")),
        errors=list(document.get("errors") or []),
        stats={"source": "krr"},
    )
    declared = document.get("score")
    if isinstance(declared, int) and declared != score([s.severity for s in scans]):
        result.errors.append(
            {"message": f"the report's score {declared} differs from its scans' {result.score}"}
        )
    return result


def describe_error(entry: Mapping[str, Any]) -> str:
    """One sentence for an entry of a report's ``errors``: sizeguard's carry a ``message``
    (and the ``namespace`` it concerns), krr's only a ``name`` and its details."""
    where = f"namespace {entry['namespace']}: " if entry.get("namespace") else ""
    if entry.get("message"):
        return f"{where}{entry['message']}"
    name = entry.get("name")
    if name == "HistoryRangeError":
        return (
            "krr could not tell how much history Prometheus holds (HistoryRangeError), "
            "so it computed the recommendations without checking that there is enough"
        )
    if name == "NotEnoughHistoryAvailable":
        retry = entry.get("retry_after") or "an unknown time"
        return (
            "Prometheus does not hold enough history yet for the strategy "
            f"(NotEnoughHistoryAvailable); krr suggests running again after {retry}"
        )
    details = {k: v for k, v in entry.items() if k not in ("name", "namespace")}
    extra = f" ({json.dumps(details, default=str, sort_keys=True)})" if details else ""
    if name:
        return f"{where}krr reported {name}{extra}"
    return f"{where}an error without a name or message{extra}"


# ---------------------------------------------------------------------------------------------
# Rendering

_COLOURS = {
    Severity.UNKNOWN: "\x1b[2m",
    Severity.GOOD: "\x1b[32m",
    Severity.OK: "\x1b[90m",
    Severity.WARNING: "\x1b[33m",
    Severity.CRITICAL: "\x1b[31m",
}
_RESET = "\x1b[0m"


def _human(value: Value, resource: str) -> str:
    if value is None:
        return "unset"
    if isinstance(value, str):
        return value
    if resource == "cpu":
        return format_cpu(math.ceil(round(value * 1000, 6)))
    return format_memory(math.ceil(value))


def _cell(current: Value, rec: RecommendationValue, resource: str, colour: bool) -> str:
    text = f"{_human(current, resource)} -> {_human(rec.value, resource)}"
    if colour:
        return f"{_COLOURS[rec.severity]}{text}{_RESET}"
    return text


def _table(result: ScanResult, colour: bool, prices: PriceModel | None) -> str:
    headers = [
        "#",
        "Namespace",
        "Name",
        "Pods",
        "Old Pods",
        "Type",
        "Container",
        "Severity",
        "CPU Requests",
        "CPU Limits",
        "Memory Requests",
        "Memory Limits",
        "$/month saved",
        "Info",
    ]
    summary = costs(result, prices)
    rows: list[list[str]] = []
    widths = [len(h) for h in headers]
    plain_rows: list[list[str]] = []
    for index, (scan, cost) in enumerate(zip(result.scans, summary.items, strict=True), 1):
        obj, rec = scan.object, scan.recommended
        info = "; ".join(f"{k}: {v}" for k, v in rec.info.items() if v)
        cells = [
            str(index),
            obj.namespace,
            obj.name,
            str(sum(1 for p in obj.pods if not p.deleted)),
            str(sum(1 for p in obj.pods if p.deleted)),
            obj.kind,
            obj.container,
        ]
        resource_cells = [
            (obj.allocations.requests.get("cpu"), rec.requests["cpu"], "cpu"),
            (obj.allocations.limits.get("cpu"), rec.limits["cpu"], "cpu"),
            (obj.allocations.requests.get("memory"), rec.requests["memory"], "memory"),
            (obj.allocations.limits.get("memory"), rec.limits["memory"], "memory"),
        ]
        plain = [
            *cells,
            scan.severity.value,
            *[_cell(c, r, res, False) for c, r, res in resource_cells],
            f"{cost.savings_monthly:.2f}",
            info,
        ]
        shown = [
            *cells,
            f"{_COLOURS[scan.severity]}{scan.severity.value}{_RESET}"
            if colour
            else scan.severity.value,
            *[_cell(c, r, res, colour) for c, r, res in resource_cells],
            f"{cost.savings_monthly:.2f}",
            info,
        ]
        widths = [max(w, len(p)) for w, p in zip(widths, plain, strict=True)]
        plain_rows.append(plain)
        rows.append(shown)
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for plain, shown in zip(plain_rows, rows, strict=True):
        padded = [s + " " * (w - len(p)) for s, p, w in zip(shown, plain, widths, strict=True)]
        lines.append("  ".join(padded).rstrip())
    lines.append("")
    lines.append(
        f"Score: {result.score}/100  ({len(result.scans)} containers, strategy {result.strategy})"
    )
    lines.append(
        f"Requests cost ${summary.current_monthly:,.2f}/month now, "
        f"${summary.recommended_monthly:,.2f}/month as recommended "
        f"(saves ${summary.savings_monthly:,.2f}/month)"
    )
    if result.replicas:
        lines.append("")
        lines.append("Replicas:")
        for r in result.replicas:
            if r.recommended_replicas is not None:
                change = f"replicas {r.current_replicas} -> {r.recommended_replicas}"
            else:
                assert r.hpa_min_replicas is not None and r.hpa_max_replicas is not None
                change = (
                    f"HPA minReplicas {r.hpa_min_replicas[0]} -> {r.hpa_min_replicas[1]}, "
                    f"maxReplicas {r.hpa_max_replicas[0]} -> {r.hpa_max_replicas[1]}"
                )
            lines.append(f"  {r.kind} {r.namespace}/{r.name}: {change} ({r.reason})")
    lines.extend(f"error: {describe_error(error)}" for error in result.errors)
    return "\n".join(lines) + "\n"


# krr's `csv` format: its columns, one row per container, the workload's cells only on the
# first row of each run of rows for one (cluster, namespace, name), and its cell texts.
_CSV_COLUMNS = ["Namespace", "Name", "Pods", "Old Pods", "Type", "Container", "Severity"]
_CSV_RESOURCES = (("cpu", "CPU"), ("memory", "Memory"))


def _krr_units(x: float) -> str:
    """krr's ``resource_units.format`` (binary units, for cores and bytes alike)."""
    if x < 1:
        return f"{int(x * 1000)}m"
    if x < 1024:
        return str(x)
    whole = int(x)
    units = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
    power = 0  # a unit is kept until the value reaches ten of the next one
    while power < len(units) - 1 and whole / 1024 ** (power + 1) >= 10:
        power += 1
    return f"{whole / 1024**power:.0f}{units[power]}"


def _krr_value(value: Value) -> str:
    if value is None:
        return "unset"
    if isinstance(value, str):
        return "?"
    return _krr_units(float(value))


def _krr_diff(current: Value, rec: Value, pods: int = 1) -> str:
    """``(+|-)|recommended - current| x pods``; unset counts as 0, and "?" has no diff."""
    if isinstance(rec, str):
        return ""
    delta = (rec if rec is not None else 0.0) - (
        current if isinstance(current, int | float) else 0.0
    )
    return ("+" if delta >= 0 else "-") + _krr_value(abs(delta) * pods)


def _krr_cell(current: Value, rec: Value, selector: str) -> str:
    if current is None and rec is None:
        return "unset"
    diff = _krr_diff(current, rec) if selector == "requests" else ""
    prefix = f"({diff}) " if diff else ""
    return f"{prefix}{_krr_value(current)} -> {_krr_value(rec)}"


def _csv(result: ScanResult) -> str:
    columns = list(_CSV_COLUMNS)
    for _, title in _CSV_RESOURCES:
        columns += [f"{title} Diff", f"{title} Requests", f"{title} Limits"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns)  # krr's dialect: excel, \r\n line ends
    writer.writeheader()
    previous: tuple[str | None, str, str] | None = None
    for scan in result.scans:
        obj, rec = scan.object, scan.recommended
        current_pods = sum(1 for p in obj.pods if not p.deleted)
        first = previous != (obj.cluster, obj.namespace, obj.name)
        previous = (obj.cluster, obj.namespace, obj.name)
        row: dict[str, str] = {
            "Namespace": obj.namespace if first else "",
            "Name": obj.name if first else "",
            "Pods": str(current_pods) if first else "",
            "Old Pods": str(len(obj.pods) - current_pods) if first else "",
            "Type": obj.kind if first else "",
            "Container": obj.container,
            "Severity": scan.severity.value,
        }
        for resource, title in _CSV_RESOURCES:
            request = obj.allocations.requests.get(resource)
            limit = obj.allocations.limits.get(resource)
            row[f"{title} Diff"] = _krr_diff(request, rec.requests[resource].value, current_pods)
            row[f"{title} Requests"] = _krr_cell(request, rec.requests[resource].value, "requests")
            row[f"{title} Limits"] = _krr_cell(limit, rec.limits[resource].value, "limits")
        writer.writerow(row)
    return buffer.getvalue()


def render(
    result: ScanResult, fmt: str, *, colour: bool = False, prices: PriceModel | None = None
) -> str:
    if fmt == "json":
        return json.dumps(to_krr(result, prices), indent=1) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(to_krr(result, prices), sort_keys=False)
    if fmt == "csv":
        return _csv(result)
    if fmt == "table":
        return _table(result, colour, prices)
    raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
