"""With 5 % random loss in both directions (an impairment proxy between each device and the server), at least
99 % of a live programme's frames are played exactly on every device, and every control message arrives.

What counts: the device's playout log holds one entry per frame slot of the broadcast, by how the frame was
made: ``packet`` (decoded from the packet itself, received at once or retransmitted after a NACK), ``fec``
(recovered from the in-band redundancy of the next packet) or ``plc`` (concealed: not what was sent). A frame
slot missing from the log (its RTP timestamp skipped) counts against the device too. Exact = packet + fec,
over every slot from the device's first frame to its last."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from _site import Device, Site, frame_counts, wait_for

from loa.bench.impair import Impairment, ImpairProxy
from loa.protocol.control import Volume
from loa.streamer.sources import ToneSource

pytestmark = pytest.mark.e2e
LOSS = 0.05
LEVELS = list(range(41, 71))  # 30 volume commands, each a new level


def record_volumes(device: Device) -> list[int]:
    """The level of every ``volume`` message the device's core handles, duplicates included."""
    seen: list[int] = []
    handle = device.core._on_volume

    def on_volume(message: Volume, now: float) -> None:
        seen.append(message.level)
        handle(message, now)

    device.core._on_volume = on_volume  # type: ignore[method-assign]
    return seen


@pytest.mark.anyio
async def test_five_percent_loss_both_ways(anyio_backend: str, tmp_path: Path) -> None:
    site = Site(tmp_path, seed=41)
    with anyio.fail_after(35):
        async with anyio.create_task_group() as tg:
            await site.start_server(tg)
            proxy = ImpairProxy(tg, site.address, up=Impairment(loss=LOSS), down=Impairment(loss=LOSS), seed=41)
            devices = [site.add_device("A", record=False, server=(await proxy.add_leg()).address)
                       for _ in range(3)]
            seen = [record_volumes(d) for d in devices]
            await wait_for(lambda: all(d.core.statistics().clock_ready for d in devices), 10, "clock sync")
            bid = site.service.start_broadcast(ToneSource(440.0), ["A"])
            for level in LEVELS:  # spread over the programme's first seconds
                site.core.set_volume([d.public_key for d in devices], level, site.service.now())
                site.service.changed()
                await anyio.sleep(0.1)
            await wait_for(lambda: all(sum(e.bid == bid for e in d.core.log.entries) >= 250 for d in devices), 12,
                           "5 s of programme")
            await wait_for(lambda: all(set(s) >= set(LEVELS) for s in seen), 5, "every volume command")
            site.close()
            await site.stop_server()
            await proxy.aclose()
            tg.cancel_scope.cancel()
    totals = proxy.totals()
    up, down = totals["up"], totals["down"]
    print(f"{anyio_backend}: proxy up {up.forwarded} forwarded / {up.dropped} dropped "
          f"({up.dropped / (up.forwarded + up.dropped):.2%}), down {down.forwarded} / {down.dropped} "
          f"({down.dropped / (down.forwarded + down.dropped):.2%})")
    assert up.dropped > 0
    assert down.dropped > 0
    for device, levels in zip(devices, seen, strict=True):
        counts = frame_counts(device.core.log.for_bid(bid))
        exact = (counts["packet"] + counts["fec"]) / counts["slots"]
        stats = device.core.statistics()
        print(f"  {device.name}: {counts['slots']} slots: packet {counts['packet']}, fec {counts['fec']}, "
              f"plc {counts['plc']}, missing {counts['missing']}; exact {exact:.4f} "
              f"(from packets alone {counts['packet'] / counts['slots']:.4f}); gaps {stats.gaps}, "
              f"NACKs {stats.nacks_sent}, late {stats.late}; volume levels received "
              f"{len(set(levels) & set(LEVELS))}/{len(LEVELS)} ({len(levels)} volume messages handled), "
              f"level {device.core.settings.volume_level}")
        assert counts["slots"] >= 250
        assert exact >= 0.99, (device.name, counts)
        assert set(levels) >= set(LEVELS)  # (plus the level sent with the device's state at connection)
        assert device.core.settings.volume_level == LEVELS[-1]
