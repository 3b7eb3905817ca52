"""`loa bench faults` scaled down, in process: the real streamer service and three decoding devices on loopback,
each behind its leg of the seeded impairment proxy (:mod:`loa.bench.impair`), through the bench's own code.

* ``mixed``: 10 % random loss, 10 % of datagrams held back 50 ms, 10 % duplicated and up to 100 ms of jitter, in
  both directions, over a 4 s programme and then an alert: nearly every frame slot plays from its packet or its
  in-band FEC, no slot plays twice, and every device gets the alert.
* ``outage_down_3s``: 3 s with nothing reaching the devices, the alert triggered as it begins: every device plays
  from packets again soon after it ends (a gap longer than 64 frames used to stall the stream until its ring
  overflowed, 7.5 s after the end), and holds the alert soon after."""

from __future__ import annotations

import anyio
import pytest
from anyio.abc import SocketAttribute

from loa.bench.faults import Scenario, parse_scenario, run_scenarios
from loa.bench.impair import HOST, Impairment, ImpairProxy

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
