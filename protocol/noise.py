"""The Noise Protocol Framework, revision 34: CipherState, SymmetricState and HandshakeState.

Composed from ``cryptography`` (X25519, ChaCha20-Poly1305, AES-GCM) and ``hashlib`` (BLAKE2s, BLAKE2b,
SHA-256, SHA-512, with :mod:`hmac` for Noise's HKDF). Only the 25519 DH function is implemented; the handshake
patterns are those of :data:`PATTERNS` (no PSK modifiers). loa uses ``Noise_IK_25519_ChaChaPoly_BLAKE2s``
(PROTOCOL.md section 3.1); the other suites exist so that every published Noise vector can be checked.

Failure semantics: a ciphertext or handshake message that does not authenticate, or a peer public key that gives
an all-zero X25519 result, raises :class:`~loa.protocol.errors.AuthError`; a message too short for its pattern
raises :class:`~loa.protocol.errors.TruncatedError`. A failed :meth:`HandshakeState.read_message` leaves the
handshake state exactly as it was before the call. Misuse (writing out of turn, a nonce at 2^64 - 1) raises
:class:`~loa.protocol.errors.LocalProtocolError`.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from collections.abc import Callable
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from loa.protocol.errors import AuthError, LocalProtocolError, TruncatedError

__all__ = [
    "DHLEN",
    "PATTERNS",
    "TAGLEN",
    "CipherState",
    "HandshakeState",
    "SymmetricState",
    "dh",
    "x25519_public",
]

DHLEN: Final = 32
TAGLEN: Final = 16
_MAX_NONCE: Final = 2**64 - 1
STATIC_KEY_CACHE: Final = 16384  # loaded static private keys kept (a fleet process hosts thousands of devices)

#: The cipher names, each mapped to itself: a CipherState keeps this one shared string, not a copy per session.
_CIPHERS: Final[dict[str, str]] = {"ChaChaPoly": "ChaChaPoly", "AESGCM": "AESGCM"}

_HASHES: Final[dict[str, Callable[..., Any]]] = {
    "BLAKE2s": hashlib.blake2s,
    "BLAKE2b": hashlib.blake2b,
    "SHA256": hashlib.sha256,
    "SHA512": hashlib.sha512,
}

#: pattern name -> (initiator pre-message, responder pre-message, message token sequences)
PATTERNS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, ...], ...]]]] = {
    "NN": ((), (), (("e",), ("e", "ee"))),
    "NK": ((), ("s",), (("e", "es"), ("e", "ee"))),
    "KK": (("s",), ("s",), (("e", "es", "ss"), ("e", "ee", "se"))),
    "IK": ((), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
    "XX": ((), (), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
}


@functools.lru_cache(maxsize=STATIC_KEY_CACHE)
def _static_key(private: bytes) -> X25519PrivateKey:
    # Loading a private key costs as much as a Diffie-Hellman (the library derives its public key on load), and
    # a static key is used in every handshake of its owner: keep the loaded object of the most recent ones.
    return X25519PrivateKey.from_private_bytes(private)


def _load(private: bytes | X25519PrivateKey) -> X25519PrivateKey:
    if isinstance(private, X25519PrivateKey):
        return private
    if len(private) != DHLEN:
        raise LocalProtocolError("an X25519 private key is 32 bytes")
    return X25519PrivateKey.from_private_bytes(private)


def x25519_public(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key (LocalProtocolError if it is not 32 bytes)."""
    if len(private) != DHLEN:
        raise LocalProtocolError("an X25519 private key is 32 bytes")
    return _static_key(private).public_key().public_bytes_raw()


def dh(private: bytes | X25519PrivateKey, public: bytes) -> bytes:
    """X25519(private, public); AuthError if the result is all zeros (a low-order peer key)."""
    try:
        return _load(private).exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:
        raise AuthError("X25519 with this public key gives no shared secret") from exc


class CipherState:
    """A Noise CipherState ``(k, n)`` for ``ChaChaPoly`` or ``AESGCM``.

    Besides the implicit-nonce ``encrypt_with_ad``/``decrypt_with_ad`` of the Noise specification, it offers
    :meth:`encrypt_at` and :meth:`decrypt_at` with an explicit 64-bit nonce, which loa's transport messages use
    (the counter travels in the datagram; PROTOCOL.md section 3.6).
    """

    __slots__ = ("_aead", "_cipher", "key", "n")

    def __init__(self, cipher: str = "ChaChaPoly", key: bytes | None = None) -> None:
        name = _CIPHERS.get(cipher)
        if name is None:
            raise LocalProtocolError(f"unsupported Noise cipher {cipher!r}")
        self._cipher = name
        self.key: bytes | None = None
        self._aead: ChaCha20Poly1305 | AESGCM | None = None
        self.n = 0
        if key is not None:
            self.initialize_key(key)

    def initialize_key(self, key: bytes) -> None:
        if len(key) != 32:
            raise LocalProtocolError("a Noise cipher key is 32 bytes")
        self.key = key
        self._aead = ChaCha20Poly1305(key) if self._cipher == "ChaChaPoly" else AESGCM(key)
        self.n = 0

    def has_key(self) -> bool:
        return self._aead is not None

    def _nonce(self, n: int) -> bytes:
        if not 0 <= n < _MAX_NONCE:
            raise LocalProtocolError("Noise nonce out of range")
        return b"\x00\x00\x00\x00" + n.to_bytes(8, "little" if self._cipher == "ChaChaPoly" else "big")

    def encrypt_at(self, n: int, ad: bytes, plaintext: bytes) -> bytes:
        """ENCRYPT(k, n, ad, plaintext) with an explicit nonce; plaintext unchanged if there is no key."""
        if self._aead is None:
            return plaintext
        return self._aead.encrypt(self._nonce(n), plaintext, ad)

    def decrypt_at(self, n: int, ad: bytes, ciphertext: bytes) -> bytes:
        """DECRYPT(k, n, ad, ciphertext); AuthError if the tag does not verify."""
        if self._aead is None:
            return ciphertext
        try:
            return self._aead.decrypt(self._nonce(n), ciphertext, ad)
        except InvalidTag as exc:
            raise AuthError("AEAD tag does not verify") from exc

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return plaintext
        out = self.encrypt_at(self.n, ad, plaintext)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Decrypt with the implicit nonce; ``n`` advances only on success."""
        if self._aead is None:
            return ciphertext
        out = self.decrypt_at(self.n, ad, ciphertext)
        self.n += 1
        return out


class SymmetricState:
    """Noise SymmetricState: chaining key ``ck``, handshake hash ``h`` and a CipherState."""

    __slots__ = ("_cipher", "_hash", "ck", "cs", "h", "hashlen")

    def __init__(self, protocol_name: str, cipher: str, hash_name: str) -> None:
        if hash_name not in _HASHES:
            raise LocalProtocolError(f"unsupported Noise hash {hash_name!r}")
        self._hash = _HASHES[hash_name]
        self._cipher = cipher
        self.hashlen = self._hash().digest_size
        name = protocol_name.encode("ascii")
        self.h = name.ljust(self.hashlen, b"\x00") if len(name) <= self.hashlen else self._hash(name).digest()
        self.ck = self.h
        self.cs = CipherState(cipher)

    def _hkdf(self, ikm: bytes, outputs: int) -> list[bytes]:
        temp = hmac.new(self.ck, ikm, self._hash).digest()
        out: list[bytes] = []
        prev = b""
        for i in range(1, outputs + 1):
            prev = hmac.new(temp, prev + bytes([i]), self._hash).digest()
            out.append(prev)
        return out

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = self._hkdf(ikm, 2)
        self.cs.initialize_key(temp_k[:32])

    def mix_hash(self, data: bytes) -> None:
        self.h = self._hash(self.h + data).digest()

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cs.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cs.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = self._hkdf(b"", 2)
        return CipherState(self._cipher, k1[:32]), CipherState(self._cipher, k2[:32])

    def snapshot(self) -> tuple[bytes, bytes, bytes | None, int]:
        return self.ck, self.h, self.cs.key, self.cs.n

    def restore(self, snap: tuple[bytes, bytes, bytes | None, int]) -> None:
        self.ck, self.h, key, n = snap
        self.cs = CipherState(self._cipher, key)
        self.cs.n = n


class HandshakeState:
    """A Noise HandshakeState for ``Noise_<pattern>_25519_<cipher>_<hash>``.

    ``s`` and ``e`` are 32-byte X25519 private keys; ``rs`` and ``re`` the peer's public keys. An ``e`` left
    ``None`` is drawn from ``random_bytes`` when the pattern needs it (vector tests pass fixed ones).
    """

    def __init__(
        self,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: bytes | None = None,
        e: bytes | None = None,
        rs: bytes | None = None,
        re: bytes | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        parts = protocol_name.split("_")
        if len(parts) != 5 or parts[0] != "Noise" or parts[1] not in PATTERNS or parts[2] != "25519":
            raise LocalProtocolError(f"unsupported Noise protocol {protocol_name!r}")
        pre_i, pre_r, self._messages = PATTERNS[parts[1]]
        self.initiator = initiator
        self.s, self.e, self.rs, self.re = s, e, rs, re
        self._e_loaded: tuple[bytes, X25519PrivateKey] | None = None
        self._random_bytes = random_bytes
        self.symmetric = SymmetricState(protocol_name, parts[3], parts[4])
        self.symmetric.mix_hash(prologue)
        for ops, own in ((pre_i, initiator), (pre_r, not initiator)):
            for op in ops:
                key = (self.s if op == "s" else self.e) if own else (self.rs if op == "s" else self.re)
                if key is None:
                    raise LocalProtocolError(f"pre-message needs the {'own' if own else 'remote'} {op} key")
                self.symmetric.mix_hash(x25519_public(key) if own else key)
        self._index = 0

    @property
    def complete(self) -> bool:
        return self._index >= len(self._messages)

    @property
    def handshake_hash(self) -> bytes:
        return self.symmetric.h

    def _my_turn(self) -> bool:
        return (self._index % 2 == 0) == self.initiator

    def _own(self, which: str) -> X25519PrivateKey:
        """This side's ``e`` or ``s`` as a loaded key: the ephemeral is loaded once per handshake, the static
        through the cache of static keys."""
        key = self.e if which == "e" else self.s
        if key is None:
            raise LocalProtocolError(f"this handshake has no {which} key")
        if len(key) != DHLEN:
            raise LocalProtocolError("an X25519 private key is 32 bytes")
        if which == "s":
            return _static_key(key)
        if self._e_loaded is None or self._e_loaded[0] != key:
            self._e_loaded = (key, X25519PrivateKey.from_private_bytes(key))
        return self._e_loaded[1]

    def _dh_token(self, op: str) -> bytes:
        first, second = op[0], op[1]
        if not self.initiator:
            first, second = second, first
        remote = self.re if second == "e" else self.rs
        if (self.e if first == "e" else self.s) is None or remote is None:
            raise LocalProtocolError(f"token {op} needs keys this handshake does not have")
        return dh(self._own(first), remote)

    def write_message(self, payload: bytes) -> bytes:
        """Write the next handshake message carrying ``payload``."""
        if self.complete or not self._my_turn():
            raise LocalProtocolError("not this side's turn to write a handshake message")
        out = bytearray()
        for op in self._messages[self._index]:
            if op == "e":
                if self.e is None:
                    self.e = self._random_bytes(DHLEN)
                pub = self._own("e").public_key().public_bytes_raw()
                self.symmetric.mix_hash(pub)
                out += pub
            elif op == "s":
                if self.s is None:
                    raise LocalProtocolError("token s needs a static key")
                out += self.symmetric.encrypt_and_hash(self._own("s").public_key().public_bytes_raw())
            else:
                self.symmetric.mix_key(self._dh_token(op))
        out += self.symmetric.encrypt_and_hash(payload)
        self._index += 1
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """Read the next handshake message and return its payload; on any error the state is unchanged."""
        if self.complete or self._my_turn():
            raise LocalProtocolError("not this side's turn to read a handshake message")
        snap, re, rs = self.symmetric.snapshot(), self.re, self.rs
        try:
            return self._read(message)
        except BaseException:
            self.symmetric.restore(snap)
            self.re, self.rs = re, rs
            raise

    def _read(self, message: bytes) -> bytes:
        pos = 0
        for op in self._messages[self._index]:
            if op in ("e", "s"):
                size = DHLEN + (TAGLEN if op == "s" and self.symmetric.cs.has_key() else 0)
                if len(message) - pos < size:
                    raise TruncatedError("handshake message shorter than its pattern")
                chunk = message[pos : pos + size]
                pos += size
                if op == "e":
                    self.re = chunk
                    self.symmetric.mix_hash(chunk)
                else:
                    self.rs = self.symmetric.decrypt_and_hash(chunk)
            else:
                self.symmetric.mix_key(self._dh_token(op))
        rest = message[pos:]
        if self.symmetric.cs.has_key() and len(rest) < TAGLEN:
            raise TruncatedError("handshake message shorter than its pattern")
        payload = self.symmetric.decrypt_and_hash(rest)
        self._index += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """The (initiator -> responder, responder -> initiator) CipherStates once the handshake is complete."""
        if not self.complete:
            raise LocalProtocolError("handshake not complete")
        return self.symmetric.split()
