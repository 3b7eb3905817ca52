"""The datagram log of one conformance case: every datagram the kit sent or received, in full, with its time.

Entries are ``(t, direction, hex, note)``: ``t`` seconds since the case started (kit clock), ``direction`` one of
``"kit>dev"`` (the kit's server socket to the device), ``"dev>kit"``, ``"alt>dev"`` / ``"dev>alt"`` (the kit's
second, unverified socket, which plays a stranger), and ``note`` a one-line reading of the bytes (datagram type,
transport counter, RTP sequence number, the control messages the kit decoded from it). The log is bounded
(``limit`` entries; later datagrams are counted in :attr:`DatagramLog.omitted`, never silently lost).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["DatagramLog", "LogEntry", "describe"]

DEFAULT_LIMIT = 4000


@dataclass(slots=True)
class LogEntry:
    t: float
    direction: str
    data: bytes
    note: str

    def as_json(self) -> dict[str, object]:
        return {"t": round(self.t, 6), "dir": self.direction, "len": len(self.data), "hex": self.data.hex(),
                "note": self.note}


class DatagramLog:
    """Datagrams of one case, oldest first."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.start = time.monotonic()
        self.entries: list[LogEntry] = []
        self.limit = limit
        self.omitted = 0

    def add(self, direction: str, data: bytes, note: str = "") -> LogEntry | None:
        if len(self.entries) >= self.limit:
            self.omitted += 1
            return None
        entry = LogEntry(time.monotonic() - self.start, direction, bytes(data), note or describe(data))
        self.entries.append(entry)
        return entry

    def bytes_by_direction(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for entry in self.entries:
            totals[entry.direction] = totals.get(entry.direction, 0) + len(entry.data)
        return totals


_LOA_TYPES = {1: "HandshakeInit", 2: "HandshakeResponse", 3: "CookieReply", 4: "Transport", 5: "AlertBeacon"}


def describe(data: bytes) -> str:
    """A one-line reading of a datagram's header (no decryption)."""
    if not data:
        return "empty"
    first = data[0]
    if first in _LOA_TYPES:
        name = _LOA_TYPES[first]
        if first == 4 and len(data) >= 16:
            index = int.from_bytes(data[4:8], "big")
            counter = int.from_bytes(data[8:16], "big")
            kind = "keepalive" if len(data) == 32 else f"{len(data) - 32} B"
            return f"{name} idx={index:08x} ctr={counter} ({kind})"
        return f"{name} ({len(data)} B)"
    if 0x80 <= first <= 0xBF and len(data) >= 2:
        if 192 <= data[1] <= 223:
            return f"RTCP pt={data[1]} ({len(data)} B)"
        if len(data) >= 12:
            seq = int.from_bytes(data[2:4], "big")
            ts = int.from_bytes(data[4:8], "big")
            ssrc = int.from_bytes(data[8:12], "big")
            marker = " M" if data[1] & 0x80 else ""
            return f"RTP ssrc={ssrc:08x} seq={seq} ts={ts}{marker} ({len(data)} B)"
    return f"other first byte {first:#04x} ({len(data)} B)"
