"""Fuzz target ``session``: handshake and transport datagrams into a server and a device (section 3).

The first byte picks where the rest of the input goes and how much of it is made to pass the cheap checks, so
that the fuzzer reaches what lies behind them:

* 0 - as sent, to a server;
* 1 - to a server, a 148-byte HandshakeInit with its ``mac1`` recomputed for that server (reaches the Noise
  decryption, enrolment and timestamp checks);
* 2 - as 1, to a server under load (reaches the ``mac2``/cookie path);
* 3 - as sent, to a device waiting for a response;
* 4 - to that device, a 96-byte HandshakeResponse or 52-byte CookieReply addressed to its pending init, the
  response with ``mac1`` recomputed (reaches the Noise decryption and the cookie decryption);
* 5, 6 - a transport message on a live session's index, to the server (5) or the device (6): the rest is the
  counter and ciphertext (reaches the replay window and the AEAD);
* 7 - a genuine HandshakeInit built from the input (sender index, timestamp, boot, ephemeral key, enrolled or
  not, with a cookie or not) to a fresh server.

Oracles: ``receive_datagram`` never raises; every datagram in modes 0-6 is counted as exactly one drop by a
spec error name or answered once (a genuine init by a response, an init under load by a CookieReply); no
answer is ever longer than the datagram that caused it (section 9, amplification).
"""

from __future__ import annotations

from loa.bench.fuzz._common import Reader, vectors
from loa.bench.fuzz._pair import ADDRESS, DEVICE_PUB, DEVICE_STATIC, SERVER_PUB, device, established, server
from loa.protocol._session_core import build_init
from loa.protocol.connection import ConnectionStatistics
from loa.protocol.cookie import mac, mac1_key
from loa.protocol.errors import RemoteProtocolError, error_by_name

MAX_LEN = 1300
NOW = 1.0

SERVER = server(3)
LOADED = server(4)
LOADED.endpoint.set_under_load(True)
PENDING = device(5)
PENDING.connect(NOW)
_INIT = PENDING.datagrams_to_send()[0]
PENDING_INDEX = _INIT[4:8]
LIVE_DEVICE, LIVE_SERVER = established()
LIVE_DEVICE.session.send(b"", NOW)
SERVER_INDEX = LIVE_DEVICE.datagrams_to_send()[-1][4:8]  # the index the server knows the live session by
LIVE_SERVER.endpoint.send(DEVICE_PUB, b"", NOW)
DEVICE_INDEX = LIVE_SERVER.datagrams_to_send()[-1][0][4:8]
_SERVER_MAC1 = mac1_key(SERVER_PUB)
_DEVICE_MAC1 = mac1_key(DEVICE_PUB)


def _drops(stats: ConnectionStatistics) -> int:
    for name in stats.drops:
        if not issubclass(error_by_name(name), RemoteProtocolError):
            raise AssertionError(f"a drop counted under {name!r}, not a spec error")
    return sum(stats.drops.values())


def _to_server(connection: object, data: bytes) -> None:
    from loa.protocol.connection import ServerConnection

    assert isinstance(connection, ServerConnection)
    before = _drops(connection.statistics())
    events = connection.receive_datagram(data, ADDRESS, NOW)
    answers = connection.datagrams_to_send()
    if events:
        raise AssertionError(f"unauthenticated input gave events {events!r}")
    if sum(len(a) for a, _ in answers) > len(data):
        raise AssertionError(f"{len(data)} bytes were answered with {[len(a) for a, _ in answers]} bytes")
    dropped = _drops(connection.statistics()) - before
    if dropped + len(answers) != 1:
        raise AssertionError(f"a datagram was counted {dropped} times and answered {len(answers)} times")


def _to_device(connection: object, data: bytes) -> None:
    from loa.protocol.connection import DeviceConnection

    assert isinstance(connection, DeviceConnection)
    before = _drops(connection.statistics())
    events = connection.receive_datagram(data, NOW)
    answers = connection.datagrams_to_send()
    if events or answers:
        raise AssertionError(f"unauthenticated input gave events {events!r} and {len(answers)} datagrams")
    if _drops(connection.statistics()) - before != 1:
        raise AssertionError("a bad datagram was not counted exactly once")


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer and atheris use
    reader = Reader(data)
    mode = reader.byte() % 8
    if mode == 7:
        _genuine_init(reader)
        return
    rest = reader.rest()
    if mode in (1, 2) and len(rest) == 148 and rest[0] == 1:
        rest = rest[:116] + mac(_SERVER_MAC1, rest[:116]) + rest[132:]
    if mode == 4 and len(rest) == 96 and rest[0] == 2:
        head = rest[:8] + PENDING_INDEX + rest[12:64]
        rest = head + mac(_DEVICE_MAC1, head) + rest[80:]
    elif mode == 4 and len(rest) == 52 and rest[0] == 3:
        rest = rest[:4] + PENDING_INDEX + rest[8:]
    if mode in (5, 6):
        rest = bytes((4, 1, 0, 0)) + (SERVER_INDEX if mode == 5 else DEVICE_INDEX) + rest
    if mode in (0, 1, 2, 5):
        _to_server({0: SERVER, 1: SERVER, 2: LOADED, 5: LIVE_SERVER}[mode], rest)
    else:
        _to_device({3: PENDING, 4: PENDING, 6: LIVE_DEVICE}[mode], rest)


def _genuine_init(reader: Reader) -> None:
    flags = reader.byte()
    sender_index, timestamp, boot = reader.uint(4), reader.uint(8), reader.uint(4)
    ephemeral = reader.take(32).ljust(32, b"\1")
    cookie = reader.take(16) if flags & 2 else None
    fresh = server(6, enrolled=bool(flags & 1))
    if flags & 4:
        fresh.endpoint.set_under_load(True)
    init, _ = build_init(device_static=DEVICE_STATIC, server_pub=SERVER_PUB, ephemeral=ephemeral,
                         sender_index=sender_index, timestamp=timestamp, boot=boot, cookie=cookie,
                         server_mac1_key=_SERVER_MAC1)
    data = init.to_bytes()
    events = fresh.receive_datagram(data, ADDRESS, NOW)
    answers = fresh.datagrams_to_send()
    if events:
        raise AssertionError(f"a handshake init gave events {events!r}")
    if len(answers) > 1 or sum(len(a) for a, _ in answers) > len(data):
        raise AssertionError(f"an init of {len(data)} bytes was answered with {[len(a) for a, _ in answers]}")


def seeds() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for v in vectors("session")["vectors"]:
        receiver = (v.get("context") or {}).get("receiver")
        raw = bytes.fromhex(v["hex"])
        if receiver == "device":
            out[v["id"]] = b"\4" + raw
        elif receiver == "transport":
            out[v["id"]] = (b"\5" if v["context"].get("direction") == "device_to_server" else b"\6") + raw[8:]
        else:
            out[v["id"]] = b"\1" + raw
            out[v["id"] + ".loaded"] = b"\2" + raw
    out["genuine.enrolled"] = b"\7\1" + bytes(range(60))
    out["genuine.cookie"] = b"\7\7" + bytes(range(80))
    return out
