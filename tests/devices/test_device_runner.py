"""The reference device on real loopback sockets, on trio and on asyncio: the runner, the fleet host, the CLI,
and DNS-SD discovery. The server is the test driver (serverdriver.TestServer) behind a real socket."""

from __future__ import annotations

import socket
import threading
import time
import wave
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner
from serverdriver import LoopbackNet, TestServer, tone_payloads

from loa.devices.cli import device, fleet
from loa.devices.core import SpeakerCore
from loa.devices.fleet_host import FleetHost
from loa.devices.identity import encode_key
from loa.devices.runner import DeviceRunner, realtime_offset
from loa.devices.simclock import SimulatedClock
from loa.protocol.noise import x25519_public

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class LoopbackServer:
    """A TestServer on a UDP socket on 127.0.0.1; ``stream_on_hello`` starts a stream for each new device."""

    def __init__(self, *, stream_frames: int = 0) -> None:
        import random

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.net = LoopbackNet()
        rng = random.Random(7)
        self.server = TestServer(self.net, static_private=rng.randbytes(32), rng=rng,  # type: ignore[arg-type]
                                 address=self.address)
        self.payloads = tone_payloads(50)
        self.stream_frames = stream_frames
        self.stopped = threading.Event()
        self._next_bid = 1
        if stream_frames:
            self.server.on_connect = self._stream

    @property
    def public_key(self) -> bytes:
        return self.server.conn.endpoint.public_key

    def _stream(self, device: bytes) -> None:
        self.server.start_stream(self._next_bid, [device], payloads=self.payloads, start_in=0.2,
                                 frames=self.stream_frames)
        self._next_bid += 1

    async def serve(self) -> None:
        server, net = self.server, self.net
        while not self.stopped.is_set():
            deadline = server.next_timeout()
            wait = 0.1 if deadline is None else min(0.1, max(0.0, deadline - net.now))
            with anyio.move_on_after(wait):
                await anyio.wait_readable(self.sock)
            for _ in range(256):
                try:
                    data, address = self.sock.recvfrom(2048)
                except BlockingIOError:
                    break
                server.receive(data, address, net.now)
            due = server.next_timeout()
            if due is not None and due <= net.now:
                server.handle_timeout(net.now)
            for data, address in server.outgoing():
                self.sock.sendto(data, address)

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=anyio.run, args=(self.serve,), daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


@pytest.mark.anyio
async def test_runner_plays_a_stream_over_loopback(anyio_backend: str) -> None:
    loop = LoopbackServer(stream_frames=40)
    core = SpeakerCore(static_private=bytes(range(1, 33)), server_public=loop.public_key,
                       server_address=loop.address, timestamp_source=lambda _now: time.time_ns())
    runner = DeviceRunner(core, loop.address, clock=SimulatedClock(drift_ppm=50.0, offset_s=-3.0),
                          bind_host="127.0.0.1")
    async with anyio.create_task_group() as tg:
        tg.start_soon(loop.serve)
        await runner.run(duration=3.5)
        tg.cancel_scope.cancel()
    loop.close()
    stats = core.statistics()
    assert stats.clock_ready
    assert stats.played >= 38, stats  # 40 frames; a loaded host may be late for one or two
    assert runner.stats.received > 40
    entries = core.log.for_bid(1)
    assert all(e.true_at is not None for e in entries)
    assert loop.server.messages_of(type(loop.server.messages[0][1]))  # the server heard the device


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])  # asyncio: through `loa fleet` below
async def test_fleet_host_runs_devices_with_their_own_sockets_and_clocks(anyio_backend: str) -> None:
    loop = LoopbackServer(stream_frames=30)
    devices = [
        (SpeakerCore(static_private=bytes([i + 1]) * 32, server_public=loop.public_key, server_address=loop.address,
                     batch=0.1), SimulatedClock(drift_ppm=20.0 * i, offset_s=2.0 * i))
        for i in range(4)
    ]
    host = FleetHost(devices, loop.address, bind_host="127.0.0.1", start_rate=50.0)
    assert len({s.getsockname() for s in host.socks}) == 4
    async with anyio.create_task_group() as tg:
        tg.start_soon(loop.serve)
        await host.run(duration=3.5, tick=1.0)
        tg.cancel_scope.cancel()
    loop.close()
    for core, _ in devices:
        stats = core.statistics()
        assert stats.clock_ready
        assert stats.played >= 28, stats


def test_cli_device_creates_its_key_records_and_reports(tmp_path: Path) -> None:
    loop = LoopbackServer(stream_frames=40)
    thread = loop.serve_in_thread()
    key_file = tmp_path / "id" / "device.key"
    out = tmp_path / "speaker.wav"
    args = ["--server", f"127.0.0.1:{loop.address[1]}", "--server-key", encode_key(loop.public_key),
            "--key-file", str(key_file), "--record", str(out), "--duration", "3.5", "--backend", "asyncio"]
    result = CliRunner().invoke(device, args)
    loop.stopped.set()
    thread.join()
    loop.close()
    assert result.exit_code == 0, result.output
    assert "device public key: " in result.output
    assert key_file.stat().st_mode & 0o777 == 0o600
    with wave.open(str(out)) as wav:
        assert wav.getframerate() == 48_000
        assert wav.getnframes() >= 38 * 960
    assert "exact=" in result.output


def test_cli_fleet_writes_keys_for_enrolment_and_a_summary(tmp_path: Path) -> None:
    loop = LoopbackServer(stream_frames=30)
    thread = loop.serve_in_thread()
    args = ["--count", "3", "--full", "1", "--server", f"127.0.0.1:{loop.address[1]}",
            "--server-key", encode_key(loop.public_key), "--keys-dir", str(tmp_path / "keys"),
            "--record-dir", str(tmp_path / "wav"), "--duration", "3.5", "--bind", "127.0.0.1",
            "--status-every", "2", "--backend", "asyncio"]
    result = CliRunner().invoke(fleet, args)
    loop.stopped.set()
    thread.join()
    loop.close()
    assert result.exit_code == 0, result.output
    toml = (tmp_path / "keys" / "devices.toml").read_text()
    assert toml.count("[[device]]") == 3
    assert len(list((tmp_path / "keys").glob("device-*.key"))) == 3
    assert (tmp_path / "wav" / "sim-00000.wav").stat().st_size > 44
    assert "connected 3/3" in result.output
    assert "playing 3" in result.output


_REAL_KEY = encode_key(x25519_public(bytes(range(1, 33))))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server-key", "not a key!"], "--server-key is not a 32-byte key: neither 64 hex digits nor base64"),
        (["--server-key", "nope"], "--server-key is not a 32-byte key: 3 bytes, not 32"),
        (["--server-key", "A" * 43 + "="], "--server-key is a weak (small-order) X25519 key"),
        (["--server-key", _REAL_KEY, "--server", "127.0.0.1:99999"], "bad server address"),
        (["--server-key", _REAL_KEY], "give --server HOST:PORT, or --zeroconf"),
        (["--server-key", _REAL_KEY, "--server", "127.0.0.1", "--record", "a.wav", "--sound-card"],
         "either --record or --sound-card"),
    ],
)
def test_cli_device_bad_arguments_are_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(device, args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_fleet_refuses_more_full_devices_than_devices(tmp_path: Path) -> None:
    result = CliRunner().invoke(fleet, ["--count", "2", "--full", "3", "--server", "127.0.0.1", "--server-key",
                                        _REAL_KEY, "--keys-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "--full 3 is more than --count 2" in result.output


def test_discovery_takes_only_the_provisioned_key() -> None:
    from zeroconf import ServiceInfo, Zeroconf

    from loa.devices.discovery import SERVICE_TYPE, DiscoveryError, discover_server, service_properties

    key = bytes(range(32))
    zc = Zeroconf(interfaces=["127.0.0.1"])
    info = ServiceInfo(SERVICE_TYPE, f"loa-test.{SERVICE_TYPE}", addresses=[socket.inet_aton("127.0.0.1")],
                       port=4433, properties=service_properties(key))
    try:
        zc.register_service(info)
        assert discover_server(key, timeout=5.0, interfaces=["127.0.0.1"]) == ("127.0.0.1", 4433)
        with pytest.raises(DiscoveryError, match="another server key"):
            discover_server(bytes(32), timeout=2.0, interfaces=["127.0.0.1"])
    finally:
        zc.unregister_service(info)
        zc.close()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_fleet_host_stamps_each_datagram_with_its_kernel_arrival(anyio_backend: str) -> None:
    """With ``timestamps`` the time handed on for each datagram is the kernel's receive time on the monotonic
    clock: after the datagram was sent, before the device got it; the decoding (priority) devices still play."""
    loop = LoopbackServer(stream_frames=30)
    devices = [(SpeakerCore(static_private=bytes([i + 9]) * 32, server_public=loop.public_key,
                            server_address=loop.address, batch=0.1), SimulatedClock()) for i in range(3)]
    host = FleetHost(devices, loop.address, bind_host="127.0.0.1", start_rate=50.0, priority=1, timestamps=True)
    assert host.timestamps
    seen: list[tuple[float, float]] = []
    original = devices[0][0].receive_datagram

    def spy(*args: object, **kwargs: object) -> None:
        seen.append((host.arrival, time.monotonic()))
        original(*args, **kwargs)  # type: ignore[arg-type]

    devices[0][0].receive_datagram = spy  # type: ignore[method-assign]
    began = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(loop.serve)
        await host.run(duration=3.0, tick=0.5)
        tg.cancel_scope.cancel()
    loop.close()
    assert seen
    assert all(began < arrival <= handled for arrival, handled in seen)
    assert len({arrival for arrival, _ in seen}) > len(seen) // 2  # per datagram, not one reading per round
    assert devices[0][0].statistics().played >= 28
    assert host.offset_change_ns < 50_000_000


def test_realtime_offset_converts_the_wall_clock() -> None:
    offset = realtime_offset()
    assert abs((time.time_ns() - offset) - time.monotonic_ns()) < 5_000_000


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_fleet_host_starts_no_more_devices_than_its_connecting_window(anyio_backend: str) -> None:
    """A server that never answers: however fast the start rate, only ``max_connecting`` devices are started;
    with a window as large as the fleet, all of them are."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    server = silent.getsockname()
    try:
        for window, expected in ((3, 3), (12, 12)):
            devices = [(SpeakerCore(static_private=bytes([i + 1]) * 32, server_public=bytes(range(32)),
                                    server_address=server), SimulatedClock()) for i in range(12)]
            host = FleetHost(devices, server, bind_host="127.0.0.1", start_rate=1000.0, max_connecting=window)
            try:
                await host.run(duration=0.6, tick=0.1)
            finally:
                host.close()
            assert host.started == expected
            assert host.connecting() == expected
    finally:
        silent.close()


class _DueCore(SpeakerCore):
    """A core whose only event is one timer at ``due`` (its own clock), noting when the host ran it."""

    due: float | None = None
    ran: list[int] | None = None
    index = -1
    host_clock: SimulatedClock | None = None

    def next_event(self) -> float | None:
        return self.due

    def advance(self, now: float) -> None:
        assert self.ran is not None
        self.ran.append(self.index)
        self.due = None


class _AckingCore(_DueCore):
    """A :class:`_DueCore` that may also have acknowledgements due at ``ack`` (its own clock)."""

    ack: float | None = None

    def output_due(self) -> float | None:
        return self.ack

    def advance(self, now: float) -> None:
        super().advance(now)
        self.ack = None


class _BusyAckingCore(_DueCore):
    """Acknowledgements always due again, each run taking a millisecond: a host under a stream of them."""

    def output_due(self) -> float | None:
        assert self.host_clock is not None
        return self.host_clock.local(time.monotonic())

    def advance(self, now: float) -> None:
        assert self.ran is not None
        self.ran.append(self.index)
        time.sleep(0.001)


def _due_devices(kinds: list[type[_DueCore]], ran: list[int]) -> list[tuple[_DueCore, SimulatedClock]]:
    """One device of each kind, each on a clock of its own, noting in ``ran`` when the host runs it."""
    devices: list[tuple[_DueCore, SimulatedClock]] = []
    for i, kind in enumerate(kinds):
        core = kind(static_private=bytes([i + 1]) * 32, server_public=bytes(range(32)),
                    server_address=("127.0.0.1", 9))
        clock = SimulatedClock(drift_ppm=10.0 * i, offset_s=5.0 * i)
        core.index, core.ran, core.host_clock = i, ran, clock
        devices.append((core, clock))
    return devices


async def _run_timers(devices: list[tuple[_DueCore, SimulatedClock]], seconds: float, *, priority: int = 0,
                      reverse: bool = False) -> FleetHost:
    """A host of ``devices``, each scheduled (last first if ``reverse``), running its timer loop ``seconds``."""
    host = FleetHost(devices, ("127.0.0.1", 9), bind_host="127.0.0.1", priority=priority)
    try:
        for i in reversed(range(len(devices))) if reverse else range(len(devices)):
            host._schedule(i)
        with anyio.move_on_after(seconds):
            await host._timers()
    finally:
        host.close()
    return host


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_fleet_host_behind_runs_the_decoding_devices_timers_first(anyio_backend: str) -> None:
    """Every timer is overdue, the counting devices' by more: the decoding devices' (the first ``priority``) run
    first all the same, and the host reports how late each kind ran."""
    ran: list[int] = []
    now = time.monotonic()
    devices = _due_devices([_DueCore] * 8, ran)
    for i, (core, clock) in enumerate(devices):
        core.due = clock.local(now - (1.0 if i < 2 else 3.0))
    host = await _run_timers(devices, 0.3, priority=2, reverse=True)
    assert sorted(ran[:2]) == [0, 1]
    assert sorted(ran) == list(range(8))
    assert 1.0 <= host.stats.priority_timer_lag_max_s < 2.0
    assert host.stats.timer_lag_max_s >= 3.0
    assert host.stats.timer_lag_s >= 3.0  # the latest round that ran counting devices' timers


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_fleet_host_behind_runs_devices_with_acknowledgements_due_first(anyio_backend: str) -> None:
    """Every counting device has a timer 3 s overdue; one of them (5) has its timer only 1 s overdue but its
    acknowledgements due now: it runs first, so that its acks do not wait behind the host's backlog, and once."""
    ran: list[int] = []
    now = time.monotonic()
    devices = _due_devices([_AckingCore] * 8, ran)
    for i, (core, clock) in enumerate(devices):
        core.due = clock.local(now - (1.0 if i == 5 else 3.0))
        core.ack = clock.local(now - 0.01) if i == 5 else None  # type: ignore[attr-defined]
    host = await _run_timers(devices, 0.3)
    assert ran[0] == 5
    assert sorted(ran) == list(range(8))  # and every device once: its timer entry was superseded by that run
    assert host.acks_first == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_acknowledgements_due_all_the_time_do_not_starve_the_other_timers(anyio_backend: str) -> None:
    """Seven devices have acknowledgements due again as soon as they ran; the eighth's timer is overdue: it runs
    within the first rounds all the same (the other timers keep a share of each slice)."""
    ran: list[int] = []
    devices = _due_devices([_BusyAckingCore] * 7 + [_DueCore], ran)
    core, clock = devices[7]
    core.due = clock.local(time.monotonic() - 1.0)
    host = await _run_timers(devices, 0.5)
    assert host.acks_first > 20  # the acknowledgements kept coming
    assert 7 in ran  # and the overdue timer ran all the same
