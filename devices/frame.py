"""What every audio source of a device hands the output: :class:`Frame`, the :class:`Player` interface, and the
device's view of server time (:class:`ServerClock`) through which sources place frames on the device clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from loa.protocol.clock import ClockEstimator
from loa.protocol.errors import LocalProtocolError

__all__ = ["NS", "SLEW_RATE", "STEP_LIMIT_NS", "Frame", "Player", "ServerClock"]

NS = 1_000_000_000
#: How fast the presented clock mapping may move against the estimate (section 4.7, "Slewing"): 500 ppm of
#: elapsed device time, 10 us per 20 ms frame, the drift bound of the estimator.
SLEW_RATE = 500e-6
#: A correction that would leave more than this between the presented mapping and the estimate is stepped
#: (2 ms: 4 s of slewing at ``SLEW_RATE``).
STEP_LIMIT_NS = 2_000_000


@dataclass(slots=True)
class Frame:
    """One output frame: ``at`` local seconds, ``server_at`` ns, ``kind`` packet/fec/plc/synth; ``extra_ns``, how
    much later than its stream's ``delay_ms`` a live frame plays (a path slower than that, see
    :class:`~loa.devices.live.LiveStream`)."""

    at: float
    server_at: int
    samples: int
    kind: str
    pcm: npt.NDArray[np.int16] | None
    ssrc: int = 0
    seq: int = 0
    rtp_ts: int = 0
    extra_ns: int = 0


class ServerClock:
    """The device's estimate of server time (section 4.7) in the units the device uses: local seconds (float)
    and server nanoseconds (int). Conversions return None until the estimator is ready.

    The mapping it presents is the estimator's plus a *residual* that slews small corrections (section 4.7,
    "Slewing"). Feed exchanges through :meth:`add`: when one moves the estimate, the presented mapping stays where
    it was at the *pin*, ``ahead`` seconds after the exchange was taken in (the output's lead: frames up to there
    may already be with the sink), and from there the residual ``r`` decays linearly to 0 at ``SLEW_RATE`` of
    elapsed device time, so successive frames move by at most ``SLEW_RATE`` times their spacing against the
    estimate. A correction whose residual would exceed ``STEP_LIMIT_NS``, the first estimate and the first after
    the estimator restarted are *steps*: the presented mapping is the estimate at once.

    In device nanoseconds, with ``u`` the estimator's device time for server time ``s`` and ``t0``, ``r0`` set at
    the latest slewed correction: ``local(s) = u + r(u)``, ``r(u) = r0`` up to ``t0``, then
    ``r0 - sign(r0) * SLEW_RATE * (u - t0)`` until it reaches 0. ``u + r(u)`` rises with ``u`` (slope
    ``1 ± SLEW_RATE``), so :meth:`to_server` inverts it exactly, to within rounding (a few ns).
    """

    __slots__ = ("_ahead_ns", "_r0", "_t0", "estimator", "slews", "steps")

    def __init__(self, estimator: ClockEstimator | None = None, *, ahead: float = 0.0) -> None:
        self.estimator = estimator or ClockEstimator()
        self._ahead_ns = round(ahead * NS)
        self._t0 = 0  # device ns (estimator time) where the residual starts to decay
        self._r0 = 0  # device ns: the residual up to t0
        self.slews = 0  # corrections slewed
        self.steps = 0  # estimates taken at once (the first one included)

    @property
    def ready(self) -> bool:
        return self.estimator.ready

    def add(self, t1: int, t2: int, t3: int, t4: int, now: float) -> bool:
        """Give the estimator one exchange (taken in at local ``now``); returns whether it accepted it. A new
        estimate is slewed or stepped as the class docstring says."""
        estimator = self.estimator
        pin = round(now * NS) + self._ahead_ns
        server = self._server_at(pin) if estimator.ready else None  # what the presented mapping says at the pin
        resets = estimator.statistics().resets
        if not estimator.add(t1, t2, t3, t4):
            return False
        if not estimator.ready:
            return True
        u = estimator.to_local(server) if server is not None else 0
        if server is None or estimator.statistics().resets != resets or abs(pin - u) > STEP_LIMIT_NS:
            self._t0, self._r0 = 0, 0
            self.steps += 1
        else:
            self._t0, self._r0 = u, pin - u
            self.slews += self._r0 != 0
        return True

    def residual(self, local: float) -> float | None:
        """Seconds by which the presented mapping is later than the estimate at device time ``local``."""
        if not self.estimator.ready:
            return None
        local_ns = round(local * NS)
        return (local_ns - self._estimate_local(local_ns)) / NS

    def to_local(self, server_ns: int) -> float | None:
        if not self.estimator.ready:
            return None
        u = self.estimator.to_local(server_ns)
        return (u + self._r(u)) / NS

    def to_server(self, local: float) -> int | None:
        if not self.estimator.ready:
            return None
        return self._server_at(round(local * NS))

    def to_server_any(self, local: float) -> int:
        """Best effort: the estimate if there is any sample yet, else the local clock itself (for reports)."""
        if self.estimator.ready:
            return self._server_at(round(local * NS))
        try:
            return self.estimator.to_server(round(local * NS))
        except LocalProtocolError:  # no sample yet
            return round(local * NS)

    def _r(self, u: int) -> int:
        """The residual at estimator device time ``u`` (ns)."""
        r0 = self._r0
        elapsed = u - self._t0
        if r0 == 0 or elapsed <= 0:
            return r0
        decayed = round(SLEW_RATE * elapsed)
        if decayed >= abs(r0):
            return 0
        return r0 - decayed if r0 > 0 else r0 + decayed

    def _estimate_local(self, local_ns: int) -> int:
        """The estimator device time ``u`` with ``u + r(u) == local_ns`` (to within rounding)."""
        r0, t0 = self._r0, self._t0
        if r0 == 0 or local_ns - r0 <= t0:
            return local_ns - r0
        end = t0 + abs(r0) / SLEW_RATE  # where the residual reaches 0: u + r(u) == u from there on
        if local_ns >= end:
            return local_ns
        slope = 1.0 - SLEW_RATE if r0 > 0 else 1.0 + SLEW_RATE
        return t0 + round((local_ns - t0 - r0) / slope)

    def _server_at(self, local_ns: int) -> int:
        return self.estimator.to_server(self._estimate_local(local_ns))


class Player(Protocol):
    """A source of frames placed on the device clock."""

    def next_time(self, clock: ServerClock) -> float | None:
        """Local time of the next frame, or None when none is known yet."""
        ...

    def take(self, now: float, clock: ServerClock, decode: bool) -> Frame | None:
        """Remove and return the next frame (decoded when ``decode``)."""
        ...

    def skip_before(self, local: float, clock: ServerClock) -> int:
        """Drop frames that start before ``local`` (a live position moved on); returns how many."""
        ...
