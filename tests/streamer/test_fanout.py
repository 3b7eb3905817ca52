"""Fan-out over real loopback sockets: every destination gets the packet exactly once, whatever happens."""

from __future__ import annotations

import array
import ctypes
import errno
import select
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import anyio
import pytest

from loa.streamer.fanout import DEFAULT_BACKEND, Fanout, FanoutBusyError

BACKENDS = ["sendmmsg", "sendto"] if DEFAULT_BACKEND == "sendmmsg" else ["sendto"]
PACKET = bytes(range(256))[:172]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


HAVE_IPV6 = _ipv6_loopback()
needs_ipv6 = pytest.mark.skipif(not HAVE_IPV6, reason="no IPv6 loopback (::1) on this host")


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as st:
        yield st


def receivers(stack: ExitStack, count: int, host: str = "127.0.0.1") -> list[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    out = []
    for _ in range(count):
        sock = stack.enter_context(socket.socket(family, socket.SOCK_DGRAM))
        sock.bind((host, 0))
        sock.setblocking(False)
        out.append(sock)
    return out


def sender(stack: ExitStack, family: int = socket.AF_INET) -> socket.socket:
    sock = stack.enter_context(socket.socket(family, socket.SOCK_DGRAM))
    sock.setblocking(False)
    return sock


def fanout_to(sock: socket.socket, rx: list[socket.socket], backend: str, **kwargs: Any) -> Fanout:
    fanout = Fanout(sock, backend=backend, **kwargs)  # type: ignore[arg-type]
    for i, r in enumerate(rx):
        fanout.add(i, r.getsockname()[:2])
    return fanout


def received(rx: list[socket.socket], expect: dict[int, int], timeout: float = 2.0) -> dict[int, list[bytes]]:
    """Read ``expect[i]`` datagrams from receiver i, then make sure nothing else arrives at any receiver."""
    got: dict[int, list[bytes]] = {i: [] for i in range(len(rx))}
    for i, count in expect.items():
        while len(got[i]) < count:
            if not select.select([rx[i]], [], [], timeout)[0]:
                break
            got[i].append(rx[i].recv(65536))
    readable, _, _ = select.select(rx, [], [], 0.05)
    for sock in readable:
        got[rx.index(sock)].append(sock.recv(65536))
    return got


def assert_once(rx: list[socket.socket], targets: set[int], packet: bytes = PACKET) -> None:
    got = received(rx, dict.fromkeys(targets, 1))
    assert {i: v for i, v in got.items() if v} == {i: [packet] for i in targets}


class FlakyCall:
    """Wraps sendmmsg: follows a script of ("ok", most messages) and ("err", errno), then behaves."""

    def __init__(self, real: Callable[..., int], script: list[tuple[str, int]]) -> None:
        self.real, self.script, self.calls = real, list(script), 0

    def __call__(self, fd: int, msgvec: ctypes.c_void_p, vlen: int, flags: int) -> int:
        self.calls += 1
        if self.script:
            kind, value = self.script.pop(0)
            if kind == "err":
                ctypes.set_errno(value)
                return -1
            vlen = min(vlen, value)
        return self.real(fd, msgvec, vlen, flags)


class FlakySocket(socket.socket):
    """A socket whose sendto follows a script: an errno raises it; None lets the datagram through."""

    script: list[int | None]

    def sendto(self, data: Any, *args: Any) -> int:  # type: ignore[override]
        if self.script:
            err = self.script.pop(0)
            if err is not None:
                raise OSError(err, "injected")  # OSError(EAGAIN, ...) is a BlockingIOError
        return super().sendto(data, *args)


def flaky(fanout: Fanout, stack: ExitStack, mmsg: list[tuple[str, int]], sendto: list[int | None],
          monkeypatch: pytest.MonkeyPatch) -> None:
    """Inject failures into whichever backend ``fanout`` uses (same outcome expected from both scripts)."""
    if fanout.backend == "sendmmsg":
        monkeypatch.setattr(fanout, "_call", FlakyCall(fanout._call, mmsg))
    else:
        sock = stack.enter_context(FlakySocket(fanout._sock.family, socket.SOCK_DGRAM))
        sock.setblocking(False)
        sock.script = list(sendto)
        monkeypatch.setattr(fanout, "_sock", sock)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_receiver_gets_the_packet_once_byte_identical(stack: ExitStack, backend: str) -> None:
    rx = receivers(stack, 50)
    fanout = fanout_to(sender(stack), rx, backend)
    assert fanout.send(PACKET) == 50
    assert fanout.pending == 0
    assert_once(rx, set(range(50)))
    stats = fanout.statistics()
    assert (stats.destinations, stats.sent, stats.pending, stats.failed) == (50, 50, 0, 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("packet", [bytearray(PACKET), memoryview(PACKET), memoryview(array.array("H", PACKET))])
def test_any_bytes_like_packet(stack: ExitStack, backend: str, packet: Any) -> None:
    rx = receivers(stack, 3)
    fanout = fanout_to(sender(stack), rx, backend)
    assert fanout.send(packet) == 3
    assert_once(rx, {0, 1, 2}, bytes(packet))


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_batches_and_growth(stack: ExitStack, backend: str) -> None:
    rx = receivers(stack, 150)
    fanout = fanout_to(sender(stack), rx, backend, batch=7)
    assert fanout.send(PACKET) == 150
    assert_once(rx, set(range(150)))


@needs_ipv6
@pytest.mark.parametrize("backend", BACKENDS)
def test_ipv6_and_ipv4_mapped_destinations(stack: ExitStack, backend: str) -> None:
    rx6 = receivers(stack, 5, "::1")
    rx4 = receivers(stack, 3, "127.0.0.1")
    sock = sender(stack, socket.AF_INET6)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    fanout = fanout_to(sock, rx6 + rx4, backend)
    assert fanout.address(5)[0] == "::ffff:127.0.0.1"
    assert fanout.send(PACKET) == 8
    assert_once(rx6 + rx4, set(range(8)))


@needs_ipv6
def test_v6only_socket_refuses_ipv4(stack: ExitStack) -> None:
    sock = sender(stack, socket.AF_INET6)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    fanout = Fanout(sock)
    with pytest.raises(ValueError, match="V6ONLY"):
        fanout.add("a", ("127.0.0.1", 9))
    assert len(fanout) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_subset_send(stack: ExitStack, backend: str) -> None:
    rx = receivers(stack, 12)
    fanout = fanout_to(sender(stack), rx, backend)
    assert fanout.send_to(PACKET, [3, 7, 11]) == 3
    assert_once(rx, {3, 7, 11})
    with pytest.raises(KeyError):
        fanout.send_to(PACKET, [1, "nobody"])
    assert_once(rx, set())


@pytest.mark.parametrize("backend", BACKENDS)
def test_address_update_moves_the_destination(stack: ExitStack, backend: str) -> None:
    rx = receivers(stack, 4)
    fanout = fanout_to(sender(stack), rx[:3], backend)
    fanout.update(1, rx[3].getsockname())
    assert fanout.address(1) == rx[3].getsockname()
    assert fanout.send(PACKET) == 3
    assert_once(rx, {0, 2, 3})
    with pytest.raises(ValueError, match="numeric"):
        fanout.update(1, ("localhost", 5000))
    assert fanout.address(1) == rx[3].getsockname()


@pytest.mark.parametrize("backend", BACKENDS)
def test_remove_and_add(stack: ExitStack, backend: str) -> None:
    rx = receivers(stack, 10)
    fanout = fanout_to(sender(stack), rx[:8], backend)
    fanout.remove(0)
    fanout.remove(5)
    fanout.remove(7)
    fanout.add("late", rx[9].getsockname())
    with pytest.raises(ValueError, match="already"):
        fanout.add("late", rx[8].getsockname())
    with pytest.raises(KeyError):
        fanout.remove(0)
    assert sorted(map(str, fanout.keys())) == ["1", "2", "3", "4", "6", "late"]
    assert fanout.send(PACKET) == 6
    assert_once(rx, {1, 2, 3, 4, 6, 9})


@pytest.mark.parametrize("backend", BACKENDS)
def test_blocked_send_resumes_every_destination_exactly_once(stack: ExitStack, backend: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    rx = receivers(stack, 50)
    fanout = fanout_to(sender(stack), rx, backend)
    ok: list[int | None] = [None]
    flaky(fanout, stack,
          [("ok", 7), ("err", errno.EAGAIN), ("ok", 3), ("err", errno.EINTR), ("ok", 20), ("err", errno.ENOBUFS)],
          ok * 7 + [errno.EAGAIN] + ok * 23 + [errno.ENOBUFS], monkeypatch)
    assert fanout.send(PACKET) == 7
    assert (fanout.pending, fanout.blocked_by) == (43, errno.EAGAIN)
    with pytest.raises(FanoutBusyError):
        fanout.send(PACKET)
    assert fanout.resume() == 23
    assert (fanout.pending, fanout.blocked_by) == (20, errno.ENOBUFS)
    assert fanout.resume() == 20
    assert (fanout.pending, fanout.blocked_by) == (0, 0)
    assert fanout.resume() == 0
    assert_once(rx, set(range(50)))
    assert fanout.statistics().blocked == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_refused_destination_is_skipped_and_counted(stack: ExitStack, backend: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rx = receivers(stack, 6)
    fanout = fanout_to(sender(stack), rx, backend)
    flaky(fanout, stack, [("ok", 2), ("err", errno.EPERM)], [None, None, errno.EPERM], monkeypatch)
    assert fanout.send(PACKET) == 5
    assert fanout.pending == 0
    assert fanout.statistics().failed == 1
    assert_once(rx, {0, 1, 3, 4, 5})


@pytest.mark.parametrize("backend", BACKENDS)
def test_other_errors_raise_and_discard_the_rest(stack: ExitStack, backend: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    rx = receivers(stack, 6)
    fanout = fanout_to(sender(stack), rx, backend)
    flaky(fanout, stack, [("ok", 2), ("err", errno.EMSGSIZE)], [None, None, errno.EMSGSIZE], monkeypatch)
    with pytest.raises(OSError, match=r"\[Errno") as info:
        fanout.send(PACKET)
    assert info.value.errno == errno.EMSGSIZE
    assert fanout.pending == 0
    assert fanout.statistics().discarded == 4
    assert_once(rx, {0, 1})


@pytest.mark.parametrize("backend", BACKENDS)
def test_set_changes_while_pending(stack: ExitStack, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every removal position and block position: the rest still get the pending packet exactly once."""
    size = 6
    rx = receivers(stack, size + 1)
    for blocked_at in range(size):
        for victim in range(size):
            fanout = fanout_to(sender(stack), rx[:size], backend)
            flaky(fanout, stack, [("ok", blocked_at), ("err", errno.EAGAIN)] if blocked_at else
                  [("err", errno.EAGAIN)], [None] * blocked_at + [errno.EAGAIN], monkeypatch)
            assert fanout.send(PACKET) == blocked_at
            fanout.remove(victim)
            fanout.add("late", rx[size].getsockname())
            while fanout.pending:
                fanout.resume()
            got = received(rx, {i: 1 for i in range(size) if i != victim})
            counts = {i: len(v) for i, v in got.items()}
            assert counts[size] == 0, "a destination added while pending got the packet"
            assert all(counts[i] == 1 for i in range(size) if i != victim), (blocked_at, victim, counts)
            assert counts[victim] == (1 if victim < blocked_at else 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_growth_while_pending(stack: ExitStack, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rx = receivers(stack, 140)
    fanout = fanout_to(sender(stack), rx[:40], backend)
    flaky(fanout, stack, [("ok", 10), ("err", errno.EAGAIN)], [None] * 10 + [errno.EAGAIN], monkeypatch)
    assert fanout.send(PACKET) == 10
    for i in range(40, 140):
        fanout.add(i, rx[i].getsockname())
    assert fanout.resume() == 30
    assert_once(rx, set(range(40)))
    assert fanout.send(PACKET) == 140
    assert_once(rx, set(range(140)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_pending_subset_keeps_its_addresses(stack: ExitStack, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rx = receivers(stack, 8)
    fanout = fanout_to(sender(stack), rx[:6], backend)
    flaky(fanout, stack, [("ok", 1), ("err", errno.EAGAIN)], [None, errno.EAGAIN], monkeypatch)
    assert fanout.send_to(PACKET, [5, 1, 3]) == 1
    assert fanout.pending == 2
    fanout.remove(1)
    fanout.update(3, rx[7].getsockname())
    assert fanout.resume() == 2
    assert_once(rx, {5, 1, 3})
    assert fanout.send_to(PACKET, [3]) == 1
    assert_once(rx, {7})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("async_backend", ["asyncio", "trio"])
def test_wait_sent_completes_a_blocked_packet(stack: ExitStack, backend: str, async_backend: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    rx = receivers(stack, 20)
    fanout = fanout_to(sender(stack), rx, backend)
    flaky(fanout, stack, [("ok", 5), ("err", errno.EAGAIN), ("err", errno.ENOBUFS), ("ok", 4)],
          [None] * 5 + [errno.EAGAIN, errno.ENOBUFS] + [None] * 4, monkeypatch)

    async def main() -> None:
        assert fanout.send(PACKET) == 5
        await fanout.wait_sent(retry_after=0.0)
        assert fanout.pending == 0

    anyio.run(main, backend=async_backend)
    assert_once(rx, set(range(20)))


def test_cancelled_wait_discards_the_rest(stack: ExitStack, monkeypatch: pytest.MonkeyPatch) -> None:
    rx = receivers(stack, 10)
    fanout = fanout_to(sender(stack), rx, BACKENDS[0])
    flaky(fanout, stack, [("ok", 4)] + [("err", errno.ENOBUFS)] * 10_000, [None] * 4 + [errno.ENOBUFS] * 10_000,
          monkeypatch)

    async def main() -> None:
        assert fanout.send(PACKET) == 4
        with anyio.move_on_after(0.05):
            await fanout.wait_sent(retry_after=0.001)

    anyio.run(main)
    assert fanout.pending == 0
    assert fanout.statistics().discarded == 6
    assert_once(rx, {0, 1, 2, 3})
    assert fanout.send(PACKET) == 0  # no FanoutBusyError: the cancelled packet was discarded
    assert fanout.pending == 10


def test_misuse(stack: ExitStack) -> None:
    blocking = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    with pytest.raises(ValueError, match="non-blocking"):
        Fanout(blocking)
    tcp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    tcp.setblocking(False)
    with pytest.raises(ValueError, match="UDP"):
        Fanout(tcp)
    fanout = Fanout(sender(stack))
    with pytest.raises(ValueError, match="does not fit"):
        fanout.send(bytes(65536))
    for bad in [("::1", 5000), ("127.0.0.1", 0), ("127.0.0.1",), "127.0.0.1:5000", ("127.1", 5000)]:
        with pytest.raises(ValueError, match=r"destination|cannot send"):
            fanout.add("x", bad)  # type: ignore[arg-type]
    assert len(fanout) == 0
    assert fanout.send(PACKET) == 0
