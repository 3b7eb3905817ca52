"""`loa bench hostile`: forged, unsigned, expired, replayed and wrong-zone alerts and commands at volume.

Every attempt is sent to a reference device (:class:`~loa.devices.core.SpeakerCore`) that holds a real session
with the real streamer core (:class:`~loa.streamer.core.StreamerCore`), and must be refused and counted, by the
device's own counters, exactly once under the error name PROTOCOL.md section 8 gives for it. Genuine alerts,
cancels and commands are interleaved, so that "nothing accepted" cannot be met by a device that accepts nothing:
every genuine one must take effect.

Kinds of attempt (``KINDS``; the counter each must land in, by name):

* through the server, inside the device's authenticated session (what a relay or a compromised server can send):
  ``alert_wrong_key`` (the lab authority's ``kid``, signed by another key: ``SignatureError``),
  ``alert_body_bit`` (a genuine alert with one random bit of its body flipped: the body's parse error when it no
  longer parses, ``UnknownKeyError`` when the flip lands in ``kid``, else ``SignatureError``),
  ``alert_sig_bit`` (one bit of a genuine signature flipped: ``SignatureError``), ``alert_unsigned`` (64 zero
  bytes or 64 random bytes as the signature: ``SignatureError``), ``alert_expired`` (genuinely signed,
  ``expires`` passed: ``ExpiredError``), ``alert_future`` (issued more than 30 s ahead: ``ExpiredError``),
  ``alert_replay_id`` (a new, genuinely signed alert reusing the id of one accepted: ``ReplayError``),
  ``alert_replay_message`` (the accepted alert message itself again: ``ReplayError``), ``alert_wrong_zone``
  (``WrongZoneError``), ``alert_unknown_authority`` (a whole alert signed by an authority the device does not
  know: ``UnknownKeyError``), ``cancel_forged`` (a cancel of the live genuine alert signed by another key:
  ``SignatureError``; the genuine alert must still be held afterwards);
* off-path, straight to the device's address: ``replay_alert_datagram`` and ``replay_command_datagram`` (a
  captured transport datagram that carried a genuine alert or command, resent: ``ReplayError``),
  ``command_wrong_key`` (a control message sealed under a key of the attacker's, the device's receiver index and
  a counter ahead of the window: ``AuthError``), ``command_counter_moved`` (a captured datagram with its counter
  moved ahead: ``AuthError``), ``command_forged_tag`` (random ciphertext under the device's index: ``AuthError``),
  ``command_unknown_index`` (``UnknownKeyError``), ``command_plain`` (an unencrypted control message: its first
  byte makes it RTP from an address that is not the server's, ``UnknownKeyError``).

Two shares of the ``--attempts``:

* ``--udp`` attempts go over real loopback UDP: the streamer service (:class:`~loa.streamer.service.StreamerService`)
  and ``--udp-devices`` reference devices (:class:`~loa.devices.runner.DeviceRunner`, the code of ``loa device``),
  each on its own socket, in this process; the off-path kinds come from attacker sockets on 127.0.0.2-9. Attempts
  go in batches of one kind; after each batch the bench waits until the devices' counters moved by exactly the
  batch (per kind: attempts, and counted under the documented names);
* the rest sans-I/O: the same server core and device core, datagrams handed over by function call under a virtual
  clock (no loss, no delay), so that each single attempt's counter change is checked on its own.

Metrics: per kind ``K``: ``attempts_K``, ``accepted_K`` (must be 0), ``counted_K`` (attempts counted exactly
once under a documented name); totals ``attempts``, ``accepted``, ``counted``, ``miscounted`` (= attempts -
counted), ``miscounted_as`` (``kind:name`` of what the counters of miscounted attempts moved),
``duplicates`` (copies of reliable messages the server sent again because an acknowledgement came late: the
device acknowledges them again and does not evaluate them again, so they are not counts of an attempt),
``udp_attempts``; ``genuine_alerts``/``genuine_alerts_accepted``, ``genuine_commands``/
``genuine_commands_applied``, ``genuine_cancels``/``genuine_cancels_applied``, ``genuine_held_after_forged_cancel``
(rounds); ``body_bit_reasons`` (the names the flipped bodies were refused under); ``attempts_per_s``.
"""

from __future__ import annotations

import random
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from loa.bench._report import emit, environment
from loa.cli import UserError
from loa.devices.content import MemoryStore
from loa.devices.core import SpeakerCore
from loa.devices.runner import DeviceRunner
from loa.devices.sinks import CounterSink
from loa.protocol.alert import (
    ALERT_CONTEXT,
    CANCEL_CONTEXT,
    Alert,
    AlertCancel,
    encode_alert,
    encode_cancel,
    key_id,
    sign_alert,
    sign_cancel,
)
from loa.protocol.control import Message, SignedAlert, SignedAlertCancel, Volume, encode
from loa.protocol.datagram import transport_header
from loa.streamer.core import StreamerCore
from loa.streamer.service import StreamerService, epoch_for, open_udp_socket
from loa.streamer.zones import Zone, ZoneTree

__all__ = ["KINDS", "HostileResult", "Kind", "run_sans_io", "run_udp"]

Address = tuple[str, int]
NS = 1_000_000_000
EPOCH_NS = 1_750_000_000 * NS
SERVER: Address = ("192.0.2.1", 4433)
DEVICE: Address = ("198.51.100.7", 40000)
ATTACKER: Address = ("203.0.113.66", 5555)
HOME, ELSEWHERE = "A", "B"
GENUINE_TTL_S = 600.0
PARSE_ERRORS = frozenset({"OversizeError", "MalformedError", "FieldError", "UnknownVersionError"})
# Not an attempt's doing: clock probes answered late, and copies of reliable messages the server sent again
# because an acknowledgement came late (acknowledged again, never evaluated again; tallied as `duplicates`).
HOUSEKEEPING = frozenset({"stale_time_resp", "duplicate"})
ROUND_ADVANCE_S = 0.1  # virtual seconds between two rounds (acknowledgements, probes, telemetry, rekeying)
MAX_EXCHANGE = 64
MAX_TIMER_STEPS = 100_000
UDP_BATCH = 10
UDP_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of hostile attempt: ``via`` "server" (a message in the device's session) or "offpath" (a raw
    datagram to the device); ``alert``: counted as a refused alert too; ``reasons``: the documented names."""

    via: str
    alert: bool
    reasons: frozenset[str]


def _k(via: str, alert: bool, *reasons: str) -> Kind:
    return Kind(via, alert, frozenset(reasons))


KINDS: dict[str, Kind] = {
    "alert_wrong_key": _k("server", True, "SignatureError"),
    "alert_body_bit": _k("server", True, *PARSE_ERRORS, "UnknownKeyError", "SignatureError"),
    "alert_sig_bit": _k("server", True, "SignatureError"),
    "alert_unsigned": _k("server", True, "SignatureError"),
    "alert_expired": _k("server", True, "ExpiredError"),
    "alert_future": _k("server", True, "ExpiredError"),
    "alert_replay_id": _k("server", True, "ReplayError"),
    "alert_replay_message": _k("server", True, "ReplayError"),
    "alert_wrong_zone": _k("server", True, "WrongZoneError"),
    "alert_unknown_authority": _k("server", True, "UnknownKeyError"),
    "cancel_forged": _k("server", True, "SignatureError"),
    "replay_alert_datagram": _k("offpath", False, "ReplayError"),
    "replay_command_datagram": _k("offpath", False, "ReplayError"),
    "command_wrong_key": _k("offpath", False, "AuthError"),
    "command_counter_moved": _k("offpath", False, "AuthError"),
    "command_forged_tag": _k("offpath", False, "AuthError"),
    "command_unknown_index": _k("offpath", False, "UnknownKeyError"),
    "command_plain": _k("offpath", False, "UnknownKeyError"),
}


def zones() -> ZoneTree:
    return ZoneTree([Zone("P", "Tỉnh"), Zone(HOME, "Xã A", "P"), Zone(ELSEWHERE, "Xã B", "P")])


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass
class Genuine:
    """What the attacker captured of the current round: the genuine alert and the datagrams that carried it and a
    genuine command."""

    alert: Alert
    message: SignedAlert
    alert_datagrams: list[bytes] = field(default_factory=list)
    command_datagrams: list[bytes] = field(default_factory=list)


class Forger:
    """Builds attempts of every kind (module docstring) from the current round's :class:`Genuine`."""

    def __init__(self, rng: random.Random, authority: Ed25519PrivateKey) -> None:
        self.rng = rng
        self.authority = authority
        self.kid = key_id(authority.public_key())
        self.stranger = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        self.stranger_kid = key_id(self.stranger.public_key())
        self.serial = 0

    def _alert(self, now_ns: int, *, kid: bytes | None = None, issued: int | None = None, ttl_s: float = 60.0,
               zone: str = HOME, alert_id: str | None = None, bid: int = 1) -> Alert:
        self.serial += 1
        issued = now_ns if issued is None else issued
        return Alert(id=alert_id or f"h-{self.serial}", kid=self.kid if kid is None else kid, status="actual",
                     cls=2, lvl=2, zones=(zone,), issued=issued, expires=issued + round(ttl_s * NS), bid=bid,
                     text="hostile")

    def genuine(self, now_ns: int, bid: int) -> tuple[Alert, SignedAlert]:
        alert = self._alert(now_ns, ttl_s=GENUINE_TTL_S, bid=bid, alert_id=f"g-{self.serial}")
        body, sig = sign_alert(alert, self.authority)
        return alert, SignedAlert(body=body, sig=sig)

    def genuine_cancel(self, alert: Alert, now_ns: int) -> SignedAlertCancel:
        body, sig = sign_cancel(AlertCancel(kid=self.kid, cancel=alert.id, issued=now_ns), self.authority)
        return SignedAlertCancel(body=body, sig=sig)

    def message(self, kind: str, now_ns: int, g: Genuine) -> Message:
        """A message for a "server" kind."""
        rng = self.rng
        if kind == "alert_wrong_key":
            body = encode_alert(self._alert(now_ns))
            return SignedAlert(body=body, sig=self.stranger.sign(ALERT_CONTEXT + body))
        if kind == "alert_body_bit":
            flipped = bytearray(g.message.body)
            bit = rng.randrange(len(flipped) * 8)
            flipped[bit // 8] ^= 1 << (bit % 8)
            return SignedAlert(body=bytes(flipped), sig=g.message.sig)
        if kind == "alert_sig_bit":
            broken = bytearray(g.message.sig)
            bit = rng.randrange(512)
            broken[bit // 8] ^= 1 << (bit % 8)
            return SignedAlert(body=g.message.body, sig=bytes(broken))
        if kind == "alert_unsigned":
            sig = bytes(64) if rng.random() < 0.5 else rng.randbytes(64)
            return SignedAlert(body=encode_alert(self._alert(now_ns)), sig=sig)
        if kind == "alert_expired":
            body, sig = sign_alert(self._alert(now_ns, issued=now_ns - 3600 * NS, ttl_s=rng.uniform(1, 3000)),
                                   self.authority)
            return SignedAlert(body=body, sig=sig)
        if kind == "alert_future":
            body, sig = sign_alert(self._alert(now_ns, issued=now_ns + rng.randrange(31, 3600) * NS),
                                   self.authority)
            return SignedAlert(body=body, sig=sig)
        if kind == "alert_replay_id":
            body, sig = sign_alert(self._alert(now_ns, alert_id=g.alert.id, bid=g.alert.bid), self.authority)
            return SignedAlert(body=body, sig=sig)
        if kind == "alert_replay_message":
            return g.message
        if kind == "alert_wrong_zone":
            body, sig = sign_alert(self._alert(now_ns, zone=ELSEWHERE), self.authority)
            return SignedAlert(body=body, sig=sig)
        if kind == "alert_unknown_authority":
            body, sig = sign_alert(self._alert(now_ns, kid=self.stranger_kid), self.stranger)
            return SignedAlert(body=body, sig=sig)
        if kind == "cancel_forged":
            body = encode_cancel(AlertCancel(kid=self.kid, cancel=g.alert.id, issued=now_ns))
            return SignedAlertCancel(body=body, sig=self.stranger.sign(CANCEL_CONTEXT + body))
        raise ValueError(f"{kind} is not a server kind")

    def datagram(self, kind: str, g: Genuine) -> bytes:
        """A datagram for an "offpath" kind."""
        rng = self.rng
        captured = g.command_datagrams[-1]
        index = int.from_bytes(captured[4:8], "big")
        counter = int.from_bytes(captured[8:16], "big")
        if kind == "replay_alert_datagram":
            return rng.choice(g.alert_datagrams)
        if kind == "replay_command_datagram":
            return rng.choice(g.command_datagrams)
        plaintext = encode(Volume(level=0, id=rng.randrange(1, 1 << 31)))
        ahead = counter + rng.randrange(1, 1 << 20)
        if kind == "command_wrong_key":
            header = transport_header(index, ahead)
            nonce = bytes(4) + ahead.to_bytes(8, "little")
            return header + ChaCha20Poly1305(rng.randbytes(32)).encrypt(nonce, plaintext, header)
        if kind == "command_counter_moved":
            return captured[:8] + ahead.to_bytes(8, "big") + captured[16:]
        if kind == "command_forged_tag":
            return transport_header(index, ahead) + rng.randbytes(len(plaintext) + 16)
        if kind == "command_unknown_index":
            other = rng.getrandbits(32)
            while other == index:
                other = rng.getrandbits(32)
            return transport_header(other, rng.getrandbits(40)) + rng.randbytes(rng.randrange(16, 200))
        if kind == "command_plain":
            return plaintext
        raise ValueError(f"{kind} is not an off-path kind")


@dataclass(frozen=True, slots=True)
class Snapshot:
    drops: Counter[str]
    refused: Counter[str]
    accepted: int
    duplicates: int


def snapshot(core: SpeakerCore) -> Snapshot:
    drops = Counter(core.drops())
    duplicates = drops.get("duplicate", 0)
    for name in HOUSEKEEPING:
        drops.pop(name, None)
    return Snapshot(drops, Counter(core.alerts_refused), core.alerts_accepted, duplicates)


def counted(kind: Kind, before: Snapshot, after: Snapshot, attempts: int = 1) -> tuple[bool, Counter[str]]:
    """Whether ``attempts`` attempts of ``kind`` moved the counters by exactly ``attempts`` under its documented
    names (and refused alerts as well, for alert kinds), and nothing else; and the names they landed under."""
    drops = after.drops - before.drops
    refused = after.refused - before.refused
    ok = (sum(drops.values()) == attempts and set(drops) <= kind.reasons
          and after.accepted == before.accepted)
    ok = ok and (refused == drops if kind.alert else not refused)
    return ok, drops


@dataclass
class HostileResult:
    """Tallies of one run (both shares add into one)."""

    attempts: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    counted: Counter[str] = field(default_factory=Counter)
    body_bit_reasons: Counter[str] = field(default_factory=Counter)
    miscounted_as: Counter[str] = field(default_factory=Counter)  # kind:name of what miscounted attempts moved
    genuine_alerts: int = 0
    genuine_alerts_accepted: int = 0
    genuine_commands: int = 0
    genuine_commands_applied: int = 0
    genuine_cancels: int = 0
    genuine_cancels_applied: int = 0
    held_after_forged_cancel: int = 0
    duplicates: int = 0
    rounds_with_forged_cancel: int = 0
    udp_attempts: int = 0

    def add(self, kind: str, ok: bool, drops: Counter[str], accepted: int, attempts: int = 1) -> None:
        self.attempts[kind] += attempts
        self.accepted[kind] += accepted
        if ok:
            self.counted[kind] += attempts
        else:
            self.miscounted_as.update({f"{kind}:{name}": n for name, n in drops.items()})
        if kind == "alert_body_bit":
            self.body_bit_reasons.update(drops)

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in KINDS:
            out[f"attempts_{kind}"] = self.attempts[kind]
            out[f"accepted_{kind}"] = self.accepted[kind]
            out[f"counted_{kind}"] = self.counted[kind]
        total = sum(self.attempts.values())
        out.update(
            attempts=total, accepted=sum(self.accepted.values()), counted=sum(self.counted.values()),
            miscounted=total - sum(self.counted.values()), udp_attempts=self.udp_attempts,
            genuine_alerts=self.genuine_alerts, genuine_alerts_accepted=self.genuine_alerts_accepted,
            genuine_commands=self.genuine_commands, genuine_commands_applied=self.genuine_commands_applied,
            genuine_cancels=self.genuine_cancels, genuine_cancels_applied=self.genuine_cancels_applied,
            genuine_held_after_forged_cancel=self.held_after_forged_cancel,
            rounds_with_forged_cancel=self.rounds_with_forged_cancel,
            body_bit_reasons=dict(sorted(self.body_bit_reasons.items())),
            miscounted_as=dict(sorted(self.miscounted_as.items())), duplicates=self.duplicates,
        )
        return out


def _schedule(rng: random.Random, attempts: int) -> Iterator[list[str]]:
    """Rounds: each a shuffled list with every kind once (the last round cut to what is left)."""
    names = list(KINDS)
    left = attempts
    while left > 0:
        order = names[:]
        rng.shuffle(order)
        yield order[:left]
        left -= len(order[:left])


# -- sans-I/O share ----------------------------------------------------------------------------------------------


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
            authority_keys=[_raw(self.authority)], server_address=SERVER, sink=CounterSink(decode=False),
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
    for kinds in _schedule(random.Random(seed + 4), attempts):
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


# -- real UDP share ----------------------------------------------------------------------------------------------


class TappedSpeaker(SpeakerCore):
    """A reference device that also keeps what came from the server's address (the attacker's recording)."""

    tap: list[bytes] | None = None

    def receive_datagram(self, data: bytes, source: Address, now: float, *, group: str | None = None) -> None:
        if self.tap is not None and source == self.server_address and data[:1] == b"\x04":
            self.tap.append(data)
        super().receive_datagram(data, source, now, group=group)


async def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until true (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(0.002)
    return True


async def _udp(attempts: int, devices: int, seed: int, result: HostileResult,
               progress: Callable[[int], None] | None) -> None:
    rng = random.Random(seed)
    authority = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    forger = Forger(random.Random(seed + 3), authority)
    core = StreamerCore(static_private=rng.randbytes(32), zones=zones(), epoch_ns=epoch_for(anyio.current_time()),
                        authorities={key_id(authority.public_key()): authority.public_key()},
                        send_clock=anyio.current_time)
    service = StreamerService(core, open_udp_socket("127.0.0.1", 0))
    attackers = [open_udp_socket(f"127.0.0.{2 + i}", 0) for i in range(8)]
    cores: list[TappedSpeaker] = []
    runners: list[DeviceRunner] = []
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(service.serve)
            for i in range(devices):
                device = TappedSpeaker(static_private=rng.randbytes(32), server_public=core.public_key,
                                       authority_keys=[_raw(authority)], server_address=service.address,
                                       sink=CounterSink(decode=False), store=MemoryStore(1 << 20),
                                       rng=random.Random(seed + 10 + i), log_limit=0,
                                       timestamp_source=lambda _now: time.time_ns())
                core.add_device(device.public_key, HOME, service.now(), name=f"hostile-{i}")
                runner = DeviceRunner(device, service.address, bind_host="127.0.0.1")
                cores.append(device)
                runners.append(runner)
                tg.start_soon(runner.run)
            service.changed()
            if not await _wait(lambda: all(c.clock.ready and c.settings.zones for c in cores), 30):
                raise RuntimeError("the devices did not come up (session, clock estimate, config) within 30 s")
            await _udp_rounds(attempts, service, cores=cores, runners=runners, attackers=attackers, forger=forger,
                              result=result, progress=progress)
            tg.cancel_scope.cancel()
    finally:
        for sock in attackers:
            sock.close()
        service.sock.close()


async def _udp_rounds(attempts: int, service: StreamerService, *, cores: list[TappedSpeaker],
                      runners: list[DeviceRunner], attackers: list[socket.socket], forger: Forger,
                      result: HostileResult, progress: Callable[[int], None] | None) -> None:
    core = service.core
    per_batch = UDP_BATCH * len(cores)
    done = 0
    rounds = _schedule(random.Random(forger.rng.random()), -(-attempts // per_batch))
    for kinds in rounds:
        now_ns = core.server_time(service.now())
        genuine: list[Genuine] = []
        for device in cores:  # one genuine alert and one genuine command per device, recorded
            alert, message = forger.genuine(now_ns, core.allocate_bid())
            g = Genuine(alert, message)
            accepted = device.alerts_accepted
            device.tap = g.alert_datagrams
            core.send_command(device.public_key, message, service.now())
            service.changed()
            held = await _wait(_more_accepted(device, accepted), UDP_WAIT_S)
            result.genuine_alerts += 1
            result.genuine_alerts_accepted += held and device.alerts.for_bid(alert.bid) is not None
            level = (device.settings.volume_level + 1 + forger.rng.randrange(100)) % 101
            device.tap = g.command_datagrams
            core.send_command(device.public_key, Volume(level=level), service.now())
            service.changed()
            applied = await _wait(_volume_is(device, level), UDP_WAIT_S)
            device.tap = None
            result.genuine_commands += 1
            result.genuine_commands_applied += applied
            genuine.append(g)
        for name in kinds:
            kind = KINDS[name]
            before = [snapshot(d) for d in cores]
            for _ in range(UDP_BATCH):
                for device, runner, g in zip(cores, runners, genuine, strict=True):
                    if kind.via == "server":
                        core.send_command(device.public_key, forger.message(name, core.server_time(service.now()),
                                                                            g), service.now())
                    else:
                        forger.rng.choice(attackers).sendto(forger.datagram(name, g), runner.local_address)
                service.changed()
                await anyio.sleep(0)
            await _settle(cores, before)
            for device, old in zip(cores, before, strict=True):
                now = snapshot(device)
                ok, drops = counted(kind, old, now, UDP_BATCH)
                result.add(name, ok, drops, device.alerts_accepted - old.accepted, UDP_BATCH)
                result.duplicates += now.duplicates - old.duplicates
                result.udp_attempts += UDP_BATCH
        if "cancel_forged" in kinds:
            result.rounds_with_forged_cancel += len(cores)
            result.held_after_forged_cancel += sum(d.alerts.for_bid(g.alert.bid) is not None
                                                   for d, g in zip(cores, genuine, strict=True))
        for device, g in zip(cores, genuine, strict=True):
            core.send_command(device.public_key, forger.genuine_cancel(g.alert, core.server_time(service.now())),
                              service.now())
        service.changed()
        result.genuine_cancels += len(cores)
        await _wait(_all_cancelled([(d, g.alert.bid) for d, g in zip(cores, genuine, strict=True)]), UDP_WAIT_S)
        result.genuine_cancels_applied += sum(d.alerts.for_bid(g.alert.bid) is None
                                              for d, g in zip(cores, genuine, strict=True))
        done += len(kinds) * per_batch
        if progress is not None:
            progress(done)


def _more_accepted(device: SpeakerCore, accepted: int) -> Callable[[], bool]:
    return lambda: device.alerts_accepted > accepted


def _volume_is(device: SpeakerCore, level: int) -> Callable[[], bool]:
    return lambda: device.settings.volume_level == level


def _all_cancelled(held: list[tuple[SpeakerCore, int]]) -> Callable[[], bool]:
    return lambda: all(d.alerts.for_bid(bid) is None for d, bid in held)


async def _settle(cores: list[TappedSpeaker], before: list[Snapshot]) -> None:
    """Wait until each device counted a whole batch (or ``UDP_WAIT_S`` passed: the shortfall is miscounted),
    then a little longer, so that a second count of one attempt would show."""
    deadline = time.monotonic() + UDP_WAIT_S
    while time.monotonic() < deadline:
        if all(sum((snapshot(d).drops - b.drops).values()) >= UDP_BATCH for d, b in zip(cores, before, strict=True)):
            break
        await anyio.sleep(0.002)
    await anyio.sleep(0.01)


def run_udp(attempts: int, *, devices: int, seed: int, result: HostileResult,
            progress: Callable[[int], None] | None = None) -> None:
    """About ``attempts`` attempts over loopback UDP (whole batches: a multiple of ``UDP_BATCH`` x ``devices``)."""
    async def main() -> None:
        await _udp(attempts, devices, seed, result, progress)
    anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})


@click.command("hostile")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
@click.option("--attempts", type=click.IntRange(len(KINDS), 10_000_000), default=100_000, show_default=True,
              help="Hostile attempts in all, across every kind.")
@click.option("--udp", "udp", type=click.IntRange(0, 1_000_000), default=10_000, show_default=True,
              help="How many of them go over real loopback UDP through the streamer service.")
@click.option("--udp-devices", type=click.IntRange(1, 50), default=2, show_default=True,
              help="Reference devices on their own sockets for the UDP share.")
@click.option("--seed", type=int, default=1, show_default=True)
def hostile(*, as_json: bool, attempts: int, udp: int, udp_devices: int, seed: int) -> None:
    """Forged, unsigned, expired, replayed and wrong-zone alerts and commands: none accepted, each counted once."""
    if udp > attempts:
        raise UserError(f"--udp ({udp}) cannot exceed --attempts ({attempts})")
    result = HostileResult()
    started = time.monotonic()
    last = [started]

    def progress(label: str, total: int) -> Callable[[int], None]:
        def show(done: int) -> None:
            if time.monotonic() - last[0] >= 5.0 or done >= total:
                last[0] = time.monotonic()
                print(f"hostile {label}: {done}/{total}", file=sys.stderr)
        return show

    if udp:
        run_udp(udp, devices=udp_devices, seed=seed, result=result, progress=progress("udp", udp))
    rest = attempts - result.udp_attempts
    if rest > 0:
        run_sans_io(rest, seed=seed, result=result, progress=progress("sans-I/O", rest))
    elapsed = time.monotonic() - started
    metrics = result.metrics()
    metrics["attempts_per_s"] = round(metrics["attempts"] / elapsed, 1)
    metrics["seconds"] = round(elapsed, 2)
    env = environment(transport="sans-I/O pair under a virtual clock, and UDP loopback (streamer service and "
                                "reference devices in this process)", udp_devices=udp_devices, seed=seed)
    emit("hostile", metrics, as_json=as_json, env=env)
