"""A simulated device clock: a rate error and an offset against the true (or host) timeline.

``local = true × (1 + drift_ppm · 10⁻⁶) + offset_s``. A simulated device passes local times to its core, as a
real device passes its own clock; tests and the fleet compare devices on the true timeline with :meth:`true`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SimulatedClock"]


@dataclass(frozen=True, slots=True)
class SimulatedClock:
    """``drift_ppm`` positive: the device clock runs fast. Both directions are exact to within one ulp, and
    :meth:`true` rounds up so that ``local(true(x)) >= x`` (a timer set for local ``x`` never fires early)."""

    drift_ppm: float = 0.0
    offset_s: float = 0.0

    @property
    def rate(self) -> float:
        return 1.0 + self.drift_ppm * 1e-6

    def local(self, true_time: float) -> float:
        return true_time * self.rate + self.offset_s

    def true(self, local_time: float) -> float:
        t = (local_time - self.offset_s) / self.rate
        step = math.ulp(max(abs(t), abs(local_time), 1.0))
        for _ in range(64):  # bounded: float rounding needs a few ulps at most
            if self.local(t) >= local_time:
                break
            t += step
            step *= 2
        return t
