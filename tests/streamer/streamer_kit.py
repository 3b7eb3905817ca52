"""Test-only pieces for the streamer tests: a minimal device driver and a fake-network world around the core.

The device here is deliberately small and written from the spec alone (PROTOCOL.md sections 3-6): it holds a
session, records every control message, takes the keys of ``join``/``rotate``, unprotects SRTP with them, keeps
the RTP packets it accepted, verifies alerts, fetches prefetched content, and can NACK. It is not the reference
device (``loa.devices``), which these tests must not depend on.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loa.codecs import OpusDecoder
from loa.protocol.alert import Alert, key_id, verify_alert
from loa.protocol.connection import Connected, DeviceConnection, Received
from loa.protocol.control import (
    Chunk,
    Config,
    Fetch,
    Have,
    Hello,
    Join,
    Leave,
    Message,
    Prefetch,
    Rotate,
    Rtcp,
    SignedAlert,
    TimeReq,
    TimeResp,
)
from loa.protocol.datagram import classify
from loa.protocol.errors import RemoteProtocolError
from loa.protocol.noise import x25519_public
from loa.protocol.rtcp import GenericNack, build_rtcp, parse_rtcp
from loa.protocol.rtp import RtpPacket, parse_rtp
from loa.protocol.sim import FakeNetwork
from loa.protocol.srtp import StreamUnprotector
from loa.streamer.core import StreamerCore
from loa.streamer.registry import Registry
from loa.streamer.settings import Settings
from loa.streamer.zones import Zone, ZoneTree

Address = tuple[str, int]
SERVER: Address = ("192.0.2.1", 4433)
EPOCH_NS = 1_750_000_000 * 1_000_000_000


@dataclass
class MediaPacket:
    at: float
    src: Address
    ssrc: int
    raw: bytes  # the SRTP bytes as received
    rtp: RtpPacket


@dataclass
class Fetching:
    cid: bytes
    size: int
    data: dict[int, bytes] = field(default_factory=dict)
    asked: dict[int, float] = field(default_factory=dict)  # offset -> when


class KitDevice:
    """A minimal spec-following device; a FakeNetwork endpoint, also driven over real sockets in e2e tests."""

    def __init__(self, *, server_public: bytes, server: Address = SERVER, seed: int = 0, kind: str = "speaker",
                 caps: tuple[str, ...] = ("amp",), token: str | None = None,
                 authorities: dict[bytes, Any] | None = None, static_private: bytes | None = None) -> None:
        rng = random.Random(seed)
        self.static_private = static_private or rng.randbytes(32)
        self.public_key = x25519_public(self.static_private)
        self.server = server
        self.conn = DeviceConnection(static_private=self.static_private, server_public=server_public,
                                     random_bytes=rng.randbytes, rng=rng.random)
        self.kind, self.caps, self.token = kind, caps, token
        self.authorities = authorities or {}
        self.messages: list[Message] = []
        self.connected_events: list[Connected] = []
        self.keys: dict[int, StreamUnprotector] = {}  # ssrc -> unprotector
        self.joined: dict[int, Join] = {}
        self.ssrc_bid: dict[int, int] = {}
        self.left: list[int] = []
        self.media: list[MediaPacket] = []
        self.rtcp: list[tuple[float, int, tuple[Any, ...]]] = []  # (when, ssrc, parsed compound)
        self.media_drops: dict[str, int] = {}
        self.media_sources: set[Address] = set()
        self.alerts: list[Alert] = []
        self.alert_drops: list[str] = []
        self.zone_path: tuple[str, ...] = ()
        self.held_alerts: list[SignedAlert] = []
        self.content: dict[bytes, bytes] = {}
        self.fetching: dict[bytes, Fetching] = {}
        self.fetch_window = 16
        self.time_resps: list[tuple[TimeResp, int]] = []
        self.clock_ns: Callable[[float], int] = lambda now: round(now * 1e9) + 123_456_789
        self.on_message: Callable[[KitDevice, Message, float], None] | None = None
        self.received_bytes = 0

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        self.conn.connect(now)
        self.conn.send(Hello(kind=self.kind, model="kit", fw="0.1", caps=self.caps, token=self.token), now)

    # -- Endpoint (FakeNetwork) --------------------------------------------------------------------------------

    def receive(self, data: bytes, src: Address, now: float) -> None:
        self.received_bytes += len(data)
        try:
            kind = classify(data)
        except RemoteProtocolError as exc:
            self.media_drops[type(exc).__name__] = self.media_drops.get(type(exc).__name__, 0) + 1
            return
        if kind == "loa":
            for event in self.conn.receive_datagram(data, now):
                if isinstance(event, Received):
                    self._on_message(event.message, now)
                elif isinstance(event, Connected):
                    self.connected_events.append(event)
            return
        self.media_sources.add(src)
        ssrc = int.from_bytes(data[4:8] if kind == "rtcp" else data[8:12], "big")
        unprotector = self.keys.get(ssrc)
        if unprotector is None:
            self.media_drops["UnknownKeyError"] = self.media_drops.get("UnknownKeyError", 0) + 1
            return
        try:
            if kind == "rtcp":
                self.rtcp.append((now, ssrc, parse_rtcp(unprotector.unprotect_rtcp(data))))
                return
            packet = parse_rtp(unprotector.unprotect(data))
        except RemoteProtocolError as exc:
            self.media_drops[type(exc).__name__] = self.media_drops.get(type(exc).__name__, 0) + 1
            return
        self.media.append(MediaPacket(now, src, ssrc, data, packet))

    def outgoing(self) -> list[tuple[bytes, Address]]:
        return [(d, self.server) for d in self.conn.datagrams_to_send()]

    def next_timeout(self) -> float | None:
        times = [self.conn.next_timeout()]
        for fetching in self.fetching.values():
            times += [t + 1.0 for t in fetching.asked.values()]
        return min((t for t in times if t is not None), default=None)

    def handle_timeout(self, now: float) -> None:
        for event in self.conn.handle_timeout(now):
            if isinstance(event, Received):
                self._on_message(event.message, now)
        for fetching in list(self.fetching.values()):
            for off, when in list(fetching.asked.items()):
                if now >= when + 1.0:
                    self._ask(fetching, off, now)

    # -- messages ----------------------------------------------------------------------------------------------

    def _check_alert(self, message: SignedAlert, now: float) -> None:
        try:
            alert = verify_alert(message.body, message.sig, self.authorities, now=EPOCH_NS + round(now * 1e9),
                                 zone_path=self.zone_path, seen_ids={(a.kid, a.id) for a in self.alerts})
        except RemoteProtocolError as exc:
            self.alert_drops.append(type(exc).__name__)
        else:
            self.alerts.append(alert)

    def _on_message(self, message: Message, now: float) -> None:
        self.messages.append(message)
        if isinstance(message, Config) and message.values.zones is not None:
            self.zone_path = message.values.zones
            held, self.held_alerts = self.held_alerts, []
            for alert in held:  # alerts that came before the zone path (PROTOCOL.md 6.4)
                self._check_alert(alert, now)
        elif isinstance(message, Join):
            if message.bid not in self.joined:
                self.joined[message.bid] = message
                self._take_key(message.bid, message.ssrc, message.key)
        elif isinstance(message, Rotate):
            if message.bid in self.joined:
                self._take_key(message.bid, message.ssrc, message.key)
        elif isinstance(message, Leave):
            self.left.append(message.bid)
        elif isinstance(message, SignedAlert) and not self.zone_path:
            self.held_alerts.append(message)
        elif isinstance(message, SignedAlert):
            self._check_alert(message, now)
        elif isinstance(message, Prefetch):
            if message.cid in self.content:
                self.conn.send(Have(cid=message.cid, ok=True), now)
            elif message.cid not in self.fetching:
                fetching = self.fetching[message.cid] = Fetching(message.cid, message.size)
                for off in range(0, message.size, 1024)[: self.fetch_window]:
                    self._ask(fetching, off, now)
        elif isinstance(message, Chunk):
            self._on_chunk(message, now)
        elif isinstance(message, TimeResp):
            self.time_resps.append((message, self.clock_ns(now)))
        if self.on_message is not None:
            self.on_message(self, message, now)

    def _take_key(self, bid: int, ssrc: int, key: bytes) -> None:
        self.keys[ssrc] = StreamUnprotector(key, ssrc=ssrc)
        self.ssrc_bid[ssrc] = bid

    def _ask(self, fetching: Fetching, off: int, now: float) -> None:
        fetching.asked[off] = now
        if self.conn.connected:
            self.conn.send(Fetch(cid=fetching.cid, off=off, len=min(1024, fetching.size - off)), now)

    def _on_chunk(self, chunk: Chunk, now: float) -> None:
        fetching = self.fetching.get(chunk.cid)
        if fetching is None or chunk.off not in fetching.asked:
            return
        del fetching.asked[chunk.off]
        fetching.data[chunk.off] = chunk.data
        pending = [o for o in range(0, fetching.size, 1024) if o not in fetching.data and o not in fetching.asked]
        for off in pending[: self.fetch_window - len(fetching.asked)]:
            self._ask(fetching, off, now)
        if len(fetching.data) * 1024 >= fetching.size and not fetching.asked:
            blob = b"".join(fetching.data[o] for o in sorted(fetching.data))
            ok = hashlib.sha256(blob).digest() == chunk.cid
            if ok:
                self.content[chunk.cid] = blob
            del self.fetching[chunk.cid]
            self.conn.send(Have(cid=chunk.cid, ok=ok), now)

    # -- actions -----------------------------------------------------------------------------------------------

    def nack(self, ssrc: int, seqs: list[int], now: float) -> None:
        pkt = build_rtcp([GenericNack(0x0D0E0F10, ssrc, tuple(seqs))])
        self.conn.send(Rtcp(pkt=pkt), now)

    def probe_clock(self, now: float) -> int:
        t1 = self.clock_ns(now)
        self.conn.send(TimeReq(t1=t1), now)
        return t1

    def of_type(self, kind: type) -> list[Any]:
        return [m for m in self.messages if isinstance(m, kind)]

    def packets(self, bid: int | None = None) -> list[MediaPacket]:
        return [p for p in self.media if bid is None or self.ssrc_bid.get(p.ssrc) == bid]

    def decode(self, bid: int | None = None) -> list[Any]:
        """Decode the accepted packets of ``bid`` in order (one decoder), returning PCM frames."""
        decoder = OpusDecoder()
        return [decoder.decode(p.rtp.payload) for p in sorted(self.packets(bid), key=lambda p: p.at)]


class CoreNode:
    """FakeNetwork endpoint for a :class:`StreamerCore`, including its frame clocks (media goes to the
    destinations the core names, exactly as the I/O service's fan-out would send it)."""

    def __init__(self, core: StreamerCore) -> None:
        self.core = core
        self.net: FakeNetwork | None = None
        self.media_sent: list[tuple[int, bytes, list[Address]]] = []

    def receive(self, data: bytes, src: Address, now: float) -> None:
        self.core.receive_datagram(data, src, now)

    def outgoing(self) -> list[tuple[bytes, Address]]:
        return self.core.datagrams_to_send()

    def next_timeout(self) -> float | None:
        times = [self.core.next_timeout()]
        times += [self.core.next_frame_time(bid) for bid in self.core.live_broadcasts()]
        return min((t for t in times if t is not None), default=None)

    def handle_timeout(self, now: float) -> None:
        core = self.core
        if (t := core.next_timeout()) is not None and t <= now:
            core.handle_timeout(now)
        for bid in core.live_broadcasts():
            guard = 0
            while (due := core.next_frame_time(bid)) is not None and due <= now and guard < 100:
                guard += 1
                targets = [address for _, address in core.destinations(bid)]
                for packet in core.produce_frame(bid, now):
                    self.media_sent.append((bid, packet, targets))
                    assert self.net is not None
                    for address in targets:
                        self.net.inject(packet, SERVER, address)


def province() -> ZoneTree:
    """A small tree: province P > districts D1, D2 > communes C11, C12, C21 > hamlet H111."""
    return ZoneTree([
        Zone("P", "Tỉnh Thử"), Zone("D1", "Huyện Một", "P"), Zone("D2", "Huyện Hai", "P"),
        Zone("C11", "Xã Một Một", "D1"), Zone("C12", "Xã Một Hai", "D1"), Zone("C21", "Xã Hai Một", "D2"),
        Zone("H111", "Thôn Một", "C11"),
    ])


class World:
    """A core on the fake network with kit devices; every device key is enrolled unless said otherwise."""

    def __init__(self, seed: int = 1, *, settings: Settings | None = None, authority: Ed25519PrivateKey | None = None,
                 content: Any = None, groups: dict[str, str] | None = None, rng: random.Random | None = None,
                 **conditions: Any) -> None:
        self.rng = random.Random(seed)
        self.net = FakeNetwork(seed, **conditions)
        self.zones = province()
        self.registry = Registry(self.zones.__contains__)
        self.authority = authority or Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))
        self.authorities = {key_id(self.authority.public_key()): self.authority.public_key()}
        self.server_static = self.rng.randbytes(32)
        self.core = StreamerCore(
            static_private=self.server_static, zones=self.zones, registry=self.registry, content=content,
            authorities=self.authorities, settings=settings, epoch_ns=EPOCH_NS, random_bytes=self.rng.randbytes,
            rng=rng or random.Random(seed + 1), send_clock=self.net.clock, groups=groups,
        )
        self.node = CoreNode(self.core)
        self.node.net = self.net
        self.net.attach(SERVER, self.node)
        self.devices: list[KitDevice] = []

    @property
    def now(self) -> float:
        return self.net.now

    def device(self, zone: str | None, *, enrol: bool = True, start: bool = True, kind: str = "speaker",
               **kwargs: Any) -> KitDevice:
        index = len(self.devices)
        device = KitDevice(server_public=self.core.public_key, seed=1000 + index, kind=kind,
                           authorities=self.authorities, **kwargs)
        if enrol and zone is not None:
            self.core.add_device(device.public_key, zone, self.now, name=f"cụm loa {index}", kind=kind)
        self.net.attach(("198.51.100.7", 40000 + index), device)
        self.devices.append(device)
        if start:
            device.start(self.now)
        return device

    def address(self, device: KitDevice) -> Address:
        return ("198.51.100.7", 40000 + self.devices.index(device))

    def run_until(self, predicate: Callable[[], bool], limit: float = 30.0) -> bool:
        return self.net.run_until(predicate, limit)

    def run_for(self, seconds: float) -> None:
        self.net.run_for(seconds)

    def online(self, *devices: KitDevice) -> bool:
        return all(self.core.device_status(d.public_key).online and d.zone_path for d in devices)

    def go_away(self, device: KitDevice) -> None:
        """Cut ``device`` off both ways until the server has ended its session."""
        address = self.address(device)
        self.net.add_outage(self.now, self.now + 1e6, src=address)
        self.net.add_outage(self.now, self.now + 1e6, dst=address)
        assert self.run_until(lambda: not self.core.device_status(device.public_key).online, 300.0)
        self.run_for(0.1)  # what begins from now on began after its session ended

    def come_back(self, device: KitDevice) -> int:
        """End the outage; the number of messages the device had before."""
        self.net.end_outages(self.address(device))
        before = len(device.messages)
        assert self.run_until(lambda: self.online(device), 120.0)
        self.run_for(5.0)
        return before


async def run_device(device: KitDevice, sock: Any, *, group_sock: Any = None,
                     stop: Callable[[], bool] = lambda: False) -> None:
    """Drive ``device`` over a real non-blocking UDP socket (and a multicast group socket) until cancelled or
    ``stop()``; its clock is anyio's."""
    import anyio

    def flush() -> None:
        for data, dst in device.outgoing():
            sock.sendto(data, dst)

    def drain(s: Any, counter: str) -> None:
        while True:
            try:
                data, src = s.recvfrom(2048)
            except BlockingIOError:
                return
            setattr(device, counter, getattr(device, counter, 0) + 1)
            device.receive(data, (src[0], src[1]), anyio.current_time())

    device.start(anyio.current_time())
    flush()
    while not stop():
        now = anyio.current_time()
        deadline = device.next_timeout()
        wait = 0.02 if deadline is None else min(0.02, max(0.0, deadline - now))
        with anyio.move_on_after(wait):
            await anyio.wait_readable(sock)
        drain(sock, "unicast_datagrams")
        if group_sock is not None:
            drain(group_sock, "group_datagrams")
        now = anyio.current_time()
        if (deadline := device.next_timeout()) is not None and deadline <= now:
            device.handle_timeout(now)
        flush()
