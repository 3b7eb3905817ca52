"""Keys written as text: how an operator, an installer or a vendor types a 32-byte key.

A key is accepted as 64 hex digits or as base64, standard or URL-safe, with or without its padding; surrounding
white space is ignored. :func:`decode_key` is the one reading of that text that the API, the streamer's site
file, the device's command line and the conformance kit share. :func:`is_weak_public_key` says whether a 32-byte
X25519 public key is of small order (its shared secret with any key is all zeros, PROTOCOL.md section 3.2): no
real device or server has such a key.

Failure semantics: :func:`decode_key` raises :class:`ValueError` with a one-line reason; callers turn it into
their own error (an API problem, a command-line message).
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

__all__ = ["KEY_SIZE", "decode_key", "is_weak_public_key"]

KEY_SIZE: Final = 32


def decode_key(text: str) -> bytes:
    """The 32 bytes written in ``text`` (64 hex digits, or base64 standard or URL-safe, padding optional)."""
    raw = text.strip()
    if len(raw) == 2 * KEY_SIZE:
        try:
            return bytes.fromhex(raw)
        except ValueError:
            pass  # 64 characters of base64 is not a 32-byte key either, but say so below
    standard = raw.replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):  # not base64, or not ASCII
        raise ValueError("neither 64 hex digits nor base64") from None
    if len(key) != KEY_SIZE:
        raise ValueError(f"{len(key)} bytes, not {KEY_SIZE}")
    return key


def is_weak_public_key(key: bytes) -> bool:
    """True if ``key`` is an X25519 public key of small order (or not 32 bytes)."""
    if len(key) != KEY_SIZE:
        return True
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(key))
    except ValueError:
        return True
    return False
