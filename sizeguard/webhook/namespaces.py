"""The labels of every Namespace, for the admission policy (a namespace may be production by
label only).

:class:`NamespaceWatch` lists the cluster's Namespaces, then watches them, in a background
thread, and keeps ``name -> labels`` in memory. After a watch error or an expired
``resourceVersion`` (410 Gone) it lists again, with a backoff. It is *synced* once the first
list has been read, and stops being synced when the watch has been failing for longer than
``stale_after`` seconds (then every lookup asks the API server, below); ``/readyz`` is not
ready while it is not synced.

:meth:`NamespaceWatch.labels` answers from memory, or, for a namespace not there (created a
moment ago, before its watch event arrived) or while the cache is not synced, with one direct
GET under a short timeout. A namespace that does not exist, or whose labels cannot be learned,
gives ``None``: the webhook then denies (fail closed).

:class:`StaticNamespaces` is a fixed map with the same interface (tests, benchmarks).
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, cast

import anyio
import structlog

_log = structlog.get_logger("sizeguard.webhook.namespaces")

GET_TIMEOUT_SECONDS: Final = 1.0
"""Time allowed for the direct GET of a namespace missing from the cache (the API server
waits at most 5 s for the whole admission decision, OPA included)."""
WATCH_TIMEOUT_SECONDS: Final = 240
STALE_AFTER_SECONDS: Final = 60.0
LIST_PAGE: Final = 500
_NAME_RE: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # an RFC 1123 label


class NamespaceError(Exception):
    """The API server could not tell (an error other than "not found")."""


Labels = dict[str, str]


@dataclass(frozen=True)
class Lookup:
    """The labels of one namespace (None: unknown or unreadable) and how they were learned:
    ``cache``, ``get`` (a direct read), ``not_found`` or ``error``."""

    labels: Labels | None
    source: str
    detail: str = ""


class NamespaceSource(Protocol):
    """What the webhook needs: readiness, and the labels of a namespace."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def synced(self) -> bool: ...

    def describe(self) -> str: ...

    async def lookup(self, name: str) -> Lookup: ...


class NamespaceAPI(Protocol):
    """The three calls the watch makes (a fake in unit tests, the API server otherwise)."""

    def list(self, continue_token: str | None) -> tuple[list[Mapping[str, Any]], str, str]:
        """One page: (items, the list's resourceVersion, the continue token or "")."""
        ...

    def watch(self, resource_version: str, timeout: int) -> Iterator[Mapping[str, Any]]:
        """Watch events ``{"type": ..., "object": {...}}`` from ``resource_version``; raises
        :class:`GoneError` for an expired version, :class:`NamespaceError` otherwise."""
        ...

    def get(self, name: str, timeout: float) -> Mapping[str, Any] | None:
        """The namespace, None if it does not exist; :class:`NamespaceError` otherwise."""
        ...


class GoneError(NamespaceError):
    """410 Gone: the resourceVersion is too old to watch from; list again."""


def labels_of(namespace: Mapping[str, Any]) -> tuple[str, Labels] | None:
    """(name, labels) of a Namespace object, or None if it has no readable name."""
    metadata = namespace.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        return None
    raw = metadata.get("labels")
    labels: Labels = {}
    if isinstance(raw, Mapping):
        labels = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}
    return name, labels


class NamespaceWatch:
    """A list + watch cache of namespace labels (see the module docstring)."""

    def __init__(
        self,
        api: NamespaceAPI,
        *,
        metrics: Any = None,
        get_timeout: float = GET_TIMEOUT_SECONDS,
        watch_timeout: int = WATCH_TIMEOUT_SECONDS,
        stale_after: float = STALE_AFTER_SECONDS,
        backoff: tuple[float, float] = (0.5, 30.0),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.get_timeout = get_timeout
        self.watch_timeout = watch_timeout
        self.stale_after = stale_after
        self.backoff = backoff
        self.clock = clock
        self._lock = threading.Lock()
        self._labels: dict[str, Labels] = {}
        self._listed = False
        self._failing_since: float | None = None
        self._last_error: str | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._metrics = metrics
        if metrics is not None:
            metrics.namespace_cache_synced.set_function(lambda: 1.0 if self.synced() else 0.0)
            metrics.namespace_cache_size.set_function(lambda: float(len(self._labels)))

    # --- the background thread ----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="namespace-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def _count(self, event: str) -> None:
        if self._metrics is not None:
            self._metrics.namespace_watch_events.labels(event).inc()

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                version = self.relist()
                failures = 0
                self._watch_from(version)
            except GoneError:
                self._count("expired")
                _log.info("namespaces.relist", reason="resourceVersion expired (410)")
                continue
            except Exception as exc:
                self._failed(exc)
                failures += 1
                low, high = self.backoff
                delay = min(high, low * 2 ** min(failures - 1, 10))
                self._stopping.wait(delay * (0.5 + random.random() / 2))

    def _failed(self, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {str(exc)[:300]}"
        self._count("error")
        with self._lock:
            if self._failing_since is None:
                self._failing_since = self.clock()
            repeated = message == self._last_error
            self._last_error = message
        if not repeated:
            _log.warning("namespaces.watch_failed", error=message)

    def relist(self) -> str:
        """List every namespace, replace the cache; returns the list's resourceVersion."""
        fresh: dict[str, Labels] = {}
        token: str | None = None
        version = ""
        while True:
            items, version, token = self.api.list(token)
            for item in items:
                found = labels_of(item)
                if found is not None:
                    fresh[found[0]] = found[1]
            if not token:
                break
        with self._lock:
            first = not self._listed
            self._labels = fresh
            self._listed = True
            self._failing_since = None
            self._last_error = None
        self._count("listed")
        if first:
            _log.info("namespaces.synced", namespaces=len(fresh))
        return version

    def _watch_from(self, version: str) -> None:
        while not self._stopping.is_set():
            for event in self.api.watch(version, self.watch_timeout):
                if self._stopping.is_set():
                    return
                version = self.apply(event) or version
            with self._lock:
                self._failing_since = None  # a watch that ran out its time is healthy

    def apply(self, event: Mapping[str, Any]) -> str | None:
        """Apply one watch event; returns the resourceVersion to resume from, if any."""
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, Mapping):
            return None
        metadata = obj.get("metadata")
        version = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
        found = labels_of(obj)
        if found is not None and kind in ("ADDED", "MODIFIED", "DELETED"):
            name, labels = found
            with self._lock:
                if kind == "DELETED":
                    self._labels.pop(name, None)
                else:
                    self._labels[name] = labels
                self._failing_since = None
        return version if isinstance(version, str) and version else None

    # --- what the webhook asks ----------------------------------------------------------------

    def synced(self) -> bool:
        with self._lock:
            if not self._listed:
                return False
            return (
                self._failing_since is None or self.clock() - self._failing_since < self.stale_after
            )

    def describe(self) -> str:
        with self._lock:
            count, error = len(self._labels), self._last_error
        if self.synced():
            return f"{count} namespaces watched"
        if not self._listed:
            return f"namespaces not listed yet{f' ({error})' if error else ''}"
        return f"the namespace watch has been failing for over {self.stale_after:g}s ({error})"

    def cached(self, name: str) -> Labels | None:
        with self._lock:
            labels = self._labels.get(name)
        return None if labels is None else dict(labels)

    async def lookup(self, name: str) -> Lookup:
        if not _NAME_RE.fullmatch(name):
            return self._counted(Lookup(None, "not_found", "not a namespace name"))
        if self.synced():
            labels = self.cached(name)
            if labels is not None:
                return self._counted(Lookup(labels, "cache"))
        try:
            namespace = await anyio.to_thread.run_sync(self.api.get, name, self.get_timeout)
        except Exception as exc:
            return self._counted(Lookup(None, "error", f"{type(exc).__name__}: {str(exc)[:200]}"))
        found = None if namespace is None else labels_of(namespace)
        if found is None or found[0] != name:
            return self._counted(Lookup(None, "not_found"))
        return self._counted(Lookup(found[1], "get"))

    def _counted(self, lookup: Lookup) -> Lookup:
        if self._metrics is not None:
            self._metrics.namespace_lookups.labels(lookup.source).inc()
        return lookup


class StaticNamespaces:
    """A fixed ``name -> labels`` map with the interface of :class:`NamespaceWatch`."""

    def __init__(self, labels: Mapping[str, Mapping[str, str]], *, ready: bool = True) -> None:
        self.labels = {name: dict(value) for name, value in labels.items()}
        self.ready = ready

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def synced(self) -> bool:
        return self.ready

    def describe(self) -> str:
        return f"{len(self.labels)} namespaces (static)" if self.ready else "not synced (static)"

    async def lookup(self, name: str) -> Lookup:
        labels = self.labels.get(name)
        return Lookup(None, "not_found") if labels is None else Lookup(dict(labels), "cache")


# --- the API server, through the official client -----------------------------------------------


def _untyped(function: object) -> Callable[..., Any]:
    """A function of the kubernetes client, which carries no annotations."""
    return cast("Callable[..., Any]", function)


def client_configuration(kubeconfig: Path | None) -> Any:
    """A ``kubernetes.client.Configuration``: from ``kubeconfig`` when given; else in-cluster
    when running in a pod (and no ``KUBECONFIG`` is set); else ``$KUBECONFIG`` or
    ``~/.kube/config``. Raises ``ValueError`` with one line when none can be used."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubernetes.config.config_exception import ConfigException

    configuration = k8s.Configuration()
    in_cluster = (
        kubeconfig is None
        and not os.environ.get("KUBECONFIG")
        and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    )
    try:
        if in_cluster:
            _untyped(k8s_config.load_incluster_config)(client_configuration=configuration)
        else:
            _untyped(k8s_config.load_kube_config)(
                config_file=None if kubeconfig is None else str(kubeconfig),
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        where = "the in-cluster configuration" if in_cluster else str(kubeconfig or "kubeconfig")
        raise ValueError(f"cannot use {where} to watch namespaces: {exc}") from None
    return configuration


class KubernetesNamespaces:
    """:class:`NamespaceAPI` over the official ``kubernetes`` client (raw JSON, no models).
    The watch and the GETs use separate connections (they run in different threads)."""

    def __init__(self, configuration: Any) -> None:
        from kubernetes import client as k8s

        self._watch_core = k8s.CoreV1Api(k8s.ApiClient(configuration))
        self._get_core = k8s.CoreV1Api(k8s.ApiClient(configuration))
        self.server = str(configuration.host)

    @staticmethod
    def _error(exc: Exception) -> NamespaceError:
        from kubernetes.client.exceptions import ApiException

        if isinstance(exc, ApiException):
            if exc.status == 410:
                return GoneError(f"HTTP 410: {exc.reason}")
            return NamespaceError(f"HTTP {exc.status}: {exc.reason}")
        return NamespaceError(f"{type(exc).__name__}: {exc}")

    def list(self, continue_token: str | None) -> tuple[list[Mapping[str, Any]], str, str]:
        kwargs: dict[str, Any] = {"limit": LIST_PAGE, "_preload_content": False}
        if continue_token:
            kwargs["_continue"] = continue_token
        try:
            response = _untyped(self._watch_core.list_namespace)(_request_timeout=(5, 30), **kwargs)
            body = json.loads(response.data)
        except Exception as exc:
            raise self._error(exc) from None
        metadata = body.get("metadata") or {}
        items = [item for item in body.get("items") or [] if isinstance(item, Mapping)]
        return items, str(metadata.get("resourceVersion") or ""), metadata.get("continue") or ""

    def watch(self, resource_version: str, timeout: int) -> Iterator[Mapping[str, Any]]:
        from kubernetes import watch

        stream = _untyped(watch.Watch)()
        try:
            for event in _untyped(stream.stream)(
                self._watch_core.list_namespace,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout,
                _request_timeout=(5, timeout + 30),
            ):
                if isinstance(event, dict):  # None for a blank line (a keep-alive)
                    yield {"type": event.get("type"), "object": event.get("raw_object")}
        except Exception as exc:
            raise self._error(exc) from None
        finally:
            _untyped(stream.stop)()

    def get(self, name: str, timeout: float) -> Mapping[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            response = _untyped(self._get_core.read_namespace)(
                name, _request_timeout=timeout, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._error(exc) from None
        except Exception as exc:
            raise self._error(exc) from None
        body = json.loads(response.data)
        return body if isinstance(body, Mapping) else None
