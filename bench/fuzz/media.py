"""Fuzz target ``media``: the checks an uploaded e-board image or text passes (:mod:`loa.control_plane.media`).

The first byte picks a mode: 0 - the rest as an image checked with pillow (the whole image decoded);
1 - the same image checked by its signature alone (the check used without pillow); 2 - the rest decoded as
UTF-8 (errors replaced) and checked as board text; 3 - the same text as an uploaded file name.

Accepted errors: :class:`~loa.control_plane.errors.InvalidError`. Oracles: an accepted image is PNG or JPEG
within the size limit; accepted text is NFC, non-empty, within its length and holds no control character but
line breaks and tabs; a shown file name holds no control character and is at most 255 characters.
"""

from __future__ import annotations

import io
import unicodedata

from loa.control_plane.errors import InvalidError
from loa.control_plane.media import MAX_SIDE, MAX_TEXT, check_image, check_text, display_name

MAX_LEN = 16384


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer and atheris use
    if not data:
        return
    mode, rest = data[0] % 4, data[1:]
    if mode < 2:
        try:
            media_type, width, height = check_image(rest, "upload.png", use_pillow=mode == 0)
        except InvalidError:
            return
        if media_type not in ("image/png", "image/jpeg") or not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
            raise AssertionError(f"accepted a {media_type} of {width}x{height}")
        return
    text = rest.decode("utf-8", "replace")
    if mode == 3:
        shown = display_name(text)
        if not 0 < len(shown) <= 255 or any(unicodedata.category(c) == "Cc" for c in shown):
            raise AssertionError(f"display name {shown!r}")
        return
    try:
        checked = check_text(text)
    except InvalidError:
        return
    if not checked or len(checked) > MAX_TEXT or unicodedata.normalize("NFC", checked) != checked:
        raise AssertionError(f"accepted text {checked!r}")
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in checked):
        raise AssertionError(f"accepted text with a control character: {checked!r}")


def seeds() -> dict[str, bytes]:
    from PIL import Image

    out: dict[str, bytes] = {}
    for kind in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        Image.new("RGB", (3, 2), (200, 30, 30)).save(buffer, format=kind)
        out[kind.lower()] = b"\0" + buffer.getvalue()
        out[kind.lower() + ".signature"] = b"\1" + buffer.getvalue()
    gray = io.BytesIO()
    Image.new("L", (1, 1)).save(gray, format="PNG")
    out["png.gray"] = b"\0" + gray.getvalue()
    out["text"] = "\2Bão số 1: người dân vùng ven biển\ndi chuyển đến nơi an toàn.".encode()
    out["text.combining"] = "\2Ba\u0303o so\u0302\u0301 1\r\n\tx".encode()
    out["name"] = b"\3../../etc/passwd\x00\x1b[31m.png"
    return out
