"""The real streamer service sending live streams to many devices whose sessions were made in memory.

:class:`StreamerLoad` enrols ``len(addresses)`` devices in leaf zones of ``leaf_size`` devices (``L0000``,
``L0001``...) and brings each online through the real handshake with an in-memory
:class:`~loa.protocol.connection.DeviceConnection` whose source address is the loopback address the bench
listens on (:class:`loa.bench.sessions.InMemoryDevices`). A measurement then starts live broadcasts of a test
tone to groups of leaf zones in the core, hands every ``join`` to the devices in memory (so that no reliable
message waits for an acknowledgement), and runs :class:`~loa.streamer.service.StreamerService` on the loopback
socket for a while on trio or on asyncio (uvloop), in a thread of its own: the service's frame clocks encode,
packetise and protect each frame once and hand it to the fan-out (``sendmmsg``). The figure is the CPU time of
that thread (``time.thread_time_ns``, the same as ``getrusage(RUSAGE_THREAD)``) per datagram sent, read by the
thread itself around the whole run (event loop, timers, encoding, SRTP, sends and the kernel's loopback
delivery). Datagrams sent = the media packets the service produced while that clock ran x the destinations of
their broadcast (not the frames it makes up for as it starts, whose CPU time falls before the clock starts).

Sessions are kept alive between measurements: both sides use the host's monotonic clock (trio is given a clock
that reads it), the service is cancelled rather than stopped (a stop says ``bye`` to every device), and between
runs the devices' timers run and their datagrams are exchanged in memory. Each run lasts at most a few seconds.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

import anyio

from loa.bench.sessions import InMemoryDevices, new_core
from loa.protocol.reliable import ACK_DELAY
from loa.streamer.core import StreamerCore
from loa.streamer.service import StreamerService
from loa.streamer.sources import ToneSource

__all__ = ["LoopBackend", "MonotonicClock", "StreamerLoad", "leaf"]

LoopBackend = Literal["trio", "asyncio"]
Address = tuple[str, int]


def leaf(index: int) -> str:
    """The code of leaf zone ``index``."""
    return f"L{index:04d}"


class MonotonicClock:
    """A trio clock reading ``time.monotonic()``, so that trio's time is the same as asyncio's (and the core's)."""

    def start_clock(self) -> None:
        """Nothing to start."""

    def current_time(self) -> float:
        return time.monotonic()

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return max(0.0, deadline - time.monotonic())


class StreamerLoad:
    """Devices with sessions in leaf zones, and live streams sent to them by the real service (module docstring).

    Raises RuntimeError if the devices do not all come online.
    """

    def __init__(self, addresses: Sequence[Address], *, leaf_size: int, seed: int = 1) -> None:
        self.leaves = -(-len(addresses) // leaf_size)
        self.leaf_size = leaf_size
        self.core: StreamerCore = new_core([leaf(i) for i in range(self.leaves)], seed=seed)
        self.core.sessions.conn.endpoint.set_under_load(False)  # every handshake at once, as on a quiet network
        zones = [leaf(i // leaf_size) for i in range(len(addresses))]
        self.fleet = InMemoryDevices.establish(self.core, list(addresses), zone=zones, seed=seed,
                                               start=time.monotonic(), spacing=0.0,
                                               timed=False)

    def keep_alive(self, ahead: float = ACK_DELAY * 2) -> None:
        """Run the devices' timers due within ``ahead`` seconds (their delayed acknowledgements) and exchange
        everything queued, in memory, until quiet."""
        for _ in range(4):
            now = time.monotonic()
            due = 0
            for device in self.fleet.devices.values():
                deadline = device.next_timeout()
                if deadline is not None and deadline <= now + ahead:
                    device.handle_timeout(max(now, deadline))
                    due += 1
            moved = 0
            for address, device in self.fleet.devices.items():
                for data in device.datagrams_to_send():
                    self.core.receive_datagram(data, address, now)
                    moved += 1
            moved += self.fleet.pump(now)
            if not due and not moved:
                return

    def measure(self, sock: socket.socket, streams: Sequence[Sequence[str]], *, seconds: float,
                backend: LoopBackend) -> tuple[int, int]:
        """Stream a tone to each group of zones for ``seconds`` from ``sock``; (thread CPU ns, datagrams sent)."""
        core = self.core
        self.keep_alive()
        now = time.monotonic()
        bids = [core.start_broadcast(ToneSource(440.0 + 10 * i), list(zones), now, name=f"bench-{i}")
                for i, zones in enumerate(streams)]
        self.keep_alive()
        members = {bid: len(core.destinations(bid)) for bid in bids}
        result: dict[str, Any] = {}
        worker = threading.Thread(target=self._run, args=(sock, seconds, backend, result), daemon=True)
        worker.start()
        worker.join(seconds + 60.0)
        if worker.is_alive() or "error" in result:
            raise RuntimeError(f"the streamer service did not finish its run: {result.get('error')}")
        now = time.monotonic()
        for bid in bids:
            core.stop_broadcast(bid, now)
        self.keep_alive()
        per_stream = {bid: count for bid, count in result["packets"].items() if bid in members}
        sent = sum(count * members[bid] for bid, count in per_stream.items())
        return int(result["cpu_ns"]), sent

    def _run(self, sock: socket.socket, seconds: float, backend: LoopBackend, result: dict[str, Any]) -> None:
        core = self.core
        packets: dict[int, int] = {}
        timing = [False]  # only packets made while the CPU clock runs count: the service's start makes the
        # frames due since the broadcasts began (at 10,000 devices a dozen frames), outside that window

        def count(bid: int) -> None:
            if timing[0]:
                packets[bid] = packets.get(bid, 0) + 1

        async def main() -> None:
            service = StreamerService(core, sock)
            produce = core.produce_frame

            def counting(bid: int, now: float) -> list[bytes]:
                out = produce(bid, now)
                for _ in out:
                    count(bid)
                return out

            core.produce_frame = counting  # type: ignore[method-assign]
            try:
                async with anyio.create_task_group() as tg:
                    await tg.start(service.serve)
                    timing[0] = True
                    start = time.thread_time_ns()
                    await anyio.sleep(seconds)
                    result["cpu_ns"] = time.thread_time_ns() - start
                    timing[0] = False
                    tg.cancel_scope.cancel()
            finally:
                del core.produce_frame

        try:
            if backend == "trio":
                anyio.run(main, backend="trio", backend_options={"clock": MonotonicClock()})
            else:
                anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
        except Exception as exc:  # noqa: BLE001 - crosses the thread; the caller raises it as RuntimeError
            result["error"] = f"{type(exc).__name__}: {exc}"
        result["packets"] = packets
