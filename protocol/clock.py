"""Clock synchronisation (spec section 4.7): the device's estimate of server time, sans-I/O.

Every probe is the NTP four-timestamp exchange: ``t1`` device clock when ``time_req`` left, ``t2`` server
time when it arrived, ``t3`` server time when ``time_resp`` left, ``t4`` device clock when that arrived::

    offset = ((t2 - t1) + (t3 - t4)) / 2        server time minus device clock
    delay  = (t4 - t1) - (t3 - t2)              round-trip time on the network

A sample's offset is wrong by at most half of the part of its delay that is not the path's minimum, so
:class:`ClockEstimator` trusts the samples of least delay: the ones within ``DELAY_MARGIN_NS`` of the least
delay in its window (at least ``MIN_GOOD``, at most ``MAX_GOOD``). It fits the drift as the median of the
pairwise slopes of those samples (Theil-Sen) and the offset as the median of their drift-corrected offsets
(a median filter, as Snapcast uses), both over a window of ``WINDOW`` samples. All times are integer
nanoseconds.

Bad samples are refused and counted, never raised: negative delay, a server that answered before it was
asked, delays over ``MAX_DELAY_NS``; and, once ready, a sample whose offset interval
``[offset - delay/2, offset + delay/2]`` misses the current estimate by more than the estimate's own
uncertainty (half the largest delay among the samples it trusts, plus what a drift error can add) plus
1 ms: a clock step somewhere.
``STEP_SAMPLES`` such samples in a row that agree with each other mean a real step: the estimator starts again
from them.
"""

from __future__ import annotations

import statistics as _stats
from collections import deque
from dataclasses import dataclass

from loa.protocol.errors import LocalProtocolError

__all__ = [
    "DELAY_MARGIN_NS",
    "MAX_DELAY_NS",
    "MIN_SAMPLES",
    "PROBE_FAST_COUNT",
    "PROBE_FAST_INTERVAL_NS",
    "PROBE_INTERVAL_NS",
    "WINDOW",
    "ClockEstimate",
    "ClockEstimator",
    "ClockSample",
    "ClockStatistics",
    "clock_sample",
]

WINDOW = 256
MIN_SAMPLES = 8
MIN_GOOD = 4
MAX_GOOD = 32
DELAY_MARGIN_NS = 1_000_000
MAX_DELAY_NS = 10_000_000_000
MIN_DRIFT_SPAN_NS = 10_000_000_000
MIN_PAIR_SPAN_NS = 2_000_000_000
MAX_DRIFT = 500e-6
STEP_TOLERANCE_NS = 1_000_000
STEP_SAMPLES = 3
PROBE_FAST_INTERVAL_NS = 1_000_000_000
PROBE_FAST_COUNT = 60
PROBE_INTERVAL_NS = 5_000_000_000
_I64 = 2**63


@dataclass(frozen=True, slots=True)
class ClockSample:
    """One exchange: ``local`` is the device clock at its middle, ``(t1 + t4) / 2``."""

    local: int
    offset: int
    delay: int


def clock_sample(t1: int, t2: int, t3: int, t4: int) -> ClockSample:
    """The offset and delay of one exchange (no checks; see :meth:`ClockEstimator.add`)."""
    return ClockSample((t1 + t4) // 2, ((t2 - t1) + (t3 - t4)) // 2, (t4 - t1) - (t3 - t2))


@dataclass(frozen=True, slots=True)
class ClockEstimate:
    """The current estimate: server time minus device clock at ``reference_local`` (the latest sample), and
    ``drift_ppm``, the device clock's rate error (positive when it runs fast), as telemetry reports them."""

    offset_ns: int
    drift_ppm: float
    reference_local: int
    error_ns: int
    samples: int
    ready: bool


@dataclass(frozen=True, slots=True)
class ClockStatistics:
    accepted: int
    negative_delay: int
    absurd: int
    inconsistent: int
    resets: int


def _agree(a: ClockSample, b: ClockSample) -> bool:
    return abs(a.offset - b.offset) <= (a.delay + b.delay) // 2 + STEP_TOLERANCE_NS


class ClockEstimator:
    """Offset and drift of the device clock against server time, from four-timestamp exchanges.

    Probe schedule it is made for (:meth:`probe_interval`): one probe per second for the first
    ``PROBE_FAST_COUNT`` accepted samples after start or a reset, then one every 5 s. It is :attr:`ready`
    after ``MIN_SAMPLES`` accepted samples; the accuracy then keeps improving as the window fills.
    """

    def __init__(self) -> None:
        self._samples: deque[ClockSample] = deque(maxlen=WINDOW)
        self._offset = 0
        self._drift = 0.0
        self._ref = 0
        self._error = 0
        self._good_delay = 0
        self._good_oldest = 0
        self._fitted = False
        self._since_reset = 0
        self._suspects: list[ClockSample] = []
        self._counts = {"accepted": 0, "negative_delay": 0, "absurd": 0, "inconsistent": 0, "resets": 0}

    @property
    def ready(self) -> bool:
        return len(self._samples) >= MIN_SAMPLES

    def probe_interval(self) -> int:
        """Nanoseconds to wait before the next ``time_req`` (device clock)."""
        return PROBE_FAST_INTERVAL_NS if self._since_reset < PROBE_FAST_COUNT else PROBE_INTERVAL_NS

    def add(self, t1: int, t2: int, t3: int, t4: int) -> bool:
        """Add one exchange; returns whether it was accepted (refusals are counted in :meth:`statistics`)."""
        if not all(-_I64 <= t < _I64 for t in (t1, t2, t3, t4)) or t3 < t2 or t4 < t1:
            self._counts["absurd"] += 1
            return False
        sample = clock_sample(t1, t2, t3, t4)
        if sample.delay < 0:
            self._counts["negative_delay"] += 1
            return False
        if sample.delay > MAX_DELAY_NS:
            self._counts["absurd"] += 1
            return False
        if self.ready and not self._consistent(sample):
            self._counts["inconsistent"] += 1
            self._suspects = [s for s in self._suspects if _agree(s, sample)] + [sample]
            if len(self._suspects) < STEP_SAMPLES:
                return False
            self._counts["resets"] += 1
            self._samples.clear()
            self._since_reset = 0
            for suspect in self._suspects[:-1]:
                self._samples.append(suspect)
                self._since_reset += 1
        self._suspects.clear()
        self._samples.append(sample)
        self._since_reset += 1
        self._counts["accepted"] += 1
        self._fit()
        return True

    def _consistent(self, sample: ClockSample) -> bool:
        predicted = self.to_server(sample.local) - sample.local
        rate_error = 1e-5 if self._fitted else 1e-4
        tolerance = (
            (sample.delay + self._good_delay) // 2
            + STEP_TOLERANCE_NS
            + int(rate_error * abs(sample.local - self._good_oldest))
        )
        return abs(sample.offset - predicted) <= tolerance

    def _fit(self) -> None:
        samples = self._samples
        ref = samples[-1].local
        by_delay = sorted(samples, key=lambda s: s.delay)
        least = by_delay[0].delay
        good = [s for s in by_delay[:MAX_GOOD] if s.delay <= least + DELAY_MARGIN_NS]
        if len(good) < MIN_GOOD:
            good = by_delay[:MIN_GOOD]
        drift = 0.0
        fitted = False
        if samples[-1].local - samples[0].local >= MIN_DRIFT_SPAN_NS:
            slopes = [
                (b.offset - a.offset) / (b.local - a.local)
                for a in good
                for b in good
                if b.local - a.local >= MIN_PAIR_SPAN_NS
            ]
            if slopes:
                drift = min(max(_stats.median(slopes), -MAX_DRIFT), MAX_DRIFT)
                fitted = True
        residuals = [s.offset - drift * (s.local - ref) for s in good]
        offset = _stats.median(residuals)
        spread = _stats.median(abs(r - offset) for r in residuals)
        self._offset = round(offset)
        self._drift = drift
        self._ref = ref
        self._good_delay = max(s.delay for s in good)
        self._good_oldest = min(s.local for s in good)
        self._fitted = fitted
        self._error = round(spread + (_stats.median(s.delay for s in good) - least) / 2)

    def to_server(self, local_ns: int) -> int:
        """Server time at device clock ``local_ns``. Raises :class:`LocalProtocolError` before any sample."""
        if not self._samples:
            raise LocalProtocolError("no clock sample yet")
        return local_ns + self._offset + round(self._drift * (local_ns - self._ref))

    def to_local(self, server_ns: int) -> int:
        """Device clock at server time ``server_ns`` (the inverse of :meth:`to_server`, to within 1 ns)."""
        if not self._samples:
            raise LocalProtocolError("no clock sample yet")
        return self._ref + round((server_ns - self._ref - self._offset) / (1 + self._drift))

    def estimate(self) -> ClockEstimate:
        drift_ppm = (1 / (1 + self._drift) - 1) * 1e6
        return ClockEstimate(self._offset, drift_ppm, self._ref, self._error, len(self._samples), self.ready)

    def statistics(self) -> ClockStatistics:
        return ClockStatistics(**self._counts)
