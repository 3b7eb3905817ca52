"""The e-board renderer: every Vietnamese letter is a real glyph, text wraps inside the panel, images fit, bad images
show a fault and never raise, files are replaced atomically."""

from __future__ import annotations

import io
import os
import struct
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops

from loa.devices.render import (
    ALERT_RED,
    BACKGROUND,
    DEFAULT_FONT,
    MIN_TEXT_PX,
    FontError,
    Renderer,
    Screen,
    clean_text,
    parse_size,
    write_png,
)

if not Path(DEFAULT_FONT).is_file():  # pragma: no cover - dev.sh installs it
    pytest.fail(f"{DEFAULT_FONT} is missing: install fonts-dejavu-core (./dev.sh does)", pytrace=False)

VOWELS = "aăâeêioôơuưy"
TONES = ("\u0300", "\u0309", "\u0303", "\u0301", "\u0323")  # huyền, hỏi, ngã, sắc, nặng
UNASSIGNED = "\u0378"  # no character: every font draws its .notdef glyph


def vietnamese_letters() -> list[str]:
    """Every precomposed lowercase Vietnamese letter with a diacritic (67), and the uppercase ones (67)."""
    lower = [v for v in VOWELS if unicodedata.decomposition(v)]  # ă â ê ô ơ ư carry a mark already
    lower += [unicodedata.normalize("NFC", v + tone) for v in VOWELS for tone in TONES]
    lower.append("đ")
    assert all(len(c) == 1 for c in lower)
    return lower + [c.upper() for c in lower]


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer((320, 180))


def _ink(image: Image.Image, background: tuple[int, int, int]) -> tuple[int, int, int, int] | None:
    return ImageChops.difference(image, Image.new("RGB", image.size, background)).getbbox()


def test_there_are_134_letters() -> None:
    letters = vietnamese_letters()
    assert len(letters) == len(set(letters)) == 134
    assert {"ệ", "ỗ", "ử", "Đ", "Ễ", "ỵ"} <= set(letters)


def test_every_vietnamese_letter_has_a_real_glyph(renderer: Renderer) -> None:
    font = renderer.fonts.get(48)
    notdef = font.getmask(UNASSIGNED)
    assert notdef.getbbox() is not None  # the font's .notdef draws something: the comparison means something
    missing = [c for c in vietnamese_letters() if bytes(font.getmask(c)) == bytes(notdef)]
    assert missing == []
    base = {"đ": "d", "Đ": "D"}  # the stroke is part of the letter, not a combining mark
    same_as_base = [c for c in vietnamese_letters()
                    if bytes(font.getmask(c)) == bytes(font.getmask(base.get(c, unicodedata.normalize("NFD", c)[0])))]
    assert same_as_base == []  # each letter's marks are drawn: it differs from its base letter
    assert bytes(font.getmask("ệ")) != bytes(font.getmask("e"))
    assert font.getbbox("ệ", anchor="ls")[3] > font.getbbox("e", anchor="ls")[3]  # the dot below, below
    assert font.getbbox("ệ", anchor="ls")[1] < font.getbbox("e", anchor="ls")[1]  # the circumflex, above


def test_every_letter_renders_unlike_notdef_through_the_renderer(renderer: Renderer) -> None:
    notdef = renderer.render(Screen("item", 1, text=UNASSIGNED)).tobytes()
    same = [c for c in vietnamese_letters() if renderer.render(Screen("item", 1, text=c)).tobytes() == notdef]
    assert same == []


def test_decomposed_text_renders_as_composed(renderer: Renderer) -> None:
    nfc = "Cảnh báo lũ quét: Đường về bản Nậm Pồ bị sạt lở, người dân không đi qua ngầm."
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc
    for kind in ("item", "alert"):
        assert renderer.render(Screen(kind, 1, text=nfd)).tobytes() == renderer.render(Screen(kind, 1, text=nfc)
                                                                                       ).tobytes()


def test_text_wraps_inside_the_panel() -> None:
    r = Renderer((640, 360))
    text = ("Ủy ban nhân dân xã thông báo: từ ngày mai, đường liên thôn Đồng Quỹ bị cấm để sửa chữa cầu. Người dân "
            "đi đường vòng qua thôn Thượng. ẪỖỮ ỆỰỴ ") * 3
    block = r.fit(clean_text(text), (600, 260))
    assert len(block.lines) > 3
    assert all(r.fonts.get(block.px).getlength(line) <= 600 for line in block.lines)
    image = r.render(Screen("item", 1, text=text))
    w, h = image.size
    margin, strip = min(w, h) // 24, h // 9
    body = image.crop((0, strip + 1, w, h))
    ink = _ink(body, BACKGROUND)
    assert ink is not None
    left, top, right, bottom = ink
    assert left >= margin
    assert right <= w - margin
    assert top >= margin  # no mark of the first line reaches above the text area
    assert bottom <= h - strip - 1 - margin + 1


def test_a_word_wider_than_the_panel_is_broken_between_letters() -> None:
    r = Renderer((200, 120))
    word = "Nghiêngnghiêngnghiêngnghiêngnghiêngnghiêngnghiêngnghiêng"
    block = r.fit(word, (180, 40))
    assert len(block.lines) > 1
    assert "".join(block.lines) == word
    assert all(r.fonts.get(block.px).getlength(line) <= 180 for line in block.lines)


def test_text_too_long_for_the_smallest_size_is_cut_with_an_ellipsis() -> None:
    r = Renderer((120, 80))
    block = r.fit("chữ " * 200, (100, 40))
    assert block.px == MIN_TEXT_PX
    assert block.lines[-1].endswith("…")
    assert block.height <= 40


def test_clean_text() -> None:
    assert clean_text("a\r\nb\rc\x00d\te\u2028f  \n\n") == "a\nb\nc d e f"
    assert clean_text("\ud800x") == "\ufffdx"


def test_alert_screen_is_a_red_banner_over_the_text(renderer: Renderer) -> None:
    alert = renderer.render(Screen("alert", 7, 2, 2, "Sơ tán ngay"))
    item = renderer.render(Screen("item", 7, 2, 2, "Sơ tán ngay"))
    assert alert.tobytes() != item.tobytes()
    assert alert.getpixel((2, 2)) == ALERT_RED  # the frame
    assert alert.getpixel((160, 4)) == ALERT_RED  # the banner
    without_text = renderer.render(Screen("alert", 7, 2, 2, None))
    exercise = renderer.render(Screen("alert", 7, 2, 2, "Sơ tán ngay", status="exercise"))
    assert len({alert.tobytes(), without_text.tobytes(), exercise.tobytes()}) == 3


def test_blank_screen(renderer: Renderer) -> None:
    assert _ink(renderer.render(Screen()), BACKGROUND) is None


def _png(size: tuple[int, int], colour: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_images_are_scaled_to_fit_and_centred(fmt: str) -> None:
    r = Renderer((640, 360))
    blob = _png((400, 100), (0, 200, 0), fmt)
    image = r.render(Screen("item", 1, cid=b"c" * 32, image="ready"), blob)
    pixels = np.asarray(image, dtype=np.int16)
    ys, xs = np.nonzero((pixels[:, :, 1] > 150) & (pixels[:, :, 0] < 60) & (pixels[:, :, 2] < 60))
    assert len(xs) > 0
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    width, height = box[2] - box[0], box[3] - box[1]
    assert abs(width / height - 4.0) < 0.1  # the aspect ratio is kept
    margin = 360 // 24
    assert width >= 640 - 2 * margin - 2  # as large as the panel allows
    assert abs((box[0] + box[2]) / 2 - 320) <= 1


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


BAD_IMAGES = {
    "garbage": b"not an image at all",
    "empty": b"",
    "truncated": _png((300, 200), (10, 20, 30))[:60],
    "gif": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
    "bomb": b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
            + _chunk(b"IEND", b""),
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_a_bad_image_shows_a_fault(renderer: Renderer, name: str) -> None:
    assert renderer.decode_image(BAD_IMAGES[name]) is None
    screen = Screen("item", 1, text="Bản đồ", cid=b"c" * 32, image="ready")
    fault = renderer.render(screen, BAD_IMAGES[name])
    assert fault.tobytes() == renderer.render(screen, BAD_IMAGES["garbage"]).tobytes()
    assert fault.tobytes() != renderer.render(screen, _png((30, 20), (0, 0, 255))).tobytes()
    missing = renderer.render(Screen("item", 1, text="Bản đồ", cid=b"c" * 32, image="missing"))
    assert missing.tobytes() != fault.tobytes()  # "not yet fetched" is not "broken"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=300), st.integers(0, 2000).map(lambda n: _png((40, 30), (1, 2, 3))[:n]),
                      st.binary(min_size=1, max_size=40).map(lambda b: _png((40, 30), (1, 2, 3))[:33] + b)))
def test_no_image_bytes_make_rendering_raise(data: bytes) -> None:
    image = Renderer((160, 90)).render(Screen("item", 1, text="x", cid=b"c" * 32, image="ready"), data)
    assert image.size == (160, 90)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=200), kind=st.sampled_from(["item", "alert"]))
def test_any_text_renders_inside_the_panel(text: str, kind: str) -> None:
    r = Renderer((200, 120))
    image = r.render(Screen(kind, 1, 1, 1, text))
    assert image.size == (200, 120)
    block = r.fit(clean_text(text), (150, 60))
    assert all(r.fonts.get(block.px).getlength(line) <= 150 for line in block.lines)
    assert block.height <= 60 or block.px == MIN_TEXT_PX


def test_the_same_screen_renders_the_same_pixels() -> None:
    screen = Screen("item", 3, 1, 2, "Lịch tiêm chủng tháng Sáu")
    assert Renderer((320, 180)).png(screen) == Renderer((320, 180)).png(screen)


def test_parse_size() -> None:
    assert parse_size("1280x720") == (1280, 720)
    assert parse_size("64X8192") == (64, 8192)
    for bad in ("1280", "x720", "12x34", "1280x-1", "axb", "9000x100", ""):
        with pytest.raises(ValueError, match="bad size"):
            parse_size(bad)


def test_a_missing_font_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(FontError, match="fonts-dejavu-core"):
        Renderer((100, 100), tmp_path / "nope.ttf")
    not_a_font = tmp_path / "text.ttf"
    not_a_font.write_text("hello")
    with pytest.raises(FontError, match="cannot read font file"):
        Renderer((100, 100), not_a_font)


def test_write_png_replaces_the_file_atomically(tmp_path: Path) -> None:
    target = tmp_path / "board.png"
    write_png(target, b"first")
    write_png(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["board.png"]  # no temporary file left behind
    with pytest.raises(OSError, match="No such file"):
        write_png(tmp_path / "missing" / "board.png", b"x")
    assert os.listdir(tmp_path) == ["board.png"]
