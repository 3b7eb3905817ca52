"""Signed alerts (spec sections 6.4-6.5): Ed25519 against RFC 8032, canonical bodies, the order of checks."""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from loa.protocol.alert import (
    ALERT_CONTEXT,
    CANCEL_CONTEXT,
    Alert,
    AlertCancel,
    decode_alert,
    encode_alert,
    key_id,
    should_play,
    sign_alert,
    sign_cancel,
    verify_alert,
    verify_cancel,
)
from loa.protocol.errors import (
    ExpiredError,
    FieldError,
    LocalProtocolError,
    MalformedError,
    OversizeError,
    ReplayError,
    SignatureError,
    UnknownKeyError,
    UnknownVersionError,
    WrongZoneError,
)

# RFC 8032 section 7.1: (secret key, public key, message, signature)
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        (
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24"
            "655141438e7a100b"
        ),
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        (
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb0"
            "0d291612bb0c00"
        ),
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        (
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28d"
            "c027beceea1ec40a"
        ),
    ),
    (
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        hashlib.sha512(b"abc").hexdigest(),
        (
            "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9b"
            "ef1177331a704"
        ),
    ),
]


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032, ids=["1", "2", "3", "sha_abc"])
def test_ed25519_rfc8032_section_7_1(secret: str, public: str, message: str, signature: str) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    assert key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex() == public
    assert key.sign(bytes.fromhex(message)).hex() == signature
    key.public_key().verify(bytes.fromhex(signature), bytes.fromhex(message))


KEY = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC8032[0][0]))
PUBLIC = bytes.fromhex(RFC8032[0][1])
KID = key_id(PUBLIC)
OTHER = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC8032[1][0]))
TRUSTED = {KID: PUBLIC}
NOW = 1_750_000_000_000_000_000
S = 10**9
PATH = ("79", "760", "26734", "26734-03")


def make_alert(**changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "id": "a-1",
        "kid": KID,
        "status": "actual",
        "cls": 2,
        "lvl": 2,
        "zones": ("760",),
        "issued": NOW - S,
        "expires": NOW + 600 * S,
        "bid": 7,
        "text": "Lũ quét",
    }
    fields.update(changes)
    return Alert(**fields)


def verify(body: bytes, sig: bytes, **changes: Any) -> Alert:
    context: dict[str, Any] = {"trusted_keys": TRUSTED, "now": NOW, "zone_path": PATH, "seen_ids": set()}
    context.update(changes)
    trusted = context.pop("trusted_keys")
    return verify_alert(body, sig, trusted, **context)


def test_kid_is_blake2s_prefix_of_the_public_key() -> None:
    assert hashlib.blake2s(PUBLIC).digest()[:8] == KID
    assert key_id(KEY.public_key()) == KID
    with pytest.raises(LocalProtocolError):
        key_id(b"short")


def test_canonical_body_sorts_keys_and_uses_shortest_integers() -> None:
    body = encode_alert(make_alert())
    fields = msgpack.unpackb(body, raw=False)
    assert list(fields) == sorted(fields, key=str.encode)
    assert msgpack.packb(fields, use_bin_type=True) == body
    assert decode_alert(body) == make_alert()
    assert "text" not in msgpack.unpackb(encode_alert(make_alert(text=None)), raw=False)


def test_sign_and_verify() -> None:
    alert = make_alert()
    body, sig = sign_alert(alert, KEY)
    KEY.public_key().verify(sig, ALERT_CONTEXT + body)
    assert verify(body, sig) == alert
    assert verify(body, sig, trusted_keys={KID: KEY.public_key()}) == alert


def test_signer_refuses_bad_alerts_and_a_foreign_kid() -> None:
    with pytest.raises(LocalProtocolError, match="kid"):
        sign_alert(make_alert(), OTHER)
    with pytest.raises(LocalProtocolError):
        sign_alert(make_alert(cls=3), KEY)
    with pytest.raises(LocalProtocolError):
        sign_alert(make_alert(expires=NOW - S), KEY)
    with pytest.raises(LocalProtocolError):
        sign_alert(make_alert(zones=()), KEY)


@pytest.mark.parametrize(
    ("changes", "context", "error"),
    [
        ({"kid": key_id(OTHER.public_key())}, {}, UnknownKeyError),
        ({}, {"now": NOW + 600 * S}, ExpiredError),
        ({"issued": NOW + 31 * S}, {}, ExpiredError),
        ({"zones": ("01", "02")}, {}, WrongZoneError),
        ({}, {"zone_path": ()}, WrongZoneError),
        ({}, {"seen_ids": {(KID, "a-1")}}, ReplayError),
    ],
)
def test_each_check(changes: dict[str, Any], context: dict[str, Any], error: type[Exception]) -> None:
    alert = make_alert(**changes)
    signer = OTHER if "kid" in changes else KEY
    body, sig = sign_alert(alert, signer)
    with pytest.raises(error):
        verify(body, sig, **context)


def test_boundaries_of_the_time_checks() -> None:
    body, sig = sign_alert(make_alert(issued=NOW + 30 * S, expires=NOW + 31 * S), KEY)
    assert verify(body, sig).issued == NOW + 30 * S
    with pytest.raises(ExpiredError):
        verify(body, sig, now=NOW + 31 * S)
    assert verify(body, sig, now=NOW + 31 * S - 1)


def test_checks_run_in_the_order_of_the_spec() -> None:
    bad = make_alert(kid=key_id(OTHER.public_key()), zones=("01",), expires=NOW - 1, issued=NOW - 2)
    body, sig = sign_alert(bad, OTHER)
    with pytest.raises(UnknownKeyError):
        verify(body, sig)
    body, sig = sign_alert(make_alert(zones=("01",), expires=NOW - 1, issued=NOW - 2), KEY)
    with pytest.raises(SignatureError):
        verify(body, bytes(64))
    with pytest.raises(ExpiredError):
        verify(body, sig, seen_ids={(KID, "a-1")})
    body, sig = sign_alert(make_alert(zones=("01",)), KEY)
    with pytest.raises(WrongZoneError):
        verify(body, sig, seen_ids={(KID, "a-1")})


def test_malformed_bodies() -> None:
    def signed(body: bytes) -> tuple[bytes, bytes]:
        return body, KEY.sign(ALERT_CONTEXT + body)

    fields = msgpack.unpackb(encode_alert(make_alert()), raw=False)
    with pytest.raises(MalformedError):
        verify(*signed(b"\x93\x01\x02\x03"))
    with pytest.raises(MalformedError):
        verify(*signed(encode_alert(make_alert()) + b"\x00"))
    with pytest.raises(OversizeError):
        verify(*signed(msgpack.packb({**fields, "text": "x" * 600})))
    with pytest.raises(FieldError):
        verify(*signed(msgpack.packb({k: v for k, v in fields.items() if k != "bid"})))
    with pytest.raises(FieldError):
        verify(*signed(msgpack.packb({**fields, "kid": "not bin"})))
    with pytest.raises(UnknownVersionError):
        verify(*signed(msgpack.packb({**fields, "v": 2})))
    with pytest.raises(SignatureError):
        verify(encode_alert(make_alert()), b"\x00" * 63)


def test_unknown_fields_are_accepted_as_signed() -> None:
    fields = msgpack.unpackb(encode_alert(make_alert()), raw=False)
    body = msgpack.packb({**fields, "area": "polygon"}, use_bin_type=True)
    assert verify(body, KEY.sign(ALERT_CONTEXT + body)) == make_alert()


def test_cancel() -> None:
    cancel = AlertCancel(kid=KID, cancel="a-1", issued=NOW)
    body, sig = sign_cancel(cancel, KEY)
    assert verify_cancel(body, sig, TRUSTED, now=NOW) == cancel
    with pytest.raises(ExpiredError):
        verify_cancel(body, sig, TRUSTED, now=NOW - 31 * S)
    with pytest.raises(SignatureError):
        verify_cancel(body, KEY.sign(ALERT_CONTEXT + body), TRUSTED, now=NOW)
    with pytest.raises(UnknownKeyError):
        verify_cancel(body, sig, {}, now=NOW)
    alert_body, _ = sign_alert(make_alert(), KEY)
    with pytest.raises(SignatureError):
        verify(alert_body, KEY.sign(CANCEL_CONTEXT + alert_body))


def test_exercise_and_test_play_only_when_configured() -> None:
    assert should_play(make_alert(), exercise=False)
    for status in ("exercise", "test"):
        assert not should_play(make_alert(status=status), exercise=False)
        assert should_play(make_alert(status=status), exercise=True)


BODY, SIG = sign_alert(make_alert(), KEY)


def test_every_single_bit_flip_of_the_body_is_rejected() -> None:
    for bit in range(len(BODY) * 8):
        body = bytearray(BODY)
        body[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(
            (SignatureError, UnknownKeyError, MalformedError, FieldError, OversizeError, UnknownVersionError)
        ):
            verify(bytes(body), SIG)


def test_every_single_bit_flip_of_the_signature_is_a_signature_error() -> None:
    for bit in range(len(SIG) * 8):
        sig = bytearray(SIG)
        sig[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(SignatureError):
            verify(BODY, bytes(sig))
