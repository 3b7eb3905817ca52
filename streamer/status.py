"""What the streamer knows about each device, its events, and the frozen snapshots it reports.

:class:`DeviceRuntime` is the mutable per-device record the core keeps (session, last report, counters);
:class:`DeviceStatus` is its frozen snapshot for the control plane. Events (frozen dataclasses) are what a
control plane wants to hear about without polling: devices coming and going, reports, content, broadcasts
ending.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from loa.protocol.control import Hello, State
from loa.protocol.control import TelemetryValues as Telemetry
from loa.protocol.session import device_id

__all__ = [
    "SENT_SWEEP_MIN",
    "BroadcastEnded",
    "BroadcastStatus",
    "ContentReported",
    "DeviceEnrolled",
    "DeviceOffline",
    "DeviceOnline",
    "DeviceRuntime",
    "DeviceStatus",
    "HelloReceived",
    "StateReported",
    "StreamerEvent",
    "StreamerStatistics",
    "TelemetryReported",
]


@dataclass(frozen=True, slots=True)
class DeviceOnline:
    device: bytes
    address: tuple[str, int] | None
    boot: int
    restarted: bool


@dataclass(frozen=True, slots=True)
class DeviceOffline:
    device: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class DeviceEnrolled:
    device: bytes
    zone: str
    kind: str


@dataclass(frozen=True, slots=True)
class HelloReceived:
    device: bytes
    hello: Hello


@dataclass(frozen=True, slots=True)
class TelemetryReported:
    device: bytes
    values: Telemetry


@dataclass(frozen=True, slots=True)
class StateReported:
    device: bytes
    state: State


@dataclass(frozen=True, slots=True)
class ContentReported:
    device: bytes
    cid: bytes
    ok: bool


@dataclass(frozen=True, slots=True)
class BroadcastEnded:
    bid: int
    reason: str  # "finished", "stopped", "cancelled", "expired", "played"


StreamerEvent = (
    DeviceOnline | DeviceOffline | DeviceEnrolled | HelloReceived | TelemetryReported | StateReported
    | ContentReported | BroadcastEnded
)


# See DeviceRuntime.sent_sweep_at. Ten: CPython's table for up to ten entries takes 288 bytes and for eleven 568, over
# the 512 bytes the interpreter serves from its own pools; a larger table would come from the C heap, one per device
# at every alert, and go at the next sweep (tests/streamer/test_core_sessions.py).
SENT_SWEEP_MIN = 10


@dataclass(slots=True)
class DeviceRuntime:
    """The core's mutable record of one device it has heard from or addresses."""

    online: bool = False
    address: tuple[str, int] | None = None
    last_seen: float | None = None
    boot: int | None = None
    hello: Hello | None = None
    telemetry: Telemetry | None = None
    telemetry_at: float | None = None
    state: State | None = None
    loss: float | None = None
    cumulative_lost: int | None = None
    jitter_ms: float | None = None
    nacked: int = 0
    retransmitted: int = 0
    chunks: int = 0
    played: int = 0
    state_sent: bool = False
    provisional_until: float | None = None
    # The containers below are made at their first use: a server holds one record per device (memory per
    # session), and most devices never need most of them.
    prefetched: set[bytes] | None = None
    have: dict[bytes, bool] | None = None
    drops: Counter[str] | None = None
    sent: dict[Hashable, int] | None = None  # state messages by tag -> last id (see DeviceSessions.send_tracked)
    sent_sweep_at: int = SENT_SWEEP_MIN  # the size of ``sent`` at which its acknowledged entries go (sessions._track)
    indexes: tuple[int, ...] = ()  # the local indexes of its latest sessions (see DeviceSessions._learn_index)
    offline_at: float | None = None  # when it lost its last session of this run (None: online, or none this run)
    unsent: dict[Hashable, list[int]] | None = None  # while without a session: ids sent since, by subject

    def mark_prefetched(self, cid: bytes) -> None:
        """The device was asked to prefetch ``cid`` (it may then fetch its pieces)."""
        if self.prefetched is None:
            self.prefetched = set()
        self.prefetched.add(cid)

    def is_prefetched(self, cid: bytes) -> bool:
        return self.prefetched is not None and cid in self.prefetched

    def holds(self, cid: bytes) -> bool:
        """The device said it holds ``cid`` whole."""
        return bool(self.have and self.have.get(cid))

    def set_have(self, cid: bytes, ok: bool) -> None:
        if self.have is None:
            self.have = {}
        self.have[cid] = ok

    def count_drop(self, name: str) -> None:
        if self.drops is None:
            self.drops = Counter()
        self.drops[name] += 1


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A snapshot of one device as the streamer sees it (``last_seen`` on the streamer's monotonic clock)."""

    public_key: bytes
    device_id: str
    zone: str | None
    name: str
    kind: str | None
    enrolled: bool
    online: bool
    address: tuple[str, int] | None
    last_seen: float | None
    boot: int | None
    model: str | None
    firmware: str | None
    caps: tuple[str, ...]
    telemetry: Telemetry | None
    state: State | None
    loss: float | None
    cumulative_lost: int | None
    jitter_ms: float | None
    nacked: int
    retransmitted: int
    chunks: int
    broadcasts: tuple[int, ...]
    drops: Mapping[str, int]

    @classmethod
    def of(cls, key: bytes, rt: DeviceRuntime, *, zone: str | None, name: str, kind: str | None, enrolled: bool,
           broadcasts: tuple[int, ...]) -> DeviceStatus:
        hello = rt.hello
        return cls(
            key, device_id(key), zone, name, kind, enrolled, rt.online, rt.address, rt.last_seen, rt.boot,
            hello.model if hello else None, hello.fw if hello else None, hello.caps if hello else (),
            rt.telemetry, rt.state, rt.loss, rt.cumulative_lost, rt.jitter_ms, rt.nacked, rt.retransmitted,
            rt.chunks, broadcasts, MappingProxyType(dict(rt.drops or {})),
        )


@dataclass(frozen=True, slots=True)
class BroadcastStatus:
    bid: int
    kind: str  # "live", "alert" or "play"
    name: str
    zones: tuple[str, ...]
    cls: int
    lvl: int
    policy: str
    members: int
    online_members: int
    ssrc: int | None
    frames: int
    silent_frames: int
    gaps: int
    late_frames: int
    retransmitted: int
    rotating: bool


@dataclass(frozen=True, slots=True)
class StreamerStatistics:
    """Counters since the core started: datagrams and bytes in and out (control, retransmissions, not the
    fan-out itself), drops by error name (session, control and the core's own), control messages received by type,
    sessions started (completed handshakes), reliable control messages sent, retransmitted and received twice,
    and current sizes."""

    datagrams_in: int
    bytes_in: int
    datagrams_out: int
    bytes_out: int
    drops: Mapping[str, int]
    devices_online: int
    broadcasts: int
    retransmitted: int
    chunks_sent: int
    time_responses: int
    messages: Mapping[str, int] = field(default_factory=dict)
    sessions_started: int = 0
    control_sent: int = 0  # reliable control messages sent (first transmissions)
    control_retransmitted: int = 0  # their retransmissions (no acknowledgement within the RTO)
    control_duplicates: int = 0  # reliable messages received that had been delivered already
