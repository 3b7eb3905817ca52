"""The two Ogg Opus header packets (RFC 7845 §5): ``OpusHead`` (identification) and ``OpusTags`` (comments).

Building validates what the caller chose (:class:`ConfigError`); parsing raises :class:`loa.codecs.ogg.OggError`
for anything malformed, truncated, or outside what loa plays (mapping family 0: mono or stereo), so the
Ogg Opus reader can report it against the file name.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Final

from loa.codecs.errors import ConfigError
from loa.codecs.ogg import MAX_PAGE_PACKET, OggError

__all__ = ["HEAD", "Tags", "build_head", "build_tags", "check_int", "parse_head", "parse_tags"]

Tags = Mapping[str, str] | Iterable[tuple[str, str]]
HEAD: Final = struct.Struct("<8sBBHIhB")  # magic, version, channels, pre-skip, input rate, gain Q7.8, family


def build_head(pre_skip: int, input_sample_rate: int) -> bytes:
    """A mono, mapping family 0 OpusHead with output gain 0."""
    return HEAD.pack(b"OpusHead", 1, 1, check_int("pre_skip", pre_skip, 0, 0xFFFF),
                     check_int("input_sample_rate", input_sample_rate, 0, 0xFFFFFFFF), 0, 0)


def parse_head(head: bytes) -> tuple[int, int, int, int]:
    """(channels, pre_skip, input_sample_rate, output_gain_q78) of an OpusHead packet."""
    if len(head) < HEAD.size or not head.startswith(b"OpusHead"):
        raise OggError("not an Ogg Opus file (no OpusHead)")
    _, version, channels, pre_skip, rate, gain, family = HEAD.unpack_from(head)
    if version >> 4:
        raise OggError(f"unsupported Ogg Opus version {version}")
    if family != 0 or channels not in (1, 2):
        raise OggError(f"unsupported channel mapping (family {family}, {channels} channels)")
    return channels, pre_skip, rate, gain


def build_tags(vendor: str, tags: Tags | None) -> bytes:
    """An OpusTags packet; tag names must be printable ASCII without '=' (Vorbis comment rules)."""
    pairs = list((tags.items() if isinstance(tags, Mapping) else tags) or ())
    out = bytearray(b"OpusTags")
    raw_vendor = vendor.encode("utf-8")
    out += struct.pack("<I", len(raw_vendor)) + raw_vendor + struct.pack("<I", len(pairs))
    for key, value in pairs:
        if not key or any(not 0x20 <= ord(c) <= 0x7D or c == "=" for c in key):
            raise ConfigError(f"invalid tag name {key!r} (printable ASCII without '=')")
        comment = f"{key}={value}".encode()
        out += struct.pack("<I", len(comment)) + comment
    if len(out) > MAX_PAGE_PACKET:
        raise ConfigError(f"tags take {len(out)} bytes; at most {MAX_PAGE_PACKET} are supported")
    return bytes(out)


def parse_tags(packet: bytes) -> tuple[str, tuple[tuple[str, str], ...]]:
    """(vendor, tags in file order) of an OpusTags packet; undecodable UTF-8 is replaced, not fatal."""
    if not packet.startswith(b"OpusTags"):
        raise OggError("second packet is not OpusTags")
    pos = 8

    def chunk() -> bytes:
        nonlocal pos
        if pos + 4 > len(packet):
            raise OggError("truncated OpusTags")
        (size,) = struct.unpack_from("<I", packet, pos)
        if pos + 4 + size > len(packet):
            raise OggError("truncated OpusTags")
        pos += 4 + size
        return packet[pos - size:pos]

    vendor = chunk().decode("utf-8", "replace")
    if pos + 4 > len(packet):
        raise OggError("truncated OpusTags")
    (count,) = struct.unpack_from("<I", packet, pos)
    pos += 4
    if count > (len(packet) - pos) // 4:
        raise OggError("truncated OpusTags")
    tags = []
    for _ in range(count):
        key, _, value = chunk().decode("utf-8", "replace").partition("=")
        tags.append((key, value))
    return vendor, tuple(tags)


def check_int(name: str, value: object, low: int, high: int) -> int:
    """``value`` if it is an int (not bool) within ``low..high``, else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer from {low} to {high}, not {value!r}")
    return value
