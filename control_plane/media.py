"""What the library accepts as content: audio (any format, stored as Ogg Opus), e-board text and images.

- Audio: any file ffmpeg decodes, normalised to -16 LUFS (ITU-R BS.1770) and encoded to Ogg Opus by
  :func:`loa.codecs.encode_file_to_ogg_opus`; the stored file's SHA-256 is its content id.
- Text: Unicode NFC (a Vietnamese word typed with combining marks or precomposed letters is one text), at most
  :data:`MAX_TEXT` characters, line breaks allowed, no other control or unassigned characters. Stored as UTF-8.
- Images: PNG or JPEG, at most :data:`MAX_SIDE` pixels a side. Checked with pillow when it is installed
  (the whole image is decoded, so a truncated or corrupt file is refused); without pillow, by the format's
  signature, the dimensions in its header and its end marker (:data:`IMAGE_CHECK` says which is in use).

Failure semantics: bad content raises :class:`InvalidError` naming the file, with nothing stored; a file system
failure (``OSError``) propagates, with nothing left under a content address.
"""

from __future__ import annotations

import importlib
import os
import re
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from loa.codecs import CodecError, IngestError, encode_file_to_ogg_opus
from loa.control_plane.content import ContentStore
from loa.control_plane.errors import InvalidError

__all__ = [
    "IMAGE_CHECK",
    "MAX_AUDIO_S",
    "MAX_SIDE",
    "MAX_TEXT",
    "TARGET_LUFS",
    "StoredContent",
    "check_image",
    "check_text",
    "display_name",
    "ingest_audio",
    "store_image",
    "store_text",
]

TARGET_LUFS: Final = -16.0
MAX_AUDIO_S: Final = 3600.0     # the whole programme is decoded in memory (about 0.7 GB an hour while decoding)
MAX_TEXT: Final = 4000
MAX_SIDE: Final = 8192
_PNG = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG = b"\xff\xd8\xff"
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_NAME_BAD = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _pillow() -> Any:
    try:
        return importlib.import_module("PIL.Image")
    except ImportError:
        return None


_IMAGE = _pillow()
IMAGE_CHECK: Final = "pillow" if _IMAGE is not None else "signature"


@dataclass(frozen=True, slots=True)
class StoredContent:
    """A file in the content store and what was learnt about it."""

    sha256: str
    media_type: str
    size_bytes: int
    duration_ms: int | None = None
    loudness_lufs: float | None = None
    gain_db: float | None = None
    width: int | None = None
    height: int | None = None


def display_name(name: str | None, fallback: str = "upload") -> str:
    """An uploaded file's name fit to show in a message: its last path part, no control characters, 255 at most."""
    shown = _NAME_BAD.sub("", os.path.basename((name or "").replace("\\", "/"))).strip()
    return (shown or fallback)[:255]


def ingest_audio(store: ContentStore, source: Path, name: str, *, target_lufs: float = TARGET_LUFS,
                 max_seconds: float = MAX_AUDIO_S) -> StoredContent:
    """Decode ``source`` (any format), normalise and encode it, and store it as Ogg Opus.

    ``name`` is what the user called the file; every refusal names it: not audio, corrupt, silent-empty, or
    longer than ``max_seconds``. The work happens in a temporary file that is adopted only when complete.
    """
    work = store.incoming(".opus")
    try:
        try:
            encoded = encode_file_to_ogg_opus(source, work, target_lufs=target_lufs, max_seconds=max_seconds + 1)
        except IngestError as exc:
            raise InvalidError(f"{name!r} is not usable audio: {exc.reason}") from None
        except CodecError as exc:
            if getattr(exc, "writing", False):
                raise OSError(f"cannot store {name!r}: {exc}") from exc
            raise InvalidError(f"{name!r} is not usable audio: {exc}") from None
        if encoded.duration_s > max_seconds:
            raise InvalidError(f"{name!r} lasts more than {max_seconds:g} s: split it into parts")
        if encoded.duration_s <= 0:
            raise InvalidError(f"{name!r} holds no audio")
        store.adopt(work, encoded.sha256, "audio/ogg")
    finally:
        store.discard(work)
    return StoredContent(encoded.sha256, "audio/ogg", encoded.size_bytes, round(encoded.duration_s * 1000),
                         encoded.loudness_lufs, encoded.gain_db)


def check_text(text: str, *, what: str = "text", max_chars: int = MAX_TEXT) -> str:
    """``text`` in NFC with surrounding blank space removed and line ends as ``\\n``; refuses empty text, text
    longer than ``max_chars`` and control (other than line breaks and tabs), unassigned or private characters."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n")).strip()
    if not text:
        raise InvalidError(f"{what} is empty")
    if len(text) > max_chars:
        raise InvalidError(f"{what} has {len(text)} characters; at most {max_chars}")
    for i, char in enumerate(text):
        if char in "\n\t":
            continue
        category = unicodedata.category(char)
        if category in {"Cc", "Cs", "Cn", "Co"}:
            raise InvalidError(f"{what} holds the character U+{ord(char):04X} at position {i}, "
                               "which cannot be shown on a board")
    return text


def store_text(store: ContentStore, text: str) -> StoredContent:
    """Store checked text as UTF-8 (what a board is sent)."""
    blob = text.encode("utf-8")
    digest, _ = store.put_bytes(blob, "text/plain")
    return StoredContent(digest, "text/plain", len(blob))


def check_image(blob: bytes, name: str, *, use_pillow: bool | None = None) -> tuple[str, int, int]:
    """``(media type, width, height)`` of a PNG or JPEG image; :class:`InvalidError` naming ``name`` otherwise.

    ``use_pillow`` None: pillow if installed (see :data:`IMAGE_CHECK`); False forces the signature check.
    """
    if use_pillow is None:
        use_pillow = _IMAGE is not None
    if use_pillow and _IMAGE is None:
        raise RuntimeError("pillow is not installed")
    media_type, width, height = _check_with_pillow(blob, name) if use_pillow else _check_signature(blob, name)
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise InvalidError(f"{name!r} is {width}x{height} pixels; at most {MAX_SIDE} a side")
    return media_type, width, height


def _check_signature(blob: bytes, name: str) -> tuple[str, int, int]:
    if blob.startswith(_PNG):
        if len(blob) < 33 or blob[12:16] != b"IHDR":
            raise InvalidError(f"{name!r} is not a valid PNG image: no header")
        width, height = struct.unpack(">II", blob[16:24])
        if not blob.endswith(_PNG_END):
            raise InvalidError(f"{name!r} is not a valid PNG image: it is truncated (no end chunk)")
        return "image/png", width, height
    if blob.startswith(_JPEG):
        size = _jpeg_size(blob)
        if size is None:
            raise InvalidError(f"{name!r} is not a valid JPEG image: no frame header")
        if not blob.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise InvalidError(f"{name!r} is not a valid JPEG image: it is truncated (no end marker)")
        return "image/jpeg", size[0], size[1]
    raise InvalidError(f"{name!r} is not a PNG or JPEG image")


def _jpeg_size(blob: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(blob):
        if blob[i] != 0xFF:
            return None
        marker = blob[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(blob[i + 2:i + 4], "big")
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            if i + 9 > len(blob):
                return None
            height, width = struct.unpack(">HH", blob[i + 5:i + 9])
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            return None
        i += 2 + length
    return None


def _check_with_pillow(blob: bytes, name: str) -> tuple[str, int, int]:
    import io

    image_module = _IMAGE
    try:
        with image_module.open(io.BytesIO(blob), formats=("PNG", "JPEG")) as image:
            kind, (width, height) = image.format, image.size
            if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
                return ("image/png" if kind == "PNG" else "image/jpeg"), width, height
            image.verify()  # the file's structure (PNG: every chunk's CRC, and the end chunk)
        with image_module.open(io.BytesIO(blob), formats=("PNG", "JPEG")) as image:
            image.load()  # and its pixels: truncated or corrupt image data fails here
    except Exception as exc:  # noqa: BLE001 - pillow reports broken files with many exception types
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        if "cannot identify image file" in reason:
            reason = "not a PNG or JPEG image"
        raise InvalidError(f"{name!r} is not a valid PNG or JPEG image: {reason}") from None
    return ("image/png" if kind == "PNG" else "image/jpeg"), width, height


def store_image(store: ContentStore, blob: bytes, name: str, *, use_pillow: bool | None = None) -> StoredContent:
    """Check and store an image as it was sent (its bytes are its content)."""
    media_type, width, height = check_image(blob, name, use_pillow=use_pillow)
    digest, _ = store.put_bytes(blob, media_type)
    return StoredContent(digest, media_type, len(blob), width=width, height=height)
