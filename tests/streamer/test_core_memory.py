"""The core's memory over many alerts, on the virtual clock: what the core holds over its second hundred alerts is
no more than over its first (the soak's memory verdict, without a noisy machine in between)."""

from __future__ import annotations

import gc
import sys
import types

from streamer_kit import KitDevice, World

from loa.protocol.sim import FakeNetwork
from loa.streamer.sources import ToneSource

_OPAQUE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType, FakeNetwork,
           KitDevice)


SESSIONS_PER_DEVICE_BYTES = 2048  # a device's session keys, of which it may have one to three at a time


def reachable_bytes(root: object) -> int:
    """``sys.getsizeof`` summed over every object reachable from ``root``, stopping at classes, modules,
    functions and the test's network and devices (the core holds a clock of the network)."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _OPAQUE):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def alert_cycle(world: World, k: int) -> None:
    """An alert to a district: cancelled after half a second, or (every other one) left to its 1.5 s expiry; the
    core's events taken as the service takes them."""
    bid = world.core.trigger_alert(ToneSource(800.0 + k), world.now, signing_key=world.authority, zones=["D1"],
                                   alert_id=f"cycle-{k}", ttl_s=1.5, text=f"Thử {k}")
    world.run_for(0.5)
    if k % 2:
        world.core.cancel_alert(bid, world.now, signing_key=world.authority)
    world.run_for(1.5)
    world.core.events()


def test_the_core_holds_no_more_after_two_hundred_alerts_than_after_one_hundred() -> None:
    """Sessions rekey every two minutes and keep the previous one a minute more, so what the core holds moves
    with them: the largest of the samples over the second 200 s (100 alerts) against that over the first, which
    both span a rekey."""
    world = World()
    devices = [world.device(zone) for zone in ("C11", "C12", "H111", "D2")] + [world.device("D1", kind="board")]
    assert world.run_until(lambda: world.online(*devices), 10.0)
    world.core.start_broadcast(ToneSource(440.0), ["C12"], world.now, name="chương trình")
    k = 0
    windows: list[list[int]] = [[], []]
    for window in windows:
        for _ in range(20):
            for _ in range(5):
                alert_cycle(world, k)
                k += 1
            window.append(reachable_bytes(world.core))
    in_d1 = [d for d in devices if d.zone_path[:2] == ("P", "D1")]
    assert len(in_d1) == 4
    assert all(len(d.alerts) == k for d in in_d1)
    first, second = max(windows[0]), max(windows[1])
    # a bounded amount per device may differ (how many of its sessions are alive at a sample), none per alert: a
    # table that kept one small entry per alert and device would add about 100 * 5 * 2 * 60 bytes
    assert second - first <= SESSIONS_PER_DEVICE_BYTES * len(devices), (first, second)
