"""The device registry: which static keys may hold a session, in which zone, as what kind of device.

A device is named by its 32-byte X25519 public key (its *device id* is :func:`loa.protocol.device_id` of it).
An entry may be disabled (``enrolled`` false): a revoked device keeps its record, for reports, but its
handshakes are refused. Enrolment tokens (PROTOCOL.md section 4.5) are one-time strings bound to a zone and an
expiry in server time; while any is outstanding the server may complete handshakes from unknown keys as
provisional sessions, and :meth:`Registry.redeem` turns a valid token into an enrolment.

Failure semantics: every mutation validates first and raises :class:`RegistryError` (a ``ValueError``) with
nothing changed: an unknown zone (checked by the caller's ``zone_exists``), a key that is not 32 bytes, a
duplicate key, an unknown device.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

from loa.protocol.keytext import decode_key
from loa.protocol.session import device_id

__all__ = ["KINDS", "DeviceEntry", "EnrolmentToken", "Registry", "RegistryError", "parse_public_key"]

KINDS = ("speaker", "board")
KEY_SIZE = 32
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # base32 without 0/O and 1/I: typed by installers
TOKEN_LENGTH = 16  # 16 x 5 bits = 80 bits of randomness (the spec asks for at least 64)


class RegistryError(ValueError):
    """A registry operation that names an unknown device or zone, or a malformed key."""


def parse_public_key(text: str) -> bytes:
    """A device key written as base64 (standard or URL-safe, padding optional) or as 64 hex digits.

    Raises :class:`RegistryError` unless it decodes to exactly 32 bytes.
    """
    try:
        return decode_key(text)
    except ValueError:
        raise RegistryError(f"not a 32-byte key in base64 or hex: {text[:60]!r}") from None


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """One enrolled (or disabled) device."""

    public_key: bytes
    zone: str
    name: str = ""
    kind: str = "speaker"
    enrolled: bool = True
    volume: int | None = None

    @property
    def device_id(self) -> str:
        return device_id(self.public_key)


@dataclass(frozen=True, slots=True)
class EnrolmentToken:
    token: str
    zone: str
    expires_ns: int
    kind: str = "speaker"


class Registry:
    """Devices by public key, indexed by zone; enrolment tokens.

    ``zone_exists`` (the zone tree's ``__contains__``) is consulted by every mutation that names a zone.
    """

    def __init__(self, zone_exists: Callable[[str], bool], entries: Iterable[DeviceEntry] = ()) -> None:
        self._zone_exists = zone_exists
        self._devices: dict[bytes, DeviceEntry] = {}
        self._by_zone: dict[str, set[bytes]] = {}
        self._tokens: dict[str, EnrolmentToken] = {}
        for entry in entries:
            self.add(entry)

    # -- queries -----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, key: object) -> bool:
        return key in self._devices

    def __iter__(self) -> Iterator[DeviceEntry]:
        return iter(list(self._devices.values()))

    def get(self, key: bytes) -> DeviceEntry | None:
        return self._devices.get(key)

    def entry(self, key: bytes) -> DeviceEntry:
        """The entry of ``key``; :class:`RegistryError` if there is none."""
        entry = self._devices.get(key)
        if entry is None:
            raise RegistryError(f"unknown device {device_id(key) if len(key) == KEY_SIZE else key!r}")
        return entry

    def is_enrolled(self, key: bytes) -> bool:
        entry = self._devices.get(key)
        return entry is not None and entry.enrolled

    def in_zones(self, zones: Iterable[str], *, kinds: Iterable[str] = KINDS) -> set[bytes]:
        """Keys of the enrolled devices of the given kinds standing in any of ``zones`` (already expanded)."""
        wanted = set(kinds)
        out: set[bytes] = set()
        for zone in zones:
            for key in self._by_zone.get(zone, ()):
                entry = self._devices[key]
                if entry.enrolled and entry.kind in wanted:
                    out.add(key)
        return out

    def kinds_in_zones(self, zones: Iterable[str], kinds: Sequence[str]) -> dict[str, list[bytes]]:
        """:meth:`in_zones` for each of ``kinds`` in one pass: kind -> sorted keys of the enrolled devices."""
        out: dict[str, set[bytes]] = {kind: set() for kind in kinds}
        devices = self._devices
        for zone in zones:
            for key in self._by_zone.get(zone, ()):
                entry = devices[key]
                if entry.enrolled and (found := out.get(entry.kind)) is not None:
                    found.add(key)
        return {kind: sorted(keys) for kind, keys in out.items()}

    # -- mutations ---------------------------------------------------------------------------------------------

    def add(self, entry: DeviceEntry) -> None:
        """Enrol a new device; :class:`RegistryError` for a duplicate key, a bad key, kind or zone."""
        if len(entry.public_key) != KEY_SIZE:
            raise RegistryError(f"a device key is {KEY_SIZE} bytes, not {len(entry.public_key)}")
        if entry.public_key in self._devices:
            raise RegistryError(f"device {entry.device_id} is already enrolled")
        self._check(entry)
        self._insert(entry)

    def update(self, key: bytes, **changes: object) -> tuple[DeviceEntry, DeviceEntry]:
        """Change fields of an entry (zone, name, kind, enrolled, volume); returns ``(old, new)``."""
        old = self.entry(key)
        if "public_key" in changes:
            raise RegistryError("a device's key cannot change; enrol the new key instead")
        new = replace(old, **changes)  # type: ignore[arg-type]
        self._check(new)
        self._remove(old)
        self._insert(new)
        return old, new

    def remove(self, key: bytes) -> DeviceEntry:
        """Forget a device entirely; returns its last entry."""
        entry = self.entry(key)
        self._remove(entry)
        return entry

    def _check(self, entry: DeviceEntry) -> None:
        if entry.kind not in KINDS:
            raise RegistryError(f"device kind must be one of {', '.join(KINDS)}, not {entry.kind!r}")
        if not self._zone_exists(entry.zone):
            raise RegistryError(f"unknown zone {entry.zone!r}")
        if entry.volume is not None and not 0 <= entry.volume <= 100:
            raise RegistryError(f"volume must be 0-100, not {entry.volume}")

    def _insert(self, entry: DeviceEntry) -> None:
        self._devices[entry.public_key] = entry
        self._by_zone.setdefault(entry.zone, set()).add(entry.public_key)

    def _remove(self, entry: DeviceEntry) -> None:
        del self._devices[entry.public_key]
        members = self._by_zone.get(entry.zone)
        if members is not None:
            members.discard(entry.public_key)
            if not members:
                del self._by_zone[entry.zone]

    # -- enrolment tokens --------------------------------------------------------------------------------------

    def issue_token(self, zone: str, expires_ns: int, *, kind: str = "speaker", token: str | None = None) -> str:
        """A new one-time token for ``zone``, valid until server time ``expires_ns``."""
        if not self._zone_exists(zone):
            raise RegistryError(f"unknown zone {zone!r}")
        if kind not in KINDS:
            raise RegistryError(f"device kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if token is None:
            token = "".join(secrets.choice(CODE_ALPHABET) for _ in range(TOKEN_LENGTH))
        elif not 1 <= len(token.encode()) <= 128 or token in self._tokens:
            raise RegistryError("a token is 1-128 bytes and unique")
        self._tokens[token] = EnrolmentToken(token, zone, expires_ns, kind)
        return token

    def tokens_outstanding(self, now_ns: int) -> bool:
        """True while at least one unexpired, unredeemed token exists (expired ones are forgotten here)."""
        for token in [t for t, e in self._tokens.items() if e.expires_ns <= now_ns]:
            del self._tokens[token]
        return bool(self._tokens)

    def redeem(self, token: str, key: bytes, now_ns: int, *, name: str = "", kind: str | None = None) -> DeviceEntry:
        """Consume ``token`` and enrol ``key`` in its zone. :class:`RegistryError` (token kept) if the token is
        unknown, used or expired, or the key is already registered."""
        entry = self._tokens.get(token)
        if entry is None or entry.expires_ns <= now_ns:
            raise RegistryError("enrolment token unknown, used or expired")
        if key in self._devices:
            raise RegistryError(f"device {device_id(key)} is already registered")
        device = DeviceEntry(key, entry.zone, name=name, kind=kind if kind in KINDS else entry.kind)
        self.add(device)
        del self._tokens[token]
        return device
