"""Signed alerts at a device (PROTOCOL.md sections 6.4-6.5), sans-I/O bookkeeping around ``verify_alert``.

:class:`AlertBook` verifies every ``alert`` and ``alert_cancel`` against the provisioned authority keys and the
device's estimate of server time, remembers accepted and cancelled ``(kid, id)`` pairs for as long as the spec
requires, says which broadcast ids carry an accepted alert (and whether it may be played: exercise and test
alerts only with ``config`` ``exercise``), and reports alerts whose ``expires`` has passed so that their
broadcasts end. Refusals raise the named :class:`~loa.protocol.errors.RemoteProtocolError` subclass (the caller
counts it by name and acknowledges the message anyway).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from loa.protocol.alert import Alert, key_id, should_play, verify_alert, verify_cancel

__all__ = ["CANCEL_MEMORY_NS", "AcceptedAlert", "AlertBook"]

CANCEL_MEMORY_NS = 24 * 3600 * 1_000_000_000
MAX_REMEMBERED = 4096


@dataclass(frozen=True, slots=True)
class AcceptedAlert:
    alert: Alert
    playable: bool


class AlertBook:
    """Accepted alerts by broadcast id, and the ``(kid, id)`` pairs a replay must not revive."""

    def __init__(self, authority_keys: Iterable[bytes]) -> None:
        self.trusted: dict[bytes, bytes] = {key_id(k): bytes(k) for k in authority_keys}
        self._seen: dict[tuple[bytes, str], int] = {}  # pair -> server time until which it is remembered
        self._next: int | None = None  # min(self._seen.values()), kept with it: read at every timeout
        self._by_bid: dict[int, AcceptedAlert] = {}
        self._by_pair: dict[tuple[bytes, str], int] = {}  # accepted pair -> bid
        # body of an accepted alert -> [its pair, came by beacon, came as a reliable `alert`] (section 6.4.2)
        self._copies: dict[bytes, list[Any]] = {}

    def accept(
        self, body: bytes, sig: bytes, *, now: int, zones: Sequence[str], exercise: bool, beacon: bool = False
    ) -> AcceptedAlert:
        """Verify an ``alert`` (``beacon``: it came in a beacon) at server time ``now``; raises the step's error
        (6.4.1) if it is refused."""
        alert = verify_alert(body, sig, self.trusted, now=now, zone_path=zones, seen_ids=self._seen)
        pair = (alert.kid, alert.id)
        self._remember(pair, alert.expires)
        accepted = AcceptedAlert(alert, should_play(alert, exercise))
        self._by_bid[alert.bid] = accepted
        self._by_pair[pair] = alert.bid
        self._copies[bytes(body)] = [pair, beacon, not beacon]
        return accepted

    def other_copy(self, body: bytes, *, beacon: bool) -> bool:
        """Whether ``body`` is the other copy of an alert accepted and not ended: the first beacon of one accepted
        as a reliable ``alert``, or the first reliable ``alert`` of one accepted from its beacon (section 6.4.2).
        That copy is marked and needs no check; any further copy is not one (it is checked, and is a replay)."""
        entry = self._copies.get(bytes(body))
        if entry is None or entry[0] not in self._by_pair:
            return False
        slot = 1 if beacon else 2
        if entry[slot]:
            return False
        entry[slot] = True
        return True

    def _prune_copies(self) -> None:
        self._copies = {body: entry for body, entry in self._copies.items() if entry[0] in self._by_pair}

    def cancel(self, body: bytes, sig: bytes, *, now: int) -> int | None:
        """Verify an ``alert_cancel``; returns the broadcast id of the cancelled alert if it was accepted here."""
        cancel = verify_cancel(body, sig, self.trusted, now=now)
        pair = (cancel.kid, cancel.cancel)
        bid = self._by_pair.pop(pair, None)
        accepted = self._by_bid.pop(bid, None) if bid is not None else None
        if accepted is not None:
            self._prune_copies()
        until = accepted.alert.expires if accepted is not None else now + CANCEL_MEMORY_NS
        self._remember(pair, max(until, self._seen.get(pair, until)))
        return bid

    def _remember(self, pair: tuple[bytes, str], until: int) -> None:
        earlier = self._seen.get(pair)
        self._seen[pair] = until
        forgot = len(self._seen) > MAX_REMEMBERED
        if forgot:  # the earliest goes
            del self._seen[min(self._seen, key=self._seen.__getitem__)]
        if earlier is not None or forgot:  # the earliest may have changed
            self._next = min(self._seen.values(), default=None)
        elif self._next is None or until < self._next:
            self._next = until

    def for_bid(self, bid: int) -> AcceptedAlert | None:
        return self._by_bid.get(bid)

    def next_expiry(self) -> int | None:
        """The earliest server time at which something expires (an alert to end, a pair to forget)."""
        return self._next

    def expire(self, now: int) -> list[int]:
        """Forget what expired at server time ``now``; returns the broadcast ids of alerts that expired."""
        ended = []
        for pair, until in list(self._seen.items()):
            if until <= now:
                del self._seen[pair]
                bid = self._by_pair.pop(pair, None)
                if bid is not None:
                    self._by_bid.pop(bid, None)
                    ended.append(bid)
        if ended:
            self._prune_copies()
        self._next = min(self._seen.values(), default=None)
        return ended

    def remembered(self) -> int:
        return len(self._seen)
