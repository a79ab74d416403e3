"""krr's formulas as pure functions: strategies, rounding, severity, score, the HPA formula."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sizeguard import recommend
from sizeguard.recommend import (
    ContainerData,
    Severity,
    collection,
    cpu_severity,
    hpa_desired_replicas,
    memory_severity,
    propose,
    round_value,
    score,
    settings_for,
)
from sizeguard.workloads import HpaInfo

MI = 2**20


def _hpa(cpu: bool = True, memory: bool = False) -> HpaInfo:
    return HpaInfo("h", 2, 10, 3, 3, 70.0 if cpu else None, 80.0 if memory else None, cpu, memory)


def _data(**kwargs: object) -> ContainerData:
    base: dict[str, object] = {
        "cpu": {"a": 0.2, "b": 0.35},
        "cpu_points": {"a": 60, "b": 60},
        "memory_max": {"a": 300 * MI, "b": 200 * MI},
        "memory_points": {"a": 60, "b": 60},
    }
    base.update(kwargs)
    return ContainerData(**base)  # type: ignore[arg-type]


def test_defaults_are_krrs() -> None:
    simple = settings_for("simple")
    assert simple.model_dump() == {
        "history_duration": 336,
        "timeframe_duration": 1.25,
        "memory_buffer_percentage": 15,
        "points_required": 100,
        "allow_hpa": False,
        "use_oomkill_data": False,
        "oom_memory_buffer_percentage": 25,
        "cpu_percentile": 95,
    }
    assert simple.step_seconds == 75 and simple.history_seconds == 14 * 86_400
    limit = settings_for("simple_limit")
    assert isinstance(limit, recommend.SimpleLimitSettings)
    assert (limit.cpu_request, limit.cpu_limit) == (66, 96)
    with pytest.raises(ValueError):
        settings_for("simple", cpu_percentile=150)
    with pytest.raises(ValueError):
        settings_for("gpu")


def test_simple_takes_the_max_of_the_pods_percentiles_and_buffers_the_peak() -> None:
    got = propose(settings_for("simple"), _data(), None)
    assert got["cpu"].request == 0.35 and got["cpu"].limit is None
    assert got["memory"].request == got["memory"].limit == pytest.approx(300 * MI * 1.15)
    assert got["memory"].info is None


def test_points_are_summed_over_pods() -> None:
    few = _data(cpu_points={"a": 49, "b": 50}, memory_points={"a": 50, "b": 50})
    got = propose(settings_for("simple"), few, None)
    assert got["cpu"].info == "Not enough data" and math.isnan(got["cpu"].request or 0)
    assert got["memory"].request == pytest.approx(300 * MI * 1.15)


def test_hpa_blocks_only_the_resource_it_scales_on() -> None:
    got = propose(settings_for("simple"), _data(), _hpa(cpu=True))
    assert got["cpu"].info == "HPA detected"
    assert got["memory"].info is None
    both = propose(settings_for("simple"), _data(), _hpa(cpu=True, memory=True))
    assert both["memory"].info == "HPA detected"
    allowed = propose(settings_for("simple", allow_hpa=True), _data(), _hpa(cpu=True, memory=True))
    assert allowed["cpu"].request == 0.35


def test_oomkill_adjustment() -> None:
    data = _data(oom_limit={"a": 300 * MI})
    plain = propose(settings_for("simple"), data, None)
    assert plain["memory"].info is None
    oom = propose(settings_for("simple", use_oomkill_data=True), data, None)
    assert oom["memory"].request == pytest.approx(375 * MI)  # 300Mi x 1.25 > 300Mi x 1.15
    assert oom["memory"].info == "OOMKill detected"
    custom = settings_for("simple", use_oomkill_data=True, oom_memory_buffer_percentage=0)
    assert propose(custom, data, None)["memory"].request == pytest.approx(300 * MI * 1.15)


def test_simple_limit_pools_samples() -> None:
    data = _data(cpu={}, cpu_samples={"a": [0.1, 0.2, 0.3], "b": [0.4, 0.5]})
    got = propose(settings_for("simple-limit"), data, None)
    pooled = [0.1, 0.2, 0.3, 0.4, 0.5]  # numpy.percentile(pooled, 66) = 0.364, 96 -> 0.484
    assert got["cpu"].request == pytest.approx(0.364)
    assert got["cpu"].limit == pytest.approx(0.484)
    assert max(pooled) >= (got["cpu"].limit or 0)


def test_rounding_and_minimums() -> None:
    assert round_value(0.2911, "cpu") == 0.292
    assert round_value(0.001, "cpu") == 0.01
    assert round_value(0.001, "cpu", cpu_min_value=0) == 0.001
    assert round_value(300.2 * MI, "memory") == 301 * MI
    assert round_value(5 * MI, "memory") == 100 * MI
    assert round_value(math.nan, "cpu") == "?"
    assert round_value(None, "cpu") is None


@given(st.floats(min_value=0, max_value=64, allow_nan=False))
def test_cpu_rounding_never_goes_down(value: float) -> None:
    rounded = round_value(value, "cpu")
    assert isinstance(rounded, float) and rounded >= value and rounded - value < 0.0011 + 0.01


def test_severity_thresholds_are_krrs() -> None:
    assert cpu_severity(1.0, 0.5) is Severity.CRITICAL
    assert cpu_severity(1.0, 0.75) is Severity.WARNING
    assert cpu_severity(1.0, 0.85) is Severity.OK
    assert cpu_severity(1.0, 0.9) is Severity.GOOD  # 0.0999... in floats, as in krr
    assert cpu_severity(1.0, 0.95) is Severity.GOOD
    assert cpu_severity(None, None) is Severity.GOOD
    assert cpu_severity(1.0, None) is Severity.WARNING
    assert memory_severity(1024 * MI, 524 * MI) is Severity.CRITICAL
    assert memory_severity(1024 * MI, 774 * MI) is Severity.WARNING
    assert memory_severity(1024 * MI, 924 * MI) is Severity.OK
    assert memory_severity(1024 * MI, 925 * MI) is Severity.GOOD
    assert recommend.severity("cpu", 1.0, "?") is Severity.UNKNOWN


def test_score_is_krrs() -> None:
    assert score([Severity.WARNING, Severity.GOOD, Severity.OK]) == 76
    assert score([Severity.CRITICAL]) == 0
    assert score([]) == 0


def test_hpa_formula_and_tolerance() -> None:
    assert hpa_desired_replicas(4, 0.75, 0.7) == 4  # within 10 %
    assert hpa_desired_replicas(4, 0.8, 0.7) == 5  # ceil(4 x 0.8 / 0.7) = ceil(4.57)
    assert hpa_desired_replicas(4, 0.2, 0.7) == 2  # ceil(1.14)


# The replica plans (sizeguard.recommend.replicas) are tested in test_plan.py.


def test_queries_escape_namespaces_and_use_krrs_step() -> None:
    queries = collection.metric_queries(settings_for("simple"), ["a.b", "c"], with_mean=False)
    assert 'namespace=~"a\\\\.b|c"' in queries["cpu"]
    assert queries["cpu"].startswith("quantile_over_time(0.95, ")
    assert (
        "[14d:75s]" in queries["cpu"] and "rate(container_cpu_usage_seconds_total" in queries["cpu"]
    )
    assert set(queries) == {"cpu", "cpu_points", "memory_max", "memory_points"}
    custom = settings_for(
        "simple", history_duration=36, timeframe_duration=0.5, use_oomkill_data=True
    )
    queries = collection.metric_queries(custom, ["a"], with_mean=True)
    assert "[36h:30s]" in queries["memory_max"] and "oom_limit" in queries and "cpu_mean" in queries


def test_batches_group_namespaces_by_pods() -> None:
    assert collection._batches({"a": 300, "b": 300, "c": 10}, 500) == [["a"], ["b", "c"]]
    assert collection._batches({"huge": 2000}, 500) == [["huge"]]
