"""`loa bench faults` scaled down, in process: the real streamer service and three decoding devices on loopback,
each behind its leg of the seeded impairment proxy (:mod:`loa.bench.impair`), through the bench's own code.

* ``mixed``: 10 % random loss, 10 % of datagrams held back 50 ms, 10 % duplicated and up to 100 ms of jitter, in
  both directions, over a 4 s programme and then an alert: nearly every frame slot plays from its packet or its
  in-band FEC, no slot plays twice, and every device gets the alert.
* ``outage_down_3s``: 3 s with nothing reaching the devices, the alert triggered as it begins: every device plays
  from packets again soon after it ends (a gap longer than 64 frames used to stall the stream until its ring
  overflowed, 7.5 s after the end), and holds the alert soon after.
* a path of 1.4 s each way from the start (a round trip longer than the joining retry): the devices still get
  their sessions and clock estimates, take an alert, and play a live programme later than its playout delay."""

from __future__ import annotations

import json
import time

import anyio
import pytest
from anyio.abc import SocketAttribute

from loa.bench.faults import (
    ZONE,
    Device,
    Faults,
    FaultSite,
    Scenario,
    parse_scenario,
    run_outage,
    run_scenarios,
    wait_until,
)
from loa.bench.impair import HOST, Impairment, ImpairProxy
from loa.devices.playout import PlayoutEntry
from loa.streamer.sources import ToneSource

pytestmark = pytest.mark.e2e
MIXED = Scenario("mixed", Impairment(loss=0.1, reorder=0.1, reorder_gap=0.05, duplicate=0.1, jitter=0.1))


@pytest.mark.anyio
async def test_mixed_faults_and_a_downlink_outage(anyio_backend: str) -> None:
    m = await run_scenarios([MIXED, parse_scenario("outage_down_3s")], devices=3, seconds=4.0, seed=7, limit=20.0,
                            log=print)
    print(anyio_backend, m)
    assert 0.05 < m["mixed_loss_seen"] < 0.15  # the proxy did drop about 10 %
    assert m["mixed_exact_fraction"] + m["mixed_fec_fraction"] >= 0.9  # 0.99 measured on a quiet machine
    assert m["mixed_played_twice"] == 0
    assert m["mixed_alert_held_fraction"] == 1.0
    assert m["mixed_alert_ms"] < 5_000
    assert m["outage_down_3s_rejoined_fraction"] == 1.0
    assert m["outage_down_3s_rejoin_ms"] < 2_000
    assert m["outage_down_3s_alert_held_fraction"] == 1.0
    assert m["outage_down_3s_alert_ms"] >= 2_900  # nothing could arrive during the outage
    assert m["outage_down_3s_alert_after_outage_ms"] < 9_000  # at most one 8 s back-off interval


@pytest.mark.anyio
async def test_the_delivery_loop_and_a_receive_loop_take_turns_on_one_socket(anyio_backend: str) -> None:
    """The receive loop of a direction and the delivery loop of delayed datagrams can send on one socket at the
    same moment; anyio refuses a second sender (BusyResourceError, which ended a 10-device run), so they take
    turns and every datagram goes on."""
    async with anyio.create_task_group() as tg:
        server = await anyio.create_udp_socket(local_host=HOST)
        device = await anyio.create_udp_socket(local_host=HOST)
        proxy = ImpairProxy(tg, server.extra(SocketAttribute.local_address))  # type: ignore[arg-type]
        leg = await proxy.add_leg()
        await device.sendto(b"hello", *leg.address)
        assert (await server.receive())[0] == b"hello"  # the leg now knows the device's address
        async with anyio.create_task_group() as senders:
            for i in range(50):
                senders.start_soon(proxy._send, leg, "down", b"%d" % i)
        with anyio.fail_after(5):
            got = {(await device.receive())[0] for _ in range(50)}
        assert got == {b"%d" % i for i in range(50)}
        assert leg.down.counts.forwarded == 50
        await proxy.aclose()
        await server.aclose()
        await device.aclose()


@pytest.mark.anyio
async def test_a_device_that_does_not_play_again_after_an_outage_is_described_from_both_sides(
        anyio_backend: str) -> None:
    """Two devices; the second one's runner is stopped before a 1 s downlink outage, so it never plays from
    packets again. The scenario counts it and logs what it and the streamer were doing (its session, counters and
    boot; the streamer's record, membership and destinations), while the first device, which did rejoin, is not
    described."""
    lines: list[str] = []
    site = FaultSite(11)
    async with anyio.create_task_group() as tg:
        await site.start(tg, 2, proxy=True)
        faults = Faults(site, None)
        try:
            assert await wait_until(lambda: all(d.core.statistics().clock_ready and d.core.settings.zones
                                                for d in site.devices), 30.0)
            site.devices[1].scope.cancel()
            m = await run_outage(site, faults, parse_scenario("outage_down_1s"), 4.0, lines.append)
        finally:
            await site.stop()
            tg.cancel_scope.cancel()
    assert m["outage_down_1s_rejoined_fraction"] == 0.5
    assert m["outage_down_1s_not_rejoined"] == 1
    assert len(lines) == 1, lines
    entry = json.loads(lines[0].split(": ", 2)[2])
    assert entry["device"] == 1
    mine, theirs = entry["device_side"], entry["server_side"]
    assert mine["connected"] is True
    assert mine["clock_ready"] is True
    assert mine["received"] == 0
    assert mine["current"] is None
    assert theirs["boot"] == mine["boot"]
    assert theirs["address"][0] == "127.0.0.1"
    assert len(theirs["broadcasts"]) == 1  # the streamer made it a member of the outage's broadcast
    assert isinstance(theirs["online"], bool)
    assert isinstance(theirs["in_destinations"], bool)


async def _check_whole_alert(site: FaultSite, heard: set[int]) -> None:
    """Every device plays all 25 frames of the one alert not among ``heard``, in order, 1.35-1.5 s late."""

    def alert_packets(device: Device) -> list[PlayoutEntry]:
        return [e for e in device.core.log.entries if e.bid not in heard and e.kind == "packet"]

    assert await wait_until(lambda: all(len(alert_packets(d)) >= 25 for d in site.devices), 20.0), [
        d.core.statistics() for d in site.devices]
    for device in site.devices:
        entries = alert_packets(device)
        assert len({e.bid for e in entries}) == 1
        _assert_in_order_and_later(entries)


def _assert_in_order_and_later(entries: list[PlayoutEntry]) -> None:
    """Frames played from their packets in sequence, each 1.1 s + 250 ms later than delay_ms asks, rounded up."""
    assert [e.seq for e in entries] == [(entries[0].seq + i) & 0xFFFF for i in range(len(entries))]
    assert all(1_350_000_000 <= e.extra_ns <= 1_500_000_000 for e in entries)


@pytest.mark.anyio
async def test_devices_behind_a_path_slower_than_their_retry_come_up_and_take_an_alert(anyio_backend: str) -> None:
    """Every datagram delayed 1.4 s each way (a congested cellular link): each init's response comes after the
    2-2.5 s retry replaced it. The first authentic one teaches a device the round trip (PROTOCOL.md 3.8.2), the
    next init waits for its answer, the clock probes wait two round trips before taking the server for silent,
    and each device has one session, a clock estimate and the alert. From the probes' round trip each device
    starts every broadcast 1.4 s later than its delay_ms asks (PROTOCOL.md 5.6): a 0.5 s alert, a programme, and
    another alert play whole."""
    site = FaultSite(13)
    async with anyio.create_task_group() as tg:
        await site.start(tg, 2, proxy=True, link=Impairment(delay=1.4))
        try:
            assert await wait_until(lambda: all(d.core.statistics().clock_ready for d in site.devices), 45.0), [
                d.core.conn.session.statistics() for d in site.devices]
            for device in site.devices:
                assert device.core.conn.session.statistics().sessions_started == 1
                assert 2.8 <= (device.core.conn.session.handshake_rtt or 0.0) < 4.0
            # the first alert after the devices' boot (0.5 s: 25 packets, fewer than LATE_RUN): their clock probes
            # heard the path, half their least round trip 1.1 s over the 300 ms delay, so it starts 1.1 s + 250 ms
            # later, rounded up (PROTOCOL.md 5.6), and plays every frame, with "late_path" from its start
            _, marks = site.trigger_alert()
            assert await wait_until(lambda: all(len(d.core.accepted) > mark
                                                for d, mark in zip(site.devices, marks, strict=True)), 15.0)
            await _check_whole_alert(site, set())
            # a live programme whose packets come 1.1 s after their play time: it starts with the same extra and
            # plays in one piece, all 200 frames
            heard = {e.bid for d in site.devices for e in d.core.log.entries}
            bid = site.service.start_broadcast(ToneSource(440.0, seconds=4.0), [ZONE])

            def packets(device: Device) -> list[PlayoutEntry]:
                return [e for e in device.core.log.for_bid(bid) if e.kind == "packet"]

            assert await wait_until(lambda: all(len(packets(d)) >= 100 for d in site.devices), 20.0), [
                d.core.statistics() for d in site.devices]
            for device in site.devices:
                assert "late_path" in device.core.faults(time.monotonic())
            assert await wait_until(lambda: all(len(packets(d)) >= 200 for d in site.devices), 20.0), [
                d.core.statistics() for d in site.devices]
            for device in site.devices:
                _assert_in_order_and_later(packets(device))
            # the next alert starts with the extra the programme's last packets needed (the probes' one is the
            # same here), and plays every frame
            assert await wait_until(lambda: all(bid not in d.core.broadcasts for d in site.devices), 20.0)
            heard |= {bid}
            site.trigger_alert()
            await _check_whole_alert(site, heard)
        finally:
            await site.stop()
            tg.cancel_scope.cancel()
