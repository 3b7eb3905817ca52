"""The reference e-board's logic (devices/board.py): what is on screen, by rank, rotation, expiry and alerts; first
on the display alone under a virtual clock, then the whole board device on the fake network."""

from __future__ import annotations

import hashlib
import io
import itertools
import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from serverdriver import NS, SERVER, World

from loa.devices.board import BOARD_CAPS, BoardCore, BoardDisplay
from loa.devices.content import MemoryStore
from loa.devices.render import Screen
from loa.devices.simclock import SimulatedClock
from loa.devices.simnode import SimulatedDevice
from loa.protocol.alert import Alert, AlertCancel, key_id, sign_alert, sign_cancel
from loa.protocol.control import Board, BoardClear, ConfigValues, Hello, Prefetch, SignedAlert, SignedAlertCancel

T0 = 1_000 * NS  # server time of the display tests


def _alert(bid: int, *, cls: int = 2, lvl: int = 2, expires: int = T0 + 600 * NS, text: str | None = "Sơ tán",
           status: str = "actual") -> Alert:
    return Alert(id=f"a{bid}", kid=b"k" * 8, status=status, cls=cls, lvl=lvl, zones=("760",), issued=T0,
                 expires=expires, bid=bid, text=text)


# -- the display alone -------------------------------------------------------------------------------------------


def test_the_item_of_highest_rank_is_shown_and_clear_reveals_the_next() -> None:
    d = BoardDisplay(rotate_s=10)
    items = {1: Board(item=1, cls=0, lvl=3, text="thôn"), 2: Board(item=2, cls=1, lvl=0, text="xã ưu tiên"),
             3: Board(item=3, cls=0, lvl=0, text="thường")}
    assert d.update(items, {}, 0.0, T0).key == 2  # class before level: priority/commune beats normal/national
    del items[2]
    assert d.update(items, {}, 1.0, T0).key == 1
    del items[1]
    shown = d.update(items, {}, 2.0, T0)
    assert (shown.kind, shown.key, shown.text) == ("item", 3, "thường")
    del items[3]
    assert d.update(items, {}, 3.0, T0) == Screen()
    assert d.next_change() is None


def test_items_of_equal_rank_rotate_every_period_in_item_order() -> None:
    d = BoardDisplay(rotate_s=10)
    items = {n: Board(item=n, cls=0, lvl=1, text=str(n)) for n in (7, 3, 5)}
    items[9] = Board(item=9, cls=0, lvl=0, text="lower rank, never shown")
    shown = []
    now = 0.0
    for _ in range(7):
        shown.append(d.update(items, {}, now, T0).key)
        change = d.next_change()
        assert change is not None
        assert change > now
        now = change
    assert shown == [3, 5, 7, 3, 5, 7, 3]
    assert d.update(items, {}, now + 35.0, T0).key == 3 + 2  # late by three periods and a half: three steps on


def test_a_second_item_of_equal_rank_leaves_the_first_a_full_period() -> None:
    d = BoardDisplay(rotate_s=10)
    items = {1: Board(item=1, cls=0, lvl=0, text="a")}
    assert d.update(items, {}, 0.0, T0).key == 1
    items[2] = Board(item=2, cls=0, lvl=0, text="b")
    assert d.update(items, {}, 100.0, T0).key == 1
    assert d.next_change() == 110.0
    assert d.update(items, {}, 110.0, T0).key == 2


def test_until_is_server_time_and_unknown_server_time_hides_items_with_an_end() -> None:
    d = BoardDisplay()
    items = {1: Board(item=1, cls=1, lvl=0, text="until", until=T0 + 5 * NS),
             2: Board(item=2, cls=0, lvl=0, text="for ever")}
    assert d.update(items, {}, 0.0, T0).key == 1
    assert d.update(items, {}, 0.0, T0 + 5 * NS - 1).key == 1
    assert d.update(items, {}, 0.0, T0 + 5 * NS).key == 2  # `until` has come: no longer shown
    assert d.update(items, {}, 0.0, None).key == 2  # the device does not know server time yet


def test_an_alert_is_shown_above_every_item_until_it_expires() -> None:
    d = BoardDisplay()
    items = {1: Board(item=1, cls=2, lvl=3, text="emergency item, national")}
    alerts = {40: _alert(40, cls=0, lvl=0, expires=T0 + 10 * NS, text="Lũ")}
    shown = d.update(items, alerts, 0.0, T0)
    assert (shown.kind, shown.key, shown.text) == ("alert", 40, "Lũ")
    assert d.update(items, alerts, 0.0, T0 + 10 * NS).key == 1
    two = {40: _alert(40, lvl=1), 41: _alert(41, lvl=2), 42: _alert(42, lvl=2)}
    assert d.update(items, two, 0.0, T0).key == 41
    assert d.update(items, two, 30.0, T0).key == 42  # equal alerts rotate too


# a random sequence of board / board_clear / time steps; the invariant after each
ops = st.lists(st.one_of(
    st.tuples(st.just("board"), st.integers(0, 6), st.integers(0, 2), st.integers(0, 3),
              st.one_of(st.none(), st.integers(-5, 60))),
    st.tuples(st.just("clear"), st.integers(0, 6)),
    st.tuples(st.just("wait"), st.floats(0, 30)),
    st.tuples(st.just("alert"), st.integers(0, 2), st.integers(0, 3), st.integers(1, 60)),
    st.tuples(st.just("cancel"),),
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(ops=ops, rotate=st.floats(0.5, 20))
def test_the_shown_item_is_always_one_of_highest_rank_present_and_unexpired(ops: list[tuple], rotate: float) -> None:
    d = BoardDisplay(rotate_s=rotate)
    items: dict[int, Board] = {}
    alerts: dict[int, Alert] = {}
    now = 0.0
    for op in ops:
        if op[0] == "board":
            _, item, cls, lvl, until = op
            items[item] = Board(item=item, cls=cls, lvl=lvl, text=f"{item}",
                                until=None if until is None else T0 + round((now + until) * NS))
        elif op[0] == "clear":
            items.pop(op[1], None)
        elif op[0] == "wait":
            change = d.next_change()
            now += op[1]
            if change is not None and change <= now:  # a device is woken at every change; catch up as it would
                while (change := d.next_change()) is not None and change <= now:
                    d.update(items, alerts, change, T0 + round(change * NS))
        elif op[0] == "alert":
            bid = 100 + len(alerts)
            alerts[bid] = _alert(bid, cls=op[1], lvl=op[2], expires=T0 + round((now + op[3]) * NS))
        else:
            alerts.clear()
        server_now = T0 + round(now * NS)
        shown = d.update(items, alerts, now, server_now)
        live_alerts = {b: a for b, a in alerts.items() if a.expires > server_now}
        live_items = {n: b for n, b in items.items() if b.until is None or b.until > server_now}
        pool = ({b: (a.cls, a.lvl) for b, a in live_alerts.items()} if live_alerts
                else {n: (b.cls, b.lvl) for n, b in live_items.items()})
        if not pool:
            assert shown == Screen()
            continue
        assert shown.kind == ("alert" if live_alerts else "item")
        assert shown.key in pool
        assert (shown.cls, shown.lvl) == max(pool.values())
        group = frozenset(k for k, rank in pool.items() if rank == max(pool.values()))
        assert (d.next_change() is not None) == (len(group) > 1)


def test_rotate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        BoardDisplay(rotate_s=0)


# -- the board device on the fake network ------------------------------------------------------------------------


@dataclass
class Rig:
    world: World
    node: SimulatedDevice
    core: BoardCore
    pub: bytes
    screens: list[tuple[float, Screen]]

    def send(self, message: object) -> None:
        self.world.server.send(self.pub, message)  # type: ignore[arg-type]

    def run(self, seconds: float) -> None:
        self.world.run(seconds)

    def signed(self, bid: int, text: str | None, *, lifetime: float = 600.0, status: str = "actual",
               cls: int = 2, lvl: int = 2, alert_id: str | None = None) -> SignedAlert:
        now = self.world.server.server_time()
        alert = Alert(id=alert_id or f"alert-{bid}", kid=key_id(self.world.authority.public_key()), status=status,
                      cls=cls, lvl=lvl, zones=("760",), issued=now, expires=now + round(lifetime * NS), bid=bid,
                      text=text)
        body, sig = sign_alert(alert, self.world.authority)
        return SignedAlert(body=body, sig=sig)

    def cancel(self, alert_id: str) -> SignedAlertCancel:
        cancel = AlertCancel(kid=key_id(self.world.authority.public_key()), cancel=alert_id,
                             issued=self.world.server.server_time())
        body, sig = sign_cancel(cancel, self.world.authority)
        return SignedAlertCancel(body=body, sig=sig)


def _rig(seed: int, *, rotate_s: float = 10.0, exercise: bool = False) -> Rig:
    world = World(seed, config=ConfigValues(zones=("79", "760", "26734"), telemetry_s=10, exercise=exercise))
    clock = SimulatedClock(20.0, -4.0)
    core = BoardCore(static_private=world.rng.randbytes(32), server_public=world.server_public,
                     authority_keys=[world.authority_public], server_address=SERVER, store=MemoryStore(),
                     random_bytes=world.rng.randbytes, rng=random.Random(world.rng.random()), rotate_s=rotate_s)
    screens: list[tuple[float, Screen]] = []
    core.on_screen = lambda screen: screens.append((world.net.now, screen))
    node = SimulatedDevice(core, clock, SERVER)
    world.net.attach(("198.51.100.9", 40000), node)
    node.start(world.net.now)
    world.run(10.0)  # connected, clock estimate ready
    return Rig(world, node, core, core.public_key, screens)


def test_a_board_says_it_is_a_board() -> None:
    rig = _rig(1)
    hello = rig.world.server.messages_of(Hello, rig.pub)
    assert [(h.kind, h.caps) for h in hello] == [("board", BOARD_CAPS)]
    assert BOARD_CAPS == ("text", "image")


def test_items_are_shown_by_rank_and_cleared() -> None:
    rig = _rig(2)
    assert rig.core.screen == Screen()
    rig.send(Board(item=1, cls=0, lvl=0, text="Họp thôn tối nay"))
    rig.send(Board(item=2, cls=1, lvl=1, text="Lịch cắt điện"))
    rig.run(1.0)
    assert (rig.core.screen.key, rig.core.screen.text) == (2, "Lịch cắt điện")
    rig.send(BoardClear(item=2))
    rig.run(1.0)
    assert rig.core.screen.key == 1
    rig.send(BoardClear(item=1))
    rig.run(1.0)
    assert rig.core.screen == Screen()
    keys = [s.key for _, s in rig.screens]
    assert keys[-3:] == [2, 1, None]  # (item 1 may show alone for the moment before item 2 arrives)
    assert all(a[1] != b[1] for a, b in itertools.pairwise(rig.screens))  # on changes only


def test_equal_items_rotate_on_the_board_s_own_timer() -> None:
    rig = _rig(3, rotate_s=5.0)
    for n in (1, 2, 3):
        rig.send(Board(item=n, cls=0, lvl=2, text=f"mục {n}"))
    rig.run(0.5)
    start = len(rig.screens)
    rig.run(31.0)  # no message in this time: only the board's timer changes the screen
    changes = rig.screens[start:]
    assert [s.key for _, s in changes] == [2, 3, 1, 2, 3, 1]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(changes)]
    assert all(abs(gap - 5.0 * (1 - 20e-6)) < 0.01 for gap in gaps)  # 5 s of the board's (fast) clock


def test_until_expires_by_server_time_and_the_item_is_forgotten() -> None:
    rig = _rig(4)
    rig.send(Board(item=1, cls=0, lvl=0, text="always"))
    rig.send(Board(item=2, cls=0, lvl=3, text="for 5 s", until=rig.world.server.server_time() + 5 * NS))
    rig.run(1.0)
    assert rig.core.screen.key == 2
    rig.run(3.5)
    assert rig.core.screen.key == 2
    rig.run(1.0)
    assert rig.core.screen.key == 1
    assert sorted(rig.core.settings.boards) == [1]
    switched = [at for at, s in rig.screens if s.key == 1]
    assert len(switched) == 1
    # the switch happened at `until` on the server's clock, within the clock estimate's error
    assert abs(switched[0] - (rig.screens[0][0] - 1.0 + 5.0)) < 1.1


def test_an_alert_s_text_is_shown_above_everything_until_cancelled() -> None:
    rig = _rig(5)
    rig.send(Board(item=1, cls=2, lvl=3, text="mục khẩn cấp"))
    rig.run(1.0)
    rig.send(rig.signed(500, "Bão số 3: không ra khỏi nhà", alert_id="bao-3"))
    rig.run(1.0)
    shown = rig.core.screen
    assert (shown.kind, shown.key, shown.text, shown.cls, shown.lvl) == ("alert", 500, "Bão số 3: không ra khỏi nhà",
                                                                          2, 2)
    assert rig.core.arbiter.current is None  # a board shows alerts; it does not play them
    assert rig.core.faults(0.0) == ()
    rig.send(rig.cancel("bao-3"))
    rig.run(1.0)
    assert rig.core.screen.key == 1
    rig.send(rig.signed(500, "replayed", alert_id="bao-3"))  # a cancelled alert does not come back
    rig.run(1.0)
    assert rig.core.screen.key == 1
    assert rig.core.statistics().alerts_refused["ReplayError"] == 1


def test_an_alert_ends_at_its_expiry() -> None:
    rig = _rig(6)
    rig.send(Board(item=1, cls=0, lvl=0, text="thường"))
    rig.send(rig.signed(600, "Triều cường", lifetime=8.0))
    rig.run(1.0)
    assert rig.core.screen.kind == "alert"
    rig.run(6.5)
    assert rig.core.screen.kind == "alert"
    rig.run(1.0)
    assert rig.core.screen.key == 1


def test_refused_and_unplayable_alerts_are_not_shown() -> None:
    rig = _rig(7)
    genuine = rig.signed(700, "x")
    rig.send(SignedAlert(body=genuine.body, sig=bytes(64)))
    rig.send(rig.signed(701, "exercise", status="exercise"))  # exercise: false on this board
    rig.run(1.0)
    assert rig.core.screen == Screen()
    assert rig.core.statistics().alerts_refused == {"SignatureError": 1}
    assert rig.core.statistics().alerts_accepted == 1


def test_an_exercise_is_shown_where_exercises_are_played() -> None:
    rig = _rig(8, exercise=True)
    rig.send(rig.signed(800, "Diễn tập phòng cháy", status="exercise"))
    rig.run(1.0)
    assert (rig.core.screen.kind, rig.core.screen.status) == ("alert", "exercise")


def _png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 32), (0, 128, 255)).save(out, "PNG")
    return out.getvalue()


def test_an_image_item_waits_for_its_content() -> None:
    rig = _rig(9)
    blob = _png_bytes()
    cid = hashlib.sha256(blob).digest()
    rig.send(Board(item=1, cls=0, lvl=0, cid=cid))
    rig.run(1.0)
    assert (rig.core.screen.cid, rig.core.screen.image) == (cid, "missing")
    assert rig.core.image_bytes(rig.core.screen) is None
    rig.world.server.content[cid] = blob
    rig.send(Prefetch(cid=cid, size=len(blob), name="ban-do.png"))
    rig.run(2.0)
    assert rig.core.screen.image == "ready"
    assert rig.core.image_bytes(rig.core.screen) == blob


def test_items_persist_across_a_reboot() -> None:
    rig = _rig(10)
    rig.send(Board(item=4, cls=1, lvl=2, text="còn sau khởi động lại"))
    rig.run(1.0)
    rig.core.reboot(rig.node.clock.local(rig.world.net.now))
    assert rig.core.screen.key == 4  # shown at once from the stored settings, before any session
    rig.run(10.0)
    assert rig.core.screen.key == 4
    assert len(rig.world.server.messages_of(Hello, rig.pub)) == 2  # a second hello: it really restarted
