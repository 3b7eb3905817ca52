"""Fuzz target ``alert``: signed alert and cancel bodies (sections 6.4-6.5), the device's verification.

The first byte picks a mode: 0 and 1 verify an alert (0) or cancel (1) with the signature taken from the
input; 2 and 3 first sign the rest of the input with the vectors' authority key, so that every step after the
signature (expiry, future skew, zones, replay) is reached. The trusted keys, zone path and ``now`` are the
vectors' context.

Accepted errors: :class:`~loa.protocol.errors.RemoteProtocolError` subclasses. Oracle: a body that verifies
decodes (``decode_alert``/``decode_cancel``) to the same alert, and its canonical encoding verifies too once
signed.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loa.bench.fuzz._common import vectors
from loa.protocol.alert import (
    ALERT_CONTEXT,
    CANCEL_CONTEXT,
    decode_alert,
    decode_cancel,
    encode_alert,
    encode_cancel,
    verify_alert,
    verify_cancel,
)
from loa.protocol.errors import RemoteProtocolError

MAX_LEN = 1300
_CONTEXT = vectors("alert")["context"]
AUTHORITY = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(_CONTEXT["authority_secret"]))
TRUSTED = {bytes.fromhex(k): bytes.fromhex(v) for k, v in _CONTEXT["trusted_keys"].items()}
NOW = int(_CONTEXT["now"])
ZONE_PATH = tuple(_CONTEXT["zone_path"])
SEEN = frozenset({(bytes.fromhex(_CONTEXT["kid"]), "79-2025-0000")})


def _verify(cancel: bool, body: bytes, sig: bytes) -> object:
    if cancel:
        return verify_cancel(body, sig, TRUSTED, now=NOW)
    return verify_alert(body, sig, TRUSTED, now=NOW, zone_path=ZONE_PATH, seen_ids=SEEN)


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer and atheris use
    if not data:
        return
    mode, rest = data[0] % 4, data[1:]
    cancel = mode % 2 == 1
    if mode < 2:
        sig, body = rest[:64], rest[64:]
    else:
        body = rest
        sig = AUTHORITY.sign((CANCEL_CONTEXT if cancel else ALERT_CONTEXT) + body)
    try:
        verified = _verify(cancel, body, sig)
    except RemoteProtocolError:
        return
    decoded = decode_cancel(body) if cancel else decode_alert(body)
    if decoded != verified:
        raise AssertionError(f"verified {verified!r} but the body decodes to {decoded!r}")
    canonical = encode_cancel(decoded) if cancel else encode_alert(decoded)  # type: ignore[arg-type]
    resigned = AUTHORITY.sign((CANCEL_CONTEXT if cancel else ALERT_CONTEXT) + canonical)
    if _verify(cancel, canonical, resigned) != verified:
        raise AssertionError("the canonical encoding of a verified body verifies to something else")


def seeds() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for v in vectors("alert")["vectors"]:
        if v["kind"] == "beacon":
            continue  # the beacon target's
        cancel = v["kind"] == "cancel"
        body, sig = bytes.fromhex(v["body"]), bytes.fromhex(v["sig"])
        out[v["id"]] = bytes((1 if cancel else 0,)) + sig + body
        out[v["id"] + ".signed"] = bytes((3 if cancel else 2,)) + body
    return out
