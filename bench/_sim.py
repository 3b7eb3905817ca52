"""A streamer and reference devices on the deterministic fake network, for the data-plane benchmarks.

:class:`SimWorld` puts one :class:`~loa.streamer.core.StreamerCore` (the real server core, with its frame clock
driven like the I/O service drives it) and any number of :class:`~loa.devices.simnode.SimulatedDevice` (the real
device core, each with its own simulated clock offset and drift) on one :class:`~loa.protocol.sim.FakeNetwork`
under a virtual clock. Nothing here reads real time or opens a socket: minutes of protocol time cost seconds of
CPU, and a run is reproducible from its seed.

:class:`BurstLoss` is a packet-level Gilbert-Elliott channel; :class:`LossyDevice` puts one such channel on each
direction of a device's link (what the device receives, what it sends).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loa.devices.content import MemoryStore
from loa.devices.core import SpeakerCore
from loa.devices.simclock import SimulatedClock
from loa.devices.simnode import SimulatedDevice
from loa.devices.sinks import CounterSink
from loa.protocol.alert import key_id
from loa.protocol.datagram import classify
from loa.protocol.errors import RemoteProtocolError
from loa.protocol.sim import FakeNetwork, LinkConditions
from loa.streamer.core import StreamerCore
from loa.streamer.sources import ToneSource
from loa.streamer.zones import Zone, ZoneTree

Address = tuple[str, int]
SERVER: Address = ("192.0.2.1", 4433)
EPOCH_NS = 1_750_000_000 * 1_000_000_000
ZONE = "X1"
FRAME_CATCH_UP = 100  # frames a frame clock may catch up in one step (bounded loop)


def device_address(index: int) -> Address:
    hi, lo = divmod(index, 250)
    return (f"10.{hi // 250}.{hi % 250}.{1 + lo}", 40000)


class BurstLoss:
    """A two-state (Gilbert-Elliott) packet-loss channel: in the good state nothing is lost, in the bad state
    everything; the good state turns bad with probability ``p`` per packet, the bad turns good with ``r``.
    Long-run loss ``p / (p + r)``, mean burst ``1 / r`` packets."""

    def __init__(self, rng: random.Random, *, loss: float, mean_burst: float) -> None:
        if not 0.0 <= loss < 1.0 or mean_burst < 1.0:
            raise ValueError("burst loss needs 0 <= loss < 1 and a mean burst of at least one packet")
        self.r = 1.0 / mean_burst
        self.p = loss * self.r / (1.0 - loss)
        self.bad = False
        self.active = False  # nothing is lost until the channel is switched on
        self.rng = rng
        self.seen = 0
        self.lost = 0

    def drop(self) -> bool:
        """Advance by one packet; whether it is lost."""
        if not self.active:
            return False
        self.bad = (self.rng.random() >= self.r) if self.bad else (self.rng.random() < self.p)
        self.seen += 1
        self.lost += self.bad
        return self.bad


class LossyDevice:
    """A fake-network endpoint that wraps a device and loses what it receives and sends through two channels."""

    def __init__(self, inner: SimulatedDevice, downlink: BurstLoss, uplink: BurstLoss) -> None:
        self.inner = inner
        self.downlink = downlink
        self.uplink = uplink

    def receive(self, data: bytes, src: Address, now: float) -> None:
        if not self.downlink.drop():
            self.inner.receive(data, src, now)

    def outgoing(self) -> list[tuple[bytes, Address]]:
        return [item for item in self.inner.outgoing() if not self.uplink.drop()]

    def next_timeout(self) -> float | None:
        return self.inner.next_timeout()

    def handle_timeout(self, now: float) -> None:
        self.inner.handle_timeout(now)


class ServerNode:
    """The streamer core as a fake-network endpoint, frame clocks included; counts the media bytes it sends.

    ``media_bytes``: SRTP/SRTCP sent by the frame clocks (each frame once per destination); ``rtx_bytes``:
    RTP retransmissions answering NACKs (the unicast SRTP copies among the core's own datagrams)."""

    def __init__(self, core: StreamerCore, net: FakeNetwork) -> None:
        self.core = core
        self.net = net
        self.media_bytes = 0
        self.media_packets = 0
        self.rtx_bytes = 0
        self.rtx_packets = 0
        self.frames = 0

    def receive(self, data: bytes, src: Address, now: float) -> None:
        self.core.receive_datagram(data, src, now)

    def outgoing(self) -> list[tuple[bytes, Address]]:
        out = self.core.datagrams_to_send()
        for data, _ in out:
            try:
                kind = classify(data)
            except RemoteProtocolError:
                continue
            if kind == "rtp":
                self.rtx_bytes += len(data)
                self.rtx_packets += 1
        return out

    def next_timeout(self) -> float | None:
        core = self.core
        times = [core.next_timeout()] + [core.next_frame_time(bid) for bid in core.live_broadcasts()]
        return min((t for t in times if t is not None), default=None)

    def handle_timeout(self, now: float) -> None:
        core = self.core
        if (t := core.next_timeout()) is not None and t <= now:
            core.handle_timeout(now)
        for bid in core.live_broadcasts():
            for _ in range(FRAME_CATCH_UP):
                due = core.next_frame_time(bid)
                if due is None or due > now:
                    break
                targets = [address for _, address in core.destinations(bid)]
                for packet in core.produce_frame(bid, now):
                    if classify(packet) == "rtp":
                        self.frames += 1
                    for address in targets:
                        self.media_bytes += len(packet)
                        self.media_packets += 1
                        self.net.inject(packet, SERVER, address)


class SimWorld:
    """A streamer core and devices on one fake network (see the module docstring)."""

    def __init__(self, seed: int, *, downlink: LinkConditions | None = None, uplink: LinkConditions | None = None,
                 loss: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.net = FakeNetwork(seed, loss=loss)
        if downlink is not None:
            self.net.set_link(SERVER, None, downlink)
        if uplink is not None:
            self.net.set_link(None, SERVER, uplink)
        self.authority = Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))
        self.core = StreamerCore(
            static_private=self.rng.randbytes(32), zones=ZoneTree([Zone(ZONE, "bench")]),
            authorities={key_id(self.authority.public_key()): self.authority.public_key()},
            epoch_ns=EPOCH_NS, random_bytes=self.rng.randbytes, rng=random.Random(seed + 1),
            send_clock=self.net.clock,
        )
        self.server = ServerNode(self.core, self.net)
        self.net.attach(SERVER, self.server)
        self.devices: list[SimulatedDevice] = []

    def add_device(self, clock: SimulatedClock, *, decode: bool, wrap: Callable[[SimulatedDevice], Any] | None = None,
                   ) -> SimulatedDevice:
        core = SpeakerCore(
            static_private=self.rng.randbytes(32), server_public=self.core.public_key,
            authority_keys=[], server_address=SERVER, sink=CounterSink(decode=decode), store=MemoryStore(),
            random_bytes=self.rng.randbytes, rng=random.Random(self.rng.random()),
        )
        self.core.add_device(core.public_key, ZONE, self.net.now, name=f"bench-{len(self.devices)}")
        node = SimulatedDevice(core, clock, SERVER)
        self.net.attach(device_address(len(self.devices)), wrap(node) if wrap is not None else node)
        self.devices.append(node)
        node.start(self.net.now)
        return node

    def run(self, seconds: float) -> None:
        self.net.run_for(seconds)

    def online(self) -> int:
        return sum(node.core.statistics().connected for node in self.devices)

    def start_tone(self, seconds: float) -> int:
        """A live broadcast of a tone to every device; returns its bid."""
        return self.core.start_broadcast(ToneSource(440.0, seconds=seconds), [ZONE], self.net.now)
