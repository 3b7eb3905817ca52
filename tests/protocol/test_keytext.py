"""Keys written as text (protocol/keytext.py): every spelling of one key reads back to it; nothing else does."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loa.protocol.keytext import decode_key, is_weak_public_key
from loa.protocol.noise import x25519_public


@given(st.binary(min_size=32, max_size=32), st.sampled_from(["hex", "HEX", "b64", "url", "b64-nopad", "url-nopad"]),
       st.sampled_from(["", " ", "\n", "\t "]))
def test_every_spelling_of_a_key_reads_back(key: bytes, form: str, space: str) -> None:
    text = {
        "hex": key.hex(), "HEX": key.hex().upper(),
        "b64": base64.b64encode(key).decode(), "url": base64.urlsafe_b64encode(key).decode(),
        "b64-nopad": base64.b64encode(key).decode().rstrip("="),
        "url-nopad": base64.urlsafe_b64encode(key).decode().rstrip("="),
    }[form]
    assert decode_key(space + text + space) == key


@given(st.binary(max_size=64).filter(lambda b: len(b) != 32))
def test_a_key_of_another_length_is_refused_with_its_length(raw: bytes) -> None:
    with pytest.raises(ValueError, match=f"{len(raw)} bytes, not 32"):
        decode_key(base64.b64encode(raw).decode())


@pytest.mark.parametrize("text", ["", "not a key!", "ẞ" * 44, "=" * 44, "g" * 64])
def test_text_that_is_no_key_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"neither 64 hex digits nor base64|bytes, not 32"):
        decode_key(text)


def test_small_order_points_are_weak_and_real_keys_are_not() -> None:
    # The identity, the point of order 2, and a point of order 8 (RFC 7748 section 6.1 says to check the shared
    # secret for all zeros; these are among the public values that give it).
    weak = [bytes(32), (1).to_bytes(32, "little"),
            bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")]
    assert all(is_weak_public_key(key) for key in weak)
    assert is_weak_public_key(bytes(31))
    assert not is_weak_public_key(x25519_public(bytes(range(1, 33))))
