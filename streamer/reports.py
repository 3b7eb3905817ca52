"""What enrolled devices send the streamer, and its answers: :class:`DeviceReports`.

A device's control messages after its hello (PROTOCOL.md section 4): clock probes (answered at once with the
probe's arrival time, section 4.7), telemetry, state, content held, fetches of prefetched content (answered with
chunks, at a bounded rate per device), RTCP (receiver reports and NACKs: the stored SRTP bytes sent again to that
device only, each at most once per its RTT, section 5.5.3) and played logs. Hello and bye are the session layer's
(:mod:`loa.streamer.sessions`).

Failure semantics: a message this server cannot act on (a fetch of content not prefetched to the device or not
readable, beyond the device's rate, a NACK for a stream it is not a member of, RTCP that does not parse) changes
nothing and is counted, by name, in the device's drops and the streamer's.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable

from loa.protocol.control import (
    Chunk,
    Fetch,
    Have,
    Leave,
    Message,
    Played,
    Rtcp,
    State,
    Telemetry,
    TimeReq,
    TimeResp,
)
from loa.protocol.errors import RemoteProtocolError
from loa.protocol.rtcp import GenericNack, ReceiverReport, parse_rtcp
from loa.streamer.content import ChunkLimiter, ContentError, ContentStore
from loa.streamer.live import LiveBroadcasts
from loa.streamer.plays import ScheduledPlays
from loa.streamer.sessions import DeviceSessions
from loa.streamer.settings import Settings
from loa.streamer.status import ContentReported, DeviceRuntime, StateReported, StreamerEvent, TelemetryReported

__all__ = ["DEFAULT_RTT_S", "DeviceReports"]

Address = tuple[str, int]
DEFAULT_RTT_S = 0.2  # a NACK's retransmission interval for a device whose RTT is not measured yet


class DeviceReports:
    """Acts on the messages of enrolled devices; its answers go through the sessions, except retransmissions."""

    def __init__(self, sessions: DeviceSessions, *, live: LiveBroadcasts, plays: ScheduledPlays, settings: Settings,
                 events: deque[StreamerEvent], drops: Counter[str], server_time: Callable[[float], int],
                 send_clock: Callable[[], float] | None) -> None:
        self.sessions = sessions
        self.live = live
        self.plays = plays
        self._events = events
        self._drops = drops
        self._server_time = server_time
        self._send_clock = send_clock
        self._limiter = ChunkLimiter(rate=settings.chunk_rate, burst=settings.chunk_burst)
        self.arrived: float | None = None  # when the datagram being handled arrived, if known (set by the caller)
        self.retransmissions: list[tuple[bytes, Address]] = []  # SRTP bytes again, unicast; drained by the caller
        self.chunks = self.time_resps = self.retransmitted = 0

    @property
    def content(self) -> ContentStore | None:
        return self.plays.content

    def forget(self, device: bytes) -> None:
        """The device's session ended: its fetch allowance starts afresh next time."""
        self._limiter.forget(device)

    def on_message(self, device: bytes, message: Message, now: float) -> None:
        """Act on one message of an enrolled device (hello and bye are the session layer's)."""
        rt = self.sessions.runtime(device)
        match message:
            case TimeReq():
                t2 = self._server_time(now if self.arrived is None else self.arrived)
                t3 = self._server_time(self._send_clock()) if self._send_clock is not None else t2
                if self.sessions.try_send(device, TimeResp(t1=message.t1, t2=t2, t3=max(t2, t3)), now):
                    self.time_resps += 1
            case Telemetry():
                rt.telemetry, rt.telemetry_at = message.v, now
                self._events.append(TelemetryReported(device, message.v))
            case State():
                rt.state = message
                self._events.append(StateReported(device, message))
                if message.bid is not None and message.bid not in self.live and message.bid not in self.plays:
                    # A broadcast this server does not run: one of an earlier boot (PROTOCOL.md section 7.6), or
                    # one that has just ended. Without a leave the device would hold it, and anything of its rank
                    # the server now sends would wait behind it.
                    self.sessions.try_send(device, Leave(bid=message.bid), now)
            case Have():
                rt.set_have(message.cid, message.ok)
                self._events.append(ContentReported(device, message.cid, message.ok))
                if message.ok:
                    self.plays.on_have(device, message.cid, now)
            case Fetch():
                self._on_fetch(device, rt, message, now)
            case Rtcp():
                self._on_rtcp(device, rt, message.pkt, now)
            case Played():
                rt.played += len(message.log)
            case _:
                pass

    def _drop(self, rt: DeviceRuntime, name: str) -> None:
        rt.count_drop(name)
        self._drops[name] += 1

    def _on_fetch(self, device: bytes, rt: DeviceRuntime, fetch: Fetch, now: float) -> None:
        """Answer with the piece asked for, only of content prefetched to this device, at a bounded rate."""
        content = self.content
        if content is None or not rt.is_prefetched(fetch.cid) or content.get(fetch.cid) is None:
            self._drop(rt, "fetch_refused")
            return
        if not self._limiter.allow(device, now):
            self._drop(rt, "fetch_rate_limited")
            return
        try:
            data = content.read(fetch.cid, fetch.off, fetch.len)
        except ContentError:
            self._drop(rt, "content_unreadable")
            return
        if self.sessions.try_send(device, Chunk(cid=fetch.cid, off=fetch.off, data=data), now):
            rt.chunks += 1
            self.chunks += 1

    def _on_rtcp(self, device: bytes, rt: DeviceRuntime, pkt: bytes, now: float) -> None:
        try:
            packets = parse_rtcp(pkt)
        except RemoteProtocolError as exc:
            self._drop(rt, type(exc).__name__)
            return
        for packet in packets:
            if isinstance(packet, GenericNack):
                self._on_nack(device, rt, packet, now)
            elif isinstance(packet, ReceiverReport):
                for block in packet.reports:
                    if self.live.ring_for(device, block.ssrc, now) is not None:
                        rt.loss = block.fraction_lost / 256
                        rt.cumulative_lost = block.cumulative_lost
                        rt.jitter_ms = block.jitter / 48.0

    def _on_nack(self, device: bytes, rt: DeviceRuntime, nack: GenericNack, now: float) -> None:
        """Resend the stored SRTP bytes to this device only, each at most once per its RTT (section 5.5.3)."""
        ring = self.live.ring_for(device, nack.media_ssrc, now)
        address = self.sessions.online_address(device)
        if ring is None or address is None:
            self._drop(rt, "nack_ignored")
            return
        srtt = self.sessions.srtt(device)
        interval = DEFAULT_RTT_S if srtt is None else srtt
        for seq in nack.lost[: ring.capacity]:
            rt.nacked += 1
            data = ring.resend(seq, device, now, interval)
            if data is not None:
                self.retransmissions.append((data, address))
                rt.retransmitted += 1
                self.retransmitted += 1
