"""Simulated inputs of a reference device that has no radio or line input: the FM tuner and the line input.

:class:`SynthPlayer` produces 20 ms frames on the device clock from a start instant: a quiet tone whose pitch
names the station (FM: ``200 + (kHz mod 800)`` Hz) or the input (line: 250 Hz), so a recording shows which
source played and when. Frames are generated only when the sink decodes; otherwise only their times advance.
"""

from __future__ import annotations

import math

import numpy as np

from loa.devices.frame import Frame, ServerClock

__all__ = ["FRAME_S", "SynthPlayer", "fm_rssi"]

FRAME_SAMPLES = 960
FRAME_S = FRAME_SAMPLES / 48_000
LEVEL = 0.05  # about -26 dBFS


def fm_rssi(khz: int) -> int:
    """The simulated signal strength of a station (dBµV), steady per frequency."""
    return 20 + (khz // 100) % 40


class SynthPlayer:
    """A simulated input (``source`` ``"fm"`` or ``"line"``) from local time ``start``."""

    def __init__(self, source: str, start: float, *, khz: int | None = None) -> None:
        self.source = source
        self.khz = khz
        self.start = start
        self.index = 0
        freq = 200.0 + (khz % 800) if source == "fm" and khz is not None else 250.0
        self._step = 2 * math.pi * freq / 48_000

    def next_time(self, clock: ServerClock) -> float | None:
        return self.start + self.index * FRAME_S

    def skip_before(self, local: float, clock: ServerClock) -> int:
        return 0

    def take(self, now: float, clock: ServerClock, decode: bool) -> Frame:
        at = self.start + self.index * FRAME_S
        pcm = None
        if decode:
            n = np.arange(self.index * FRAME_SAMPLES, (self.index + 1) * FRAME_SAMPLES, dtype=np.float64)
            pcm = (np.sin(n * self._step) * (LEVEL * 32767)).astype(np.int16)
        self.index += 1
        return Frame(at, clock.to_server_any(at), FRAME_SAMPLES, "synth", pcm)
