"""The session transition tables: every state x every input kind is a table transition, a counted drop, or a
LocalProtocolError - never anything else."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from loa.protocol.datagram import Transport, parse
from loa.protocol.errors import LocalProtocolError
from loa.protocol.session import (
    DEVICE_TRANSITIONS,
    SERVER_TRANSITIONS,
    DeviceInput,
    DeviceSession,
    DeviceState,
    Dropped,
    Event,
    Keepalive,
    Message,
    PeerState,
    ServerEndpoint,
    ServerInput,
    SessionLost,
    SessionStarted,
)

A = ("198.51.100.7", 40000)
DEVICE_TIMERS = {
    DeviceInput.RETRY_TIMER, DeviceInput.KEEPALIVE_TIMER, DeviceInput.REKEY_TIMER, DeviceInput.DEAD_TIMER,
    DeviceInput.CURRENT_EXPIRED, DeviceInput.PREVIOUS_EXPIRED,
}
SERVER_TIMERS = {ServerInput.CURRENT_EXPIRED, ServerInput.NEXT_EXPIRED, ServerInput.PREVIOUS_EXPIRED}


def closure(rows: Mapping[Any, Mapping[Any, Any]], state: Any, inputs: set[Any]) -> set[Any]:
    """States reachable from ``state`` through any number of the given inputs."""
    seen, todo = {state}, [state]
    while todo:
        for event, target in rows[todo.pop()].items():
            if event in inputs and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_tables_are_complete_and_closed() -> None:
    assert set(DEVICE_TRANSITIONS) == set(DeviceState)
    assert set(SERVER_TRANSITIONS) == set(PeerState)
    assert {e for row in DEVICE_TRANSITIONS.values() for e in row} == set(DeviceInput)
    assert {e for row in SERVER_TRANSITIONS.values() for e in row} == set(ServerInput)
    for device_state in DeviceState:
        assert closure(DEVICE_TRANSITIONS, DeviceState.IDLE, set(DeviceInput)) >= {device_state}
        assert DEVICE_TRANSITIONS[device_state].get(DeviceInput.CLOSE) is DeviceState.IDLE
    for peer_state in PeerState:
        assert SERVER_TRANSITIONS[peer_state][ServerInput.FORGET] is PeerState.NONE


# -- scenario: a device and a server brought into a chosen pair of states ---------------------------------------


@dataclass
class Scene:
    device: DeviceSession
    server: ServerEndpoint
    now: float = 0.0
    old_server_transport: bytes = b""
    old_device_transport: bytes = b""
    old_response: bytes = b""
    old_init: bytes = b""
    queued_inits: list[bytes] = field(default_factory=list)

    @property
    def pub(self) -> bytes:
        return self.device.public_key

    def to_server(self, *, inits: bool = True) -> list[Event]:
        events: list[Event] = []
        for data in self.device.datagrams_to_send():
            if data[0] == 1 and not inits:
                self.queued_inits.append(data)
                continue
            if data[0] == 1:
                self.old_init = data
            if data[0] == 4:
                self.old_device_transport = data
            events += self.server.receive_datagram(data, A, self.now)
        return events

    def to_device(self) -> list[Event]:
        events: list[Event] = []
        for data, _ in self.server.datagrams_to_send():
            if data[0] == 2:
                self.old_response = data
            if data[0] == 4:
                self.old_server_transport = data
            events += self.device.receive_datagram(data, self.now)
        return events

    def run_until(self, until: float, *, inits: bool = True) -> None:
        while True:
            deadlines = [t for t in (self.device.next_timeout(), self.server.next_timeout()) if t is not None]
            if not deadlines or min(deadlines) > until:
                self.now = until
                return
            self.now = min(deadlines)
            self.device.handle_timeout(self.now)
            self.server.handle_timeout(self.now)
            self.to_server(inits=inits)
            self.to_device()


def scene(device_state: DeviceState, seed: int = 0) -> Scene:
    """A scene with the device in ``device_state`` and the server in the matching state."""
    rng = random.Random(seed)
    server = ServerEndpoint(static_private=rng.randbytes(32), is_enrolled=lambda _pub: True,
                            random_bytes=rng.randbytes)
    device = DeviceSession(static_private=rng.randbytes(32), server_public=server.public_key,
                           random_bytes=rng.randbytes)
    s = Scene(device, server)
    # a first session, to have stale datagrams of every type at hand
    device.connect(0.0)
    for _ in range(3):
        s.to_server()
        s.to_device()
    s.run_until(20.0)
    if device_state is DeviceState.IDLE:
        device.close()
    elif device_state is DeviceState.HANDSHAKING:
        device.close()
        device.connect(s.now)
    elif device_state is DeviceState.REKEYING:
        s.run_until(120.0, inits=False)
    assert device.state is device_state
    return s


def _typed_garbage(kind: int, size: int) -> bytes:
    return bytes((kind, 1, 0, 0)) + random.Random(kind * 1000 + size).randbytes(size - 4)


GARBAGE = [
    b"", b"\x01", b"\x00\x01\x00\x00", b"\x09\x01\x00\x00" + bytes(40), b"\x80\x60" + bytes(20),
    b"\x01\x02\x00\x00" + bytes(144), b"\x04\x01\x01\x00" + bytes(28), bytes(1201),
    _typed_garbage(1, 148), _typed_garbage(2, 96), _typed_garbage(3, 52), _typed_garbage(4, 32),
    _typed_garbage(4, 300), _typed_garbage(2, 95), _typed_garbage(3, 53),
]


# -- device matrix ----------------------------------------------------------------------------------------------


def device_inputs(s: Scene) -> dict[str, tuple[DeviceInput | None, Callable[[], list[Event] | None]]]:
    """Input kind name -> (the table input it stands for if valid, a function applying it)."""
    d = s.device

    def deliver_new(kind: int, stale: bytes) -> list[Event]:
        """Deliver what the server answers now of type ``kind``, or the stale datagram if it answers nothing."""
        if s.queued_inits:  # the withheld init of a rekey: only the latest one is pending
            s.server.receive_datagram(s.queued_inits[-1], A, s.now)
        s.to_server()
        answers = [data for data, _ in s.server.datagrams_to_send() if data[0] == kind]
        return [e for data in answers or [stale] for e in d.receive_datagram(data, s.now)]

    def fresh_response() -> list[Event]:
        s.server.set_under_load(False)
        return deliver_new(2, s.old_response)

    def fresh_cookie() -> list[Event]:
        s.server.set_under_load(True)
        return deliver_new(3, bytes.fromhex("03010000") + bytes(48))

    def fresh_transport() -> list[Event] | None:
        if not s.server.has_session(s.pub):
            return d.receive_datagram(s.old_server_transport, s.now)
        s.server.send(s.pub, b"hello", s.now)
        return s.to_device()

    inputs: dict[str, tuple[DeviceInput | None, Callable[[], list[Event] | None]]] = {
        "connect": (DeviceInput.CONNECT, lambda: d.connect(s.now)),
        "close": (DeviceInput.CLOSE, d.close),
        "send": (DeviceInput.SEND, lambda: d.send(b"x", s.now)),
        "send oversize": (None, lambda: d.send(bytes(1169), s.now)),
        "fresh response": (DeviceInput.RESPONSE_ACCEPTED, fresh_response),
        "fresh cookie": (DeviceInput.COOKIE_ACCEPTED, fresh_cookie),
        "fresh transport": (DeviceInput.TRANSPORT_ACCEPTED, fresh_transport),
        "stale response": (None, lambda: d.receive_datagram(s.old_response, s.now)),
        "replayed transport": (None, lambda: d.receive_datagram(s.old_server_transport, s.now)),
        "init": (None, lambda: d.receive_datagram(s.old_init, s.now)),
    }
    for i, junk in enumerate(GARBAGE):
        inputs[f"garbage {i}"] = (None, lambda junk=junk: d.receive_datagram(junk, s.now))  # type: ignore[misc]
    return inputs


DEVICE_KINDS = list(device_inputs(scene(DeviceState.IDLE)))


@pytest.mark.parametrize("state", list(DeviceState), ids=lambda s: s.value)
@pytest.mark.parametrize("kind", DEVICE_KINDS)
def test_device_state_by_input(state: DeviceState, kind: str) -> None:
    s = scene(state)
    table_input, apply = device_inputs(s)[kind]
    drops_before = sum(s.device.statistics().drops.values())
    row = DEVICE_TRANSITIONS[state]
    try:
        events = apply()
    except LocalProtocolError:
        assert table_input is None or table_input not in row or kind == "send oversize"
        assert s.device.state is state
        return
    if events is None:  # a local call that succeeded
        assert table_input is not None
        assert table_input in row
        assert s.device.state is row[table_input]
        return
    if events and isinstance(events[0], Dropped):
        assert len(events) == 1
        assert table_input is None or table_input not in row
        assert s.device.state is state
        assert sum(s.device.statistics().drops.values()) == drops_before + 1
        return
    if not events:
        assert s.device.statistics().cookies_accepted == 1
        assert table_input is DeviceInput.COOKIE_ACCEPTED
    assert table_input is not None
    assert table_input in row, f"{kind} accepted in {state}"
    assert s.device.state is row[table_input]


@pytest.mark.parametrize("state", list(DeviceState), ids=lambda s: s.value)
def test_device_timers_follow_the_table(state: DeviceState) -> None:
    s = scene(state)
    for _ in range(50):
        deadline = s.device.next_timeout()
        if deadline is None:
            assert state is DeviceState.IDLE
            return
        before = s.device.state
        events = s.device.handle_timeout(deadline)
        assert s.device.state in closure(DEVICE_TRANSITIONS, before, DEVICE_TIMERS)
        assert all(isinstance(e, SessionLost) for e in events)
        after = s.device.next_timeout()
        assert after is None or after > deadline
        s.device.datagrams_to_send()


# -- server matrix ----------------------------------------------------------------------------------------------


def server_scene(state: PeerState) -> Scene:
    if state is PeerState.REKEYING:  # a device rekeying on time, its init just arrived
        s = scene(DeviceState.REKEYING)
        s.server.receive_datagram(s.queued_inits.pop(), A, s.now)
        assert s.server.peer_state(s.pub) is state
        return s
    s = scene(DeviceState.ESTABLISHED)
    if state is PeerState.NONE:
        s.server.forget(s.pub)
    elif state is PeerState.RESPONDED:
        s.server.forget(s.pub)
        s.device.close()
        s.device.connect(s.now)
        s.to_server()
    assert s.server.peer_state(s.pub) is state
    return s


def server_inputs(s: Scene) -> dict[str, tuple[ServerInput | None, Callable[[], list[Event] | None]]]:
    srv = s.server

    def fresh_init() -> list[Event]:
        s.device.close()
        s.device.connect(s.now + 1.0)
        return s.to_server()

    def confirm() -> list[Event]:
        s.to_device()
        return s.to_server()

    def fresh_transport() -> list[Event]:
        if s.device.state in (DeviceState.ESTABLISHED, DeviceState.REKEYING):
            s.device.send(b"hi", s.now)
            return s.to_server()
        return srv.receive_datagram(s.old_device_transport, A, s.now)

    inputs: dict[str, tuple[ServerInput | None, Callable[[], list[Event] | None]]] = {
        "send": (ServerInput.SEND, lambda: srv.send(s.pub, b"x", s.now)),
        "forget": (ServerInput.FORGET, lambda: srv.forget(s.pub)),
        "send oversize": (None, lambda: srv.send(s.pub, bytes(1169), s.now)),
        "fresh init": (ServerInput.INIT_ACCEPTED, fresh_init),
        "confirming transport": (ServerInput.CONFIRMED, confirm),
        "fresh transport": (ServerInput.TRANSPORT_ACCEPTED, fresh_transport),
        "replayed init": (None, lambda: srv.receive_datagram(s.old_init, A, s.now)),
        "replayed transport": (None, lambda: srv.receive_datagram(s.old_device_transport, A, s.now)),
        "response": (None, lambda: srv.receive_datagram(s.old_response, A, s.now)),
    }
    for i, junk in enumerate(GARBAGE):
        inputs[f"garbage {i}"] = (None, lambda junk=junk: srv.receive_datagram(junk, A, s.now))  # type: ignore[misc]
    return inputs


SERVER_KINDS = list(server_inputs(server_scene(PeerState.NONE)))


@pytest.mark.parametrize("state", list(PeerState), ids=lambda s: s.value)
@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_server_state_by_input(state: PeerState, kind: str) -> None:
    s = server_scene(state)
    table_input, apply = server_inputs(s)[kind]
    drops_before = sum(s.server.statistics().drops.values())
    row = SERVER_TRANSITIONS[state]
    try:
        events = apply()
    except LocalProtocolError:
        assert table_input is None or table_input not in row or kind == "send oversize"
        assert s.server.peer_state(s.pub) is state
        return
    after = s.server.peer_state(s.pub)
    if events is None:
        assert table_input is not None
        assert table_input in row
        assert after is row[table_input]
        return
    if not events and kind in ("confirming transport", "fresh transport"):
        assert table_input not in row  # nothing reached the server: the device had nothing to send it
        return
    if events and isinstance(events[0], Dropped):
        assert len(events) == 1
        assert table_input is None or table_input not in row
        assert after is state
        assert sum(s.server.statistics().drops.values()) == drops_before + 1
        return
    if not events:
        accepted = ServerInput.INIT_ACCEPTED
    elif isinstance(events[0], SessionStarted):
        accepted = ServerInput.CONFIRMED
    else:
        assert isinstance(events[0], Message | Keepalive)
        accepted = ServerInput.TRANSPORT_ACCEPTED
    assert accepted in row, f"{kind} accepted in {state}"
    assert after is row[accepted]


@pytest.mark.parametrize("state", list(PeerState), ids=lambda s: s.value)
def test_server_timers_follow_the_table(state: PeerState) -> None:
    s = server_scene(state)
    while (deadline := s.server.next_timeout()) is not None:
        before = s.server.peer_state(s.pub)
        events = s.server.handle_timeout(deadline)
        assert s.server.peer_state(s.pub) in closure(SERVER_TRANSITIONS, before, SERVER_TIMERS)
        assert events in ([], [SessionLost(s.pub)])
        assert (s.server.next_timeout() or 1e9) > deadline
    assert s.server.peer_state(s.pub) is PeerState.NONE


# -- random interleavings ---------------------------------------------------------------------------------------


def _flip(data: bytes, position: int) -> bytes:
    if not data:
        return b"\x01"
    i = position % len(data)
    return data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1 :]


class SessionPair(RuleBasedStateMachine):
    """A device and a server joined by a network the test controls completely."""

    def __init__(self) -> None:
        super().__init__()
        rng = random.Random(0)
        self.server = ServerEndpoint(static_private=rng.randbytes(32), is_enrolled=lambda _pub: True,
                                     random_bytes=rng.randbytes)
        self.device = DeviceSession(static_private=rng.randbytes(32), server_public=self.server.public_key,
                                    random_bytes=rng.randbytes)
        self.now = 0.0
        self.up: list[bytes] = []
        self.down: list[bytes] = []
        self.history: list[bytes] = []

    def _collect(self) -> None:
        for data in self.device.datagrams_to_send():
            self.up.append(data)
            self.history.append(data)
        for data, _ in self.server.datagrams_to_send():
            self.down.append(data)
            self.history.append(data)

    def _device_receive(self, data: bytes) -> None:
        before = self.device.state
        drops = sum(self.device.statistics().drops.values())
        cookies = self.device.statistics().cookies_accepted
        events = self.device.receive_datagram(data, self.now)
        row = DEVICE_TRANSITIONS[before]
        after = self.device.state
        if events and isinstance(events[0], Dropped):
            assert after is before
            assert sum(self.device.statistics().drops.values()) == drops + 1
        elif not events:
            assert self.device.statistics().cookies_accepted == cookies + 1
            assert after is row[DeviceInput.COOKIE_ACCEPTED]
        elif isinstance(events[0], SessionStarted):
            assert after is row[DeviceInput.RESPONSE_ACCEPTED]
        else:
            assert isinstance(events[0], Message | Keepalive)
            assert after is row[DeviceInput.TRANSPORT_ACCEPTED]
        self._collect()

    def _server_receive(self, data: bytes) -> None:
        pub = self.device.public_key
        before = self.server.peer_state(pub)
        drops = sum(self.server.statistics().drops.values())
        events = self.server.receive_datagram(data, A, self.now)
        row = SERVER_TRANSITIONS[before]
        after = self.server.peer_state(pub)
        if events and isinstance(events[0], Dropped):
            assert after is before
            assert sum(self.server.statistics().drops.values()) == drops + 1
        elif not events:
            assert after in (before, row.get(ServerInput.INIT_ACCEPTED))
        elif isinstance(events[0], SessionStarted):
            assert after is row[ServerInput.CONFIRMED]
        else:
            assert after is row[ServerInput.TRANSPORT_ACCEPTED]
        self._collect()

    @rule()
    def connect(self) -> None:
        try:
            self.device.connect(self.now)
        except LocalProtocolError:
            assert self.device.state is not DeviceState.IDLE
        self._collect()

    @rule()
    def close(self) -> None:
        self.device.close()
        assert self.device.state is DeviceState.IDLE

    @rule(payload=st.binary(max_size=40))
    def device_send(self, payload: bytes) -> None:
        try:
            self.device.send(payload, self.now)
        except LocalProtocolError:
            in_table = DeviceInput.SEND in DEVICE_TRANSITIONS[self.device.state]
            assert not in_table or (self.device.next_timeout() or 0.0) <= self.now + 180.0
        self._collect()

    @rule(payload=st.binary(max_size=40))
    def server_send(self, payload: bytes) -> None:
        try:
            self.server.send(self.device.public_key, payload, self.now)
        except LocalProtocolError:
            assert not self.server.has_session(self.device.public_key) or self.server.next_timeout() is not None
        self._collect()

    @rule(value=st.sampled_from([True, False, None]))
    def load(self, value: bool | None) -> None:
        self.server.set_under_load(value)

    @rule(dt=st.sampled_from([0.01, 1.0, 5.5, 15.0, 44.0, 60.0, 130.0, 200.0]))
    def advance(self, dt: float) -> None:
        target = self.now + dt
        for _ in range(1000):
            deadlines = [t for t in (self.device.next_timeout(), self.server.next_timeout()) if t is not None]
            if not deadlines or min(deadlines) > target:
                break
            self.now = max(self.now, min(deadlines))
            before_d, before_s = self.device.state, self.server.peer_state(self.device.public_key)
            self.device.handle_timeout(self.now)
            self.server.handle_timeout(self.now)
            assert self.device.state in closure(DEVICE_TRANSITIONS, before_d, DEVICE_TIMERS)
            assert self.server.peer_state(self.device.public_key) in closure(SERVER_TRANSITIONS, before_s,
                                                                             SERVER_TIMERS)
            self._collect()
        else:
            raise AssertionError("timers do not advance")
        self.now = target

    @precondition(lambda self: bool(self.up))
    @rule(i=st.integers(0, 20), lose=st.booleans())
    def deliver_up(self, i: int, lose: bool) -> None:
        data = self.up.pop(i % len(self.up))
        if not lose:
            self._server_receive(data)

    @precondition(lambda self: bool(self.down))
    @rule(i=st.integers(0, 20), lose=st.booleans())
    def deliver_down(self, i: int, lose: bool) -> None:
        data = self.down.pop(i % len(self.down))
        if not lose:
            self._device_receive(data)

    @precondition(lambda self: bool(self.history))
    @rule(i=st.integers(0, 200), flip=st.one_of(st.none(), st.integers(0, 2000)), to_device=st.booleans())
    def replay(self, i: int, flip: int | None, to_device: bool) -> None:
        data = self.history[i % len(self.history)]
        if flip is not None:
            data = _flip(data, flip)
        (self._device_receive if to_device else self._server_receive)(data)

    @rule(kind=st.sampled_from([1, 2, 3, 4]), body=st.binary(max_size=200), to_device=st.booleans())
    def garbage(self, kind: int, body: bytes, to_device: bool) -> None:
        data = bytes((kind, 1, 0, 0)) + body
        (self._device_receive if to_device else self._server_receive)(data)

    @invariant()
    def sessions_are_consistent(self) -> None:
        state = self.device.state
        assert (state in (DeviceState.ESTABLISHED, DeviceState.REKEYING)) == (self.device._current is not None)
        assert (state in (DeviceState.HANDSHAKING, DeviceState.REKEYING)) == (self.device._pending is not None)
        for data in self.up + self.down:
            message = parse(data)
            assert not isinstance(message, Transport) or len(data) >= 32


SessionPair.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_random_interleavings = SessionPair.TestCase


def _spec_tables() -> list[tuple[list[str], dict[str, list[str]]]]:
    text = (Path(__file__).resolve().parents[2] / "spec" / "PROTOCOL.md").read_text()
    tables: list[tuple[list[str], dict[str, list[str]]]] = []
    for block in text.split("\n\n"):
        lines = [line for line in block.strip().splitlines() if line.startswith("|")]
        if not lines or not lines[0].startswith(("| Input | NONE", "| Input | IDLE")):
            continue
        columns = [c.strip() for c in lines[0].strip("|").split("|")][1:]
        rows = {}
        for line in lines[2:]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = cells[1:]
        tables.append((columns, rows))
    return tables


@pytest.mark.parametrize(
    ("rows", "states", "inputs"),
    [(DEVICE_TRANSITIONS, DeviceState, DeviceInput), (SERVER_TRANSITIONS, PeerState, ServerInput)],
    ids=["device", "server"],
)
def test_the_spec_tables_are_the_code_tables(rows: Mapping[Any, Mapping[Any, Any]], states: Any, inputs: Any) -> None:
    (columns, spec_rows), = [t for t in _spec_tables() if t[0] == [s.name for s in states]]
    assert set(spec_rows) == {i.value for i in inputs}
    for value, cells in spec_rows.items():
        event = inputs(value)
        for state_name, cell in zip(columns, cells, strict=True):
            target = rows[states[state_name]].get(event)
            if target is None:
                assert cell in ("*error*", "*drop*", "·"), (value, state_name, cell)
            else:
                assert cell == target.name, (value, state_name)
