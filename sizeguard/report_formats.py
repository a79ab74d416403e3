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
from typing import Any

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
from sizeguard.workloads import HpaInfo

__all__ = [
    "FORMATS",
    "KrrParseError",
    "costs",
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
        "desired_replicas": hpa.desired_replicas,
        "target_cpu_utilization_percentage": hpa.target_cpu_utilization_percentage,
        "target_memory_utilization_percentage": hpa.target_memory_utilization_percentage,
    }


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
                    warnings=[str(w) for w in obj.get("warnings") or []],
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
    for error in result.errors:
        where = f"[{error['namespace']}] " if error.get("namespace") else ""
        lines.append(f"error: {where}{error.get('message', '')}")
    return "\n".join(lines) + "\n"


_CSV_COLUMNS = [
    "namespace",
    "kind",
    "name",
    "container",
    "pods",
    "old_pods",
    "severity",
    "cpu_request",
    "cpu_request_recommended",
    "cpu_request_severity",
    "cpu_limit",
    "cpu_limit_recommended",
    "cpu_limit_severity",
    "memory_request",
    "memory_request_recommended",
    "memory_request_severity",
    "memory_limit",
    "memory_limit_recommended",
    "memory_limit_severity",
    "info_cpu",
    "info_memory",
    "monthly_savings",
]


def _csv(result: ScanResult, prices: PriceModel | None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    summary = costs(result, prices)
    for scan, cost in zip(result.scans, summary.items, strict=True):
        obj, rec = scan.object, scan.recommended
        row: list[object] = [
            obj.namespace,
            obj.kind,
            obj.name,
            obj.container,
            sum(1 for p in obj.pods if not p.deleted),
            sum(1 for p in obj.pods if p.deleted),
            scan.severity.value,
        ]
        for selector, resource in (
            ("requests", "cpu"),
            ("limits", "cpu"),
            ("requests", "memory"),
            ("limits", "memory"),
        ):
            current = getattr(obj.allocations, selector).get(resource)
            value = getattr(rec, selector)[resource]
            row += ["" if current is None else current, "" if value.value is None else value.value]
            row.append(value.severity.value)
        row += [
            rec.info.get("cpu") or "",
            rec.info.get("memory") or "",
            f"{cost.savings_monthly:.2f}",
        ]
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
        return _csv(result, prices)
    if fmt == "table":
        return _table(result, colour, prices)
    raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
