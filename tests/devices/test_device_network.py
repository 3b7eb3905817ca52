"""The reference device on bad networks: clock sync across devices, loss, roaming, a server restart.

Clock schedule of the sync test (PROTOCOL.md 4.7): probes every 0.25 s until the estimate is ready (8 exchanges),
then every second until 60 exchanges, then every 5 s; the stream starts after 120 s (about 75 exchanges).
"""

from __future__ import annotations

import itertools
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st
from serverdriver import SERVER, STEADY, TestServer, World

from loa.protocol.control import State, Volume

CLOCKS = [(10.0, 100.0), (-10.0, -100.0), (3.3, -40.0), (-7.1, 55.0), (0.0, 0.0)]  # (offset s, drift ppm)


def _spread(world: World, bid: int) -> list[float]:
    """For every frame all devices played, how far apart (s) their starts were on the true timeline."""
    starts: dict[int, dict[int, float]] = defaultdict(dict)
    for i, node in enumerate(world.devices):
        for entry in node.core.log.for_bid(bid):
            assert entry.true_at is not None
            starts[entry.rtp_ts][i] = entry.true_at
    return [max(v.values()) - min(v.values()) for v in starts.values() if len(v) == len(world.devices)]


def test_devices_with_offsets_and_drifts_play_each_frame_within_1_ms(payloads: list[bytes]) -> None:
    world = World(30, **STEADY)
    for offset, drift in CLOCKS:
        world.add_device(offset_s=offset, drift_ppm=drift)
    world.run(120.0)
    world.server.start_stream(5, [world.pub(n) for n in world.devices], payloads=payloads, start_in=0.1,
                              frames=500)
    world.run(11.0)
    spread = _spread(world, 5)
    assert len(spread) == 500
    assert max(spread) < 0.001, max(spread)
    for node in world.devices:
        assert node.core.statistics().played == 500


def test_five_percent_loss_both_ways(payloads: list[bytes]) -> None:
    world = World(31, loss=0.05, delay=(0.01, 0.03))
    nodes = [world.add_device(offset_s=o, drift_ppm=d) for o, d in CLOCKS[:3]]
    world.run(15.0)
    world.server.start_stream(5, [world.pub(n) for n in nodes], payloads=payloads, start_in=0.1, frames=1500)
    for i, node in enumerate(itertools.islice(itertools.cycle(nodes), 60)):
        world.server.send(world.pub(node), Volume(level=i))  # every control message must arrive, once
    world.run(32.0)
    for node in nodes:
        stats = node.core.statistics()
        # A lost first or last packet leaves nothing to detect it by: at most those two go unaccounted. Packets
        # that came before a `join` lost on the way (it is retransmitted; the stream starts 100 ms after it) are
        # dropped as an SSRC not joined (section 8), counted: nothing else sends this device media it lacks.
        early = node.core.drops().get("UnknownKeyError", 0)
        assert stats.played + stats.fec + stats.plc + early >= 1498, (stats, early)
        assert stats.played / 1500 >= 0.99, stats  # the frames themselves, thanks to NACK
        assert stats.nacks_sent > 0
    channels = [n.core.conn.channel.statistics() for n in nodes]
    assert sum(c.delivered for c in channels) >= 60 + 3  # 60 volumes and each device's config
    assert world.server.rtx_sent > 0
    assert world.net.statistics().lost > 100


def test_fec_and_concealment_cover_what_nack_does_not(payloads: list[bytes]) -> None:
    from loa.devices.sinks import CounterSink

    world = World(32, loss=0.05)
    world.server.ignore_nacks = True
    sink = CounterSink(decode=True)
    node = world.add_device(sink=sink)
    world.run(10.0)
    world.server.start_stream(5, [world.pub(node)], payloads=payloads, start_in=0.1, frames=1000)
    world.run(21.0)  # the stream ends without `leave`: 1.5 s (watchdog_ms) after its last packet the fallback plays
    stats = node.core.statistics()
    assert stats.played + stats.fec + stats.plc >= 998  # (a lost first or last packet goes unnoticed)
    assert stats.fec > 20  # rebuilt from the next packet's in-band FEC
    assert stats.plc < stats.fec  # concealed only when the next packet was lost too
    assert sink.kinds == {"packet": stats.played, "fec": stats.fec, "plc": stats.plc}


def test_address_change_mid_stream_keeps_playing(payloads: list[bytes]) -> None:
    world = World(33)
    node = world.add_device(address=("198.51.100.7", 40000))
    world.run(10.0)
    world.server.start_stream(5, [world.pub(node)], payloads=payloads, start_in=0.1, frames=750)
    world.run(5.0)
    world.net.move(("198.51.100.7", 40000), ("203.0.113.9", 51515))  # a new 4G attach
    world.run(11.0)  # to just past the stream's end (no `leave`: 1.5 s later its watchdog would fire)
    stats = node.core.statistics()
    assert world.net.statistics().undeliverable > 0  # packets went to the old address for a while
    assert world.server.conn.endpoint.address_of(world.pub(node)) == ("203.0.113.9", 51515)
    assert stats.played == 750  # the silence probe moved the stream within its delay; NACK refilled the gap
    assert stats.watchdog_fires == 0


def test_server_restart_device_rejoins_and_resumes(payloads: list[bytes]) -> None:
    world = World(34)
    node = world.add_device()
    world.run(10.0)
    pub = world.pub(node)
    world.server.start_stream(5, [pub], payloads=payloads, start_in=0.1)
    world.run(5.0)
    before = node.core.statistics().played
    world.net.detach(SERVER)  # the server restarts: same static key, new boot, no sessions
    restarted = TestServer(world.net, static_private=world.server_key, rng=world.rng)
    world.server = restarted
    stream = restarted.start_stream(5, [pub], payloads=payloads, join=False)  # the broadcast goes on
    restarted.on_connect = None
    assert world.run_until(lambda: bool(restarted.connects), 60.0)
    restarted.send(pub, stream.join())  # the server re-issues what the device should play (section 7.6)
    world.run(8.0)
    stats = node.core.statistics()
    assert stats.current == 5
    assert stats.played > before + 300  # it plays the new stream of the same broadcast
    assert stats.watchdog_fires == 1  # the stream was silent meanwhile: the fallback played, then gave way
    assert stats.faults == ()
    assert [(m.bid, m.src) for m in restarted.messages_of(State)][-1] == (5, "ip")


def test_a_counting_device_counts_packets_and_reports_like_a_real_one(payloads: list[bytes]) -> None:
    world = World(35, loss=0.02)
    node = world.add_device(count_only=True)
    world.run(10.0)
    stream = world.server.start_stream(5, [world.pub(node)], payloads=payloads, start_in=0.1, frames=500)
    world.run(11.0)
    stats = node.core.statistics()
    assert stats.frames == 0  # nothing decoded, nothing played
    assert 470 <= stats.received <= 500  # counted, with what the link lost missing (no NACK without a buffer)
    assert stats.gaps == stats.expected - stats.received
    assert [(m.bid, m.src) for m in world.server.messages_of(State)][-1] == (5, "ip")
    stream.paused = True  # the watchdog still applies, and states say what a real device would play
    world.run(4.0)
    assert node.core.statistics().faults == ("watchdog",)
    assert [(m.bid, m.src) for m in world.server.messages_of(State)][-1] == (5, "fm")


@settings(max_examples=6, deadline=None)
@given(one_way=st.floats(1.3, 4.5), count_only=st.booleans(), seed=st.integers(0, 2**16))
def test_a_device_behind_a_path_slower_than_its_retries_comes_up_and_takes_an_alert(
        one_way: float, count_only: bool, seed: int) -> None:
    """A round trip of 2.6-9 s (a congested cellular link), longer than the joining retry and the 3 s after which
    unanswered probes mean a silent server: the device learns the round trip from a late response, gets its
    session, keeps it (no new handshake but the rekey), has its clock estimate, and accepts an alert."""
    world = World(seed, delay=(one_way, one_way + 0.01))
    node = world.add_device(count_only=count_only)
    core = node.core
    assert world.run_until(lambda: core.clock.ready, 60.0), core.conn.session.statistics()
    world.run(150.0)  # through a rekey
    assert core.conn.connected
    assert core.conn.session.statistics().sessions_started == 2
    world.server.send(world.pub(node), world.alert(40, alert_id="slow-path"))
    world.run(4 * one_way + 1.0)
    assert core.statistics().alerts_accepted == 1
