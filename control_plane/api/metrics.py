"""Prometheus metrics: HTTP requests by route template, and fleet, audit and event-bus gauges read at scrape time.

Each app has its own registry (several apps may live in one process, as in tests). Route labels are templates
(``/api/v1/devices/{device_id}``), never raw paths, so their number is bounded.

Read on the event loop at each scrape (the scrape runs in a worker thread; the streamer is not thread-safe):

* ``loa_async_tasks``: the live tasks of the server's event loop (trio: every task under the root task;
  asyncio: ``asyncio.all_tasks()``), the figure a task leak makes grow. Absent when the registry is collected
  outside an anyio worker thread and outside an event loop (nothing to count).
* ``loa_python_allocated_blocks``: memory blocks the interpreter's allocator holds for objects
  (``sys.getallocatedblocks()``, process-wide). When the process's resident memory grows while this stays flat,
  the growth is in the C allocator (arenas, fragmentation), not live Python objects.
* ``loa_c_heap_bytes`` by ``state`` (``in_use``, ``free``, ``mapped``: the C allocator's heaps, glibc's
  ``mallinfo2``) and ``loa_sqlite_bytes`` (what SQLite holds, its page caches among it), each absent where the
  C library cannot say (:mod:`loa.control_plane.process_memory`). Resident memory growing with ``free`` while
  ``in_use`` stays level is the allocator keeping freed pages, which ``loa serve`` hands back every 30 s.
* when the streamer runs in this process (``loa serve``): ``loa_streamer_sessions`` (devices with a session),
  ``loa_streamer_datagrams_sent`` (what the service's sender sent: control, handshakes, retransmissions; not
  the fan-out), ``loa_streamer_media_datagrams`` (media packets handed to the fan-out, each then sent to every
  member), and for each running broadcast ``loa_broadcast_frames`` and
  ``loa_broadcast_late_frames`` (frames produced more than 2 ms after their time), labelled by ``bid``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio.from_thread
import sniffio
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loa.control_plane.db.schema import audit_head, devices
from loa.control_plane.process_memory import heap, sqlite_bytes
from loa.control_plane.settings import ControlPlane

__all__ = ["Metrics", "MetricsMiddleware", "count_tasks"]


def count_tasks() -> int:
    """The live tasks of the event loop this runs on (trio or asyncio). RuntimeError outside an event loop."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        raise RuntimeError("no event loop runs in this thread") from None
    if library == "trio":
        import trio

        count = 0
        root = trio.lowlevel.current_root_task()
        stack = [] if root is None else [root]
        while stack:
            task = stack.pop()
            count += 1
            for nursery in task.child_nurseries:
                stack.extend(nursery.child_tasks)
        return count
    import asyncio

    return len(asyncio.all_tasks())


@dataclass(frozen=True, slots=True)
class _LoopSnapshot:
    tasks: int
    streamer: tuple[int, int, int] | None  # sessions, datagrams sent, media datagrams
    broadcasts: tuple[tuple[int, int, int], ...]  # (bid, frames, late frames)
    received: int = 0  # datagrams the streamer read
    kernel_drops: int | None = None  # datagrams the kernel dropped at its socket (None: not told)
    sessions_started: int = 0
    messages: tuple[tuple[str, int], ...] = ()  # control messages received, by type
    drops: tuple[tuple[str, int], ...] = ()  # datagrams and messages dropped, by reason
    control: tuple[int, int, int] = (0, 0, 0)  # reliable control messages sent, retransmitted, received twice
    reports: tuple[int, int, tuple[tuple[str, int], ...]] = (0, 0, ())  # device reports queued, written, dropped


def _loop_snapshot(cp: ControlPlane) -> _LoopSnapshot:
    """Read on the event loop (see the module docstring)."""
    tasks = count_tasks()
    dataplane: Any = cp.live
    core = getattr(dataplane, "core", None)
    service = getattr(dataplane, "service", None)
    if core is None or service is None:
        return _LoopSnapshot(tasks, None, ())
    stats = service.statistics()
    core_stats = core.statistics()
    writer = dataplane.reports
    reports = (len(writer), writer.written, tuple(sorted(writer.dropped.items())))
    broadcasts = tuple((b.bid, b.frames, b.late_frames) for b in core.broadcasts())
    return _LoopSnapshot(tasks, (core_stats.devices_online, stats.sent, stats.media_packets), broadcasts,
                         stats.received, stats.kernel_drops, core_stats.sessions_started,
                         tuple(sorted(core_stats.messages.items())), tuple(sorted(core_stats.drops.items())),
                         (core_stats.control_sent, core_stats.control_retransmitted, core_stats.control_duplicates),
                         reports)


def _read_loop(cp: ControlPlane) -> _LoopSnapshot | None:
    try:
        return anyio.from_thread.run_sync(_loop_snapshot, cp)
    except RuntimeError:  # not an anyio worker thread: on the loop itself, or no loop at all
        try:
            return _loop_snapshot(cp)
        except RuntimeError:
            return None


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
        yield GaugeMetricFamily("loa_python_allocated_blocks", "Memory blocks held by the interpreter's allocator",
                                value=sys.getallocatedblocks())
        c_heap = heap()
        if c_heap is not None:
            family = GaugeMetricFamily("loa_c_heap_bytes", "Bytes of the C allocator's heaps", labels=["state"])
            family.add_metric(["in_use"], c_heap.in_use)
            family.add_metric(["free"], c_heap.free)
            family.add_metric(["mapped"], c_heap.mapped)
            yield family
        held = sqlite_bytes()
        if held is not None:
            yield GaugeMetricFamily("loa_sqlite_bytes", "Bytes SQLite holds (its page caches among them)", value=held)
        loop = _read_loop(self._cp)
        if loop is None:
            return
        yield GaugeMetricFamily("loa_async_tasks", "Live tasks of the server's event loop", value=loop.tasks)
        if loop.streamer is not None:
            sessions, sent, media = loop.streamer
            yield GaugeMetricFamily("loa_streamer_sessions", "Devices with a session", value=sessions)
            yield GaugeMetricFamily("loa_streamer_datagrams_sent", "Datagrams the streamer sent, the fan-out aside",
                                    value=sent)
            yield GaugeMetricFamily("loa_streamer_media_datagrams",
                                    "Media packets handed to the fan-out (each to every member)", value=media)
            frames = GaugeMetricFamily("loa_broadcast_frames", "Frames produced by a running broadcast",
                                       labels=["bid"])
            late = GaugeMetricFamily("loa_broadcast_late_frames", "Frames of a running broadcast produced more "
                                     "than 2 ms after their time", labels=["bid"])
            for bid, produced, behind in loop.broadcasts:
                frames.add_metric([str(bid)], produced)
                late.add_metric([str(bid)], behind)
            yield frames
            yield late
            yield GaugeMetricFamily("loa_streamer_datagrams_received", "Datagrams the streamer read from its socket",
                                    value=loop.received)
            if loop.kernel_drops is not None:
                yield GaugeMetricFamily("loa_streamer_kernel_drops", "Datagrams the kernel dropped at the "
                                        "streamer's socket (its receive buffer full, or the socket filter)",
                                        value=loop.kernel_drops)
            yield GaugeMetricFamily("loa_streamer_sessions_started",
                                    "Handshakes that gave a device a session (rekeys included)",
                                    value=loop.sessions_started)
            first, again, twice = loop.control
            yield GaugeMetricFamily("loa_streamer_control_sent", "Reliable control messages sent to devices "
                                    "(first transmissions)", value=first)
            yield GaugeMetricFamily("loa_streamer_control_retransmitted", "Retransmissions of reliable control "
                                    "messages not acknowledged in time", value=again)
            yield GaugeMetricFamily("loa_streamer_control_duplicates", "Reliable control messages received from "
                                    "devices that had been delivered already", value=twice)
            messages = GaugeMetricFamily("loa_streamer_messages_received", "Control messages received, by type",
                                         labels=["type"])
            for name, count in loop.messages:
                messages.add_metric([name], count)
            yield messages
            drops = GaugeMetricFamily("loa_streamer_drops", "Datagrams and messages the streamer dropped, by reason",
                                      labels=["reason"])
            for reason, count in loop.drops:
                drops.add_metric([reason], count)
            yield drops
            queued, written, given_up = loop.reports
            yield GaugeMetricFamily("loa_device_reports_queued", "Device reports (status, telemetry, as-played) "
                                    "waiting to be written to the database", value=queued)
            yield GaugeMetricFamily("loa_device_reports_written", "Device reports written to the database",
                                    value=written)
            dropped = GaugeMetricFamily("loa_device_reports_dropped", "Device reports given up, by reason",
                                        labels=["reason"])
            for reason, count in given_up:
                dropped.add_metric([reason], count)
            yield dropped


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
