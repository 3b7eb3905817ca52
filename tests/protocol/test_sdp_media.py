"""The SDP of section 5.3: exact text for plain RTP and SRTP, and the strict reader of that dialect."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loa.protocol.errors import FieldError, LocalProtocolError, MalformedError, ProtocolError
from loa.protocol.sdp import SdpDescription, parse_sdp, write_sdp

KEY = bytes(range(30))

SPEC_EXAMPLE = (
    "v=0\r\n"
    "o=- 0 0 IN IP4 127.0.0.1\r\n"
    "s=loa\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 5004 RTP/SAVP 111\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
    "a=fmtp:111 sprop-stereo=0;stereo=0;useinbandfec=1\r\n"
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ntp-64\r\n"
    f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(KEY).decode()}\r\n"
)


def test_srtp_description_is_the_spec_example_with_its_extmap() -> None:
    desc = SdpDescription("127.0.0.1", 5004, key=KEY)
    assert write_sdp(desc) == SPEC_EXAMPLE
    assert parse_sdp(SPEC_EXAMPLE) == desc


def test_plain_rtp_has_avp_and_no_crypto() -> None:
    text = write_sdp(SdpDescription("127.0.0.1", 5004))
    assert "m=audio 5004 RTP/AVP 111\r\n" in text
    assert "a=crypto" not in text


def test_ipv6_multicast_ttl_ptime_and_mux() -> None:
    text = write_sdp(SdpDescription("239.1.2.3", 6000, ttl=16, ptime=20, rtcp_mux=True, fec=False))
    assert "c=IN IP4 239.1.2.3/16\r\n" in text
    assert "a=ptime:20\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ntp-64\r\na=rtcp-mux\r\n" in text
    assert "useinbandfec=0" in text
    v6 = SdpDescription("::1", 5004, key=KEY)
    assert "c=IN IP6 ::1\r\n" in write_sdp(v6)
    assert parse_sdp(write_sdp(v6).replace("\r\n", "\n")) == v6


descriptions = st.builds(
    SdpDescription,
    address=st.sampled_from(["127.0.0.1", "10.0.0.7", "::1", "2001:db8::5", "239.255.0.1"]),
    port=st.integers(1, 65535),
    key=st.none() | st.binary(min_size=30, max_size=30),
    payload_type=st.integers(96, 127),
    fec=st.booleans(),
    ptime=st.none() | st.sampled_from([10, 20, 40, 60]),
    rtcp_mux=st.booleans(),
    session_id=st.integers(0, 2**63),
    session_version=st.integers(0, 2**32),
)


@given(descriptions)
def test_round_trip(desc: SdpDescription) -> None:
    assert parse_sdp(write_sdp(desc)) == desc


@given(descriptions, st.data())
def test_mutations_raise_only_protocol_errors(desc: SdpDescription, data: st.DataObject) -> None:
    text = write_sdp(desc)
    i = data.draw(st.integers(0, len(text) - 1))
    mutated = text[:i] + data.draw(st.sampled_from(["", "x", "\r\n", "0", " ", "/", "²"])) + text[i + 1 :]
    with contextlib.suppress(ProtocolError):
        parse_sdp(mutated)


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda t: t.replace("v=0", "v=1"), MalformedError),
        (lambda t: t.replace("t=0 0\r\n", ""), MalformedError),
        (lambda t: t + "a=sendonly\r\n", MalformedError),
        (lambda t: t.replace("a=extmap:1 ", "a=extmap:2 "), MalformedError),
        (lambda t: t.replace("opus/48000/2", "opus/48000/1"), MalformedError),
        (lambda t: t.replace("5004", "70000"), FieldError),
        (lambda t: t.replace("RTP/SAVP 111", "RTP/SAVP 8"), FieldError),
        (lambda t: t.replace("inline:AAEC", "inline:!AEC"), FieldError),
        (lambda t: t.replace("inline:AAECAwQF", "inline:AAEC"), FieldError),
        (lambda t: t.replace("c=IN IP4 127.0.0.1", "c=IN IP4 localhost"), FieldError),
        (lambda t: t.replace("c=IN IP4 127.0.0.1", "c=IN IP6 127.0.0.1"), FieldError),
        (lambda t: t[:-2], MalformedError),
    ],
)
def test_strict_reader(edit: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_sdp(edit(SPEC_EXAMPLE))  # type: ignore[operator]


@pytest.mark.parametrize(
    "bad",
    [
        SdpDescription("localhost", 5004),
        SdpDescription("127.0.0.1", 0),
        SdpDescription("127.0.0.1", 5004, payload_type=8),
        SdpDescription("127.0.0.1", 5004, key=bytes(16)),
        SdpDescription("127.0.0.1", 5004, ttl=5),
        SdpDescription("127.0.0.1", 5004, name="a\r\nb"),
    ],
)
def test_unwritable_descriptions(bad: SdpDescription) -> None:
    with pytest.raises(LocalProtocolError):
        write_sdp(bad)
