"""Frame sources: continuous tones, programmes once or looping, and the live RTP/Opus input (sans-I/O)."""

from __future__ import annotations

import numpy as np
import pytest

from loa.codecs import OpusEncoder, tone
from loa.protocol.rtp import RtpPacket
from loa.streamer.sources import AudioSource, LiveRtpSource, ToneSource


def test_a_tone_is_continuous_across_frames_and_ends_when_asked() -> None:
    source = ToneSource(440.0, seconds=0.1)
    frames = []
    while (frame := source.pull()) is not None:
        assert isinstance(frame, np.ndarray)
        frames.append(frame)
    assert len(frames) == 5
    assert source.finished
    pcm = np.concatenate(frames).astype(np.float64)
    t = np.arange(len(pcm)) / 48_000
    expected = np.rint(32767 * 10 ** (-18 / 20) * np.sin(2 * np.pi * 440 * t))
    assert np.max(np.abs(pcm - expected)) <= 1.0  # one sine: no phase jump at frame boundaries
    with pytest.raises(ValueError, match="frequency"):
        ToneSource(30_000.0)


def test_a_programme_plays_once_or_loops() -> None:
    audio = tone(0.05, 1000.0)  # 2.5 frames: the last one padded
    once = AudioSource(audio)
    assert [once.pull() is not None for _ in range(4)] == [True, True, True, False]
    assert once.finished
    looping = AudioSource(audio, loop=True)
    pulled = [looping.pull() for _ in range(9)]
    assert all(f is not None for f in pulled)
    assert not looping.finished
    looping.close()
    assert looping.finished
    assert looping.pull() is None


def rtp(seq: int, payload: bytes, *, ssrc: int = 7, pt: int = 97) -> bytes:
    return RtpPacket(pt, seq & 0xFFFF, seq * 960 & 0xFFFFFFFF, ssrc, payload).to_bytes()


def opus_frames(count: int, *, frame_ms: int = 20) -> list[bytes]:
    encoder = OpusEncoder(frame_ms=frame_ms)
    samples = 48 * frame_ms
    t = np.arange(count * samples) / 48_000
    pcm = (8000 * np.sin(2 * np.pi * 500 * t)).astype(np.int16)
    return [encoder.encode(pcm[i * samples:(i + 1) * samples]) for i in range(count)]


def test_live_input_reorders_prebuffers_and_passes_mono_20ms_through() -> None:
    payloads = opus_frames(8)
    source = LiveRtpSource(prebuffer=3)
    source.feed(rtp(65534, payloads[0]))
    source.feed(rtp(65535, payloads[1]))
    assert source.pull() is None  # still prebuffering
    source.feed(rtp(1, payloads[3]))  # across the wrap, and ahead of 0
    source.feed(rtp(0, payloads[2]))
    source.feed(rtp(0, payloads[2]))  # a duplicate
    source.feed(b"\x80\xc8\x00\x06" + bytes(24))  # an RTCP sender report on the same port: ignored
    source.feed(b"not rtp at all")
    out = [source.pull() for _ in range(4)]
    assert out == payloads[:4]  # in sequence order, untouched
    assert source.pull() is None  # an underrun: nothing waits
    stats = source.statistics()
    assert (stats.passed_through, stats.decoded, stats.underruns) == (4, 0, 1)
    assert stats.dropped == 1
    assert stats.late == 1


def test_live_input_skips_a_lost_packet_and_follows_a_new_sender() -> None:
    payloads = opus_frames(10)
    source = LiveRtpSource(prebuffer=2)
    for seq in (10, 12, 13):
        source.feed(rtp(seq, payloads[seq - 10]))
    assert [source.pull() for _ in range(3)] == [payloads[0], payloads[2], payloads[3]]
    source.feed(rtp(500, payloads[5], ssrc=99))  # the sender restarted: a new SSRC takes over at once
    source.feed(rtp(501, payloads[6], ssrc=99))
    assert [source.pull() for _ in range(2)] == [payloads[5], payloads[6]]


def test_live_input_decodes_what_it_cannot_pass_through() -> None:
    source = LiveRtpSource(prebuffer=1)
    for i, payload in enumerate(opus_frames(6, frame_ms=60)):
        source.feed(rtp(i, payload))
    frames = [source.pull() for _ in range(18)]
    pcm = [f for f in frames if f is not None]
    assert len(pcm) == 18
    assert all(isinstance(f, np.ndarray) and f.shape == (960,) for f in pcm)
    assert source.statistics().decoded == 6
    assert source.statistics().passed_through == 0


def test_live_input_drops_the_oldest_when_the_sender_runs_ahead() -> None:
    payloads = opus_frames(1)
    source = LiveRtpSource(prebuffer=1, max_buffer=5)
    for seq in range(12):
        source.feed(rtp(seq, payloads[0]))
    assert source.statistics().buffered == 5
    assert source.statistics().dropped == 7
    source.close()
    assert source.finished
    assert source.pull() is None
