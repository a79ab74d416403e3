"""Asynchronous PromQL access: timeouts, retries with backoff, and errors a person understands.

:class:`PrometheusClient` speaks the HTTP API (``/api/v1/query`` and ``/api/v1/query_range``),
limits how many queries run at once, retries what is worth retrying (connection failures,
timeouts, 429 and 5xx answers) with exponential backoff, and turns everything else into a
:class:`PrometheusError` whose ``kind`` says what went wrong: ``unreachable``, ``timeout``,
``auth``, ``bad_query``, ``too_many_points``, ``server`` or ``bad_response``.

Values are returned as floats exactly as Prometheus wrote them, including ``NaN`` and
``±Inf``: deciding what such a value means is the caller's business, not the transport's.
Every request is counted (``client.queries``) so that query plans can be measured.
"""

from __future__ import annotations

import asyncio
import math
import random
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal

import httpx

__all__ = [
    "MAX_POINTS_PER_SERIES",
    "ErrorKind",
    "InstantSample",
    "PrometheusClient",
    "PrometheusError",
    "RangeSeries",
    "format_duration",
    "parse_value",
]

# Prometheus refuses range queries that would return more points than this per series.
MAX_POINTS_PER_SERIES: Final = 11_000

ErrorKind = Literal[
    "unreachable", "timeout", "auth", "bad_query", "too_many_points", "server", "bad_response"
]

_RETRYABLE_STATUS: Final = frozenset({429, 500, 502, 503, 504})


class PrometheusError(Exception):
    """A PromQL request that failed; ``kind`` classifies it, the message explains it."""

    def __init__(self, kind: ErrorKind, message: str, *, query: str = "") -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.query = query


@dataclass(frozen=True)
class InstantSample:
    labels: dict[str, str]
    value: float
    timestamp: float


@dataclass(frozen=True)
class RangeSeries:
    """One series of a range query; timestamps and values as compact float arrays."""

    labels: dict[str, str]
    timestamps: array[float] = field(default_factory=lambda: array("d"))
    values: array[float] = field(default_factory=lambda: array("d"))


def parse_value(raw: object) -> float:
    """A sample value as Prometheus encodes it (a string, possibly ``NaN``/``+Inf``)."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError(f"not a sample value: {raw!r}")
    return float(raw)


def format_duration(seconds: float) -> str:
    """A PromQL duration for a whole number of seconds, in the largest exact unit."""
    total = round(seconds)
    if total <= 0:
        raise ValueError("a duration must be positive")
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if total % size == 0:
            return f"{total // size}{unit}"
    return f"{total}s"


class PrometheusClient:
    """An async client for one Prometheus server (use as ``async with``)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_concurrency: int = 4,
        headers: Mapping[str, str] | None = None,
        verify: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not url:
            raise ValueError("no Prometheus URL given (set PROMETHEUS_URL or --prometheus-url)")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.queries = 0  # HTTP requests sent, retries included
        self.logical_queries = 0  # PromQL queries asked for
        self._semaphore = asyncio.Semaphore(max(1, max_concurrency))
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=dict(headers or {}),
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
        )

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def query(self, promql: str, at: float | None = None) -> list[InstantSample]:
        """An instant query; a vector (or scalar) result becomes a list of samples."""
        params: dict[str, str] = {"query": promql}
        if at is not None:
            params["time"] = _ts(at)
        data = await self._request("/api/v1/query", params, promql)
        if not isinstance(data, dict):
            raise PrometheusError("bad_response", "unexpected answer to a query", query=promql)
        result_type, result = data.get("resultType"), data.get("result") or []
        try:
            if result_type == "vector":
                return [
                    InstantSample(
                        dict(item["metric"]), parse_value(item["value"][1]), float(item["value"][0])
                    )
                    for item in result
                ]
            if result_type == "scalar":
                return [InstantSample({}, parse_value(result[1]), float(result[0]))]
            if result_type == "matrix":
                raise PrometheusError(
                    "bad_query",
                    "the query returns a range vector; wrap it in a function",
                    query=promql,
                )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise PrometheusError(
                "bad_response", f"unexpected result from Prometheus: {exc}", query=promql
            ) from exc
        raise PrometheusError(
            "bad_response", f"unexpected result type {result_type!r}", query=promql
        )

    async def series(self, matchers: list[str], start: float, end: float) -> list[dict[str, str]]:
        """Label sets of the series matching any of ``matchers`` in [start, end] (index only)."""
        params: dict[str, str | list[str]] = {
            "match[]": list(matchers),
            "start": _ts(start),
            "end": _ts(end),
        }
        data = await self._request("/api/v1/series", params, " or ".join(matchers))
        if not isinstance(data, list):
            raise PrometheusError("bad_response", "unexpected answer from the series API")
        return [dict(item) for item in data if isinstance(item, dict)]

    async def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[RangeSeries]:
        """A range query, split into pieces under Prometheus' points-per-series limit."""
        if step <= 0 or end < start:
            raise ValueError("a range query needs step > 0 and end >= start")
        span = step * (MAX_POINTS_PER_SERIES - 1)
        pieces: list[tuple[float, float]] = []
        cursor = start
        while cursor <= end:
            piece_end = min(end, cursor + span)
            pieces.append((cursor, piece_end))
            cursor = piece_end + step
        merged: dict[tuple[tuple[str, str], ...], RangeSeries] = {}
        for piece_start, piece_end in pieces:
            params = {
                "query": promql,
                "start": _ts(piece_start),
                "end": _ts(piece_end),
                "step": _ts(step),
            }
            data = await self._request("/api/v1/query_range", params, promql)
            if not isinstance(data, dict):
                raise PrometheusError("bad_response", "unexpected answer", query=promql)
            if data.get("resultType") != "matrix":
                raise PrometheusError(
                    "bad_response",
                    f"unexpected result type {data.get('resultType')!r}",
                    query=promql,
                )
            try:
                for item in data.get("result", []):
                    labels = dict(item["metric"])
                    key = tuple(sorted(labels.items()))
                    series = merged.setdefault(key, RangeSeries(labels))
                    for t, v in item.get("values", []):
                        series.timestamps.append(float(t))
                        series.values.append(parse_value(v))
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise PrometheusError(
                    "bad_response", f"unexpected result from Prometheus: {exc}", query=promql
                ) from exc
        return list(merged.values())

    async def _request(self, path: str, params: Mapping[str, str | list[str]], promql: str) -> Any:
        self.logical_queries += 1
        attempt = 0
        while True:
            try:
                async with self._semaphore:
                    self.queries += 1
                    return await self._once(path, params, promql)
            except _RetryableError as exc:
                if attempt >= self.retries:
                    raise exc.error from None
                delay = self.backoff * (2**attempt) * (0.5 + random.random() / 2)
                attempt += 1
                await asyncio.sleep(delay)

    async def _once(self, path: str, params: Mapping[str, str | list[str]], promql: str) -> Any:
        try:
            # POST keeps long selectors (many namespaces) out of URL length limits.
            response = await self._http.post(path, data=params)
        except httpx.TimeoutException as exc:
            raise _RetryableError(
                PrometheusError(
                    "timeout",
                    f"Prometheus at {self.url} did not answer within {self.timeout:g}s",
                    query=promql,
                )
            ) from exc
        except httpx.TransportError as exc:
            raise _RetryableError(
                PrometheusError(
                    "unreachable",
                    f"cannot reach Prometheus at {self.url}: {exc or type(exc).__name__}",
                    query=promql,
                )
            ) from exc
        status = response.status_code
        if status in (401, 403):
            raise PrometheusError(
                "auth",
                f"Prometheus at {self.url} refused the request (HTTP {status}): check the "
                "credentials or headers",
                query=promql,
            )
        body = _json(response)
        message = str(body.get("error") or response.text[:300] or response.reason_phrase)
        if status in _RETRYABLE_STATUS:
            kind: ErrorKind = "timeout" if body.get("errorType") == "timeout" else "server"
            raise _RetryableError(
                PrometheusError(kind, f"Prometheus answered HTTP {status}: {message}", query=promql)
            )
        if status >= 400 or body.get("status") != "success":
            lowered = message.lower()
            if "too many" in lowered or "exceeded maximum resolution" in lowered:
                raise PrometheusError(
                    "too_many_points",
                    f"Prometheus refused the query as too large (HTTP {status}): {message}; "
                    "use a longer step or a shorter history",
                    query=promql,
                )
            if body.get("errorType") == "timeout":
                raise PrometheusError("timeout", f"Prometheus query timed out: {message}")
            raise PrometheusError(
                "bad_query" if 400 <= status < 500 else "bad_response",
                f"Prometheus rejected the query (HTTP {status}): {message}",
                query=promql,
            )
        data = body.get("data")
        if not isinstance(data, dict | list):
            raise PrometheusError("bad_response", "Prometheus answered without data", query=promql)
        return data


class _RetryableError(Exception):
    def __init__(self, error: PrometheusError) -> None:
        super().__init__(str(error))
        self.error = error


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _ts(value: float) -> str:
    if math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return repr(float(value))
