"""Clock synchronisation (spec section 4.7): the device's estimate of server time, sans-I/O.

Every probe is the NTP four-timestamp exchange: ``t1`` device clock when ``time_req`` left, ``t2`` server
time when it arrived, ``t3`` server time when ``time_resp`` left, ``t4`` device clock when that arrived::

    offset = ((t2 - t1) + (t3 - t4)) / 2        server time minus device clock
    delay  = (t4 - t1) - (t3 - t2)              round-trip time on the network

Whatever the delays were, an exchange bounds the true offset ``θ`` from both sides: the request cannot arrive
before it left, so ``θ <= t2 - t1 = offset + delay/2`` (its *forward bound*), and the answer cannot arrive
before it left, so ``θ >= t3 - t4 = offset - delay/2`` (its *backward bound*). Queueing in either direction, a
``t1`` taken before a late send or a ``t4`` taken after a late read only loosens a bound, never makes it wrong.
Over the window of ``WINDOW`` exchanges ``θ`` is a line in device time (offset and drift).
:class:`ClockEstimator` takes the line that leaves the widest gap between the lowest forward bounds and the
highest backward bounds (the drift within ``±MAX_DRIFT``, and 0 until the window spans ``MIN_DRIFT_SPAN_NS``),
and the offset in the middle of that gap. Each side of the gap is set by the exchange whose delay *in that
direction* was least, so it takes one exchange with an unqueued request and another with an unqueued answer,
not both in one exchange: on a path whose one-way trips are queued half the time, a quarter of the exchanges are
unqueued both ways, but half of them give a tight bound on one side. The error is half the difference between
the two directions' least excess delays in the window, plus a drift error times the distance to the window; a
constant difference between the two directions' least delays adds half of itself, which no estimator can see.
All times are integer nanoseconds.

Bad samples are refused and counted, never raised: negative delay, a server that answered before it was
asked, delays over ``MAX_DELAY_NS``; and a sample whose bounds contradict the window's: with it, no line with a
drift within ``±MAX_DRIFT`` keeps within ``STEP_TOLERANCE_NS`` (1 ms) of every bound, where the window alone had
one (or it contradicts more than the window alone did): a clock step somewhere. Delay alone never makes a sample
contradict anything. ``STEP_SAMPLES`` such samples in a row that agree with each other mean a real step: the
estimator starts again from them.
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from loa.protocol.errors import LocalProtocolError

__all__ = [
    "MAX_DELAY_NS",
    "MAX_DRIFT",
    "MIN_DRIFT_SPAN_NS",
    "MIN_SAMPLES",
    "PROBE_FAST_COUNT",
    "PROBE_FAST_INTERVAL_NS",
    "PROBE_INTERVAL_NS",
    "STEP_SAMPLES",
    "STEP_TOLERANCE_NS",
    "WINDOW",
    "ClockEstimate",
    "ClockEstimator",
    "ClockSample",
    "ClockStatistics",
    "clock_sample",
]

WINDOW = 256
MIN_SAMPLES = 8
MAX_DELAY_NS = 10_000_000_000
MIN_DRIFT_SPAN_NS = 10_000_000_000
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
    ``drift_ppm``, the device clock's rate error (positive when it runs fast), as telemetry reports them.
    ``error_ns`` is a typical error, not a bound: half the sum of the spacings between the two tightest bounds
    of each direction (an estimate of how far each direction's tightest bound is from the path's least delay);
    a constant asymmetry of the path is not in it."""

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


Point = tuple[int, int]
_Bounds = tuple[int, int, int]  # a sample's x and its forward and backward y (see ClockEstimator)


@dataclass(frozen=True, slots=True)
class _Fit:
    offset: int  # server time minus device clock at ``ref``
    drift: float
    ref: int
    gap: float  # ns: the widest gap between the two sides' bounds over all drifts allowed; < 0: they contradict
    round_trip: float  # ns: the gap at the fitted drift (ClockEstimator.round_trip_ns)


_NO_FIT = _Fit(0, 0.0, 0, 0.0, 0.0)


def _push(hull: list[Point], p: Point) -> None:
    """Extend a lower convex hull (points sorted by x) by ``p``, at or right of its last point."""
    px, py = p
    while hull:
        qx, qy = hull[-1]
        if qx == px:  # one point per x: the lower
            if qy <= py:
                return
            hull.pop()
            continue
        if len(hull) < 2:
            break
        ox, oy = hull[-2]
        if (qx - ox) * (py - oy) - (qy - oy) * (px - ox) > 0:
            break
        hull.pop()
    hull.append(p)


def _hull(points: Iterable[Point]) -> list[Point]:
    hull: list[Point] = []
    for p in points:
        _push(hull, p)
    return hull


def _slopes(hull: list[Point]) -> list[float]:
    return [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(hull)]


def _lowest(hull: list[Point], slopes: list[float], r: float) -> float:
    """``min(y - r * x)`` over the points ``hull`` was made from (``slopes``: its edges')."""
    x, y = hull[bisect_left(slopes, r)]
    return y - r * x


def _agree(a: ClockSample, b: ClockSample) -> bool:
    """Whether the bounds of two exchanges leave room for one offset (a drift within ``±MAX_DRIFT`` between)."""
    slack = (a.delay + b.delay) // 2 + STEP_TOLERANCE_NS + int(MAX_DRIFT * abs(a.local - b.local))
    return abs(a.offset - b.offset) <= slack


class ClockEstimator:
    """Offset and drift of the device clock against server time, from four-timestamp exchanges.

    Probe schedule it is made for (:meth:`probe_interval`): one probe per second for the first
    ``PROBE_FAST_COUNT`` accepted samples after start or a reset, then one every 5 s. It is :attr:`ready`
    after ``MIN_SAMPLES`` accepted samples; the accuracy then keeps improving as the window fills.

    The window holds the ``WINDOW`` latest samples in device time. Each side's bounds are kept as a convex hull
    (the lower hull of the forward bounds, the upper hull of the backward ones, a few dozen points at most), in
    doubled integer units relative to the first sample since the last start: ``x = 2 * (local - local0)``,
    forward ``2 * (offset - offset0) + delay``, backward negated, ``delay - 2 * (offset - offset0)``. A sample
    that arrives in order extends both hulls; one that does not, or a reset, rebuilds them. The window keeps
    each sample as these three numbers, ``(x, forward, backward)`` (the base moves only at a start): dropping
    its first sample and :meth:`estimate`, which reads all of it, compute nothing again.
    """

    def __init__(self) -> None:
        self._bounds: deque[_Bounds] = deque()  # the window: each sample's (x, forward y, backward y), by x
        self._hulls: tuple[list[Point], list[Point]] = ([], [])
        self._fit = _NO_FIT
        self._base = (0, 0)  # local0, offset0
        self._since_reset = 0
        self._suspects: list[ClockSample] = []
        self._counts = {"accepted": 0, "negative_delay": 0, "absurd": 0, "inconsistent": 0, "resets": 0}

    @property
    def ready(self) -> bool:
        return len(self._bounds) >= MIN_SAMPLES

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
        if not self._bounds:
            self._restart([sample])
            return True
        bounds = self._bounds_of(sample)
        hulls = self._hulls_with(bounds)
        fit = self._solve(hulls)
        if fit.gap >= min(self._fit.gap, 0.0) - STEP_TOLERANCE_NS:
            self._suspects.clear()
            if len(self._bounds) == WINDOW:
                self._bounds.popleft()
            if bounds[0] >= self._bounds[-1][0]:
                self._bounds.append(bounds)
            else:
                self._bounds.insert(bisect_left(self._bounds, bounds[0], key=_x), bounds)
            self._since_reset += 1
            self._counts["accepted"] += 1
            self._hulls, self._fit = hulls, fit
            return True
        self._counts["inconsistent"] += 1
        self._suspects = [s for s in self._suspects if _agree(s, sample)] + [sample]
        if len(self._suspects) < STEP_SAMPLES:
            return False
        self._counts["resets"] += 1
        suspects, self._suspects = self._suspects, []
        self._restart(suspects)
        return True

    def _bounds_of(self, s: ClockSample) -> _Bounds:
        local0, offset0 = self._base
        mid = 2 * (s.offset - offset0)
        return 2 * (s.local - local0), mid + s.delay, s.delay - mid

    @staticmethod
    def _rebuilt(bounds: Iterable[_Bounds]) -> tuple[list[Point], list[Point]]:
        bounds = list(bounds)
        return _hull((x, f) for x, f, _ in bounds), _hull((x, b) for x, _, b in bounds)

    def _hulls_with(self, bounds: _Bounds) -> tuple[list[Point], list[Point]]:
        """The hulls of the window with a sample (its ``bounds``) added, and its first sample dropped if it is
        full."""
        full = len(self._bounds) == WINDOW
        if bounds[0] < self._bounds[-1][0]:  # out of order: rare (answers overtaking by more than a probe gap)
            return self._rebuilt(sorted([*itertools.islice(self._bounds, int(full), None), bounds], key=_x))
        forward, backward = self._hulls
        if full:
            forward, backward = self._dropped_first(forward, 1), self._dropped_first(backward, 2)
        else:
            forward, backward = forward.copy(), backward.copy()
        x, f, b = bounds
        _push(forward, (x, f))
        _push(backward, (x, b))
        return forward, backward

    def _dropped_first(self, hull: list[Point], side: int) -> list[Point]:
        """``hull`` without the window's first sample: only points up to its second vertex can join it (``side``:
        1 forward, 2 backward, the place of its y in the bounds)."""
        first = self._bounds[0]
        if hull[0] != (first[0], first[side]):  # another sample at the same device time holds the vertex
            return hull.copy()
        if len(hull) == 1:
            return _hull((b[0], b[side]) for b in itertools.islice(self._bounds, 1, None))
        stop = hull[1][0]
        prefix: list[Point] = []
        for b in itertools.islice(self._bounds, 1, None):
            point = (b[0], b[side])
            if point[0] > stop:
                break
            _push(prefix, point)
        prefix += hull[2:]  # the prefix ends at hull[1], below every point it passed: the turn there stays convex
        return prefix

    def _restart(self, samples: list[ClockSample]) -> None:
        samples = sorted(samples, key=_local)
        self._base = (samples[0].local, samples[0].offset)
        self._bounds.clear()
        self._bounds.extend(self._bounds_of(s) for s in samples)
        self._since_reset = len(samples)
        self._counts["accepted"] += 1
        self._hulls = self._rebuilt(self._bounds)
        self._fit = self._solve(self._hulls)

    def _solve(self, hulls: tuple[list[Point], list[Point]]) -> _Fit:
        """The widest-gap line between the two hulls (see the module docstring)."""
        forward, backward = hulls
        f_slopes, b_slopes = _slopes(forward), _slopes(backward)

        def width(r: float) -> float:  # doubled: forward side minus backward side at drift r
            return _lowest(forward, f_slopes, r) + _lowest(backward, b_slopes, -r)

        candidates = sorted({-MAX_DRIFT, MAX_DRIFT, *(r for r in f_slopes if -MAX_DRIFT < r < MAX_DRIFT),
                             *(-r for r in b_slopes if -MAX_DRIFT < -r < MAX_DRIFT)})
        widths = [width(r) for r in candidates]
        best = max(widths)
        drift = 0.0
        if forward[-1][0] - forward[0][0] >= 2 * MIN_DRIFT_SPAN_NS:  # both hulls span the window's device time
            # the width is concave in r: the candidates within rounding of the best are one interval; its middle
            widest = [r for r, w in zip(candidates, widths, strict=True) if w >= best - 1.0]
            drift = (widest[0] + widest[-1]) / 2
        low_forward, low_backward = _lowest(forward, f_slopes, drift), _lowest(backward, b_slopes, -drift)
        middle = (low_forward - low_backward) / 4
        local0, offset0 = self._base
        ref = local0 + forward[-1][0] // 2  # the latest sample in device time
        return _Fit(offset0 + round(middle + drift * (ref - local0)), drift, ref, best / 2,
                    (low_forward + low_backward) / 2)

    def to_server(self, local_ns: int) -> int:
        """Server time at device clock ``local_ns``. Raises :class:`LocalProtocolError` before any sample."""
        if not self._bounds:
            raise LocalProtocolError("no clock sample yet")
        fit = self._fit
        return local_ns + fit.offset + round(fit.drift * (local_ns - fit.ref))

    def to_local(self, server_ns: int) -> int:
        """Device clock at server time ``server_ns`` (the inverse of :meth:`to_server`, to within 1 ns)."""
        if not self._bounds:
            raise LocalProtocolError("no clock sample yet")
        fit = self._fit
        span = server_ns - fit.ref - fit.offset  # exact; only the drift's share of it goes through a float
        return fit.ref + span - round(span * fit.drift / (1 + fit.drift))

    def round_trip_ns(self) -> int:
        """The least round trip the window shows: the gap between the two sides' tightest bounds at the fitted
        drift, at most the least delay of any exchange in the window, and with no drift to fit, the least delay
        of the requests plus the least delay of the answers (which may come from different exchanges); 0 before
        any exchange. The offset is in the middle of the gap, so half of it is the least one-way delay of the
        server's datagrams as this estimate measures them, whatever the path's asymmetry."""
        return max(0, round(self._fit.round_trip)) if self._bounds else 0

    def estimate(self) -> ClockEstimate:
        fit = self._fit
        drift_ppm = (1 / (1 + fit.drift) - 1) * 1e6
        return ClockEstimate(fit.offset, drift_ppm, fit.ref, self._error(), len(self._bounds), self.ready)

    def _error(self) -> int:
        """Half the sum of the spacings between each side's two tightest bounds at the fitted drift (ns)."""
        if len(self._bounds) < 2:
            return 0
        r = self._fit.drift
        f_two = heapq.nsmallest(2, [f - r * x for x, f, _ in self._bounds])
        b_two = heapq.nsmallest(2, [b + r * x for x, _, b in self._bounds])
        return round((f_two[1] - f_two[0] + b_two[1] - b_two[0]) / 4)

    def statistics(self) -> ClockStatistics:
        return ClockStatistics(**self._counts)


def _x(bounds: _Bounds) -> int:
    return bounds[0]


def _local(s: ClockSample) -> int:
    return s.local
