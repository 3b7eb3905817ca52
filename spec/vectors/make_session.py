"""Write spec/vectors/session.json: session-layer wire vectors (PROTOCOL.md section 3, spec/parts/session.md).

Run as ``python spec/vectors/make_session.py``. Deterministic: every key, index and nonce is fixed below (the keys
are BLAKE2s-256 of a label), so the output never changes unless the protocol does.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from loa.protocol._session_core import (
    NOISE_PROTOCOL,
    PROLOGUE,
    SessionKeys,
    build_init,
    build_response,
    open_init,
    seal_transport,
)
from loa.protocol.cookie import address_bytes, cookie_key, mac, mac1_key, make_cookie_reply
from loa.protocol.datagram import HandshakeInit, Transport
from loa.protocol.noise import CipherState, x25519_public
from loa.protocol.restart import encode_notice, notice_key

OUT = Path(__file__).with_name("session.json")


def key(label: str) -> bytes:
    return hashlib.blake2s(f"loa session vector: {label}".encode()).digest()


SERVER_STATIC = key("server static")
DEVICE_STATIC = key("device static")
DEVICE_EPHEMERAL = key("device ephemeral")
SERVER_EPHEMERAL = key("server ephemeral")
OTHER_SERVER_STATIC = key("another server static")
SERVER_PUB, DEVICE_PUB = x25519_public(SERVER_STATIC), x25519_public(DEVICE_STATIC)
DEVICE_INDEX, SERVER_INDEX = 0x1A2B3C4D, 0x5E6F7081
TIMESTAMP = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in nanoseconds
DEVICE_BOOT, SERVER_BOOT = 0x0BADCAFE, 0x5EED5EED
NOTICE_NEW_BOOT = 0x600DB007  # the restarted server's boot (section 3.16)
COOKIE_SECRET = key("cookie secret")
SOURCE = ("198.51.100.7", 40000)
COOKIE_NONCE = bytes.fromhex("000102030405060708090a0b")
VOLUME_80 = bytes.fromhex("83a174a6766f6c756d65a2696407a56c6576656c50")  # {"t": "volume", "id": 7, "level": 80}


def init_vector(cookie: bytes | None, timestamp: int) -> tuple[HandshakeInit, dict[str, Any]]:
    init, _ = build_init(device_static=DEVICE_STATIC, server_pub=SERVER_PUB, ephemeral=DEVICE_EPHEMERAL,
                         sender_index=DEVICE_INDEX, timestamp=timestamp, boot=DEVICE_BOOT, cookie=cookie,
                         server_mac1_key=mac1_key(SERVER_PUB))
    decoded = {
        "type": "HandshakeInit",
        "sender_index": init.sender_index,
        "ephemeral": init.ephemeral.hex(),
        "encrypted_static": init.encrypted_static.hex(),
        "encrypted_payload": init.encrypted_payload.hex(),
        "mac1": init.mac1.hex(),
        "mac2": init.mac2.hex(),
        "device_static_public": DEVICE_PUB.hex(),
        "timestamp": timestamp,
        "boot": DEVICE_BOOT,
    }
    return init, decoded


def transport(keys: SessionKeys, counter: int, plaintext: bytes) -> tuple[Transport, dict[str, Any]]:
    keys.sent = counter
    message = seal_transport(keys, plaintext)
    return message, {
        "type": "Transport",
        "receiver_index": message.receiver_index,
        "counter": counter,
        "ciphertext": message.ciphertext.hex(),
        "plaintext": plaintext.hex(),
    }


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


def build() -> dict[str, Any]:
    init, init_decoded = init_vector(None, TIMESTAMP)
    init_bytes = init.to_bytes()
    opened = open_init(init, server_static=SERVER_STATIC)
    response, server_keys = build_response(opened.handshake, ephemeral=SERVER_EPHEMERAL, sender_index=SERVER_INDEX,
                                           receiver_index=DEVICE_INDEX, boot=SERVER_BOOT, now=0.0)
    k_ds, k_sd = server_keys.recv.key, server_keys.send.key
    assert k_ds is not None
    assert k_sd is not None
    cookie = mac(COOKIE_SECRET, address_bytes(SOURCE))
    reply = make_cookie_reply(DEVICE_INDEX, cookie, init.mac1, SERVER_PUB, COOKIE_NONCE)
    init2, init2_decoded = init_vector(cookie, TIMESTAMP + 1)

    up = SessionKeys(SERVER_INDEX, SERVER_INDEX, send=CipherState(key=k_ds), recv=CipherState(key=k_sd), created=0)
    down = SessionKeys(DEVICE_INDEX, DEVICE_INDEX, send=CipherState(key=k_sd), recv=CipherState(key=k_ds), created=0)
    keepalive, keepalive_decoded = transport(up, 0, b"")
    hello, hello_decoded = transport(up, 1, b"hello, loa")
    volume, volume_decoded = transport(down, 0, VOLUME_80)
    biggest, biggest_decoded = transport(down, 2**60 - 1, bytes(1168))

    wrong_key_init, _ = build_init(device_static=DEVICE_STATIC, server_pub=x25519_public(OTHER_SERVER_STATIC),
                                   ephemeral=DEVICE_EPHEMERAL, sender_index=DEVICE_INDEX, timestamp=TIMESTAMP,
                                   boot=DEVICE_BOOT, cookie=None, server_mac1_key=mac1_key(SERVER_PUB))
    replayed, _ = transport(up, 3, b"seen before")
    too_old, _ = transport(up, 100, b"")
    unknown_index = Transport(SERVER_INDEX ^ 0xFFFFFFFF, hello.counter, hello.ciphertext).to_bytes()

    server_ctx = {"receiver": "server"}
    device_ctx = {"receiver": "device"}
    to_server = {"receiver": "transport", "direction": "device_to_server"}
    to_device = {"receiver": "transport", "direction": "server_to_device"}

    def ok(vid: str, description: str, data: bytes, decoded: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        return {"id": vid, "description": description, "context": ctx, "hex": data.hex(), "decoded": decoded}

    def err(vid: str, description: str, data: bytes, error: str, ctx: dict[str, Any] | None = None) -> dict[str, Any]:
        vector: dict[str, Any] = {"id": vid, "description": description, "hex": data.hex(), "error": error}
        if ctx is not None:
            vector["context"] = ctx
        return vector

    response_bytes, reply_bytes = response.to_bytes(), reply.to_bytes()
    notice_ctx = {"receiver": "notice"}
    the_notice_key = notice_key(SERVER_STATIC, DEVICE_PUB)
    notice = encode_notice(the_notice_key, SERVER_BOOT, NOTICE_NEW_BOOT)
    same_boot = notice[:8] + notice[4:8]
    same_boot += hashlib.blake2s(same_boot, key=the_notice_key, digest_size=16).digest()
    vectors = [
        ok("session.init", "HandshakeInit without a cookie (mac2 zero); the server decrypts the device key, "
           "timestamp and boot", init_bytes, init_decoded, server_ctx),
        ok("session.init.mac2", "HandshakeInit carrying mac2 made with the cookie of session.cookie_reply, one "
           "nanosecond later", init2.to_bytes(), init2_decoded, server_ctx | {"cookie": cookie.hex()}),
        ok("session.response", "HandshakeResponse to session.init; after it both sides Split() into k_ds, k_sd",
           response_bytes, {
               "type": "HandshakeResponse",
               "sender_index": response.sender_index,
               "receiver_index": response.receiver_index,
               "ephemeral": response.ephemeral.hex(),
               "encrypted_payload": response.encrypted_payload.hex(),
               "mac1": response.mac1.hex(),
               "mac2": response.mac2.hex(),
               "boot": SERVER_BOOT,
               "k_ds": k_ds.hex(),
               "k_sd": k_sd.hex(),
           }, device_ctx),
        ok("session.cookie_reply", "CookieReply to session.init from source_address; the cookie is "
           "MAC(cookie_secret, address) and is sealed with the init's mac1 as AD", reply_bytes, {
               "type": "CookieReply",
               "receiver_index": reply.receiver_index,
               "nonce": reply.nonce.hex(),
               "encrypted_cookie": reply.encrypted_cookie.hex(),
               "cookie": cookie.hex(),
           }, device_ctx),
        ok("session.transport.keepalive", "the device's first transport message: an empty keepalive, counter 0",
           keepalive.to_bytes(), keepalive_decoded, to_server),
        ok("session.transport.message", "a device-to-server message, counter 1", hello.to_bytes(), hello_decoded,
           to_server),
        ok("session.transport.volume", "the server's first message: the volume example of section 4.2",
           volume.to_bytes(), volume_decoded, to_device),
        ok("session.transport.largest", "the largest transport (1200 bytes) with the last counter a sender may use",
           biggest.to_bytes(), biggest_decoded, to_device),
        err("session.err.truncated.header", "three bytes: shorter than the header", bytes.fromhex("040100"),
            "TruncatedError"),
        err("session.err.truncated.init", "session.init without its last byte", init_bytes[:-1], "TruncatedError"),
        err("session.err.truncated.response", "session.response without its last byte", response_bytes[:-1],
            "TruncatedError"),
        err("session.err.truncated.cookie_reply", "session.cookie_reply without its last byte", reply_bytes[:-1],
            "TruncatedError"),
        err("session.err.truncated.transport", "session.transport.keepalive without its last byte",
            keepalive.to_bytes()[:-1], "TruncatedError"),
        err("session.err.length.init", "session.init with a trailing zero byte", init_bytes + b"\x00",
            "BadLengthError"),
        err("session.err.length.response", "session.response with a trailing zero byte", response_bytes + b"\x00",
            "BadLengthError"),
        err("session.err.length.cookie_reply", "session.cookie_reply with a trailing zero byte",
            reply_bytes + b"\x00", "BadLengthError"),
        err("session.err.oversize", "a 1201-byte transport", biggest.to_bytes() + b"\x00", "OversizeError"),
        err("session.err.version", "session.init with version 2", init_bytes[:1] + b"\x02" + init_bytes[2:],
            "UnknownVersionError"),
        err("session.err.type.07", "type 0x07 (0x05 is an alert beacon, section 6.4.2, and 0x06 a restart notice, "
            "section 3.16: neither is a handshake or transport datagram)", bytes.fromhex("07010000") + bytes(28),
            "UnknownTypeError"),
        err("session.err.type.00", "type 0x00", bytes.fromhex("00010000") + bytes(28), "UnknownTypeError"),
        err("session.err.reserved", "session.transport.keepalive with reserved = 00 01",
            keepalive.to_bytes()[:3] + b"\x01" + keepalive.to_bytes()[4:], "ReservedBitsError"),
        err("session.err.init.mac1", "session.init with one bit of mac1 flipped", flip(init_bytes, 116),
            "BadMacError", server_ctx),
        err("session.err.init.wrong_server_key", "an init encrypted to another server key (its mac1 is right for "
            "this server)", wrong_key_init.to_bytes(), "AuthError", server_ctx),
        err("session.err.init.unknown_device", "session.init at a server that has not enrolled the device",
            init_bytes, "UnknownKeyError", server_ctx | {"enrolled": []}),
        err("session.err.init.stale_timestamp", "session.init at a server that already accepted this timestamp",
            init_bytes, "ReplayError", server_ctx | {"stored_timestamp": TIMESTAMP}),
        err("session.err.response.mac1", "session.response with one bit of mac1 flipped", flip(response_bytes, 64),
            "BadMacError", device_ctx),
        err("session.err.response.tag", "session.response with one bit of its payload tag flipped (mac1 "
            "recomputed)", _remac_response(flip(response_bytes, 63)), "AuthError", device_ctx),
        err("session.err.cookie_reply.tag", "session.cookie_reply with one bit of the sealed cookie flipped",
            flip(reply_bytes, 51), "AuthError", device_ctx),
        err("session.err.transport.tag", "session.transport.message with one bit of its tag flipped",
            flip(hello.to_bytes(), len(hello.to_bytes()) - 1), "AuthError", to_server),
        err("session.err.transport.counter", "session.transport.message with its counter changed to 2 (the "
            "counter is authenticated)", hello.to_bytes()[:15] + b"\x02" + hello.to_bytes()[16:], "AuthError",
            to_server),
        err("session.err.transport.replay", "counter 3, already marked in the window", replayed.to_bytes(),
            "ReplayError", to_server | {"window": {"greatest": 5, "seen": [1, 3]}}),
        err("session.err.transport.too_old", "counter 100 when 1200 is the greatest accepted: below the window",
            too_old.to_bytes(), "ReplayError", to_server | {"window": {"greatest": 1200, "seen": []}}),
        err("session.err.transport.index", "session.transport.message with a receiver index of no session",
            unknown_index, "UnknownKeyError", to_server),
        ok("session.notice", "a restart notice (section 3.16) from the restarted server: old_boot is server_boot, "
           "the boot of the device's current session; the mac is keyed BLAKE2s-128 under notice_key", notice, {
               "type": "RestartNotice",
               "old_boot": SERVER_BOOT,
               "new_boot": NOTICE_NEW_BOOT,
               "mac": notice[12:].hex(),
           }, notice_ctx),
        err("session.err.notice.mac", "session.notice with one bit of its mac flipped", flip(notice, 27),
            "BadMacError", notice_ctx),
        err("session.err.notice.boot", "session.notice at a device whose session is with another server boot "
            "(a notice of an earlier restart)", notice, "ReplayError", notice_ctx | {"server_boot": NOTICE_NEW_BOOT}),
        err("session.err.notice.same_boot", "a notice whose new boot is its old one (mac recomputed)", same_boot,
            "FieldError", notice_ctx),
        err("session.err.notice.wrong_key", "a notice made under another server's key", encode_notice(
            notice_key(OTHER_SERVER_STATIC, DEVICE_PUB), SERVER_BOOT, NOTICE_NEW_BOOT), "BadMacError", notice_ctx),
        err("session.err.notice.truncated", "session.notice without its last byte", notice[:-1], "TruncatedError",
            notice_ctx),
        err("session.err.notice.length", "session.notice with a trailing zero byte", notice + b"\x00",
            "BadLengthError", notice_ctx),
        err("session.err.notice.version", "session.notice with version 2", notice[:1] + b"\x02" + notice[2:],
            "UnknownVersionError", notice_ctx),
        err("session.err.notice.reserved", "session.notice with reserved = 00 01", notice[:3] + b"\x01" + notice[4:],
            "ReservedBitsError", notice_ctx),
    ]
    return {
        "name": "session",
        "description": "Session datagrams (types 0x01-0x04, and the restart notice 0x06): a full handshake with "
                       "fixed keys, a cookie reply, transport messages, a restart notice, and bad input with the "
                       "error a receiver counts. 'receiver' in a "
                       "vector's context says who checks it: 'server' (mac1, Noise message 1 with server_static, "
                       "enrolment, stored timestamp), 'device' (a device that sent session.init with "
                       "device_ephemeral), 'transport' (the key of 'direction', then the replay window), 'notice' "
                       "(a device whose current session is with a server of boot 'server_boot': section 3.16, "
                       "under notice_key), or "
                       "absent (structure only). Without 'enrolled' the device is enrolled; without "
                       "'stored_timestamp' none is stored; without 'window' nothing was accepted yet.",
        "spec": "PROTOCOL.md section 3; spec/parts/session.md",
        "context": {
            "protocol": NOISE_PROTOCOL,
            "prologue": PROLOGUE.hex(),
            "server_static_private": SERVER_STATIC.hex(),
            "server_static_public": SERVER_PUB.hex(),
            "device_static_private": DEVICE_STATIC.hex(),
            "device_static_public": DEVICE_PUB.hex(),
            "device_ephemeral_private": DEVICE_EPHEMERAL.hex(),
            "server_ephemeral_private": SERVER_EPHEMERAL.hex(),
            "device_sender_index": DEVICE_INDEX,
            "server_sender_index": SERVER_INDEX,
            "timestamp": TIMESTAMP,
            "device_boot": DEVICE_BOOT,
            "server_boot": SERVER_BOOT,
            "k_ds": k_ds.hex(),
            "k_sd": k_sd.hex(),
            "cookie_secret": COOKIE_SECRET.hex(),
            "source_address": list(SOURCE),
            "cookie_nonce": COOKIE_NONCE.hex(),
            "mac1_key_server": mac1_key(SERVER_PUB).hex(),
            "mac1_key_device": mac1_key(DEVICE_PUB).hex(),
            "cookie_key": cookie_key(SERVER_PUB).hex(),
            "notice_key": notice_key(SERVER_STATIC, DEVICE_PUB).hex(),
            "notice_new_boot": NOTICE_NEW_BOOT,
        },
        "vectors": vectors,
    }


def _remac_response(data: bytes) -> bytes:
    return data[:64] + mac(mac1_key(DEVICE_PUB), data[:64]) + data[80:]


def main() -> None:
    document = build()
    OUT.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {OUT.name}: {len(document['vectors'])} vectors")


if __name__ == "__main__":
    main()
