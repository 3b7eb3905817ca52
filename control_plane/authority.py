"""The alert authority: the Ed25519 key with which this control plane signs every alert and cancel (PROTOCOL.md
sections 6.4-6.5), and its public half, which devices are provisioned with.

The key lives in a file: ``DATA_DIR/authority.key`` by default, or one the operator names. The file format is the
streamer's (:mod:`loa.streamer.keys`): one line of base64 of the 32-byte Ed25519 seed, or a PEM (PKCS #8) key,
so a lab streamer and the control plane can share one authority. A missing file is created on first start,
mode 0600, atomically (written aside, fsynced, linked into place, the directory fsynced): two processes starting
at once end up with the same key, and a crash never leaves half a key. Losing the file means re-provisioning
every device with a new public key; back it up.

Failure semantics: :class:`AuthorityError` (one line naming the file) when the key cannot be read, parsed or
created. A key file that others may read is used, with a warning in the log.
"""

from __future__ import annotations

import base64
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from loa.protocol.alert import Alert, AlertCancel, key_id, sign_alert, sign_cancel
from loa.streamer.keys import KeyFileError, load_or_create_authority_key

__all__ = ["KEY_FILE", "Authority", "AuthorityError", "load_authority"]

KEY_FILE = "authority.key"
log = logging.getLogger("loa.control_plane.authority")


class AuthorityError(RuntimeError):
    """The authority key file cannot be read, parsed or created."""


@dataclass(frozen=True, slots=True)
class Authority:
    """The signing key and what identifies it: the raw public key and ``kid`` (BLAKE2s-256 of it, 8 bytes)."""

    private_key: Ed25519PrivateKey
    public_key: bytes
    kid: bytes
    path: Path | None = None
    created: bool = False

    @classmethod
    def of(cls, private_key: Ed25519PrivateKey, *, path: Path | None = None, created: bool = False) -> Authority:
        public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(private_key, public, key_id(public), path, created)

    @property
    def public_base64(self) -> str:
        return base64.b64encode(self.public_key).decode("ascii")

    @property
    def public_pem(self) -> str:
        return self.private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()

    def sign_alert(self, alert: Alert) -> tuple[bytes, bytes]:
        """``(body, sig)``; ``LocalProtocolError`` if a field is out of range or ``kid`` is not this key's."""
        return sign_alert(alert, self.private_key)

    def sign_cancel(self, cancel: AlertCancel) -> tuple[bytes, bytes]:
        return sign_cancel(cancel, self.private_key)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_authority(path: str | os.PathLike[str]) -> Authority:
    """The authority key in ``path``, created there if missing (see the module docstring)."""
    file = Path(path)
    try:
        key, created = load_or_create_authority_key(file)
    except KeyFileError as exc:
        raise AuthorityError(f"alert authority key: {exc}") from None
    if created:
        _fsync_directory(file.parent)
        log.warning("created the alert authority key %s: provision devices with its public key; back it up", file)
    else:
        try:
            mode = file.stat().st_mode
        except OSError:
            mode = 0
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("the alert authority key %s is accessible to other users (mode %o): chmod 600 it", file,
                        stat.S_IMODE(mode))
    return Authority.of(key, path=file, created=created)
