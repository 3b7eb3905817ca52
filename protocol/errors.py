"""Errors of the wire protocol, split by blame (as h11 does).

* :class:`LocalProtocolError` - our caller misused the API (sending on a closed session, a volume of 300).
* :class:`RemoteProtocolError` - the peer, or whoever forged the datagram, broke the protocol. Every parser in
  :mod:`loa.protocol` raises only subclasses of :class:`ProtocolError` for any input bytes whatsoever.

The subclasses of :class:`RemoteProtocolError` are the named errors of ``spec/vectors/*.json``: a vector's
``"error"`` field is the class name. A receiver that meets one drops the datagram (or message), counts it by
name, and carries on; none of them ends a session by itself.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BadLengthError",
    "BadMacError",
    "ExpiredError",
    "FieldError",
    "LocalProtocolError",
    "MalformedError",
    "OversizeError",
    "ProtocolError",
    "RateLimitError",
    "RemoteProtocolError",
    "ReplayError",
    "ReservedBitsError",
    "SignatureError",
    "TruncatedError",
    "UnknownKeyError",
    "UnknownTypeError",
    "UnknownVersionError",
    "WrongZoneError",
    "error_by_name",
]


class ProtocolError(Exception):
    """Base of every error raised by :mod:`loa.protocol`."""


class LocalProtocolError(ProtocolError):
    """The local caller misused the protocol API. Fix the calling code; nothing was sent."""


class RemoteProtocolError(ProtocolError):
    """Input from the network (or a stored file) violates the spec. Drop it and count it."""


class TruncatedError(RemoteProtocolError):
    """Fewer bytes than the layout needs."""


class BadLengthError(RemoteProtocolError):
    """A length that is not the one the layout requires (trailing bytes, inconsistent length fields)."""


class OversizeError(RemoteProtocolError):
    """Larger than the spec allows (datagram, message, list or string limits)."""


class UnknownVersionError(RemoteProtocolError):
    """A protocol version this implementation does not speak."""


class UnknownTypeError(RemoteProtocolError):
    """A datagram type (first byte) that is not defined."""


class ReservedBitsError(RemoteProtocolError):
    """Reserved bits or bytes that are not zero."""


class BadMacError(RemoteProtocolError):
    """A handshake mac1 or mac2 that does not verify."""


class AuthError(RemoteProtocolError):
    """An AEAD tag, SRTP/SRTCP authentication tag or handshake decryption that does not verify."""


class ReplayError(RemoteProtocolError):
    """A counter, sequence number, timestamp or id that was already accepted or fell out of the window."""


class ExpiredError(RemoteProtocolError):
    """Outside its validity time (an expired alert, a stale handshake timestamp)."""


class SignatureError(RemoteProtocolError):
    """An Ed25519 signature that does not verify."""


class UnknownKeyError(RemoteProtocolError):
    """Signed or sent by a key the receiver does not trust (unknown device, unknown authority)."""


class WrongZoneError(RemoteProtocolError):
    """Addressed to zones that do not include the receiver."""


class MalformedError(RemoteProtocolError):
    """Not decodable at all: invalid msgpack, not a map, wrong RTP version."""


class FieldError(RemoteProtocolError):
    """A decodable message with a missing field, a field of the wrong type, or a value out of range."""


class RateLimitError(RemoteProtocolError):
    """Input over a receiver's bound on costly checks (an alert beacon beyond the verification rate, 6.4.2)."""


def error_by_name(name: str) -> type[RemoteProtocolError]:
    """Return the error class a vector names; raises KeyError for names the spec does not define."""
    cls = globals()[name]
    if not (isinstance(cls, type) and issubclass(cls, RemoteProtocolError)):
        raise KeyError(name)
    return cls
