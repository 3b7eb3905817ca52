"""A device whose address changes mid-stream (its path through the proxy moves to a new source port, as a NAT
rebinding would do) keeps its session and keeps playing: at least 99 % of the frames after the move are played
exactly (``packet`` or ``fec``, see test_loss_e2e.py), and the server sends to the new address."""

from __future__ import annotations

import itertools
from pathlib import Path

import anyio
import pytest
from _site import Site, frame_counts, wait_for

from loa.bench.impair import ImpairProxy
from loa.streamer.sources import ToneSource

pytestmark = pytest.mark.e2e


@pytest.mark.anyio
async def test_a_device_that_changes_address_keeps_playing(anyio_backend: str, tmp_path: Path) -> None:
    site = Site(tmp_path, seed=51)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await site.start_server(tg)
            proxy = ImpairProxy(tg, site.address, seed=51)
            legs = [await proxy.add_leg() for _ in range(2)]
            devices = [site.add_device("A", record=False, server=leg.address) for leg in legs]
            await wait_for(lambda: all(d.core.statistics().clock_ready for d in devices), 10, "clock sync")
            bid = site.service.start_broadcast(ToneSource(440.0), ["A"])
            await wait_for(lambda: all(sum(e.bid == bid for e in d.core.log.entries) >= 100 for d in devices), 8,
                           "2 s of programme")
            moved, key = devices[0], devices[0].public_key
            before = site.core.sessions.online_address(key)
            moved_at = moved.clock.true(moved.runner.now())
            after = await legs[0].move()
            took = await wait_for(lambda: site.core.sessions.online_address(key) == after, 5,
                                  "the server to follow the move")
            frames_at_move = sum(e.bid == bid for e in moved.core.log.entries)
            await wait_for(lambda: sum(e.bid == bid for e in moved.core.log.entries) >= frames_at_move + 150, 8,
                           "3 s of programme after the move")
            site.close()
            await site.stop_server()
            await proxy.aclose()
            tg.cancel_scope.cancel()
    assert before is not None
    assert before != after
    entries = moved.core.log.for_bid(bid)
    later = [e for e in entries if e.true_at is not None and e.true_at >= moved_at]
    counts = frame_counts(later)
    exact = (counts["packet"] + counts["fec"]) / counts["slots"]
    steps = [b.true_at - a.true_at for a, b in itertools.pairwise(entries)  # type: ignore[operator]
             if a.true_at is not None and b.true_at is not None]
    print(f"{anyio_backend}: moved {before} -> {after}; server followed in {1000 * took:.1f} ms; after the move "
          f"{counts['slots']} slots: packet {counts['packet']}, fec {counts['fec']}, plc {counts['plc']}, "
          f"missing {counts['missing']}, exact {exact:.4f}; largest step between frames {1000 * max(steps):.2f} "
          f"ms; proxy moves {legs[0].moves}")
    assert counts["slots"] >= 150
    assert exact >= 0.99, counts
    assert max(steps) < 0.021
    other = frame_counts(devices[1].core.log.for_bid(bid))
    assert other["packet"] == other["slots"]
