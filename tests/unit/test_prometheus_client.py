"""The PromQL client against a local fake: retries, timeouts, auth, splitting, values."""

from __future__ import annotations

import asyncio
import math
import socket
from typing import Any

import pytest

from sizeguard.prometheus import (
    MAX_POINTS_PER_SERIES,
    PrometheusClient,
    PrometheusError,
    format_duration,
    parse_value,
)

from .test_prometheus_fake_server import Answer, fake_prometheus, vector


def _run(url: str, query: str = "up", **kwargs: Any) -> Any:
    async def go() -> Any:
        async with PrometheusClient(url, backoff=0.01, **kwargs) as client:
            return await client.query(query, 100), client.queries

    return asyncio.run(go())


def test_values_keep_nan_and_infinities() -> None:
    answer = vector(({"pod": "a"}, "NaN"), ({"pod": "b"}, "+Inf"), ({"pod": "c"}, "0.25"))
    with fake_prometheus(lambda p, q: answer) as prom:
        samples, _ = _run(prom.url)
    values = {s.labels["pod"]: s.value for s in samples}
    assert math.isnan(values["a"]) and values["b"] == math.inf and values["c"] == 0.25
    assert prom.requests[0]["time"] == "100"


def test_a_500_is_retried_with_backoff_then_succeeds() -> None:
    calls = []

    def respond(path: str, params: dict[str, str]) -> Answer:
        calls.append(path)
        if len(calls) < 3:
            return 500, {"status": "error", "errorType": "internal", "error": "boom"}
        return vector(({}, 1))

    with fake_prometheus(respond) as prom:
        samples, sent = _run(prom.url, retries=3)
    assert [s.value for s in samples] == [1.0] and sent == 3


def test_a_persistent_500_is_a_server_error_after_the_retries() -> None:
    with (
        fake_prometheus(lambda p, q: (503, "upstream gone")) as prom,
        pytest.raises(PrometheusError) as caught,
    ):
        _run(prom.url, retries=2)
    assert caught.value.kind == "server" and "HTTP 503" in str(caught.value)
    assert len(prom.requests) == 3


def test_auth_failures_are_not_retried() -> None:
    with (
        fake_prometheus(lambda p, q: (401, "Unauthorized")) as prom,
        pytest.raises(PrometheusError) as caught,
    ):
        _run(prom.url, retries=3)
    assert caught.value.kind == "auth" and "credentials" in str(caught.value)
    assert len(prom.requests) == 1


def test_too_many_points_is_named() -> None:
    body = {
        "status": "error",
        "errorType": "bad_data",
        "error": "exceeded maximum resolution of 11,000 points per timeseries",
    }
    with (
        fake_prometheus(lambda p, q: (400, body)) as prom,
        pytest.raises(PrometheusError) as caught,
    ):
        _run(prom.url)
    assert caught.value.kind == "too_many_points" and "longer step" in str(caught.value)
    assert len(prom.requests) == 1


def test_a_hanging_server_times_out() -> None:
    with fake_prometheus(lambda p, q: None) as prom, pytest.raises(PrometheusError) as caught:
        _run(prom.url, timeout=0.3, retries=1)
    assert caught.value.kind == "timeout" and "did not answer within 0.3s" in str(caught.value)
    assert len(prom.requests) == 2


def test_an_unreachable_server_is_named() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PrometheusError) as caught:
        _run(f"http://127.0.0.1:{port}", retries=1)
    assert caught.value.kind == "unreachable" and f"127.0.0.1:{port}" in str(caught.value)


def test_garbage_is_a_bad_response() -> None:
    with (
        fake_prometheus(lambda p, q: (200, "<html>proxy login</html>")) as prom,
        pytest.raises(PrometheusError) as caught,
    ):
        _run(prom.url)
    assert caught.value.kind == "bad_response"


def test_range_queries_are_split_under_the_points_limit() -> None:
    def respond(path: str, params: dict[str, str]) -> Answer:
        start, end, step = (float(params[k]) for k in ("start", "end", "step"))
        assert (end - start) / step + 1 <= MAX_POINTS_PER_SERIES
        stamps = range(int(start), int(end) + 1, int(step))
        return 200, {
            "status": "success",
            "data": {
                "resultType": "matrix",
                "result": [{"metric": {"pod": "a"}, "values": [[t, "1"] for t in stamps]}],
            },
        }

    async def go(url: str) -> Any:
        async with PrometheusClient(url) as client:
            return await client.query_range("x", 0, 75 * 16_128, 75)

    with fake_prometheus(respond) as prom:
        (series,) = asyncio.run(go(prom.url))
    assert len(prom.requests) == 2
    stamps = list(series.timestamps)
    assert list(series.values) == [1.0] * len(stamps)
    assert stamps == [float(t) for t in range(0, 75 * 16_128 + 1, 75)]


def test_format_duration_and_parse_value() -> None:
    assert format_duration(14 * 86_400) == "14d"
    assert format_duration(36 * 3600) == "36h"
    assert format_duration(90) == "90s"
    assert format_duration(120) == "2m"
    with pytest.raises(ValueError):
        format_duration(0)
    assert parse_value("1e3") == 1000.0
    with pytest.raises(ValueError):
        parse_value(None)
