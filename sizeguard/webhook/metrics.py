"""Prometheus metrics of the webhook, in a registry of its own (one per app instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# Admission latency buckets: the fast path is well under a millisecond, verify + OPA a few ms,
# and the API server gives up after timeoutSeconds (<= 5 s).
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sizeguard_webhook_requests",
            "Admission requests answered, by decision (allowed|denied|error), reason code and "
            "dry run.",
            ["decision", "reason", "dry_run"],
            registry=self.registry,
        )
        self.approvals = Counter(
            "sizeguard_webhook_approval_checks",
            "Approval verifications, by result code (ok, missing, expired, to_mismatch, ...).",
            ["code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sizeguard_webhook_request_duration_seconds",
            "Time from receiving an admission request to answering it, by decision.",
            ["decision"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.jwks_keys = Gauge(
            "sizeguard_webhook_jwks_keys",
            "Public keys currently trusted (0: not ready).",
            registry=self.registry,
        )
        self.jwks_reloads = Counter(
            "sizeguard_webhook_jwks_reloads",
            "JWKS file (re)loads, by result.",
            ["result"],
            registry=self.registry,
        )
        self.tls_reloads = Counter(
            "sizeguard_webhook_tls_reloads",
            "Serving certificate (re)loads, by result.",
            ["result"],
            registry=self.registry,
        )

        self.tls_not_after = Gauge(
            "sizeguard_webhook_tls_certificate_expiry_timestamp_seconds",
            "When the serving certificate in use expires (Unix time); alert well before.",
            registry=self.registry,
        )

        self.namespace_cache_synced = Gauge(
            "sizeguard_webhook_namespace_cache_synced",
            "1 when the Namespace watch has listed every namespace and is not failing (else "
            "every lookup asks the API server, and /readyz is 503).",
            registry=self.registry,
        )
        self.namespace_cache_size = Gauge(
            "sizeguard_webhook_namespace_cache_namespaces",
            "Namespaces whose labels the watch holds.",
            registry=self.registry,
        )
        self.namespace_lookups = Counter(
            "sizeguard_webhook_namespace_lookups",
            "Namespace label lookups of admission decisions, by source: cache (a hit), get (a "
            "miss answered by a direct read), not_found and error (both denied).",
            ["source"],
            registry=self.registry,
        )
        self.namespace_watch_events = Counter(
            "sizeguard_webhook_namespace_watch",
            "The Namespace watch's lists and restarts, by event: listed, expired (410, "
            "listed again), error (listed again after a backoff).",
            ["event"],
            registry=self.registry,
        )

        self.in_flight = Gauge(
            "sizeguard_webhook_in_flight",
            "Admission decisions being worked on now (at most sizeguard_webhook_max_in_flight; "
            'more are shed at once, as reason="overloaded").',
            registry=self.registry,
        )
        self.max_in_flight = Gauge(
            "sizeguard_webhook_max_in_flight",
            "The bound on admission decisions in flight (--max-in-flight).",
            registry=self.registry,
        )

    def observe(self, decision: str, reason: str, dry_run: bool, seconds: float) -> None:
        self.requests.labels(decision, reason, "true" if dry_run else "false").inc()
        self.latency.labels(decision).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
