"""Programme loudness: ITU-R BS.1770-4 integrated loudness (pyloudnorm) and a true-peak-safe gain.

Loudness normalisation makes every stored programme play at the same perceived level; the gain is capped
so the estimated true peak (4x oversampled, as BS.1770-4 Annex 2 does) stays at or below -1 dBFS, so a
programme is never clipped to reach its target: a very dynamic programme ends up quieter than the target
rather than distorted.

Nothing here raises for odd input: silence, digital near-silence and programmes shorter than one 400 ms
gating block have no measurable loudness (``None``) and get no loudness gain.
"""

from __future__ import annotations

import math
import warnings
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["TRUE_PEAK_CEILING_DBFS", "loudness_gain_db", "measure_loudness", "true_peak"]

#: The highest true peak a normalised programme may reach.
TRUE_PEAK_CEILING_DBFS: Final = -1.0
_BLOCK_S: Final = 0.4  # BS.1770 gating block
_OVERSAMPLE: Final = 4
_HALF_TAPS: Final = 6  # Lanczos a=6: 12 taps per interpolation phase
_CHUNK: Final = 1 << 18


def measure_loudness(samples: npt.NDArray[np.floating], sample_rate: int = 48_000) -> float | None:
    """Integrated loudness in LUFS of mono ``samples`` (full scale = 1.0), or ``None`` when unmeasurable.

    Unmeasurable means shorter than one 400 ms block, or every block below the -70 LUFS absolute gate
    (silence), where pyloudnorm would return -inf.
    """
    if samples.shape[0] <= int(_BLOCK_S * sample_rate) or not np.any(samples):
        return None
    import pyloudnorm  # pulls in scipy (~1 s): paid only by callers that measure loudness

    meter = pyloudnorm.Meter(sample_rate)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # log10(0) of all-silent blocks, handled below
        lufs = float(meter.integrated_loudness(samples))
    return lufs if math.isfinite(lufs) else None


def true_peak(samples: npt.NDArray[np.floating]) -> float:
    """Estimated true peak (linear, full scale = 1.0): the larger of the sample peak and the peak of a
    4x oversampled (Lanczos-interpolated) signal. Memory use is bounded (processed in chunks)."""
    if samples.size == 0:
        return 0.0
    peak = float(np.max(np.abs(samples)))
    taps = 2 * _HALF_TAPS
    if samples.size < taps or peak == 0.0:
        return peak
    for kernel in _PHASES:
        for start in range(0, samples.size - taps + 1, _CHUNK):
            segment = samples[start:start + _CHUNK + taps - 1]
            peak = max(peak, float(np.max(np.abs(np.correlate(segment, kernel, mode="valid")))))
    return peak


def loudness_gain_db(loudness_lufs: float | None, peak: float, target_lufs: float | None, *,
                     max_gain_db: float = 30.0) -> float:
    """Gain in dB to apply to reach ``target_lufs`` without the true ``peak`` (linear) exceeding -1 dBFS.

    With ``target_lufs`` or ``loudness_lufs`` ``None`` there is no loudness gain, but a programme whose
    peak already exceeds the ceiling is still attenuated to it (so converting to int16 never clips).
    Boosts are limited to ``max_gain_db`` so near-silent noise is not raised to programme level.
    """
    gain = 0.0
    if target_lufs is not None and loudness_lufs is not None:
        gain = min(target_lufs - loudness_lufs, max_gain_db)
    if peak > 0.0:
        headroom = TRUE_PEAK_CEILING_DBFS - 20.0 * math.log10(peak)
        gain = min(gain, headroom)
    return gain


def _lanczos_phases() -> tuple[npt.NDArray[np.float32], ...]:
    n = np.arange(-_HALF_TAPS + 1, _HALF_TAPS + 1, dtype=np.float64)
    phases = []
    for k in range(1, _OVERSAMPLE):
        t = n - k / _OVERSAMPLE
        kernel = np.sinc(t) * np.sinc(t / _HALF_TAPS)
        phases.append((kernel / kernel.sum()).astype(np.float32))
    return tuple(phases)


_PHASES: Final = _lanczos_phases()
