"""spec/vectors/session.json both ways: every ``decoded`` encodes to exactly ``hex``, every ``hex`` decodes to exactly
``decoded``, every invalid vector raises exactly its error - and the real endpoints agree."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loa.protocol._session_core import (
    SessionKeys,
    build_init,
    build_response,
    check_init_mac1,
    check_timestamp,
    open_init,
    open_response,
    open_transport,
    seal_transport,
)
from loa.protocol.cookie import address_bytes, mac, mac1_key, make_cookie_reply, open_cookie_reply
from loa.protocol.datagram import CookieReply, Datagram, HandshakeInit, HandshakeResponse, Transport, parse
from loa.protocol.errors import UnknownKeyError, error_by_name
from loa.protocol.noise import CipherState, HandshakeState
from loa.protocol.replay import ReplayWindow
from loa.protocol.restart import check_notice, encode_notice, notice_key, parse_notice
from loa.protocol.session import DeviceSession, Dropped, ServerEndpoint

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "spec" / "vectors" / "session.json"
DOCUMENT: dict[str, Any] = json.loads(VECTORS.read_text())
VALID = [v for v in DOCUMENT["vectors"] if "decoded" in v]
INVALID = [v for v in DOCUMENT["vectors"] if "error" in v]


def ctx_of(vector: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = DOCUMENT["context"] | vector.get("context", {})
    return merged


def h(ctx: dict[str, Any], name: str) -> bytes:
    return bytes.fromhex(ctx[name])


def device_handshake(ctx: dict[str, Any], cookie: bytes | None = None, timestamp: int | None = None,
                     ) -> tuple[HandshakeInit, HandshakeState]:
    """What the device of the context sent (session.init) and the handshake state it keeps."""
    return build_init(device_static=h(ctx, "device_static_private"), server_pub=h(ctx, "server_static_public"),
                      ephemeral=h(ctx, "device_ephemeral_private"), sender_index=ctx["device_sender_index"],
                      timestamp=ctx["timestamp"] if timestamp is None else timestamp, boot=ctx["device_boot"],
                      cookie=cookie, server_mac1_key=mac1_key(h(ctx, "server_static_public")))


def transport_keys(ctx: dict[str, Any]) -> SessionKeys:
    up = ctx["direction"] == "device_to_server"
    key = h(ctx, "k_ds" if up else "k_sd")
    index = ctx["server_sender_index" if up else "device_sender_index"]
    keys = SessionKeys(index, index, send=CipherState(key=key), recv=CipherState(key=key), created=0.0)
    window = ctx.get("window")
    if window is not None:
        keys.window = ReplayWindow.from_state(window["greatest"], window["seen"])
    return keys


def layout(message: Datagram) -> dict[str, Any]:
    fields: dict[str, Any] = {"type": type(message).__name__}
    for name in (f.name for f in dataclasses.fields(message)):
        value = getattr(message, name)
        fields[name] = value.hex() if isinstance(value, bytes) else value
    return fields


def decode(data: bytes, ctx: dict[str, Any]) -> dict[str, Any]:
    """The receiving side's whole procedure for one datagram, as the vector's context describes it."""
    if ctx.get("receiver") == "notice":  # section 3.16: the device derives the key from its own private key
        key = notice_key(h(ctx, "device_static_private"), h(ctx, "server_static_public"))
        assert key == h(ctx, "notice_key")
        new_boot = check_notice(key, data, ctx["server_boot"])
        old_boot, _, notice_mac = parse_notice(data)
        return {"type": "RestartNotice", "old_boot": old_boot, "new_boot": new_boot, "mac": notice_mac.hex()}
    message = parse(data)
    fields = layout(message)
    receiver = ctx.get("receiver")
    if receiver == "server":
        assert isinstance(message, HandshakeInit)
        check_init_mac1(message, mac1_key(h(ctx, "server_static_public")))
        opened = open_init(message, server_static=h(ctx, "server_static_private"))
        enrolled = [bytes.fromhex(k) for k in ctx.get("enrolled", [ctx["device_static_public"]])]
        if opened.device_pub not in enrolled:
            raise UnknownKeyError("not enrolled")
        check_timestamp(ctx.get("stored_timestamp"), opened.timestamp)
        fields |= {"device_static_public": opened.device_pub.hex(), "timestamp": opened.timestamp,
                   "boot": opened.boot}
    elif receiver == "device" and isinstance(message, HandshakeResponse):
        _, handshake = device_handshake(ctx)
        boot, keys = open_response(message, handshake, device_mac1_key=mac1_key(h(ctx, "device_static_public")),
                                   now=0.0)
        assert keys.send.key is not None
        assert keys.recv.key is not None
        fields |= {"boot": boot, "k_ds": keys.send.key.hex(), "k_sd": keys.recv.key.hex()}
    elif receiver == "device":
        assert isinstance(message, CookieReply)
        init, _ = device_handshake(ctx)
        fields["cookie"] = open_cookie_reply(message, init.mac1, h(ctx, "server_static_public")).hex()
    elif receiver == "transport":
        assert isinstance(message, Transport)
        keys = transport_keys(ctx)
        if message.receiver_index != keys.local_index:
            raise UnknownKeyError("no session with this index")
        plaintext, _ = open_transport(keys, message)
        fields["plaintext"] = plaintext.hex()
    return fields


def encode(decoded: dict[str, Any], ctx: dict[str, Any]) -> bytes:
    """Build the datagram from the context's keys (for encrypted messages) - what a sender does."""
    kind = decoded["type"]
    if kind == "RestartNotice":  # the server derives the key from its own private key
        key = notice_key(h(ctx, "server_static_private"), h(ctx, "device_static_public"))
        return encode_notice(key, decoded["old_boot"], decoded["new_boot"])
    if kind == "HandshakeInit":
        cookie = bytes.fromhex(ctx["cookie"]) if "cookie" in ctx else None
        assert decoded["boot"] == ctx["device_boot"]
        init, _ = device_handshake(ctx, cookie, decoded["timestamp"])
        return init.to_bytes()
    if kind == "HandshakeResponse":
        init, _ = device_handshake(ctx)
        opened = open_init(init, server_static=h(ctx, "server_static_private"))
        response, _ = build_response(opened.handshake, ephemeral=h(ctx, "server_ephemeral_private"),
                                     sender_index=decoded["sender_index"], receiver_index=decoded["receiver_index"],
                                     boot=decoded["boot"], now=0.0)
        return response.to_bytes()
    if kind == "CookieReply":
        init, _ = device_handshake(ctx)
        host, port = ctx["source_address"]
        cookie = mac(h(ctx, "cookie_secret"), address_bytes((host, port)))
        assert cookie.hex() == decoded["cookie"]
        reply = make_cookie_reply(decoded["receiver_index"], cookie, init.mac1, h(ctx, "server_static_public"),
                                  bytes.fromhex(decoded["nonce"]))
        return reply.to_bytes()
    assert kind == "Transport"
    keys = transport_keys(ctx)
    keys.sent = decoded["counter"]
    return seal_transport(keys, bytes.fromhex(decoded["plaintext"])).to_bytes()


def rebuild_layout(decoded: dict[str, Any]) -> bytes:
    """The datagram from the decoded layout fields alone (no cryptography)."""
    if decoded["type"] == "RestartNotice":
        return (bytes.fromhex("06010000") + decoded["old_boot"].to_bytes(4, "big")
                + decoded["new_boot"].to_bytes(4, "big") + bytes.fromhex(decoded["mac"]))
    cls: type[Datagram] = {"HandshakeInit": HandshakeInit, "HandshakeResponse": HandshakeResponse,
                           "CookieReply": CookieReply, "Transport": Transport}[decoded["type"]]
    args = {f.name: decoded[f.name] for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {k: bytes.fromhex(v) if isinstance(v, str) else v for k, v in args.items()}
    message: Datagram = cls(**values)
    return message.to_bytes()


def test_file_shape() -> None:
    assert DOCUMENT["name"] == "session"
    ids = [v["id"] for v in DOCUMENT["vectors"]]
    assert len(ids) == len(set(ids))
    assert all(i.startswith("session.") for i in ids)
    assert len(DOCUMENT["vectors"]) >= 20
    assert len(INVALID) >= 10


@pytest.mark.parametrize("vector", VALID, ids=lambda v: v["id"])
def test_decode(vector: dict[str, Any]) -> None:
    assert decode(bytes.fromhex(vector["hex"]), ctx_of(vector)) == vector["decoded"]


@pytest.mark.parametrize("vector", VALID, ids=lambda v: v["id"])
def test_encode(vector: dict[str, Any]) -> None:
    assert encode(vector["decoded"], ctx_of(vector)).hex() == vector["hex"]
    assert rebuild_layout(vector["decoded"]).hex() == vector["hex"]


@pytest.mark.parametrize("vector", INVALID, ids=lambda v: v["id"])
def test_invalid(vector: dict[str, Any]) -> None:
    error = error_by_name(vector["error"])
    with pytest.raises(error) as info:
        decode(bytes.fromhex(vector["hex"]), ctx_of(vector))
    assert type(info.value) is error


def scripted(*chunks: bytes) -> Callable[[int], bytes]:
    """A random source that hands out the given byte strings in order (and fails when asked for more)."""
    queue: Iterator[bytes] = iter(chunks)

    def take(size: int) -> bytes:
        chunk = next(queue)
        assert len(chunk) == size
        return chunk

    return take


def server_for(ctx: dict[str, Any], *chunks: bytes) -> ServerEndpoint:
    enrolled = {bytes.fromhex(k) for k in ctx.get("enrolled", [ctx["device_static_public"]])}
    stored = {} if "stored_timestamp" not in ctx else {h(ctx, "device_static_public"): ctx["stored_timestamp"]}
    return ServerEndpoint(static_private=h(ctx, "server_static_private"), is_enrolled=enrolled.__contains__,
                          boot=ctx["server_boot"], random_bytes=scripted(*chunks), handshake_timestamps=stored)


def test_the_server_endpoint_answers_session_init_with_session_response() -> None:
    vectors = {v["id"]: v for v in VALID}
    ctx = ctx_of(vectors["session.init"])
    # the server draws its sender index, then its ephemeral key
    server = server_for(ctx, ctx["server_sender_index"].to_bytes(4, "big"), h(ctx, "server_ephemeral_private"))
    host, port = ctx["source_address"]
    assert server.receive_datagram(bytes.fromhex(vectors["session.init"]["hex"]), (host, port), 0.0) == []
    ((response, address),) = server.datagrams_to_send()
    assert address == (host, port)
    assert response.hex() == vectors["session.response"]["hex"]


@pytest.mark.parametrize("vector", [v for v in INVALID if ctx_of(v).get("receiver") in (None, "server")],
                         ids=lambda v: v["id"])
def test_the_endpoints_count_the_same_error(vector: dict[str, Any]) -> None:
    ctx = ctx_of(vector)
    data = bytes.fromhex(vector["hex"])
    server = server_for(ctx)
    host, port = ctx["source_address"]
    assert server.receive_datagram(data, (host, port), 0.0) == [Dropped(vector["error"])]
    assert server.datagrams_to_send() == []
    if ctx.get("receiver") is None:
        device = DeviceSession(static_private=h(ctx, "device_static_private"),
                               server_public=h(ctx, "server_static_public"), boot=1, random_bytes=bytes)
        assert device.receive_datagram(data, 0.0) == [Dropped(vector["error"])]


def test_the_generator_reproduces_the_file(tmp_path: Path) -> None:
    script = ROOT / "spec" / "vectors" / "make_session.py"
    copy = tmp_path / "make_session.py"
    copy.write_text(script.read_text())
    subprocess.run([sys.executable, str(copy)], check=True, capture_output=True, cwd=tmp_path)
    assert (tmp_path / "session.json").read_text() == VECTORS.read_text()
