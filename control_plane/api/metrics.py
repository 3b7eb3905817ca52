"""Prometheus metrics: HTTP requests by route template, and fleet, audit and event-bus gauges read at scrape time.

Each app has its own registry (several apps may live in one process, as in tests). Route labels are templates
(``/api/v1/devices/{device_id}``), never raw paths, so their number is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loa.control_plane.db.schema import audit_head, devices
from loa.control_plane.settings import ControlPlane

__all__ = ["Metrics", "MetricsMiddleware"]


class _StateCollector(Collector):
    def __init__(self, cp: ControlPlane) -> None:
        self._cp = cp

    def collect(self) -> Iterator[GaugeMetricFamily]:
        fleet = GaugeMetricFamily("loa_devices", "Enrolled devices by state", labels=["state"])
        with self._cp.db.read() as conn:
            row = conn.execute(select(
                func.count(),
                func.count().filter(devices.c.online.is_(True) & devices.c.disabled.is_(False)),
                func.count().filter(devices.c.disabled.is_(True)),
                func.count().filter(devices.c.faulty.is_(True) & devices.c.disabled.is_(False)),
            )).one()
            head = conn.execute(select(audit_head.c.seq)).scalar() or 0
        total, online, disabled, faulty = row
        fleet.add_metric(["online"], online)
        fleet.add_metric(["offline"], total - online - disabled)
        fleet.add_metric(["disabled"], disabled)
        fleet.add_metric(["faulty"], faulty)
        yield fleet
        yield GaugeMetricFamily("loa_audit_entries", "Entries in the audit log", value=head)
        bus = self._cp.bus.statistics()
        yield GaugeMetricFamily("loa_events_published", "Events published on the bus", value=bus.published)
        yield GaugeMetricFamily("loa_event_subscribers", "Live event stream subscribers", value=bus.subscribers)
        yield GaugeMetricFamily("loa_events_dropped", "Events dropped for slow subscribers", value=bus.dropped)


class Metrics:
    """An app's registry: request counters and latencies, and the state read at each scrape."""

    def __init__(self, cp: ControlPlane) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("loa_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("loa_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
                                 registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.registry.register(_StateCollector(cp))



class MetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route: Any = scope.get("route")  # set by the router on a match
            label = getattr(route, "path", None) or "<unmatched>"
            self.metrics.requests.labels(scope["method"], label, str(status)).inc()
            self.metrics.latency.labels(scope["method"], label).observe(time.perf_counter() - start)
