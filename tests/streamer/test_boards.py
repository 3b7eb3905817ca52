"""E-board items from the streamer: show, replace, clear, boards joining later or moving, images prefetched first,
and items forgotten at their `until` (PROTOCOL.md sections 4.4, 4.9)."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import pytest
from streamer_kit import EPOCH_NS, World

from loa.protocol.control import Board, BoardClear, Prefetch
from loa.streamer.content import ContentError, ContentStore
from loa.streamer.zones import ZoneError


def _png(path: Path) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"\x00\xff\x00\x00"  # one red pixel
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def _boards(device: object) -> list[Board | BoardClear]:
    return [m for m in device.messages if isinstance(m, Board | BoardClear)]  # type: ignore[attr-defined]


def test_items_reach_boards_of_the_zones_only_and_boards_that_start_later() -> None:
    world = World()
    inside, below, outside = world.device("C11", kind="board"), world.device("H111", kind="board"), \
        world.device("C21", kind="board")
    speaker = world.device("C11")
    late = world.device("C11", kind="board", start=False)
    assert world.run_until(lambda: world.online(inside, below, outside, speaker), 10.0)
    world.core.show_board(7, ["C11"], world.now, cls=1, lvl=2, text="Lịch tiêm phòng: thứ Hai, 8 giờ")
    world.run_for(2.0)
    for board in (inside, below):
        assert _boards(board) == [Board(item=7, cls=1, lvl=2, text="Lịch tiêm phòng: thứ Hai, 8 giờ",
                                        id=_boards(board)[0].id)]
    assert _boards(outside) == []
    assert _boards(speaker) == []  # speakers are not sent board items
    late.start(world.now)
    assert world.run_until(lambda: world.online(late), 10.0)
    world.run_for(1.0)
    assert [m.item for m in _boards(late) if isinstance(m, Board)] == [7]


def test_replacing_moving_and_clearing() -> None:
    world = World()
    a, b = world.device("C11", kind="board"), world.device("C12", kind="board")
    assert world.run_until(lambda: world.online(a, b), 10.0)
    world.core.show_board(1, ["C11", "C12"], world.now, text="một")
    world.run_for(1.0)
    world.core.show_board(1, ["C11"], world.now, text="hai")  # replaced, and narrowed to C11
    world.run_for(1.0)
    assert [getattr(m, "text", None) for m in _boards(a)] == ["một", "hai"]
    assert [type(m) for m in _boards(b)] == [Board, BoardClear]
    world.core.update_device(a.public_key, world.now, zone="C21")  # moved out of the item's zones
    world.core.update_device(b.public_key, world.now, zone="C11")  # moved in
    world.run_for(1.0)
    assert isinstance(_boards(a)[-1], BoardClear)
    assert _boards(b)[-1] == Board(item=1, cls=0, lvl=0, text="hai", id=_boards(b)[-1].id)
    world.core.clear_board(1, world.now)
    world.run_for(1.0)
    assert isinstance(_boards(b)[-1], BoardClear)
    assert world.core.boards.items() == []
    with pytest.raises(KeyError):
        world.core.clear_board(1, world.now)


def test_an_image_is_prefetched_before_the_item(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    world = World(content=store)
    board = world.device("C11", kind="board")
    assert world.run_until(lambda: world.online(board), 10.0)
    image = _png(tmp_path / "bảng.png")
    cid = world.core.publish_image(image)
    assert cid == hashlib.sha256(image.read_bytes()).digest()
    world.core.show_board(3, ["C11"], world.now, cls=2, lvl=1, cid=cid, until_ns=EPOCH_NS + 10**12)
    assert world.run_until(lambda: cid in board.content, 10.0)  # fetched chunk by chunk from the store
    kinds = [type(m) for m in board.messages if isinstance(m, Prefetch | Board)]
    assert kinds[:2] == [Prefetch, Board]
    assert ContentStore(tmp_path / "store").get(cid) is not None  # a later run finds the image
    with pytest.raises(ContentError, match="no stored programme"):
        world.core.schedule_play(cid, ["C11"], EPOCH_NS + 10**12, world.now)  # an image is not a programme


def test_until_forgets_the_item_and_bad_items_are_refused_with_nothing_sent(tmp_path: Path) -> None:
    world = World(content=ContentStore(tmp_path / "store"))
    board = world.device("C11", kind="board")
    assert world.run_until(lambda: world.online(board), 10.0)
    until = world.core.server_time(world.now) + 3_000_000_000
    world.core.show_board(9, ["C11"], world.now, text="ngắn", until_ns=until)
    world.run_for(5.0)
    assert world.core.boards.items() == []
    before = len(board.messages)
    not_image = tmp_path / "x.png"
    not_image.write_bytes(b"GIF89a")
    with pytest.raises(ContentError, match="PNG or JPEG"):
        world.core.publish_image(not_image)
    for kwargs, error in [({"text": None}, ValueError), ({"text": "x" * 513}, ValueError),
                          ({"text": "x", "cls": 4}, ValueError), ({"text": "x", "zones": ["NOPE"]}, ZoneError),
                          ({"text": "x", "zones": []}, ValueError), ({"cid": b"\x00" * 32}, ContentError)]:
        zones = kwargs.pop("zones", ["C11"])
        with pytest.raises(error):
            world.core.show_board(10, zones, world.now, **kwargs)  # type: ignore[arg-type]
    world.run_for(1.0)
    assert len(board.messages) == before
    assert world.core.boards.items() == []
