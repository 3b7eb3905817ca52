"""Built-in sources that need no file: a sine :func:`tone` and a short, recognisable :func:`demo_programme`.

Both are deterministic (same samples on every machine), 48 kHz mono, and returned as :class:`Audio` so they
can stand in for :func:`loa.codecs.load_audio` anywhere, e.g. ``loa send --tone``.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

from loa.codecs.audio import Audio, SampleType, normalised
from loa.codecs.errors import ConfigError
from loa.codecs.opus import SAMPLE_RATE

__all__ = ["demo_programme", "tone"]

_FADE_S: Final = 0.005
_NYQUIST: Final = SAMPLE_RATE / 2


def tone(seconds: float, freq: float = 440.0, *, level_dbfs: float = -18.0,
         dtype: SampleType = "int16") -> Audio:
    """A sine of ``freq`` Hz lasting ``seconds``, peaking at ``level_dbfs``, with 5 ms fades (no clicks).

    No loudness normalisation is applied (the level is explicit); its loudness is measured and reported.
    ``seconds`` must be positive, ``freq`` between 0 and 24 kHz, ``level_dbfs`` at most -1 dBFS, else
    :class:`ConfigError`.
    """
    if not seconds > 0:
        raise ConfigError(f"tone duration must be positive, not {seconds!r}")
    if not 0 < freq < _NYQUIST:
        raise ConfigError(f"tone frequency must be between 0 and {_NYQUIST:g} Hz, not {freq!r}")
    if not level_dbfs <= -1.0:
        raise ConfigError(f"tone level must be at most -1 dBFS, not {level_dbfs!r}")
    samples = _sine(round(seconds * SAMPLE_RATE), freq, 10.0 ** (level_dbfs / 20.0))
    return normalised(samples, source=f"tone:{freq:g}Hz", target_lufs=None, dtype=dtype)


def demo_programme(*, target_lufs: float | None = -16.0, dtype: SampleType = "int16") -> Audio:
    """About 8.3 s of line-up audio, normalised to ``target_lufs`` like a loaded file.

    In order: a 1 kHz ident (1 s), three ascending notes C5-E5-G5 (0.4 s each), a logarithmic chirp from
    100 Hz to 10 kHz (2.5 s), a 440+660 Hz two-tone (1 s) and a rising 8-beep count (0.15 s each), with
    250 ms silences between sections. Useful to hear level, bandwidth and dropouts by ear.
    """
    gap = np.zeros(SAMPLE_RATE // 4, dtype=np.float32)
    parts: list[npt.NDArray[np.float32]] = [_sine(SAMPLE_RATE, 1000.0, 0.5), gap]
    parts += [_sine(int(0.4 * SAMPLE_RATE), f, 0.5) for f in (523.25, 659.25, 783.99)]
    parts += [gap, _chirp(2.5, 100.0, 10_000.0, 0.5), gap]
    parts += [_sine(SAMPLE_RATE, 440.0, 0.25) + _sine(SAMPLE_RATE, 660.0, 0.25), gap]
    for i in range(8):
        parts += [_sine(int(0.15 * SAMPLE_RATE), 600.0 + 100.0 * i, 0.5), np.zeros(2400, dtype=np.float32)]
    return normalised(np.concatenate(parts), source="demo-programme", target_lufs=target_lufs, dtype=dtype)


def _fade(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    n = min(int(_FADE_S * SAMPLE_RATE), x.shape[0] // 2)
    if n > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x.astype(np.float32)


def _sine(n: int, freq: float, amplitude: float) -> npt.NDArray[np.float32]:
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    return _fade(amplitude * np.sin(2.0 * np.pi * freq * t))


def _chirp(seconds: float, f0: float, f1: float, amplitude: float) -> npt.NDArray[np.float32]:
    t = np.arange(round(seconds * SAMPLE_RATE), dtype=np.float64) / SAMPLE_RATE
    k = math.log(f1 / f0) / seconds
    phase = 2.0 * np.pi * f0 * (np.exp(k * t) - 1.0) / k
    return _fade(amplitude * np.sin(phase))
