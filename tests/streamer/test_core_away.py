"""What waits for a device without a session, for boards and settings (PROTOCOL.md 4.3.2), on the virtual clock.

A device away through any number of board items, zone moves, settings and reboots costs the core a queue that
does not grow with them; when it is back it ends up where a device never away is: showing the board items of its
zone still up, with every ``config`` value last set, the last volume and the last reboot."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from streamer_kit import KitDevice, World

from loa.protocol.control import Board, BoardClear, Config, ConfigValues, Reboot, Volume

_NS = 1_000_000_000


def waiting(world: World, device: KitDevice) -> int:
    """Reliable messages the core holds for ``device``: queued, or sent and not acknowledged."""
    stats = world.core.sessions.conn.channel(device.public_key).statistics()
    return stats.in_flight + stats.queued


def shown(device: KitDevice, now_ns: int) -> dict[int, str | None]:
    """What a board shows at server time ``now_ns`` after every ``board`` and ``board_clear`` it received, the
    highest id of each item winning (PROTOCOL.md 4.4; messages may arrive out of order): item -> text."""
    items: dict[int, Board] = {}
    for message in _by_id(m for m in device.messages if isinstance(m, Board | BoardClear)):
        if isinstance(message, Board):
            items[message.item] = message
        elif isinstance(message, BoardClear):
            items.pop(message.item, None)
    return {item: b.text for item, b in items.items() if b.until is None or b.until > now_ns}


def config_of(device: KitDevice) -> dict[str, Any]:
    """Every ``config`` value the device holds: each config it received applied in the order of ids."""
    values: dict[str, Any] = {}
    for message in _by_id(device.of_type(Config)):
        values.update((k, v) for k, v in _fields(message.values).items() if v is not None)
    return values


def _by_id(messages: Iterable[Any]) -> list[Any]:
    return sorted(messages, key=lambda m: m.id)


def _fields(values: ConfigValues) -> dict[str, Any]:
    return {name: getattr(values, name) for name in ConfigValues.__dataclass_fields__}


def one_device_away() -> tuple[World, KitDevice]:
    """A speaker of C12 that had its session and its state, then lost its session."""
    world = World()
    away = world.device("C12")
    assert world.run_until(lambda: world.online(away), 10.0)
    world.go_away(away)
    return world, away


def test_a_board_away_through_a_hundred_items_costs_the_core_no_more_than_through_fifty() -> None:
    """Items shown for two seconds, a third of them replaced and a third cleared early: the board away gets none
    of them, and what waits for it stays what it had not acknowledged when it went. Without taking back an
    expired item's ``board`` (and a cleared one's ``board_clear``), each item left one message waiting."""
    world = World()
    stayer, away = world.device("C11", kind="board"), world.device("C12", kind="board")
    assert world.run_until(lambda: world.online(stayer, away), 10.0)
    world.go_away(away)
    start = waiting(world, away)
    counts: list[int] = []
    item = 100
    for _ in range(2):
        for k in range(50):
            item += 1
            until = world.core.server_time(world.now) + 2 * _NS
            world.core.show_board(item, ["D1"], world.now, text=f"Tin {item}", until_ns=until)
            world.run_for(0.5)
            if k % 3 == 0:
                world.core.show_board(item, ["D1"], world.now, text=f"Tin {item} (sửa)", until_ns=until)
            elif k % 3 == 1:
                world.core.clear_board(item, world.now)
            world.run_for(2.0)
        counts.append(waiting(world, away))
    assert counts == [start, start], (start, counts)
    assert {m.item for m in stayer.of_type(Board)} == set(range(101, item + 1))
    before = world.come_back(away)
    assert [m for m in away.messages[before:] if isinstance(m, Board | BoardClear)] == []
    assert shown(away, world.core.server_time(world.now)) == shown(stayer, world.core.server_time(world.now)) == {}


def test_a_device_away_through_a_hundred_settings_rounds_costs_the_core_no_more_than_through_fifty() -> None:
    """Each round moves the device, sets its volume and a config value, and reboots it; every tenth sets the whole
    config. What waits does not grow, and what the device holds when back is what was set last."""
    world, away = one_device_away()
    key = away.public_key
    expected = config_of(away)
    counts: list[int] = []
    k = 0
    for _ in range(2):
        for _ in range(50):
            k += 1
            zone = ("C11", "C12", "H111", "C21")[k % 4]
            world.core.update_device(key, world.now, zone=zone)
            world.core.set_volume([key], k % 101, world.now)
            world.core.send_command(key, Config(values=ConfigValues(watchdog_ms=1000 + k)), world.now)
            expected |= {"zones": world.zones.path(zone), "watchdog_ms": 1000 + k}
            if k % 10 == 0:
                full = {"telemetry_s": 30 + k, "delay_ms": k, "watchdog_ms": 2000 + k, "exercise": k % 20 == 0,
                        "zones": world.zones.path(zone)}
                world.core.send_command(key, Config(values=ConfigValues(**full)), world.now)
                expected |= full
            world.core.send_command(key, Reboot(delay_ms=k), world.now)
            world.run_for(0.5)
        counts.append(waiting(world, away))
    assert counts[0] == counts[1], counts
    before = world.come_back(away)
    after = away.messages[before:]
    assert [m.delay_ms for m in after if isinstance(m, Reboot)] == [k]
    assert [m.level for m in after if isinstance(m, Volume)] == [k % 101]
    assert len([m for m in after if isinstance(m, Config)]) == 1  # the last round's whole config covers the rest
    assert config_of(away) == expected
    assert config_of(away)["zones"] == world.zones.path("C11")


_ITEMS = st.integers(1, 3)
_BOARD_OPS = st.lists(st.one_of(
    st.tuples(st.just("show"), _ITEMS, st.sampled_from(["C12", "C11", "D1"]), st.sampled_from([None, 1.0, 4.0])),
    st.tuples(st.just("clear"), _ITEMS),
    st.tuples(st.just("move"), st.sampled_from(["C11", "C12"])),
    st.tuples(st.just("wait"), st.sampled_from([0.5, 2.0])),
), max_size=6)


@settings(max_examples=40, deadline=None)
@given(before=_BOARD_OPS, while_away=_BOARD_OPS)
# the clear of an item it shows, then the item shown anew and expired: the clear must still reach it
@example(before=[("show", 1, "C12", None)], while_away=[("clear", 1), ("show", 1, "C12", 1.0), ("wait", 2.0)])
# an item it shows with no end, shown again to expire: the expired version must reach it to end the first
@example(before=[("show", 1, "C12", None)], while_away=[("show", 1, "C12", 1.0), ("wait", 2.0)])
# an item it shows, shown again and cleared: it showed the item before it left, so the clear reaches it
@example(before=[("show", 2, "D1", None)], while_away=[("show", 2, "C12", 4.0), ("clear", 2)])
# an item shown only while it was away, its zones then left: nothing of it reaches it
@example(before=[], while_away=[("show", 3, "C12", None), ("move", "C11"), ("wait", 0.5)])
def test_a_board_back_shows_what_a_board_never_away_shows(before: list[tuple[Any, ...]],
                                                           while_away: list[tuple[Any, ...]]) -> None:
    """Items shown, shown again (other text, zones or end), cleared and expired, and the board moved in and out
    of their zones, before and while it is away: when it is back it shows the items of its zone still up, as a
    board never away does, and as the test's own account of the items says."""
    world = World()
    stayer, away = world.device("C12", kind="board"), world.device("C12", kind="board")
    assert world.run_until(lambda: world.online(stayer, away), 10.0)
    model: dict[int, tuple[set[str], str, int | None]] = {}  # item -> zones covered, text, until

    def run(ops: list[tuple[Any, ...]], phase: str) -> None:
        for k, op in enumerate(ops):
            if op[0] == "show":
                _, item, zone, life = op
                until = None if life is None else world.core.server_time(world.now) + round(life * _NS)
                text = f"{phase} {k}"
                world.core.show_board(item, [zone], world.now, text=text, until_ns=until)
                model[item] = (world.zones.covering([zone]), text, until)
            elif op[0] == "clear" and op[1] in world.core.boards:
                world.core.clear_board(op[1], world.now)
                del model[op[1]]
            elif op[0] == "move":
                world.core.update_device(away.public_key, world.now, zone=op[1])
            elif op[0] == "wait":
                world.run_for(op[1])
            world.run_for(0.2)

    run(before, "trước")
    world.go_away(away)
    run(while_away, "vắng")
    world.core.update_device(away.public_key, world.now, zone="C12")
    world.come_back(away)
    now_ns = world.core.server_time(world.now)
    expected = {item: text for item, (covering, text, until) in model.items()
                if "C12" in covering and (until is None or until > now_ns)}
    assert shown(stayer, now_ns) == expected
    assert shown(away, now_ns) == expected


_KEYS = ("watchdog_ms", "delay_ms", "telemetry_s", "exercise")
_SETTING_OPS = st.lists(st.one_of(
    st.tuples(st.just("move"), st.sampled_from(["C11", "C12", "H111", "C21"])),
    st.tuples(st.just("config"), st.sets(st.sampled_from(_KEYS), min_size=1)),
    st.tuples(st.just("full"), st.just(None)),
    st.tuples(st.just("reboot"), st.integers(0, 5000)),
    st.tuples(st.just("volume"), st.integers(0, 100)),
), min_size=1, max_size=8)


@settings(max_examples=40, deadline=None)
@given(while_away=_SETTING_OPS)
# a config carrying fewer keys than the one before it does not replace it
@example(while_away=[("config", {"watchdog_ms", "delay_ms"}), ("config", {"watchdog_ms"})])
@example(while_away=[("move", "C11"), ("config", {"exercise"}), ("full", None), ("move", "C21"), ("reboot", 7),
                     ("reboot", 9)])
def test_a_device_back_holds_every_setting_last_made(while_away: list[tuple[Any, ...]]) -> None:
    """Zone moves, partial and whole configs, reboots and volumes while away: when it is back the device holds
    every config value as last set (applying what it got in order), its zone path, the last volume, and gets
    the last reboot only. (Configs may arrive out of order; a device applies each key's highest id.)"""
    world, away = one_device_away()
    key = away.public_key
    expected = config_of(away)
    reboots: list[int] = []
    volumes: list[int] = []
    for k, (op, arg) in enumerate(while_away):
        values: dict[str, Any] = {}
        if op == "move":
            world.core.update_device(key, world.now, zone=arg)
            values = {"zones": world.zones.path(arg)}
        elif op in {"config", "full"}:
            every = {"watchdog_ms": 1000 + k, "delay_ms": k, "telemetry_s": 30 + k, "exercise": k % 2 == 0}
            values = every | {"zones": world.zones.path(world.registry.entry(key).zone)} if op == "full" else {
                name: every[name] for name in arg}
            world.core.send_command(key, Config(values=ConfigValues(**values)), world.now)
        elif op == "reboot":
            world.core.send_command(key, Reboot(delay_ms=arg), world.now)
            reboots.append(arg)
        else:
            world.core.set_volume([key], arg, world.now)
            volumes.append(arg)
        expected.update(values)
        world.run_for(0.3)
    before = world.come_back(away)
    after = away.messages[before:]
    assert config_of(away) == expected
    assert config_of(away)["zones"] == world.zones.path(world.registry.entry(key).zone)
    assert [m.delay_ms for m in after if isinstance(m, Reboot)] == reboots[-1:]
    assert [m.level for m in after if isinstance(m, Volume)] == volumes[-1:]
