"""What an e-board shows, drawn to an image with Pillow: text items, images, and the emergency alert screen.

:class:`Renderer` turns a :class:`Screen` (what :class:`~loa.devices.board.BoardDisplay` chose) into a
``size`` RGB image, the same pixels for the same inputs on every machine with the same font file and Pillow:

* Text is NFC-normalised (Vietnamese arriving decomposed, NFD, renders exactly as composed text), control
  characters other than line breaks become spaces, and it is word-wrapped to the panel width at the largest
  size that fits (binary search from ``MAX_TEXT_PX`` down to ``MIN_TEXT_PX``); a word wider than the panel is
  broken between letters (never between a letter and its marks); text that does not fit at the smallest size
  is cut and ends with "…". Lines are spaced for Vietnamese stacked marks (Ẫ, Ệ), so no mark is clipped.
* The font is a real TrueType font, by default DejaVu Sans (Debian package ``fonts-dejavu-core``), laid out
  with Pillow's basic engine (every Vietnamese letter is one precomposed glyph after NFC): :class:`FontError`
  names the package when the file is missing.
* An item shows a strip coloured by class (normal, priority, emergency) with its issuing level, then its image
  (PNG or JPEG, scaled to fit, centred) and its text; an alert shows a red banner "CẢNH BÁO KHẨN CẤP" above
  its text on white, framed in red.
* Image bytes that are not a readable PNG or JPEG (corrupt, truncated, another format, more than
  ``MAX_IMAGE_PIXELS`` pixels) show a fault panel ("Lỗi hình ảnh") instead; rendering never raises for any
  screen or any image bytes.

:func:`write_png` replaces a file atomically (a temporary file in the same folder, then ``os.replace``): a
reader sees the old image or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

__all__ = [
    "DEFAULT_FONT",
    "DEFAULT_SIZE",
    "FONT_PACKAGE",
    "FontError",
    "Renderer",
    "Screen",
    "clean_text",
    "parse_size",
    "write_png",
]

DEFAULT_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
FONT_PACKAGE = "fonts-dejavu-core"
DEFAULT_SIZE = (1280, 720)
MIN_SIDE, MAX_SIDE = 64, 8192
MIN_TEXT_PX = 10
MAX_TEXT_PX = 160
MAX_IMAGE_PIXELS = 40_000_000
ALERT_BANNER = "CẢNH BÁO KHẨN CẤP"
STATUS_PREFIX = {"exercise": "DIỄN TẬP: ", "test": "THỬ NGHIỆM: "}
CLASS_LABEL = ("THÔNG BÁO", "THÔNG BÁO ƯU TIÊN", "THÔNG BÁO KHẨN CẤP")
LEVEL_LABEL = ("Cấp xã", "Cấp huyện", "Cấp tỉnh", "Cấp quốc gia")
IMAGE_FAULT = "Lỗi hình ảnh"
IMAGE_MISSING = "Đang tải hình ảnh…"
TALL = "ẪỖỮỆỰỴ"  # the tallest and deepest Vietnamese glyphs: line spacing leaves room for their marks

RGB = tuple[int, int, int]
BACKGROUND: RGB = (12, 18, 32)
FOREGROUND: RGB = (245, 245, 240)
CLASS_COLOUR: tuple[RGB, RGB, RGB] = ((24, 80, 160), (214, 120, 0), (190, 20, 20))
ALERT_RED: RGB = (200, 0, 0)
ALERT_PAPER: RGB = (255, 255, 255)
ALERT_INK: RGB = (120, 0, 0)
FAULT_GREY: RGB = (70, 70, 78)


class FontError(Exception):
    """The font file is missing or unreadable (the message names the file and the package that provides it)."""


@dataclass(frozen=True, slots=True)
class Screen:
    """What a board shows. ``kind``: ``"blank"``, ``"item"`` or ``"alert"``. ``key``: the item number or the
    alert's ``bid``; ``cls``/``lvl`` its rank; ``text``/``cid`` its content; ``status`` an alert's status;
    ``image``: ``"ready"`` when ``cid`` is stored (the renderer is given its bytes), ``"missing"`` when not yet."""

    kind: str = "blank"
    key: int | None = None
    cls: int = 0
    lvl: int = 0
    text: str | None = None
    cid: bytes | None = None
    status: str = "actual"
    image: str = "none"


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> ``(W, H)``, each 64-8192; ValueError with a message a user can act on."""
    w, sep, h = text.strip().lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise ValueError(f"bad size {text!r}: expected WIDTHxHEIGHT, e.g. 1280x720")
    size = (int(w), int(h))
    if not all(MIN_SIDE <= side <= MAX_SIDE for side in size):
        raise ValueError(f"bad size {text!r}: width and height must be {MIN_SIDE}-{MAX_SIDE} pixels")
    return size


_CLEAN = {"Cc": " ", "Zl": " ", "Zp": " ", "Cs": "\ufffd"}


def clean_text(text: str) -> str:
    """NFC, line breaks as ``\\n``, every other control character a space (a lone surrogate U+FFFD), spaces at
    line ends removed."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = "".join(_CLEAN.get(unicodedata.category(c), c) if c != "\n" else c for c in text)
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def _clusters(word: str) -> list[str]:
    """Letters with their combining marks, so a broken word never separates a mark from its letter."""
    out: list[str] = []
    for c in word:
        if out and unicodedata.combining(c):
            out[-1] += c
        else:
            out.append(c)
    return out


class _Fonts:
    """One TrueType file at every size asked for (cached), basic layout."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        if not Path(self.path).is_file():
            raise FontError(f"font file {self.path} not found: install the Debian package {FONT_PACKAGE} "
                            f"(apt-get install {FONT_PACKAGE}) or give --font FILE")
        self._cache: dict[int, ImageFont.FreeTypeFont] = {}
        self.get(MIN_TEXT_PX)  # fails now, not at the first screen, if the file is not a font

    def get(self, px: int) -> ImageFont.FreeTypeFont:
        font = self._cache.get(px)
        if font is None:
            try:
                font = ImageFont.truetype(self.path, px, layout_engine=ImageFont.Layout.BASIC)
            except OSError as exc:
                raise FontError(f"cannot read font file {self.path}: {exc}") from None
            self._cache[px] = font
        return font


@dataclass(frozen=True, slots=True)
class _Block:
    """Wrapped lines at one font size: ``above``/``below`` the baseline per line, ``step`` baseline to baseline."""

    px: int
    lines: list[str]
    above: int
    below: int
    step: int

    @property
    def height(self) -> int:
        return 0 if not self.lines else self.above + self.below + self.step * (len(self.lines) - 1)


class Renderer:
    """Draws screens at ``size`` with the TrueType font at ``font`` (see the module docstring)."""

    def __init__(self, size: tuple[int, int] = DEFAULT_SIZE, font: str | os.PathLike[str] = DEFAULT_FONT) -> None:
        self.size = size
        self.fonts = _Fonts(font)

    # -- text --------------------------------------------------------------------------------------------------

    def _wrap(self, text: str, px: int, width: int) -> _Block:
        font = self.fonts.get(px)
        ascent, descent = font.getmetrics()
        _, top, _, bottom = font.getbbox(TALL, anchor="ls")
        above, below = math.ceil(max(ascent, -top)) + 1, math.ceil(max(descent, bottom)) + 1
        step = above + below + px // 10
        lines: list[str] = []
        for paragraph in text.split("\n"):
            line = ""
            for word in paragraph.split():
                candidate = f"{line} {word}" if line else word
                if font.getlength(candidate) <= width:
                    line = candidate
                    continue
                if line:
                    lines.append(line)
                line = ""
                for cluster in _clusters(word):  # a word wider than the panel breaks between letters
                    if line and font.getlength(line + cluster) > width:
                        lines.append(line)
                        line = ""
                    line += cluster
            lines.append(line)
        return _Block(px, lines, above, below, step)

    def fit(self, text: str, box: tuple[int, int]) -> _Block:
        """``text`` wrapped at the largest size whose lines fit ``box`` (width, height); at ``MIN_TEXT_PX`` what
        does not fit is cut and the last line kept ends with "…"."""
        width, height = box
        lo, hi = MIN_TEXT_PX, max(MIN_TEXT_PX, min(MAX_TEXT_PX, height))
        best: _Block | None = None
        while lo <= hi:
            mid = (lo + hi) // 2
            block = self._wrap(text, mid, width)
            if block.height <= height and all(self.fonts.get(mid).getlength(x) <= width for x in block.lines):
                best, lo = block, mid + 1
            else:
                hi = mid - 1
        if best is not None:
            return best
        block = self._wrap(text, MIN_TEXT_PX, width)
        font = self.fonts.get(MIN_TEXT_PX)
        keep = max(1, 1 + (height - block.above - block.below) // block.step) if height > 0 else 1
        lines = block.lines[:keep]
        if len(block.lines) > keep:
            last = lines[-1]
            while last and font.getlength(last + "…") > width:
                last = last[:-1]
            lines[-1] = last + "…"
        return _Block(MIN_TEXT_PX, lines, block.above, block.below, block.step)

    def _draw_text(self, draw: ImageDraw.ImageDraw, text: str, box: tuple[int, int, int, int], fill: RGB,
                   *, center: bool = True) -> None:
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0 or not text:
            return
        block = self.fit(text, (x1 - x0, y1 - y0))
        font = self.fonts.get(block.px)
        y = y0 + max(0, (y1 - y0 - block.height) // 2) + block.above
        for line in block.lines:
            x = x0 + (round((x1 - x0 - font.getlength(line)) / 2) if center else 0)
            draw.text((x, y), line, font=font, fill=fill, anchor="ls")
            y += block.step

    # -- images ------------------------------------------------------------------------------------------------

    @staticmethod
    def decode_image(blob: bytes) -> Image.Image | None:
        """``blob`` as an RGB(A) image if it is a readable PNG or JPEG of at most ``MAX_IMAGE_PIXELS``; else None."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(blob), formats=["PNG", "JPEG"]) as im:
                    if im.width * im.height > MAX_IMAGE_PIXELS or im.width < 1 or im.height < 1:
                        return None
                    im.load()
                    oriented = ImageOps.exif_transpose(im)
                    return oriented.convert("RGBA" if "A" in oriented.getbands() or "transparency" in im.info
                                            else "RGB")
        except (OSError, ValueError, SyntaxError, EOFError, MemoryError, Image.DecompressionBombError,
                Image.DecompressionBombWarning):
            return None

    def _draw_image(self, canvas: Image.Image, draw: ImageDraw.ImageDraw, blob: bytes | None, state: str,
                    box: tuple[int, int, int, int]) -> None:
        x0, y0, x1, y1 = box
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        image = self.decode_image(blob) if blob is not None and state == "ready" else None
        if image is None:
            draw.rectangle(box, fill=FAULT_GREY)
            message = IMAGE_MISSING if state != "ready" else IMAGE_FAULT
            pad_x, pad_y = max(2, (x1 - x0) // 8), max(1, (y1 - y0) // 3)
            self._draw_text(draw, message, (x0 + pad_x, y0 + pad_y, x1 - pad_x, y1 - pad_y), FOREGROUND)
            return
        fitted = ImageOps.contain(image, (x1 - x0, y1 - y0), Image.Resampling.LANCZOS)
        at = (x0 + (x1 - x0 - fitted.width) // 2, y0 + (y1 - y0 - fitted.height) // 2)
        canvas.paste(fitted, at, fitted if fitted.mode == "RGBA" else None)

    # -- screens -----------------------------------------------------------------------------------------------

    def render(self, screen: Screen, image: bytes | None = None) -> Image.Image:
        """The screen as an RGB image of ``size``; ``image``: the bytes of ``screen.cid`` when it is stored."""
        w, h = self.size
        if screen.kind == "alert":
            return self._alert(screen)
        canvas = Image.new("RGB", (w, h), BACKGROUND)
        if screen.kind != "item":
            return canvas
        draw = ImageDraw.Draw(canvas)
        margin = max(4, min(w, h) // 24)
        strip = max(12, h // 9)
        colour = CLASS_COLOUR[min(max(screen.cls, 0), 2)]
        draw.rectangle((0, 0, w, strip), fill=colour)
        label = CLASS_LABEL[min(max(screen.cls, 0), 2)]
        level = LEVEL_LABEL[min(max(screen.lvl, 0), 3)]
        inner = strip // 6
        self._draw_text(draw, label, (margin, inner, w * 2 // 3, strip - inner), FOREGROUND, center=False)
        self._draw_text(draw, level, (w * 2 // 3 + margin, inner, w - margin, strip - inner), FOREGROUND)
        body = (margin, strip + margin, w - margin, h - margin)
        text = clean_text(screen.text or "")
        if screen.cid is not None:
            split = body[3] if not text else body[1] + (body[3] - body[1]) * 2 // 3
            self._draw_image(canvas, draw, image, screen.image, (body[0], body[1], body[2], split))
            body = (body[0], split + margin // 2, body[2], body[3])
        self._draw_text(draw, text, body, FOREGROUND)
        return canvas

    def _alert(self, screen: Screen) -> Image.Image:
        w, h = self.size
        canvas = Image.new("RGB", (w, h), ALERT_PAPER)
        draw = ImageDraw.Draw(canvas)
        frame = max(3, min(w, h) // 40)
        draw.rectangle((0, 0, w - 1, h - 1), outline=ALERT_RED, width=frame)
        text = clean_text(screen.text or "")
        banner = h // 4 if text else h - frame
        draw.rectangle((0, 0, w, banner), fill=ALERT_RED)
        pad = max(4, min(w, h) // 30)
        title = STATUS_PREFIX.get(screen.status, "") + ALERT_BANNER
        self._draw_text(draw, title, (frame + pad, frame + pad // 2, w - frame - pad, banner - pad // 2), ALERT_PAPER)
        self._draw_text(draw, text, (frame + pad, banner + pad, w - frame - pad, h - frame - pad), ALERT_INK)
        return canvas

    def png(self, screen: Screen, image: bytes | None = None) -> bytes:
        """:meth:`render` encoded as PNG."""
        out = io.BytesIO()
        self.render(screen, image).save(out, "PNG")
        return out.getvalue()


def write_png(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temporary file beside it, then ``os.replace``). OSError."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
