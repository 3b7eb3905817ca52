"""What every audio source of a device hands the output: :class:`Frame`, the :class:`Player` interface, and the
device's view of server time (:class:`ServerClock`) through which sources place frames on the device clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from loa.protocol.clock import ClockEstimator
from loa.protocol.errors import LocalProtocolError

__all__ = ["NS", "Frame", "Player", "ServerClock"]

NS = 1_000_000_000


@dataclass(slots=True)
class Frame:
    """One output frame: ``at`` local seconds, ``server_at`` ns, ``kind`` packet/fec/plc/synth."""

    at: float
    server_at: int
    samples: int
    kind: str
    pcm: npt.NDArray[np.int16] | None
    ssrc: int = 0
    seq: int = 0
    rtp_ts: int = 0


class ServerClock:
    """The device's estimate of server time (section 4.7) in the units the device uses: local seconds (float)
    and server nanoseconds (int). Conversions return None until the estimator is ready."""

    __slots__ = ("estimator",)

    def __init__(self, estimator: ClockEstimator | None = None) -> None:
        self.estimator = estimator or ClockEstimator()

    @property
    def ready(self) -> bool:
        return self.estimator.ready

    def to_local(self, server_ns: int) -> float | None:
        if not self.estimator.ready:
            return None
        return self.estimator.to_local(server_ns) / NS

    def to_server(self, local: float) -> int | None:
        if not self.estimator.ready:
            return None
        return self.estimator.to_server(round(local * NS))

    def to_server_any(self, local: float) -> int:
        """Best effort: the estimate if there is any sample yet, else the local clock itself (for reports)."""
        try:
            return self.estimator.to_server(round(local * NS))
        except LocalProtocolError:  # no sample yet
            return round(local * NS)


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
