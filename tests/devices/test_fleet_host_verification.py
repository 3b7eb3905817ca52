"""The fleet's shared alert verification (loa.devices.fleet.share_alert_verification), the shortcut a big
FleetHost process takes: every device gets the outcome its own Ed25519 verification would give, and the signature
is checked once per distinct (bytes, signature)."""

from __future__ import annotations

import random

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from loa.devices.alerts import AlertBook
from loa.devices.core import SpeakerCore
from loa.devices.fleet import VERIFIED_KEPT, SharedVerifier, share_alert_verification
from loa.protocol.alert import Alert, key_id, sign_alert
from loa.protocol.errors import ReplayError, SignatureError, WrongZoneError

NS = 1_000_000_000
NOW = 1_750_000_000 * NS
AUTHORITY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
AUTHORITY_PUBLIC = AUTHORITY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _alert(ident: str, zones: tuple[str, ...] = ("79",)) -> tuple[bytes, bytes]:
    return sign_alert(Alert(id=ident, kid=key_id(AUTHORITY_PUBLIC), status="actual", cls=2, lvl=2, zones=zones,
                            issued=NOW, expires=NOW + 600 * NS, bid=7001, text="Bão: sơ tán"), AUTHORITY)


def _cores(n: int) -> list[SpeakerCore]:
    rng = random.Random(5)
    return [SpeakerCore(static_private=rng.randbytes(32), server_public=rng.randbytes(32),
                        authority_keys=[AUTHORITY_PUBLIC], server_address=("127.0.0.1", 9), count_only=True)
            for _ in range(n)]


def test_devices_of_one_process_share_one_verification_and_each_still_checks_the_rest() -> None:
    cores = _cores(5)
    verifiers = share_alert_verification(cores)
    assert len(verifiers) == 1
    body, sig = _alert("a-1")
    for core in cores:
        accepted = core.alerts.accept(body, sig, now=NOW, zones=("79",), exercise=False)
        assert accepted.alert.id == "a-1"
    assert (verifiers[0].verified, verifiers[0].shared) == (1, 4)
    with pytest.raises(ReplayError):  # each device's own replay memory
        cores[0].alerts.accept(body, sig, now=NOW, zones=("79",), exercise=False)
    with pytest.raises(WrongZoneError):  # and its own zones
        cores[1].alerts.accept(*_alert("a-2"), now=NOW, zones=("80",), exercise=False)


def test_a_forged_signature_is_refused_by_every_device() -> None:
    cores = _cores(3)
    verifier = share_alert_verification(cores)[0]
    body, sig = _alert("a-3")
    forged = bytes([sig[0] ^ 1]) + sig[1:]
    for core in cores:
        with pytest.raises(SignatureError):
            core.alerts.accept(body, forged, now=NOW, zones=("79",), exercise=False)
    altered = body.replace(b"a-3", b"a-4")
    for core in cores:
        with pytest.raises(SignatureError):
            core.alerts.accept(altered, sig, now=NOW, zones=("79",), exercise=False)
    assert (verifier.verified, verifier.shared) == (2, 4)
    for core in cores:  # the genuine one still goes through
        core.alerts.accept(body, sig, now=NOW, zones=("79",), exercise=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=40), st.sampled_from(["good", "flip", "other"])), min_size=1,
                max_size=2 * VERIFIED_KEPT + 10))
def test_a_shared_verifier_answers_as_the_key_does(cases: list[tuple[bytes, str]]) -> None:
    """For any sequence of messages, repeated or not, good or bad, more than it remembers: the same outcome as
    the plain key's."""
    plain = AUTHORITY.public_key()
    shared = SharedVerifier(AUTHORITY_PUBLIC)
    other = Ed25519PrivateKey.from_private_bytes(bytes(32))
    for data, kind in cases + cases[::-1]:
        sig = AUTHORITY.sign(data) if kind != "other" else other.sign(data)
        if kind == "flip":
            sig = sig[:-1] + bytes([sig[-1] ^ 0x80])
        try:
            plain.verify(sig, data)
            expected = True
        except InvalidSignature:
            expected = False
        try:
            shared.verify(sig, data)
            got = True
        except InvalidSignature:
            got = False
        assert got == expected, (data, kind)
    assert shared.public_bytes_raw() == AUTHORITY_PUBLIC
    assert shared == plain


def test_an_alert_book_built_on_the_key_bytes_keeps_working_alongside() -> None:
    book = AlertBook([AUTHORITY_PUBLIC])  # not shared: the reference path, unchanged
    assert book.accept(*_alert("a-5"), now=NOW, zones=("79",), exercise=False).alert.id == "a-5"
