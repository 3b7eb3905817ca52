"""Small parts of the streamer: the retransmission ring, destination mirroring, key files, the registry,
DNS-SD properties, and the broadcast frame clock on its own."""

from __future__ import annotations

import base64
import os
import random
import stat
from pathlib import Path
from typing import Any

import pytest

from loa.protocol.noise import x25519_public
from loa.streamer.broadcast import LiveBroadcast
from loa.streamer.destinations import Destinations
from loa.streamer.discovery import Advertiser, service_properties
from loa.streamer.keys import KeyFileError, load_or_create_authority_key, load_or_create_server_key
from loa.streamer.registry import DeviceEntry, Registry, RegistryError, parse_public_key
from loa.streamer.retransmit import RetransmitRing
from loa.streamer.sources import ToneSource


def test_ring_holds_two_seconds_and_never_confuses_slots() -> None:
    ring = RetransmitRing()
    assert ring.capacity == 256
    ring.store(1000, b"a", 10.0)
    assert ring.get(1000, 11.9) == b"a"
    assert ring.get(1000, 12.1) is None  # older than RTX_BUFFER
    ring.store(1000 + 256, b"b", 11.0)  # the same slot, a newer packet
    assert ring.get(1000, 11.0) is None
    assert ring.get(1256, 11.0) == b"b"


def test_ring_resends_once_per_device_per_interval() -> None:
    ring = RetransmitRing()
    ring.store(5, b"x", 0.0)
    assert ring.resend(5, "a", 0.1, 0.2) == b"x"
    assert ring.resend(5, "a", 0.2, 0.2) is None  # within one RTT
    assert ring.resend(5, "b", 0.2, 0.2) == b"x"  # another device
    assert ring.resend(5, "a", 0.31, 0.2) == b"x"
    assert ring.resend(6, "a", 0.31, 0.2) is None
    stats = ring.statistics()
    assert (stats.resent, stats.rate_limited, stats.missing) == (3, 1, 1)


class RecordingSink:
    def __init__(self, refuse: str | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.refuse = refuse

    def add(self, key: Any, address: Any) -> None:
        if address[0] == self.refuse:
            raise ValueError("cannot reach")
        self.calls.append(("add", key, address))

    def update(self, key: Any, address: Any) -> None:
        if address[0] == self.refuse:
            raise ValueError("cannot reach")
        self.calls.append(("update", key, address))

    def remove(self, key: Any) -> None:
        self.calls.append(("remove", key))


def test_destinations_mirror_every_change_into_an_attached_sink() -> None:
    dest = Destinations()
    dest.set("a", ("192.0.2.1", 1))
    dest.set("b", ("192.0.2.2", 2))
    sink = RecordingSink(refuse="::1")
    dest.attach(sink)
    dest.set("a", ("192.0.2.1", 1))  # unchanged: nothing to do
    dest.set("a", ("192.0.2.9", 9))
    dest.discard("b")
    dest.discard("zzz")
    dest.set("c", ("::1", 3))  # the sink cannot reach it: kept in the map, counted
    assert sink.calls == [("add", "a", ("192.0.2.1", 1)), ("add", "b", ("192.0.2.2", 2)),
                          ("update", "a", ("192.0.2.9", 9)), ("remove", "b")]
    assert dest.refused == 1
    assert len(dest) == 2
    assert "c" in dest


def test_server_key_is_created_private_once_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "server.key"
    private, public, created = load_or_create_server_key(path)
    assert created
    assert public == x25519_public(private)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert base64.b64decode(path.read_text().strip()) == private
    assert load_or_create_server_key(path) == (private, public, False)
    assert [p.name for p in path.parent.iterdir()] == ["server.key"]  # no temporary file left
    path.write_text("garbage\n")
    with pytest.raises(KeyFileError, match=r"server\.key: not a key file"):
        load_or_create_server_key(path)


def test_authority_keys_read_pem_or_base64(tmp_path: Path) -> None:
    key, created = load_or_create_authority_key(tmp_path / "lab.key")
    assert created
    again, created = load_or_create_authority_key(tmp_path / "lab.key")
    assert not created
    assert again.public_key() == key.public_key()
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    pem = tmp_path / "lab.pem"
    pem.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    assert load_or_create_authority_key(pem)[0].public_key() == key.public_key()
    pem.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError, match=r"lab\.pem: not a usable PEM private key"):
        load_or_create_authority_key(pem)


def test_registry_keys_zones_and_tokens() -> None:
    key = os.urandom(32)
    assert parse_public_key(base64.b64encode(key).decode()) == key
    assert parse_public_key(base64.urlsafe_b64encode(key).decode().rstrip("=")) == key
    assert parse_public_key(key.hex()) == key
    with pytest.raises(RegistryError):
        parse_public_key("ẞ" * 44)
    registry = Registry(lambda zone: zone in {"P", "C"})
    registry.add(DeviceEntry(key, "C"))
    with pytest.raises(RegistryError, match="already enrolled"):
        registry.add(DeviceEntry(key, "P"))
    with pytest.raises(RegistryError, match="unknown zone"):
        registry.update(key, zone="X")
    assert registry.entry(key).zone == "C"  # unchanged after a refused update
    assert registry.in_zones({"C"}) == {key}
    assert registry.in_zones({"C"}, kinds=("board",)) == set()
    token = registry.issue_token("P", 100)
    assert len(token) == 16
    assert registry.tokens_outstanding(50)
    other = os.urandom(32)
    with pytest.raises(RegistryError):
        registry.redeem(token, other, 100)  # expired at 100
    assert registry.redeem(token, other, 99).zone == "P"
    with pytest.raises(RegistryError):
        registry.redeem(token, os.urandom(32), 10)  # used
    assert not registry.tokens_outstanding(10)


def test_dns_sd_properties_and_harmless_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    key = bytes(range(32))
    assert service_properties(key) == {"v": "1", "pk": base64.b64encode(key).decode()}
    advertiser = Advertiser(name="Đài xã", host="127.0.0.1", port=4433, public_key=key)
    assert advertiser.addresses() == ["127.0.0.1"]
    import zeroconf

    def broken(*_args: object, **_kwargs: object) -> None:
        raise OSError(19, "No such device")

    monkeypatch.setattr(zeroconf, "Zeroconf", broken)
    problem = advertiser.start()
    assert problem is not None
    assert problem.startswith("multicast DNS is unavailable")
    advertiser.stop()  # nothing to withdraw: no error


def test_frame_clock_is_exact_and_catches_up_without_drift() -> None:
    broadcast = LiveBroadcast(1, ToneSource(), zones=("P",), cls=0, lvl=0, policy="resume", start=100.0,
                              server_start_ns=5 * 10**18, rng=random.Random(1))
    times = []
    now = 100.0
    for _ in range(500):
        due = broadcast.next_frame_time()
        assert due is not None
        now = max(now, due) + (0.015 if len(times) % 97 == 0 else 0.0)  # now and then 15 ms late
        times.append(due)
        broadcast.produce(now)
    assert max(abs(t - (100.0 + k * 0.02)) for k, t in enumerate(times)) < 1e-9  # no drift after late frames
    assert broadcast.frames == 500
    assert broadcast.late_frames == 6
