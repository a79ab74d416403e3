"""OpenCost's default prices, per container and in total."""

from __future__ import annotations

import pytest

from sizeguard.cost import GIB, PriceModel, container_cost, summarize


def test_default_prices_are_opencosts() -> None:
    prices = PriceModel()
    assert (prices.cpu_hourly, prices.memory_gib_hourly, prices.hours_per_month) == (
        0.031611,
        0.004237,
        730.0,
    )
    assert prices.monthly(1.0, GIB) == pytest.approx((0.031611 + 0.004237) * 730)


def test_savings_per_change_and_in_total() -> None:
    a = container_cost(
        namespace="n",
        kind="Deployment",
        name="a",
        container="c",
        replicas=2,
        current=(2.0, 4.0 * GIB),
        recommended=(0.5, 1.0 * GIB),
    )
    assert a.current_monthly == pytest.approx(2 * (2 * 0.031611 + 4 * 0.004237) * 730)
    assert a.savings_monthly == pytest.approx(2 * (1.5 * 0.031611 + 3 * 0.004237) * 730)
    b = container_cost(
        namespace="n",
        kind="Deployment",
        name="b",
        container="c",
        replicas=1,
        current=(0.1, GIB),
        recommended=("?", 2.0 * GIB),  # unknown CPU keeps today's value; memory grows
    )
    assert b.savings_monthly == pytest.approx(-0.004237 * 730)
    total = summarize([a, b])
    assert total.savings_monthly == pytest.approx(a.savings_monthly + b.savings_monthly)
    assert total.to_json()["items"][1]["savings_monthly"] == round(b.savings_monthly, 2)


def test_unset_requests_cost_nothing_and_prices_are_configurable() -> None:
    cheap = PriceModel(cpu_hourly=1.0, memory_gib_hourly=0.0, hours_per_month=10)
    cost = container_cost(
        namespace="n",
        kind="Deployment",
        name="a",
        container="c",
        replicas=3,
        current=(None, None),
        recommended=(0.25, GIB),
        prices=cheap,
    )
    assert cost.current_monthly == 0
    assert cost.recommended_monthly == pytest.approx(3 * 0.25 * 10)
