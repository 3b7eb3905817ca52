"""The reference e-board against the real streamer over loopback UDP: a `board` item and a signed alert with text
reach the board, and the PNG it writes is, pixel for pixel, what `loa board render` draws offline for the same
content; after the alert is cancelled the item is back."""

from __future__ import annotations

import random
import time
from pathlib import Path

import anyio
import pytest
from _site import Site, wait_for
from click.testing import CliRunner
from PIL import Image

from loa.devices.board import BoardCore, BoardOutput, board, run_board
from loa.devices.content import MemoryStore
from loa.devices.render import Renderer, Screen
from loa.devices.runner import DeviceRunner
from loa.protocol.control import Board
from loa.protocol.noise import x25519_public
from loa.streamer.sources import ToneSource

pytestmark = pytest.mark.e2e
SIZE = "480x270"
ITEM_TEXT = "Họp dân thôn Đông Xá lúc 19 giờ tại nhà văn hoá; mang theo sổ hộ khẩu."
ALERT_TEXT = "Lũ quét ở suối Nậm Ệt: người dân rời khỏi khu vực ven suối ngay."


def _offline(tmp_path: Path, name: str, *args: str) -> bytes:
    """The pixels `loa board render` draws for the same content."""
    out = tmp_path / f"{name}.png"
    result = CliRunner().invoke(board, ["render", "--size", SIZE, "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        return image.convert("RGB").tobytes()


def _shown(path: Path) -> bytes | None:
    try:
        with Image.open(path) as image:
            return image.convert("RGB").tobytes()
    except OSError:
        return None


@pytest.mark.anyio
async def test_the_board_png_follows_items_and_alerts(anyio_backend: str, tmp_path: Path) -> None:
    site = Site(tmp_path, seed=31)
    item_pixels = _offline(tmp_path, "item", "--text", ITEM_TEXT, "--cls", "1", "--lvl", "2")
    alert_pixels = _offline(tmp_path, "alert", "--alert", "--text", ALERT_TEXT, "--cls", "2", "--lvl", "2")
    blank_pixels = Renderer((480, 270)).render(Screen()).tobytes()
    out = tmp_path / "board.png"
    with anyio.fail_after(40):
        async with anyio.create_task_group() as tg:
            await site.start_server(tg)
            private = site.rng.randbytes(32)
            public = x25519_public(private)
            site.core.add_device(public, "A", site.service.now(), name="board", kind="board")
            site.service.changed()
            core = BoardCore(static_private=private, server_public=site.core.public_key,
                             authority_keys=[site.authority_public], server_address=site.address,
                             store=MemoryStore(), rng=random.Random(5), timestamp_source=lambda _now: time.time_ns())
            runner = DeviceRunner(core, site.address, bind_host="127.0.0.1")
            output = BoardOutput(core, Renderer((480, 270)), out)
            output.write_now()
            assert _shown(out) == blank_pixels
            tg.start_soon(run_board, runner, output)
            await wait_for(lambda: core.statistics().clock_ready and bool(core.settings.zones), 10,
                           "the board's session, config and clock")
            status = site.core.device_status(public)
            assert (status.kind, status.caps, status.model) == ("board", ("text", "image"), "loa reference e-board")

            site.core.send_command(public, Board(item=1, cls=1, lvl=2, text=ITEM_TEXT), site.service.now())
            site.service.changed()
            await wait_for(lambda: _shown(out) == item_pixels, 10, "the item on the PNG")

            bid = site.service.trigger_alert(ToneSource(880.0, seconds=30.0), signing_key=site.authority,
                                             zones=["A"], text=ALERT_TEXT, alert_id="lu-quet-1", ttl_s=60)
            await wait_for(lambda: _shown(out) == alert_pixels, 10, "the alert on the PNG")
            assert core.screen.key == bid

            site.service.cancel_alert(bid, signing_key=site.authority)
            await wait_for(lambda: _shown(out) == item_pixels, 10, "the item again after the cancel")
            await wait_for(lambda: output.writes == 4, 5, "the fourth write's count")  # blank, item, alert, item
            assert output.errors == 0
            site.close()
            await site.stop_server()
            tg.cancel_scope.cancel()
    assert core.statistics().alerts_accepted == 1
    assert core.arbiter.current is None  # shown, never played
    assert sorted(p.name for p in tmp_path.glob("*.tmp")) == []
