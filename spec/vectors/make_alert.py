"""Write spec/vectors/alert.json: signed alert and cancel vectors (PROTOCOL.md sections 6.4-6.5). Deterministic.

The authority key is RFC 8032 section 7.1 TEST 1; the untrusted key is TEST 2. Ed25519 signatures are
deterministic, so the file is the same on every run.

Run: python spec/vectors/make_alert.py
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from loa.protocol import control as c
from loa.protocol.alert import ALERT_CONTEXT, CANCEL_CONTEXT, Alert, AlertCancel, key_id, sign_alert, sign_cancel
from loa.protocol.beacon import encode_beacon

OUT = pathlib.Path(__file__).with_name("alert.json")
SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
OTHER_SECRET = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
KEY = Ed25519PrivateKey.from_private_bytes(SECRET)
OTHER = Ed25519PrivateKey.from_private_bytes(OTHER_SECRET)
PUBLIC = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
KID = key_id(PUBLIC)
OTHER_KID = key_id(OTHER.public_key())
NOW = 1_750_000_000_000_000_000
S = 10**9
ZONE_PATH = ["79", "760", "26734", "26734-03"]

ALERT = Alert(
    id="79-2025-0001",
    kid=KID,
    status="actual",
    cls=2,
    lvl=2,
    zones=("760", "761"),
    issued=NOW - 60 * S,
    expires=NOW + 3600 * S,
    bid=4244,
    text="Bão số 1: người dân vùng ven biển di chuyển đến nơi an toàn.",
)
CANCEL = AlertCancel(kid=KID, cancel="79-2025-0001", issued=NOW + 5 * S)


def pk(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def alert_map(alert: Alert) -> dict[str, Any]:
    out = {
        "bid": alert.bid,
        "cls": alert.cls,
        "expires": alert.expires,
        "id": alert.id,
        "issued": alert.issued,
        "kid": alert.kid,
        "lvl": alert.lvl,
        "status": alert.status,
    }
    if alert.text is not None:
        out["text"] = alert.text
    out.update({"v": alert.v, "zones": list(alert.zones)})
    return out


def cancel_map(cancel: AlertCancel) -> dict[str, Any]:
    return {"cancel": cancel.cancel, "issued": cancel.issued, "kid": cancel.kid, "v": cancel.v}


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def message(kind: str, body: bytes, sig: bytes) -> bytes:
    if kind == "beacon":
        return encode_beacon(body, sig)
    if kind == "alert":
        return c.encode(c.SignedAlert(body=body, sig=sig, id=1))
    return c.encode(c.SignedAlertCancel(body=body, sig=sig, id=1))


def vector(vid: str, description: str, kind: str, body: bytes, sig: bytes, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"alert.{vid}",
        "description": description,
        "kind": kind,
        "hex": message(kind, body, sig).hex(),
        "body": body.hex(),
        "sig": sig.hex(),
        **extra,
    }


def raw_sign(key: Ed25519PrivateKey, context: bytes, body: bytes) -> bytes:
    return key.sign(context + body)


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def raw_beacon(vid: str, description: str, data: bytes, body: bytes, sig: bytes, *, error: str) -> dict[str, Any]:
    """A beacon vector whose datagram is given as bytes (a structure no encoder writes)."""
    return {"id": f"alert.{vid}", "description": description, "kind": "beacon", "hex": data.hex(),
            "body": body.hex(), "sig": sig.hex(), "error": error}


def beacons(body: bytes, sig: bytes) -> list[dict[str, Any]]:
    """Section 6.4.2: the first alert as a beacon datagram, and beacons every device must drop."""
    good = encode_beacon(body, sig)
    wrong_zone = dataclasses.replace(ALERT, zones=("01",), id="79-2025-0009")
    return [
        vector("beacon", "the first alert as a beacon (type 0x05): body_len, body, signature", "beacon", body, sig,
               decoded=jsonable(alert_map(ALERT))),
        vector("err.beacon_bad_signature", "a beacon with one bit of its signature flipped", "beacon", body,
               flip(sig, 0), error="SignatureError"),
        vector("err.beacon_wrong_zone", "a genuine beacon for a zone off the device's path", "beacon",
               *sign_alert(wrong_zone, KEY), error="WrongZoneError"),
        raw_beacon("err.beacon_truncated", "a beacon one byte shorter than 70 + body_len", good[:-1], body, sig,
                   error="TruncatedError"),
        raw_beacon("err.beacon_trailing_byte", "a beacon with one byte after its signature", good + b"\x00", body,
                   sig, error="BadLengthError"),
        raw_beacon("err.beacon_version", "a beacon with version 2", good[:1] + b"\x02" + good[2:], body, sig,
                   error="UnknownVersionError"),
        raw_beacon("err.beacon_reserved", "a beacon with a reserved bit set", good[:3] + b"\x01" + good[4:], body,
                   sig, error="ReservedBitsError"),
        raw_beacon("err.beacon_empty_body", "a beacon whose body_len is 0", good[:4] + b"\x00\x00" + good[6:],
                   body, sig, error="BadLengthError"),
        raw_beacon("err.beacon_short", "five bytes of a beacon", good[:5], body, sig, error="TruncatedError"),
    ]


def main() -> None:
    vectors: list[dict[str, Any]] = []
    body, sig = sign_alert(ALERT, KEY)
    vectors.append(
        vector(
            "actual",
            "an actual emergency alert from the province to two districts",
            "alert",
            body,
            sig,
            decoded=jsonable(alert_map(ALERT)),
        )
    )
    exercise = Alert(
        id="79-2025-X07",
        kid=KID,
        status="exercise",
        cls=2,
        lvl=0,
        zones=("26734-03",),
        issued=NOW,
        expires=NOW + 600 * S,
        bid=4245,
    )
    b2, s2 = sign_alert(exercise, KEY)
    vectors.append(
        vector(
            "exercise",
            "an exercise alert from the commune to one hamlet, without text",
            "alert",
            b2,
            s2,
            decoded=jsonable(alert_map(exercise)),
        )
    )
    cb, cs = sign_cancel(CANCEL, KEY)
    vectors.append(
        vector("cancel", "a cancel of the first alert", "cancel", cb, cs, decoded=jsonable(cancel_map(CANCEL)))
    )

    dup = b"\x8c" + pk("zones") + pk(["01"]) + pk(alert_map(ALERT))[1:]
    missing = pk({k: v for k, v in alert_map(ALERT).items() if k != "expires"})
    backwards = pk({**alert_map(ALERT), "expires": ALERT.issued})
    version2 = pk({**alert_map(ALERT), "v": 2})
    errors: list[dict[str, Any]] = [
        vector(
            "err.bad_signature",
            "the signature with one bit flipped",
            "alert",
            body,
            flip(sig, 10),
            error="SignatureError",
        ),
        vector(
            "err.body_changed",
            "the body with one bit flipped in its last zone code",
            "alert",
            flip(body, len(body) - 3),
            sig,
            error="SignatureError",
        ),
        vector(
            "err.wrong_context",
            "an alert body signed with the cancel context",
            "alert",
            body,
            raw_sign(KEY, CANCEL_CONTEXT, body),
            error="SignatureError",
        ),
        vector(
            "err.unknown_kid",
            "signed by a key the device does not trust (RFC 8032 TEST 2)",
            "alert",
            *sign_alert(Alert(**{**alert_map(ALERT), "kid": OTHER_KID, "zones": ("760",)}), OTHER),
            error="UnknownKeyError",
        ),
        vector(
            "err.expired",
            "verified after it expired",
            "alert",
            body,
            sig,
            error="ExpiredError",
            context={"now": ALERT.expires},
        ),
        vector(
            "err.future",
            "issued 31 s after the device's now",
            "alert",
            *sign_alert(Alert(**{**alert_map(ALERT), "zones": ("760",), "issued": NOW + 31 * S}), KEY),
            error="ExpiredError",
        ),
        vector(
            "err.wrong_zone",
            "addressed to another province",
            "alert",
            *sign_alert(Alert(**{**alert_map(ALERT), "zones": ("01",)}), KEY),
            error="WrongZoneError",
        ),
        vector(
            "err.replayed",
            "an alert id the device accepted before",
            "alert",
            body,
            sig,
            error="ReplayError",
            context={"seen": [[KID.hex(), ALERT.id]]},
        ),
        vector(
            "err.malformed_body",
            "a signed body that is not msgpack",
            "alert",
            b"\xc1",
            raw_sign(KEY, ALERT_CONTEXT, b"\xc1"),
            error="MalformedError",
        ),
        vector(
            "err.duplicate_key",
            "a signed body with the key zones twice",
            "alert",
            dup,
            raw_sign(KEY, ALERT_CONTEXT, dup),
            error="MalformedError",
        ),
        vector(
            "err.missing_field",
            "a signed body without expires",
            "alert",
            missing,
            raw_sign(KEY, ALERT_CONTEXT, missing),
            error="FieldError",
        ),
        vector(
            "err.expires_before_issued",
            "a signed body whose expires is not after issued",
            "alert",
            backwards,
            raw_sign(KEY, ALERT_CONTEXT, backwards),
            error="FieldError",
        ),
        vector(
            "err.version",
            "a signed body of version 2",
            "alert",
            version2,
            raw_sign(KEY, ALERT_CONTEXT, version2),
            error="UnknownVersionError",
        ),
        vector(
            "err.cancel_bad_signature",
            "a cancel with one bit of its signature flipped",
            "cancel",
            cb,
            flip(cs, 0),
            error="SignatureError",
        ),
        vector(
            "err.cancel_alert_context",
            "a cancel body signed with the alert context",
            "cancel",
            cb,
            raw_sign(KEY, ALERT_CONTEXT, cb),
            error="SignatureError",
        ),
        vector(
            "err.cancel_future",
            "a cancel issued 31 s after the device's now",
            "cancel",
            *sign_cancel(AlertCancel(kid=KID, cancel=ALERT.id, issued=NOW + 31 * S), KEY),
            error="ExpiredError",
        ),
        vector(
            "err.cancel_unknown_kid",
            "a cancel signed by an untrusted key",
            "cancel",
            *sign_cancel(AlertCancel(kid=OTHER_KID, cancel=ALERT.id, issued=NOW), OTHER),
            error="UnknownKeyError",
        ),
    ]
    vectors += errors
    vectors += beacons(body, sig)
    doc = {
        "name": "alert",
        "description": "Signed alerts and cancels. 'hex' is the alert or alert_cancel control message (id 1), or "
        "for kind 'beacon' the alert beacon datagram (type 0x05); 'body' and 'sig' are its fields. Verify "
        "'body'/'sig' with the context: now (server time, ns), zone_path "
        "(the device's config zones), trusted_keys (kid -> Ed25519 public key), seen ([kid, alert id] pairs "
        "already accepted). Valid vectors decode to 'decoded' and re-sign with authority_secret to the same "
        "bytes; invalid ones fail with 'error'.",
        "spec": "PROTOCOL.md sections 6.4, 6.4.2, 6.5",
        "context": {
            "authority_secret": SECRET.hex(),
            "authority_public": PUBLIC.hex(),
            "kid": KID.hex(),
            "now": NOW,
            "zone_path": ZONE_PATH,
            "trusted_keys": {KID.hex(): PUBLIC.hex()},
            "seen": [],
        },
        "vectors": vectors,
    }
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
