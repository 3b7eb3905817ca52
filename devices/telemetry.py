"""Telemetry of the reference device (PROTOCOL.md section 4.8): simulated hardware readings and the schedule.

The reference device has no modem, GPS, tuner or sensors, so :class:`Hardware` simulates steady, plausible
readings derived from the device's key (an IMEI with a valid Luhn digit, a position in Vietnam, a 4G cell, a
cabinet temperature), so every key of the telemetry table has a value and two devices differ.
:class:`ReportSchedule` applies the sending rules: every ``telemetry_s``, at once when the faults change, and
never a report queued behind an unacknowledged one (the latest snapshot goes when the earlier is acknowledged).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["FAULT_ORDER", "Hardware", "ReportSchedule", "luhn_digit"]

FAULT_ORDER = ("watchdog", "late_path", "line_open", "line_short", "amp", "power", "fm", "storage", "clock", "gps",
               "overheat", "enclosure")


def luhn_digit(digits: str) -> str:
    """The Luhn check digit of ``digits`` (as an IMEI's last digit)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


@dataclass(frozen=True, slots=True)
class Hardware:
    """Simulated readings of the parts a speaker cluster reports."""

    imei: str
    serial: str
    net: str
    line: str
    power: str
    battery_pct: int
    temp_c: int
    lat: int
    lon: int
    cell_dbm: int
    cell_op: str
    cell_rat: str
    cell_band: str
    fm_snr: int

    @classmethod
    def simulated(cls, public_key: bytes) -> Hardware:
        h = hashlib.blake2s(b"loa reference hardware" + public_key).digest()
        n = int.from_bytes(h[:8], "big")
        body = "35693803" + f"{n % 1_000_000:06d}"
        return cls(
            imei=body + luhn_digit(body),
            serial=f"LOA-REF-{h[8:11].hex().upper()}",
            net="cell",
            line="ok",
            power="mains",
            battery_pct=100,
            temp_c=30 + h[11] % 15,
            lat=85_000_000 + int.from_bytes(h[12:16], "big") % 149_000_000,  # 8.5-23.4 N, 1e-7 degrees
            lon=1_021_000_000 + int.from_bytes(h[16:20], "big") % 74_000_000,  # 102.1-109.5 E
            cell_dbm=-75 - h[20] % 40,
            cell_op=("45204", "45202", "45201")[h[21] % 3],
            cell_rat="4g",
            cell_band=("B3", "B1", "B8")[h[22] % 3],
            fm_snr=15 + h[23] % 20,
        )


class ReportSchedule:
    """When the next ``telemetry`` is due (local seconds)."""

    __slots__ = ("due", "interval", "last_faults", "pending_id", "reports")

    def __init__(self, interval: float, now: float) -> None:
        self.interval = interval
        self.due = now
        self.pending_id: int | None = None  # the last report's id while it is unacknowledged
        self.last_faults: tuple[str, ...] | None = None
        self.reports = 0

    def faults_changed(self, faults: tuple[str, ...], now: float) -> None:
        if faults != self.last_faults:
            self.due = min(self.due, now)

    def set_interval(self, interval: float, now: float) -> None:
        if interval != self.interval:
            self.interval = interval
            self.due = min(self.due, now + interval)

    def sent(self, msg_id: int | None, faults: tuple[str, ...], now: float) -> None:
        self.pending_id = msg_id
        self.last_faults = faults
        self.due = now + self.interval
        self.reports += 1
