"""The server stops (devices get ``bye``) and a new one starts on the same address with the same key and site:
every device rejoins on its own and the programme, started again, plays on every device."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from _site import Site, wait_for

from loa.streamer.sources import ToneSource

pytestmark = pytest.mark.e2e


def frames(site: Site, bid: int) -> list[int]:
    return [sum(e.bid == bid for e in d.core.log.entries) for d in site.devices]


@pytest.mark.anyio
async def test_devices_rejoin_a_restarted_server_and_play_again(anyio_backend: str, tmp_path: Path) -> None:
    site = Site(tmp_path, seed=61)
    with anyio.fail_after(35):
        async with anyio.create_task_group() as tg:
            await site.start_server(tg)
            port = site.address[1]
            for _ in range(3):
                site.add_device("A", record=False)
            await wait_for(lambda: all(d.core.statistics().clock_ready for d in site.devices), 10, "clock sync")
            first = site.service.start_broadcast(ToneSource(440.0), ["A"])
            await wait_for(lambda: min(frames(site, first)) >= 50, 8, "1 s of programme")
            await site.stop_server()
            stopped = time.monotonic()
            await wait_for(lambda: not any(d.core.statistics().connected for d in site.devices), 5,
                           "the devices to see the server go")
            await site.start_server(tg, port=port)
            assert site.address[1] == port
            keys = [d.public_key for d in site.devices]
            rejoin = await wait_for(lambda: all(site.core.sessions.is_online(k) for k in keys)
                                    and all(d.core.statistics().connected for d in site.devices), 20, "rejoin")
            since_stop = time.monotonic() - stopped
            second = site.service.start_broadcast(ToneSource(660.0), ["A"])
            heard = await wait_for(lambda: min(frames(site, second)) >= 100, 8, "2 s of programme again")
            site.close()
            await site.stop_server()
            tg.cancel_scope.cancel()
    print(f"{anyio_backend}: every device rejoined {1000 * rejoin:.0f} ms after the new server started "
          f"({1000 * since_stop:.0f} ms after the old one stopped); 2 s of programme on all {1000 * heard:.0f} ms "
          f"after it started; frames before/after the restart {frames(site, first)} / {frames(site, second)}")
    for device in site.devices:
        entries = device.core.log.for_bid(second)
        assert sum(e.kind == "packet" for e in entries) >= 0.99 * len(entries)
