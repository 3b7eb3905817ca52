"""The streamer service over real loopback sockets, on trio and on asyncio: two devices in two zones receive a
paced tone they can unprotect and decode; a multicast member gets it from its zone's group; shutdown says bye."""

from __future__ import annotations

import random
import socket
import struct

import anyio
import numpy as np
import pytest
from streamer_kit import KitDevice, province, run_device

from loa.protocol.control import Bye, Join, Leave
from loa.streamer.core import StreamerCore
from loa.streamer.service import StreamerService, epoch_for, open_udp_socket
from loa.streamer.sources import ToneSource

pytestmark = pytest.mark.e2e
GROUP = ("239.255.77.1", 0)


def dominant_hz(frames: list[np.ndarray]) -> float:
    pcm = np.concatenate(frames[5:]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * 48_000 / len(pcm))


def group_socket() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((GROUP[0], 0))
    membership = struct.pack("4s4s", socket.inet_aton(GROUP[0]), socket.inet_aton("127.0.0.1"))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.setblocking(False)
    return sock, sock.getsockname()[1]


async def wait_for(predicate: object, timeout: float) -> None:
    with anyio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await anyio.sleep(0.01)


@pytest.mark.parametrize(("backend", "options"), [("trio", {}), ("asyncio", {}), ("asyncio", {"use_uvloop": True})],
                         ids=["trio", "asyncio", "uvloop"])
def test_service_streams_a_paced_tone_to_two_zones_and_a_multicast_group(backend: str,
                                                                         options: dict[str, bool]) -> None:
    rng = random.Random(3)
    group_rx, group_port = group_socket()

    async def main() -> dict[str, KitDevice]:
        core = StreamerCore(static_private=rng.randbytes(32), zones=province(),
                            groups={"C12": f"{GROUP[0]}:{group_port}"},
                            epoch_ns=epoch_for(anyio.current_time()), send_clock=anyio.current_time)
        server_sock = open_udp_socket("127.0.0.1", 0, multicast=True)
        service = StreamerService(core, server_sock)
        devices: dict[str, KitDevice] = {}
        sockets = []
        async with anyio.create_task_group() as tg:
            await tg.start(service.serve)
            for zone, caps in (("C11", ("amp",)), ("C21", ("amp",)), ("C12", ("amp", "multicast")),
                               ("D1", ("amp",))):
                device = KitDevice(server_public=core.public_key, server=service.address,
                                   seed=rng.randrange(1 << 30), caps=caps)
                core.add_device(device.public_key, zone, service.now())
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind(("127.0.0.1", 0))
                sock.setblocking(False)
                sockets.append(sock)
                devices[zone] = device
                tg.start_soon(lambda d=device, s=sock, z=zone: run_device(
                    d, s, group_sock=group_rx if z == "C12" else None))
            await wait_for(lambda: all(d.zone_path for d in devices.values()), 10.0)
            bid = service.start_broadcast(ToneSource(440.0), ["C11", "D2", "C12"], cls=1, lvl=2)
            members = [devices["C11"], devices["C21"], devices["C12"]]
            await wait_for(lambda: all(len(d.packets(bid)) >= 60 for d in members), 15.0)
            service.stop_broadcast(bid)
            await wait_for(lambda: all(bid in d.left for d in members), 5.0)
            service.stop()
            await wait_for(lambda: all(d.of_type(Bye) for d in devices.values()), 5.0)
            tg.cancel_scope.cancel()
        for sock in sockets:
            sock.close()
        server_sock.close()
        return devices

    try:
        devices = anyio.run(main, backend=backend, backend_options=options)
    finally:
        group_rx.close()
    commune, other_district, multicast = devices["C11"], devices["C21"], devices["C12"]
    bid = next(iter(commune.joined))
    for device in (commune, other_district, multicast):
        packets = device.packets(bid)
        seqs = [p.rtp.sequence for p in packets]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
        assert abs(dominant_hz(device.decode(bid)) - 440.0) < 5.0
        span = packets[59].at - packets[0].at  # 59 frame intervals of 20 ms: paced in real time, not a burst
        assert 1.0 <= span <= 1.6, span
        assert device.of_type(Bye)[0].reason == "server shutting down"
    by_seq = {p.rtp.sequence: p.raw for p in commune.packets(bid)}
    assert all(by_seq[p.rtp.sequence] == p.raw for p in other_district.packets(bid) if p.rtp.sequence in by_seq)
    assert multicast.joined[bid].group == f"{GROUP[0]}:{group_port}"
    assert getattr(multicast, "group_datagrams", 0) >= 60  # the stream came through the group
    assert not devices["D1"].of_type(Join)
    assert not devices["D1"].media
    assert bid not in devices["D1"].left
    assert Leave in {type(m) for m in commune.messages}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio", "asyncio"])
async def test_the_kernel_receive_stamp_lands_on_the_event_loops_clock(anyio_backend: str) -> None:
    """What a clock probe's t2 is taken from: a datagram that waited 0.3 s in the socket's queue is stamped
    when it arrived, not when it was read."""
    from loa.streamer.service import _STAMP_SPACE, _arrival, _stamp_arrivals, _wall_offset

    rx = open_udp_socket("127.0.0.1", 0)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert _stamp_arrivals(rx)
        offset = _wall_offset()
        before = anyio.current_time()
        tx.sendto(b"probe", rx.getsockname())
        after = anyio.current_time()
        await anyio.sleep(0.3)
        data, ancillary, _flags, _address = rx.recvmsg(64, _STAMP_SPACE)
        read = anyio.current_time()
        arrived = _arrival(ancillary, offset)
        assert data == b"probe"
        assert arrived is not None
        assert before - 0.002 <= arrived <= after + 0.002  # within the clocks' conversion error
        assert read - arrived >= 0.29
        assert _arrival([], offset) is None
    finally:
        rx.close()
        tx.close()


@pytest.mark.anyio
async def test_a_deadline_a_datagram_brings_wakes_the_timer_loop(anyio_backend: str) -> None:
    """The timer loop sleeps on the core's deadline (here the core has none: 60 s). A datagram whose handling gives
    the core an earlier one - as a delayed acknowledgement or a reply's retransmission timer does - must be kept:
    the receive loop wakes the timer loop, which runs ``handle_timeout`` at the new deadline. Without the wake the
    deadline would wait for the next API call, frame or the old 60 s."""
    core = StreamerCore(static_private=bytes(range(32)), zones=province(),
                        epoch_ns=epoch_for(anyio.current_time()), send_clock=anyio.current_time)
    assert core.next_timeout() is None
    extra: list[float] = []  # deadlines the datagrams brought
    ran: list[tuple[float, float]] = []  # (deadline, when handle_timeout ran for it)
    receive, next_timeout, handle_timeout = core.receive_datagram, core.next_timeout, core.handle_timeout

    def receiving(data: bytes, address: tuple[str, int], now: float, *, arrived: float | None = None) -> None:
        receive(data, address, now, arrived=arrived)
        extra.append(now + 0.05)

    def next_deadline() -> float | None:
        return min((t for t in (next_timeout(), *extra) if t is not None), default=None)

    def handling(now: float) -> None:
        handle_timeout(now)
        ran.extend((t, now) for t in extra if t <= now)
        extra[:] = [t for t in extra if t > now]

    core.receive_datagram = receiving  # type: ignore[method-assign]
    core.next_timeout = next_deadline  # type: ignore[method-assign]
    core.handle_timeout = handling  # type: ignore[method-assign]
    service = StreamerService(core, open_udp_socket("127.0.0.1", 0))
    with service.sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        async with anyio.create_task_group() as tg:
            await tg.start(service.serve)
            await anyio.sleep(0.2)  # the timer loop is asleep, on no deadline
            for i in range(3):
                client.sendto(b"\x01\x01\x00\x00" + bytes(144), service.address)  # an init: passes the filter
                with anyio.fail_after(10):
                    while len(ran) <= i:
                        await anyio.sleep(0.01)
                await anyio.sleep(0.1)
            service.stop()
    assert len(ran) == 3
    for deadline, at in ran:
        assert deadline <= at < deadline + 5.0, ran  # kept, not left for the 60 s sleep


@pytest.mark.anyio
async def test_the_receive_loop_says_how_far_its_input_is_read(anyio_backend: str) -> None:
    """Retransmissions after input (``StreamerCore.set_input_horizon``): while datagrams wait unread after a batch,
    the core is told the kernel's arrival time of the last one read; once the socket is empty, None."""
    from loa.streamer.service import _waiting

    core = StreamerCore(static_private=bytes(range(32)), zones=province(),
                        epoch_ns=epoch_for(anyio.current_time()), send_clock=anyio.current_time)
    horizons: list[float | None] = []
    told = core.set_input_horizon

    def telling(horizon: float | None) -> None:
        horizons.append(horizon)
        told(horizon)

    core.set_input_horizon = telling  # type: ignore[method-assign]
    service = StreamerService(core, open_udp_socket("127.0.0.1", 0, receive_buffer_size=1 << 20))
    with service.sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        assert not _waiting(service.sock)
        sent_from = anyio.current_time()
        for _ in range(1000):  # waiting before the service reads anything: batches' worth (what the buffer holds)
            client.sendto(b"\x01\x01\x00\x00" + bytes(144), service.address)
        sent_by = anyio.current_time()
        assert _waiting(service.sock)
        async with anyio.create_task_group() as tg:
            await tg.start(service.serve)
            with anyio.fail_after(10):
                while not horizons or horizons[-1] is not None:
                    await anyio.sleep(0.01)
            service.stop()
    behind = [h for h in horizons if h is not None]
    assert behind, horizons  # the first batches left datagrams unread
    assert all(sent_from - 0.002 <= h <= sent_by + 0.002 for h in behind)  # each an arrival time
    assert behind == sorted(behind)
    assert horizons[-1] is None
