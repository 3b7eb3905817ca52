"""spec/vectors/alert.json: signed alerts and cancels verify to their contents, re-sign to their bytes, or fail."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loa.protocol import control as c
from loa.protocol.alert import Alert, AlertCancel, sign_alert, sign_cancel, verify_alert, verify_cancel
from loa.protocol.beacon import encode_beacon, parse_beacon
from loa.protocol.errors import error_by_name

VECTORS_FILE = pathlib.Path(__file__).parents[2] / "spec" / "vectors" / "alert.json"
DOC = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))


def from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return bytes.fromhex(value["$bin"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(from_json(v) for v in value)
    return value


def check(vector: dict[str, Any]) -> Alert | AlertCancel:
    context = {**DOC["context"], **vector.get("context", {})}
    trusted = {bytes.fromhex(k): bytes.fromhex(v) for k, v in context["trusted_keys"].items()}
    seen = {(bytes.fromhex(kid), alert_id) for kid, alert_id in context["seen"]}
    if vector["kind"] == "beacon":  # section 6.4.2: the datagram, then the alert it carries
        body, sig = parse_beacon(bytes.fromhex(vector["hex"]))
        assert (body.hex(), sig.hex()) == (vector["body"], vector["sig"])
        return verify_alert(body, sig, trusted, now=context["now"], zone_path=context["zone_path"], seen_ids=seen)
    message = c.decode(bytes.fromhex(vector["hex"]))
    assert isinstance(message, c.SignedAlert | c.SignedAlertCancel)
    assert (message.body.hex(), message.sig.hex()) == (vector["body"], vector["sig"])
    if vector["kind"] == "alert":
        assert isinstance(message, c.SignedAlert)
        return verify_alert(
            message.body, message.sig, trusted, now=context["now"], zone_path=context["zone_path"], seen_ids=seen
        )
    assert isinstance(message, c.SignedAlertCancel)
    return verify_cancel(message.body, message.sig, trusted, now=context["now"])


def test_file_shape() -> None:
    assert DOC["name"] == "alert"
    ids = [v["id"] for v in DOC["vectors"]]
    assert len(ids) == len(set(ids))
    errors = {v["error"] for v in DOC["vectors"] if "error" in v}
    assert errors >= {
        "SignatureError",
        "UnknownKeyError",
        "ExpiredError",
        "WrongZoneError",
        "ReplayError",
        "MalformedError",
        "FieldError",
    }


VALID = [v for v in DOC["vectors"] if "error" not in v]
INVALID = [v for v in DOC["vectors"] if "error" in v]


@pytest.mark.parametrize("vector", VALID, ids=[v["id"] for v in VALID])
def test_valid_vector(vector: dict[str, Any]) -> None:
    result = check(vector)
    decoded = from_json(vector["decoded"])
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(DOC["context"]["authority_secret"]))
    if vector["kind"] == "beacon":
        assert result == Alert(**decoded)
        body, sig = sign_alert(Alert(**decoded), key)
        assert encode_beacon(body, sig).hex() == vector["hex"]
        return
    if vector["kind"] == "alert":
        assert result == Alert(**decoded)
        body, sig = sign_alert(Alert(**decoded), key)
        message: c.Message = c.SignedAlert(body=body, sig=sig, id=1)
    else:
        assert result == AlertCancel(**decoded)
        body, sig = sign_cancel(AlertCancel(**decoded), key)
        message = c.SignedAlertCancel(body=body, sig=sig, id=1)
    assert (body.hex(), sig.hex()) == (vector["body"], vector["sig"])
    assert c.encode(message).hex() == vector["hex"]


@pytest.mark.parametrize("vector", INVALID, ids=[v["id"] for v in INVALID])
def test_invalid_vector(vector: dict[str, Any]) -> None:
    error = error_by_name(vector["error"])
    with pytest.raises(error) as info:
        check(vector)
    assert type(info.value) is error
