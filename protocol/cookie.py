"""mac1/mac2 and cookies (PROTOCOL.md section 3.5), WireGuard's mechanism with loa's labels.

* ``mac1`` of an init is ``MAC(HASH("loa mac1" || S_pub), init[0:116])``; of a response,
  ``MAC(HASH("loa mac1" || D_pub), response[0:64])``. Anyone who knows the receiver's public key can make it:
  it proves nothing about the sender, it only makes the receiver skip bytes not meant for it cheaply.
* ``cookie = MAC(R, address)`` where ``address`` is the 16-byte IPv6 (IPv4-mapped) address and 2-byte port,
  ``R`` a secret of :class:`CookieSecret`. ``mac2 = MAC(cookie, init[0:132])`` proves the sender receives at
  its source address.
* A CookieReply carries the cookie sealed with ChaCha20-Poly1305 under ``HASH("loa cookie" || S_pub)`` with a
  random 12-byte nonce and the init's ``mac1`` as associated data.

A server computes these for every init it reads, and under a flood that is most of what it reads: :class:`MacKey`
sets a fixed key up once, :func:`address_bytes` keeps the 18-byte form of the latest few thousand addresses,
:meth:`CookieSecret.check_mac2` computes the address's cookie once for both the check and the answer, and
:class:`CookieSealer` keeps the cookie AEAD's key set up.

Failure semantics: :func:`open_cookie_reply` raises AuthError when the cookie does not decrypt; address
conversion raises LocalProtocolError for an address that is not an IP address and port (the caller's fault).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import os
from collections.abc import Callable
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from loa.protocol.datagram import TYPE_COOKIE, VERSION, CookieReply
from loa.protocol.errors import AuthError, LocalProtocolError

__all__ = [
    "ADDRESS_CACHE",
    "COOKIE_LIFETIME",
    "COOKIE_SECRET_LIFETIME",
    "LABEL_COOKIE",
    "LABEL_MAC1",
    "Address",
    "CookieSealer",
    "CookieSecret",
    "MacKey",
    "address_bytes",
    "cookie_key",
    "hash32",
    "mac",
    "mac1_key",
    "make_cookie_reply",
    "open_cookie_reply",
    "verify_mac",
]

Address = tuple[str, int]

LABEL_MAC1: Final = b"loa mac1"
LABEL_COOKIE: Final = b"loa cookie"
COOKIE_SECRET_LIFETIME: Final = 120.0
COOKIE_LIFETIME: Final = 120.0
ADDRESS_CACHE: Final = 4096  # addresses whose 18-byte form is kept (least recently used first out)


def hash32(data: bytes) -> bytes:
    """HASH: BLAKE2s-256."""
    return hashlib.blake2s(data).digest()


def mac(key: bytes, data: bytes) -> bytes:
    """MAC: keyed BLAKE2s with a 16-byte digest (RFC 7693)."""
    return hashlib.blake2s(data, key=key, digest_size=16).digest()


def verify_mac(key: bytes, data: bytes, tag: bytes) -> bool:
    """Constant-time check that ``tag == MAC(key, data)``."""
    return hmac.compare_digest(mac(key, data), tag)


class MacKey:
    """MAC under one fixed key, the key block compressed once: ``MacKey(key)(data) == mac(key, data)``.

    A server checks the mac1 of every init it reads under the same key; copying a keyed BLAKE2s state costs less
    than keying a new one."""

    __slots__ = ("_base",)

    def __init__(self, key: bytes) -> None:
        self._base = hashlib.blake2s(key=key, digest_size=16)

    def __call__(self, data: bytes) -> bytes:
        h = self._base.copy()
        h.update(data)
        return h.digest()

    def verify(self, data: bytes, tag: bytes) -> bool:
        """Constant-time check that ``tag == MAC(key, data)``."""
        return hmac.compare_digest(self(data), tag)


def mac1_key(public: bytes) -> bytes:
    """``HASH(LABEL_MAC1 || public)``: the mac1 key of messages sent to the owner of ``public``."""
    return hash32(LABEL_MAC1 + public)


def cookie_key(server_public: bytes) -> bytes:
    """``HASH(LABEL_COOKIE || S_pub)``: the key that seals cookies."""
    return hash32(LABEL_COOKIE + server_public)


_V4_MAPPED: Final = bytes(10) + b"\xff\xff"


def _dotted_quad(host: object) -> bytes | None:
    """The 4 bytes of a dotted-quad IPv4 address written as ``ipaddress`` writes it, or None for anything else
    (which then takes the general path). A server computes this for every init in cookie mode: ``ipaddress``
    costs tens of microseconds, this one."""
    if not isinstance(host, str) or not host.isascii():
        return None
    parts = host.split(".")
    if len(parts) != 4:
        return None
    octets = []
    for part in parts:
        if not part.isdigit() or len(part) > 3 or (part[0] == "0" and part != "0"):
            return None
        value = int(part)
        if value > 255:
            return None
        octets.append(value)
    return bytes(octets)


def address_bytes(address: Address) -> bytes:
    """The 18-byte form of an address: IPv6 (IPv4 mapped as ``::ffff:a.b.c.d``) followed by the port.

    The forms of the latest :data:`ADDRESS_CACHE` distinct ``(host, port)`` are kept (a flood from a few thousand
    sources is then parsed once per source; one from ever new sources costs a look-up more than parsing)."""
    try:
        raw: bytes = _address_bytes_of(address[0], address[1])
    except (TypeError, IndexError, KeyError) as exc:  # not a pair, or unhashable parts
        raise LocalProtocolError(f"not an IP address and port: {address!r}") from exc
    return raw


@functools.lru_cache(maxsize=ADDRESS_CACHE, typed=True)
def _address_bytes_of(host: object, port: object) -> bytes:
    quad = _dotted_quad(host)
    if quad is not None and type(port) is int and 0 <= port <= 0xFFFF:
        return _V4_MAPPED + quad + port.to_bytes(2, "big")
    try:
        ip = ipaddress.ip_address(host)  # type: ignore[arg-type]
        number: int = int(port)  # type: ignore[call-overload]
        if not 0 <= number <= 0xFFFF:
            raise ValueError(number)
    except (ValueError, TypeError) as exc:
        raise LocalProtocolError(f"not an IP address and port: {(host, port)!r}") from exc
    raw = ipaddress.IPv6Address(f"::ffff:{ip}").packed if ip.version == 4 else ip.packed
    return raw + number.to_bytes(2, "big")


class CookieSecret:
    """The server's rotating cookie secret ``R``.

    A secret is drawn (from ``random_bytes``) at the first use and replaced by a fresh one at the first use
    ``lifetime`` (120 s) or more after it was drawn. Cookies are always made with the newest secret; mac2 is
    accepted if it verifies under the newest secret or under the one before it while that one is less than
    ``2 * lifetime`` old. A cookie a device received is thus valid for at least ``COOKIE_LIFETIME`` after it
    was made.
    """

    __slots__ = ("_born", "_current", "_lifetime", "_previous", "_random_bytes")

    def __init__(self, random_bytes: Callable[[int], bytes] = os.urandom, lifetime: float = COOKIE_SECRET_LIFETIME):
        self._random_bytes = random_bytes
        self._lifetime = lifetime
        self._current: bytes | None = None
        self._born = 0.0
        self._previous: tuple[bytes, float] | None = None

    def _secrets(self, now: float) -> tuple[bytes, bytes | None]:
        if self._current is None or now >= self._born + self._lifetime:
            if self._current is not None:
                self._previous = (self._current, self._born)
            self._current, self._born = self._random_bytes(32), now
        prev = self._previous
        if prev is not None and now >= prev[1] + 2 * self._lifetime:
            self._previous = prev = None
        return self._current, None if prev is None else prev[0]

    def cookie(self, address: Address, now: float) -> bytes:
        """The 16-byte cookie for ``address`` at time ``now``."""
        current, _ = self._secrets(now)
        return mac(current, address_bytes(address))

    def verify_mac2(self, address: Address, data: bytes, mac2: bytes, now: float) -> bool:
        """True if ``mac2 == MAC(cookie, data)`` for a cookie of ``address`` under a still-accepted secret."""
        return self.check_mac2(address_bytes(address), data, mac2, now) is None

    def check_mac2(self, raw_address: bytes, data: bytes, mac2: bytes, now: float) -> bytes | None:
        """None if ``mac2`` is valid for the address (its 18-byte form, :func:`address_bytes`) as
        :meth:`verify_mac2` says; otherwise the address's cookie as :meth:`cookie` makes it, to send back. The
        newest secret's cookie is computed once, for the check and the answer."""
        current, previous = self._secrets(now)
        cookie = mac(current, raw_address)
        if verify_mac(cookie, data, mac2):
            return None
        if previous is not None and verify_mac(mac(previous, raw_address), data, mac2):
            return None
        return cookie


def make_cookie_reply(
    receiver_index: int, cookie: bytes, init_mac1: bytes, server_public: bytes, nonce: bytes
) -> CookieReply:
    """Seal ``cookie`` for the device whose init carried ``init_mac1`` and ``sender_index = receiver_index``."""
    sealed = ChaCha20Poly1305(cookie_key(server_public)).encrypt(nonce, cookie, init_mac1)
    return CookieReply(receiver_index, nonce, sealed)


_COOKIE_HEADER: Final = bytes((TYPE_COOKIE, VERSION, 0, 0))


class CookieSealer:
    """:func:`make_cookie_reply` for one server key, the AEAD key derived and set up once; returns the wire bytes.

    ``seal(index, cookie, init_mac1, nonce)`` with ``index`` the init's 4 ``sender_index`` bytes as received
    equals ``make_cookie_reply(int.from_bytes(index, "big"), cookie, init_mac1, server_public, nonce).to_bytes()``.
    LocalProtocolError if ``index`` is not 4 bytes, ``cookie`` not 16 or ``nonce`` not 12."""

    __slots__ = ("_aead",)

    def __init__(self, server_public: bytes) -> None:
        self._aead = ChaCha20Poly1305(cookie_key(server_public))

    def seal(self, index: bytes, cookie: bytes, init_mac1: bytes, nonce: bytes) -> bytes:
        if len(index) != 4 or len(cookie) != 16 or len(nonce) != 12:
            raise LocalProtocolError("a cookie reply needs a 4-byte index, a 16-byte cookie and a 12-byte nonce")
        return _COOKIE_HEADER + index + nonce + self._aead.encrypt(nonce, cookie, init_mac1)


def open_cookie_reply(reply: CookieReply, init_mac1: bytes, server_public: bytes) -> bytes:
    """The 16-byte cookie in ``reply``; AuthError if it does not decrypt with this ``init_mac1`` and key."""
    try:
        cookie = ChaCha20Poly1305(cookie_key(server_public)).decrypt(reply.nonce, reply.encrypted_cookie, init_mac1)
    except InvalidTag as exc:
        raise AuthError("cookie reply does not decrypt") from exc
    return cookie
