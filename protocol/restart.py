"""Restart notices (spec section 3.16): a restarted server tells the devices it had sessions with, at once.

A restarted server has lost every session (section 7.6) and may not answer what it cannot authenticate, so without
a notice a device learns of the restart only when its probes go unanswered, seconds later. The notice is one
datagram per device from the server's port to the device's last session address (type ``0x06``, server -> device,
never encrypted)::

    0   4  header    06 01 00 00
    4   4  old_boot  the boot of the server the device's current session is with (big-endian)
    8   4  new_boot  the restarted server's boot; never equal to old_boot
    12  16 mac       keyed BLAKE2s-128 of bytes 0-11 under the pair's notice key

The **notice key** of a server and a device is HKDF (RFC 5869) with HMAC-BLAKE2s, salt ``"loa-restart/1"``, empty
info, 32 bytes of output, over X25519 of the one's static private key and the other's static public key (the same
value at both ends; neither side needs anything but its enrolled keys). A notice therefore comes only from the
holder of the server's static key, is bound to one device, and is fresh only for the session whose ``old_boot`` it
names: a device accepts it while its current session is with a server of that boot, and not after (boots are
random 32-bit values).

:func:`parse_notice` checks structure only, in this order, and the first failure names the error: longer than 1200
bytes (``OversizeError``); empty (``TruncatedError``); a type other than ``0x06`` (``UnknownTypeError``); shorter
than 4 bytes (``TruncatedError``); ``version`` not 1 (``UnknownVersionError``); ``reserved`` not zero
(``ReservedBitsError``); shorter than 28 bytes (``TruncatedError``); longer (``BadLengthError``).
:func:`check_notice` then makes the device's checks of section 3.16 for a session with a server of boot
``session_boot``: ``old_boot`` not that boot (``ReplayError``), ``new_boot`` equal to it (``FieldError``), ``mac``
wrong (``BadMacError``).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from loa.protocol.datagram import TYPE_NOTICE, VERSION, check_head
from loa.protocol.errors import (
    BadLengthError,
    BadMacError,
    FieldError,
    LocalProtocolError,
    ReplayError,
    TruncatedError,
)
from loa.protocol.noise import dh

__all__ = ["NOTICE_SALT", "NOTICE_SIZE", "TYPE_NOTICE", "check_notice", "encode_notice", "notice_key", "parse_notice"]

NOTICE_SALT: Final = b"loa-restart/1"
NOTICE_SIZE: Final = 28
MAC_SIZE: Final = 16
_HEAD = struct.Struct(">BBHII")
_BOOT_LIMIT: Final = 1 << 32


def notice_key(private: bytes, peer_public: bytes) -> bytes:
    """The notice key of a server and a device, from either side's static private key and the other's public key.
    Raises AuthError for a low-order public key (as any X25519 here)."""
    shared = dh(private, peer_public)
    return HKDF(algorithm=hashes.BLAKE2s(32), length=32, salt=NOTICE_SALT, info=b"").derive(shared)


def _mac(key: bytes, head: bytes) -> bytes:
    return hashlib.blake2s(head, key=key, digest_size=MAC_SIZE).digest()


def encode_notice(key: bytes, old_boot: int, new_boot: int) -> bytes:
    """The notice datagram; LocalProtocolError for a boot outside 32 bits or ``new_boot == old_boot``."""
    if not (0 <= old_boot < _BOOT_LIMIT and 0 <= new_boot < _BOOT_LIMIT):
        raise LocalProtocolError("boots are unsigned 32-bit values")
    if new_boot == old_boot:
        raise LocalProtocolError("a restart notice names two different boots")
    head = _HEAD.pack(TYPE_NOTICE, VERSION, 0, old_boot, new_boot)
    return head + _mac(key, head)


def parse_notice(data: bytes) -> tuple[int, int, bytes]:
    """``(old_boot, new_boot, mac)`` of a notice datagram, structure checked as the module says; raises the named
    error."""
    check_head(data, TYPE_NOTICE, "restart notice", 4)
    size = len(data)
    if size < NOTICE_SIZE:
        raise TruncatedError(f"restart notice of {size} bytes; it is {NOTICE_SIZE}")
    if size > NOTICE_SIZE:
        raise BadLengthError(f"{size - NOTICE_SIZE} bytes after the restart notice's mac")
    _, _, _, old_boot, new_boot = _HEAD.unpack_from(data)
    return old_boot, new_boot, bytes(data[12:NOTICE_SIZE])


def check_notice(key: bytes, data: bytes, session_boot: int) -> int:
    """The new boot a notice announces to a device whose current session is with a server of boot
    ``session_boot``; raises the structural error, ReplayError, FieldError or BadMacError (module docstring)."""
    old_boot, new_boot, mac = parse_notice(data)
    if old_boot != session_boot:
        raise ReplayError("restart notice for a server boot other than the current session's")
    if new_boot == old_boot:
        raise FieldError("restart notice whose new boot is the old one")
    if not hmac.compare_digest(mac, _mac(key, bytes(data[:12]))):
        raise BadMacError("restart notice mac does not verify")
    return new_boot
