"""Clock probes of a device (PROTOCOL.md section 4.7), sans-I/O: when to send ``time_req``, what to do with a
``time_resp``, the round-trip time, and when a silent server calls for a new handshake.

Schedule: every ``FAST_PROBE_S`` (0.25 s, the spec's limit of 4 per second) until the estimate is ready, then
``ClockEstimator.probe_interval()`` (1 s for the first 60 exchanges, then 5 s). Without ``fast`` the spec's base
schedule applies from the start (load-generating fleet devices: four times fewer probes while thousands start).
A ``time_resp`` counts only for a ``t1`` sent in the 10 s before it arrived (by the host's arrival stamp where it
has one, so that a host which handles it late does not throw it away), once, and goes to :meth:`ServerClock.add`,
which slews a small correction of the estimate and steps a large one (section 4.7, "Slewing"). A new session (a rekey
too) does not forget the probes already sent: their answers measure the same two clocks. The RTT is the smoothed
``(t4 - t1) - (t3 - t2)``, which NACK timing and fetch retries use; until a probe is answered, the latest
handshake's round trip (:meth:`ClockProbe.connected`), or 200 ms.

When ``PROBES_BEFORE_REHANDSHAKE`` probes in a row went unanswered over at least 3 s and ``SILENCE_ROUND_TRIPS``
round trips (the larger of the RTT and the latest handshake's: the probes' smoothed figure lags a path that just
slowed), the server has most likely restarted (section 7.6): :meth:`ClockProbe.due` says so, and the device
handshakes again without waiting ``DEAD_AFTER``. A path slower than 1.5 s each way is thus not taken for a silent
server before an answer could come. A probe still unanswered after ``max(SUSPECT_AFTER_S, 2 x RTT)`` brings the
next one forward to then (the spec allows up to 4 probes a second), so that a silent server is noticed 3 s after
the first probe it left unanswered on the 5 s schedule too (at most 8 s after its last answer, rather than
10-15 s); an answer in time puts the schedule back where it was.
"""

from __future__ import annotations

from loa.devices.frame import NS, ServerClock
from loa.protocol.control import TimeReq, TimeResp

__all__ = ["FAST_PROBE_S", "PROBES_BEFORE_REHANDSHAKE", "RTT_DEFAULT_S", "SILENCE_BEFORE_REHANDSHAKE_S",
           "SILENCE_ROUND_TRIPS", "SUSPECT_AFTER_S", "ClockProbe"]

FAST_PROBE_S = 0.25
ANSWER_WINDOW_S = 10.0
PROBES_BEFORE_REHANDSHAKE = 3
SILENCE_BEFORE_REHANDSHAKE_S = 3.0
SILENCE_ROUND_TRIPS = 2.0
SUSPECT_AFTER_S = 1.0
RTT_DEFAULT_S = 0.2


class ClockProbe:
    """The probing state of one session of a device; ``clock`` receives the exchanges."""

    __slots__ = ("_fast", "_handshake_rtt", "_last_answer", "_last_t1", "_rtt", "_sent", "_unanswered", "_usual_next",
                 "clock", "next_at", "silences", "stale")

    def __init__(self, clock: ServerClock, *, fast: bool = True) -> None:
        self.clock = clock
        self._fast = fast  # False: the spec's base schedule (1 per second) also before the estimate is ready
        self.next_at: float | None = None  # None while there is no session
        self._sent: dict[int, float] = {}
        self._last_t1: int | None = None  # the latest probe sent
        self._usual_next = 0.0  # when the probe after it is due if it is answered in time
        self._unanswered = 0
        self._last_answer = 0.0
        self._rtt: float | None = None  # smoothed over the answered probes
        self._handshake_rtt: float | None = None
        self.stale = 0  # answers refused: unknown, repeated or older than 10 s
        self.silences = 0  # times the server was found silent (each ended a session: the device handshook again)

    @property
    def rtt(self) -> float:
        if self._rtt is not None:
            return self._rtt
        return self._handshake_rtt if self._handshake_rtt is not None else RTT_DEFAULT_S

    def connected(self, now: float, *, rtt: float | None = None) -> None:
        """A session is up (its handshake took ``rtt`` seconds, if known): probe at once. The round trip is the
        handshake's until a probe is answered."""
        if rtt is not None and rtt >= 0:
            self._handshake_rtt = rtt
        self._unanswered = 0
        self._last_answer = now
        self.next_at = now

    def disconnected(self) -> None:
        self.next_at = None

    def interval(self) -> float:
        if self._fast and not self.clock.ready:
            return FAST_PROBE_S
        return self.clock.estimator.probe_interval() / NS

    def due(self, now: float) -> TimeReq | None:
        """The probe to send at ``now``, or None when the server has gone silent (handshake again, then call
        :meth:`connected`)."""
        slowest = max(self.rtt, self._handshake_rtt or 0.0)  # the probes' may lag a path that just slowed
        silence = max(SILENCE_BEFORE_REHANDSHAKE_S, SILENCE_ROUND_TRIPS * slowest)
        if self._unanswered >= PROBES_BEFORE_REHANDSHAKE and now - self._last_answer >= silence:
            self._unanswered = 0
            self.next_at = None
            self.silences += 1
            return None
        t1 = round(now * NS)
        for old in [t for t, sent in self._sent.items() if now - sent > ANSWER_WINDOW_S]:
            del self._sent[old]
        self._sent[t1] = now
        self._last_t1 = t1
        self._unanswered += 1
        interval = self.interval()
        self._usual_next = now + interval
        # until its answer comes, the next probe is due when this one counts as unanswered
        self.next_at = now + min(interval, max(SUSPECT_AFTER_S, 2 * self.rtt))
        return TimeReq(t1=t1)

    def answer(self, message: TimeResp, now: float, *, t4_at: float | None = None) -> bool:
        """Take a ``time_resp`` (that arrived at ``t4_at`` if known, else ``now``); returns True when it made the
        clock estimate ready."""
        arrived = now if t4_at is None else min(t4_at, now)
        sent = self._sent.pop(message.t1, None)
        if sent is None or arrived - sent > ANSWER_WINDOW_S:  # by when it came: a host may handle it much later
            self.stale += 1
            return False
        t4 = round(arrived * NS)
        was_ready = self.clock.ready
        self.clock.add(message.t1, message.t2, message.t3, t4, now)  # slews or steps the presented mapping
        delay = (t4 - message.t1) - (message.t3 - message.t2)
        if delay >= 0:
            sample = delay / NS
            self._rtt = sample if self._rtt is None else 0.875 * self._rtt + 0.125 * sample
        self._unanswered = 0
        self._last_answer = arrived
        if message.t1 == self._last_t1 and self.next_at is not None:  # answered in time: the usual schedule
            self.next_at = max(self.next_at, self._usual_next)
        if was_ready or not self.clock.ready:
            return False
        if self.next_at is not None:
            self.next_at = min(self.next_at, now + self.interval())
        return True
