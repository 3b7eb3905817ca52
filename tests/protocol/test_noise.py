"""Noise (loa.protocol.noise) against the cacophony vectors, and X25519 against RFC 7748."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loa.protocol.errors import AuthError, LocalProtocolError, TruncatedError
from loa.protocol.noise import CipherState, HandshakeState, dh, x25519_public

DATA = Path(__file__).parent / "data" / "noise-cacophony-ik.json"
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "vectors" / "noise-cacophony-25519.json"

IK_VECTORS: list[dict[str, Any]] = json.loads(DATA.read_text())["vectors"]


def _hex(vector: dict[str, Any], key: str) -> bytes | None:
    value = vector.get(key)
    return bytes.fromhex(value) if value else None


def run_vector(vector: dict[str, Any]) -> None:
    """Reproduce every handshake and transport message of a cacophony vector, both ways, byte for byte."""
    name = vector["protocol_name"]
    init = HandshakeState(name, initiator=True, prologue=_hex(vector, "init_prologue") or b"",
                          s=_hex(vector, "init_static"), e=_hex(vector, "init_ephemeral"),
                          rs=_hex(vector, "init_remote_static"))
    resp = HandshakeState(name, initiator=False, prologue=_hex(vector, "resp_prologue") or b"",
                          s=_hex(vector, "resp_static"), e=_hex(vector, "resp_ephemeral"),
                          rs=_hex(vector, "resp_remote_static"))
    ciphers: tuple[tuple[CipherState, CipherState], tuple[CipherState, CipherState]] | None = None
    for number, message in enumerate(vector["messages"]):
        payload, expected = bytes.fromhex(message["payload"]), bytes.fromhex(message["ciphertext"])
        initiator_sends = number % 2 == 0
        if ciphers is None:
            writer, reader = (init, resp) if initiator_sends else (resp, init)
            assert writer.write_message(payload) == expected, f"{name} message {number}"
            assert reader.read_message(expected) == payload
            if init.complete:
                assert resp.complete
                assert init.handshake_hash.hex() == vector["handshake_hash"]
                assert resp.handshake_hash == init.handshake_hash
                ciphers = (init.split(), resp.split())
        else:
            (i_send, i_recv), (r_recv, r_send) = ciphers
            sender, receiver = (i_send, r_recv) if initiator_sends else (r_send, i_recv)
            assert sender.encrypt_with_ad(b"", payload) == expected, f"{name} transport {number}"
            assert receiver.decrypt_with_ad(b"", expected) == payload


def test_the_copy_names_its_source() -> None:
    document = json.loads(DATA.read_text())
    assert "cacophony" in document["source"]
    assert {v["protocol_name"] for v in IK_VECTORS} == {
        f"Noise_IK_25519_{c}_{h}" for c in ("ChaChaPoly", "AESGCM") for h in ("BLAKE2s", "BLAKE2b", "SHA256", "SHA512")
    }


@pytest.mark.parametrize("vector", IK_VECTORS, ids=lambda v: v["protocol_name"])
def test_ik_vectors(vector: dict[str, Any]) -> None:
    run_vector(vector)


def _shared_vectors() -> list[dict[str, Any]]:
    if not SHARED.is_file():
        return []
    vectors: list[dict[str, Any]] = json.loads(SHARED.read_text())["vectors"]
    return [v for v in vectors if "psk" not in v["protocol_name"]]


@pytest.mark.skipif(not SHARED.is_file(), reason="../shared/vectors/noise-cacophony-25519.json is absent (a plain "
                    "clone has no ../shared); the IK vectors are still checked from tests/protocol/data")
@pytest.mark.parametrize("vector", _shared_vectors(), ids=lambda v: v["protocol_name"])
def test_every_non_psk_25519_vector_in_shared(vector: dict[str, Any]) -> None:
    run_vector(vector)


@pytest.mark.skipif(not SHARED.is_file(), reason="../shared/vectors is absent")
def test_the_copy_equals_the_shared_ik_vectors() -> None:
    shared = [v for v in json.loads(SHARED.read_text())["vectors"] if v["protocol_name"].startswith("Noise_IK_25519")]
    assert shared == IK_VECTORS


@pytest.mark.parametrize(
    ("scalar", "u", "out"),
    [  # RFC 7748 section 5.2
        ("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
         "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
         "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"),
        ("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
         "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
         "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"),
    ],
)
def test_x25519_rfc7748_section_5_2(scalar: str, u: str, out: str) -> None:
    assert dh(bytes.fromhex(scalar), bytes.fromhex(u)).hex() == out


def test_x25519_rfc7748_section_5_2_iterated() -> None:
    k = u = (9).to_bytes(32, "little")
    for i in range(1000):
        k, u = dh(k, u), k
        if i == 0:
            assert k.hex() == "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"
    assert k.hex() == "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"


def test_x25519_rfc7748_section_6_1() -> None:
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    alice_pub, bob_pub = x25519_public(alice), x25519_public(bob)
    assert alice_pub.hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert bob_pub.hex() == "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert dh(alice, bob_pub).hex() == shared
    assert dh(bob, alice_pub).hex() == shared


def test_low_order_peer_key_is_an_auth_error() -> None:
    with pytest.raises(AuthError):
        dh(bytes(range(32)), bytes(32))


def _ik_pair() -> tuple[HandshakeState, HandshakeState]:
    server = bytes(range(32))
    init = HandshakeState("Noise_IK_25519_ChaChaPoly_BLAKE2s", initiator=True, prologue=b"loa/1",
                          s=bytes(range(1, 33)), e=bytes(range(2, 34)), rs=x25519_public(server))
    resp = HandshakeState("Noise_IK_25519_ChaChaPoly_BLAKE2s", initiator=False, prologue=b"loa/1", s=server,
                          e=bytes(range(3, 35)))
    return init, resp


def test_failed_read_leaves_the_handshake_unchanged() -> None:
    init, resp = _ik_pair()
    message = init.write_message(b"payload")
    corrupted = message[:-1] + bytes([message[-1] ^ 1])
    with pytest.raises(AuthError):
        resp.read_message(corrupted)
    with pytest.raises(TruncatedError):
        resp.read_message(message[:40])
    assert resp.read_message(message) == b"payload"
    reply = resp.write_message(b"")
    with pytest.raises(AuthError):
        init.read_message(reply[:-1] + b"\x00")
    assert init.read_message(reply) == b""
    assert init.handshake_hash == resp.handshake_hash


def test_misuse_is_local() -> None:
    init, resp = _ik_pair()
    with pytest.raises(LocalProtocolError):
        init.read_message(b"")
    with pytest.raises(LocalProtocolError):
        resp.write_message(b"")
    with pytest.raises(LocalProtocolError):
        init.split()
    with pytest.raises(LocalProtocolError):
        HandshakeState("Noise_IK_448_ChaChaPoly_BLAKE2s", initiator=True)
    with pytest.raises(LocalProtocolError):
        CipherState("ChaChaPoly", bytes(32)).encrypt_at(2**64 - 1, b"", b"")


def test_explicit_nonces_are_the_implicit_ones() -> None:
    key = bytes(range(32))
    implicit, explicit = CipherState("ChaChaPoly", key), CipherState("ChaChaPoly", key)
    for n in range(3):
        assert implicit.encrypt_with_ad(b"ad", b"x") == explicit.encrypt_at(n, b"ad", b"x")
    assert explicit.decrypt_at(1, b"ad", explicit.encrypt_at(1, b"ad", b"y")) == b"y"
    with pytest.raises(AuthError):
        explicit.decrypt_at(2, b"ad", explicit.encrypt_at(1, b"ad", b"y"))
