"""The attempts of `loa bench hostile` (its module docstring lists the kinds): how each is forged from what the
attacker captured of a genuine round, and how the device's counters must move for it.

:class:`Forger` builds every kind from the current round's :class:`Genuine`; :func:`snapshot` and :func:`counted`
decide whether an attempt was refused and counted exactly once under a documented name; :class:`HostileResult`
keeps the tallies of a run. No I/O here: both shares (sans-I/O and UDP) use these.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from loa.devices.core import SpeakerCore
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
from loa.protocol.beacon import encode_beacon
from loa.protocol.control import Message, SignedAlert, SignedAlertCancel, Volume, encode
from loa.protocol.datagram import transport_header
from loa.streamer.zones import Zone, ZoneTree

__all__ = ["KINDS", "Forger", "Genuine", "HostileResult", "Kind", "Snapshot", "counted", "schedule", "snapshot"]

Address = tuple[str, int]
NS = 1_000_000_000
HOME, ELSEWHERE = "A", "B"
GENUINE_TTL_S = 600.0
PARSE_ERRORS = frozenset({"OversizeError", "MalformedError", "FieldError", "UnknownVersionError"})
# Not an attempt's doing: clock probes answered late, and copies of reliable messages the server sent again
# because an acknowledgement came late (acknowledged again, never evaluated again; tallied as `duplicates`).
HOUSEKEEPING = frozenset({"stale_time_resp", "duplicate"})


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
    "beacon_forged": _k("offpath", False, "UnknownKeyError"),
    "beacon_replay": _k("offpath", False, "UnknownKeyError"),
}


def zones() -> ZoneTree:
    return ZoneTree([Zone("P", "Tỉnh"), Zone(HOME, "Xã A", "P"), Zone(ELSEWHERE, "Xã B", "P")])


def raw_public(key: Ed25519PrivateKey) -> bytes:
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
        if kind == "beacon_replay":  # the genuine alert as a beacon, from the attacker's address (6.4.2)
            return encode_beacon(g.message.body, g.message.sig)
        if kind == "beacon_forged":
            body = encode_alert(self._alert(g.alert.issued))
            return encode_beacon(body, self.stranger.sign(ALERT_CONTEXT + body))
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


def schedule(rng: random.Random, attempts: int) -> Iterator[list[str]]:
    """Rounds: each a shuffled list with every kind once (the last round cut to what is left)."""
    names = list(KINDS)
    left = attempts
    while left > 0:
        order = names[:]
        rng.shuffle(order)
        yield order[:left]
        left -= len(order[:left])
