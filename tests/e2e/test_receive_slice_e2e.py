"""The streamer service's receive loop gives the event loop back after a bounded slice of work: under a burst of
datagrams that each cost the core half a millisecond, a task that is ready to run waits for a few datagrams at
most, never for the whole burst (a frame, an alert trigger or a timer waits at most one slice)."""

from __future__ import annotations

import random
import socket
import time

import anyio
import pytest

from loa.streamer.core import StreamerCore
from loa.streamer.service import RECEIVE_BATCH, RECEIVE_SLICE_S, StreamerService, epoch_for, open_udp_socket
from loa.streamer.zones import Zone, ZoneTree

pytestmark = pytest.mark.e2e
COST_S = 0.0005  # the core's time per datagram here: four of them fill a slice
BURST = 120


@pytest.mark.parametrize(("backend", "options"), [("trio", {}), ("asyncio", {"use_uvloop": True})],
                         ids=["trio", "uvloop"])
def test_a_burst_of_costly_datagrams_is_read_in_slices(backend: str, options: dict[str, bool]) -> None:
    rng = random.Random(2)
    seen: list[int] = []
    waited: list[int] = []  # datagrams the core took while a ready task waited for its turn

    async def main() -> dict[str, int]:
        core = StreamerCore(static_private=rng.randbytes(32), zones=ZoneTree([Zone("X1", "x")]),
                            epoch_ns=epoch_for(anyio.current_time()), send_clock=anyio.current_time)
        receive = core.receive_datagram

        def costly(data: bytes, address: tuple[str, int], now: float, *, arrived: float | None = None) -> None:
            seen.append(1)
            until = time.monotonic() + COST_S
            while time.monotonic() < until:
                pass
            receive(data, address, now, arrived=arrived)

        core.receive_datagram = costly  # type: ignore[method-assign]
        service = StreamerService(core, open_udp_socket("127.0.0.1", 0))
        with service.sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            await burst(service, client)
        return dict(core.sessions.conn.endpoint.statistics().drops)

    async def burst(service: StreamerService, client: socket.socket) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(service.serve)
            init = b"\x01\x01\x00\x00" + rng.randbytes(144)  # an init with a wrong mac1: passes the filter
            for _ in range(BURST):
                client.sendto(init, service.address)
            with anyio.fail_after(20):
                while len(seen) < BURST:
                    before = len(seen)
                    await anyio.sleep(0)  # ready at once: runs again as soon as the loop gets round to it
                    waited.append(len(seen) - before)
            service.stop()

    drops = anyio.run(main, backend=backend, backend_options=options)
    assert drops == {"BadMacError": BURST}
    # A slice ends with the first datagram read at or after its deadline: RECEIVE_SLICE_S / COST_S + 1 datagrams
    # (one more for rounding). A ready task waits for one slice on asyncio and for at most two on trio (which runs
    # the ready tasks of each batch in random order). Read all at once, the burst would be one wait of 120.
    bound = 2 * (int(RECEIVE_SLICE_S / COST_S) + 2)
    assert max(waited) <= bound, waited
    assert bound < BURST < RECEIVE_BATCH
    assert len([n for n in waited if n]) >= BURST // bound
