"""The small parts of the reference device: jitter buffer, NACK timing, clocks, identity, settings."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loa.devices.identity import IdentityError, load_or_create_key, parse_key
from loa.devices.jitter import Insert, JitterBuffer, Slot, capacity_for
from loa.devices.live import LATE_MARGIN_MS, LATE_RUN, LATE_STEP_MS, PLAY_DELAY_MAX_MS, LiveStream
from loa.devices.nack import NackScheduler
from loa.devices.settings import CommandOrder, Settings
from loa.devices.simclock import SimulatedClock
from loa.devices.telemetry import Hardware, luhn_digit
from loa.devices.watchdog import Watchdog
from loa.protocol.control import ConfigValues


def _slot(seq: int, ts: int = 0) -> Slot:
    return Slot(seq, ts, b"\x08", 960, 0.0, False)


def test_jitter_buffer_follows_the_sequence_wrap() -> None:
    buffer = JitterBuffer(64)
    for seq in (65533, 65535, 0, 2, 65534):  # out of order, across the wrap
        assert buffer.insert(_slot(seq)) is Insert.NEW
    assert buffer.insert(_slot(0)) is Insert.DUPLICATE
    assert buffer.highest == 2
    assert buffer.pending() == 6
    assert buffer.missing(65533, 2) == [1]
    taken = [buffer.take() for _ in range(6)]
    assert [seq for seq, _ in taken] == [65533, 65534, 65535, 0, 1, 2]
    assert [slot is None for _, slot in taken] == [False, False, False, False, True, False]
    assert buffer.insert(_slot(1)) is Insert.BEHIND  # already concealed: late
    assert buffer.insert(_slot(3 + 64)) is Insert.RESYNC  # beyond the ring: the sender jumped
    assert buffer.head == 67
    assert len(buffer) == 1


def test_a_reordered_first_packet_moves_the_head_back_until_something_played() -> None:
    buffer = JitterBuffer(64)
    buffer.insert(_slot(101))
    assert buffer.insert(_slot(100)) is Insert.NEW
    assert buffer.head == 100
    buffer.take()
    assert buffer.insert(_slot(99)) is Insert.BEHIND


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=200), st.integers(0, 0xFFFF))
def test_jitter_buffer_never_holds_more_than_its_ring(seqs: list[int], start: int) -> None:
    buffer = JitterBuffer(32)
    for seq in seqs:
        buffer.insert(_slot((start + seq) & 0xFFFF))
        assert len(buffer) <= 32
        assert buffer.pending() <= 32


@given(st.lists(st.integers(0, 63), min_size=1, max_size=100), st.integers(0, 0xFFFF), st.integers(0, 40),
       st.sampled_from([32, 64, 128, 1024]))
def test_a_grown_buffer_holds_and_gives_what_it_held(offsets: list[int], start: int, taken: int,
                                                      capacity: int) -> None:
    """Growing the ring (a stream that now plays later) keeps every held packet, the head and the highest, across
    the sequence wrap; the buffer then goes on as one of that size."""
    buffer, twin = JitterBuffer(32), JitterBuffer(32)
    for offset in offsets:
        for b in (buffer, twin):
            b.insert(_slot((start + offset) & 0xFFFF))
    for _ in range(min(taken, buffer.pending())):
        assert buffer.take() == twin.take()
    buffer.grow(capacity)
    assert buffer.capacity == capacity
    assert (len(buffer), buffer.head, buffer.highest, buffer.pending()) == (
        len(twin), twin.head, twin.highest, twin.pending())
    while twin.pending():
        assert buffer.take() == twin.take()
    beyond = (start + 200) & 0xFFFF  # far past the old ring, within the new one when it is 1024
    assert buffer.insert(_slot(beyond)) is (Insert.NEW if capacity == 1024 else Insert.RESYNC)


def test_a_buffer_does_not_shrink_or_take_an_odd_size() -> None:
    buffer = JitterBuffer(64)
    for bad in (32, 96, 65536):
        with pytest.raises(ValueError, match="power of two"):
            buffer.grow(bad)
    assert buffer.capacity == 64


@given(st.integers(0, 10_000), st.lists(st.floats(0.0, 60.0), min_size=1, max_size=12))
def test_a_stream_never_plays_more_than_ten_seconds_late(delay_ms: int, runs: list[float]) -> None:
    """Whatever the lateness of each run of LATE_RUN late packets (a hostile sender's timestamps too), the extra
    delay is whole steps, delay_ms plus it stays within PLAY_DELAY_MAX_MS, and the jitter buffer holds it."""
    stream = LiveStream(1, 0x1234, bytes(30), delay_ms=delay_ms)
    for late_by in runs:
        before = stream.extra_ns
        for _ in range(LATE_RUN):
            stream._late(late_by)
        assert stream.extra_ns >= before
        assert stream.extra_ns % (LATE_STEP_MS * 1_000_000) == 0 or delay_ms + stream.extra_ns // 1_000_000 == 10_000
    assert delay_ms * 1_000_000 + stream.extra_ns <= PLAY_DELAY_MAX_MS * 1_000_000
    if delay_ms <= PLAY_DELAY_MAX_MS - LATE_MARGIN_MS - LATE_STEP_MS:
        assert stream.extra_ns > 0
    assert stream.statistics().extra_ms == stream.extra_ns // 1_000_000
    assert stream._tracks[0].buffer.capacity >= capacity_for(delay_ms + stream.extra_ns // 1_000_000)


def test_capacity_covers_the_delay_and_the_retransmission_window() -> None:
    assert capacity_for(500) == 512
    assert capacity_for(10_000) == 2048
    assert capacity_for(0) >= 250


def test_nack_timing_first_at_once_second_after_one_and_a_half_rtt() -> None:
    nack = NackScheduler()
    rtt = 0.1
    # 7 and 8 missing at t=1; 8 plays too soon (within one RTT) to be worth asking for
    assert nack.on_gap([(7, 1.5), (8, 1.05)], 1.0, rtt) == [7]
    assert nack.next_deadline(rtt) == pytest.approx(1.15)
    assert nack.due(1.1, rtt) == []
    assert nack.due(1.15, rtt) == [7]
    assert nack.due(1.4, rtt) == []  # never a third time
    nack.resolved(7)
    assert len(nack) == 0
    assert nack.sent == 2


@given(st.floats(-500, 500), st.floats(-20, 20), st.floats(0, 1e6))
def test_simulated_clock_round_trips_without_firing_early(drift: float, offset: float, local: float) -> None:
    clock = SimulatedClock(drift, offset)
    true = clock.true(local)
    assert clock.local(true) >= local
    assert clock.local(true) - local < 1e-6


def test_identity_key_file_is_private_atomic_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "device.key"
    key, created = load_or_create_key(path)
    assert created
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    assert load_or_create_key(path) == (key, False)
    os.chmod(path, 0o644)
    with pytest.raises(IdentityError, match="readable by others"):
        load_or_create_key(path)
    os.chmod(path, 0o600)
    path.write_text("not a key\n")
    with pytest.raises(IdentityError, match="base64"):
        load_or_create_key(path)
    assert parse_key(key.hex()) == key
    with pytest.raises(IdentityError, match="16 bytes"):
        parse_key("AAAAAAAAAAAAAAAAAAAAAA==")


def test_settings_defaults_clamps_and_command_order() -> None:
    settings = Settings()
    assert settings.get("watchdog_ms") == 1500
    assert settings.get("fallback_khz") is None
    settings.apply_config(ConfigValues(vol_min=20, vol_max=60, zones=("79", "760")))
    settings.volume_level = 90
    assert settings.volume == 60
    settings.volume_level = 5
    assert settings.volume == 20
    assert settings.zones == ("79", "760")
    order = CommandOrder()
    assert order.accept(("volume", None), 5)
    assert not order.accept(("volume", None), 4)
    assert order.accept(("mute", None), 4)  # another state key
    assert order.accept_keys([("config", "a"), ("config", "b")], 7) == {("config", "a"), ("config", "b")}
    order.reset()  # the server restarted: its ids start again
    assert order.accept(("volume", None), 1)


def test_simulated_hardware_is_plausible_and_stable() -> None:
    hw = Hardware.simulated(b"\x01" * 32)
    assert hw == Hardware.simulated(b"\x01" * 32)
    assert hw.imei[-1] == luhn_digit(hw.imei[:-1])
    assert luhn_digit("35693803564380") == "9"  # the IMEI of the spec's telemetry example
    assert 85_000_000 <= hw.lat <= 234_000_000
    assert 1_021_000_000 <= hw.lon <= 1_095_000_000


def test_watchdog_resolves_its_fallback_against_the_hardware() -> None:
    assert Watchdog.fallback("local", has_fm=True, has_content=False) == "fm"
    assert Watchdog.fallback("fm", has_fm=False, has_content=True) == "silence"
    dog = Watchdog()
    dog.arm(0.0)
    assert dog.deadline(None, 3.0) == 3.0
    assert not dog.check(2.9, None, 3.0)
    assert dog.check(3.0, None, 3.0)
    assert dog.deadline(None, 3.0) is None
    assert dog.packet()


def test_open_file_limit_is_raised_or_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    from loa.devices.fleet import FleetError, raise_open_file_limit

    limits = {"soft": 1024, "hard": 4096}
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (limits["soft"], limits["hard"]))
    monkeypatch.setattr(resource, "setrlimit", lambda _which, value: limits.update(soft=value[0]))
    assert raise_open_file_limit(100) == 1024  # enough already
    assert raise_open_file_limit(2000) == 2064
    assert limits["soft"] == 2064
    with pytest.raises(FleetError, match="hard limit is 4096"):
        raise_open_file_limit(10_000)
