"""Where one broadcast's packets go: a key -> address map mirrored into an attached sink.

The core decides membership and addresses (a member's current session address, or a zone's multicast group);
the I/O layer attaches a sink, normally a :class:`loa.streamer.fanout.Fanout`, which receives every change as it
happens (``add``/``update``/``remove``), after being filled with the current set when attached. Keys are device
public keys (bytes) or ``("group", "addr:port")`` for a multicast group.

Failure semantics: a sink that refuses an address (``ValueError``: a family its socket cannot reach) leaves that
key out of the sink and counts it in :attr:`Destinations.refused`; the map itself always holds every key.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any, Protocol

__all__ = ["Destinations", "Sink"]

Address = tuple[Any, ...]


class Sink(Protocol):
    """What a fan-out offers (``Fanout`` has exactly these methods)."""

    def add(self, key: Hashable, address: Address) -> None: ...

    def update(self, key: Hashable, address: Address) -> None: ...

    def remove(self, key: Hashable) -> None: ...


class Destinations:
    """The current destinations of one stream."""

    __slots__ = ("_addresses", "_in_sink", "_sink", "refused")

    def __init__(self) -> None:
        self._addresses: dict[Hashable, Address] = {}
        self._sink: Sink | None = None
        self._in_sink: set[Hashable] = set()
        self.refused = 0

    def __len__(self) -> int:
        return len(self._addresses)

    def __contains__(self, key: object) -> bool:
        return key in self._addresses

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._addresses)

    def items(self) -> list[tuple[Hashable, Address]]:
        return list(self._addresses.items())

    def get(self, key: Hashable) -> Address | None:
        return self._addresses.get(key)

    def set(self, key: Hashable, address: Address) -> None:
        """Send to ``key`` at ``address`` from now on (adds it, or moves it)."""
        if self._addresses.get(key) == address:
            return
        self._addresses[key] = address
        self._mirror(key, address)

    def discard(self, key: Hashable) -> None:
        """Stop sending to ``key`` (nothing happens if it is absent)."""
        if self._addresses.pop(key, None) is not None and key in self._in_sink:
            self._in_sink.discard(key)
            assert self._sink is not None
            self._sink.remove(key)

    def attach(self, sink: Sink) -> None:
        """Mirror into ``sink`` from now on, starting with every current destination. Replaces a previous sink
        (which is left as it was)."""
        self._sink = sink
        self._in_sink = set()
        for key, address in self._addresses.items():
            self._mirror(key, address)

    def detach(self) -> None:
        self._sink = None
        self._in_sink = set()

    def _mirror(self, key: Hashable, address: Address) -> None:
        sink = self._sink
        if sink is None:
            return
        try:
            if key in self._in_sink:
                sink.update(key, address)
            else:
                sink.add(key, address)
                self._in_sink.add(key)
        except ValueError:
            self.refused += 1
            if key in self._in_sink:
                self._in_sink.discard(key)
                sink.remove(key)
