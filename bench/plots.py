"""PNG plots of `loa bench all` results (matplotlib, Agg backend: no display needed).

Each plot takes the ``results.json`` structure written by :mod:`loa.bench.all` (benchmark -> metric -> value) and
draws a curve only from the metrics present, with the peer or ceiling measured in the same run on the same
axes. :func:`write_plots` returns the files it wrote; a benchmark that did not run gives no plot.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

__all__ = ["series", "write_plots"]

Metrics = Mapping[str, Any]


def _value(entry: Any) -> float | None:
    value = entry.get("value") if isinstance(entry, Mapping) else entry
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def series(metrics: Metrics, prefix: str, suffix: str = "") -> list[tuple[float, float]]:
    """The points ``(x, value)`` of every metric named ``prefix<x>suffix`` with a number x, sorted by x."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + "$")
    points = []
    for key, entry in metrics.items():
        match = pattern.match(key)
        value = _value(entry)
        if match and value is not None:
            points.append((float(match.group(1)), value))
    return sorted(points)


def _draw(ax: Axes, metrics: Metrics, lines: list[tuple[str, str, str, dict[str, Any]]]) -> int:
    drawn = 0
    for label, prefix, suffix, style in lines:
        points = series(metrics, prefix, suffix)
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=label, marker="o", **style)
            drawn += 1
    return drawn


CEILING: dict[str, Any] = {"color": "black", "linestyle": "--", "linewidth": 2}


def _fanout_devices(results: Mapping[str, Metrics]) -> tuple[str, Callable[[Axes], int]] | None:
    metrics = results.get("scale") or results.get("fanout")
    if not metrics:
        return None

    def draw(ax: Axes) -> int:
        drawn = _draw(ax, metrics, [
            ("C sendmmsg (ceiling)", "ceiling_us_per_pkt_", "", CEILING),
            ("ours: Fanout (sendmmsg)", "us_per_pkt_", "", {}),
            ("ours: streamer on trio", "trio_us_per_pkt_", "", {}),
            ("ours: streamer on asyncio/uvloop", "asyncio_us_per_pkt_", "", {}),
            ("Python sendto loop", "sendto_us_per_pkt_", "", {}),
            ("GStreamer multiudpsink", "gst_us_per_pkt_", "", {}),
        ])
        ax.set_xscale("log")
        ax.set_xlabel("devices (destinations per frame)")
        ax.set_ylabel("sender CPU µs per datagram")
        ax.set_title("Fan-out cost against devices (loopback)")
        return drawn
    return "fanout_devices.png", draw


def _fanout_streams(results: Mapping[str, Metrics]) -> tuple[str, Callable[[Axes], int]] | None:
    metrics = results.get("scale")
    if not metrics or not series(metrics, "streams_asyncio_us_per_pkt_"):
        return None

    def draw(ax: Axes) -> int:
        drawn = _draw(ax, metrics, [
            ("C sendmmsg, one stream to all (ceiling)", "streams_ceiling_us_per_pkt_", "", CEILING),
            ("streamer on trio", "streams_trio_us_per_pkt_", "", {}),
            ("streamer on asyncio/uvloop", "streams_asyncio_us_per_pkt_", "", {}),
        ])
        ax.set_xscale("log")
        total = _value(metrics.get("streams_devices"))
        ax.set_xlabel(f"simultaneous streams (zones), {total:.0f} devices in all" if total else "streams")
        ax.set_ylabel("sender CPU µs per datagram")
        ax.set_title("Fan-out cost against simultaneous streams")
        return drawn
    return "fanout_streams.png", draw


def _sessions_memory(results: Mapping[str, Metrics]) -> tuple[str, Callable[[Axes], int]] | None:
    metrics = results.get("sessions")
    if not metrics or not series(metrics, "bytes_per_session_"):
        return None

    def draw(ax: Axes) -> int:
        drawn = _draw(ax, metrics, [
            ("server heap per session (tracemalloc)", "bytes_per_session_", "", {}),
            ("RSS growth per session", "rss_bytes_per_session_", "", {"alpha": 0.6}),
            ("registry entry per device", "registry_bytes_per_device_", "", {"alpha": 0.6}),
        ])
        goal = _value(metrics.get("goal_bytes")) or 2048.0
        ax.axhline(goal, label=f"goal {goal:.0f} bytes", **CEILING)
        ax.set_xscale("log")
        ax.set_xlabel("device sessions")
        ax.set_ylabel("bytes per session")
        ax.set_title("Server memory per device session")
        return drawn + 1
    return "sessions_memory.png", draw


def _handshakes(results: Mapping[str, Metrics]) -> tuple[str, Callable[[Axes], int]] | None:
    metrics = results.get("sessions")
    if not metrics or not series(metrics, "handshakes_per_s_"):
        return None

    def draw(ax: Axes) -> int:
        drawn = _draw(ax, metrics, [
            ("X25519 + ChaCha20-Poly1305 alone (ceiling)", "ceiling_handshakes_per_s_", "", CEILING),
            ("StreamerCore: handshake", "handshakes_per_s_", "", {}),
            ("StreamerCore: whole session set-up", "setup_per_s_", "", {}),
        ])
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("device sessions already established")
        ax.set_ylabel("per CPU-second")
        ax.set_title("Handshake rate")
        return drawn
    return "handshakes.png", draw


def _alert(results: Mapping[str, Metrics]) -> tuple[str, Callable[[Axes], int]] | None:
    metrics = results.get("alert")
    if not metrics or not series(metrics, "p99_ms_"):
        return None

    def draw(ax: Axes) -> int:
        drawn = _draw(ax, metrics, [
            ("alert held, p50", "p50_ms_", "", {}),
            ("alert held, p99", "p99_ms_", "", {}),
            ("first audio packet, p99", "packet_p99_ms_", "", {}),
            ("first playout, p99", "playout_p99_ms_", "", {}),
            ("C sendmmsg, one datagram to each device (floor)", "floor_ms_", "", CEILING),
        ])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("devices")
        ax.set_ylabel("ms after the server accepted the alert")
        ax.set_title("Alert delivery against devices")
        return drawn
    return "alert.png", draw


def _frames(results: Mapping[str, Metrics]) -> tuple[str, Callable[[Axes], int]] | None:
    metrics = results.get("scale")
    if not metrics or not series(metrics, "frame_cpu_pct_", "ms"):
        return None

    def draw(ax: Axes) -> int:
        ours = series(metrics, "frame_us_per_pkt_", "ms")
        ceiling = series(metrics, "frame_ceiling_us_per_pkt_", "ms")
        pps = dict(series(metrics, "frame_pps_", "ms"))
        xs = [x for x, _ in ours]
        ax.plot(xs, [pps[x] * v / 1e4 for x, v in ours], marker="o", label="ours: % of one core")
        ax.plot([x for x, _ in ceiling], [pps[x] * v / 1e4 for x, v in ceiling], marker="o",
                label="C sendmmsg (ceiling): % of one core", **CEILING)
        devices = _value(metrics.get("frame_devices"))
        ax.set_xticks(xs)
        ax.set_xlabel(f"frame duration (ms), {devices:.0f} devices" if devices else "frame duration (ms)")
        ax.set_ylabel("fan-out CPU, % of one core")
        ax.set_title("Frame size trade-off")
        return 2
    return "frames.png", draw


def _multicast(results: Mapping[str, Metrics]) -> tuple[str, Callable[[Axes], int]] | None:
    metrics = results.get("scale")
    if not metrics or not series(metrics, "multicast_us_per_frame_"):
        return None

    def draw(ax: Axes) -> int:
        drawn = _draw(ax, metrics, [
            ("unicast fan-out (sendmmsg)", "unicast_us_per_frame_", "", {}),
            ("one multicast group", "multicast_us_per_frame_", "", {}),
        ])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("receivers in the zone")
        ax.set_ylabel("sender CPU µs per frame (loopback)")
        ax.set_title("Unicast against multicast per zone")
        return drawn
    return "multicast.png", draw


def _codec(results: Mapping[str, Metrics]) -> tuple[str, Callable[[Axes], int]] | None:
    metrics = results.get("codec")
    if not metrics or not series(metrics, "encode_us_", "ms"):
        return None

    def draw(ax: Axes) -> int:
        drawn = _draw(ax, metrics, [
            ("encode, ours", "encode_us_", "ms", {}),
            ("encode, PyAV (peer)", "pyav_encode_us_", "ms", {"linestyle": "--"}),
            ("decode, ours", "decode_us_", "ms", {}),
            ("decode, PyAV (peer)", "pyav_decode_us_", "ms", {"linestyle": "--"}),
        ])
        ax.set_xlabel("frame duration (ms)")
        ax.set_ylabel("µs per frame")
        ax.set_title("Opus codec cost")
        return drawn
    return "codec.png", draw


def _latency(results: Mapping[str, Metrics]) -> tuple[str, Callable[[Axes], int]] | None:
    metrics = results.get("latency")
    if not metrics or not series(metrics, "loa_d", "_p50_ms"):
        return None

    def draw(ax: Axes) -> int:
        drawn = _draw(ax, metrics, [
            ("loa p50 (against its playout delay)", "loa_d", "_p50_ms", {}),
            ("loa p99", "loa_d", "_p99_ms", {"linestyle": ":"}),
            ("GStreamer p50 (against rtpjitterbuffer latency)", "gst_jb", "_p50_ms", {"linestyle": "--"}),
            ("GStreamer p99", "gst_jb", "_p99_ms", {"linestyle": "-."}),
        ])
        ax.set_xlabel("configured buffer: loa playout delay / GStreamer jitter-buffer latency (ms)")
        ax.set_ylabel("RTP send -> playout (ms)")
        ax.set_title("Live announcement latency, same RTP stream (loopback)")
        return drawn
    return "latency.png", draw


PLOTS = (_fanout_devices, _fanout_streams, _sessions_memory, _handshakes, _alert, _frames, _multicast, _codec,
         _latency)


def write_plots(results: Mapping[str, Metrics], out: Path) -> list[Path]:
    """Write every plot the results allow into ``out``; the paths written."""
    written = []
    for plot in PLOTS:
        found = plot(results)
        if found is None:
            continue
        name, draw = found
        fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
        try:
            if draw(ax):
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(fontsize="small")
                fig.tight_layout()
                path = out / name
                fig.savefig(path)
                written.append(path)
        finally:
            plt.close(fig)
    return written
