"""A device's identity (PROTOCOL.md section 3.2): its static X25519 key, created once and kept private.

The key file holds one line: the base64 of the 32-byte private key. :func:`load_or_create_key` creates it on
first start from ``os.urandom``, readable by its owner only (mode 0600), atomically (a temporary file in the
same folder, fsynced, then renamed), and refuses a file that other users can read or that is not a key.
:func:`parse_key` reads the keys an installer types: 32 bytes as base64 or hex.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import stat
from pathlib import Path

from loa.protocol.keytext import decode_key
from loa.protocol.noise import x25519_public

__all__ = ["IdentityError", "encode_key", "load_or_create_key", "parse_key", "public_key_of"]


class IdentityError(Exception):
    """The key file or a key given on the command line is unusable (the message says why, in one line)."""


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def parse_key(text: str, what: str = "key") -> bytes:
    """32 bytes from base64 (standard or URL-safe) or 64 hex digits; :class:`IdentityError` otherwise."""
    try:
        return decode_key(text)
    except ValueError as exc:
        raise IdentityError(f"{what} is not a 32-byte key: {exc}") from None


def public_key_of(private: bytes) -> bytes:
    return x25519_public(private)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_or_create_key(path: str | os.PathLike[str]) -> tuple[bytes, bool]:
    """The private key in ``path`` and whether it was just created. Raises :class:`IdentityError`."""
    target = Path(path)
    try:
        info = target.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise IdentityError(f"cannot read the key file {str(target)!r}: {exc.strerror or exc}") from None
    if info is None:
        key = secrets.token_bytes(32)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_private(target, encode_key(key) + "\n")
        except OSError as exc:
            raise IdentityError(f"cannot create the key file {str(target)!r}: {exc.strerror or exc}") from None
        return key, True
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(f"the key file {str(target)!r} is readable by others; chmod 600 it")
    try:
        text = target.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise IdentityError(f"cannot read the key file {str(target)!r}: {exc}") from None
    return parse_key(text, f"the key in {str(target)!r}"), False
