"""spec/vectors/media.json, both ways: every `decoded` encodes to exactly `hex`, every `hex` decodes to exactly
`decoded`, every invalid vector raises exactly the named error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import loa
from loa.protocol.errors import error_by_name
from loa.protocol.rtcp import (
    Bye,
    GenericNack,
    RawRtcp,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    SdesChunk,
    SenderReport,
    SourceDescription,
    build_rtcp,
    parse_rtcp,
)
from loa.protocol.rtp import ExtensionElement, RtpPacket, parse_rtp
from loa.protocol.rtptime import ntp64_to_ns
from loa.protocol.srtp import StreamProtector, StreamUnprotector

DOC = json.loads((Path(loa.__file__).parent / "spec" / "vectors" / "media.json").read_text(encoding="utf-8"))
VALID = [v for v in DOC["vectors"] if "decoded" in v]
INVALID = [v for v in DOC["vectors"] if "error" in v]


def context(vector: dict[str, Any]) -> dict[str, Any]:
    return {**DOC["context"], **vector.get("context", {})}


def rtp_from(d: dict[str, Any]) -> RtpPacket:
    return RtpPacket(
        payload_type=d["payload_type"], sequence=d["sequence"], timestamp=d["timestamp"], ssrc=d["ssrc"],
        payload=bytes.fromhex(d["payload"]), marker=d["marker"], csrcs=tuple(d["csrcs"]),
        extension_profile=d["extension_profile"],
        extensions=tuple(ExtensionElement(e["id"], bytes.fromhex(e["data"])) for e in d["extensions"]),
        extension_data=bytes.fromhex(d["extension_data"]), padding=d["padding"],
    )


def rtp_to(p: RtpPacket) -> dict[str, Any]:
    out: dict[str, Any] = {
        "payload_type": p.payload_type, "marker": p.marker, "sequence": p.sequence, "timestamp": p.timestamp,
        "ssrc": p.ssrc, "csrcs": list(p.csrcs), "extension_profile": p.extension_profile,
        "extensions": [{"id": e.id, "data": e.data.hex()} for e in p.extensions],
        "extension_data": p.extension_data.hex(), "padding": p.padding, "payload": p.payload.hex(),
    }
    if p.ntp64 is not None:
        out |= {"ntp64": p.ntp64, "ntp_ns": ntp64_to_ns(p.ntp64)}
    return out


def blocks_from(items: list[dict[str, Any]]) -> tuple[ReportBlock, ...]:
    return tuple(ReportBlock(**b) for b in items)


def blocks_to(blocks: tuple[ReportBlock, ...]) -> list[dict[str, Any]]:
    return [{"ssrc": b.ssrc, "fraction_lost": b.fraction_lost, "cumulative_lost": b.cumulative_lost,
             "highest_seq": b.highest_seq, "jitter": b.jitter, "lsr": b.lsr, "dlsr": b.dlsr} for b in blocks]


def rtcp_from(d: dict[str, Any]) -> list[RtcpPacket]:
    out: list[RtcpPacket] = []
    for p in d["packets"]:
        match p["type"]:
            case "sr":
                out.append(SenderReport(p["ssrc"], p["ntp"], p["rtp_timestamp"], p["packet_count"],
                                        p["octet_count"], blocks_from(p["reports"])))
            case "rr":
                out.append(ReceiverReport(p["ssrc"], blocks_from(p["reports"])))
            case "sdes":
                out.append(SourceDescription(tuple(
                    SdesChunk(c["ssrc"], tuple((t, bytes.fromhex(v)) for t, v in c["items"])) for c in p["chunks"])))
            case "bye":
                out.append(Bye(tuple(p["ssrcs"]), bytes.fromhex(p["reason"])))
            case "nack":
                out.append(GenericNack(p["sender_ssrc"], p["media_ssrc"], tuple(p["lost"])))
            case "raw":
                out.append(RawRtcp(p["packet_type"], p["count"], bytes.fromhex(p["body"])))
    return out


def rtcp_to(packets: tuple[RtcpPacket, ...]) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for p in packets:
        match p:
            case SenderReport():
                out.append({"type": "sr", "ssrc": p.ssrc, "ntp": p.ntp, "ntp_ns": ntp64_to_ns(p.ntp),
                            "rtp_timestamp": p.rtp_timestamp, "packet_count": p.packet_count,
                            "octet_count": p.octet_count, "reports": blocks_to(p.reports)})
            case ReceiverReport():
                out.append({"type": "rr", "ssrc": p.ssrc, "reports": blocks_to(p.reports)})
            case SourceDescription():
                out.append({"type": "sdes", "chunks": [
                    {"ssrc": c.ssrc, "items": [[t, v.hex()] for t, v in c.items]} for c in p.chunks]})
            case Bye():
                out.append({"type": "bye", "ssrcs": list(p.ssrcs), "reason": p.reason.hex()})
            case GenericNack():
                out.append({"type": "nack", "sender_ssrc": p.sender_ssrc, "media_ssrc": p.media_ssrc,
                            "lost": list(p.lost)})
            case RawRtcp():
                out.append({"type": "raw", "packet_type": p.packet_type, "count": p.count, "body": p.body.hex()})
    return {"packets": out}


def receiver(ctx: dict[str, Any], rtcp: bool) -> StreamUnprotector:
    rx = StreamUnprotector(bytes.fromhex(ctx["key"]))
    for seen in ctx.get("received", []):
        (rx.unprotect_rtcp if rtcp else rx.unprotect)(bytes.fromhex(seen))
    return rx


def decode(vector: dict[str, Any]) -> dict[str, Any]:
    ctx = context(vector)
    data = bytes.fromhex(vector["hex"])
    match ctx["layer"]:
        case "rtp":
            return rtp_to(parse_rtp(data))
        case "rtcp":
            return rtcp_to(parse_rtcp(data))
        case "srtp":
            plain = receiver(ctx, rtcp=False).unprotect(data)
            assert plain.hex() == vector.get("plain", plain.hex())
            return rtp_to(parse_rtp(plain))
        case "srtcp":
            plain = receiver(ctx, rtcp=True).unprotect_rtcp(data)
            assert plain.hex() == vector.get("plain", plain.hex())
            return {**rtcp_to(parse_rtcp(plain)), "srtcp_index": int.from_bytes(data[-14:-10], "big") & 0x7FFFFFFF}
    raise AssertionError(f"unknown layer {ctx['layer']}")


def encode(vector: dict[str, Any]) -> bytes:
    ctx = context(vector)
    d = vector["decoded"]
    match ctx["layer"]:
        case "rtp":
            return rtp_from(d).to_bytes()
        case "rtcp":
            return build_rtcp(rtcp_from(d))
        case "srtp":
            return StreamProtector(bytes.fromhex(ctx["key"])).protect(rtp_from(d).to_bytes())
        case "srtcp":
            protector = StreamProtector(bytes.fromhex(ctx["key"]))
            assert d["srtcp_index"] == 1  # the first SRTCP packet a protector sends
            return protector.protect_rtcp(build_rtcp(rtcp_from(d)))
    raise AssertionError(f"unknown layer {ctx['layer']}")


def test_file_shape() -> None:
    assert DOC["name"] == "media"
    assert len(DOC["vectors"]) >= 15
    assert len(INVALID) >= 6
    ids = [v["id"] for v in DOC["vectors"]]
    assert len(ids) == len(set(ids))
    assert {context(v)["layer"] for v in VALID} == {"rtp", "rtcp", "srtp", "srtcp"}


@pytest.mark.parametrize("vector", VALID, ids=[v["id"] for v in VALID])
def test_encode(vector: dict[str, Any]) -> None:
    assert encode(vector).hex() == vector["hex"]


@pytest.mark.parametrize("vector", VALID, ids=[v["id"] for v in VALID])
def test_decode(vector: dict[str, Any]) -> None:
    assert decode(vector) == vector["decoded"]


@pytest.mark.parametrize("vector", INVALID, ids=[v["id"] for v in INVALID])
def test_invalid(vector: dict[str, Any]) -> None:
    with pytest.raises(error_by_name(vector["error"])) as info:
        decode(vector)
    assert type(info.value).__name__ == vector["error"]


@pytest.mark.parametrize("vector", [v for v in VALID if context(v)["layer"] in ("rtp", "rtcp")],
                         ids=[v["id"] for v in VALID if context(v)["layer"] in ("rtp", "rtcp")])
def test_every_truncation_fails(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    parse = parse_rtp if context(vector)["layer"] == "rtp" else parse_rtcp
    boundaries = set()  # a compound cut between its packets is a shorter compound
    pos = 0
    while context(vector)["layer"] == "rtcp" and pos < len(data):
        pos += 4 * (int.from_bytes(data[pos + 2 : pos + 4], "big") + 1)
        boundaries.add(pos)
    for n in set(range(len(data))) - boundaries:
        try:
            parse(data[:n])
        except error_by_name("TruncatedError"):
            continue
        except (error_by_name("BadLengthError"), error_by_name("MalformedError")):
            continue  # a cut inside padding or an SDES/BYE body
        if context(vector)["layer"] == "rtp" and n >= 12:
            continue  # an RTP payload may be any length: a shorter packet is still a packet
        raise AssertionError(f"{vector['id']} cut to {n} bytes parsed")
