"""The Namespace cache of the webhook, against a fake API server (the real one is in
tests/integration/test_webhook.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from sizeguard.webhook.metrics import Metrics
from sizeguard.webhook.namespaces import (
    GoneError,
    KubernetesNamespaces,
    Lookup,
    NamespaceError,
    NamespaceWatch,
    client_configuration,
    labels_of,
)


def namespace(name: str, rv: str = "1", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "resourceVersion": rv, "labels": dict(labels)},
    }


class FakeAPI:
    """Pages of namespaces, scripted watch streams, and GETs; records every call."""

    def __init__(self, items: list[dict[str, Any]], page: int = 2) -> None:
        self.items = items
        self.page = page
        self.version = "100"
        self.streams: list[list[dict[str, Any]] | Exception] = []
        self.calls: list[tuple[str, Any]] = []
        self.get_error: Exception | None = None
        self.list_error: Exception | None = None
        self.idle = threading.Event()

    def list(self, continue_token: str | None) -> tuple[list[Mapping[str, Any]], str, str]:
        self.calls.append(("list", continue_token))
        if self.list_error is not None:
            raise self.list_error
        start = int(continue_token or 0)
        end = start + self.page
        more = str(end) if end < len(self.items) else ""
        return self.items[start:end], self.version, more

    def watch(self, resource_version: str, timeout: int) -> Iterator[Mapping[str, Any]]:
        self.calls.append(("watch", resource_version))
        if not self.streams:
            self.idle.set()
            time.sleep(0.05)  # a quiet watch that ran out its time
            return
        stream = self.streams.pop(0)
        if isinstance(stream, Exception):
            raise stream
        yield from stream

    def get(self, name: str, timeout: float) -> Mapping[str, Any] | None:
        self.calls.append(("get", name))
        if self.get_error is not None:
            raise self.get_error
        for item in self.items:
            if item["metadata"]["name"] == name:
                return item
        return None


def lookup(watch: NamespaceWatch, name: str) -> Lookup:
    return asyncio.run(watch.lookup(name))


def test_labels_of_reads_names_and_string_labels_only() -> None:
    assert labels_of(namespace("shop", env="prod")) == ("shop", {"env": "prod"})
    odd = namespace("shop")
    odd["metadata"]["labels"] = {"a": "b", "n": 1, 2: "x"}
    assert labels_of(odd) == ("shop", {"a": "b"})
    assert labels_of({"metadata": {"name": ""}}) is None
    assert labels_of({"metadata": []}) is None
    assert labels_of({}) is None


def test_not_synced_until_the_first_list_then_every_page_is_read() -> None:
    api = FakeAPI([namespace(f"ns-{i}", env=str(i)) for i in range(5)])
    metrics = Metrics()
    watch = NamespaceWatch(api, metrics=metrics)
    assert not watch.synced()
    assert watch.describe() == "namespaces not listed yet"
    assert watch.relist() == "100"
    assert [c for c in api.calls if c[0] == "list"] == [
        ("list", None),
        ("list", "2"),
        ("list", "4"),
    ]
    assert watch.synced() and watch.describe() == "5 namespaces watched"
    assert watch.cached("ns-3") == {"env": "3"}
    text = metrics.render().decode()
    assert "sizeguard_webhook_namespace_cache_synced 1.0" in text
    assert "sizeguard_webhook_namespace_cache_namespaces 5.0" in text


def test_watch_events_add_change_and_remove_labels() -> None:
    watch = NamespaceWatch(FakeAPI([namespace("shop")]))
    watch.relist()
    assert watch.apply({"type": "ADDED", "object": namespace("new", "7", env="prod")}) == "7"
    assert watch.apply({"type": "MODIFIED", "object": namespace("shop", "8", env="dev")}) == "8"
    assert watch.cached("new") == {"env": "prod"} and watch.cached("shop") == {"env": "dev"}
    assert watch.apply({"type": "DELETED", "object": namespace("new", "9")}) == "9"
    assert watch.cached("new") is None
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}}
    assert watch.apply(bookmark) == "12"
    assert watch.apply({"type": "ADDED", "object": "junk"}) is None


def test_a_lookup_answers_from_the_cache_once_synced() -> None:
    api = FakeAPI([namespace("shop", environment="production")])
    metrics = Metrics()
    watch = NamespaceWatch(api, metrics=metrics)
    watch.relist()
    api.calls.clear()
    assert lookup(watch, "shop") == Lookup({"environment": "production"}, "cache")
    assert api.calls == []
    assert 'sizeguard_webhook_namespace_lookups_total{source="cache"} 1.0' in (
        metrics.render().decode()
    )


def test_a_miss_asks_the_api_server_once_so_a_new_namespace_is_never_refused() -> None:
    api = FakeAPI([namespace("shop")])
    metrics = Metrics()
    watch = NamespaceWatch(api, metrics=metrics)
    watch.relist()
    api.items.append(namespace("fresh", team="x"))  # created after the list, event not yet in
    assert lookup(watch, "fresh") == Lookup({"team": "x"}, "get")
    assert ("get", "fresh") in api.calls
    text = metrics.render().decode()
    assert 'sizeguard_webhook_namespace_lookups_total{source="get"} 1.0' in text


def test_an_unknown_namespace_or_a_failing_get_gives_no_labels() -> None:
    api = FakeAPI([namespace("shop")])
    watch = NamespaceWatch(api)
    watch.relist()
    assert lookup(watch, "absent") == Lookup(None, "not_found")
    api.get_error = NamespaceError("HTTP 503: unavailable")
    result = lookup(watch, "absent")
    assert result.labels is None and result.source == "error"
    assert "HTTP 503" in result.detail


def test_a_name_that_cannot_be_a_namespace_is_never_looked_up() -> None:
    api = FakeAPI([namespace("shop")])
    watch = NamespaceWatch(api)
    for name in ("", "../secrets", "Shop", "a" * 64, "shop\u0000", "-shop"):
        assert lookup(watch, name).source == "not_found"
    assert api.calls == []


def test_unsynced_lookups_go_to_the_api_server() -> None:
    api = FakeAPI([namespace("shop", env="prod")])
    watch = NamespaceWatch(api)
    assert lookup(watch, "shop") == Lookup({"env": "prod"}, "get")  # never listed
    api.get_error = NamespaceError("connection refused")
    assert lookup(watch, "shop").source == "error"  # and never an empty default


def test_a_watch_failing_for_too_long_unsyncs_the_cache() -> None:
    now = [0.0]
    api = FakeAPI([namespace("shop", env="prod")])
    watch = NamespaceWatch(api, stale_after=60, clock=lambda: now[0])
    watch.relist()
    watch._failed(NamespaceError("HTTP 500: boom"))
    now[0] = 59
    assert watch.synced()  # a short outage keeps the (recent) labels
    now[0] = 61
    assert not watch.synced()
    assert "failing for over 60s (NamespaceError: HTTP 500: boom)" in watch.describe()
    api.calls.clear()
    assert lookup(watch, "shop").source == "get"  # stale: ask the API server
    watch.relist()
    assert watch.synced()


def _run_until(watch: NamespaceWatch, done: Any, timeout: float = 5.0) -> None:
    watch.start()
    deadline = time.monotonic() + timeout
    try:
        while not done():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.01)
    finally:
        watch.stop()


def test_the_thread_lists_watches_and_relists_after_410() -> None:
    api = FakeAPI([namespace("shop")])
    api.streams = [
        [{"type": "ADDED", "object": namespace("a", "101")}],
        GoneError("HTTP 410: too old"),
        [{"type": "ADDED", "object": namespace("b", "201")}],
    ]
    metrics = Metrics()
    watch = NamespaceWatch(api, metrics=metrics, backoff=(0.01, 0.02))
    _run_until(watch, lambda: api.idle.is_set() and watch.cached("b") is not None)
    kinds = [call for call in api.calls if call[0] in ("list", "watch")]
    # list, watch from 100 (event a at 101), watch from 101 -> 410, list again, watch ...
    assert kinds[:5] == [
        ("list", None),
        ("watch", "100"),
        ("watch", "101"),
        ("list", None),
        ("watch", "100"),
    ]
    assert watch.cached("a") is None  # the relist replaced the cache (a was not listed)
    assert 'sizeguard_webhook_namespace_watch_total{event="expired"} 1.0' in (
        metrics.render().decode()
    )


def test_errors_back_off_and_relist() -> None:
    api = FakeAPI([namespace("shop")])
    api.list_error = NamespaceError("HTTP 403: forbidden")
    metrics = Metrics()
    watch = NamespaceWatch(api, metrics=metrics, backoff=(0.01, 0.02))
    _run_until(watch, lambda: len([c for c in api.calls if c[0] == "list"]) >= 3)
    assert not watch.synced()
    assert "HTTP 403: forbidden" in watch.describe()
    assert 'sizeguard_webhook_namespace_watch_total{event="error"}' in metrics.render().decode()
    api.list_error = None
    watch2 = NamespaceWatch(api, backoff=(0.01, 0.02))
    _run_until(watch2, watch2.synced)


def test_the_client_configuration_is_explicit_or_fails_in_one_line(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ValueError, match=r"cannot use .*missing to watch namespaces"):
        client_configuration(tmp_path / "missing")
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    configuration = client_configuration(config)
    assert configuration.host == "https://127.0.0.1:6443"
    assert KubernetesNamespaces(configuration).server == "https://127.0.0.1:6443"
    # In a pod (no KUBECONFIG): the in-cluster configuration, which needs the mounted token.
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ValueError, match="in-cluster configuration"):
        client_configuration(None)
