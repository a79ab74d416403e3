"""Monthly cost of resource requests, and the savings of a recommendation.

The price model is OpenCost's default (custom pricing) one: 0.031611 $ per vCPU-hour and
0.004237 $ per GiB-hour of memory, 730 hours a month; every figure is configurable. Cost is
charged on requests (what the scheduler reserves), for every replica.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GIB",
    "ContainerCost",
    "CostSummary",
    "PriceModel",
    "container_cost",
    "summarize",
]

GIB = 1024**3


@dataclass(frozen=True)
class PriceModel:
    cpu_hourly: float = 0.031611  # $ per vCPU (core) hour
    memory_gib_hourly: float = 0.004237  # $ per GiB hour
    hours_per_month: float = 730.0

    def monthly(self, cpu_cores: float, memory_bytes: float) -> float:
        hourly = cpu_cores * self.cpu_hourly + memory_bytes / GIB * self.memory_gib_hourly
        return hourly * self.hours_per_month


@dataclass(frozen=True)
class ContainerCost:
    namespace: str
    kind: str
    name: str
    container: str
    replicas: int
    current_monthly: float
    recommended_monthly: float

    @property
    def savings_monthly(self) -> float:
        return self.current_monthly - self.recommended_monthly

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "kind": self.kind,
            "name": self.name,
            "container": self.container,
            "replicas": self.replicas,
            "current_monthly": round(self.current_monthly, 2),
            "recommended_monthly": round(self.recommended_monthly, 2),
            "savings_monthly": round(self.savings_monthly, 2),
        }


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def container_cost(
    *,
    namespace: str,
    kind: str,
    name: str,
    container: str,
    replicas: int,
    current: tuple[object, object],
    recommended: tuple[object, object],
    prices: PriceModel | None = None,
) -> ContainerCost:
    """Cost of (cpu cores, memory bytes) requests now and as recommended, for all replicas.

    An unset request costs nothing; an undefined recommendation ("?") keeps the current value,
    so that it neither saves nor costs anything.
    """
    model = prices or PriceModel()
    cpu_now, mem_now = _number(current[0]) or 0.0, _number(current[1]) or 0.0
    cpu_rec, mem_rec = _number(recommended[0]), _number(recommended[1])
    cpu_new = cpu_now if cpu_rec is None else cpu_rec
    mem_new = mem_now if mem_rec is None else mem_rec
    return ContainerCost(
        namespace=namespace,
        kind=kind,
        name=name,
        container=container,
        replicas=replicas,
        current_monthly=model.monthly(cpu_now, mem_now) * replicas,
        recommended_monthly=model.monthly(cpu_new, mem_new) * replicas,
    )


@dataclass(frozen=True)
class CostSummary:
    items: list[ContainerCost]
    prices: PriceModel

    @property
    def current_monthly(self) -> float:
        return sum(i.current_monthly for i in self.items)

    @property
    def recommended_monthly(self) -> float:
        return sum(i.recommended_monthly for i in self.items)

    @property
    def savings_monthly(self) -> float:
        return self.current_monthly - self.recommended_monthly

    def to_json(self) -> dict[str, Any]:
        return {
            "currency": "USD",
            "prices": {
                "cpu_core_hour": self.prices.cpu_hourly,
                "memory_gib_hour": self.prices.memory_gib_hourly,
                "hours_per_month": self.prices.hours_per_month,
            },
            "current_monthly": round(self.current_monthly, 2),
            "recommended_monthly": round(self.recommended_monthly, 2),
            "savings_monthly": round(self.savings_monthly, 2),
            "items": [i.to_json() for i in self.items],
        }


def summarize(items: Iterable[ContainerCost], prices: PriceModel | None = None) -> CostSummary:
    return CostSummary(list(items), prices or PriceModel())
