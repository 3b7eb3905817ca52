"""A test-only loa server for the device tests: just enough of the server side of PROTOCOL.md to drive devices.

It is a fake-network endpoint (``loa.protocol.sim``) made of a sans-I/O ServerConnection, one Packetizer and
StreamProtector per stream, a 2 s retransmission buffer answering NACKs, clock answers (t2 = t3 = server time),
and content answers for fetches. Server time is the virtual clock plus ``EPOCH_NS``. :class:`World` puts a server
and simulated devices (each with its own clock offset and drift) on one network.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from loa.codecs import OpusEncoder
from loa.devices.content import MemoryStore
from loa.devices.core import SpeakerCore
from loa.devices.simclock import SimulatedClock
from loa.devices.simnode import SimulatedDevice
from loa.devices.sinks import CounterSink, FrameSink
from loa.protocol.alert import Alert, AlertCancel, key_id, sign_alert, sign_cancel
from loa.protocol.connection import Connected, Received, ServerConnection
from loa.protocol.control import (
    Chunk,
    Config,
    ConfigValues,
    Fetch,
    Join,
    Leave,
    Message,
    Rotate,
    Rtcp,
    SignedAlert,
    SignedAlertCancel,
    TimeReq,
    TimeResp,
)
from loa.protocol.datagram import classify
from loa.protocol.errors import LocalProtocolError, ProtocolError
from loa.protocol.rtcp import GenericNack, SdesChunk, SourceDescription, build_rtcp, parse_rtcp
from loa.protocol.sim import FakeNetwork
from loa.protocol.srtp import StreamProtector
from loa.streamer.packetizer import Packetizer

Address = tuple[str, int]
NS = 1_000_000_000
EPOCH_NS = 1_750_000_000 * NS
SERVER: Address = ("192.0.2.1", 4433)
ZONES = ("79", "760", "26734", "26734-03")
FRAME_S = 0.02
#: A link like the section 4.7 model: a steady least delay (10-10.5 ms each way), queueing of up to 50 ms more
#: in 30 % of the trips. With the default uniform 5-20 ms both ways few probes come near the least delay.
STEADY: dict[str, object] = {"delay": (0.010, 0.0105), "reorder": 0.3, "reorder_delay": 0.05}


def tone_payloads(count: int = 250, freq: float = 440.0, *, fec: bool = True) -> list[bytes]:
    """Opus packets (20 ms, FEC on) of a steady tone."""
    encoder = OpusEncoder(frame_ms=20, bitrate=32_000, application="voip", fec=fec, packet_loss_percent=10)
    n = np.arange(count * 960, dtype=np.float64)
    pcm = (np.sin(2 * np.pi * freq * n / 48_000) * 8000).astype(np.int16)
    return [encoder.encode(pcm[i * 960 : (i + 1) * 960]) for i in range(count)]


@dataclass
class ServerStream:
    bid: int
    members: list[bytes]
    cls: int
    lvl: int
    policy: str
    delay_ms: int
    payloads: list[bytes]
    rng: random.Random
    server_time: Callable[[], int]
    start: float  # true time of the first frame
    zone: str = "26734"
    key: bytes = b""
    packetizer: Packetizer | None = None
    protector: StreamProtector | None = None
    next_at: float = 0.0
    sr_at: float = 0.0
    sent: int = 0
    frames: int | None = None  # stop after this many (None: until stopped)
    paused: bool = False
    rtx: dict[int, tuple[bytes, float]] = field(default_factory=dict)
    ended: bool = False

    def __post_init__(self) -> None:
        self.key = self.rng.randbytes(30)
        self.new_stream()
        self.next_at = self.start

    def new_stream(self) -> None:
        self.packetizer = Packetizer.random_start(self.rng, self.server_time)
        self.protector = StreamProtector(self.key)
        self.rtx.clear()

    @property
    def ssrc(self) -> int:
        assert self.packetizer is not None
        return self.packetizer.ssrc

    def join(self) -> Join:
        return Join(bid=self.bid, ssrc=self.ssrc, key=self.key, cls=self.cls, lvl=self.lvl, policy=self.policy,
                    zone=self.zone, delay_ms=self.delay_ms)

    def due(self) -> float | None:
        if self.ended:
            return None
        return min(self.next_at, self.sr_at) if self.sent else self.next_at

    def produce(self, now: float) -> list[bytes]:
        """Packets (SRTP, SRTCP) due at ``now``."""
        assert self.packetizer is not None
        assert self.protector is not None
        out = []
        while not self.ended and self.next_at <= now + 1e-12:
            if self.frames is not None and self.sent >= self.frames:
                self.ended = True
                break
            if not self.paused:
                payload = self.payloads[self.sent % len(self.payloads)]
                packet = self.protector.protect(self.packetizer.packetize(payload))
                self.rtx[self.packetizer.next_sequence - 1 & 0xFFFF] = (packet, now)
                out.append(packet)
                if self.sent == 0:
                    self.sr_at = now
                self.sent += 1
            self.next_at += FRAME_S
        if self.sent and now >= self.sr_at and not self.ended:
            sdes = SourceDescription((SdesChunk(self.ssrc, ((1, b"loa-test"),)),))
            out.append(self.protector.protect_rtcp(build_rtcp([self.packetizer.sender_report(), sdes])))
            self.sr_at += 1.0
        for seq in [s for s, (_, t) in self.rtx.items() if now - t > 2.0]:
            del self.rtx[seq]
        return out

    def rotate(self) -> Rotate:
        """A new SSRC and key for the same broadcast (section 5.4); the caller sends the `rotate` first."""
        self.key = self.rng.randbytes(30)
        self.packetizer = Packetizer.random_start(self.rng, self.server_time)
        self.protector = StreamProtector(self.key)
        self.sr_at = self.next_at
        return Rotate(bid=self.bid, ssrc=self.ssrc, key=self.key)

    def mark_gap(self) -> None:
        assert self.packetizer is not None
        self.packetizer.mark_gap()


class LoopbackNet:
    """What TestServer needs of a network, for a real socket: the time and an attach point."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    @property
    def now(self) -> float:
        return time.monotonic() - self.t0

    def attach(self, address: object, endpoint: object) -> None:
        self.endpoint = endpoint


class TestServer:
    """A fake-network endpoint speaking the server side (see the module docstring)."""

    __test__ = False

    def __init__(self, net: FakeNetwork, *, static_private: bytes, rng: random.Random,
                 config: ConfigValues | None = None, address: Address = SERVER) -> None:
        self.net = net
        self.address = address
        self.rng = rng
        self.static_private = static_private
        self.conn = ServerConnection(static_private=static_private, is_enrolled=lambda _pub: True,
                                     random_bytes=rng.randbytes, rng=rng.random)
        self.config = config or ConfigValues(zones=ZONES, telemetry_s=10)
        self.messages: list[tuple[bytes, Message]] = []
        self.connects: list[tuple[float, bytes, bool]] = []
        self.streams: dict[int, ServerStream] = {}
        self.content: dict[bytes, bytes] = {}
        self.media_out: list[tuple[bytes, Address]] = []
        self.rtx_sent = 0
        self.nacked: list[int] = []
        self.answer_fetch = True
        self.on_connect: Callable[[bytes], None] | None = None
        self.ignore_nacks = False
        net.attach(address, self)

    # time
    def server_time(self) -> int:
        return EPOCH_NS + round(self.net.now * NS)

    # endpoint
    def receive(self, data: bytes, src: Address, now: float) -> None:
        try:
            if classify(data) != "loa":
                return
        except ProtocolError:
            return
        for event in self.conn.receive_datagram(data, src, now):
            if isinstance(event, Received):
                assert event.device is not None
                self._on_message(event.device, event.message, now)
            elif isinstance(event, Connected):
                assert event.device is not None
                self.connects.append((now, event.device, event.peer_restarted))

    def _on_message(self, device: bytes, message: Message, now: float) -> None:
        self.messages.append((device, message))
        if isinstance(message, TimeReq):
            t = self.server_time()
            self._unreliable(device, TimeResp(t1=message.t1, t2=t, t3=t), now)
        elif isinstance(message, Rtcp):
            self._on_rtcp(device, message.pkt, now)
        elif isinstance(message, Fetch) and self.answer_fetch:
            blob = self.content.get(message.cid)
            if blob is not None:
                data = blob[message.off : message.off + message.len]
                self._unreliable(device, Chunk(cid=message.cid, off=message.off, data=data), now)
        elif message.TYPE == "hello":
            self.send(device, Config(values=self.config))
            for stream in self.streams.values():
                if device in stream.members and not stream.ended:
                    self.send(device, stream.join())
            if self.on_connect is not None:
                self.on_connect(device)

    def _on_rtcp(self, device: bytes, pkt: bytes, now: float) -> None:
        address = self.conn.endpoint.address_of(device)
        for packet in parse_rtcp(pkt):
            if not isinstance(packet, GenericNack):
                continue
            self.nacked += packet.lost
            if self.ignore_nacks:
                continue
            for stream in self.streams.values():
                if stream.ssrc != packet.media_ssrc:
                    continue
                for seq in packet.lost:
                    held = stream.rtx.get(seq)
                    if held is not None and address is not None:
                        self.media_out.append((held[0], address))
                        self.rtx_sent += 1

    def _unreliable(self, device: bytes, message: Message, now: float) -> None:
        with contextlib.suppress(LocalProtocolError):
            self.conn.send(device, message, now)

    def send(self, device: bytes, message: Message) -> None:
        self.conn.send(device, message, self.net.now)

    def outgoing(self) -> list[tuple[bytes, Address]]:
        out = self.conn.datagrams_to_send() + self.media_out
        self.media_out = []
        return out

    def next_timeout(self) -> float | None:
        times = [self.conn.next_timeout()] + [s.due() for s in self.streams.values()]
        return min((t for t in times if t is not None), default=None)

    def handle_timeout(self, now: float) -> None:
        self.conn.handle_timeout(now)
        for stream in self.streams.values():
            due = stream.due()
            if due is None or due > now:
                continue
            packets = stream.produce(now)
            for device in stream.members:
                address = self.conn.endpoint.address_of(device)
                if address is not None:
                    self.media_out += [(p, address) for p in packets]

    # broadcasts
    def start_stream(self, bid: int, members: list[bytes], *, cls: int = 0, lvl: int = 1, policy: str = "resume",
                     delay_ms: int = 500, payloads: list[bytes], start_in: float = 0.0,
                     frames: int | None = None, join: bool = True) -> ServerStream:
        stream = ServerStream(bid, list(members), cls, lvl, policy, delay_ms, payloads, self.rng, self.server_time,
                              self.net.now + start_in, frames=frames)
        self.streams[bid] = stream
        if join:
            for device in members:
                self.send(device, stream.join())
        return stream

    def stop_stream(self, bid: int) -> None:
        stream = self.streams[bid]
        stream.ended = True
        for device in stream.members:
            self.send(device, Leave(bid=bid))

    def messages_of(self, kind: type, device: bytes | None = None) -> list:
        return [m for d, m in self.messages if isinstance(m, kind) and (device is None or d == device)]


class World:
    """One fake network, one test server, devices added with :meth:`add_device`."""

    def __init__(self, seed: int = 1, *, config: ConfigValues | None = None, **conditions: object) -> None:
        self.rng = random.Random(seed)
        self.net = FakeNetwork(seed, **conditions)  # type: ignore[arg-type]
        self.server_key = self.rng.randbytes(32)
        self.server = TestServer(self.net, static_private=self.server_key, rng=self.rng, config=config)
        self.authority = Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))
        self.authority_public = self.authority.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.devices: list[SimulatedDevice] = []
        self._alerts = 0

    @property
    def server_public(self) -> bytes:
        return self.server.conn.endpoint.public_key

    def add_device(self, *, drift_ppm: float = 0.0, offset_s: float = 0.0, sink: FrameSink | None = None,
                   address: Address | None = None, start: bool = True, **core_args: object) -> SimulatedDevice:
        clock = SimulatedClock(drift_ppm, offset_s)
        index = len(self.devices)
        args: dict[str, object] = {"store": MemoryStore(), "sink": sink or CounterSink()}
        args.update(core_args)
        core = SpeakerCore(
            static_private=self.rng.randbytes(32), server_public=self.server_public,
            authority_keys=[self.authority_public], server_address=SERVER,
            random_bytes=self.rng.randbytes, rng=random.Random(self.rng.random()),
            **args,  # type: ignore[arg-type]
        )
        node = SimulatedDevice(core, clock, SERVER)
        self.net.attach(address or ("198.51.100.7", 40000 + index), node)
        self.devices.append(node)
        if start:
            node.start(self.net.now)
        return node

    def run(self, seconds: float) -> None:
        self.net.run_for(seconds)

    def run_until(self, predicate: Callable[[], bool], limit: float) -> bool:
        return self.net.run_until(predicate, limit)

    def pub(self, node: SimulatedDevice) -> bytes:
        return node.core.public_key

    def alert(self, bid: int, *, cls: int = 2, lvl: int = 2, zones: tuple[str, ...] = ("760",),
              status: str = "actual", issued_in: float = 0.0, lifetime: float = 600.0, alert_id: str | None = None,
              key: Ed25519PrivateKey | None = None) -> SignedAlert:
        key = key or self.authority
        now = self.server.server_time()
        self._alerts += 1
        alert = Alert(id=alert_id or f"alert-{self._alerts}", kid=key_id(key.public_key()), status=status,
                      cls=cls, lvl=lvl, zones=zones, issued=now + round(issued_in * NS),
                      expires=now + round((issued_in + lifetime) * NS), bid=bid)
        body, sig = sign_alert(alert, key)
        return SignedAlert(body=body, sig=sig)

    def cancel(self, alert_id: str) -> SignedAlertCancel:
        cancel = AlertCancel(kid=key_id(self.authority.public_key()), cancel=alert_id,
                             issued=self.server.server_time())
        body, sig = sign_cancel(cancel, self.authority)
        return SignedAlertCancel(body=body, sig=sig)


def frames_by_bid(node: SimulatedDevice) -> dict[int, list]:
    out: dict[int, list] = defaultdict(list)
    for entry in node.core.log.entries:
        out[entry.bid].append(entry)
    return out
