"""Prometheus metrics, one registry per app. Labels are bounded: route templates, never names."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The service's metrics, registered in their own registry (several apps per test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "orgsvc_http_requests_total",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "orgsvc_http_request_duration_seconds",
            "HTTP request latency by method, route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.hash_queue = Gauge(
            "orgsvc_hash_pool_queue_length",
            "Password hashes waiting for or running in the bcrypt pool.",
            registry=r,
        )
        self.hash_wait = Histogram(
            "orgsvc_hash_pool_wait_seconds",
            "Time a password hash waited for a bcrypt pool thread.",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.reconciler_actions = Counter(
            "orgsvc_reconciler_actions_total",
            "Operations the reconciler completed or undid, by kind and outcome.",
            ["kind", "outcome"],
            registry=r,
        )
        self.db_errors = Counter(
            "orgsvc_database_errors_total",
            "Database errors seen while serving requests or reconciling, by error class.",
            ["error"],
            registry=r,
        )
        self.organizations = Gauge(
            "orgsvc_organizations_total",
            "Active organizations (refreshed on scrape).",
            registry=r,
        )

        # Webhooks (app/webhooks/worker.py): the backlog and how attempts end.
        self.webhook_attempts = Counter(
            "orgsvc_webhook_attempts_total",
            "Webhook delivery attempts by outcome: delivered, failed_status (a non-2xx answer, "
            "a redirect included), timeout, refused (the SSRF guard), error (connection, TLS).",
            ["outcome"],
            registry=r,
        )
        self.webhook_pending = Gauge(
            "orgsvc_webhook_pending_deliveries",
            "Webhook deliveries not yet delivered nor failed (refreshed by the worker's passes).",
            registry=r,
        )
        self.webhook_lag = Gauge(
            "orgsvc_webhook_delivery_lag_seconds",
            "Age of the oldest pending webhook delivery (0: none pending).",
            registry=r,
        )
        self.webhook_delivery_seconds = Histogram(
            "orgsvc_webhook_delivery_seconds",
            "From an event's occurred_at to its delivery (2xx) to one endpoint.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
            registry=r,
        )
        self.auth_cache_entries = Gauge(
            "orgsvc_auth_cache_entries",
            "Entries in the authentication cache (members and denylist answers).",
            registry=r,
        )
        self.auth_cache_serving = Gauge(
            "orgsvc_auth_cache_serving",
            "1 while the authentication cache may serve (its change streams are caught up), "
            "else 0 (requests read the database).",
            registry=r,
        )
        self.auth_cache_lookups = CallbackCounter(
            "orgsvc_auth_cache_lookups",
            "Authentication reads by result: hit (no round trip), miss (read, then cached), "
            "bypass (read: the cache may not serve now).",
            "result",
        )
        self.auth_cache_resets = CallbackCounter(
            "orgsvc_auth_cache_resets",
            "Times the authentication cache was emptied because a change stream failed or ended.",
        )
        r.register(self.auth_cache_lookups)
        r.register(self.auth_cache_resets)
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            # `labels()` checks and looks its child up under a lock on every call; the label
            # sets are bounded (route templates), so each pair is looked up once and kept.
            labels = (method, route, str(status))
            children = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_reconcile(self, kind: str, outcome: str) -> None:
        self.reconciler_actions.labels(kind, outcome).inc()

    def observe_db_error(self, exc: BaseException) -> None:
        self.db_errors.labels(type(exc).__name__).inc()

    def observe_webhook_attempt(self, outcome: str) -> None:
        self.webhook_attempts.labels(outcome).inc()


class CallbackCounter(Collector):
    """A counter whose values a callback reads at scrape time (a hot path bumps plain ints)."""

    def __init__(self, name: str, documentation: str, label: str | None = None) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.source: Callable[[], Mapping[str, float]] = dict

    def collect(self) -> Iterator[CounterMetricFamily]:
        labels = [self.label] if self.label else []
        family = CounterMetricFamily(self.name, self.documentation, labels=labels)
        for value, count in self.source().items():
            family.add_metric([value] if self.label else [], count)
        yield family
