"""RTP header parsing and serialising (RFC 3550, RFC 8285 one-byte extensions, RFC 6051 ntp-64)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loa.protocol.errors import (
    BadLengthError,
    LocalProtocolError,
    MalformedError,
    OversizeError,
    ProtocolError,
    TruncatedError,
)
from loa.protocol.rtp import (
    EXT_PROFILE_ONE_BYTE,
    ExtensionElement,
    RtpPacket,
    parse_rtp,
    write_opus_rtp,
)

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
elements = st.lists(
    st.builds(ExtensionElement, st.integers(1, 14), st.binary(min_size=1, max_size=16)), max_size=4
).map(tuple)


@st.composite
def packets(draw: st.DrawFn) -> RtpPacket:
    kind = draw(st.sampled_from(["none", "one-byte", "raw"]))
    profile = None
    ext: tuple[ExtensionElement, ...] = ()
    raw = b""
    if kind == "one-byte":
        profile, ext = EXT_PROFILE_ONE_BYTE, draw(elements)
    elif kind == "raw":
        profile = draw(u16.filter(lambda p: p != EXT_PROFILE_ONE_BYTE))
        raw = draw(st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4]))
    return RtpPacket(
        payload_type=draw(st.integers(0, 127).filter(lambda pt: not 64 <= pt <= 95)),
        sequence=draw(u16),
        timestamp=draw(u32),
        ssrc=draw(u32),
        payload=draw(st.binary(max_size=200)),
        marker=draw(st.booleans()),
        csrcs=tuple(draw(st.lists(u32, max_size=15))),
        extension_profile=profile,
        extensions=ext,
        extension_data=raw,
        padding=draw(st.sampled_from([0, 1, 4, 17, 255])),
    )


@given(packets())
def test_every_header_variant_round_trips(packet: RtpPacket) -> None:
    data = packet.to_bytes()
    assert len(data) == packet.size
    assert parse_rtp(data) == packet


@given(packets(), st.integers(0, 64))
def test_write_into_an_offset_of_a_larger_buffer(packet: RtpPacket, offset: int) -> None:
    buf = bytearray(b"\xaa" * (offset + packet.size + 8))
    n = packet.write_into(buf, offset)
    assert n == packet.size
    assert bytes(buf[offset : offset + n]) == packet.to_bytes()
    assert buf[:offset] == b"\xaa" * offset
    assert buf[offset + n :] == b"\xaa" * 8


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_rtp(data)


@given(st.binary(min_size=12, max_size=300))
def test_version_2_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_rtp(bytes([0x80 | data[0] & 0x3F]) + data[1:])


@given(u16, u32, u32, st.binary(min_size=1, max_size=300), st.booleans(), st.none() | st.integers(0, 2**64 - 1))
def test_fast_writer_matches_the_general_one(
    seq: int, ts: int, ssrc: int, payload: bytes, marker: bool, ntp: int | None
) -> None:
    buf = bytearray(1200)
    n = write_opus_rtp(buf, sequence=seq, timestamp=ts, ssrc=ssrc, payload=payload, marker=marker, ntp64=ntp)
    ext = () if ntp is None else (ExtensionElement(1, ntp.to_bytes(8, "big")),)
    expected = RtpPacket(
        111, seq, ts, ssrc, payload, marker,
        extension_profile=None if ntp is None else EXT_PROFILE_ONE_BYTE, extensions=ext,
    )
    assert bytes(buf[:n]) == expected.to_bytes()
    assert parse_rtp(buf[:n]).ntp64 == ntp


def test_ntp64_extension_layout_is_the_one_of_section_5_2() -> None:
    buf = bytearray(100)
    n = write_opus_rtp(buf, sequence=1, timestamp=2, ssrc=3, payload=b"\xfc", ntp64=0x0102030405060708)
    assert bytes(buf[12:28]) == bytes.fromhex("bede0003 17 0102030405060708 000000")
    assert n == 29
    assert buf[0] == 0x90


def test_version_other_than_2_is_malformed() -> None:
    data = bytearray(RtpPacket(111, 1, 2, 3, b"x").to_bytes())
    for version in (0, 1, 3):
        data[0] = (data[0] & 0x3F) | version << 6
        with pytest.raises(MalformedError):
            parse_rtp(data)


@pytest.mark.parametrize("n", range(12))
def test_short_header_is_truncated(n: int) -> None:
    with pytest.raises(TruncatedError):
        parse_rtp(RtpPacket(111, 1, 2, 3, b"").to_bytes()[:n])


def test_csrc_list_past_the_end_is_truncated() -> None:
    data = RtpPacket(111, 1, 2, 3, csrcs=(1, 2, 3)).to_bytes()
    with pytest.raises(TruncatedError):
        parse_rtp(data[:-1])


def test_extension_length_past_the_end_is_truncated() -> None:
    data = bytearray(RtpPacket(111, 1, 2, 3, extension_profile=0x1000, extension_data=bytes(8)).to_bytes())
    data[15] = 3  # claims 3 words, 2 present
    with pytest.raises(TruncatedError):
        parse_rtp(data)
    with pytest.raises(TruncatedError):
        parse_rtp(data[:14])


def test_one_byte_element_past_its_block_is_a_bad_length() -> None:
    data = bytearray(RtpPacket(111, 1, 2, 3, b"p", extension_profile=EXT_PROFILE_ONE_BYTE,
                               extensions=(ExtensionElement(1, bytes(3)),)).to_bytes())
    data[16] = 0x17  # ID 1, 8 bytes in a 4-byte block
    with pytest.raises(BadLengthError):
        parse_rtp(data)


def test_one_byte_padding_and_id_15() -> None:
    body = bytes([0x00, 0x00, 0x21, 0xAA, 0xBB, 0xF0, 0x31, 0x00])  # pad, pad, id 2 len 2, stop at id 15
    data = bytes.fromhex("90 6f 0001 00000002 00000003 bede 0002") + body + b"pl"
    packet = parse_rtp(data)
    assert packet.extensions == (ExtensionElement(2, b"\xaa\xbb"),)
    assert packet.payload == b"pl"
    with pytest.raises(MalformedError):  # ID 0 with a non-zero length is not padding
        parse_rtp(data.replace(b"\x00\x00\x21", b"\x05\x00\x21"))


def test_padding_counts() -> None:
    packet = RtpPacket(111, 1, 2, 3, b"abc", padding=4)
    data = packet.to_bytes()
    assert data[-4:] == b"\x00\x00\x00\x04"
    assert data[0] & 0x20
    assert parse_rtp(data).payload == b"abc"
    with pytest.raises(BadLengthError):
        parse_rtp(data[:-1] + b"\x00")
    with pytest.raises(BadLengthError):
        parse_rtp(data[:-1] + b"\x08")  # more than the 7 bytes after the header


def test_rtcp_range_second_byte_is_not_rtp_and_oversize_is_refused() -> None:
    with pytest.raises(MalformedError):
        parse_rtp(bytes.fromhex("80c8000600001234") + bytes(20))
    with pytest.raises(OversizeError):
        parse_rtp(RtpPacket(111, 1, 2, 3, bytes(1189)).to_bytes())
    assert parse_rtp(RtpPacket(111, 1, 2, 3, bytes(1188)).to_bytes()).payload == bytes(1188)


@pytest.mark.parametrize(
    "bad",
    [
        RtpPacket(128, 0, 0, 0),
        RtpPacket(111, 65536, 0, 0),
        RtpPacket(111, 0, 2**32, 0),
        RtpPacket(111, 0, 0, 0, csrcs=(0,) * 16),
        RtpPacket(111, 0, 0, 0, padding=256),
        RtpPacket(111, 0, 0, 0, extensions=(ExtensionElement(1, b"x"),)),
        RtpPacket(111, 0, 0, 0, extension_profile=EXT_PROFILE_ONE_BYTE, extensions=(ExtensionElement(15, b"x"),)),
        RtpPacket(111, 0, 0, 0, extension_profile=EXT_PROFILE_ONE_BYTE, extensions=(ExtensionElement(1, bytes(17)),)),
        RtpPacket(111, 0, 0, 0, extension_profile=0x1000, extension_data=b"abc"),
    ],
)
def test_unencodable_packets_are_local_errors(bad: RtpPacket) -> None:
    with pytest.raises(LocalProtocolError):
        bad.to_bytes()


def test_fast_writer_refuses_without_writing() -> None:
    buf = bytearray(20)
    with pytest.raises(LocalProtocolError):
        write_opus_rtp(buf, sequence=0, timestamp=0, ssrc=0, payload=b"123456789")
    with pytest.raises(LocalProtocolError):
        write_opus_rtp(bytearray(100), sequence=0, timestamp=0, ssrc=0, payload=b"x", ntp64=2**64)
    assert buf == bytearray(20)
