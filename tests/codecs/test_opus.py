"""Opus frames over the real libopus: round trips, FEC against PLC, DTX, bitrate, and hostile packets."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loa.codecs import (
    FRAME_DURATIONS_MS,
    Audio,
    CodecError,
    ConfigError,
    CorruptPacketError,
    FrameError,
    OpusDecoder,
    OpusEncoder,
    demo_programme,
    frame_samples,
    frames,
    libopus_version,
    packet_samples,
    tone,
)


def ncc(a: npt.NDArray[np.generic], b: npt.NDArray[np.generic]) -> float:
    x, y = a.astype(np.float64), b.astype(np.float64)
    return float(x @ y / np.sqrt((x @ x) * (y @ y)))


def snr_db(reference: npt.NDArray[np.generic], test: npt.NDArray[np.generic]) -> float:
    x, y = reference.astype(np.float64), test.astype(np.float64)
    return float(10 * np.log10((x @ x) / max(float((x - y) @ (x - y)), 1e-9)))


def round_trip(audio: Audio, encoder: OpusEncoder) -> npt.NDArray[np.int16]:
    decoder = OpusDecoder()
    return np.concatenate([decoder.decode(encoder.encode(f)) for f in frames(audio, encoder.frame_ms)])


def test_libopus_is_loaded() -> None:
    assert libopus_version().startswith("libopus ")


@pytest.mark.parametrize("frame_ms", FRAME_DURATIONS_MS)
@pytest.mark.parametrize("application", ["audio", "voip"])
def test_every_frame_size_round_trips_a_tone(frame_ms: int, application: str) -> None:
    audio = tone(1.0, 440.0)
    pcm = audio.samples
    encoder = OpusEncoder(frame_ms=frame_ms, application=application)  # type: ignore[arg-type]
    n = frame_samples(frame_ms)
    packet = encoder.encode(next(iter(frames(audio, frame_ms))))
    assert packet_samples(packet) == n
    encoder.reset()
    out = round_trip(audio, encoder)
    assert out.dtype == np.int16
    assert out.shape[0] == -(-pcm.shape[0] // n) * n
    delay = encoder.lookahead  # the decoded signal lags the input by the encoder lookahead
    assert delay == 312
    assert ncc(pcm[: pcm.shape[0] - delay], out[delay: pcm.shape[0]]) >= 0.95


def test_float32_frames_encode_like_int16() -> None:
    audio = tone(0.5, 1000.0, dtype="float32")
    encoder = OpusEncoder()
    out = round_trip(audio, encoder)
    decoder, float_encoder = OpusDecoder(), OpusEncoder()
    direct = np.concatenate([decoder.decode(float_encoder.encode(f.astype(np.float32) / np.float32(32767)))
                             for f in frames(audio, 20)])
    assert ncc(out, direct) > 0.99


@pytest.mark.parametrize("frame_ms", [0, 5, 15, 25, 30, 2.5, 100, True, "20"])
def test_unsupported_frame_durations_are_config_errors(frame_ms: object) -> None:
    with pytest.raises(ConfigError) as info:
        OpusEncoder(frame_ms=frame_ms)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("name", "value"), [("bitrate", 100), ("bitrate", 600_000), ("complexity", 11),
                                             ("complexity", -1), ("packet_loss_percent", 101),
                                             ("application", "music"), ("bitrate", 32000.0)])
def test_bad_settings_are_config_errors(name: str, value: object) -> None:
    with pytest.raises(ConfigError):
        OpusEncoder(**{name: value})  # type: ignore[arg-type]
    encoder = OpusEncoder()
    if name != "application":
        with pytest.raises(ConfigError):
            setattr(encoder, name, value)


@pytest.mark.parametrize("frame", [np.zeros(959, np.int16), np.zeros((960, 1), np.int16),
                                   np.zeros(960, np.int32), np.zeros(960, np.float64), [0] * 960, b"\0" * 1920])
def test_wrong_frames_are_frame_errors(frame: object) -> None:
    with pytest.raises(FrameError):
        OpusEncoder().encode(frame)  # type: ignore[arg-type]


def test_settings_can_change_between_frames() -> None:
    encoder = OpusEncoder(bitrate=16_000)
    pcm = demo_programme().samples
    chunks = list(frames(pcm, 20))
    low = [len(encoder.encode(f)) for f in chunks[:100]]
    encoder.bitrate, encoder.complexity, encoder.fec, encoder.dtx = 96_000, 5, True, True
    assert (encoder.bitrate, encoder.complexity, encoder.fec, encoder.dtx) == (96_000, 5, True, True)
    high = [len(encoder.encode(f)) for f in chunks[100:200]]
    assert np.mean(high) > 3 * np.mean(low)


def test_bitrate_sets_average_packet_size() -> None:
    chunks = list(frames(demo_programme().samples, 20))
    sizes = []
    for bitrate in (16_000, 32_000, 64_000, 128_000):
        encoder = OpusEncoder(bitrate=bitrate)
        mean_bytes = np.mean([len(encoder.encode(f)) for f in chunks])
        sizes.append(mean_bytes)
        assert mean_bytes * 8 * 50 == pytest.approx(bitrate, rel=0.25)  # 50 packets a second
    assert sizes == sorted(sizes)


def test_dtx_sends_tiny_packets_in_silence() -> None:
    silence = np.zeros(960, np.int16)
    with OpusEncoder(application="voip", dtx=True) as dtx, OpusEncoder(application="voip") as plain:
        dtx_sizes = [len(dtx.encode(silence)) for _ in range(50)]
        plain_sizes = [len(plain.encode(silence)) for _ in range(50)]
    assert sum(size <= 2 for size in dtx_sizes) >= 35  # DTX engages after ~200 ms of silence
    assert min(plain_sizes[10:]) > 2
    decoder = OpusDecoder()
    with OpusEncoder(application="voip", dtx=True) as dtx:
        for _ in range(20):
            packet = dtx.encode(silence)
        assert len(packet) <= 2
        assert decoder.decode(packet).shape == (960,)  # a DTX packet still decodes to a frame of (near) silence


def _loss_trial(fec: bool) -> list[tuple[float, float]]:
    """For lost frames along the demo programme: (SNR of FEC recovery, SNR of PLC) against the original."""
    pcm = demo_programme().samples
    encoder = OpusEncoder(application="voip", bitrate=24_000, fec=fec, packet_loss_percent=20)
    packets = [encoder.encode(f) for f in frames(pcm, 20)]
    delay = encoder.lookahead
    results = []
    for lost in range(20, len(packets) - 1, 11):
        original = pcm[lost * 960 - delay:(lost + 1) * 960 - delay]
        if np.abs(original).max() < 1000:  # a lost frame of silence tells nothing
            continue
        with_fec, with_plc = OpusDecoder(), OpusDecoder()
        for packet in packets[lost - 10:lost]:
            with_fec.decode(packet)
            with_plc.decode(packet)
        recovered = with_fec.decode_fec(packets[lost + 1], 960)
        concealed = with_plc.conceal(960)
        assert recovered.shape == concealed.shape == (960,)
        results.append((snr_db(original, recovered), snr_db(original, concealed)))
    return results


def test_fec_recovers_a_lost_frame_better_than_plc() -> None:
    results = np.array(_loss_trial(fec=True))
    assert len(results) >= 20
    fec, plc = results[:, 0], results[:, 1]
    assert fec.mean() > plc.mean() + 2.0  # dB
    assert (fec > plc).mean() >= 0.7


def test_without_fec_data_decode_fec_falls_back_to_concealment() -> None:
    results = np.array(_loss_trial(fec=False))
    assert np.allclose(results[:, 0], results[:, 1])


@pytest.mark.parametrize("samples", [0, 100, 121, 5761, -960, 960.0])
def test_conceal_and_fec_durations_are_checked(samples: object) -> None:
    decoder = OpusDecoder()
    with pytest.raises(ConfigError):
        decoder.conceal(samples)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        decoder.decode_fec(b"\xf8\xff\xfe", samples)  # type: ignore[arg-type]


@pytest.mark.parametrize("packet", [b"", b"\x03", b"\x03\x00", b"\x03\x3f" + b"\0" * 10, b"\x02\xff",
                                    b"\x03\x41\xff\xff"])
def test_corrupt_packets_raise_and_the_decoder_survives(packet: bytes) -> None:
    encoder, decoder = OpusEncoder(), OpusDecoder()
    good = encoder.encode(np.zeros(960, np.int16))
    with pytest.raises(CorruptPacketError):
        decoder.decode(packet)
    assert decoder.decode(good).shape == (960,)


def test_decoder_accepts_bytes_like_packets() -> None:
    good = OpusEncoder().encode(next(iter(frames(tone(0.02, 440.0), 20))))
    decoder = OpusDecoder()
    for packet in (good, bytearray(good), memoryview(good)):
        assert decoder.decode(packet).shape == (960,)


def test_closed_codecs_raise_codec_errors() -> None:
    encoder, decoder = OpusEncoder(), OpusDecoder()
    packet = encoder.encode(np.zeros(960, np.int16))
    encoder.close()
    decoder.close()
    encoder.close()  # idempotent
    assert encoder.closed
    assert decoder.closed
    with pytest.raises(CodecError):
        encoder.encode(np.zeros(960, np.int16))
    with pytest.raises(CodecError):
        encoder.bitrate = 20_000
    with pytest.raises(CodecError):
        decoder.decode(packet)


def test_output_arrays_are_independent_of_the_decoder_buffer() -> None:
    encoder, decoder = OpusEncoder(), OpusDecoder()
    chunks = list(frames(tone(0.1, 440.0).samples, 20))
    first = decoder.decode(encoder.encode(chunks[2]))
    kept = first.copy()
    decoder.decode(encoder.encode(chunks[3]))
    assert np.array_equal(first, kept)


@pytest.mark.parametrize(("packet", "samples"), [(b"\x00", 480), (b"\x08", 960), (b"\x18", 2880), (b"\x60", 480),
                                                 (b"\x80", 120), (b"\xf8", 960), (b"\xf9", 1920), (b"\xfa", 1920),
                                                 (b"\x1b\x02", 5760), (b"\xfb\x06", 5760)])
def test_packet_samples_reads_the_toc(packet: bytes, samples: int) -> None:
    assert packet_samples(packet) == samples


@pytest.mark.parametrize("packet", [b"", b"\x03", b"\x03\x00", b"\x1b\x03", b"\xfb\x07"])
def test_packet_samples_rejects_impossible_packets(packet: bytes) -> None:
    with pytest.raises(CorruptPacketError):
        packet_samples(packet)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=1500))
def test_arbitrary_bytes_decode_or_raise_corrupt_packet(packet: bytes) -> None:
    decoder = OpusDecoder()
    for run in (decoder.decode, lambda p: decoder.decode_fec(p, 960)):
        try:
            out = run(packet)
        except CorruptPacketError:
            continue
        assert out.dtype == np.int16
        assert out.ndim == 1
        assert out.shape[0] % 120 == 0
        assert out.shape[0] <= 5760
