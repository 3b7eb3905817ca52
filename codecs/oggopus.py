"""Ogg Opus files (RFC 7845) for stored programmes: write already-encoded packets, read them back exactly.

Layout written: page 0 holds only the ``OpusHead`` (BOS, granule 0), page 1 only the ``OpusTags``
(granule 0), then audio pages of whole packets, at most about one second each (never a packet split across
pages), the last one flagged EOS. Granule positions follow RFC 7845 §4: the granule of a page is the number
of 48 kHz samples decoded from the start of the stream through the last packet ending on it, *including*
the ``pre_skip`` samples the decoder must discard; the final page's granule is ``pre_skip + total_samples``,
which trims the zero padding of the last frame. The serial number is derived from the content, so the same
packets and tags always give the same bytes (and the same sha256: the programme's content address).

Writing is atomic: the file is built in memory, written to a temporary file beside the target, fsynced and
renamed over it, so a crash leaves either the old file or the complete new one, never half a programme.

Reading is strict (see :mod:`loa.codecs.ogg`): a file that is missing, truncated, damaged (CRC), multiplexed,
chained, not Opus, or whose granule positions contradict its packets raises :class:`OggOpusError` naming the
file. Writing raises :class:`ConfigError`/:class:`CorruptPacketError` for bad arguments or packets, and
``OggOpusError`` (with ``writing`` true) when the file cannot be written.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from loa.codecs.atomic import atomic_write
from loa.codecs.errors import ConfigError, CorruptPacketError, OggOpusError
from loa.codecs.ogg import FLAG_BOS, FLAG_EOS, MAX_PAGE_PACKET, OggError, OggPage, build_page, read_pages
from loa.codecs.opus import SAMPLE_RATE, frame_samples, libopus_version
from loa.codecs.opusheaders import HEAD, Tags, build_head, build_tags, check_int, parse_head, parse_tags
from loa.codecs.packet import packet_samples

__all__ = ["OggOpusInfo", "OggOpusPacket", "Tags", "read_ogg_opus", "write_ogg_opus"]

_PAGE_SAMPLES: Final = SAMPLE_RATE  # close an audio page once it holds a second of audio


@dataclass(frozen=True)
class OggOpusPacket:
    """One Opus packet and its granule position: samples decoded through the end of this packet."""

    data: bytes
    granule: int


@dataclass(frozen=True)
class OggOpusInfo:
    """What an Ogg Opus file declares, plus facts computed from it.

    ``samples``/``duration_s`` are the playable duration (final granule minus start offset minus pre-skip).
    ``output_gain_db`` is the OpusHead output gain. ``tags`` keep their order and repeats. ``size_bytes`` and ``sha256``
    (hex) describe the whole file.
    """

    channels: int
    pre_skip: int
    input_sample_rate: int
    output_gain_db: float
    vendor: str
    tags: tuple[tuple[str, str], ...]
    serial: int
    final_granule: int
    samples: int
    duration_s: float
    packet_count: int
    size_bytes: int
    sha256: str


def write_ogg_opus(path: str | os.PathLike[str], packets: Iterable[bytes], *, frame_ms: int | None = None,
                   pre_skip: int = 312, input_sample_rate: int = SAMPLE_RATE, tags: Tags | None = None,
                   total_samples: int | None = None, vendor: str | None = None) -> OggOpusInfo:
    """Write mono Opus ``packets`` as an Ogg Opus file at ``path`` (atomically) and describe the result.

    ``frame_ms``, if given, is checked against every packet's duration. ``pre_skip`` is the encoder delay to
    discard (``OpusEncoder.lookahead``, 312 for libopus). ``total_samples`` is the original programme length:
    the packets must cover ``pre_skip + total_samples`` decoded samples, ending within the last packet
    (encode enough trailing silent frames to flush the encoder delay); ``None`` means no end trimming.
    ``tags`` are Vorbis comments (e.g. ``{"TITLE": ...}``); ``vendor`` defaults to ``"loa (libopus x.y)"``.
    """
    head = build_head(pre_skip, input_sample_rate)
    tags_packet = build_tags(vendor if vendor is not None else f"loa ({libopus_version()})", tags)
    data: list[bytes] = []
    durations: list[int] = []
    expected = None if frame_ms is None else frame_samples(frame_ms)
    for index, item in enumerate(packets):
        packet = bytes(item)
        samples = packet_samples(packet)
        if expected is not None and samples != expected:
            raise ConfigError(f"packet {index} lasts {samples / 48:g} ms, not the {frame_ms} ms declared")
        if len(packet) > MAX_PAGE_PACKET:
            raise ConfigError(f"packet {index} is {len(packet)} bytes, larger than an Opus packet can be")
        data.append(packet)
        durations.append(samples)
    if not data:
        raise ConfigError("no Opus packets to write")
    covered = sum(durations)
    final = covered if total_samples is None else pre_skip + check_int("total_samples", total_samples, 0, 2**62)
    if not covered - durations[-1] < final <= covered:
        raise ConfigError(f"{len(data)} packets decode to {covered} samples, which does not end with "
                          f"pre_skip + total_samples = {final} (encode ceil((pre_skip + total) / frame) frames)")
    serial = int.from_bytes(hashlib.sha256(head + tags_packet + b"".join(data)).digest()[:4], "little")
    pages = [build_page([head], granule=0, serial=serial, sequence=0, flags=FLAG_BOS),
             build_page([tags_packet], granule=0, serial=serial, sequence=1)]
    batch: list[bytes] = []
    granule = page_samples = segments = 0
    for i, (packet, samples) in enumerate(zip(data, durations, strict=True)):
        need = len(packet) // 255 + 1
        if batch and (segments + need > 255 or page_samples >= _PAGE_SAMPLES):
            pages.append(build_page(batch, granule=granule, serial=serial, sequence=len(pages)))
            batch, page_samples, segments = [], 0, 0
        batch.append(packet)
        granule += samples
        page_samples += samples
        segments += need
        if i == len(data) - 1:
            pages.append(build_page(batch, granule=final, serial=serial, sequence=len(pages), flags=FLAG_EOS))
    blob = b"".join(pages)
    try:
        atomic_write(path, blob)
    except OSError as exc:
        raise OggOpusError(path, (exc.strerror or str(exc)).lower(), writing=True) from exc
    return _info(head, tags_packet, serial=serial, final=final, count=len(data), blob=blob)


def read_ogg_opus(path: str | os.PathLike[str]) -> tuple[OggOpusInfo, list[OggOpusPacket]]:
    """Read an Ogg Opus file: its header information and every audio packet with its granule position.

    Raises :class:`OggOpusError` naming the file for anything that is not a complete, undamaged,
    single-stream Ogg Opus file with mono or stereo (mapping family 0) audio.
    """
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"OggS":
                raise OggOpusError(path, "not an Ogg file")
            blob = b"OggS" + f.read()
    except FileNotFoundError:
        raise OggOpusError(path, "no such file") from None
    except IsADirectoryError:
        raise OggOpusError(path, "is a directory") from None
    except OSError as exc:
        raise OggOpusError(path, (exc.strerror or str(exc)).lower()) from exc
    try:
        return _parse(blob)
    except OggError as exc:
        raise OggOpusError(path, str(exc)) from exc


def _parse(blob: bytes) -> tuple[OggOpusInfo, list[OggOpusPacket]]:
    pages = iter(read_pages(blob))
    first = next(pages)
    if len(first.packets) != 1 or first.granule != 0 or first.eos:
        raise OggError("first page must hold exactly the OpusHead packet")
    head = first.packets[0]
    parse_head(head)
    tags_page = next(pages, None)
    while tags_page is not None and not tags_page.packets:  # OpusTags continued over several pages
        tags_page = next(pages, None)
    if tags_page is None or len(tags_page.packets) != 1 or tags_page.granule != 0 or tags_page.eos:
        raise OggError("OpusTags must follow the OpusHead alone on its page(s), with granule 0")
    tags_packet = tags_page.packets[0]
    parse_tags(tags_packet)
    packets, final = _audio(pages)
    offset = _start(packets[0])
    pre_skip = HEAD.unpack_from(head)[3]
    if final - offset < pre_skip:
        raise OggError(f"the stream ends (granule {final}) inside its {pre_skip}-sample pre-skip")
    info = _info(head, tags_packet, serial=first.serial, final=final, count=len(packets), blob=blob, offset=offset)
    return info, packets


def _start(first: OggOpusPacket) -> int:
    """The granule at the start of the first audio packet (0 unless the stream was cut from a longer one)."""
    return first.granule - packet_samples(first.data)


def _audio(pages: Iterable[OggPage]) -> tuple[list[OggOpusPacket], int]:
    """The audio packets with per-packet granules, checking every page granule (RFC 7845 §4)."""
    packets: list[OggOpusPacket] = []
    position: int | None = None  # granule at the end of the last packet
    for page in pages:
        if not page.packets:
            continue
        try:
            durations = [packet_samples(p) for p in page.packets]
        except CorruptPacketError as exc:
            raise OggError(f"invalid Opus packet on page {page.sequence}: {exc}") from exc
        total = sum(durations)
        if position is None:  # the first audio page fixes the start offset (RFC 7845 §4.5)
            position = 0 if page.eos else page.granule - total
            if position < 0:
                raise OggError(f"first audio page granule {page.granule} is less than its {total} samples")
        end = position + total
        if page.eos:
            if not position <= page.granule <= end:
                raise OggError(f"final granule {page.granule} outside {position}..{end}")
        elif page.granule != end:
            raise OggError(f"page {page.sequence} granule {page.granule} does not match its packets ({end})")
        for data, samples in zip(page.packets, durations, strict=True):
            position += samples
            packets.append(OggOpusPacket(data, min(position, page.granule)))
    if position is None:
        raise OggError("no audio packets")
    return packets, packets[-1].granule


def _info(head: bytes, tags_packet: bytes, *, serial: int, final: int, count: int, blob: bytes,
          offset: int = 0) -> OggOpusInfo:
    channels, pre_skip, rate, gain = parse_head(head)
    vendor, tags = parse_tags(tags_packet)
    samples = max(0, final - offset - pre_skip)
    return OggOpusInfo(channels=channels, pre_skip=pre_skip, input_sample_rate=rate, output_gain_db=gain / 256,
                       vendor=vendor, tags=tags, serial=serial, final_granule=final, samples=samples,
                       duration_s=samples / SAMPLE_RATE, packet_count=count, size_bytes=len(blob),
                       sha256=hashlib.sha256(blob).hexdigest())
