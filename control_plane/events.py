"""The in-process event bus: committed changes fanned out to live listeners (the ``/events`` stream).

Publishing is synchronous, never blocks and may happen on any thread (database work runs in worker threads);
each subscriber has a bounded queue on its own event loop (trio or asyncio) and is woken thread-safely. A slow
subscriber loses its oldest events, never slows the publisher: the next thing it reads is an :class:`Overflow`
saying how many it lost, so a client knows to re-read the state it shows. The bus keeps the last ``history``
events so a reconnecting client can resume after the last id it saw (SSE ``Last-Event-ID``).

Events carry the zone path of their subject and the permission needed to see them; the subscriber's ``accept``
filter (scope and role) runs in the publisher's thread and must be cheap.
"""

from __future__ import annotations

import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel

__all__ = ["BusStatistics", "Event", "EventBus", "Overflow", "Published", "Subscription"]


@dataclass(frozen=True, slots=True)
class Event:
    """Something that changed. ``zones`` is the subject's zone path, root first (None: not in any zone)."""

    topic: str
    data: Mapping[str, Any]
    permission: str
    zones: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Published:
    """An event as delivered: with the bus-wide, increasing id it was published under."""

    id: int
    event: Event


@dataclass(frozen=True, slots=True)
class Overflow:
    """The subscriber fell behind and ``lost`` events were dropped before this point."""

    lost: int


@dataclass(frozen=True, slots=True)
class BusStatistics:
    published: int
    subscribers: int
    dropped: int


def _loop_scheduler() -> Callable[[Callable[[], object]], None]:
    """A thread-safe, non-blocking 'run this soon on the current event loop', for trio or asyncio."""
    native = anyio.lowlevel.current_token().native_token
    if hasattr(native, "run_sync_soon"):  # trio.lowlevel.TrioToken
        return native.run_sync_soon  # type: ignore[no-any-return]
    if hasattr(native, "call_soon_threadsafe"):  # an asyncio event loop

        def schedule(fn: Callable[[], object]) -> None:
            native.call_soon_threadsafe(fn)

        return schedule
    raise RuntimeError(f"unsupported event loop {native!r}")


class Subscription:
    """A live listener's queue. Iterate it (async) from the event loop it was created on; close it when done."""

    def __init__(self, bus: EventBus, accept: Callable[[Event], bool], size: int) -> None:
        self._bus = bus
        self._accept = accept
        self._size = size
        self._lock = threading.Lock()
        self._queue: deque[Published] = deque()
        self._lost = 0
        self._waiter: anyio.Event | None = None
        self._schedule = _loop_scheduler()
        self.closed = False

    def _offer(self, item: Published) -> None:
        """Called by the bus, on any thread."""
        if self.closed or not self._accept(item.event):
            return
        with self._lock:
            if len(self._queue) >= self._size:
                self._queue.popleft()
                self._lost += 1
                self._bus._count_drop()
            self._queue.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            try:
                self._schedule(waiter.set)
            except RuntimeError:  # the subscriber's event loop has ended (trio.RunFinishedError is one)
                self.close()

    async def next(self) -> Published | Overflow:
        """The next event (or an :class:`Overflow` marker); waits until there is one. Cancellation loses nothing."""
        while True:
            with self._lock:
                if self._lost:
                    lost, self._lost = self._lost, 0
                    return Overflow(lost)
                if self._queue:
                    return self._queue.popleft()
                waiter = self._waiter = anyio.Event()
            await waiter.wait()

    def close(self) -> None:
        self.closed = True
        self._bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class EventBus:
    """Publish committed events to every current subscriber; keep the last ``history`` for resumption."""

    def __init__(self, *, history: int = 1024, queue_size: int = 1024) -> None:
        self.epoch = secrets.token_hex(4)  # names this bus's id space: ids from another process cannot resume
        self._lock = threading.Lock()
        self._subscribers: list[Subscription] = []
        self._history: deque[Published] = deque(maxlen=history)
        self._next_id = 1
        self._queue_size = queue_size
        self._dropped = 0

    def publish(self, events: Iterable[Event]) -> None:
        """Deliver ``events`` in order to every subscriber that accepts them. Never blocks, never raises for them."""
        with self._lock:
            items = []
            for event in events:
                items.append(Published(self._next_id, event))
                self._next_id += 1
            self._history.extend(items)
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            for item in items:
                subscriber._offer(item)

    def subscribe(self, accept: Callable[[Event], bool] = lambda _e: True, *,
                  after: int | None = None) -> Subscription:
        """A new subscription on the calling event loop; with ``after``, first replay the kept events after it.

        If ``after`` is older than what the bus still keeps, the first thing read is an :class:`Overflow`.
        """
        subscription = Subscription(self, accept, self._queue_size)
        with self._lock:
            if after is not None:
                kept = [item for item in self._history if item.id > after]
                first_kept = kept[0].id if kept else self._next_id
                lost = first_kept - after - 1
                wanted = [item for item in kept if accept(item.event)]
                lost += max(0, len(wanted) - self._queue_size)
                subscription._queue.extend(wanted[-self._queue_size:])
                subscription._lost = max(0, lost)
            self._subscribers.append(subscription)
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def _count_drop(self) -> None:
        with self._lock:
            self._dropped += 1

    @property
    def last_id(self) -> int:
        return self._next_id - 1

    def statistics(self) -> BusStatistics:
        with self._lock:
            return BusStatistics(self._next_id - 1, len(self._subscribers), self._dropped)
