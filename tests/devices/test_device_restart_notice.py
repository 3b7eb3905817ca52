"""The reference device and restart notices (PROTOCOL.md section 3.16), on the fake network and its virtual clock.

A restarted server sends each device it had a session with a notice naming the old and the new boot under the
pair's notice key; a device that takes it handshakes at once instead of noticing the silence after 3-8 s of
unanswered clock probes. Anything else that looks like a notice is dropped and counted, and changes nothing.
"""

from __future__ import annotations

import pytest
from serverdriver import SERVER, TestServer, World

from loa.devices.simnode import SimulatedDevice
from loa.protocol.restart import encode_notice, notice_key

ADDRESS = ("198.51.100.7", 40000)


def _joined(seed: int) -> tuple[World, SimulatedDevice]:
    world = World(seed)
    node = world.add_device(address=ADDRESS)
    world.run(70.0)  # past the first 60 clock exchanges: probes every 5 s from here
    assert world.server.connects
    return world, node


def _restart(world: World) -> tuple[TestServer, int]:
    """The server restarts: same static key, a new boot, no sessions. Returns it and the old boot."""
    old_boot = world.server.conn.endpoint.boot
    world.net.detach(SERVER)
    world.server = TestServer(world.net, static_private=world.server_key, rng=world.rng)
    assert world.server.conn.endpoint.boot != old_boot
    return world.server, old_boot


def _notice(world: World, node: SimulatedDevice, old_boot: int, new_boot: int | None = None) -> bytes:
    key = notice_key(world.server_key, world.pub(node))
    return encode_notice(key, old_boot, world.server.conn.endpoint.boot if new_boot is None else new_boot)


def test_a_notice_brings_the_handshake_at_once_where_silence_takes_seconds() -> None:
    waits = {}
    for notified in (False, True):
        world, node = _joined(51)
        server, old_boot = _restart(world)
        restarted_at = world.net.now
        if notified:
            world.net.inject(_notice(world, node, old_boot), SERVER, ADDRESS)
        assert world.run_until(lambda s=server: bool(s.connects), 30.0)  # type: ignore[misc]
        waits[notified] = server.connects[0][0] - restarted_at
        assert node.core.restart_notices == (1 if notified else 0)
    assert waits[True] < 0.2  # one trip each way of the fake network (5-20 ms) and the handshake
    assert waits[False] > 1.0  # the probes' silence rule (at least 3 s after the last answer)


def _forged(world: World, node: SimulatedDevice, old_boot: int, case: str) -> tuple[bytes, tuple[str, int], str]:
    """A notice the device must drop: (datagram, source, error counted)."""
    good = _notice(world, node, old_boot)
    if case == "other address":
        return good, ("192.0.2.99", 4433), "UnknownKeyError"
    if case == "other port":
        return good, (SERVER[0], SERVER[1] + 1), "UnknownKeyError"
    if case == "other boot":
        return _notice(world, node, (old_boot + 1) & 0xFFFFFFFF), SERVER, "ReplayError"
    if case == "same boot":
        key = notice_key(world.server_key, world.pub(node))
        forged = bytearray(encode_notice(key, old_boot, (old_boot + 1) & 0xFFFFFFFF))
        forged[8:12] = old_boot.to_bytes(4, "big")
        return bytes(forged), SERVER, "FieldError"
    if case == "another device's key":
        key = notice_key(world.server_key, bytes(32 * [9]))
        return encode_notice(key, old_boot, world.server.conn.endpoint.boot), SERVER, "BadMacError"
    if case == "another server's key":
        key = notice_key(bytes(32 * [7]), world.pub(node))
        return encode_notice(key, old_boot, world.server.conn.endpoint.boot), SERVER, "BadMacError"
    if case == "cut":
        return good[:-1], SERVER, "TruncatedError"
    if case == "lengthened":
        return good + b"\x00", SERVER, "BadLengthError"
    if case == "version 2":
        return good[:1] + b"\x02" + good[2:], SERVER, "UnknownVersionError"
    raise AssertionError(case)


CASES = ["other address", "other port", "other boot", "same boot", "another device's key", "another server's key",
         "cut", "lengthened", "version 2"]


@pytest.mark.parametrize("case", CASES)
def test_a_notice_that_does_not_hold_is_dropped_and_counted(case: str) -> None:
    world, node = _joined(52)
    server, old_boot = _restart(world)
    datagram, source, error = _forged(world, node, old_boot, case)
    before = node.core.drop_counts[error]
    world.net.inject(datagram, source, ADDRESS)
    world.run(0.5)
    assert node.core.drop_counts[error] == before + 1
    assert node.core.restart_notices == 0
    assert not server.connects  # no handshake: the device still holds its (dead) session


def test_a_notice_is_taken_once_and_its_replay_after_the_rejoin_is_dropped() -> None:
    world, node = _joined(53)
    server, old_boot = _restart(world)
    notice = _notice(world, node, old_boot)
    world.net.inject(notice, SERVER, ADDRESS)
    assert world.run_until(lambda: bool(server.connects), 5.0)
    world.run(1.0)
    replays = node.core.drop_counts["ReplayError"]
    world.net.inject(notice, SERVER, ADDRESS)  # the session is now with the new boot
    world.run(5.0)
    assert node.core.drop_counts["ReplayError"] == replays + 1
    assert node.core.restart_notices == 1
    assert len(server.connects) == 1


def test_a_notice_before_any_session_is_dropped() -> None:
    world = World(54)
    node = world.add_device(address=ADDRESS, start=False)
    key = notice_key(world.server_key, world.pub(node))
    world.net.inject(encode_notice(key, 1, 2), SERVER, ADDRESS)
    world.run(0.2)
    assert node.core.drop_counts["UnknownKeyError"] == 1
    assert node.core.restart_notices == 0
