"""The value tables of ``config`` (spec section 4.6) and ``telemetry`` (spec section 4.8), as data.

Every key is optional on the wire. A ``config`` message sets the keys it carries and leaves the others as they
were; a device ignores keys it does not know. A ``telemetry`` report carries the keys the device can measure;
an absent key means "not measured / not fitted". :data:`CONFIG_FIELDS` and :data:`TELEMETRY_FIELDS` give each
key's msgpack kind, range, unit, default (config) and meaning; the dataclasses mirror them one attribute per key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loa.protocol._schema import I64_MAX, I64_MIN, U64_MAX, Field, Kind, NotAbove, Rule

__all__ = ["CONFIG_FIELDS", "CONFIG_RULES", "TELEMETRY_FIELDS", "ConfigValues", "TelemetryValues"]


def _f(kind: Kind, lo: float | None = None, hi: float | None = None, unit: str = "", doc: str = "", **kw: Any) -> Field:
    return Field(kind, lo, hi, optional=True, unit=unit, doc=doc, **kw)


_U, _I, _B, _F, _S = Kind.UINT, Kind.INT, Kind.BOOL, Kind.FLOAT, Kind.STR

CONFIG_FIELDS: dict[str, Field] = {
    "telemetry_s": _f(_U, 5, 86400, "s", "interval between telemetry reports", default=60),
    "keepalive_s": _f(_U, 5, 300, "s", "keepalive interval (section 3.8)", default=15),
    "delay_ms": _f(
        _U,
        0,
        10000,
        "ms",
        "playout delay the server puts in join; the device sizes its jitter "
        "buffer to hold at least delay_ms + 500 ms of audio",
        default=500,
    ),
    "watchdog_ms": _f(_U, 200, 60000, "ms", "silence on a joined stream before fallback (section 5.6)", default=1500),
    "fallback": _f(_S, choices=("local", "fm", "silence"), doc="what the watchdog falls back to", default="fm"),
    "fallback_khz": _f(_U, 64000, 108000, "kHz", "FM station for the fm fallback; absent: first preset"),
    "exercise": _f(_B, doc="play alerts whose status is exercise or test", default=False),
    "zones": _f(
        Kind.ARRAY, 1, 8, doc="zone codes from the province down to the device's own zone", items=Field(_S, 1, 64)
    ),
    "preroll_ms": _f(_U, 0, 120000, "ms", "amplifier warm-up before audio is audible", default=0),
    "tz": _f(_S, 1, 64, doc="IANA time zone for local display", default="Asia/Ho_Chi_Minh"),
    "vol_min": _f(_U, 0, 100, "%", "lowest volume the device applies", default=0),
    "vol_max": _f(_U, 0, 100, "%", "highest volume the device applies", default=100),
}

CONFIG_RULES: tuple[Rule, ...] = (NotAbove("vol_min", "vol_max"),)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigValues:
    telemetry_s: int | None = None
    keepalive_s: int | None = None
    delay_ms: int | None = None
    watchdog_ms: int | None = None
    fallback: str | None = None
    fallback_khz: int | None = None
    exercise: bool | None = None
    zones: tuple[str, ...] | None = None
    preroll_ms: int | None = None
    tz: str | None = None
    vol_min: int | None = None
    vol_max: int | None = None


_COUNT = "count since the device started"

TELEMETRY_FIELDS: dict[str, Field] = {
    "imei": _f(_S, 14, 16, doc="IMEI of the cellular modem"),
    "serial": _f(_S, 1, 64, doc="vendor serial number"),
    "fw": _f(_S, 1, 64, doc="firmware version"),
    "uptime_s": _f(_U, 0, U64_MAX, "s", "time since the device started"),
    "net": _f(_S, choices=("eth", "wifi", "cell", "other"), doc="network interface in use"),
    "stream": _f(_S, choices=("idle", "buffering", "playing", "stalled"), doc="state of the joined stream"),
    "mode": _f(_S, choices=("ip", "fm", "mic", "line", "local", "idle"), doc="what the output plays"),
    "rx_bytes": _f(_U, 0, U64_MAX, "bytes", "media bytes received, " + _COUNT),
    "stream_s": _f(_U, 0, U64_MAX, "s", "seconds of stream audio played, " + _COUNT),
    "volume": _f(_U, 0, 100, "%", "output volume"),
    "muted": _f(_B, doc="output muted"),
    "amp": _f(_S, choices=("off", "warming", "on", "fault"), doc="amplifier state"),
    "line": _f(_S, choices=("ok", "open", "short", "unknown"), doc="speaker line state"),
    "power": _f(_S, choices=("mains", "battery", "lost"), doc="mains, on battery, or mains and battery failing"),
    "battery_pct": _f(_U, 0, 100, "%", "battery charge"),
    "temp_c": _f(_I, -60, 150, "°C", "cabinet temperature"),
    "store_free": _f(_U, 0, U64_MAX, "bytes", "free space for prefetched content"),
    "fm_khz": _f(_U, 64000, 108000, "kHz", "FM tuner frequency"),
    "fm_rssi": _f(_I, -128, 127, "dBµV", "FM received signal strength"),
    "fm_snr": _f(_I, -128, 127, "dB", "FM signal-to-noise ratio"),
    "lat": _f(_I, -900_000_000, 900_000_000, "1e-7 °", "GPS latitude (absent without a fix)"),
    "lon": _f(_I, -1_800_000_000, 1_800_000_000, "1e-7 °", "GPS longitude (absent without a fix)"),
    "cell_dbm": _f(_I, -160, 0, "dBm", "cellular signal (RSRP on 4G/5G, RSCP on 3G, RSSI on 2G)"),
    "cell_op": _f(_S, 1, 32, doc="cellular operator, MCC-MNC (e.g. 45204) or name"),
    "cell_rat": _f(_S, choices=("2g", "3g", "4g", "5g"), doc="cellular radio access technology"),
    "cell_band": _f(_S, 1, 16, doc="cellular band (e.g. B3)"),
    "loss": _f(_F, 0.0, 1.0, "fraction", "media packets lost before recovery, over the last interval"),
    "jitter_ms": _f(_F, 0.0, 60000.0, "ms", "RTP interarrival jitter (RFC 3550 section 6.4.1)"),
    "late": _f(_U, 0, U64_MAX, "frames", "frames that arrived after their play time, " + _COUNT),
    "fec_recovered": _f(_U, 0, U64_MAX, "frames", "frames rebuilt from in-band FEC, " + _COUNT),
    "plc": _f(_U, 0, U64_MAX, "frames", "frames concealed, " + _COUNT),
    "nacks_sent": _f(_U, 0, U64_MAX, "packets", "sequence numbers NACKed, " + _COUNT),
    "clk_offset_ns": _f(_I, I64_MIN, I64_MAX, "ns", "estimated server time minus device clock"),
    "clk_drift_ppm": _f(_F, -1000.0, 1000.0, "ppm", "estimated device clock rate error"),
    "clk_err_ns": _f(_U, 0, U64_MAX, "ns", "estimated error of the clock estimate"),
    "drops": _f(
        Kind.MAP,
        0,
        64,
        "count",
        "datagrams and messages dropped, by error name, " + _COUNT,
        items=Field(_U, 0, U64_MAX),
    ),
    "faults": _f(Kind.ARRAY, 0, 64, doc="active faults (section 4.8)", items=Field(_S, 1, 32)),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryValues:
    imei: str | None = None
    serial: str | None = None
    fw: str | None = None
    uptime_s: int | None = None
    net: str | None = None
    stream: str | None = None
    mode: str | None = None
    rx_bytes: int | None = None
    stream_s: int | None = None
    volume: int | None = None
    muted: bool | None = None
    amp: str | None = None
    line: str | None = None
    power: str | None = None
    battery_pct: int | None = None
    temp_c: int | None = None
    store_free: int | None = None
    fm_khz: int | None = None
    fm_rssi: int | None = None
    fm_snr: int | None = None
    lat: int | None = None
    lon: int | None = None
    cell_dbm: int | None = None
    cell_op: str | None = None
    cell_rat: str | None = None
    cell_band: str | None = None
    loss: float | None = None
    jitter_ms: float | None = None
    late: int | None = None
    fec_recovered: int | None = None
    plc: int | None = None
    nacks_sent: int | None = None
    clk_offset_ns: int | None = None
    clk_drift_ppm: float | None = None
    clk_err_ns: int | None = None
    drops: dict[str, int] | None = None
    faults: tuple[str, ...] | None = None
