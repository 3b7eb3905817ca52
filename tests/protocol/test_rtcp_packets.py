"""RTCP SR, RR, SDES, BYE, generic NACK and compound packets (RFC 3550, RFC 4585)."""

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
    UnknownTypeError,
)
from loa.protocol.rtcp import (
    Bye,
    GenericNack,
    RawRtcp,
    ReceiverReport,
    ReportBlock,
    SdesChunk,
    SenderReport,
    SourceDescription,
    build_rtcp,
    is_rtcp,
    lost_from_pairs,
    nack_pairs,
    parse_rtcp,
)
from loa.protocol.rtptime import seq_diff

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
blocks = st.builds(ReportBlock, u32, st.integers(0, 255), st.integers(-(2**23), 2**23 - 1), u32, u32, u32, u32)
block_lists = st.lists(blocks, max_size=3).map(tuple)
rtcp_packets = st.one_of(
    st.builds(SenderReport, u32, st.integers(0, 2**64 - 1), u32, u32, u32, block_lists),
    st.builds(ReceiverReport, u32, block_lists),
    st.builds(
        SourceDescription,
        st.lists(
            st.builds(SdesChunk, u32, st.lists(st.tuples(st.integers(1, 8), st.binary(max_size=20)), max_size=3)
                      .map(tuple)),
            max_size=3,
        ).map(tuple),
    ),
    st.builds(Bye, st.lists(u32, max_size=4).map(tuple), st.binary(max_size=30)),
    st.builds(GenericNack, u32, u32, st.lists(u16, min_size=1, max_size=40, unique=True).map(tuple)),
    st.builds(RawRtcp, st.sampled_from([204, 206, 207]), st.integers(0, 31),
              st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4])),
)


def _canonical(packet: object) -> object:
    if isinstance(packet, GenericNack):
        return GenericNack(packet.sender_ssrc, packet.media_ssrc, lost_from_pairs(nack_pairs(packet.lost)))
    return packet


@given(st.lists(rtcp_packets, min_size=1, max_size=4), st.sampled_from([0, 4, 8]))
def test_compound_packets_round_trip(packets: list[object], padding: int) -> None:
    data = build_rtcp(packets, padding=padding)  # type: ignore[arg-type]
    assert len(data) % 4 == 0
    parsed = parse_rtcp(data)
    assert list(parsed) == [_canonical(p) for p in packets]
    assert build_rtcp(parsed, padding=padding) == data
    assert is_rtcp(data)


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_rtcp(data)


@given(st.lists(rtcp_packets, min_size=1, max_size=3), st.data())
def test_mutated_compounds_raise_only_protocol_errors(packets: list[object], data: st.DataObject) -> None:
    wire = bytearray(build_rtcp(packets))  # type: ignore[arg-type]
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(wire)))
    with contextlib.suppress(ProtocolError):
        parse_rtcp(bytes(wire[:cut]))


def test_sender_report_layout() -> None:
    sr = SenderReport(0x11223344, 0xE8A0F2C0_80000000, 0x01020304, 50, 8000)
    data = build_rtcp([sr])
    assert data == bytes.fromhex("80c80006 11223344 e8a0f2c080000000 01020304 00000032 00001f40")
    assert parse_rtcp(data) == (sr,)


def test_receiver_report_with_negative_cumulative_loss() -> None:
    rr = ReceiverReport(1, (ReportBlock(2, 25, -3, 0x0001FFFF, 40, 0x12345678, 65536),))
    data = build_rtcp([rr])
    assert data[:4].hex() == "81c90007"
    assert data[12:16].hex() == "19fffffd"
    assert parse_rtcp(data) == (rr,)


@pytest.mark.parametrize(
    ("lost", "pairs"),
    [
        ([5], [(5, 0)]),
        ([5, 6, 8], [(5, 0b101)]),
        ([5, 21], [(5, 1 << 15)]),
        ([5, 22], [(5, 0), (22, 0)]),
        ([65534, 65535, 0, 3], [(65534, 0b10011)]),
        ([3, 0, 65535, 65534], [(65534, 0b10011)]),
        ([100, 100, 101], [(100, 1)]),
    ],
)
def test_nack_pairs(lost: list[int], pairs: list[tuple[int, int]]) -> None:
    assert nack_pairs(lost) == pairs
    assert sorted(lost_from_pairs(pairs)) == sorted(set(lost))


@given(u16, st.lists(st.integers(0, 300), min_size=1, max_size=60, unique=True))
def test_nack_pairs_round_trip_near_any_start(start: int, offsets: list[int]) -> None:
    lost = [(start + o) & 0xFFFF for o in offsets]
    pairs = nack_pairs(lost)
    back = lost_from_pairs(pairs)
    assert set(back) == set(lost)
    assert [seq_diff(s, back[0]) for s in back] == sorted(seq_diff(s, back[0]) for s in back)
    assert len(pairs) <= len(lost)


def test_nack_layout() -> None:
    data = build_rtcp([GenericNack(0xAABBCCDD, 0x11223344, (1000, 1001, 1003))])
    assert data == bytes.fromhex("81cd0003 aabbccdd 11223344 03e8 0005")


def test_nack_bad_fmt_and_length() -> None:
    good = build_rtcp([GenericNack(1, 2, (7,))])
    with pytest.raises(UnknownTypeError):
        parse_rtcp(bytes([0x83]) + good[1:])
    with pytest.raises(BadLengthError):
        parse_rtcp(bytes.fromhex("81cd0002") + good[4:12])


def test_header_errors() -> None:
    rr = build_rtcp([ReceiverReport(1)])
    with pytest.raises(MalformedError):
        parse_rtcp(bytes([0x40]) + rr[1:])
    with pytest.raises(TruncatedError):
        parse_rtcp(rr[:3])
    with pytest.raises(TruncatedError):
        parse_rtcp(rr + rr[:6])
    with pytest.raises(TruncatedError):
        parse_rtcp(b"")
    with pytest.raises(BadLengthError):  # RR announcing one report in a body without it
        parse_rtcp(bytes([0x81]) + rr[1:])
    with pytest.raises(UnknownTypeError):
        parse_rtcp(bytes([0x80, 199]) + rr[2:])
    with pytest.raises(OversizeError):
        parse_rtcp(build_rtcp([RawRtcp(204, 0, bytes(1196))]) + bytes(4))


def test_padding_rules() -> None:
    sr = SenderReport(1, 2, 3, 4, 5)
    padded = build_rtcp([ReceiverReport(1), sr], padding=8)
    assert padded[-1] == 8
    assert parse_rtcp(padded) == (ReceiverReport(1), sr)
    with pytest.raises(MalformedError):  # padding bit on the first packet of a compound
        parse_rtcp(bytes([padded[0] | 0x20]) + padded[1:])
    with pytest.raises(BadLengthError):
        parse_rtcp(padded[:-1] + b"\x00")
    with pytest.raises(BadLengthError):
        parse_rtcp(padded[:-1] + b"\x40")


def test_sdes_and_bye_strictness() -> None:
    sdes = build_rtcp([SourceDescription((SdesChunk(9, ((1, b"loa"),)),))])
    assert sdes == bytes.fromhex("81ca0003 00000009 01036c6f 61000000")
    with pytest.raises(MalformedError):
        parse_rtcp(sdes[:-1] + b"\x01")
    with pytest.raises(BadLengthError):
        parse_rtcp(bytes.fromhex("81ca00020000000901056162"))  # item of 5 bytes, 2 present
    bye = build_rtcp([Bye((7,), b"end")])
    assert bye == bytes.fromhex("81cb0002 00000007 03656e64")
    assert parse_rtcp(bye) == (Bye((7,), b"end"),)
    with pytest.raises(BadLengthError):
        parse_rtcp(bytes.fromhex("82cb0001") + bye[4:8])


@pytest.mark.parametrize(
    "bad",
    [
        [],
        [GenericNack(1, 2, ())],
        [GenericNack(1, 2, (70000,))],
        [ReceiverReport(1, (ReportBlock(1, 0, 2**23, 0, 0, 0, 0),))],
        [ReceiverReport(2**32)],
        [RawRtcp(200, 0, b"")],
        [RawRtcp(204, 0, b"abc")],
        [Bye((), bytes(256))],
        [SourceDescription((SdesChunk(1, ((0, b"x"),)),))],
        [ReceiverReport(1, (ReportBlock(1, 0, 0, 0, 0, 0, 0),) * 32)],
    ],
)
def test_unencodable_is_a_local_error(bad: list[object]) -> None:
    with pytest.raises(LocalProtocolError):
        build_rtcp(bad)  # type: ignore[arg-type]


def test_is_rtcp_demultiplexing() -> None:
    assert is_rtcp(bytes([0x80, 200]))
    assert is_rtcp(bytes([0x81, 205]))
    assert not is_rtcp(bytes([0x80, 111]))
    assert not is_rtcp(bytes([0x80, 0xEF]))
    assert not is_rtcp(bytes([0x04, 200]))
    assert not is_rtcp(b"\x80")
