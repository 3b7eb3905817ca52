"""The core's memory over many alerts, on the virtual clock: what the core holds over its second hundred alerts is
no more than over its first (the soak's memory verdict, without a noisy machine in between), also for a device
away all the while, whose messages wait for it; and what such a device gets when it is back."""

from __future__ import annotations

import gc
import sys
import types

from hypothesis import given, settings
from hypothesis import strategies as st
from streamer_kit import KitDevice, World

from loa.protocol.control import Amp, Join, Leave, Rotate, SignedAlert, SignedAlertCancel, Volume
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


def test_a_device_away_through_a_hundred_alerts_costs_the_core_no_more_than_through_fifty() -> None:
    """What waits for a device without a session is taken back as it becomes useless (PROTOCOL.md 4.3.2): an
    alert's messages when it ends, an ``amp`` when the next one replaces it. Without that, each alert left about
    five messages queued for it (ten more kilobytes for every fifty alerts, and the queue's limit in the end)."""
    world = World()
    stayer, away = world.device("C11"), world.device("C12")
    assert world.run_until(lambda: world.online(stayer, away), 10.0)
    world.go_away(away)
    channel = world.core.sessions.conn.channel(away.public_key)
    windows: list[int] = []
    waiting: list[int] = []
    k = 0
    for _ in range(2):
        for _ in range(50):
            alert_cycle(world, k)
            k += 1
        windows.append(reachable_bytes(world.core))
        stats = channel.statistics()
        waiting.append(stats.in_flight + stats.queued)
    assert len(stayer.alerts) == k
    # what it had not acknowledged when it went (config and volume), and the last amp
    assert waiting[0] == waiting[1] <= 3, waiting
    assert windows[1] - windows[0] <= SESSIONS_PER_DEVICE_BYTES, windows
    world.come_back(away)
    assert away.alerts == []
    assert away.of_type(SignedAlertCancel) == []


_OPS = st.lists(st.one_of(st.tuples(st.just("alert"), st.booleans()), st.tuples(st.just("live"), st.booleans()),
                          st.tuples(st.just("volume"), st.integers(0, 100))), min_size=1, max_size=4)


@settings(max_examples=6, deadline=None)
@given(holds=st.integers(0, 2), while_away=_OPS)
def test_a_device_back_gets_what_still_holds_and_nothing_of_what_began_and_ended_while_it_was_away(
        holds: int, while_away: list[tuple[str, object]]) -> None:
    """Broadcasts that began and ended while the device was away (alerts cancelled or expired, live streams
    stopped) reach it not at all; of the volumes set meanwhile, it gets the last; a live
    stream begun while it was away and still running reaches it. Broadcasts it may hold (begun before it
    left) still get their ``leave``."""
    world = World()
    stayer, away = world.device("C11"), world.device("C12")
    assert world.run_until(lambda: world.online(stayer, away), 10.0)
    held = [world.core.start_broadcast(ToneSource(500.0 + k), ["C12"], world.now, name=f"trước {k}")
            for k in range(holds)]  # broadcasts it holds when it goes
    world.run_for(1.0)
    world.go_away(away)
    running = world.core.start_broadcast(ToneSource(330.0), ["D1"], world.now, name="đang phát")
    volumes: list[int] = []
    born: list[int] = []
    for k, (op, arg) in enumerate(while_away):
        if op == "alert":
            bid = world.core.trigger_alert(ToneSource(800.0 + k), world.now, signing_key=world.authority,
                                           zones=["D1"], alert_id=f"vắng-{k}", ttl_s=1.5, text=f"Thử {k}")
            world.run_for(0.5)
            if arg:
                world.core.cancel_alert(bid, world.now, signing_key=world.authority)
            world.run_for(1.5)
        elif op == "live":
            bid = world.core.start_broadcast(ToneSource(600.0 + k), ["C12"], world.now, name=f"vắng {k}")
            world.run_for(1.0 if arg else 0.3)
            world.core.stop_broadcast(bid, world.now)
            world.run_for(0.2)
        else:
            assert isinstance(arg, int)
            world.core.set_volume([away.public_key, stayer.public_key], arg, world.now)
            volumes.append(arg)
            world.run_for(0.2)
        if op != "volume":
            born.append(bid)
    for bid in held:
        world.core.stop_broadcast(bid, world.now)
    world.run_for(0.5)
    world.core.events()
    before = world.come_back(away)
    after = away.messages[before:]
    of_bid = [m for m in after if isinstance(m, Join | Leave | Rotate) and m.bid in born]
    assert of_bid == []
    assert [m for m in after if isinstance(m, SignedAlert | SignedAlertCancel)] == []
    assert [m.level for m in after if isinstance(m, Volume)] == volumes[-1:]
    assert len([m for m in after if isinstance(m, Amp)]) <= 1
    assert sorted(m.bid for m in after if isinstance(m, Leave)) == sorted(held)
    assert running in away.joined
    assert away.packets(running)[-1].at > world.now - 1.0
