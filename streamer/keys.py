"""Key files of a streamer: its static X25519 key, and the Ed25519 keys of authorities that sign in a lab.

A key file holds one line: the base64 of the 32-byte private key (an X25519 private key, or an Ed25519 seed).
An Ed25519 key may also be a PEM (PKCS #8) file. A missing key file is created on first use, readable by its
owner only (mode 0600, in a 0700 directory if that has to be made), atomically: it is written to a temporary
file and linked into place, so two processes starting at once end up with the same key and a crash leaves no
half-written key.

Failure semantics: :class:`KeyFileError` (a ``ValueError``) with a one-line message naming the file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

from loa.protocol.noise import x25519_public

__all__ = ["KeyFileError", "ed25519_public", "load_or_create_authority_key", "load_or_create_server_key",
           "public_base64"]

KEY_SIZE = 32


class KeyFileError(ValueError):
    """A key file that cannot be read, parsed or created; the message names it."""


def public_base64(public_key: bytes) -> str:
    return base64.b64encode(public_key).decode("ascii")


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the key file: {exc.strerror or exc}") from None


def _decode(path: Path, blob: bytes) -> bytes:
    text = blob.strip()
    if len(blob) == KEY_SIZE and not text.isascii():
        return blob
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_SIZE:
        raise KeyFileError(f"{path}: not a key file (expected one line of base64 of {KEY_SIZE} bytes)")
    return key


def _create(path: Path, key: bytes) -> bytes:
    """Write ``key`` to ``path`` unless it appeared meanwhile; returns the key that is there afterwards."""
    try:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64encode(key) + b"\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                existing = _read(path)
                return _decode(path, existing if existing is not None else b"")
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create the key file: {exc.strerror or exc}") from None
    return key


def load_or_create_server_key(path: str | os.PathLike[str]) -> tuple[bytes, bytes, bool]:
    """The server's X25519 key from ``path``, created if missing: ``(private, public, created)``."""
    file = Path(path)
    blob = _read(file)
    created = blob is None
    private = _create(file, secrets.token_bytes(KEY_SIZE)) if blob is None else _decode(file, blob)
    return private, x25519_public(private), created


def load_or_create_authority_key(path: str | os.PathLike[str]) -> tuple[Ed25519PrivateKey, bool]:
    """An authority's Ed25519 signing key from ``path`` (base64 seed or PEM), created if missing."""
    file = Path(path)
    blob = _read(file)
    if blob is None:
        return Ed25519PrivateKey.from_private_bytes(_create(file, secrets.token_bytes(KEY_SIZE))), True
    if blob.lstrip().startswith(b"-----BEGIN"):
        try:
            key = load_pem_private_key(blob, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{file}: not a usable PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{file}: the PEM key is not an Ed25519 key")
        return key, False
    return Ed25519PrivateKey.from_private_bytes(_decode(file, blob)), False


def ed25519_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

