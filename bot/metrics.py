"""What the bot counts, in Prometheus form. The only module that knows prometheus-client."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

POLL_OUTCOMES = ("ok", "not_modified", "http_error", "timeout", "parse_error")
WEBSUB_OUTCOMES = ("accepted", "bad_signature", "unknown", "too_large")
#: Up to this many sources, polls and items are counted per source; beyond it, for all of them
#: together (``source="*"``): 10,000 sources would make tens of thousands of series, megabytes
#: of text at each scrape, and a burden on any Prometheus.
PER_SOURCE_LIMIT = 1000
#: The ``source`` label of the series that count every source together.
ALL_SOURCES = "*"


class Metrics:
    """One registry per bot, so tests and several bots in one process never mix figures."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.max_lag = 0.0
        #: whether polls and items are counted per source (see ``PER_SOURCE_LIMIT``)
        self.per_source = True
        r = self.registry
        # the process's resident memory, CPU, open files, and Python's collector and version
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(standard)
        self.polls = Counter(
            "treatybot_polls",
            "Polls of feeds and calendars by outcome",
            ["source", "outcome"],
            registry=r,
        )
        self.items_seen = Counter(
            "treatybot_items_seen",
            "Items (or events) read from a source",
            ["source"],
            registry=r,
        )
        self.alerts_queued = Counter(
            "treatybot_alerts_queued", "Alerts put in the outbox", ["transport"], registry=r
        )
        self.alerts_sent = Counter(
            "treatybot_alerts_sent", "Alerts the platform accepted", ["transport"], registry=r
        )
        self.alerts_failed = Counter(
            "treatybot_alerts_failed",
            "Alert delivery attempts that failed (retried unless permanent)",
            ["transport", "permanent"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "treatybot_delivery_latency_seconds",
            "From an alert's creation to the platform accepting it",
            ["transport"],
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600),
            registry=r,
        )
        self.command_latency = Histogram(
            "treatybot_command_latency_seconds",
            "Time to answer a command",
            ["platform"],
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5),
            registry=r,
        )
        self.loop_lag = Gauge(
            "treatybot_event_loop_lag_seconds", "Latest event-loop lag measured", registry=r
        )
        self.loop_lag_max = Gauge(
            "treatybot_event_loop_lag_max_seconds",
            "Largest event-loop lag since start",
            registry=r,
        )
        self.outbox_depth = Gauge(
            "treatybot_outbox_depth", "Alerts waiting in the outbox", registry=r
        )
        self.sources_failing = Gauge(
            "treatybot_sources_failing", "Sources whose last poll failed", registry=r
        )
        self.websub_deliveries = Counter(
            "treatybot_websub_deliveries",
            "Content pushed by WebSub hubs, by outcome (accepted, bad_signature, unknown, "
            "too_large)",
            ["source", "outcome"],
            registry=r,
        )
        self.websub_active = Gauge(
            "treatybot_websub_subscriptions",
            "WebSub subscriptions verified and not expired",
            registry=r,
        )
        self.up_since = Gauge(
            "treatybot_start_time_seconds", "When the bot started (Unix time)", registry=r
        )

    def start(self, transports: Iterable[str], platforms: Iterable[str]) -> None:
        """Create the series known at start at zero, so that a dashboard or an alert rule
        reads 0 from the first scrape instead of nothing until the first event."""
        for transport in transports:
            self.alerts_queued.labels(transport=transport)
            self.alerts_sent.labels(transport=transport)
            for permanent in ("true", "false"):
                self.alerts_failed.labels(transport=transport, permanent=permanent)
            self.delivery_latency.labels(transport=transport)
        for platform in platforms:
            self.command_latency.labels(platform=platform)
        # deliveries to a callback no subscription owns (each feed's series start at zero
        # when its hub is found)
        for outcome in WEBSUB_OUTCOMES:
            self.websub_deliveries.labels(source="-", outcome=outcome)
        self.websub_active.set(0)

    def count_sources(self, sources: int) -> None:
        """The configuration names this many sources: per-source series or one for all."""
        self.per_source = sources <= PER_SOURCE_LIMIT

    def record_poll(self, source: str, outcome: str, items: int = 0) -> None:
        label = outcome if outcome in POLL_OUTCOMES else _fold(outcome)
        if not self.per_source:
            source = ALL_SOURCES
        self.polls.labels(source=source, outcome=label).inc()
        if items:
            self.items_seen.labels(source=source).inc(items)

    def observe_lag(self, seconds: float) -> None:
        self.loop_lag.set(seconds)
        if seconds > self.max_lag:
            self.max_lag = seconds
            self.loop_lag_max.set(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _fold(outcome: str) -> str:
    """Map finer outcomes onto the documented ones."""
    return {
        "unchanged": "not_modified",
        "too_large": "http_error",
        "connection_error": "http_error",
        "skipped": "not_modified",
    }.get(outcome, "http_error")
