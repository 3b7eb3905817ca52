"""A server behind on its input still lets devices join (PROTOCOL.md 3.3.1, STALE_INIT).

Devices that all start at once (a power cut ends, a server restarts) retry an unanswered init every 2-2.5 s. A
server that answers inits more slowly than they come falls behind; an answer to an init that waited longer than
its device's retry reaches nobody (the device has moved to a new ephemeral), so the server spends its time on
answers nobody waits for and, as the queue grows, no device joins at all. Dropping inits that waited more than
STALE_INIT keeps its answers fresh. The model: the real session layer on a virtual clock, the server reading one
FIFO input and spending ``1 / rate`` seconds on each init it opens (a dropped one costs nothing).
"""

from __future__ import annotations

import random
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loa.protocol.session import STALE_INIT, DeviceSession, DeviceState, Dropped, ServerEndpoint

STEP = 0.01


def join_behind(devices: int, rate: float, *, stamped: bool, limit: float, seed: int = 5) -> tuple[int, int]:
    """Start ``devices`` at once against a server that opens ``rate`` inits a second; the devices with a
    confirmed session at ``limit`` seconds, and the inits the server opened."""
    rng = random.Random(seed)
    server = ServerEndpoint(static_private=rng.randbytes(32), is_enrolled=lambda _pub: True,
                            random_bytes=rng.randbytes)
    fleet = [DeviceSession(static_private=rng.randbytes(32), server_public=server.public_key,
                           random_bytes=rng.randbytes) for _ in range(devices)]
    address = {("198.51.100.7", 40000 + i): i for i in range(devices)}
    of = {i: a for a, i in address.items()}
    queue: deque[tuple[float, bytes, int]] = deque()
    for device in fleet:
        device.connect(0.0)
    now = busy_until = 0.0
    opened = 0
    while now < limit:
        for i, device in enumerate(fleet):
            deadline = device.next_timeout()
            if deadline is not None and deadline <= now:
                device.handle_timeout(now)
            queue.extend((now, data, i) for data in device.datagrams_to_send())
        while queue and busy_until <= now:
            arrived, data, i = queue.popleft()
            before = server.statistics().inits
            events = server.receive_datagram(data, of[i], now, arrived=arrived if stamped else None)
            if server.statistics().inits > before and not any(isinstance(e, Dropped) for e in events):
                opened += 1
                busy_until = now + 1 / rate
            for reply, to in server.datagrams_to_send():
                fleet[address[to]].receive_datagram(reply, now)
        now = round(now + STEP, 6)
    joined = sum(device.state is DeviceState.ESTABLISHED and server.has_session(device.public_key)
                 for device in fleet)
    return joined, opened


def test_a_server_behind_on_its_input_lets_every_device_join_when_it_drops_stale_inits() -> None:
    # 120 devices retrying every 2-2.5 s send about 53 inits a second; the server opens 20
    joined, opened = join_behind(120, 20.0, stamped=True, limit=20.0)
    assert joined == 120
    assert opened <= 1.1 * 120  # nearly every init it opened was answered in time
    # without the arrival times it opens inits as fast as it can, and most of its answers come too late
    unstamped_joined, unstamped_opened = join_behind(120, 20.0, stamped=False, limit=20.0)
    assert unstamped_opened > 2 * opened
    assert unstamped_joined < 60


@settings(max_examples=50, deadline=None)
@given(waited=st.floats(min_value=0.0, max_value=30.0, allow_nan=False))
def test_an_init_is_answered_only_if_it_waited_no_longer_than_stale_init(waited: float) -> None:
    rng = random.Random(1)
    server = ServerEndpoint(static_private=rng.randbytes(32), is_enrolled=lambda _pub: True,
                            random_bytes=rng.randbytes)
    device = DeviceSession(static_private=rng.randbytes(32), server_public=server.public_key,
                           random_bytes=rng.randbytes)
    device.connect(100.0)
    (init,) = device.datagrams_to_send()
    now = 100.0 + waited
    events = server.receive_datagram(init, ("198.51.100.7", 40000), now, arrived=100.0)
    replies = server.datagrams_to_send()
    if waited > STALE_INIT:
        assert events == [Dropped("ExpiredError")]
        assert replies == []
        assert server.statistics().inits == 0  # dropped before mac1: it does not count towards the load trigger
    else:
        assert events == []
        assert [len(data) for data, _ in replies] == [96]
    # the same init again, with no arrival time: answered unless its timestamp was taken by the first answer
    again = server.receive_datagram(init, ("198.51.100.7", 40000), now + 60)
    assert again == ([] if waited > STALE_INIT else [Dropped("ReplayError")])


@pytest.mark.parametrize("stamped", [True, False])
def test_a_server_that_keeps_up_answers_every_init_whether_or_not_it_knows_arrival_times(stamped: bool) -> None:
    joined, _ = join_behind(20, 1000.0, stamped=stamped, limit=5.0)
    assert joined == 20
