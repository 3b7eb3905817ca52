"""The broadcasts a device holds (PROTOCOL.md section 6.2), each with the player that gives its audio.

A broadcast arrives as a live stream (``join``), a stored programme (``play`` whose time came) or an accepted
alert whose stream has not been joined yet; :class:`Broadcast` keeps its rank, policy and player, and
:class:`Finished` remembers the last 4096 ended or dropped ids so that a repeated command changes nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from loa.devices.live import LiveStream
from loa.devices.playout import Source
from loa.devices.stored import StoredPlayer

__all__ = ["FINISHED_MEMORY", "Broadcast", "Finished"]

FINISHED_MEMORY = 4096


@dataclass(slots=True)
class Broadcast:
    bid: int
    cls: int
    lvl: int
    policy: str
    live: LiveStream | None = None
    stored: StoredPlayer | None = None
    at: int | None = None  # `play`: server time of programme sample 0
    played: bool = False

    @property
    def is_live(self) -> bool:
        """Live-type: a joined stream, or an alert waiting for its stream (the watchdog watches these)."""
        return self.stored is None

    def source(self) -> Source | None:
        if self.live is not None:
            return Source(self.live, "ip", self.bid, self.cls)
        if self.stored is not None:
            return Source(self.stored, "stored", self.bid, self.cls)
        return None

    def close(self) -> None:
        if self.live is not None:
            self.live.close()
        if self.stored is not None:
            self.stored.close()


class Finished:
    """The last ``FINISHED_MEMORY`` broadcast ids that ended or were dropped."""

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: OrderedDict[int, None] = OrderedDict()

    def add(self, bid: int) -> None:
        self._ids[bid] = None
        self._ids.move_to_end(bid)
        while len(self._ids) > FINISHED_MEMORY:
            self._ids.popitem(last=False)

    def __contains__(self, bid: object) -> bool:
        return bid in self._ids
