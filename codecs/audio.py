"""Programme audio in memory: the :class:`Audio` value, its loudness normalisation, and framing for Opus.

Every source (a decoded file, a test tone) ends up as an :class:`Audio`: 48 kHz mono samples, ``int16`` or
``float32``, read-only, with the loudness measured before normalisation and the gain that was applied.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from loa.codecs.errors import ConfigError, FrameError
from loa.codecs.loudness import loudness_gain_db, measure_loudness, true_peak
from loa.codecs.opus import SAMPLE_RATE, frame_samples

__all__ = ["Audio", "SampleType", "frames", "normalised"]

SampleType = Literal["int16", "float32"]
_INT16_SCALE: Final = 32767.0


@dataclass(frozen=True, eq=False)
class Audio:
    """48 kHz mono programme audio.

    ``samples`` is a read-only 1-D array, ``int16`` or ``float32`` (full scale 1.0); ``loudness_lufs`` is
    the integrated loudness *before* normalisation (``None`` when unmeasurable: silence or under 400 ms);
    ``gain_db`` is the gain that was applied; ``source`` names where the audio came from (a file name, or
    e.g. ``"tone:440Hz"``).
    """

    samples: npt.NDArray[np.int16] | npt.NDArray[np.float32]
    sample_rate: int
    duration_s: float
    loudness_lufs: float | None
    gain_db: float
    source: str

    def __repr__(self) -> str:
        lufs = "n/a" if self.loudness_lufs is None else f"{self.loudness_lufs:.1f} LUFS"
        return (f"Audio({self.source!r}, {self.duration_s:.3f} s, {self.samples.dtype}, {lufs}, "
                f"gain {self.gain_db:+.1f} dB)")


def normalised(samples: npt.NDArray[np.float32], *, source: str, target_lufs: float | None = -16.0,
               dtype: SampleType = "int16", max_gain_db: float = 30.0) -> Audio:
    """Measure ``samples`` (48 kHz mono float32, full scale 1.0), apply the loudness gain and build an Audio.

    The gain brings the programme to ``target_lufs`` unless that would push its true peak above -1 dBFS
    (then the gain stops at the peak ceiling); ``target_lufs=None`` applies no loudness gain (only the
    attenuation needed if the peak already exceeds the ceiling). Unmeasurable loudness (silence, under
    400 ms) means no loudness gain. ``samples`` may be modified in place.
    """
    if dtype not in ("int16", "float32"):
        raise ConfigError(f"sample type must be 'int16' or 'float32', not {dtype!r}")
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    loudness = measure_loudness(samples)
    gain_db = loudness_gain_db(loudness, true_peak(samples), target_lufs, max_gain_db=max_gain_db)
    if gain_db != 0.0:
        samples *= np.float32(10.0 ** (gain_db / 20.0))
    out: npt.NDArray[np.int16] | npt.NDArray[np.float32] = _to_int16(samples) if dtype == "int16" else samples
    out.flags.writeable = False
    return Audio(out, SAMPLE_RATE, out.shape[0] / SAMPLE_RATE, loudness, round(gain_db, 3), source)


def frames(audio: Audio | npt.NDArray[np.int16] | npt.NDArray[np.float32],
           frame_ms: int) -> Iterator[npt.NDArray[np.int16]]:
    """Yield consecutive ``int16`` frames of ``frame_ms`` (10, 20, 40 or 60) from 48 kHz mono audio.

    The last frame is padded with zeros to full length; empty audio yields nothing. ``int16`` input is
    yielded as views (no copy, read-only when the Audio is); ``float32`` input (full scale 1.0) is converted
    once. A bad ``frame_ms`` raises :class:`ConfigError`, a non-1-D or other-typed array :class:`FrameError`.
    """
    n = frame_samples(frame_ms)
    samples = audio.samples if isinstance(audio, Audio) else audio
    if not isinstance(samples, np.ndarray) or samples.ndim != 1:
        raise FrameError("frames() needs 1-D mono samples")
    pcm: npt.NDArray[np.int16]
    if samples.dtype == np.int16:
        pcm = samples.view(np.int16)
    elif samples.dtype == np.float32:
        pcm = _to_int16(samples.view(np.float32))
    else:
        raise FrameError(f"frames() takes int16 or float32 samples, not {samples.dtype}")
    return _frames(pcm, n)


def _frames(pcm: npt.NDArray[np.int16], n: int) -> Iterator[npt.NDArray[np.int16]]:
    whole = pcm.shape[0] // n * n
    for start in range(0, whole, n):
        yield pcm[start:start + n]
    if whole < pcm.shape[0]:
        last = np.zeros(n, dtype=np.int16)
        last[:pcm.shape[0] - whole] = pcm[whole:]
        yield last


def _to_int16(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    """Full scale 1.0 float to int16, rounded, saturating instead of wrapping."""
    scaled: npt.NDArray[np.float32] = samples * np.float32(_INT16_SCALE)
    np.rint(scaled, out=scaled)
    np.minimum(scaled, np.float32(32767.0), out=scaled)
    np.maximum(scaled, np.float32(-32768.0), out=scaled)
    return scaled.astype(np.int16)
