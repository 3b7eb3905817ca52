"""File ingest through the real PyAV/ffmpeg: every common format, loudness to target, and bad files."""

from __future__ import annotations

import random
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyloudnorm
import pytest

from loa.codecs import (
    Audio,
    ConfigError,
    FrameError,
    IngestError,
    demo_programme,
    frames,
    load_audio,
    tone,
)

FORMATS = ["mp3", "wav", "m4a", "ogg", "flac"]


def lufs(samples: npt.NDArray[np.generic]) -> float:
    """Independent measurement: pyloudnorm on the samples at full scale 1.0."""
    scale = 32768.0 if samples.dtype == np.int16 else 1.0
    return float(pyloudnorm.Meter(48_000).integrated_loudness(samples.astype(np.float64) / scale))


def write_wav(path: Path, samples: npt.NDArray[np.float64], rate: int = 48_000) -> Path:
    pcm = np.clip(np.rint(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def source_lufs() -> float:
    """BS.1770 loudness of the stereo fixture signal (see conftest), measured here from its formula."""
    t = np.arange(int(44_100 * 3.0)) / 44_100
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1500 * t)
    return float(pyloudnorm.Meter(44_100).integrated_loudness(np.stack([x, x], axis=1)))


def dominant_hz(samples: npt.NDArray[np.generic]) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.shape[0])))
    return float(np.argmax(spectrum) * 48_000 / samples.shape[0])


@pytest.mark.parametrize("ext", FORMATS)
def test_every_format_loads_as_48k_mono_at_target_loudness(make_source: Callable[[str], Path], ext: str) -> None:
    audio = load_audio(make_source(ext))
    assert isinstance(audio, Audio)
    assert audio.sample_rate == 48_000
    assert audio.samples.dtype == np.int16
    assert audio.samples.ndim == 1
    assert not audio.samples.flags.writeable
    assert audio.duration_s == pytest.approx(3.0, abs=0.05)  # 44.1 kHz resampled, encoder padding removed
    assert audio.duration_s == audio.samples.shape[0] / 48_000
    assert audio.source == f"source.{ext}"
    assert audio.loudness_lufs is not None
    assert audio.loudness_lufs == pytest.approx(source_lufs(), abs=0.5)  # measured before normalisation
    assert audio.gain_db == pytest.approx(-16.0 - audio.loudness_lufs, abs=0.01)
    assert lufs(audio.samples) == pytest.approx(-16.0, abs=1.0)
    assert dominant_hz(audio.samples) == pytest.approx(440.0, abs=2.0)  # pitch survives resampling


@pytest.mark.parametrize("target", [-30.0, -23.0, -16.0, -10.0])
def test_loudness_reaches_each_target(make_source: Callable[[str], Path], target: float) -> None:
    audio = load_audio(make_source("flac"), target_lufs=target, dtype="float32")
    assert audio.samples.dtype == np.float32
    assert lufs(audio.samples) == pytest.approx(target, abs=1.0)


def test_gain_is_capped_so_peaks_never_clip(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    quiet = 0.003 * rng.standard_normal(48_000 * 3)
    quiet[::4800] = 0.9  # sparse full-scale clicks in quiet noise: the target would need far more than 0 dBFS
    audio = load_audio(write_wav(tmp_path / "clicks.wav", quiet), target_lufs=-10.0, dtype="float32")
    assert np.max(np.abs(audio.samples)) <= 10 ** (-1 / 20) + 1e-4
    assert lufs(audio.samples) < -11.0  # did not reach the target: the peak ceiling won
    as_int = load_audio(tmp_path / "clicks.wav", target_lufs=-10.0)
    assert int(np.max(np.abs(as_int.samples.astype(np.int32)))) <= round(32767 * 10 ** (-1 / 20)) + 1


def test_no_target_means_no_loudness_gain(make_source: Callable[[str], Path]) -> None:
    audio = load_audio(make_source("wav"), target_lufs=None, dtype="float32")
    assert audio.gain_db == 0.0
    # identical stereo channels peaking at 0.4, downmixed at -3 dB each (ffmpeg's matrix): 0.4 * 2 / sqrt(2)
    assert float(np.max(np.abs(audio.samples))) == pytest.approx(0.4 * np.sqrt(2), abs=0.02)
    assert lufs(audio.samples) == pytest.approx(source_lufs(), abs=0.5)  # the downmix keeps the loudness


def test_silence_and_very_short_files_skip_normalisation(tmp_path: Path) -> None:
    silent = load_audio(write_wav(tmp_path / "silence.wav", np.zeros(96_000)))
    assert silent.loudness_lufs is None
    assert silent.gain_db == 0.0
    assert not silent.samples.any()
    short = load_audio(write_wav(tmp_path / "short.wav", 0.1 * np.sin(np.arange(9600) * 0.06)))
    assert short.loudness_lufs is None
    assert short.gain_db == 0.0
    assert short.samples.shape == (9600,)


def test_max_seconds_keeps_the_beginning(make_source: Callable[[str], Path]) -> None:
    audio = load_audio(make_source("ogg"), max_seconds=1.0)
    assert audio.samples.shape == (48_000,)


def test_a_source_at_48k_passes_through_unchanged(tmp_path: Path) -> None:
    signal = 0.25 * np.sin(2 * np.pi * 1000 * np.arange(48_000) / 48_000)
    audio = load_audio(write_wav(tmp_path / "exact.wav", signal), target_lufs=None)
    expected = np.clip(np.rint(signal * 32767), -32768, 32767)
    assert np.max(np.abs(audio.samples - expected)) <= 1


def _bad_files(folder: Path, make_source: Callable[[str], Path], ffmpeg: Callable[..., None]) -> dict[str, Path]:
    files = {"missing": folder / "missing.mp3", "directory": folder / "a-directory.wav",
             "empty": folder / "empty.mp3", "text": folder / "notes.mp3", "random": folder / "noise.mp3",
             "png": folder / "picture.png", "png-named-mp3": folder / "picture.mp3",
             "bad-header": folder / "broken.wav", "url-like": folder / "http:" / "example.com" / "x.mp3"}
    files["directory"].mkdir()
    files["empty"].write_bytes(b"")
    files["text"].write_text("these are show notes, not audio\n" * 50)
    files["random"].write_bytes(random.Random(1).randbytes(20_000))
    ffmpeg("-f", "lavfi", "-i", "color=red:s=32x32", "-frames:v", "1", str(files["png"]))
    files["png-named-mp3"].write_bytes(files["png"].read_bytes())
    wav = bytearray(make_source("wav").read_bytes())
    wav[:44] = b"\x5a" * 44
    files["bad-header"].write_bytes(bytes(wav))
    return files


def test_bad_inputs_raise_ingest_error_naming_the_file(tmp_path: Path, make_source: Callable[[str], Path],
                                                       ffmpeg: Callable[..., None]) -> None:
    files = _bad_files(tmp_path, make_source, ffmpeg)
    expected = {"missing": "no such file", "directory": "is a directory", "empty": "empty file",
                "text": "not an audio file", "random": "not an audio file", "png": "not an audio file",
                "png-named-mp3": "no audio stream", "bad-header": "not an audio file", "url-like": "no such file"}
    for kind, path in files.items():
        with pytest.raises(IngestError) as info:
            load_audio(path)
        message = str(info.value)
        assert message.startswith(f"cannot read '{path}': "), (kind, message)
        assert expected[kind] in message, (kind, message)
        assert info.value.path == str(path)
        assert "\n" not in message


def test_bad_arguments_are_config_errors(make_source: Callable[[str], Path]) -> None:
    with pytest.raises(ConfigError):
        load_audio(make_source("wav"), max_seconds=0)
    with pytest.raises(ConfigError):
        load_audio(make_source("wav"), dtype="int8")  # type: ignore[arg-type]


def test_frames_pad_the_last_frame_with_zeros() -> None:
    audio = tone(0.05, 440.0)  # 2400 samples: two 20 ms frames and a half
    chunks = list(frames(audio, 20))
    assert [c.shape for c in chunks] == [(960,)] * 3
    assert all(c.dtype == np.int16 for c in chunks)
    assert np.array_equal(np.concatenate(chunks)[:2400], audio.samples)
    assert not chunks[2][480:].any()
    assert np.shares_memory(chunks[0], audio.samples)  # whole frames are views, no copy
    assert list(frames(np.zeros(0, np.int16), 10)) == []
    assert len(list(frames(np.zeros(2880, np.int16), 60))) == 1


def test_frames_convert_float_audio_and_check_arguments() -> None:
    float_audio = tone(0.04, 440.0, dtype="float32")
    int_audio = tone(0.04, 440.0)
    for a, b in zip(frames(float_audio, 40), frames(int_audio, 40), strict=True):
        assert np.max(np.abs(a.astype(np.int32) - b)) <= 1
    with pytest.raises(ConfigError):
        frames(int_audio, 30)
    with pytest.raises(FrameError):
        frames(np.zeros((2, 960), np.int16), 20)
    with pytest.raises(FrameError):
        frames(np.zeros(960, np.float64), 20)  # type: ignore[arg-type]


def test_tone_has_the_requested_pitch_and_level() -> None:
    audio = tone(1.0, 1000.0, level_dbfs=-12.0)
    assert audio.samples.shape == (48_000,)
    assert dominant_hz(audio.samples) == pytest.approx(1000.0, abs=1.0)
    assert 20 * np.log10(np.max(np.abs(audio.samples)) / 32767) == pytest.approx(-12.0, abs=0.05)
    assert audio.gain_db == 0.0
    assert audio.source == "tone:1000Hz"
    for bad in ({"seconds": 0}, {"freq": 30_000.0}, {"level_dbfs": 0.0}):
        with pytest.raises(ConfigError):
            tone(**{"seconds": 1.0, **bad})  # type: ignore[arg-type]


def test_demo_programme_is_deterministic_and_at_target() -> None:
    first, second = demo_programme(), demo_programme()
    assert np.array_equal(first.samples, second.samples)
    assert 7.0 < first.duration_s < 10.0
    assert lufs(first.samples) == pytest.approx(-16.0, abs=1.0)
    assert lufs(demo_programme(target_lufs=-23.0, dtype="float32").samples) == pytest.approx(-23.0, abs=1.0)
