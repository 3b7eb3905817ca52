"""The sans-I/O share of `loa bench hostile`: the streamer core and one device core, datagrams handed over by
function call under a virtual clock (no loss, no delay), so that each single attempt's counter change is checked
on its own.

Failure semantics: :class:`Pair` raises RuntimeError when the device does not come up within 60 virtual seconds,
or when the two sides never fall quiet (a bug, not a hostile input).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loa.bench._hostile_attempts import (
    HOME,
    KINDS,
    Address,
    Forger,
    Genuine,
    HostileResult,
    counted,
    raw_public,
    schedule,
    snapshot,
    zones,
)
from loa.devices.content import MemoryStore
from loa.devices.core import SpeakerCore
from loa.devices.sinks import CounterSink
from loa.protocol.alert import key_id
from loa.protocol.control import Message, Volume
from loa.streamer.core import StreamerCore

__all__ = ["Pair", "run_sans_io"]

EPOCH_NS = 1_750_000_000 * 1_000_000_000
SERVER: Address = ("192.0.2.1", 4433)
DEVICE: Address = ("198.51.100.7", 40000)
ATTACKER: Address = ("203.0.113.66", 5555)
ROUND_ADVANCE_S = 0.1  # virtual seconds between two rounds (acknowledgements, probes, telemetry, rekeying)
MAX_EXCHANGE = 64
MAX_TIMER_STEPS = 100_000


class Pair:
    """The streamer core and one device core, datagrams handed over by function call under a virtual clock.
    Every datagram the server sends the device passes through ``on_server_datagram`` (the attacker's tap)."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.now = 1.0
        self.authority = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        self.server = StreamerCore(
            static_private=rng.randbytes(32), zones=zones(), epoch_ns=EPOCH_NS,
            authorities={key_id(self.authority.public_key()): self.authority.public_key()},
            random_bytes=rng.randbytes, rng=random.Random(seed + 1), send_clock=lambda: self.now,
        )
        self.device = SpeakerCore(
            static_private=rng.randbytes(32), server_public=self.server.public_key,
            authority_keys=[raw_public(self.authority)], server_address=SERVER, sink=CounterSink(decode=False),
            store=MemoryStore(1 << 20), random_bytes=rng.randbytes, rng=random.Random(seed + 2), log_limit=0,
        )
        self.server.add_device(self.device.public_key, HOME, self.now, name="hostile")
        self.tap: list[bytes] | None = None
        self.device.start(self.now)
        self.exchange()
        self.advance_until(lambda: self.device.clock.ready and bool(self.device.settings.zones), 60.0)

    def server_ns(self) -> int:
        return self.server.server_time(self.now)

    def exchange(self) -> None:
        """Move every queued datagram both ways until both sides are quiet."""
        server, device, now = self.server, self.device, self.now
        for _ in range(MAX_EXCHANGE):
            moved = 0
            for data, address in server.datagrams_to_send():
                if address == DEVICE:
                    if self.tap is not None and data[:1] == b"\x04":  # transport datagrams only
                        self.tap.append(data)
                    device.receive_datagram(data, SERVER, now)
                    moved += 1
            for data in device.datagrams_to_send():
                server.receive_datagram(data, DEVICE, now)
                moved += 1
            if not moved:
                return
        raise RuntimeError("the two sides kept exchanging datagrams")

    def advance(self, seconds: float) -> None:
        """Run both sides' timers for ``seconds`` of virtual time."""
        until = self.now + seconds
        for _ in range(MAX_TIMER_STEPS):
            times = [t for t in (self.server.next_timeout(), self.device.next_event()) if t is not None]
            when = min(times, default=None)
            if when is None or when > until:
                break
            self.now = max(self.now, when)
            if (t := self.server.next_timeout()) is not None and t <= self.now:
                self.server.handle_timeout(self.now)
            if (t := self.device.next_event()) is not None and t <= self.now:
                self.device.advance(self.now)
            self.exchange()
        else:
            raise RuntimeError("timers did not settle")
        self.now = until
        self.exchange()

    def advance_until(self, predicate: Callable[[], bool], limit: float) -> None:
        for _ in range(round(limit / 0.05)):
            if predicate():
                return
            self.advance(0.05)
        if not predicate():
            raise RuntimeError("the device did not come up (session, clock estimate, config)")

    def send(self, message: Message, capture: list[bytes] | None = None) -> None:
        self.tap = capture
        try:
            self.server.send_command(self.device.public_key, message, self.now)
            self.exchange()
        finally:
            self.tap = None


def _genuine_round(pair: Pair, forger: Forger, result: HostileResult) -> Genuine:
    """A genuine alert and a genuine command, captured on the way (the attacker's recording)."""
    device = pair.device
    alert, message = forger.genuine(pair.server_ns(), pair.server.allocate_bid())
    g = Genuine(alert, message)
    accepted = device.alerts_accepted
    pair.send(message, g.alert_datagrams)
    result.genuine_alerts += 1
    result.genuine_alerts_accepted += device.alerts_accepted == accepted + 1 and device.alerts.for_bid(
        alert.bid) is not None
    level = forger.rng.randrange(0, 101)
    while level == device.settings.volume_level:
        level = forger.rng.randrange(0, 101)
    pair.send(Volume(level=level), g.command_datagrams)
    result.genuine_commands += 1
    result.genuine_commands_applied += device.settings.volume_level == level
    return g


def run_sans_io(attempts: int, *, seed: int, result: HostileResult,
                progress: Callable[[int], None] | None = None) -> None:
    """``attempts`` attempts, each checked on its own (module docstring), into ``result``."""
    pair = Pair(seed)
    forger = Forger(random.Random(seed + 3), pair.authority)
    device = pair.device
    done = 0
    for kinds in schedule(random.Random(seed + 4), attempts):
        g = _genuine_round(pair, forger, result)
        for name in kinds:
            kind = KINDS[name]
            before = snapshot(device)
            if kind.via == "server":
                pair.send(forger.message(name, pair.server_ns(), g))
            else:
                device.receive_datagram(forger.datagram(name, g), ATTACKER, pair.now)
                pair.exchange()
            after = snapshot(device)
            ok, drops = counted(kind, before, after)
            result.add(name, ok, drops, after.accepted - before.accepted)
            result.duplicates += after.duplicates - before.duplicates
        if "cancel_forged" in kinds:
            result.rounds_with_forged_cancel += 1
            result.held_after_forged_cancel += device.alerts.for_bid(g.alert.bid) is not None
        pair.send(forger.genuine_cancel(g.alert, pair.server_ns()))
        result.genuine_cancels += 1
        result.genuine_cancels_applied += device.alerts.for_bid(g.alert.bid) is None
        pair.advance(ROUND_ADVANCE_S)
        done += len(kinds)
        if progress is not None:
            progress(done)
