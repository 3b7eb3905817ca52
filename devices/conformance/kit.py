"""The kit server: the server's side of PROTOCOL.md, built from ``loa.protocol``, on a real UDP socket.

One :class:`KitServer` serves one case. It answers what a server must answer by itself (``time_req`` at once,
``fetch`` with ``chunk``, NACKs with the stored SRTP bytes, ``hello`` with ``config``), records everything the
device sends (every plaintext, duplicates and acks included, and every datagram in the case's
:class:`~loa.devices.conformance.wirelog.DatagramLog`), and lets the case misbehave on purpose: hold back or
rewrite outgoing datagrams, send arbitrary bytes, send from a second socket that plays a stranger, answer clock
probes wrongly, stop answering.

Failure semantics: nothing the device sends can make the kit raise; undecodable input is recorded with its error
name. :meth:`KitServer.wait_for` raises :class:`KitTimeout` (naming what it waited for) when its time runs out.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loa.devices.conformance.media import KitStream
from loa.devices.conformance.wirelog import DatagramLog
from loa.protocol.connection import Connected, ConnectionEvent, Received, ServerConnection
from loa.protocol.control import (
    Ack,
    Bye,
    Chunk,
    Config,
    ConfigValues,
    Fetch,
    Hello,
    Message,
    Played,
    Rtcp,
    State,
    Telemetry,
    TelemetryValues,
    TimeReq,
    TimeResp,
    UnknownMessage,
    decode,
    encode,
)
from loa.protocol.datagram import transport_header
from loa.protocol.errors import LocalProtocolError, ProtocolError
from loa.protocol.rtcp import GenericNack, parse_rtcp
from loa.protocol.session import Event as SessionEvent
from loa.protocol.session import Message as SessionMessage

__all__ = ["ZONES", "Inbound", "KitClock", "KitServer", "KitTimeout", "open_kit_socket"]

Address = tuple[str, int]
T = TypeVar("T")
ZONES = ("79", "760", "26734", "26734-03")
POLL_S = 0.02
TIMER_POLL_S = 0.25  # the timer loop's longest sleep: it is woken at once by every datagram and every send
RECV_MAX = 4096
HANDSHAKE_INIT = 0x01


def open_kit_socket(host: str, port: int) -> socket.socket:
    """The kit's non-blocking UDP socket on ``host:port`` (port 0: any); OSError if it cannot bind."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    if port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class KitTimeout(Exception):  # noqa: N818 - named for what it reports
    """What a case waited for did not happen in time (the message names it)."""


class KitClock:
    """Server time for a whole run: Unix nanoseconds at the start, then the host's monotonic clock."""

    def __init__(self) -> None:
        self._mono0 = time.monotonic_ns()
        self._base = time.time_ns()

    def now_ns(self) -> int:
        return self._base + time.monotonic_ns() - self._mono0


@dataclass(slots=True)
class Inbound:
    """One plaintext from the device: ``t`` kit seconds since the case start, ``server_ns`` server time."""

    t: float
    server_ns: int
    message: Message | UnknownMessage | None
    error: str | None
    plaintext: bytes


@dataclass(slots=True)
class Arrival:
    t: float
    data: bytes
    source: Address


def default_config() -> ConfigValues:
    return ConfigValues(zones=ZONES, telemetry_s=5, keepalive_s=15, watchdog_ms=1500, fallback="fm",
                        fallback_khz=99_900, exercise=False)


class _Connection(ServerConnection):
    """A ServerConnection that shows the kit every plaintext before the reliable channel absorbs it."""

    def __init__(self, *, on_plaintext: Callable[[bytes], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_plaintext = on_plaintext

    def _absorb(self, events: list[SessionEvent], now: float) -> list[ConnectionEvent]:
        for event in events:
            if isinstance(event, SessionMessage):
                self._on_plaintext(event.plaintext)
        return super()._absorb(events, now)


@dataclass
class KitState:
    """What lasts across the cases of one run: keys, the enrolled devices, the token, the clock."""

    static_private: bytes
    authority: Ed25519PrivateKey
    clock: KitClock = field(default_factory=KitClock)
    enrolled: set[bytes] = field(default_factory=set)
    token: str | None = None
    #: HandshakeInits an external device sent after the kit rebooted it at the end of a case: the next case's
    #: server takes them as its first input (the server address stays the same from case to case).
    carried: list[tuple[bytes, Address]] = field(default_factory=list)


class KitServer:
    """The server side for one case; see the module docstring. Use inside a running anyio loop."""

    def __init__(self, state: KitState, log: DatagramLog, *, host: str = "127.0.0.1", port: int = 0,
                 sock: socket.socket | None = None) -> None:
        self.state = state
        self.log = log
        self.clock = state.clock
        self._own_sock = sock is None
        self.sock = open_kit_socket(host, port) if sock is None else sock
        self.alt_sock: socket.socket | None = None
        self.host = host
        self.conn = _Connection(static_private=state.static_private, is_enrolled=self._is_enrolled,
                                on_plaintext=self._on_plaintext)
        self.device: bytes | None = None
        self.plaintexts: list[Inbound] = []
        self.received: list[Inbound] = []
        self.connects: list[tuple[float, bytes, int, bool]] = []
        self.keepalives: list[float] = []
        self.arrivals: list[Arrival] = []
        self.alt_arrivals: list[Arrival] = []
        self.nacks: list[tuple[float, int, tuple[int, ...]]] = []
        self.streams: dict[int, KitStream] = {}
        self.content: dict[bytes, bytes] = {}
        self.fetches: list[tuple[float, Fetch]] = []
        self.answer_nacks = True
        self.answer_fetch = True
        self.answer_time: Callable[[TimeReq, int], TimeResp | None] = self._true_time
        self.time_answers = 0
        self.outgoing_filter: Callable[[bytes, Address], bool] | None = None
        self.incoming_filter: Callable[[bytes, Address], bool] | None = None
        self.held: list[tuple[bytes, Address]] = []
        self.config = default_config()
        self.on_hello: Callable[[bytes, Hello], None] | None = None
        self.refuse_all = False
        self.hold_handshakes = False
        self.plaintext_filter: Callable[[bytes], bool] | None = None
        self.sent_plaintexts: list[tuple[float, bytes]] = []
        self._wrap_send()
        self.restarts = 0
        self._changed = anyio.Event()
        self._kick = anyio.Event()
        self._scope: anyio.CancelScope | None = None

    # -- identity and time ----------------------------------------------------------------------------------

    @property
    def public_key(self) -> bytes:
        return self.conn.endpoint.public_key

    @property
    def address(self) -> Address:
        raw = self.sock.getsockname()
        return (str(raw[0]), int(raw[1]))

    @property
    def boot(self) -> int:
        return self.conn.endpoint.boot

    def now(self) -> float:
        return time.monotonic()

    def t(self) -> float:
        return time.monotonic() - self.log.start

    def server_time(self) -> int:
        return self.clock.now_ns()

    def _is_enrolled(self, pub: bytes) -> bool:
        if self.refuse_all:
            return False
        return pub in self.state.enrolled or self.state.token is not None

    def _wrap_send(self) -> None:
        """Let ``plaintext_filter`` veto what the connection seals (e.g. the acks a case withholds)."""
        endpoint = self.conn.endpoint
        send = endpoint.send

        def filtered(device: bytes | str, plaintext: bytes, now: float) -> None:
            if self.plaintext_filter is not None and not self.plaintext_filter(plaintext):
                return
            self.sent_plaintexts.append((self.t(), bytes(plaintext)))
            send(device, plaintext, now)

        endpoint.send = filtered  # type: ignore[method-assign]

    def restart(self) -> None:
        """Lose every session and start again with a new ``boot`` (same key, same socket): section 7.6."""
        self.conn = _Connection(static_private=self.state.static_private, is_enrolled=self._is_enrolled,
                                on_plaintext=self._on_plaintext)
        self._wrap_send()
        self.device = None
        self.restarts += 1
        self._poke()

    # -- the loops ------------------------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._receive_loop)
                tg.start_soon(self._timer_loop)
                task_status.started()

    def close(self) -> None:
        """Stop the loops and close the sockets (a socket given to the constructor stays open)."""
        if self._scope is not None:
            self._scope.cancel()
        if self._own_sock:
            self.sock.close()
        if self.alt_sock is not None:
            self.alt_sock.close()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
        self._kick.set()
        self._kick = anyio.Event()

    async def _receive_loop(self) -> None:
        while True:
            await anyio.wait_readable(self.sock)
            for _ in range(256):
                try:
                    data, raw = self.sock.recvfrom(RECV_MAX)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue
                self._on_datagram(data, (str(raw[0]), int(raw[1])))
            self.flush()
            self._poke()

    async def _alt_loop(self) -> None:
        assert self.alt_sock is not None
        sock = self.alt_sock
        while True:
            await anyio.wait_readable(sock)
            for _ in range(256):
                try:
                    data, raw = sock.recvfrom(RECV_MAX)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue
                self.log.add("dev>alt", data)
                self.alt_arrivals.append(Arrival(self.t(), data, (str(raw[0]), int(raw[1]))))
            self._poke()

    async def _timer_loop(self) -> None:
        while True:
            now = self.now()
            deadline = self.conn.next_timeout()
            if deadline is not None and deadline <= now:
                self._absorb(self.conn.handle_timeout(now))
                self.flush()
                self._poke()
                await anyio.sleep(0)
                continue
            wait = TIMER_POLL_S if deadline is None else min(TIMER_POLL_S, max(0.0, deadline - now))
            kick = self._kick
            with anyio.move_on_after(wait):
                await kick.wait()

    async def open_alt(self, tg: anyio.abc.TaskGroup) -> Address:
        """Open the second socket (a stranger's address, never verified by a handshake)."""
        family = self.sock.family
        self.alt_sock = socket.socket(family, socket.SOCK_DGRAM)
        self.alt_sock.setblocking(False)
        self.alt_sock.bind((self.host, 0))
        tg.start_soon(self._alt_loop)
        raw = self.alt_sock.getsockname()
        return (str(raw[0]), int(raw[1]))

    # -- input ----------------------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, source: Address, note: str = "") -> None:
        if self.hold_handshakes and data[:1] == bytes([HANDSHAKE_INIT]):
            self.state.carried.append((data, source))
            return
        entry = self.log.add("dev>kit", data)
        if entry is not None and note:
            entry.note += f" [{note}]"
        self.arrivals.append(Arrival(self.t(), data, source))
        if self.incoming_filter is not None and not self.incoming_filter(data, source):
            if entry is not None:
                entry.note += " [held by the case]"
            return
        before = len(self.plaintexts)
        events = self.conn.receive_datagram(data, source, self.now())
        self._absorb(events)
        if entry is not None and len(self.plaintexts) > before:
            fresh = self.plaintexts[before:]
            names = [getattr(p.message, "TYPE", getattr(p.message, "t", f"<{p.error}>")) for p in fresh]
            entry.note += " " + ",".join(str(n) for n in names)

    def take_carried(self) -> None:
        """Take the HandshakeInits carried over from the previous case as if they arrived now."""
        carried, self.state.carried[:] = list(self.state.carried), []
        for data, source in carried:
            self._on_datagram(data, source, "sent after the previous case's reboot")
        self.flush()
        self._poke()

    def reset_case_hooks(self) -> None:
        """Undo what a case changed in the kit's behaviour (filters, refusals, wrong answers, held datagrams)."""
        self.outgoing_filter = self.incoming_filter = self.plaintext_filter = None
        self.held.clear()
        self.refuse_all = False
        self.answer_nacks = self.answer_fetch = True
        self.answer_time = self._true_time
        self.on_hello = None

    def _on_plaintext(self, plaintext: bytes) -> None:
        try:
            message: Message | UnknownMessage | None = decode(plaintext)
            error = None
        except ProtocolError as exc:
            message, error = None, type(exc).__name__
        self.plaintexts.append(Inbound(self.t(), self.server_time(), message, error, plaintext))

    def _absorb(self, events: list[ConnectionEvent]) -> None:
        for event in events:
            if isinstance(event, Connected):
                assert event.device is not None
                self.device = event.device
                self.connects.append((self.t(), event.device, event.boot, event.peer_restarted))
            elif isinstance(event, Received):
                assert event.device is not None
                inbound = Inbound(self.t(), self.server_time(), event.message, None, b"")
                self.received.append(inbound)
                self._on_message(event.device, event.message, inbound.server_ns)

    def _on_message(self, device: bytes, message: Message | UnknownMessage, t2: int) -> None:
        if isinstance(message, TimeReq):
            answer = self.answer_time(message, t2)
            if answer is not None:
                self.time_answers += 1
                self.send_unreliable(answer)
        elif isinstance(message, Fetch):
            self.fetches.append((self.t(), message))
            blob = self.content.get(message.cid)
            if blob is not None and self.answer_fetch:
                data = blob[message.off : message.off + message.len]
                self.send_unreliable(Chunk(cid=message.cid, off=message.off, data=data))
        elif isinstance(message, Rtcp):
            self._on_rtcp(message.pkt)
        elif isinstance(message, Hello):
            if device not in self.state.enrolled:
                if self.state.token is not None and message.token == self.state.token:
                    self.state.enrolled.add(device)
                    self.state.token = None  # a token is redeemed once
                else:
                    self.send(Bye(reason="enrolment refused"))
                    return
            if self.on_hello is not None:
                self.on_hello(device, message)
            else:
                self.send(Config(values=self.config))

    def _true_time(self, request: TimeReq, t2: int) -> TimeResp:
        return TimeResp(t1=request.t1, t2=t2, t3=self.server_time())

    def _on_rtcp(self, pkt: bytes) -> None:
        try:
            packets = parse_rtcp(pkt)
        except ProtocolError:
            return
        for packet in packets:
            if not isinstance(packet, GenericNack):
                continue
            self.nacks.append((self.t(), packet.media_ssrc, tuple(packet.lost)))
            stream = self.streams.get(packet.media_ssrc)
            if stream is None or not self.answer_nacks:
                continue
            for seq in packet.lost:
                held = stream.sent.get(seq)
                if held is not None:
                    self.send_media(held.data, note=f"retransmission of seq {seq}")

    # -- output ---------------------------------------------------------------------------------------------

    def flush(self) -> None:
        for data, address in self.conn.datagrams_to_send():
            if self.outgoing_filter is not None and not self.outgoing_filter(data, address):
                self.held.append((data, address))
                continue
            self._sendto(self.sock, data, address, "kit>dev")

    def release_held(self) -> None:
        held, self.held = self.held, []
        for data, address in held:
            self._sendto(self.sock, data, address, "kit>dev", "released")

    def _sendto(self, sock: socket.socket, data: bytes, address: Address, direction: str, note: str = "") -> None:
        entry = self.log.add(direction, data)
        if entry is not None and note:
            entry.note += f" [{note}]"
        with contextlib.suppress(OSError):
            sock.sendto(data, address)

    def device_address(self) -> Address | None:
        if self.device is None:
            return None
        return self.conn.endpoint.address_of(self.device)

    def send(self, message: Message) -> int | None:
        """Send a control message to the device (reliable ones are numbered and retransmitted)."""
        assert self.device is not None, "no device session yet"
        msg_id = self.conn.send(self.device, message, self.now())
        self.flush()
        self._kick.set()
        return msg_id

    def send_unreliable(self, message: Message) -> None:
        with contextlib.suppress(LocalProtocolError):
            self.send(message)

    def send_plaintext(self, plaintext: bytes) -> None:
        """Send any plaintext (even one that breaks the schema) in one transport message on the session."""
        assert self.device is not None, "no device session yet"
        self.conn.endpoint.send(self.device, plaintext, self.now())
        self.flush()
        self._kick.set()

    def send_encoded(self, message: Message) -> bytes:
        """Send ``message`` as it is, with the ``id`` it carries, outside the reliable channel."""
        plaintext = encode(message)
        self.send_plaintext(plaintext)
        return plaintext

    def seal(self, plaintext: bytes, *, counter: int | None = None) -> bytes:
        """A transport datagram carrying ``plaintext`` on the current session, not sent. Without ``counter`` it
        takes the session's next counter (as a send would); with one, it is sealed under that counter."""
        assert self.device is not None, "no device session yet"
        peer = self.conn.endpoint._peer(self.device)
        if peer is None or peer.current is None:
            raise LocalProtocolError("no session with this device")
        keys = peer.current
        if counter is None:
            counter = keys.sent
            keys.sent += 1
        header = transport_header(keys.remote_index, counter)
        return header + keys.send.encrypt_at(counter, header, plaintext)

    def send_raw(self, data: bytes, address: Address | None = None, note: str = "") -> None:
        target = address or self.device_address() or (self.arrivals[-1].source if self.arrivals else None)
        if target is not None:
            self._sendto(self.sock, data, target, "kit>dev", note)

    def send_alt(self, data: bytes, address: Address, note: str = "") -> None:
        assert self.alt_sock is not None
        self._sendto(self.alt_sock, data, address, "alt>dev", note)

    def send_media(self, data: bytes, note: str = "") -> None:
        target = self.device_address()
        if target is not None:
            self._sendto(self.sock, data, target, "kit>dev", note)

    # -- waiting and reading --------------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], T], timeout: float, what: str) -> T:
        """The first true value of ``predicate`` within ``timeout`` seconds; KitTimeout(what) otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KitTimeout(f"timed out after {timeout:g} s waiting for {what}")
            changed = self._changed
            with anyio.move_on_after(min(remaining, POLL_S)):
                await changed.wait()

    async def connected(self, timeout: float = 10.0) -> bytes:
        await self.wait_for(lambda: self.device is not None, timeout, "the device's session (HandshakeInit, then a "
                            "first transport message)")
        assert self.device is not None
        return self.device

    def messages(self, kind: type[T]) -> list[T]:
        return [m.message for m in self.received if isinstance(m.message, kind)]

    def inbound(self, kind: type) -> list[Inbound]:
        return [m for m in self.received if isinstance(m.message, kind)]

    def acked_ids(self) -> list[int]:
        out: list[int] = []
        for p in self.plaintexts:
            if isinstance(p.message, Ack):
                out += list(p.message.ids)
        return out

    def inbound_telemetry_after(self, t: float) -> list[Inbound]:
        return [m for m in self.inbound(Telemetry) if m.t > t]

    def telemetry(self) -> list[TelemetryValues]:
        return [m.v for m in self.messages(Telemetry)]

    def states(self) -> list[State]:
        return self.messages(State)

    def played(self) -> list[tuple[int, Any]]:
        """Every ``played`` entry with the server time its report arrived: ``(arrival_ns, PlayedFrame)``."""
        return [(m.server_ns, e) for m in self.inbound(Played) for e in m.message.log]  # type: ignore[union-attr]

    def add_stream(self, stream: KitStream) -> KitStream:
        self.streams[stream.ssrc] = stream
        return stream

    async def pace(self, stream: KitStream, frames: int, *,
                   on_packet: Callable[[Any], list[bytes] | None] | None = None, sr: bool = True) -> None:
        """Send ``frames`` packets of ``stream`` at real-time pace (20 ms), an SR after the first and every second.

        ``on_packet(packet)`` may return the datagrams to send instead (``[]`` drops it, None sends it as is).
        """
        self.streams[stream.ssrc] = stream
        start = time.monotonic()
        for i in range(frames):
            wait = start + i * 0.02 - time.monotonic()
            if wait > 0:
                await anyio.sleep(wait)
            packet = stream.next_packet()
            self.streams[stream.ssrc] = stream
            out = on_packet(packet) if on_packet is not None else None
            for data in [packet.data] if out is None else out:
                self.send_media(data)
            if sr and i % 50 == 0:
                self.send_media(stream.sender_report())
        self._poke()
