"""Fuzz target ``transport``: control-message plaintexts behind a real session's encryption (sections 3.6, 4).

A device and a server hold one live session made with the vectors' keys. The first byte picks the direction;
the rest (at most 1168 bytes) is encrypted as a transport message by one end, exactly as it would send it, and
given to the other end's ``receive_datagram``; whatever that end answers (acknowledgements) is delivered back.
So the fuzzer reaches the reliable channel and the control-message decoder of both ends with plaintext that
passed authentication, which plain bytes never would.

Oracles: ``receive_datagram`` never raises; a plaintext either yields events or is counted once as a drop
by a spec error name; every event is a delivered control message (the session is not torn down).
The session is kept from one input to the next, as a real one is.
"""

from __future__ import annotations

from loa.bench.fuzz._common import vectors
from loa.bench.fuzz._pair import ADDRESS, DEVICE_PUB, established
from loa.protocol.connection import ConnectionStatistics, Received
from loa.protocol.datagram import MAX_PLAINTEXT
from loa.protocol.errors import RemoteProtocolError, error_by_name

MAX_LEN = 1200  # a mode byte and a plaintext; longer plaintexts are cut to MAX_PLAINTEXT
NOW = 1.0

DEVICE, SERVER = established()


def _drops(stats: ConnectionStatistics) -> int:
    for name in stats.drops:
        if not issubclass(error_by_name(name), RemoteProtocolError):
            raise AssertionError(f"a drop counted under {name!r}, not a spec error")
    return sum(stats.drops.values())


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer and atheris use
    if not data:
        return
    to_server = data[0] % 2 == 0
    plaintext = data[1 : 1 + MAX_PLAINTEXT]
    if not plaintext:
        return  # an empty plaintext is a keepalive: nothing to decode
    if to_server:
        DEVICE.session.send(plaintext, NOW)
        sent = DEVICE.datagrams_to_send()
        before = _drops(SERVER.statistics())
        events = [e for d in sent for e in SERVER.receive_datagram(d, ADDRESS, NOW)]
        dropped = _drops(SERVER.statistics()) - before
        for answer, _ in SERVER.datagrams_to_send():
            DEVICE.receive_datagram(answer, NOW)
        DEVICE.datagrams_to_send()
    else:
        SERVER.endpoint.send(DEVICE_PUB, plaintext, NOW)
        sent = [d for d, _ in SERVER.datagrams_to_send()]
        before = _drops(DEVICE.statistics())
        events = [e for d in sent for e in DEVICE.receive_datagram(d, NOW)]
        dropped = _drops(DEVICE.statistics()) - before
        for answer in DEVICE.datagrams_to_send():
            SERVER.receive_datagram(answer, ADDRESS, NOW)
        SERVER.datagrams_to_send()
    SERVER.next_timeout()
    if len(sent) != 1:
        raise AssertionError(f"one plaintext went out as {len(sent)} datagrams")
    if dropped > 1 or (dropped and events):
        raise AssertionError(f"one plaintext was counted {dropped} times and gave {events!r}")
    if any(not isinstance(e, Received) for e in events):
        raise AssertionError(f"a plaintext changed the session: {events!r}")


def seeds() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for v in vectors("control")["vectors"]:
        raw = bytes.fromhex(v["hex"])
        out[v["id"] + ".to_server"] = b"\0" + raw
        out[v["id"] + ".to_device"] = b"\1" + raw
    return out
