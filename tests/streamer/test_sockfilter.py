"""The server's kernel socket filter (PROTOCOL.md sections 2.2, 3.1.2, 3.14), without sockets: its classic BPF
program run by a small interpreter equals the Python reference :func:`accepts`; whatever it drops, a live server
core drops too, counted and unanswered; whatever a device sends a server passes it."""

from __future__ import annotations

import random
import struct
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from streamer_kit import World

from loa.protocol.connection import DeviceConnection
from loa.protocol.datagram import MAX_DATAGRAM, HandshakeInit, Transport, classify, parse
from loa.protocol.errors import RemoteProtocolError
from loa.streamer.sockfilter import PROGRAM, accepts

UDP_HEADER = 8


def run_program(payload: bytes) -> int:
    """Classic BPF over a UDP socket's view of a datagram (the 8-byte UDP header, then the payload): the
    instructions :data:`PROGRAM` uses, as linux/filter.h defines them."""
    packet = b"\0" * UDP_HEADER + payload
    a, pc = 0, 0
    for _ in range(len(PROGRAM) + 1):
        code, jt, jf, k = PROGRAM[pc]
        pc += 1
        if code == 0x80:  # ld len
            a = len(packet)
        elif code == 0x20:  # ld word at k; out of the packet: the program drops
            if k + 4 > len(packet):
                return 0
            a = struct.unpack_from("!I", packet, k)[0]
        elif code in (0x15, 0x25, 0x35):  # jeq, jgt, jge
            taken = a == k if code == 0x15 else a > k if code == 0x25 else a >= k
            pc += jt if taken else jf
        elif code == 0x06:  # ret k
            return k
        else:
            raise AssertionError(f"opcode {code:#x} not interpreted")
    raise AssertionError("the program ran off its end")


def structured() -> st.SearchStrategy[bytes]:
    """Datagrams near every boundary: each type byte, version and reserved value, lengths around 32, 148, 1200."""
    lengths = st.sampled_from((0, 1, 2, 3, 4, 5, 31, 32, 33, 51, 52, 53, 95, 96, 97, 147, 148, 149, 1199, 1200,
                               1201, 1500))
    return st.builds(
        lambda kind, version, reserved, size, fill: (bytes((kind, version)) + reserved + fill * size)[:size],
        st.integers(0, 255), st.sampled_from((0, 1, 2, 255)), st.sampled_from((b"\0\0", b"\0\1", b"\x80\0")),
        lengths, st.binary(min_size=1, max_size=1),
    )


@given(st.one_of(structured(), st.binary(max_size=1300)))
@settings(max_examples=400, deadline=None)
def test_the_program_decides_as_the_reference(payload: bytes) -> None:
    assert (run_program(payload) != 0) == accepts(payload)


def test_only_the_two_kinds_a_server_takes_pass() -> None:
    init = b"\x01\x01\0\0" + bytes(144)
    assert accepts(init)
    assert not accepts(init[:-1])
    assert not accepts(init + b"\0")
    assert accepts(b"\x04\x01\0\0" + bytes(28))
    assert not accepts(b"\x04\x01\0\0" + bytes(27))
    assert accepts(b"\x04\x01\0\0" + bytes(MAX_DATAGRAM - 4))
    assert not accepts(b"\x04\x01\0\0" + bytes(MAX_DATAGRAM - 3))
    for kind in (0x02, 0x03, 0x05, 0x80, 0x90, 0xC8):
        assert not accepts(bytes((kind, 1, 0, 0)) + bytes(144))
    assert not accepts(b"\x04\x02\0\0" + bytes(60))
    assert not accepts(b"\x04\x01\0\x01" + bytes(60))


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_what_a_device_sends_a_server_passes(data: st.DataObject) -> None:
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1)))
    conn = DeviceConnection(static_private=rng.randbytes(32), server_public=rng.randbytes(32),
                            random_bytes=rng.randbytes, rng=rng.random)
    conn.connect(1.0)
    (init,) = conn.datagrams_to_send()
    assert len(init) == HandshakeInit.SIZE
    assert accepts(init)
    size = data.draw(st.integers(16, MAX_DATAGRAM - 16))
    transport = Transport(rng.getrandbits(32), rng.getrandbits(64), rng.randbytes(size)).to_bytes()
    assert accepts(transport)


def expected_drop(payload: bytes) -> str:
    """The error a server counts a datagram under (sections 2.2, 3.1.2): the first structural check it fails;
    a well-formed response or cookie reply is a type a server never receives."""
    try:
        if classify(payload) != "loa":
            return "UnknownTypeError"
        parse(payload)
    except RemoteProtocolError as exc:
        return type(exc).__name__
    return "UnknownTypeError"


def test_whatever_it_drops_a_live_server_drops_counted_and_unanswered() -> None:
    world = World()
    device = world.device("C11")
    assert world.run_until(lambda: world.online(device), 10.0)
    world.run_for(1.0)
    core = world.core
    core.datagrams_to_send()
    rng = random.Random(7)
    samples = []
    for kind in range(256):
        for size in (0, 1, 4, 31, 32, 52, 96, 147, 148, 149, 1200, 1201):
            head = bytes((kind, rng.choice((1, 1, 2)), 0, rng.choice((0, 0, 1))))
            samples.append((head + rng.randbytes(max(0, size - 4)))[:size])
    dropped = [s for s in samples if not accepts(s)]
    assert len(dropped) > 2000
    for source in (world.address(device), ("192.0.2.9", 4000)):  # a device with a session, and a stranger
        for payload in dropped:
            before = Counter(core.statistics().drops)
            core.receive_datagram(payload, source, world.now)
            counted = Counter(core.statistics().drops) - before
            assert set(counted) == {expected_drop(payload)}, payload[:8].hex()
        assert core.datagrams_to_send() == []
    assert world.online(device)
