"""What a device reports (PROTOCOL.md section 4.8) and what it says about itself to tests and fleets.

:func:`telemetry_values` builds a ``telemetry`` report with every key of the table (the simulated hardware of
:class:`~loa.devices.telemetry.Hardware` fills what a reference device cannot measure); :func:`faults`,
:func:`drops` and :func:`stream_state` are its parts; :func:`device_statistics` is the frozen snapshot
:class:`DeviceStatistics`. All of them read a :class:`~loa.devices.core.SpeakerCore` and change nothing in it,
except that a telemetry report starts a new interval for its ``loss`` figure.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loa.devices.synth import fm_rssi
from loa.devices.telemetry import FAULT_ORDER
from loa.protocol.control import TelemetryValues

if TYPE_CHECKING:
    from loa.devices.core import SpeakerCore

__all__ = ["DeviceStatistics", "device_statistics", "drops", "faults", "media_totals", "stream_state",
           "telemetry_values"]

MAX_DROP_NAMES = 64  # a telemetry map holds at most 64 entries (section 4.1)
_LIVE_COUNTERS = ("received", "bytes", "late", "played", "fec", "plc", "skipped", "unplayed", "nacks_sent")


@dataclass(frozen=True, slots=True)
class DeviceStatistics:
    """A snapshot of a device since its current boot (``reboots`` counts the simulated ones). Media counters:
    ``received`` packets, ``played``/``fec``/``plc`` frames by how they were made, ``late`` packets that came
    after their play time, ``skipped`` frames passed over (behind the live position), ``unplayed`` frames still
    buffered when their broadcast ended, ``gaps`` sequence numbers found missing on arrival out of ``expected``."""

    connected: bool
    boot: int
    reboots: int
    current: int | None
    waiting: tuple[int, ...]
    mode: str
    stream: str
    clock_ready: bool
    clock_offset_ns: int
    clock_error_ns: int
    rtt_s: float
    frames: int
    received: int
    rx_bytes: int
    played: int
    fec: int
    plc: int
    late: int
    skipped: int
    unplayed: int
    gaps: int
    expected: int
    nacks_sent: int
    alerts_accepted: int
    alerts_refused: dict[str, int]
    watchdog_fires: int
    faults: tuple[str, ...]
    drops: dict[str, int]
    telemetry_sent: int


def media_totals(core: SpeakerCore) -> Counter[str]:
    """Media counters of the live streams held now plus those already forgotten."""
    totals = Counter(core.retired)
    for broadcast in core.broadcasts.values():
        live = broadcast.live
        if live is not None:
            stats = live.statistics()
            for name in _LIVE_COUNTERS:
                totals[name] += getattr(stats, name)
            totals["gap_missing"] += live.gap_missing
            totals["expected"] += live.expected
    return totals


def faults(core: SpeakerCore) -> tuple[str, ...]:
    active = set()
    if core.watchdog.fired:
        active.add("watchdog")
    if any(b.live is not None and b.live.extra_ns for b in core.broadcasts.values()):
        active.add("late_path")  # a live stream plays later than its delay_ms: its path is slower
    if not core.clock.ready:
        active.add("clock")
    if core.storage_fault:
        active.add("storage")
    return tuple(f for f in FAULT_ORDER if f in active)


def drops(core: SpeakerCore) -> dict[str, int]:
    """Everything dropped since boot, by error name: datagrams, control messages, media, alerts."""
    merged = Counter(core.drop_counts)
    merged.update(core.conn.statistics().drops)
    channel = core.conn.channel.statistics()
    if channel.duplicates:
        merged["duplicate"] += channel.duplicates
    if channel.unknown:
        merged["unknown_message"] += channel.unknown
    if core.probe.stale:
        merged["stale_time_resp"] += core.probe.stale
    return dict(sorted(merged.items())[:MAX_DROP_NAMES])


def stream_state(core: SpeakerCore) -> str:
    """Telemetry ``stream``: ``idle`` (no live broadcast current), ``buffering``, ``playing`` or ``stalled``."""
    current = core.arbiter.current
    if current is None or not core.broadcasts[current].is_live:
        return "idle"
    if core.watchdog.fired:
        return "stalled"
    return "playing" if core.state == (current, "ip") else "buffering"


def telemetry_values(core: SpeakerCore, now: float) -> TelemetryValues:
    """A full report; its ``loss`` covers the packets since the previous report."""
    hw = core.hardware
    totals = media_totals(core)
    missing, expected = totals["gap_missing"], totals["expected"]
    seen_missing, seen_expected = core.loss_seen
    interval = expected - seen_expected
    loss = min(1.0, max(0.0, (missing - seen_missing) / interval)) if interval > 0 else 0.0
    core.loss_seen = (missing, expected)
    estimate = core.clock.estimator.estimate()
    jitter = max((b.live.statistics().jitter_ms for b in core.broadcasts.values() if b.live), default=0.0)
    khz = core.settings.tuned_khz
    played_samples = totals["received"] * 960 if core.count_only else core.output.samples
    return TelemetryValues(
        imei=hw.imei, serial=hw.serial, fw=core.fw, uptime_s=max(0, int(now - core.boot_at)), net=hw.net,
        stream=stream_state(core), mode=core.state[1] if core.state is not None else "idle",
        rx_bytes=totals["bytes"], stream_s=played_samples // 48_000, volume=core.settings.volume,
        muted=core.settings.muted, amp=core.amp_state(now), line=hw.line, power=hw.power,
        battery_pct=hw.battery_pct, temp_c=hw.temp_c, store_free=core.store.free(), fm_khz=khz, fm_rssi=fm_rssi(khz),
        fm_snr=hw.fm_snr, lat=hw.lat, lon=hw.lon, cell_dbm=hw.cell_dbm, cell_op=hw.cell_op, cell_rat=hw.cell_rat,
        cell_band=hw.cell_band, loss=loss, jitter_ms=min(60000.0, jitter), late=totals["late"],
        fec_recovered=totals["fec"], plc=totals["plc"], nacks_sent=totals["nacks_sent"],
        clk_offset_ns=estimate.offset_ns, clk_drift_ppm=max(-1000.0, min(1000.0, estimate.drift_ppm)),
        clk_err_ns=max(0, estimate.error_ns), drops=drops(core), faults=faults(core),
    )


def device_statistics(core: SpeakerCore) -> DeviceStatistics:
    totals = media_totals(core)
    estimate = core.clock.estimator.estimate()
    return DeviceStatistics(
        connected=core.conn.connected, boot=core.boot, reboots=core.reboots, current=core.arbiter.current,
        waiting=core.arbiter.waiting, mode=core.state[1] if core.state else "idle", stream=stream_state(core),
        clock_ready=core.clock.ready, clock_offset_ns=estimate.offset_ns, clock_error_ns=estimate.error_ns,
        rtt_s=core.rtt, frames=core.output.frames, received=totals["received"], rx_bytes=totals["bytes"],
        played=totals["played"], fec=totals["fec"], plc=totals["plc"], late=totals["late"],
        skipped=totals["skipped"], unplayed=totals["unplayed"], gaps=totals["gap_missing"], expected=totals["expected"],
        nacks_sent=totals["nacks_sent"], alerts_accepted=core.alerts_accepted,
        alerts_refused=dict(core.alerts_refused), watchdog_fires=core.watchdog.fires, faults=faults(core),
        drops=drops(core), telemetry_sent=core.report.reports,
    )
