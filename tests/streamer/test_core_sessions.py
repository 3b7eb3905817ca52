"""The streamer core with devices over the fake network: joining, state on hello, clock answers, enrolment,
garbage, and the amplification bound (PROTOCOL.md sections 3, 4.5, 4.7, 8, 9)."""

from __future__ import annotations

import random
import sys
from collections import Counter

import pytest
from streamer_kit import EPOCH_NS, SERVER, KitDevice, World

from loa.protocol.control import Bye, Config, Leave, State, Telemetry, TelemetryValues, Volume
from loa.protocol.noise import x25519_public
from loa.streamer.sources import ToneSource
from loa.streamer.status import (
    SENT_SWEEP_MIN,
    DeviceEnrolled,
    DeviceOnline,
    HelloReceived,
    StateReported,
    TelemetryReported,
)


def test_hello_gets_config_with_the_zone_path_and_volume() -> None:
    world = World()
    hamlet = world.device("H111")
    district = world.device("D2")
    assert world.run_until(lambda: world.online(hamlet, district), 10.0)
    world.run_for(1.0)
    (config,) = hamlet.of_type(Config)
    assert config.values.zones == ("P", "D1", "C11", "H111") == world.zones.path("H111")
    assert config.values.delay_ms == 500
    assert district.zone_path == ("P", "D2")
    assert [v.level for v in hamlet.of_type(Volume)] == [80]
    status = world.core.device_status(hamlet.public_key)
    assert status.online
    assert status.zone == "H111"
    assert status.model == "kit"
    assert status.caps == ("amp",)
    assert status.address == world.address(hamlet)
    kinds = Counter(type(e).__name__ for e in world.core.events())
    assert kinds[DeviceOnline.__name__] == 2
    assert kinds[HelloReceived.__name__] == 2


def test_reports_are_kept_and_announced() -> None:
    world = World()
    device = world.device("C12")
    assert world.run_until(lambda: world.online(device), 10.0)
    world.core.events()
    device.conn.send(Telemetry(v=TelemetryValues(volume=70, faults=("line_open",), cell_dbm=-97)), world.now)
    device.conn.send(State(bid=None, src="fm", since=EPOCH_NS), world.now)
    assert world.run_until(lambda: world.core.device_status(device.public_key).state is not None, 5.0)
    status = world.core.device_status(device.public_key)
    assert status.telemetry is not None
    assert status.telemetry.faults == ("line_open",)
    assert status.state == State(bid=None, src="fm", since=EPOCH_NS, id=status.state.id)
    kinds = {type(e) for e in world.core.events()}
    assert {TelemetryReported, StateReported} <= kinds


def test_time_resp_stamps_receive_and_send_in_server_time() -> None:
    world = World(delay=(0.010, 0.010))
    device = world.device("C11")
    assert world.run_until(lambda: world.online(device), 10.0)
    sent_at = world.now
    t1 = device.probe_clock(sent_at)
    assert world.run_until(lambda: bool(device.time_resps), 5.0)
    (resp, t4), = device.time_resps
    assert resp.t1 == t1
    arrival = sent_at + 0.010  # the link delay is exactly 10 ms
    assert abs(resp.t2 - (EPOCH_NS + round(arrival * 1e9))) <= 1_000
    assert resp.t3 >= resp.t2
    assert world.core.statistics().time_responses == 1
    # the device's estimate of the offset is exact on a symmetric link
    offset = ((resp.t2 - resp.t1) + (resp.t3 - t4)) // 2
    assert abs(offset - (EPOCH_NS - 123_456_789)) <= 1_000


def test_enrolment_by_token_on_a_provisional_session() -> None:
    world = World()
    token = world.core.issue_token("C21", EPOCH_NS + 3600 * 10**9)
    newcomer = world.device(None, enrol=False, token=token)
    assert world.run_until(lambda: bool(newcomer.zone_path), 10.0)
    assert newcomer.zone_path == ("P", "D2", "C21")
    assert world.core.registry.entry(newcomer.public_key).zone == "C21"
    assert any(isinstance(e, DeviceEnrolled) and e.zone == "C21" for e in world.core.events())
    # the token is consumed: while another token is out, a second device with the used one gets a provisional
    # session (after the one-per-second-per-address limit) and is refused with a bye
    world.core.issue_token("C11", EPOCH_NS + 3600 * 10**9)
    second = world.device(None, enrol=False, token=token)
    assert world.run_until(lambda: bool(second.of_type(Bye)), 15.0)
    assert second.of_type(Bye)[0].reason == "enrolment refused"
    assert not second.of_type(Config)
    assert second.public_key not in world.core.registry


def test_provisional_session_without_hello_is_closed_after_ten_seconds() -> None:
    world = World()
    world.core.issue_token("C21", EPOCH_NS + 3600 * 10**9)
    silent = world.device(None, enrol=False, start=False)
    silent.conn.connect(world.now)  # a session, but no hello
    assert world.run_until(lambda: bool(silent.of_type(Bye)), 20.0)
    assert 10.0 <= world.now < 11.0
    assert silent.messages == [Bye(reason="enrolment refused")]


def test_unknown_keys_get_no_answer_without_tokens() -> None:
    world = World()
    stranger = world.device(None, enrol=False)
    world.run_for(12.0)
    assert stranger.received_bytes == 0
    assert world.core.statistics().drops["UnknownKeyError"] >= 2


def test_garbage_is_counted_and_never_answered_beyond_the_handshake_rules() -> None:
    """Amplification <= 1, measured per unverified source address, under a barrage of every kind of garbage
    while a broadcast runs to real devices."""
    from loa.streamer.sources import ToneSource

    world = World()
    member = world.device("C11")
    assert world.run_until(lambda: world.online(member), 10.0)
    world.core.start_broadcast(ToneSource(), ["P"], world.now)
    enrolled_key = random.Random(5).randbytes(32)
    world.core.add_device(x25519_public(enrolled_key), "C12", world.now)
    bytes_to: Counter[tuple[str, int]] = Counter()
    bytes_from: Counter[tuple[str, int]] = Counter()

    def tap(_now: float, src: tuple[str, int], dst: tuple[str, int], data: bytes) -> None:
        if src == SERVER:
            bytes_to[dst] += len(data)
        elif dst == SERVER:
            bytes_from[src] += len(data)

    world.net.taps.append(tap)
    rng = random.Random(9)
    recorded: list[bytes] = []
    world.net.taps.append(lambda _n, src, dst, data: recorded.append(data) if src == world.address(member) else None)
    world.run_for(0.5)
    attackers = [("203.0.113.9", 1000 + i) for i in range(8)]
    spoofer = KitDevice(server_public=world.core.public_key, static_private=enrolled_key, seed=77)
    garbage = [
        b"", b"\x00" * 40, b"\x05\x01\x00\x00" + bytes(60), b"\x01\x02\x00\x00" + bytes(144),
        b"\x01\x01\x00\x01" + bytes(144), b"\x01\x01\x00\x00" + bytes(10), b"\x04\x01\x00\x00" + rng.randbytes(60),
        rng.randbytes(1300), b"\x80\xc8" + bytes(30), b"\x80\x6f" + bytes(40), b"\x02\x01\x00\x00" + bytes(92),
    ]
    for i in range(200):
        attacker = attackers[i % len(attackers)]
        world.net.inject(garbage[i % len(garbage)], attacker, SERVER)
        world.net.inject(recorded[i % len(recorded)], attacker, SERVER)  # replays of a real device's datagrams
    spoofer.conn.connect(world.now)
    init = spoofer.conn.datagrams_to_send()[0]
    assert len(init) == 148
    world.net.inject(init, attackers[0], SERVER)  # a genuine init from a spoofed address: one 96-byte response
    world.run_for(0.1)
    world.core.sessions.conn.endpoint.set_under_load(True)
    world.net.inject(b"\x01\x01\x00\x00" + bytes(144), attackers[1], SERVER)
    fresh = KitDevice(server_public=world.core.public_key, seed=78)
    fresh.conn.connect(world.now)
    world.net.inject(fresh.conn.datagrams_to_send()[0], attackers[2], SERVER)  # under load: a 52-byte cookie
    world.run_for(2.0)
    for attacker in attackers:
        assert bytes_to[attacker] <= bytes_from[attacker], (attacker, bytes_to[attacker], bytes_from[attacker])
    assert bytes_to[attackers[0]] == 96
    assert bytes_to[attackers[2]] == 52
    assert sum(bytes_to[a] for a in attackers[3:]) == 0
    drops = world.core.statistics().drops
    for name in ("TruncatedError", "UnknownTypeError", "UnknownVersionError", "ReservedBitsError",
                 "OversizeError", "BadMacError", "ReplayError"):
        assert drops.get(name, 0) > 0, (name, dict(drops))
    assert member.media, "the broadcast kept flowing to the real member"
    assert member.media_sources == {SERVER}


def test_a_device_holding_a_broadcast_the_server_does_not_run_is_told_to_leave_it() -> None:
    """After a server restart (PROTOCOL.md section 7.6) a device reports the broadcast of the earlier boot it
    still holds; the server answers ``leave`` for it, and only for it: a broadcast it runs is left alone."""
    world = World()
    device = world.device("C11")
    assert world.run_until(lambda: world.online(device), 10.0)
    bid = world.core.start_broadcast(ToneSource(seconds=30.0), ["C11"], world.now)
    world.run_for(1.0)
    device.conn.send(State(bid=bid, src="ip", since=EPOCH_NS), world.now)
    world.run_for(1.0)
    assert device.of_type(Leave) == []
    stale = bid + 1000
    device.conn.send(State(bid=stale, src="ip", since=EPOCH_NS), world.now)
    assert world.run_until(lambda: bool(device.of_type(Leave)), 5.0)
    assert [m.bid for m in device.of_type(Leave)] == [stale]


def test_each_dropped_datagram_is_counted_once() -> None:
    world = World()
    device = world.device("C11")
    assert world.run_until(lambda: world.online(device), 10.0)
    before = world.core.statistics().drops
    bad = {
        "TruncatedError": b"\x04\x01\x00\x00" + bytes(8),
        "UnknownVersionError": b"\x04\x02\x00\x00" + bytes(40),
        "ReservedBitsError": b"\x04\x01\x00\x01" + bytes(40),
        "BadLengthError": b"\x01\x01\x00\x00" + bytes(150),
        "UnknownKeyError": b"\x04\x01\x00\x00" + b"\xde\xad\xbe\xef" + bytes(40),
    }
    for data in bad.values():
        world.core.receive_datagram(data, ("203.0.113.5", 9999), world.now)
    after = world.core.statistics().drops
    assert {name: after.get(name, 0) - before.get(name, 0) for name in bad} == dict.fromkeys(bad, 1)


def test_tracked_messages_are_remembered_until_acknowledged_and_no_longer() -> None:
    """The table behind send_tracked keeps what is unacknowledged (a resend waits for it), and sheds what was
    acknowledged: a device's table does not grow with every alert, play or board message of the server's life.
    (``leave`` stands for any message; sent alone it is never taken back, so one waiting does not replace another.)"""
    world = World()
    online, away = world.device("C11"), world.device("C12", start=False)
    assert world.run_until(lambda: world.online(online), 10.0)
    sessions = world.core.sessions
    first_ids = {}
    for i in range(200):
        for device in (online, away):
            msg_id = sessions.send_tracked(device.public_key, ("leave", i), Leave(bid=i), world.now)
            first_ids.setdefault((device, i), msg_id)
        world.run_for(0.05)
    world.run_for(1.0)
    assert [m.bid for m in online.of_type(Leave)] == list(range(200))
    assert len(sessions.runtime(online.public_key).sent or ()) <= 2 * SENT_SWEEP_MIN
    # the device away acknowledged nothing: every entry stays, and sending under a tag again waits for the first
    assert len(sessions.runtime(away.public_key).sent or ()) == 200
    again = sessions.send_tracked(away.public_key, ("leave", 7), Leave(bid=7), world.now)
    assert again == first_ids[(away, 7)]

    away.start(world.now)
    assert world.run_until(lambda: world.online(away), 10.0)
    world.run_for(2.0)
    assert sorted(m.bid for m in away.of_type(Leave)) == list(range(200))
    for i in range(200, 400):  # enough new tags for the table to reach its next sweep
        sessions.send_tracked(away.public_key, ("leave", i), Leave(bid=i), world.now)
        world.run_for(0.05)
    assert len(sessions.runtime(away.public_key).sent or ()) <= 2 * SENT_SWEEP_MIN
    # an acknowledged tag, swept or not, is sent again
    resent = sessions.send_tracked(away.public_key, ("leave", 7), Leave(bid=7), world.now)
    assert resent is not None
    assert resent > first_ids[(away, 7)]


def test_a_device_table_of_sent_alerts_stays_small_over_many_alerts() -> None:
    """...small enough to stay in the interpreter's pools (blocks of up to 512 bytes): a larger table per device
    would come from the C heap at every alert, ten thousand at once."""
    world = World()
    device = world.device("C11")
    assert world.run_until(lambda: world.online(device), 10.0)
    largest = 0
    for k in range(24):
        bid = world.core.trigger_alert(ToneSource(1000.0), world.now, signing_key=world.authority, zones=["C11"],
                                       alert_id=f"test-{k}")
        world.run_for(0.5)
        largest = max(largest, sys.getsizeof(world.core.sessions.runtime(device.public_key).sent or {}))
        world.core.cancel_alert(bid, world.now, signing_key=world.authority)
        world.run_for(0.5)
        largest = max(largest, sys.getsizeof(world.core.sessions.runtime(device.public_key).sent or {}))
    assert len(device.alerts) == 24
    assert len(world.core.sessions.runtime(device.public_key).sent or ()) <= SENT_SWEEP_MIN
    assert largest <= 512


def test_retransmissions_draw_no_kernel_randomness(monkeypatch: pytest.MonkeyPatch) -> None:
    """The core's ``rng`` defaults to a SystemRandom (ids and SSRCs); the retransmissions' jitter, drawn for every
    message to every device that does not answer, comes from a generator seeded once from it."""
    world = World(rng=random.SystemRandom())
    devices = [world.device("C11") for _ in range(3)]
    assert world.run_until(lambda: world.online(*devices), 10.0)
    for device in devices:
        world.net.add_outage(world.now, world.now + 1e6, dst=world.address(device))
    draws = Counter[int]()
    real = random._urandom  # type: ignore[attr-defined]
    monkeypatch.setattr(random, "_urandom", lambda n: (draws.update([n]), real(n))[1])
    before = world.core.statistics().control_retransmitted
    world.core.set_volume([d.public_key for d in devices], 40, world.now)
    world.run_for(5.0)
    assert world.core.statistics().control_retransmitted - before >= 3 * 4  # each device's volume, again and again
    assert not draws
