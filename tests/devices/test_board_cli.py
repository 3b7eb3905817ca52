"""`loa board`: offline rendering equals the renderer's pixels; every user mistake is one clear line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from loa.devices.board import board
from loa.devices.render import Renderer, Screen

SERVER_KEY = bytes(range(32)).hex()


def _invoke(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(board, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output.strip().splitlines()


def _pixels(path: Path) -> bytes:
    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


def test_render_draws_what_the_renderer_draws(tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    text = "Lịch tiếp dân: thứ Năm hằng tuần, từ 7 giờ 30 đến 11 giờ, tại trụ sở Ủy ban."
    code, _ = _invoke("render", "--text", text, "--cls", "1", "--lvl", "3", "--size", "400x300", "--out", str(out))
    assert code == 0
    assert _pixels(out) == Renderer((400, 300)).render(Screen("item", 0, 1, 3, text)).tobytes()
    code, _ = _invoke("render", "--alert", "--text", text, "--size", "400x300", "--out", str(out))
    assert code == 0
    assert _pixels(out) == Renderer((400, 300)).render(Screen("alert", 0, 0, 0, text)).tobytes()


def test_render_an_image_file(tmp_path: Path) -> None:
    picture = tmp_path / "map.jpg"
    Image.new("RGB", (80, 60), (250, 200, 0)).save(picture, "JPEG")
    out = tmp_path / "x.png"
    code, _ = _invoke("render", "--image", str(picture), "--text", "Bản đồ", "--size", "320x180", "--out", str(out))
    assert code == 0
    expected = Renderer((320, 180)).render(Screen("item", 0, text="Bản đồ", cid=b"x" * 32, image="ready"),
                                           picture.read_bytes())
    assert _pixels(out) == expected.tobytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "1280"], "--size: bad size '1280': expected WIDTHxHEIGHT"),
        (["--size", "20x20"], "width and height must be 64-8192"),
        (["--font", "/nonexistent/DejaVuSans.ttf"], "install the Debian package fonts-dejavu-core"),
        (["--out", "/nonexistent-dir/board.png"], "cannot write --out /nonexistent-dir/board.png"),
    ],
)
def test_render_mistakes_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    full = ["render", "--text", "x", "--out", str(tmp_path / "x.png"), *args]
    code, lines = _invoke(*full)
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith("Error: ")
    assert message in lines[0]


def test_render_refuses_what_the_protocol_would(tmp_path: Path) -> None:
    out = str(tmp_path / "x.png")
    for args, message in [
        (["--text", "ệ" * 171], "512"),  # 513 bytes of UTF-8
        ([], "give --text and/or --image"),
        (["--alert", "--image", out], "an alert carries text only"),
        (["--image", str(tmp_path / "none.png")], "cannot read --image"),
    ]:
        code, lines = _invoke("render", "--out", out, *args)
        assert (code, len(lines)) == (1, 1), lines
        assert message in lines[0]
    assert not Path(out).exists()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "axb"], "--size: bad size 'axb'"),
        (["--font", "/nonexistent/f.ttf"], "fonts-dejavu-core"),
        (["--out", "/nonexistent-dir/board.png"], "cannot write --out /nonexistent-dir/board.png"),
    ],
)
def test_run_mistakes_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    base = ["run", "--server", "127.0.0.1:9", "--server-key", SERVER_KEY, "--key-file", str(tmp_path / "k"),
            "--out", str(tmp_path / "b.png"), "--duration", "0.2"]
    code, lines = _invoke(*base, *args)
    assert code == 1
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1
    assert message in errors[0]
    assert lines[-1] == errors[0]


def test_run_writes_the_blank_screen_and_stops(tmp_path: Path) -> None:
    """A board with no server answering: it shows nothing, writes that, and stops after --duration."""
    out = tmp_path / "board.png"
    code, lines = _invoke("run", "--server", f"127.0.0.1:{_free_udp_port()}", "--server-key", SERVER_KEY,
                          "--key-file", str(tmp_path / "board.key"), "--out", str(out), "--size", "200x100",
                          "--duration", "0.5", "--backend", "asyncio")
    assert code == 0, lines
    assert lines[0].startswith("board public key: ")
    assert "connected=False" in lines[-1]
    assert _pixels(out) == Renderer((200, 100)).render(Screen()).tobytes()
    assert (tmp_path / "board.key").exists()
