"""krr's strategies as pure functions: the settings, the per-container proposals from
per-pod data, krr's rounding, severity and score. Nothing here talks to Prometheus."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sizeguard.workloads import HpaInfo

MIB = 1024**2
ResourceName = Literal["cpu", "memory"]
RESOURCES: tuple[ResourceName, ...] = ("cpu", "memory")
Value = float | Literal["?"] | None


# ---------------------------------------------------------------------------------------------
# Settings


class StrategySettings(BaseModel):
    """What every krr strategy takes (names and units as krr's: hours, minutes, percent)."""

    model_config = ConfigDict(extra="forbid")

    history_duration: float = Field(336, gt=0, description="hours of history to look at")
    timeframe_duration: float = Field(1.25, gt=0, description="step of the history, in minutes")
    memory_buffer_percentage: float = Field(15, gt=0)
    points_required: int = Field(100, ge=1)
    allow_hpa: bool = False
    use_oomkill_data: bool = False
    oom_memory_buffer_percentage: float = Field(25, ge=0)

    @property
    def history_seconds(self) -> int:
        return round(self.history_duration * 3600)

    @property
    def step_seconds(self) -> int:
        # krr formats the step as whole seconds: f"{round(step.total_seconds())}s".
        return max(1, round(self.timeframe_duration * 60))


class SimpleSettings(StrategySettings):
    cpu_percentile: float = Field(95, gt=0, le=100)


class SimpleLimitSettings(StrategySettings):
    cpu_request: float = Field(66, gt=0, le=100)
    cpu_limit: float = Field(96, gt=0, le=100)


STRATEGIES: dict[str, type[StrategySettings]] = {
    "simple": SimpleSettings,
    "simple-limit": SimpleLimitSettings,
}


def settings_for(strategy: str, **overrides: Any) -> StrategySettings:
    """The settings of a strategy with the given (non-None) overrides."""
    name = strategy.replace("_", "-")
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
    model = STRATEGIES[name]
    known = set(model.model_fields)
    return model(**{k: v for k, v in overrides.items() if v is not None and k in known})


def strategy_name(settings: StrategySettings) -> str:
    return "simple-limit" if isinstance(settings, SimpleLimitSettings) else "simple"


def describe(settings: StrategySettings) -> str:
    if isinstance(settings, SimpleLimitSettings):
        cpu = (
            f"CPU request: {settings.cpu_request}% percentile, "
            f"limit: {settings.cpu_limit}% percentile"
        )
    else:
        assert isinstance(settings, SimpleSettings)
        cpu = f"CPU request: {settings.cpu_percentile}% percentile, limit: unset"
    buffer = settings.memory_buffer_percentage
    text = (
        f"{cpu}\nMemory request: max + {buffer}%, limit: max + {buffer}%\n"
        f"History: {settings.history_duration} hours\nStep: {settings.timeframe_duration} minutes\n"
    )
    if not settings.allow_hpa:
        text += (
            "\nThis strategy does not work with objects with HPA defined (Horizontal Pod "
            'Autoscaler).\nIf HPA is defined for CPU or Memory, the strategy will return "?" '
            "for that resource.\nYou can override this behaviour by passing the --allow-hpa flag\n"
        )
    return text


# ---------------------------------------------------------------------------------------------
# Severity, rounding, score (krr's rules)


class Severity(StrEnum):
    UNKNOWN = "UNKNOWN"
    GOOD = "GOOD"
    OK = "OK"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


def _bands(diff: float, critical: float, warning: float, ok: float) -> Severity:
    if diff >= critical:
        return Severity.CRITICAL
    if diff >= warning:
        return Severity.WARNING
    if diff >= ok:
        return Severity.OK
    return Severity.GOOD


def cpu_severity(current: float | None, recommended: float | None) -> Severity:
    if current is None and recommended is None:
        return Severity.GOOD
    if current is None or recommended is None:
        return Severity.WARNING
    return _bands(abs(current - recommended), 0.5, 0.25, 0.1)


def memory_severity(current: float | None, recommended: float | None) -> Severity:
    if current is None and recommended is None:
        return Severity.GOOD
    if current is None or recommended is None:
        return Severity.WARNING
    return _bands(abs(current - recommended) / MIB, 500, 250, 100)


def severity(resource: ResourceName, current: Value, recommended: Value) -> Severity:
    if isinstance(current, str) or isinstance(recommended, str):
        return Severity.UNKNOWN
    calc = cpu_severity if resource == "cpu" else memory_severity
    return calc(current, recommended)


def round_value(
    value: float | None,
    resource: ResourceName,
    cpu_min_value: int = 10,
    memory_min_value: int = 100,
) -> Value:
    """krr's rounding: CPU up to 1 m, memory up to 1 MiB, then the minimums; NaN is "?"."""
    if value is None:
        return None
    if math.isnan(value):
        return "?"
    if resource == "cpu":
        rounded = math.ceil(value * 1000) / 1000
        return max(rounded, cpu_min_value / 1000)
    rounded = float(math.ceil(value / MIB) * MIB)
    return max(rounded, float(memory_min_value * MIB))


def score(severities: Sequence[Severity]) -> int:
    """krr's score: 100 minus 70 points per WARNING and 100 per CRITICAL, averaged."""
    if not severities:
        return 0
    cost = sum(
        0.7 if s is Severity.WARNING else 1.0 if s is Severity.CRITICAL else 0.0 for s in severities
    )
    return int((len(severities) - cost) / len(severities) * 100)


# ---------------------------------------------------------------------------------------------
# The strategies, as pure functions of the per-pod data


@dataclass
class ContainerData:
    """What Prometheus says about one container of one workload, by pod name."""

    cpu: dict[str, float] = field(default_factory=dict)  # simple: each pod's percentile
    cpu_samples: dict[str, Sequence[float]] = field(default_factory=dict)  # simple-limit
    cpu_points: dict[str, float] = field(default_factory=dict)
    cpu_mean: dict[str, float] = field(default_factory=dict)
    memory_max: dict[str, float] = field(default_factory=dict)
    memory_points: dict[str, float] = field(default_factory=dict)
    oom_limit: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Proposal:
    request: float | None  # NaN: undefined ("?")
    limit: float | None
    info: str | None = None

    @classmethod
    def undefined(cls, info: str) -> Proposal:
        return cls(math.nan, math.nan, info)


def _percentile(values: Sequence[float], q: float) -> float:
    """numpy's default percentile (linear interpolation between closest ranks)."""
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _bad(values: dict[str, float]) -> str | None:
    for pod, value in sorted(values.items()):
        if not math.isfinite(value):
            return f"Prometheus returned {value} for pod {pod}"
    return None


def gate(
    data: dict[str, Any], points: dict[str, float], settings: StrategySettings, hpa_blocks: bool
) -> str | None:
    if not data:
        return "No data"
    counted = sum(v for v in points.values() if math.isfinite(v))
    if counted < settings.points_required:
        return "Not enough data"
    if hpa_blocks and not settings.allow_hpa:
        return "HPA detected"
    return None


def propose(
    settings: StrategySettings, data: ContainerData, hpa: HpaInfo | None
) -> dict[ResourceName, Proposal]:
    """krr's run(): the raw (unrounded) CPU and memory proposals for one container."""
    out: dict[ResourceName, Proposal] = {}
    computers: dict[ResourceName, Callable[..., Proposal]] = {"cpu": _cpu, "memory": _memory}
    for resource in RESOURCES:
        failed = failed_metrics(data.errors, resource, settings)
        if failed:
            out[resource] = Proposal.undefined("Prometheus error: " + "; ".join(failed))
        else:
            out[resource] = computers[resource](settings, data, hpa)
    return out


_NEEDS: dict[ResourceName, frozenset[str]] = {
    "cpu": frozenset({"pod discovery", "cpu", "cpu_points"}),
    "memory": frozenset({"pod discovery", "memory_max", "memory_points"}),
}


def failed_metrics(
    errors: Sequence[str], resource: ResourceName, settings: StrategySettings
) -> list[str]:
    """The errors (``"<metric>: <message>"``) that leave ``resource`` without its data."""
    needed = set(_NEEDS[resource])
    if resource == "memory" and settings.use_oomkill_data:
        needed.add("oom_limit")
    return sorted({e for e in errors if e.split(":", 1)[0] in needed})


def _cpu(settings: StrategySettings, data: ContainerData, hpa: HpaInfo | None) -> Proposal:
    source: dict[str, Any] = (
        data.cpu_samples if isinstance(settings, SimpleLimitSettings) else data.cpu
    )
    blocked = gate(source, data.cpu_points, settings, hpa is not None and hpa.scales_on_cpu)
    if blocked:
        return Proposal.undefined(blocked)
    if isinstance(settings, SimpleLimitSettings):
        pooled = [v for values in data.cpu_samples.values() for v in values]
        bad = next((v for v in pooled if not math.isfinite(v)), None)
        if bad is not None or not pooled:
            return Proposal.undefined(f"Prometheus returned {bad} in the CPU samples")
        return Proposal(
            _percentile(pooled, settings.cpu_request), _percentile(pooled, settings.cpu_limit)
        )
    bad_info = _bad(data.cpu)
    if bad_info:
        return Proposal.undefined(bad_info)
    return Proposal(max(data.cpu.values()), None)


def _memory(settings: StrategySettings, data: ContainerData, hpa: HpaInfo | None) -> Proposal:
    oom = 0.0
    if settings.use_oomkill_data:
        finite = [v for v in data.oom_limit.values() if math.isfinite(v)]
        oom = max(finite, default=0.0)
    blocked = gate(
        data.memory_max, data.memory_points, settings, hpa is not None and hpa.scales_on_memory
    )
    if blocked:
        return Proposal.undefined(blocked)
    bad_info = _bad(data.memory_max)
    if bad_info:
        return Proposal.undefined(bad_info)
    value = max(
        max(data.memory_max.values()) * (1 + settings.memory_buffer_percentage / 100),
        oom * (1 + settings.oom_memory_buffer_percentage / 100),
    )
    return Proposal(value, value, "OOMKill detected" if oom else None)
