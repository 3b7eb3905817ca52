"""Building blocks of the session layer shared by both sides: constants, events, handshake and transport steps.

Every function here is pure apart from the objects it is given. Each ``open_*`` function checks everything
before it changes anything: when it raises (a :class:`~loa.protocol.errors.RemoteProtocolError` subclass),
the handshake state, keys and replay window it was given are unchanged.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from loa.protocol.cookie import mac, mac1_key, verify_mac
from loa.protocol.datagram import TYPE_TRANSPORT, VERSION, HandshakeInit, HandshakeResponse, Transport, transport_header
from loa.protocol.errors import AuthError, BadMacError, LocalProtocolError, ReplayError
from loa.protocol.noise import CipherState, HandshakeState
from loa.protocol.replay import REJECT_AFTER_MESSAGES, ReplayWindow

__all__ = [
    "DEAD_AFTER",
    "HANDSHAKES_PER_SECOND_BEFORE_COOKIE",
    "JOIN_JITTER",
    "JOIN_RETRY",
    "KEEPALIVE_INTERVAL",
    "NOISE_PROTOCOL",
    "PROLOGUE",
    "REJECT_AFTER_TIME",
    "REKEY_AFTER_TIME",
    "REKEY_JITTER",
    "REKEY_TIMEOUT",
    "RETRY_MAX",
    "RETRY_ROUND_TRIPS",
    "Dropped",
    "Event",
    "Keepalive",
    "Message",
    "OpenedInit",
    "SessionKeys",
    "SessionLost",
    "SessionStarted",
    "build_init",
    "build_response",
    "check_init_mac1",
    "check_timestamp",
    "device_id",
    "open_init",
    "open_response",
    "open_transport",
    "seal_transport",
    "seal_transport_bytes",
]

NOISE_PROTOCOL: Final = "Noise_IK_25519_ChaChaPoly_BLAKE2s"
PROLOGUE: Final = b"loa/1"

KEEPALIVE_INTERVAL: Final = 15.0
REKEY_AFTER_TIME: Final = 120.0
REJECT_AFTER_TIME: Final = 180.0
REKEY_TIMEOUT: Final = 5.0
REKEY_JITTER: Final = 0.333
#: Retry of an unanswered init while the device has no current session and no cookie (PROTOCOL.md 3.8.2).
JOIN_RETRY: Final = 2.0
JOIN_JITTER: Final = 0.5
#: A device that learned its handshake round trip waits at least this many of them before retrying an init, and
#: at most RETRY_MAX for that reason (PROTOCOL.md 3.8.2).
RETRY_ROUND_TRIPS: Final = 2.0
RETRY_MAX: Final = 10.0
DEAD_AFTER: Final = 45.0
HANDSHAKES_PER_SECOND_BEFORE_COOKIE: Final = 200

_INIT_PAYLOAD = struct.Struct(">QI")
_RESPONSE_PAYLOAD = struct.Struct(">I")
_ZERO16: Final = bytes(16)
_TRANSPORT_HEADER = struct.Struct(">BBxxIQ")


def device_id(public: bytes) -> str:
    """The device id: lowercase hex of the first 8 bytes of BLAKE2s-256 of the static public key."""
    return hashlib.blake2s(public).digest()[:8].hex()


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """A handshake completed and the new session can carry messages.

    Server side: emitted when the first transport message arrives on the new session (the device proved it holds
    the keys); ``device_pub`` is the device's static key. Device side: emitted when the response is accepted;
    ``device_pub`` is None. ``boot`` is the peer's boot value; ``peer_restarted`` is True when it differs from
    the peer's boot seen in the previous session (False for the first session). Rekeys emit it too.
    """

    device_pub: bytes | None
    boot: int
    peer_restarted: bool


@dataclass(frozen=True, slots=True)
class Message:
    """An authenticated, non-empty transport plaintext (one control message)."""

    device_pub: bytes | None
    plaintext: bytes


@dataclass(frozen=True, slots=True)
class Keepalive:
    """An authenticated, empty transport message."""

    device_pub: bytes | None


@dataclass(frozen=True, slots=True)
class SessionLost:
    """No session remains: it expired (REJECT_AFTER_TIME) or, on a device, the server fell silent (DEAD_AFTER).

    The device keeps handshaking by itself; the server forgets the device until its next handshake.
    """

    device_pub: bytes | None


@dataclass(frozen=True, slots=True)
class Dropped:
    """A datagram was dropped; ``error`` is the name of the RemoteProtocolError subclass it was counted under."""

    error: str


Event = SessionStarted | Message | Keepalive | SessionLost | Dropped


class SessionKeys:
    """One session's transport state: indexes, both ciphers, the send counter and the receive replay window."""

    __slots__ = ("created", "local_index", "received", "recv", "remote_index", "send", "sent", "window")

    def __init__(self, local_index: int, remote_index: int, send: CipherState, recv: CipherState, created: float):
        self.local_index = local_index
        self.remote_index = remote_index
        self.send = send
        self.recv = recv
        self.created = created
        self.sent = 0
        self.received = False
        self.window = ReplayWindow()

    def expired(self, now: float) -> bool:
        # The same sum as the expiry deadline the timers are given (``created + REJECT_AFTER_TIME``): with
        # ``now - created`` instead, rounding can leave a session unexpired at its own deadline, and the server's
        # timer loop then fires that deadline again for ever.
        return now >= self.created + REJECT_AFTER_TIME


@dataclass(frozen=True, slots=True, eq=False)
class OpenedInit:
    """What a server learns from a HandshakeInit that decrypted (its mac1 already checked)."""

    device_pub: bytes
    timestamp: int
    boot: int
    handshake: HandshakeState


def _no_randomness(_size: int) -> bytes:
    raise LocalProtocolError("session handshakes take their ephemeral keys from the caller")


def _handshake(initiator: bool, static: bytes, remote: bytes | None, ephemeral: bytes | None) -> HandshakeState:
    return HandshakeState(NOISE_PROTOCOL, initiator=initiator, prologue=PROLOGUE, s=static, rs=remote, e=ephemeral,
                          random_bytes=_no_randomness)


def build_init(
    *,
    device_static: bytes,
    server_pub: bytes,
    ephemeral: bytes,
    sender_index: int,
    timestamp: int,
    boot: int,
    cookie: bytes | None,
    server_mac1_key: bytes,
) -> tuple[HandshakeInit, HandshakeState]:
    """Write Noise message 1 and frame it as a HandshakeInit (mac2 from ``cookie``, or zeros)."""
    if not 0 <= timestamp < 1 << 64 or not 0 <= boot < 1 << 32:
        raise LocalProtocolError("timestamp is 64 bits and boot 32 bits, unsigned")
    hs = _handshake(True, device_static, server_pub, ephemeral)
    msg = hs.write_message(_INIT_PAYLOAD.pack(timestamp, boot))
    head = HandshakeInit(sender_index, msg[:32], msg[32:80], msg[80:108], _ZERO16, _ZERO16).to_bytes()
    mac1 = mac(server_mac1_key, head[: HandshakeInit.MAC1_OFFSET])
    mac2 = _ZERO16 if cookie is None else mac(cookie, head[: HandshakeInit.MAC1_OFFSET] + mac1)
    return HandshakeInit(sender_index, msg[:32], msg[32:80], msg[80:108], mac1, mac2), hs


def check_init_mac1(init: HandshakeInit, server_mac1_key: bytes) -> None:
    """BadMacError unless the init's mac1 is right for this server."""
    if not verify_mac(server_mac1_key, init.to_bytes()[: HandshakeInit.MAC1_OFFSET], init.mac1):
        raise BadMacError("HandshakeInit mac1 does not verify")


def open_init(init: HandshakeInit, *, server_static: bytes) -> OpenedInit:
    """Read Noise message 1; AuthError if it does not decrypt (wrong server key, forged, corrupted)."""
    hs = _handshake(False, server_static, None, None)
    payload = hs.read_message(init.noise_message)
    if hs.rs is None:  # pragma: no cover - IK message 1 always carries s
        raise AuthError("no static key in HandshakeInit")
    timestamp, boot = _INIT_PAYLOAD.unpack(payload)
    return OpenedInit(hs.rs, timestamp, boot, hs)


def build_response(
    hs: HandshakeState, *, ephemeral: bytes, sender_index: int, receiver_index: int, boot: int, now: float
) -> tuple[HandshakeResponse, SessionKeys]:
    """Write Noise message 2 with the server ephemeral key ``ephemeral`` (payload ``boot``), frame it, and split:
    the server's SessionKeys."""
    if hs.rs is None:
        raise LocalProtocolError("handshake has no device key")
    if not 0 <= boot < 1 << 32:
        raise LocalProtocolError("boot is an unsigned 32-bit value")
    hs.e = ephemeral
    msg = hs.write_message(_RESPONSE_PAYLOAD.pack(boot))
    head = HandshakeResponse(sender_index, receiver_index, msg[:32], msg[32:52], _ZERO16, _ZERO16).to_bytes()
    mac1 = mac(mac1_key(hs.rs), head[: HandshakeResponse.MAC1_OFFSET])
    k_ds, k_sd = hs.split()
    response = HandshakeResponse(sender_index, receiver_index, msg[:32], msg[32:52], mac1, _ZERO16)
    return response, SessionKeys(sender_index, receiver_index, send=k_sd, recv=k_ds, created=now)


def open_response(
    response: HandshakeResponse, hs: HandshakeState, *, device_mac1_key: bytes, now: float
) -> tuple[int, SessionKeys]:
    """Check mac1 (BadMacError), read Noise message 2 (AuthError) and split: (server boot, device SessionKeys)."""
    if not verify_mac(device_mac1_key, response.to_bytes()[: HandshakeResponse.MAC1_OFFSET], response.mac1):
        raise BadMacError("HandshakeResponse mac1 does not verify")
    payload = hs.read_message(response.noise_message)
    (boot,) = _RESPONSE_PAYLOAD.unpack(payload)
    k_ds, k_sd = hs.split()
    return boot, SessionKeys(response.receiver_index, response.sender_index, send=k_ds, recv=k_sd, created=now)


def seal_transport(keys: SessionKeys, plaintext: bytes) -> Transport:
    """Encrypt ``plaintext`` with the next send counter of ``keys`` (LocalProtocolError when exhausted)."""
    counter = keys.sent
    if counter >= REJECT_AFTER_MESSAGES:
        raise LocalProtocolError("send counter exhausted; a new handshake is needed")
    header = transport_header(keys.remote_index, counter)
    keys.sent = counter + 1
    return Transport(keys.remote_index, counter, keys.send.encrypt_at(counter, header, plaintext))


def seal_transport_bytes(keys: SessionKeys, plaintext: bytes) -> bytes:
    """:func:`seal_transport` straight to the datagram's bytes (``seal_transport(...).to_bytes()``), without the
    :class:`Transport` in between: the server's send path, where it runs once per device and message."""
    counter = keys.sent
    if counter >= REJECT_AFTER_MESSAGES:
        raise LocalProtocolError("send counter exhausted; a new handshake is needed")
    header = _TRANSPORT_HEADER.pack(TYPE_TRANSPORT, VERSION, keys.remote_index, counter)
    keys.sent = counter + 1
    return header + keys.send.encrypt_at(counter, header, plaintext)


def open_transport(keys: SessionKeys, message: Transport) -> tuple[bytes, bool]:
    """Check the window (ReplayError), decrypt (AuthError), then mark the counter.

    Returns the plaintext and whether the counter is now the greatest accepted (roaming uses it).
    """
    keys.window.check(message.counter)
    plaintext = keys.recv.decrypt_at(message.counter, message.header, message.ciphertext)
    advanced = keys.window.accept(message.counter)
    keys.received = True
    return plaintext, advanced


def check_timestamp(stored: int | None, timestamp: int) -> None:
    """ReplayError unless ``timestamp`` is greater than the greatest one accepted from this device."""
    if stored is not None and timestamp <= stored:
        raise ReplayError(f"handshake timestamp {timestamp} is not greater than {stored}")
