"""Fuzz target ``beacon``: alert beacon datagrams (section 6.4.2) as a device takes them.

The first byte picks a mode: 0 parses the rest as a datagram and verifies the alert it carries; 1 signs the rest
as an alert body with the vectors' authority key and sends it through a beacon, so that every step after the
signature is reached. The trusted keys, zone path and ``now`` are the vectors' context.

Accepted errors: :class:`~loa.protocol.errors.RemoteProtocolError` subclasses (:class:`LocalProtocolError` where
mode 1's body cannot fit a beacon). Oracles: a datagram that parses is exactly what :func:`encode_beacon` writes
for its body and signature, and a verified alert is what its body decodes to.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loa.bench.fuzz._common import vectors
from loa.protocol.alert import ALERT_CONTEXT, decode_alert, verify_alert
from loa.protocol.beacon import MAX_BEACON_BODY, encode_beacon, parse_beacon
from loa.protocol.errors import RemoteProtocolError

MAX_LEN = 1300
_CONTEXT = vectors("alert")["context"]
AUTHORITY = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(_CONTEXT["authority_secret"]))
TRUSTED = {bytes.fromhex(k): bytes.fromhex(v) for k, v in _CONTEXT["trusted_keys"].items()}
NOW = int(_CONTEXT["now"])
ZONE_PATH = tuple(_CONTEXT["zone_path"])


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer and atheris use
    if not data:
        return
    mode, rest = data[0] % 2, data[1:]
    if mode == 1:
        if not 1 <= len(rest) <= MAX_BEACON_BODY:
            return
        rest = encode_beacon(rest, AUTHORITY.sign(ALERT_CONTEXT + rest))
    try:
        body, sig = parse_beacon(rest)
    except RemoteProtocolError:
        return
    if encode_beacon(body, sig) != rest:
        raise AssertionError("a parsed beacon does not write back to the same bytes")
    try:
        alert = verify_alert(body, sig, TRUSTED, now=NOW, zone_path=ZONE_PATH, seen_ids=())
    except RemoteProtocolError:
        return
    if decode_alert(body) != alert:
        raise AssertionError(f"verified {alert!r} but the body decodes to something else")


def seeds() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for v in vectors("alert")["vectors"]:
        if v["kind"] == "beacon":
            out[v["id"]] = b"\x00" + bytes.fromhex(v["hex"])
        elif v["kind"] == "alert":
            out[v["id"] + ".signed"] = b"\x01" + bytes.fromhex(v["body"])
    return out
