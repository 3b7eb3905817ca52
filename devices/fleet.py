"""A simulated fleet: N reference devices in one process, each with its own key, session, socket and clock.

:func:`load_fleet_keys` keeps one key per device in a keys folder (``device-00000.key``..., mode 0600, created on
first use) and writes ``devices.toml`` there, listing every device's public key and id so that the server can
enrol them. :func:`build_fleet` makes the devices: clock offsets uniform in ±``offset_max`` seconds and drifts
in ±``drift_max`` ppm (from ``seed``); the first ``full`` decode their audio (recording it when a folder is
given), the rest only count packets (``SpeakerCore(count_only=True)``: no authentication of media, no jitter
buffer, no playout; control, clock, telemetry and alerts as on a real device). :func:`fleet_summary` folds
their statistics into one line.
:func:`raise_open_file_limit` makes room for one socket per device.

:func:`share_alert_verification` is a simulation shortcut for big fleets: the devices of one process check an
alert's or cancel's Ed25519 signature through one :class:`SharedVerifier` per authority key, which verifies each
distinct (signed bytes, signature) once and gives every later device the same answer. Verification is a pure
function of the key, the bytes and the signature, so each device still makes every check of PROTOCOL.md 6.4.1
(kid, signature, expiry, zones, replay) and gets the result its own verification would give; what is saved is
the processor time of ten thousand identical verifications in one process.
"""

from __future__ import annotations

import os
import random
import resource
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from loa.devices.content import MemoryStore
from loa.devices.core import Address, SpeakerCore
from loa.devices.identity import encode_key, load_or_create_key, public_key_of
from loa.devices.simclock import SimulatedClock
from loa.devices.sinks import CounterSink, FrameSink, WavRecorder
from loa.protocol.session import device_id

__all__ = [
    "FleetError",
    "FleetSummary",
    "SharedVerifier",
    "build_fleet",
    "fleet_summary",
    "load_fleet_keys",
    "raise_open_file_limit",
    "share_alert_verification",
    "write_devices_toml",
]

SPARE_FILES = 64
VERIFIED_KEPT = 64  # (bytes, signature) results a SharedVerifier remembers, the oldest forgotten first


class FleetError(Exception):
    """The fleet cannot be set up (keys folder, file limit); one line that says why."""


def raise_open_file_limit(sockets: int) -> int:
    """Raise the soft RLIMIT_NOFILE to hold ``sockets`` more descriptors; returns the new soft limit."""
    need = sockets + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return soft
    if hard != resource.RLIM_INFINITY and hard < need:
        raise FleetError(
            f"{sockets} devices need {need} open files but the hard limit is {hard}; "
            f"raise it (ulimit -Hn, or LimitNOFILE) or simulate fewer devices"
        )
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    except (OSError, ValueError) as exc:
        raise FleetError(f"cannot raise the open-file limit to {need}: {exc}") from None
    return need


def load_fleet_keys(keys_dir: str | os.PathLike[str], count: int, *, zone: str | None = None) -> list[bytes]:
    """The private keys of devices 0..count-1 in ``keys_dir`` (created as needed); writes ``devices.toml``
    (with ``zone`` in every entry when given, so that the file can be appended to a site file as it is)."""
    root = Path(keys_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FleetError(f"cannot use the keys folder {str(root)!r}: {exc.strerror or exc}") from None
    keys = [load_or_create_key(root / f"device-{i:05d}.key")[0] for i in range(count)]
    write_devices_toml(root / "devices.toml", keys, zone=zone)
    return keys


def write_devices_toml(path: Path, keys: list[bytes], *, zone: str | None = None) -> None:
    """``[[device]]`` tables (``key`` base64, ``name`` and ``zone`` if given, the device id as a comment): the
    device entries of a site file, ready to append to one; written through a temporary file."""
    lines = ["# Simulated loa devices: enrol these public keys on the server.", ""]
    for i, key in enumerate(keys):
        public = public_key_of(key)
        lines += ["[[device]]", f'key = "{encode_key(public)}"  # device id {device_id(public)}',
                  f'name = "sim-{i:05d}"']
        lines += [f'zone = "{zone}"', ""] if zone is not None else [""]
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text("\n".join(lines), encoding="ascii")
        os.replace(tmp, path)
    except OSError as exc:
        raise FleetError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


def build_fleet(
    keys: list[bytes],
    *,
    server_public: bytes,
    server_address: Address,
    authority_keys: list[bytes],
    full: int = 0,
    offset_max: float = 0.0,
    drift_max: float = 0.0,
    seed: int = 0,
    record_dir: str | os.PathLike[str] | None = None,
    test_mode: bool = False,
) -> list[tuple[SpeakerCore, SimulatedClock]]:
    """The devices (see the module docstring). Recording files are ``record_dir/sim-00000.wav``..."""
    rng = random.Random(seed)
    out = []
    for i, key in enumerate(keys):
        clock = SimulatedClock(rng.uniform(-drift_max, drift_max), rng.uniform(-offset_max, offset_max))
        decode = i < full
        sink: FrameSink
        if decode and record_dir is not None:
            Path(record_dir).mkdir(parents=True, exist_ok=True)
            sink = WavRecorder(Path(record_dir) / f"sim-{i:05d}.wav")
        else:
            sink = CounterSink(decode=decode)
        core = SpeakerCore(
            static_private=key, server_public=server_public, authority_keys=authority_keys,
            server_address=server_address, sink=sink, store=MemoryStore(64 * 1024 * 1024), test_mode=test_mode,
            batch=0.05, count_only=not decode, log_limit=20_000 if decode else 0,
            rng=random.Random(rng.random()),
        )
        out.append((core, clock))
    return out


@dataclass(frozen=True, slots=True)
class FleetSummary:
    """Totals over a fleet: ``exact``/``fec``/``plc``/``late`` are frames of the decoding devices; ``received``,
    ``gaps`` and ``expected`` are RTP packets of all of them (``gaps``: found missing on arrival)."""

    devices: int
    started: int
    connected: int
    playing: int
    frames: int
    exact: int
    fec: int
    plc: int
    late: int
    received: int
    gaps: int
    expected: int
    nacks: int
    watchdog: int
    drops: int
    drops_by_name: dict[str, int]

    def line(self) -> str:
        broadcast = self.exact + self.fec + self.plc
        exact = f"{100 * self.exact / broadcast:.2f}%" if broadcast else "-"
        loss = f"{100 * self.gaps / self.expected:.2f}%" if self.expected else "-"
        return (f"connected {self.connected}/{self.devices} (started {self.started}), playing {self.playing}, "
                f"packets {self.received} (gaps {loss}), decoded frames {broadcast} (exact {exact}, fec {self.fec}, "
                f"plc {self.plc}, late {self.late}), nacks {self.nacks}, watchdog {self.watchdog}, "
                f"drops {self.drops}")

    def drop_line(self) -> str:
        """The most frequent drop reasons, e.g. ``UnknownKeyError 12, duplicate 3``."""
        top = sorted(self.drops_by_name.items(), key=lambda item: -item[1])[:6]
        return ", ".join(f"{name} {count}" for name, count in top) or "none"


def fleet_summary(cores: list[SpeakerCore], started: int) -> FleetSummary:
    totals = dict.fromkeys(("connected", "playing", "frames", "exact", "fec", "plc", "late", "received", "gaps",
                            "expected", "nacks", "watchdog", "drops"), 0)
    names: Counter[str] = Counter()
    for core in cores[:started]:
        stats = core.statistics()
        names.update(stats.drops)
        totals["connected"] += stats.connected
        totals["playing"] += stats.stream == "playing" or (stats.current is not None and stats.mode != "idle")
        totals["gaps"] += stats.gaps
        totals["expected"] += stats.expected
        totals["frames"] += stats.frames
        totals["exact"] += stats.played
        totals["fec"] += stats.fec
        totals["plc"] += stats.plc
        totals["late"] += stats.late
        totals["received"] += stats.received
        totals["nacks"] += stats.nacks_sent
        totals["watchdog"] += stats.watchdog_fires
        totals["drops"] += sum(stats.drops.values())
    return FleetSummary(devices=len(cores), started=started, drops_by_name=dict(names), **totals)


class SharedVerifier(Ed25519PublicKey):
    """An authority's Ed25519 public key whose verifications are shared by the devices holding it (see the module
    docstring): :meth:`verify` checks each distinct ``(data, signature)`` once, remembers the outcome (the last
    :data:`VERIFIED_KEPT` of them) and gives it again, raising ``InvalidSignature`` exactly when the key would.
    ``verified`` counts the real verifications, ``shared`` the answers given from memory."""

    def __init__(self, raw: bytes) -> None:
        self._key = Ed25519PublicKey.from_public_bytes(raw)
        self._outcomes: OrderedDict[tuple[bytes, bytes], bool] = OrderedDict()
        self.verified = 0
        self.shared = 0

    def verify(self, signature: bytes | bytearray | memoryview, data: bytes | bytearray | memoryview) -> None:
        pair = (bytes(data), bytes(signature))
        valid = self._outcomes.get(pair)
        if valid is None:
            try:
                self._key.verify(signature, data)
                valid = True
            except InvalidSignature:
                valid = False
            self.verified += 1
            self._outcomes[pair] = valid
            if len(self._outcomes) > VERIFIED_KEPT:
                self._outcomes.popitem(last=False)
        else:
            self.shared += 1
        if not valid:
            raise InvalidSignature

    def public_bytes(self, encoding: serialization.Encoding, format: serialization.PublicFormat) -> bytes:
        return self._key.public_bytes(encoding, format)

    def public_bytes_raw(self) -> bytes:
        return self._key.public_bytes_raw()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ed25519PublicKey) and other.public_bytes_raw() == self.public_bytes_raw()

    def __hash__(self) -> int:
        return hash(self.public_bytes_raw())

    def __copy__(self) -> SharedVerifier:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedVerifier:
        return self


def share_alert_verification(cores: list[SpeakerCore]) -> list[SharedVerifier]:
    """Have ``cores`` verify alert signatures through one :class:`SharedVerifier` per authority key (see the module
    docstring); returns the verifiers (their counts say how much was shared)."""
    verifiers: dict[bytes, SharedVerifier] = {}
    for core in cores:
        # verify_alert takes an Ed25519PublicKey object wherever it takes the key's 32 bytes
        trusted: dict[bytes, Any] = {}
        for kid, key in core.alerts.trusted.items():
            raw = key.public_bytes_raw() if isinstance(key, Ed25519PublicKey) else bytes(key)
            if raw not in verifiers:
                verifiers[raw] = SharedVerifier(raw)
            trusted[kid] = verifiers[raw]
        core.alerts.trusted = trusted
    return list(verifiers.values())
