"""FleetHost: timers after input. A host whose receive loop is held up elsewhere (here: not running at all) still
hands a device what reached its socket before the device's own timers judge the server silent; without that, the
device re-handshakes with the server's answers unread in its buffer. Real loopback sockets, the test driver's
server in a thread, real reference devices."""

from __future__ import annotations

import random
import socket
import threading

import anyio
import pytest
from serverdriver import LoopbackNet, TestServer

from loa.devices.core import SpeakerCore
from loa.devices.fleet_host import FleetHost
from loa.devices.probing import RTT_DEFAULT_S
from loa.devices.simclock import SimulatedClock

pytestmark = pytest.mark.e2e

CONNECT_LIMIT_S = 10.0
SILENT_S = 6.0  # the receive loop stopped this long: enough for three probes a second apart, and then some


class _Server:
    """The test driver's server on a UDP socket on 127.0.0.1, served from a thread of its own; it answers every
    clock probe."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.02)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.net = LoopbackNet()
        rng = random.Random(3)
        self.server = TestServer(self.net, static_private=rng.randbytes(32), rng=rng,  # type: ignore[arg-type]
                                 address=self.address)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def public_key(self) -> bytes:
        return self.server.conn.endpoint.public_key

    def _serve(self) -> None:
        server, net = self.server, self.net
        while not self.stopped.is_set():
            try:
                data, address = self.sock.recvfrom(2048)
                server.receive(data, address, net.now)
            except TimeoutError:
                pass
            due = server.next_timeout()
            if due is not None and due <= net.now:
                server.handle_timeout(net.now)
            for data, address in server.outgoing():
                self.sock.sendto(data, address)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


async def _held_up(drain: bool) -> tuple[FleetHost, SpeakerCore]:
    """Connect one counting device, then stop the host's receive loop for ``SILENT_S`` while its timers run on."""
    with _Server() as server:
        core = SpeakerCore(static_private=bytes([9]) * 32, server_public=server.public_key,
                           server_address=server.address, count_only=True)
        host = FleetHost([(core, SimulatedClock(drift_ppm=30.0, offset_s=4.0))], server.address,
                         bind_host="127.0.0.1", drain_before_timers=drain)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(host._starter)
                tg.start_soon(host._timers)
                receiving = anyio.CancelScope()

                async def receive() -> None:
                    with receiving:
                        await host._receive_epoll()

                tg.start_soon(receive)
                with anyio.fail_after(CONNECT_LIMIT_S):  # connected, and the first probes answered
                    while not (core.conn.connected and core.probe.rtt != RTT_DEFAULT_S):
                        await anyio.sleep(0.05)
                receiving.cancel()  # the host is busy elsewhere from now on
                await anyio.sleep(SILENT_S)
                tg.cancel_scope.cancel()
        finally:
            host.close()
        return host, core


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_held_up_host_hands_over_what_arrived_before_the_timers_run(anyio_backend: str) -> None:
    host, core = await _held_up(drain=True)
    assert host.sessions_lost_at_timers == 0
    assert core.probe.silences == 0
    assert core.conn.connected
    assert host.drained_at_timers >= 3  # the probes' answers (and the server's keepalives), read at the timers
    assert core.probe.stale == 0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_without_it_the_device_takes_the_server_for_silent(anyio_backend: str) -> None:
    """The artefact the hand-over removes: the same run with it off loses the session to the device's own probe
    timer (three probes unanswered over 3 s, PROTOCOL.md 4.7) while every answer waits in its socket."""
    host, core = await _held_up(drain=False)
    assert host.drained_at_timers == 0
    assert host.sessions_lost_at_timers >= 1
    assert core.probe.silences >= 1  # lost to the probes, not to DEAD_AFTER
    assert core.conn.session.ended_dead == 0
    assert not core.conn.connected
