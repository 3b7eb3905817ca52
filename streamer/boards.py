"""E-board items: text and images shown on the boards of target zones (PROTOCOL.md sections 4.4 and 4.9).

Sans-I/O, owned by the core. An item is ``board {item, cls, lvl, text?, cid?, until?}`` sent reliably to every
enrolled board in the target zones (each with every zone below it), now or when the board next starts; an image
item is first offered as ``prefetch`` (the board fetches it from the content store, as a programme). A board
that leaves the zones, or an item that is cleared, gets ``board_clear``. An item whose ``until`` (server time)
has passed is forgotten here; boards drop it themselves at the same instant. What waits for a board without a
session is taken back when useless (PROTOCOL.md 4.3.2): an item's ``board`` when it is cleared or expires, and
its ``board_clear`` when the board has been away since before the item was first shown.

Failure semantics: :meth:`BoardItems.show` raises ``ValueError`` (bad text, rank or item), ``ZoneError`` (unknown
zone) or ``ContentError`` (image not in the store) with nothing sent; :meth:`BoardItems.clear` raises ``KeyError``
for an unknown item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from loa.protocol.control import Board, BoardClear, Prefetch
from loa.streamer.content import ContentError, ContentStore
from loa.streamer.registry import DeviceEntry, Registry
from loa.streamer.settings import DeviceLink
from loa.streamer.zones import ZoneTree

__all__ = ["MAX_TEXT_BYTES", "BoardItems"]

MAX_TEXT_BYTES = 512
_NS = 1_000_000_000
_U32 = 0xFFFFFFFF


@dataclass(slots=True)
class _Item:
    message: Board
    zones: tuple[str, ...]
    covering: set[str]
    expires_at: float | None  # monotonic, from `until`
    born: float  # when the item was first shown (kept when it is shown again)
    gone_at: float | None  # when no version of it shown since `born` is on any board (None: not before a clear)
    members: set[bytes] = field(default_factory=set)


class BoardItems:
    """Every board item one streamer shows."""

    def __init__(self, link: DeviceLink, *, zones: ZoneTree, registry: Registry, content: ContentStore | None,
                 server_time: Callable[[float], int]) -> None:
        self._link = link
        self._zones = zones
        self._registry = registry
        self._content = content
        self._server_time = server_time
        self._items: dict[int, _Item] = {}

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def items(self) -> list[int]:
        return sorted(self._items)

    def target_zones(self) -> set[str]:
        """Every zone some item is aimed at."""
        return {code for item in self._items.values() for code in item.zones}

    def show(self, item: int, zones: Sequence[str], now: float, *, cls: int, lvl: int, text: str | None = None,
             cid: bytes | None = None, until_ns: int | None = None) -> None:
        """Show ``text`` and/or the stored image ``cid`` on the boards of ``zones`` until ``until_ns`` (server
        time; None: until cleared). Showing an item id again replaces it."""
        if not 0 <= item <= _U32:
            raise ValueError(f"a board item id is a uint32, not {item}")
        if not 0 <= cls <= 3 or not 0 <= lvl <= 3:
            raise ValueError("class and level are 0-3")
        if text is None and cid is None:
            raise ValueError("a board item needs a text, an image, or both")
        if text is not None and not 0 < len(text.encode()) <= MAX_TEXT_BYTES:
            raise ValueError(f"board text is 1-{MAX_TEXT_BYTES} bytes of UTF-8")
        if cid is not None and (self._content is None or self._content.get(cid) is None):
            raise ContentError(f"no stored image with cid {cid.hex()}")
        if not zones:
            raise ValueError("a board item needs target zones")
        covering = self._zones.covering(zones)  # ZoneError for an unknown zone
        expires_at = None if until_ns is None else now + (until_ns - self._server_time(now)) / _NS
        old = self._items.get(item)
        born, gone_at = now, expires_at
        if old is not None:
            born = old.born
            gone_at = None if old.gone_at is None or expires_at is None else max(old.gone_at, expires_at)
        entry = _Item(Board(item=item, cls=cls, lvl=lvl, text=text, cid=cid, until=until_ns),
                      tuple(dict.fromkeys(zones)), covering, expires_at, born, gone_at)
        targets = self._registry.in_zones(covering, kinds=("board",))
        if old is not None:  # a replaced item: boards outside the new zones drop it, the rest get the new one
            for key in sorted(old.members - targets):
                self._link.end_item(key, item, BoardClear(item=item), now, since=old.born)
        self._items[item] = entry
        for key in sorted(targets):
            self._send(entry, key, now)

    def clear(self, item: int, now: float) -> None:
        """Remove ``item`` from every board showing it. KeyError if unknown."""
        entry = self._items.pop(item)
        for key in sorted(entry.members):
            self._link.end_item(key, item, BoardClear(item=item), now, since=entry.born)

    def _send(self, entry: _Item, key: bytes, now: float) -> None:
        entry.members.add(key)
        cid = entry.message.cid
        if cid is not None and self._content is not None:
            rt = self._link.runtime(key)
            rt.mark_prefetched(cid)
            info = self._content.get(cid)
            if info is not None and not rt.holds(cid):
                self._link.send_tracked(key, ("prefetch", cid), Prefetch(cid=cid, size=info.size, name=info.name),
                                        now)
        self._link.send_tracked(key, ("board", entry.message), entry.message, now)

    def send_state(self, key: bytes, entry: DeviceEntry, now: float) -> None:
        """After a board (or the server) started: every item it should show."""
        if entry.kind != "board" or not entry.enrolled:
            return
        for item in self._items.values():
            if entry.zone in item.covering:
                self._send(item, key, now)

    def resync(self, key: bytes, entry: DeviceEntry | None, now: float) -> None:
        """A device was enrolled, moved, changed or removed: join or leave the items of its zone."""
        active = entry is not None and entry.enrolled and entry.kind == "board"
        for item in self._items.values():
            wanted = active and entry is not None and entry.zone in item.covering
            if wanted and key not in item.members:
                self._send(item, key, now)
            elif not wanted and key in item.members:
                item.members.discard(key)
                if entry is not None and entry.enrolled:
                    self._link.end_item(key, item.message.item, BoardClear(item=item.message.item), now,
                                        since=item.born)

    def next_timeout(self) -> float | None:
        return min((i.expires_at for i in self._items.values() if i.expires_at is not None), default=None)

    def handle_timeout(self, now: float) -> None:
        for item in [i for i in self._items.values() if i.expires_at is not None and now >= i.expires_at]:
            del self._items[item.message.item]  # boards drop it themselves at `until`
            if item.gone_at is not None and now >= item.gone_at:  # no earlier version outlives it on a board
                for key in sorted(item.members):
                    self._link.end_item(key, item.message.item, None, now, since=None)
