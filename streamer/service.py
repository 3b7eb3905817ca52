"""The streamer's I/O: one non-blocking UDP socket, a receive loop, a timer loop, and a frame clock per broadcast.

:class:`StreamerService` runs a :class:`~loa.streamer.core.StreamerCore` under anyio, on trio or on asyncio
(uvloop when installed). Everything a device sends and everything sent to devices - handshakes, control, media,
retransmissions, multicast - goes through one socket:

* the receive loop waits until the socket is readable, drains up to 256 datagrams into the core (fewer if that
  takes more than 2 ms: :data:`RECEIVE_SLICE_S`), then sends what the core queued and goes back to the event loop,
  so that under a flood a frame, an alert or a timer waits at most one such slice; on Linux it first gives the
  socket a kernel filter (:mod:`loa.streamer.sockfilter`) so that datagrams no server takes (junk, wrong type,
  version or length) are dropped, and counted, by the kernel;
* the timer loop sleeps until the core's ``next_timeout()`` (or until woken by an API call) and runs it; when a
  datagram batch gives the core an earlier deadline (a delayed acknowledgement, a retransmission of a reply) the
  receive loop wakes it, so that the deadline is kept rather than the one the loop went to sleep on; after each
  batch the receive loop tells the core how far its input is read (the kernel's arrival time of the batch's last
  datagram, or nothing once the socket is empty), and the core holds back the retransmissions due after that
  (:class:`~loa.protocol.connection.ServerConnection`): their acknowledgements may be in the unread part;
* each live broadcast has its own task: it sleeps until the frame is due (``next_frame_time``, on the same
  monotonic clock, computed from the frame count so it never drifts), takes the frame's packets from the core
  (encoded, packetised and protected once) and hands each to a :class:`~loa.streamer.fanout.Fanout` that sends
  the same bytes to every destination with ``sendmmsg``; it awaits only when the socket is full;
* live RTP/Opus inputs each have a socket and a task feeding a :class:`~loa.streamer.sources.LiveRtpSource`.

The core is not thread-safe: call it (and the methods here) from the service's event loop only. After calling
the core directly, call :meth:`StreamerService.changed` so that new timers, broadcasts and messages are seen.
The service drains the core's events after every datagram batch and timer and hands them to ``on_event``.

IP multicast: with zone groups configured, the socket is given ``IP_MULTICAST_TTL`` (16), ``IP_MULTICAST_LOOP``
and, when it is bound to a specific IPv4 address, ``IP_MULTICAST_IF`` set to that address, so groups go out of
the interface that address belongs to. On one host (tests, a lab) bind to 127.0.0.1: Linux then delivers the
group's packets to receivers that joined the group on 127.0.0.1, without any route. On a wildcard bind, group
packets follow the routing table: a route for 239.0.0.0/8 (or a default route) must point at the LAN.

Restart notices (PROTOCOL.md section 3.16), with ``peers_path``: at start the service reads the devices the
previous run had sessions with (:mod:`loa.streamer.peers`) and sends each enrolled one a restart notice, at most
:data:`NOTICE_RATE` a second (about what the server can take of the handshakes they bring); while it runs it
saves, every :data:`PEERS_SAVE_S` when anything changed, where each device's session is and this server's boot.
A file that cannot be read or written is logged and the service goes on without notices.

Shutdown (:meth:`stop`, or SIGINT/SIGTERM through :func:`run`): every device with a session gets ``bye``, every
broadcast sends its closing RTCP BYE, the queues are flushed, the advertisement is withdrawn, sockets closed; the
peers file is emptied (the devices were told ``bye``: a notice would find no session).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import math
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from loa.protocol.datagram import MAX_DATAGRAM
from loa.streamer import sockfilter
from loa.streamer.core import StreamerCore
from loa.streamer.discovery import Advertiser
from loa.streamer.fanout import Backend, Fanout
from loa.streamer.peers import Peer, load_peers, save_peers
from loa.streamer.sendmany import DatagramSender
from loa.streamer.sources import LiveRtpSource, Source
from loa.streamer.status import StreamerEvent

__all__ = ["MULTICAST_TTL", "RECEIVE_BUFFER", "ServiceStatistics", "StreamerService", "epoch_for", "open_udp_socket",
           "receive_buffer", "receive_buffer_shortfall", "set_receive_buffer"]

MULTICAST_TTL = 16
#: The receive buffer `loa serve` and `loa streamer` ask for. The system's default (``net.core.rmem_default``,
#: 208 KiB on Linux) holds about 200 small datagrams, a tenth of a second of what 10,000 devices send at their
#: ordinary rates: any pause of the receive loop longer than that (a garbage collection of a large heap, a burst
#: of answers to an alert) dropped datagrams, probes went unanswered and devices handshook again. 4 MiB holds
#: about 3,500; under a flood the server reads as fast as it can either way, and a datagram waits at most the
#: time the loop takes to read that many (about 0.1 s at the 40,000 a second it reads under `loa bench flood`).
RECEIVE_BUFFER = 4 * 1024 * 1024
# SO_RCVBUFFORCE (asm-generic/socket.h; Python does not name it): SO_RCVBUF past net.core.rmem_max, with
# CAP_NET_ADMIN.
_SO_RCVBUFFORCE: int | None = 33 if sys.platform.startswith("linux") else None
RECEIVE_BATCH = 256
#: The receive loop hands the event loop back after this much time reading (or RECEIVE_BATCH datagrams).
RECEIVE_SLICE_S = 0.002
WALL_OFFSET_REFRESH_S = 10.0
# SO_TIMESTAMPNS (asm-generic/socket.h; Python does not name it): the kernel's wall-clock time of each datagram,
# a struct timespec. A clock probe's t2 is taken from it (PROTOCOL.md section 4.7: "kernel receive timestamp
# where available"), so that the time a datagram waited in the socket's queue is not taken for network delay.
SO_TIMESTAMPNS: int | None = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None)
_TIMESPEC = struct.Struct("@qq")
_STAMP_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)


def _stamp_arrivals(sock: socket.socket) -> bool:
    """Ask the kernel to stamp every datagram ``sock`` receives; False where it cannot."""
    if SO_TIMESTAMPNS is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def _wall_offset() -> float:
    """The event loop's clock minus the wall clock, from the closest of a few bracketed readings."""
    best: tuple[float, float] | None = None
    for _ in range(5):
        before = anyio.current_time()
        wall = time.time_ns()
        after = anyio.current_time()
        if best is None or after - before < best[0]:
            best = (after - before, (before + after) / 2 - wall / 1e9)
    assert best is not None
    return best[1]


def _loop_clock() -> Callable[[], float]:
    """The running event loop's clock, the one ``anyio.current_time()`` reads, as a function to call per datagram:
    on asyncio the loop's own ``time`` (anyio's look-up of the backend costs as much as the rest of reading a
    datagram), elsewhere ``anyio.current_time``."""
    try:
        return asyncio.get_running_loop().time
    except RuntimeError:  # no asyncio loop runs this task: trio
        return anyio.current_time


def _waiting(sock: socket.socket) -> bool:
    """True if a datagram waits in the (non-blocking) socket, without reading it."""
    try:
        sock.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # an error queued on the socket (ICMP): the next read reports it
    return True


def _arrival(ancillary: list[tuple[int, int, bytes]], offset: float) -> float | None:
    """The kernel's receive time of a datagram on the event loop's clock, or None if it gave none."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return int(seconds) + int(nanoseconds) / 1e9 + offset
    return None
SEND_RETRIES = 100
FRAME_CATCH_UP = 10
SHUTDOWN_GRACE_S = 0.5
PEERS_SAVE_S = 1.0  # how often where the sessions are is saved, when it changed (restart notices)
NOTICE_RATE = 2000  # restart notices a second at start: each brings a handshake
NOTICE_PACE_S = 0.05


@dataclass(frozen=True, slots=True)
class ServiceStatistics:
    received: int
    sent: int
    send_errors: int
    send_blocked: int
    media_packets: int
    receive_errors: int
    kernel_drops: int | None = None  # dropped by the kernel: the socket filter, or the receive buffer full


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for a ``size``-byte receive buffer; returns what the socket has (Linux reports twice what it grants,
    for its bookkeeping; this returns the granted size). An unprivileged ``SO_RCVBUF`` is capped at
    ``net.core.rmem_max``; a process with ``CAP_NET_ADMIN`` then gets it with ``SO_RCVBUFFORCE``."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    if receive_buffer(sock) < size and _SO_RCVBUFFORCE is not None:
        with contextlib.suppress(OSError):  # EPERM without CAP_NET_ADMIN: keep what SO_RCVBUF gave
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
    return receive_buffer(sock)


def receive_buffer(sock: socket.socket) -> int:
    """The receive buffer :func:`set_receive_buffer` got for ``sock``, in the bytes it asked for (Linux reports
    twice that; a socket never given one reports ``net.core.rmem_default`` itself)."""
    value = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return value // 2 if sys.platform.startswith("linux") else value


def receive_buffer_shortfall(sock: socket.socket, asked: int) -> str | None:
    """What to tell the operator when ``sock`` got less receive buffer than ``asked`` (None when it got it)."""
    got = receive_buffer(sock)
    if got >= asked:
        return None
    return (f"the device socket's receive buffer is {got} bytes, not the {asked} asked for: raise the system's limit "
            f"(sysctl net.core.rmem_max={asked}) or run with CAP_NET_ADMIN, or bursts of device traffic will be "
            "dropped")


def open_udp_socket(host: str, port: int, *, multicast: bool = False,
                    receive_buffer_size: int | None = None) -> socket.socket:
    """A bound, non-blocking UDP socket; with ``multicast`` set up to send to groups (see the module docstring);
    with ``receive_buffer_size``, given that receive buffer as far as the system allows
    (:func:`set_receive_buffer`; :func:`receive_buffer` says what it got).

    Raises OSError (address in use, not an address of this host...)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if receive_buffer_size is not None:
            set_receive_buffer(sock, receive_buffer_size)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.setblocking(False)
        if multicast and family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, MULTICAST_TTL)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            if host != "0.0.0.0":  # noqa: S104 - a wildcard bind leaves the interface to the routing table
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(host))
        elif multicast:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, MULTICAST_TTL)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
    except BaseException:
        sock.close()
        raise
    return sock


class StreamerService:
    """Runs a core on a socket (see the module docstring). Use :meth:`serve` inside a task group."""

    #: Give the socket the kernel filter of :mod:`loa.streamer.sockfilter` when the receive loop starts.
    socket_filter = True
    #: Whether the kernel took it (set by the receive loop).
    filtered = False

    def __init__(self, core: StreamerCore, sock: socket.socket, *, fanout_backend: Backend = "auto",
                 advertiser: Advertiser | None = None, log: Callable[[str], None] | None = None,
                 on_event: Callable[[StreamerEvent], object] | None = None, peers_path: Path | None = None) -> None:
        if sock.getblocking():
            raise ValueError("the service needs a non-blocking socket")
        self.core = core
        self.sock = sock
        # Stamped from now on: a datagram queued before the first read then carries its arrival, not the read time
        # (the kernel stamps an unstamped one when it is read)
        self._stamped = _stamp_arrivals(sock)
        self._fanout_backend: Backend = fanout_backend
        self._advertiser = advertiser
        self._log = log or (lambda _line: None)
        self._on_event = on_event
        self._wakeup = anyio.Event()
        self._sleeping_until: float | None = None  # the deadline the timer loop sleeps on (None: none, 60 s)
        self._stopping = anyio.Event()
        self._pending: list[tuple[bytes, tuple[str, int]]] = []
        self._sender = DatagramSender(sock, backend="sendto" if fanout_backend == "sendto" else "auto")
        self._media: dict[int, anyio.CancelScope] = {}
        self._media_done: dict[int, anyio.Event] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._received = self._sent = self._send_errors = self._blocked = self._media_packets = 0
        self._receive_errors = 0
        self._peers_path = peers_path
        self._peers_failed = False
        self._peers_lock = anyio.Lock()
        self._peers_closed = False
        self.notices_sent = 0

    # -- public ------------------------------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    @staticmethod
    def now() -> float:
        """The service's clock (the core's ``now``)."""
        return anyio.current_time()

    def changed(self) -> None:
        """Tell the loops that the core was called: new messages, timers or broadcasts."""
        self._wakeup.set()
        self._sync_media()

    def start_broadcast(self, source: Source, zones: Sequence[str], **options: Any) -> int:
        bid = self.core.start_broadcast(source, zones, self.now(), **options)
        self.changed()
        return bid

    def stop_broadcast(self, bid: int) -> None:
        self.core.stop_broadcast(bid, self.now())
        self.changed()

    def trigger_alert(self, source: Source, **options: Any) -> int:
        """Trigger an alert (see :meth:`StreamerCore.trigger_alert`). Its beacon (one datagram for every device,
        PROTOCOL.md section 6.4.2) is sent before anything is sealed for a device (then the reliable ``alert``,
        ``amp``, the stream and the ``join``s), and all of it goes out before
        this returns, as far as the socket takes it (the rest at the next flush), ahead of anything still waiting
        for the socket (answers to handshakes under a flood among it). The garbage collector is held off
        meanwhile, so that a full collection of a large heap does not land in the middle."""
        collecting = gc.isenabled()
        gc.disable()
        waiting, self._pending = self._pending, []
        try:
            bid = self.core.announce_alert(source, self.now(), **options)
            self._pending.extend(self.core.datagrams_to_send())
            self._send_pending()
            self.core.start_alert(bid, self.now())
            self._pending.extend(self.core.datagrams_to_send())
            self._send_pending()
        finally:
            self._pending.extend(waiting)
            if collecting:
                gc.enable()
        self.changed()
        return bid

    def cancel_alert(self, bid: int, **options: Any) -> None:
        self.core.cancel_alert(bid, self.now(), **options)
        self.changed()

    def schedule_play(self, cid: bytes, zones: Sequence[str], at_ns: int, **options: Any) -> int:
        bid = self.core.schedule_play(cid, zones, at_ns, self.now(), **options)
        self.changed()
        return bid

    async def open_live_source(self, host: str, port: int, **options: Any) -> LiveRtpSource:
        """Listen for plain RTP/Opus on ``host:port`` (e.g. from ``ffmpeg ... -f rtp rtp://HOST:PORT``) and
        return the source fed from it; its socket closes when the source is closed (its broadcast ended)."""
        if self._tg is None:
            raise RuntimeError("the service is not running")
        sock = open_udp_socket(host, port)
        source = LiveRtpSource(**options)
        source.address = (str(sock.getsockname()[0]), int(sock.getsockname()[1]))
        self._tg.start_soon(self._live_input, sock, source)
        return source

    def stop(self) -> None:
        """Begin a clean shutdown (see the module docstring); :meth:`serve` returns when it is done."""
        self._stopping.set()
        self._wakeup.set()

    def statistics(self) -> ServiceStatistics:
        return ServiceStatistics(self._received, self._sent, self._send_errors, self._blocked,
                                 self._media_packets, self._receive_errors, sockfilter.kernel_drops(self.sock))

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until :meth:`stop`; then shut down cleanly. Cancelling it skips the goodbyes."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._receive_loop)
            tg.start_soon(self._timer_loop)
            if self._advertiser is not None:
                tg.start_soon(self._advertise)
            if self._peers_path is not None:
                tg.start_soon(self._peers_loop, self._peers_path)
            self._sync_media()
            task_status.started()
            await self._stopping.wait()
            await self._shutdown()
            tg.cancel_scope.cancel()
        self._tg = None

    # -- restart notices (PROTOCOL.md section 3.16) ------------------------------------------------------------

    async def _peers_loop(self, path: Path) -> None:
        peers, problem = await anyio.to_thread.run_sync(load_peers, path)
        if problem is not None:
            self._log(f"peers file {path.name}: {problem}")
        await self._send_notices(peers)
        saved: dict[bytes, Peer] | None = None
        while True:
            boot, registry = self.core.sessions.boot, self.core.registry
            peers = {key: peer for key, peer in peers.items() if registry.is_enrolled(key)}
            for key, address in self.core.sessions.session_addresses().items():
                peers[key] = Peer(address, boot)
            if peers != saved:
                saved = dict(peers)
                await self._save_peers(path, saved)
            await anyio.sleep(PEERS_SAVE_S)

    async def _send_notices(self, peers: dict[bytes, Peer]) -> None:
        sessions, batch = self.core.sessions, max(1, round(NOTICE_RATE * NOTICE_PACE_S))
        items = list(peers.items())
        for start in range(0, len(items), batch):
            began = anyio.current_time()
            for key, peer in items[start:start + batch]:
                if sessions.is_online(key):
                    continue  # it joined this server already
                datagram = sessions.restart_notice(key, peer.boot)
                if datagram is not None:
                    self._pending.append((datagram, peer.address))
                    self.notices_sent += 1
            await self._flush()
            await anyio.sleep(max(0.0, began + NOTICE_PACE_S - anyio.current_time()))
        if self.notices_sent:
            self._log(f"restart notices sent to {self.notices_sent} devices")

    async def _save_peers(self, path: Path, peers: dict[bytes, Peer], *, last: bool = False) -> None:
        async with self._peers_lock:  # one save at a time, none after the last
            if self._peers_closed:
                return
            self._peers_closed = last
            try:
                await anyio.to_thread.run_sync(save_peers, path, peers)
            except OSError as exc:
                self._peers_save_failed(path, exc)
            else:
                self._peers_failed = False

    def _peers_save_failed(self, path: Path, exc: OSError) -> None:
        if not self._peers_failed:  # once until a save works again
            self._log(f"peers file {path.name} not saved ({exc.strerror or type(exc).__name__}); "
                      "a restart will not send notices")
        self._peers_failed = True

    # -- loops -------------------------------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        sock, core, clock = self.sock, self.core, _loop_clock()
        stamped = self._stamped
        self.filtered = self.socket_filter and sockfilter.attach(sock)
        offset, offset_at = _wall_offset(), anyio.current_time()
        while True:
            await anyio.wait_readable(sock)
            now = anyio.current_time()
            if now - offset_at > WALL_OFFSET_REFRESH_S:  # follows any slewing of the wall clock
                offset, offset_at = _wall_offset(), now
            slice_end = now + RECEIVE_SLICE_S
            arrived = None
            for _ in range(RECEIVE_BATCH):
                try:
                    if stamped:
                        data, ancillary, _flags, address = sock.recvmsg(MAX_DATAGRAM + 1, _STAMP_SPACE)
                        arrived = _arrival(ancillary, offset)
                    else:
                        data, address = sock.recvfrom(MAX_DATAGRAM + 1)
                except (BlockingIOError, InterruptedError):
                    arrived = None  # everything that arrived is read
                    break
                except OSError:
                    self._receive_errors += 1  # e.g. an ICMP error reported on the socket; nothing to read
                    continue
                self._received += 1
                now = clock()
                core.receive_datagram(data, (str(address[0]), int(address[1])), now, arrived=arrived)
                if now >= slice_end:
                    break
            if arrived is not None and not _waiting(sock):
                arrived = None  # the batch ended on the last datagram there was
            # More waits unread: retransmissions due after the last datagram's arrival wait for the rest
            core.set_input_horizon(arrived)
            deadline = core.next_timeout()
            if deadline is not None and (self._sleeping_until is None or deadline < self._sleeping_until):
                self._wakeup.set()  # the batch brought a deadline before the one the timer loop sleeps on
            await self._flush()

    async def _timer_loop(self) -> None:
        core = self.core
        while True:
            await self._flush()
            deadline = core.next_timeout()
            if not self._wakeup.is_set():
                delay = 60.0 if deadline is None else max(0.0, deadline - anyio.current_time())
                self._sleeping_until = deadline
                with anyio.move_on_after(delay):
                    await self._wakeup.wait()
                self._sleeping_until = -math.inf  # awake: the receive loop need not wake it
            self._wakeup = anyio.Event()
            now = anyio.current_time()
            if deadline is not None and now >= deadline:
                core.handle_timeout(now)
            self._sync_media()

    async def _flush(self) -> None:
        """Hand the core's events on; send everything it queued, waiting for writability when the socket is
        full (bounded)."""
        for event in self.core.events():
            if self._on_event is not None:
                self._on_event(event)
        self._pending.extend(self.core.datagrams_to_send())
        retries = 0
        while self._pending:
            blocked = self._send_pending()
            if not blocked:
                break
            self._blocked += 1
            retries += 1
            if retries > SEND_RETRIES:
                return  # the next flush carries on
            if blocked == errno.ENOBUFS:
                await anyio.sleep(0.001)
            else:
                await anyio.wait_writable(self.sock)

    def _send_pending(self) -> int:
        """Send what is pending, in batches (``sendmmsg`` on Linux); 0 when all went, else the errno that
        stopped it (EAGAIN, ENOBUFS). A datagram the network refuses is dropped and counted in send_errors."""
        sender, pending = self._sender, self._pending
        sent, failed = sender.sent, sender.failed
        done = sender.send(pending)
        del pending[:done]
        self._sent += sender.sent - sent
        self._send_errors += sender.failed - failed
        return sender.blocked_by

    def _sync_media(self) -> None:
        """Start a frame-clock task for every live broadcast that has none."""
        if self._tg is None or self._stopping.is_set():
            return
        for bid in self.core.live_broadcasts():
            if bid not in self._media:
                scope = anyio.CancelScope()
                self._media[bid] = scope
                self._media_done[bid] = anyio.Event()
                self._tg.start_soon(self._media_loop, bid, scope)

    async def _media_loop(self, bid: int, scope: anyio.CancelScope) -> None:
        core = self.core
        fanout = Fanout(self.sock, backend=self._fanout_backend)
        try:
            with scope:
                core.attach_sink(bid, fanout)
                while (due := core.next_frame_time(bid)) is not None:
                    if due > anyio.current_time():
                        await anyio.sleep_until(due)
                    for _ in range(FRAME_CATCH_UP):  # a late task catches up, a few frames at a time
                        for packet in core.produce_frame(bid, anyio.current_time()):
                            self._media_packets += 1
                            try:
                                fanout.send(packet)
                            except OSError:
                                self._send_errors += 1
                                fanout.discard()
                            if fanout.pending:
                                await fanout.wait_sent()
                        due = core.next_frame_time(bid)
                        if due is None or due > anyio.current_time():
                            break
                    if core.wants_flush:
                        self._wakeup.set()
                    if due is not None and due <= anyio.current_time():
                        await anyio.sleep(0)  # still behind: let the other tasks run before catching up more
        finally:
            self._media.pop(bid, None)
            done = self._media_done.pop(bid, None)
            if done is not None:
                done.set()

    async def _live_input(self, sock: socket.socket, source: LiveRtpSource) -> None:
        with sock:
            while not source.finished:
                with anyio.move_on_after(0.5):
                    await anyio.wait_readable(sock)
                for _ in range(RECEIVE_BATCH):
                    try:
                        data = sock.recv(MAX_DATAGRAM + 1)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        continue
                    source.feed(data)

    async def _advertise(self) -> None:
        advertiser = self._advertiser
        assert advertiser is not None
        problem = await anyio.to_thread.run_sync(advertiser.start, abandon_on_cancel=True)
        if problem is None:
            self._log(f"advertised as {advertiser.name!r} (_loa._udp) on {', '.join(advertiser.addresses())}")
        else:
            self._log(f"no DNS-SD advertisement: {problem}")

    async def _shutdown(self) -> None:
        now = anyio.current_time()
        self.core.close(now)
        done = list(self._media_done.values())
        with anyio.move_on_after(SHUTDOWN_GRACE_S):
            for event in done:  # each frame clock sends its closing BYE at its next frame
                await event.wait()
        with anyio.move_on_after(SHUTDOWN_GRACE_S):
            await self._flush()
        if self._advertiser is not None:
            with anyio.move_on_after(3.0):
                await anyio.to_thread.run_sync(self._advertiser.stop, abandon_on_cancel=True)
        if self._peers_path is not None:
            with anyio.move_on_after(SHUTDOWN_GRACE_S):
                await self._save_peers(self._peers_path, {}, last=True)


def epoch_for(now: float) -> int:
    """The core's ``epoch_ns`` so that server time equals the wall clock now, on the service clock ``now``."""
    return time.time_ns() - math.floor(now * 1e9)

