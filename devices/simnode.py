"""A device on the deterministic fake network (``loa.protocol.sim``), with its own simulated clock.

:class:`SimulatedDevice` adapts a :class:`~loa.devices.core.SpeakerCore` to the network's endpoint interface:
the network passes true (virtual) times, the device's core sees its own clock
(:class:`~loa.devices.simclock.SimulatedClock`), and the playout log records both, so a test compares what
several devices played on one timeline. :class:`TrueTimeSink` does the same for a sink.
"""

from __future__ import annotations

from loa.devices.core import Address, SpeakerCore
from loa.devices.simclock import SimulatedClock
from loa.devices.sinks import FrameInfo, FrameSink, Pcm

__all__ = ["SimulatedDevice", "TrueTimeSink"]


class TrueTimeSink:
    """A sink that hands frames on with their instant converted from the device clock to the true timeline."""

    def __init__(self, inner: FrameSink, clock: SimulatedClock) -> None:
        self.inner = inner
        self.clock = clock

    @property
    def decode(self) -> bool:
        return self.inner.decode

    def on_frame(self, at: float, pcm: Pcm | None, info: FrameInfo) -> None:
        self.inner.on_frame(self.clock.true(at), pcm, info)

    def close(self) -> None:
        self.inner.close()


class SimulatedDevice:
    """The network endpoint of one device at ``address``, talking to the server at ``server``."""

    def __init__(self, core: SpeakerCore, clock: SimulatedClock, server: Address) -> None:
        self.core = core
        self.clock = clock
        self.server = server
        core.log.true_time = clock.true

    def start(self, true_now: float) -> None:
        self.core.start(self.clock.local(true_now))

    def receive(self, data: bytes, src: Address, now: float) -> None:
        self.core.receive_datagram(data, src, self.clock.local(now))

    def outgoing(self) -> list[tuple[bytes, Address]]:
        return [(data, self.server) for data in self.core.datagrams_to_send()]

    def next_timeout(self) -> float | None:
        local = self.core.next_event()
        return None if local is None else self.clock.true(local)

    def handle_timeout(self, now: float) -> None:
        self.core.advance(self.clock.local(now))
