"""Scheduled programmes: stored content prefetched to devices and started at a server-time instant.

Sans-I/O, owned by the core (PROTOCOL.md sections 4.9, 7.2). Every enrolled speaker in the target zones is a
member: it is sent ``prefetch`` at once, fetches the content (the core answers ``fetch`` from the content
store, only for content it prefetched to that device), and is sent ``play {bid, cid, at}`` as soon as it
reports the content stored (``have {ok: true}``) or, at the latest, ``play_lead_s`` before ``at`` (a device
without the content then fetches it and starts in step, at the position for the current time). The programme
is forgotten when its content has played to the end.

Failure semantics: :meth:`ScheduledPlays.schedule` raises ``ContentError`` for content the store does not hold,
``ZoneError``/``ValueError`` for a bad target, with nothing changed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from loa.protocol.control import Leave, Play, Prefetch
from loa.streamer.content import ContentError, ContentInfo, ContentStore
from loa.streamer.live import check_target, member_zone
from loa.streamer.registry import DeviceEntry, Registry
from loa.streamer.settings import DeviceLink, Settings
from loa.streamer.status import BroadcastEnded, BroadcastStatus, StreamerEvent
from loa.streamer.zones import ZoneTree

__all__ = ["ScheduledPlays"]

_NS = 1_000_000_000


@dataclass(slots=True)
class _Play:
    bid: int
    content: ContentInfo
    zones: tuple[str, ...]
    covering: set[str]
    at_ns: int
    cls: int
    lvl: int
    policy: str
    name: str
    due_at: float  # monotonic: play goes to every member from then on
    ends_at: float  # monotonic: the content has played to its end
    born: float  # monotonic: when it was scheduled, before anything of it was sent
    members: dict[bytes, str] = field(default_factory=dict)  # key -> zone
    played: set[bytes] = field(default_factory=set)  # members sent `play`


class ScheduledPlays:
    """Every scheduled programme of one streamer."""

    def __init__(self, link: DeviceLink, *, zones: ZoneTree, registry: Registry, settings: Settings,
                 content: ContentStore | None, allocate_bid: Callable[[], int], events: deque[StreamerEvent],
                 server_time: Callable[[float], int]) -> None:
        self._link = link
        self._zones = zones
        self._registry = registry
        self._settings = settings
        self.content = content
        self._allocate_bid = allocate_bid
        self._events = events
        self._server_time = server_time
        self._plays: dict[int, _Play] = {}
        self._memberships: dict[bytes, set[int]] = {}

    def __contains__(self, bid: object) -> bool:
        return bid in self._plays

    def bids(self) -> list[int]:
        return list(self._plays)

    def memberships(self, key: bytes) -> set[int]:
        return self._memberships.get(key, set())

    def status(self, bid: int, is_online: Callable[[bytes], bool]) -> BroadcastStatus:
        play = self._plays[bid]
        return BroadcastStatus(bid, "play", play.name, play.zones, play.cls, play.lvl, play.policy,
                               len(play.members), sum(map(is_online, play.members)), None, 0, 0, 0, 0, 0, False)

    def schedule(self, cid: bytes, zones: Sequence[str], at_ns: int, now: float, *, cls: int, lvl: int,
                 policy: str, name: str | None) -> int:
        info = self.content.get(cid) if self.content is not None else None
        if info is None or info.path.endswith(".img"):
            raise ContentError(f"no stored programme with cid {cid.hex()}")
        targets = check_target(self._zones, zones, cls, lvl, policy)
        bid = self._allocate_bid()
        now_ns = self._server_time(now)
        due = now + (at_ns - now_ns) / _NS - self._settings.play_lead_s
        ends = now + (at_ns + info.duration_ns - now_ns) / _NS
        play = _Play(bid, info, targets, self._zones.covering(targets), at_ns, cls, lvl, policy,
                     info.name if name is None else name, due, ends, now)
        self._plays[bid] = play
        for key in sorted(self._registry.in_zones(play.covering, kinds=("speaker",))):
            self._add_member(play, key, now)
        return bid

    def prefetch(self, cid: bytes, zones: Sequence[str], now: float) -> int:
        """Offer ``cid`` to every enrolled speaker of ``zones`` (ahead of its :meth:`schedule`); how many."""
        info = self.content.get(cid) if self.content is not None else None
        if info is None or info.path.endswith(".img"):
            raise ContentError(f"no stored programme with cid {cid.hex()}")
        keys = sorted(self._registry.in_zones(self._zones.covering(zones), kinds=("speaker",)))
        message = Prefetch(cid=cid, size=info.size, name=info.name)
        for key in keys:
            rt = self._link.runtime(key)
            rt.mark_prefetched(cid)
            if not rt.holds(cid):
                self._link.send_tracked(key, ("prefetch", cid), message, now)
        return len(keys)

    def _add_member(self, play: _Play, key: bytes, now: float) -> None:
        play.members[key] = member_zone(self._zones, play.zones, self._registry.entry(key))
        self._memberships.setdefault(key, set()).add(play.bid)
        self._send_prefetch(play, key, now)
        if now >= play.due_at or self._link.runtime(key).holds(play.content.cid):
            self._send_play(play, key, now)

    def _send_prefetch(self, play: _Play, key: bytes, now: float) -> None:
        rt = self._link.runtime(key)
        rt.mark_prefetched(play.content.cid)
        if not rt.holds(play.content.cid):
            message = Prefetch(cid=play.content.cid, size=play.content.size, name=play.content.name)
            self._link.send_tracked(key, ("prefetch", play.content.cid), message, now)

    def _send_play(self, play: _Play, key: bytes, now: float) -> None:
        play.played.add(key)
        message = Play(bid=play.bid, cid=play.content.cid, at=play.at_ns, cls=play.cls, lvl=play.lvl,
                       policy=play.policy, zone=play.members[key])
        self._link.send_tracked(key, ("play", play.bid), message, now)

    def on_have(self, key: bytes, cid: bytes, now: float) -> None:
        """``key`` stored ``cid``: its plays of that content go now."""
        for bid in self._memberships.get(key, ()):
            play = self._plays[bid]
            if play.content.cid == cid and key not in play.played:
                self._send_play(play, key, now)

    def send_state(self, key: bytes, now: float) -> None:
        """After ``key`` (or the server) started: prefetch and, when due or stored, play again."""
        for bid in self._memberships.get(key, ()):
            play = self._plays[bid]
            self._send_prefetch(play, key, now)
            if now >= play.due_at or self._link.runtime(key).holds(play.content.cid):
                self._send_play(play, key, now)

    def resync(self, key: bytes, entry: DeviceEntry | None, now: float) -> None:
        active = entry is not None and entry.enrolled
        for play in list(self._plays.values()):
            wanted = active and entry is not None and entry.kind == "speaker" and entry.zone in play.covering
            if wanted and key not in play.members:
                self._add_member(play, key, now)
            elif not wanted and key in play.members:
                del play.members[key]
                play.played.discard(key)
                self._memberships[key].discard(play.bid)
                if active:
                    self._link.end(key, play.bid, Leave(bid=play.bid), now, since=play.born)

    def stop(self, bid: int, now: float) -> None:
        self._end(self._plays[bid], "stopped", now)

    def _end(self, play: _Play, reason: str, now: float) -> None:
        del self._plays[play.bid]
        for key in play.members:
            self._memberships[key].discard(play.bid)
            # played to its end, it needs no leave, and a play that has not gone would be ignored (section 4.4)
            self._link.end(key, play.bid, None if reason == "played" else Leave(bid=play.bid), now, since=play.born)
        self._events.append(BroadcastEnded(play.bid, reason))

    def next_timeout(self) -> float | None:
        times = []
        for play in self._plays.values():
            times.append(play.ends_at)
            if len(play.played) < len(play.members):
                times.append(play.due_at)
        return min(times, default=None)

    def handle_timeout(self, now: float) -> None:
        for play in list(self._plays.values()):
            if now >= play.ends_at:
                self._end(play, "played", now)
            elif now >= play.due_at:
                for key in [k for k in play.members if k not in play.played]:
                    self._send_play(play, key, now)
