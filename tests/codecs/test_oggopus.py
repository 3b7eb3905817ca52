"""Ogg Opus files: exact round trips, interop with ffmpeg both ways, atomic writes, and damaged files."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loa.codecs import (
    Audio,
    CodecError,
    ConfigError,
    CorruptPacketError,
    OggOpusError,
    OpusDecoder,
    OpusEncoder,
    demo_programme,
    encode_file_to_ogg_opus,
    frame_samples,
    frames,
    load_audio,
    packet_samples,
    read_ogg_opus,
    tone,
    write_ogg_opus,
)
from loa.codecs.ogg import FLAG_BOS, FLAG_CONTINUED, FLAG_EOS, build_page, crc32


def ncc(a: npt.NDArray[np.generic], b: npt.NDArray[np.generic]) -> float:
    x, y = a.astype(np.float64), b.astype(np.float64)
    return float(x @ y / np.sqrt((x @ x) * (y @ y)))


def encode(audio: Audio, frame_ms: int = 20) -> tuple[list[bytes], int, int]:
    """Packets for ``audio`` including the frames that flush the encoder delay; (packets, pre_skip, samples)."""
    encoder = OpusEncoder(frame_ms=frame_ms)
    n, total, pre_skip = frame_samples(frame_ms), audio.samples.shape[0], encoder.lookahead
    packets = [encoder.encode(f) for f in frames(audio, frame_ms)]
    while len(packets) * n < pre_skip + total:
        packets.append(encoder.encode(np.zeros(n, np.int16)))
    return packets, pre_skip, total


def read_wav(path: Path) -> npt.NDArray[np.int16]:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 48_000)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


def ffprobe_json(path: Path) -> dict[str, object]:
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe is not installed")
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                          "stream=codec_name,sample_rate,channels:format=duration,format_name", "-of", "json",
                          str(path)], capture_output=True, text=True, check=True, timeout=60).stdout
    return dict(json.loads(out))


def raw_page(lacing: bytes, body: bytes, *, flags: int, granule: int, sequence: int, serial: int = 7) -> bytes:
    """An Ogg page with arbitrary lacing (so packets can span pages), CRC filled in."""
    page = bytearray(struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, serial, sequence, 0, len(lacing)))
    page += lacing + body
    struct.pack_into("<I", page, 22, crc32(page))
    return bytes(page)


OPUS_HEAD = struct.pack("<8sBBHIhB", b"OpusHead", 1, 1, 312, 48_000, 0, 0)
OPUS_TAGS = b"OpusTags" + struct.pack("<I", 4) + b"test" + struct.pack("<I", 0)


@pytest.mark.parametrize("frame_ms", [10, 20, 40, 60])
def test_round_trip_gives_identical_packets(tmp_path: Path, frame_ms: int) -> None:
    packets, pre_skip, total = encode(demo_programme(), frame_ms)
    tags = [("TITLE", "Bản tin sáng"), ("ARTIST", "loa"), ("ARTIST", "second"), ("EMPTY", "")]
    path = tmp_path / "programme.opus"
    written = write_ogg_opus(path, packets, frame_ms=frame_ms, pre_skip=pre_skip, tags=tags, total_samples=total)
    info, read = read_ogg_opus(path)
    assert [p.data for p in read] == packets
    n = frame_samples(frame_ms)
    assert [p.granule for p in read[:-1]] == [(i + 1) * n for i in range(len(packets) - 1)]
    assert read[-1].granule == pre_skip + total == info.final_granule
    assert info == written
    assert (info.channels, info.pre_skip, info.input_sample_rate, info.output_gain_db) == (1, 312, 48_000, 0.0)
    assert info.tags == tuple(tags)
    assert info.vendor.startswith("loa (libopus ")
    assert info.samples == total
    assert info.duration_s == total / 48_000
    assert info.packet_count == len(packets)
    assert info.size_bytes == path.stat().st_size
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_mapping_tags_and_no_end_trimming(tmp_path: Path) -> None:
    packets, _, _ = encode(tone(0.5, 440.0))
    info = write_ogg_opus(tmp_path / "t.opus", packets, tags={"TITLE": "x=y"})
    assert info.final_granule == 960 * len(packets)
    assert read_ogg_opus(tmp_path / "t.opus")[0].tags == (("TITLE", "x=y"),)


def test_ffmpeg_decodes_our_file_with_the_right_duration(tmp_path: Path, make_source: Callable[[str], Path],
                                                         ffmpeg: Callable[..., None]) -> None:
    source = make_source("wav")
    stored = encode_file_to_ogg_opus(source, tmp_path / "programme.opus", bitrate=64_000)
    reference = load_audio(source).samples
    assert stored.duration_s == reference.shape[0] / 48_000
    probe = ffprobe_json(tmp_path / "programme.opus")
    stream = probe["streams"][0]  # type: ignore[index]
    assert (stream["codec_name"], stream["sample_rate"], stream["channels"]) == ("opus", "48000", 1)
    assert float(probe["format"]["duration"]) == pytest.approx(stored.duration_s, abs=0.02)  # type: ignore[index]
    ffmpeg("-i", str(tmp_path / "programme.opus"), "-ac", "1", "-ar", "48000", "-c:a", "pcm_s16le",
           str(tmp_path / "decoded.wav"))
    decoded = read_wav(tmp_path / "decoded.wav")
    assert abs(decoded.shape[0] - reference.shape[0]) <= 960  # within one frame (exact when pre-skip honoured)
    n = min(decoded.shape[0], reference.shape[0])
    assert ncc(decoded[:n], reference[:n]) >= 0.95  # at lag 0: the pre-skip removed exactly the codec delay


def test_reads_a_file_written_by_ffmpeg(tmp_path: Path, ffmpeg: Callable[..., None]) -> None:
    path = tmp_path / "ffmpeg.opus"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=330:duration=2.5", "-ac", "1", "-c:a", "libopus",
           "-b:a", "160k", str(path))  # large packets: lacing values of 255 (multi-segment packets)
    info, packets = read_ogg_opus(path)
    assert info.channels == 1
    assert info.samples == 120_000
    assert max(len(p.data) for p in packets) > 255
    decoder = OpusDecoder()
    ours = np.concatenate([decoder.decode(p.data) for p in packets])[info.pre_skip:info.pre_skip + info.samples]
    ffmpeg("-i", str(path), "-c:a", "pcm_s16le", str(tmp_path / "theirs.wav"))
    theirs = read_wav(tmp_path / "theirs.wav")
    assert ours.shape == theirs.shape
    assert ncc(ours, theirs) > 0.99


def test_ogg_crc_matches_the_bitwise_definition() -> None:
    def reference(data: bytes) -> int:
        crc = 0
        for byte in data:
            crc ^= byte << 24
            for _ in range(8):
                crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
                crc &= 0xFFFFFFFF
        return crc

    rng = random.Random(3)
    for size in (0, 1, 2, 3, 17, 255, 1000):
        data = rng.randbytes(size)
        assert crc32(data) == reference(data)
    assert crc32(b"123456789") == 0x89A1897F


def test_same_programme_same_bytes(tmp_path: Path) -> None:
    audio = demo_programme()
    first = encode_file_to_ogg_opus(audio, tmp_path / "a.opus", tags={"TITLE": "demo"})
    second = encode_file_to_ogg_opus(audio, tmp_path / "b.opus", tags={"TITLE": "demo"})
    other = encode_file_to_ogg_opus(audio, tmp_path / "c.opus", tags={"TITLE": "other"})
    assert (tmp_path / "a.opus").read_bytes() == (tmp_path / "b.opus").read_bytes()
    assert first.sha256 == second.sha256 == hashlib.sha256((tmp_path / "a.opus").read_bytes()).hexdigest()
    assert other.sha256 != first.sha256
    assert first.size_bytes == (tmp_path / "a.opus").stat().st_size


def test_encode_file_reports_duration_and_loudness(tmp_path: Path, make_source: Callable[[str], Path]) -> None:
    stored = encode_file_to_ogg_opus(make_source("mp3"), tmp_path / "x.opus", frame_ms=40)
    audio = load_audio(make_source("mp3"))
    assert stored.duration_s == audio.duration_s
    assert stored.loudness_lufs == audio.loudness_lufs
    assert stored.gain_db == audio.gain_db
    assert stored.packets == -(-(audio.samples.shape[0] + 312) // 1920)
    assert stored.path == str(tmp_path / "x.opus")
    with pytest.raises(CodecError):
        encode_file_to_ogg_opus(tmp_path / "missing.wav", tmp_path / "y.opus")
    assert not (tmp_path / "y.opus").exists()


def test_a_failed_write_leaves_the_old_file_and_no_litter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "programme.opus"
    packets, pre_skip, total = encode(tone(0.3, 440.0))
    write_ogg_opus(path, packets, pre_skip=pre_skip, total_samples=total)
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OggOpusError) as info:
        write_ogg_opus(path, packets[:5])
    assert info.value.writing
    assert str(info.value) == f"cannot write '{path}': no space left on device"
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["programme.opus"]


def test_unwritable_destination_is_an_ogg_opus_error(tmp_path: Path) -> None:
    packets, _, _ = encode(tone(0.1, 440.0))
    with pytest.raises(OggOpusError, match="cannot write"):
        write_ogg_opus(tmp_path / "no-such-folder" / "x.opus", packets)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"packets": []}, ConfigError),
    ({"frame_ms": 40}, ConfigError),
    ({"frame_ms": 25}, ConfigError),
    ({"total_samples": 10**6}, ConfigError),
    ({"total_samples": 100}, ConfigError),
    ({"pre_skip": -1}, ConfigError),
    ({"tags": {"BAD=KEY": "x"}}, ConfigError),
    ({"tags": {"": "x"}}, ConfigError),
    ({"packets": [b""]}, CorruptPacketError),
])
def test_bad_write_arguments(tmp_path: Path, kwargs: dict[str, object], error: type[Exception]) -> None:
    packets, _, _ = encode(tone(0.2, 440.0))
    arguments: dict[str, object] = {"packets": packets, **kwargs}
    with pytest.raises(error):
        write_ogg_opus(tmp_path / "x.opus", **arguments)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    packets, pre_skip, total = encode(tone(0.3, 440.0))
    path = tmp_path / "small.opus"
    write_ogg_opus(path, packets, pre_skip=pre_skip, total_samples=total, tags={"TITLE": "t"})
    return path


def test_every_truncation_is_rejected(small_file: Path, tmp_path: Path) -> None:
    blob = small_file.read_bytes()
    cut = tmp_path / "cut.opus"
    for size in range(0, len(blob), 3):
        cut.write_bytes(blob[:size])
        with pytest.raises(OggOpusError) as info:
            read_ogg_opus(cut)
        assert str(info.value).startswith(f"cannot read '{cut}': ")


def test_every_flipped_byte_is_rejected(small_file: Path, tmp_path: Path) -> None:
    blob = small_file.read_bytes()
    bad = tmp_path / "bad.opus"
    for position in range(0, len(blob), 5):
        damaged = bytearray(blob)
        damaged[position] ^= 0x10
        bad.write_bytes(bytes(damaged))
        with pytest.raises(OggOpusError):
            read_ogg_opus(bad)


def test_other_files_are_not_ogg_opus(tmp_path: Path, make_source: Callable[[str], Path], small_file: Path) -> None:
    cases = {make_source("ogg"): "not an Ogg Opus file", make_source("wav"): "not an Ogg file",
             tmp_path / "missing.opus": "no such file", tmp_path: "is a directory"}
    doubled = tmp_path / "chained.opus"
    doubled.write_bytes(small_file.read_bytes() * 2)
    cases[doubled] = "after the end-of-stream"
    for path, reason in cases.items():
        with pytest.raises(OggOpusError) as info:
            read_ogg_opus(path)
        assert reason in str(info.value)
        assert str(path) in str(info.value)


def test_packets_continued_across_pages_are_joined(tmp_path: Path) -> None:
    packets, _, _ = encode(tone(0.1, 440.0))  # 6 packets of 960 samples
    big_tags = b"OpusTags" + struct.pack("<I", 0) + struct.pack("<I", 1) + struct.pack("<I", 900) + b"A=" + b"x" * 898
    first, rest = big_tags[:255 * 2], big_tags[255 * 2:]
    audio_lacing = b"".join(bytes([len(p)]) for p in packets)  # all packets are < 255 bytes at 32 kb/s
    assert all(len(p) < 255 for p in packets)
    blob = (raw_page(bytes([19]), OPUS_HEAD, flags=FLAG_BOS, granule=0, sequence=0)
            + raw_page(b"\xff\xff", first, flags=0, granule=-1, sequence=1)
            + raw_page(bytes([255, len(rest) - 255]), rest, flags=FLAG_CONTINUED, granule=0, sequence=2)
            + raw_page(audio_lacing, b"".join(packets), flags=FLAG_EOS, granule=960 * 6, sequence=3))
    path = tmp_path / "continued.opus"
    path.write_bytes(blob)
    info, read = read_ogg_opus(path)
    assert info.tags == (("A", "x" * 898),)
    assert [p.data for p in read] == packets
    assert info.samples == 960 * 6 - 312


def test_a_stream_cut_from_a_longer_one_starts_at_an_offset(tmp_path: Path) -> None:
    packets, _, _ = encode(tone(0.2, 440.0))
    pages = [build_page([OPUS_HEAD], granule=0, serial=9, sequence=0, flags=FLAG_BOS),
             build_page([OPUS_TAGS], granule=0, serial=9, sequence=1),
             build_page(packets[:5], granule=48_000 + 5 * 960, serial=9, sequence=2),
             build_page(packets[5:], granule=48_000 + len(packets) * 960 - 100, serial=9, sequence=3, flags=FLAG_EOS)]
    path = tmp_path / "offset.opus"
    path.write_bytes(b"".join(pages))
    info, read = read_ogg_opus(path)
    assert read[0].granule == 48_000 + 960
    assert info.samples == len(packets) * 960 - 100 - 312
    pages[2] = build_page(packets[:5], granule=4 * 960, serial=9, sequence=2)  # fewer samples than packets hold
    path.write_bytes(b"".join(pages))
    with pytest.raises(OggOpusError, match="less than"):
        read_ogg_opus(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_ogg_opus_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.opus"
    path.write_bytes(b"OggS" + data if data[:1] == b"\0" else data)
    with pytest.raises(OggOpusError):
        read_ogg_opus(path)


POOL = encode(tone(0.2, 440.0))[0]


def _samples(packet: bytes) -> int:
    try:
        return packet_samples(packet)
    except CorruptPacketError:
        return 0


@st.composite
def page_streams(draw: st.DrawFn) -> bytes:
    """Pages with valid CRCs, mostly well-formed, with occasional wrong headers, flags, granules, packets."""
    rare = st.integers(0, 9).map(lambda i: i == 9)  # hypothesis favours 0: make the rare case the large one
    head = OPUS_HEAD if not draw(rare) else b"OpusHead" + draw(st.binary(max_size=30))
    tags = OPUS_TAGS if not draw(rare) else b"OpusTags" + draw(st.binary(max_size=30))
    packet = st.one_of(st.sampled_from(POOL), st.sampled_from(POOL), st.binary(max_size=40))
    audio = draw(st.lists(st.lists(packet, min_size=1, max_size=4), min_size=1, max_size=4))
    contents = [[head], [tags], *audio]
    pages, position = [], 0
    for sequence, packets in enumerate(contents):
        flags = FLAG_BOS if sequence == 0 else FLAG_EOS if sequence == len(contents) - 1 else 0
        if draw(rare):
            flags = draw(st.sampled_from([0, FLAG_BOS, FLAG_EOS, FLAG_CONTINUED, FLAG_BOS | FLAG_EOS]))
        position += sum(map(_samples, packets)) if sequence >= 2 else 0
        granule = position
        if draw(rare):
            granule = draw(st.one_of(st.integers(-1, 20_000), st.sampled_from([-(2**63), 2**63 - 1])))
        pages.append(build_page(packets, granule=granule, serial=5, sequence=sequence, flags=flags))
    return b"".join(pages)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(page_streams())
def test_structured_garbage_reads_or_raises_ogg_opus_error(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "pages.opus"
    path.write_bytes(blob)
    try:
        info, packets = read_ogg_opus(path)
    except OggOpusError:
        return
    assert info.packet_count == len(packets) > 0
    assert info.samples >= 0
