"""Write spec/vectors/media.json: RTP, RTCP, SRTP and SRTCP vectors (PROTOCOL.md section 5). Deterministic.

Run: python spec/vectors/make_media.py

Each vector's context names the ``layer`` that parses it: ``rtp`` / ``rtcp`` (plain packets), ``srtp`` /
``srtcp`` (protected with the file's ``key``; ``decoded`` is the plain packet, ``plain`` its bytes).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

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
)
from loa.protocol.rtp import EXT_PROFILE_ONE_BYTE, ExtensionElement, RtpPacket
from loa.protocol.rtptime import ns_to_ntp64, ntp64_to_ns
from loa.protocol.srtp import StreamProtector

OUT = pathlib.Path(__file__).with_name("media.json")
KEY = bytes.fromhex("e1f97a0d3e018be0d64fa32c06de41390ec675ad498afeebb6960b3aabe6")  # RFC 3711 B.3 key || salt
T = 1_750_000_000_000_000_000
NTP = ns_to_ntp64(T)
SSRC = 0x4C4F4131
OPUS = bytes.fromhex("fc") + bytes(range(0x10, 0x10 + 23))  # TOC 0xfc: CELT fullband 20 ms, one frame


def ntp_ext(ns: int) -> tuple[ExtensionElement, ...]:
    return (ExtensionElement(1, ns_to_ntp64(ns).to_bytes(8, "big")),)


RTP: list[tuple[str, str, RtpPacket]] = [
    ("rtp.first", "first packet of a stream: marker bit and the ntp-64 rapid-sync extension (section 5.2)",
     RtpPacket(111, 0x1234, 0x9A0B1C2D, SSRC, OPUS, marker=True, extension_profile=EXT_PROFILE_ONE_BYTE,
               extensions=ntp_ext(T))),
    ("rtp.rapid_sync", "fourth packet: no marker, still the ntp-64 extension (60 ms later)",
     RtpPacket(111, 0x1237, 0x9A0B1C2D + 3 * 960, SSRC, OPUS, extension_profile=EXT_PROFILE_ONE_BYTE,
               extensions=ntp_ext(T + 60_000_000))),
    ("rtp.plain", "a later packet: 12-byte header and the Opus packet",
     RtpPacket(111, 0x1240, 0x9A0B1C2D + 12 * 960, SSRC, OPUS)),
    ("rtp.wrap", "sequence number 65535 and a timestamp about to wrap",
     RtpPacket(111, 0xFFFF, 0xFFFFFC40, SSRC, OPUS)),
    ("rtp.csrc", "two contributing sources (a mixer's output)",
     RtpPacket(111, 7, 960, SSRC, OPUS, csrcs=(1, 0xA0B0C0D0))),
    ("rtp.padding", "RTP padding: 4 bytes, the last holding the count", RtpPacket(111, 8, 1920, SSRC, OPUS, padding=4)),
    ("rtp.two_elements", "one-byte extension with two elements (ID 1 ntp-64 and ID 3, 2 bytes) and padding to 32 bits",
     RtpPacket(111, 9, 2880, SSRC, OPUS, extension_profile=EXT_PROFILE_ONE_BYTE,
               extensions=(*ntp_ext(T), ExtensionElement(3, b"\x01\x02")))),
    ("rtp.other_profile", "a header extension of another profile (two-byte form 0x1000), kept as raw bytes",
     RtpPacket(111, 10, 3840, SSRC, OPUS, extension_profile=0x1000, extension_data=bytes.fromhex("05020a0b"))),
]

BLOCK = ReportBlock(SSRC, 12, 345, 0x0001_1234, 210, 0x5A8E_5A00, 0x0000_8000)
RTCP: list[tuple[str, str, list[RtcpPacket]]] = [
    ("rtcp.sr", "sender report: NTP and RTP timestamps of the same instant, packet and octet counts",
     [SenderReport(SSRC, NTP, 0x9A0B1C2D, 50, 1200)]),
    ("rtcp.sr_sdes", "compound: sender report and SDES CNAME, as the server sends every second",
     [SenderReport(SSRC, NTP, 0x9A0B1C2D, 50, 1200), SourceDescription((SdesChunk(SSRC, ((1, b"loa-1"),)),))]),
    ("rtcp.rr", "receiver report of one stream (fraction lost 12/256, 345 lost, extended highest seq 0x00011234)",
     [ReceiverReport(0x0D0E0F10, (BLOCK,))]),
    ("rtcp.nack", "generic NACK of 1000, 1001, 1003 and 1020: PID 1000 with BLP 0x0005, then PID 1020",
     [GenericNack(0x0D0E0F10, SSRC, (1000, 1001, 1003, 1020))]),
    ("rtcp.nack_wrap", "generic NACK across the wrap: 65534, 65535, 0 and 2 in one pair",
     [GenericNack(0x0D0E0F10, SSRC, (65534, 65535, 0, 2))]),
    ("rtcp.rr_nack", "compound sent by a device inside an rtcp control message: receiver report then NACK",
     [ReceiverReport(0x0D0E0F10, (BLOCK,)), GenericNack(0x0D0E0F10, SSRC, (4660,))]),
    ("rtcp.bye", "compound at the end of a stream: sender report, SDES CNAME and BYE with a reason",
     [SenderReport(SSRC, NTP, 0x9A0B1C2D, 50, 1200), SourceDescription((SdesChunk(SSRC, ((1, b"loa-1"),)),)),
      Bye((SSRC,), b"end")]),
]

SRTP_PLAIN = RTP[0][2]
SRTCP_PLAIN = RTCP[1][2]


def hexs(b: bytes) -> str:
    return b.hex()


def rtp_json(p: RtpPacket) -> dict[str, Any]:
    out: dict[str, Any] = {
        "payload_type": p.payload_type, "marker": p.marker, "sequence": p.sequence, "timestamp": p.timestamp,
        "ssrc": p.ssrc, "csrcs": list(p.csrcs), "extension_profile": p.extension_profile,
        "extensions": [{"id": e.id, "data": hexs(e.data)} for e in p.extensions],
        "extension_data": hexs(p.extension_data), "padding": p.padding, "payload": hexs(p.payload),
    }
    if p.ntp64 is not None:
        out["ntp64"] = p.ntp64
        out["ntp_ns"] = ntp64_to_ns(p.ntp64)
    return out


def block_json(b: ReportBlock) -> dict[str, Any]:
    return {"ssrc": b.ssrc, "fraction_lost": b.fraction_lost, "cumulative_lost": b.cumulative_lost,
            "highest_seq": b.highest_seq, "jitter": b.jitter, "lsr": b.lsr, "dlsr": b.dlsr}


def rtcp_json(packets: list[RtcpPacket] | tuple[RtcpPacket, ...]) -> dict[str, Any]:
    out = []
    for p in packets:
        match p:
            case SenderReport():
                out.append({"type": "sr", "ssrc": p.ssrc, "ntp": p.ntp, "ntp_ns": ntp64_to_ns(p.ntp),
                            "rtp_timestamp": p.rtp_timestamp, "packet_count": p.packet_count,
                            "octet_count": p.octet_count, "reports": [block_json(b) for b in p.reports]})
            case ReceiverReport():
                out.append({"type": "rr", "ssrc": p.ssrc, "reports": [block_json(b) for b in p.reports]})
            case SourceDescription():
                out.append({"type": "sdes", "chunks": [
                    {"ssrc": c.ssrc, "items": [[t, hexs(v)] for t, v in c.items]} for c in p.chunks]})
            case Bye():
                out.append({"type": "bye", "ssrcs": list(p.ssrcs), "reason": hexs(p.reason)})
            case GenericNack():
                out.append({"type": "nack", "sender_ssrc": p.sender_ssrc, "media_ssrc": p.media_ssrc,
                            "lost": list(p.lost)})
            case RawRtcp():
                out.append({"type": "raw", "packet_type": p.packet_type, "count": p.count, "body": hexs(p.body)})
    return {"packets": out}


def valid() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = []
    for name, text, packet in RTP:
        vectors.append({"id": f"media.{name}", "description": text, "context": {"layer": "rtp"},
                        "hex": hexs(packet.to_bytes()), "decoded": rtp_json(packet)})
    for name, text, packets in RTCP:
        vectors.append({"id": f"media.{name}", "description": text, "context": {"layer": "rtcp"},
                        "hex": hexs(build_rtcp(packets)), "decoded": rtcp_json(packets)})
    plain = SRTP_PLAIN.to_bytes()
    vectors.append({"id": "media.srtp.first", "description": "media.rtp.first protected with the file's key (ROC 0): "
                    "header in clear, payload AES-CM encrypted, 10-byte HMAC-SHA1-80 tag",
                    "context": {"layer": "srtp"}, "hex": hexs(StreamProtector(KEY).protect(plain)),
                    "plain": hexs(plain),
                    "decoded": rtp_json(SRTP_PLAIN)})
    plain = build_rtcp(SRTCP_PLAIN)
    vectors.append({"id": "media.srtcp.sr_sdes", "description": "media.rtcp.sr_sdes protected with the file's key: "
                    "first 8 bytes in clear, then E flag and SRTCP index 1, then the tag",
                    "context": {"layer": "srtcp"}, "hex": hexs(StreamProtector(KEY).protect_rtcp(plain)),
                    "plain": hexs(plain), "decoded": {**rtcp_json(SRTCP_PLAIN), "srtcp_index": 1}})
    return vectors


def invalid(good: dict[str, bytes]) -> list[dict[str, Any]]:
    rtp, rr, nack, srtp, srtcp = good["rtp"], good["rr"], good["nack"], good["srtp"], good["srtcp"]
    ext = good["ext"]

    def bad(name: str, layer: str, text: str, data: bytes, error: str, **context: Any) -> dict[str, Any]:
        return {"id": f"media.err.{name}", "description": text, "context": {"layer": layer, **context},
                "hex": hexs(data), "error": error}

    flipped = bytearray(srtp)
    flipped[-1] ^= 0x01
    flipped_rtcp = bytearray(srtcp)
    flipped_rtcp[-10] ^= 0x80
    return [
        bad("rtp.version1", "rtp", "RTP version 1", bytes([0x40 | rtp[0] & 0x3F]) + rtp[1:], "MalformedError"),
        bad("rtp.truncated", "rtp", "11 bytes: shorter than the fixed header", rtp[:11], "TruncatedError"),
        bad("rtp.csrc_truncated", "rtp", "CC = 3 but no CSRC list", bytes([rtp[0] | 3]) + rtp[1:12], "TruncatedError"),
        bad("rtp.extension_truncated", "rtp", "extension length of 4 words with 3 present",
            ext[:15] + b"\x04" + ext[16:28], "TruncatedError"),
        bad("rtp.element_length", "rtp", "one-byte element ID 1 claiming 16 bytes in a 12-byte block",
            ext[:16] + b"\x1f" + ext[17:], "BadLengthError"),
        bad("rtp.padding_zero", "rtp", "P bit set and a padding count of 0",
            bytes([rtp[0] | 0x20]) + rtp[1:-1] + b"\x00", "BadLengthError"),
        bad("rtp.padding_too_long", "rtp", "padding count larger than the bytes after the header",
            bytes([rtp[0] | 0x20]) + rtp[1:-1] + bytes([len(rtp) - 11]), "BadLengthError"),
        bad("rtcp.version1", "rtcp", "RTCP version 1", bytes([0x40 | rr[0] & 0x3F]) + rr[1:], "MalformedError"),
        bad("rtcp.length_mismatch", "rtcp", "RR with report count 1 and a length field of 1 word (no room for it)",
            rr[:2] + b"\x00\x01" + rr[4:8], "BadLengthError"),
        bad("rtcp.length_past_end", "rtcp", "RR whose length field runs past the datagram", rr[:-4], "TruncatedError"),
        bad("rtcp.nack_fmt", "rtcp", "PT 205 with FMT 2 (not a generic NACK)", bytes([0x82]) + nack[1:],
            "UnknownTypeError"),
        bad("rtcp.nack_no_fci", "rtcp", "generic NACK with length 2: no FCI entry", nack[:2] + b"\x00\x02" + nack[4:12],
            "BadLengthError"),
        bad("rtcp.unknown_type", "rtcp", "packet type 199 (not defined)", rr[:1] + bytes([199]) + rr[2:],
            "UnknownTypeError"),
        bad("srtp.auth", "srtp", "media.srtp.first with one bit of the tag flipped", bytes(flipped), "AuthError"),
        bad("srtp.replay", "srtp", "media.srtp.first again, after the receiver accepted it", srtp, "ReplayError",
            received=[hexs(srtp)]),
        bad("srtp.wrong_key", "srtp", "media.srtp.first checked with another key", srtp, "AuthError",
            key=hexs(bytes(30))),
        bad("srtcp.auth", "srtcp", "media.srtcp.sr_sdes with a bit of the tag flipped", bytes(flipped_rtcp),
            "AuthError"),
        bad("srtcp.replay", "srtcp", "media.srtcp.sr_sdes again, after the receiver accepted it", srtcp, "ReplayError",
            received=[hexs(srtcp)]),
    ]


def main() -> None:
    vectors = valid()
    by_id = {v["id"]: bytes.fromhex(v["hex"]) for v in vectors}
    good = {"rtp": by_id["media.rtp.plain"], "rr": by_id["media.rtcp.rr"], "nack": by_id["media.rtcp.nack"],
            "srtp": by_id["media.srtp.first"], "srtcp": by_id["media.srtcp.sr_sdes"], "ext": by_id["media.rtp.first"]}
    doc = {
        "name": "media",
        "description": "RTP/Opus packets with the RFC 6051 ntp-64 extension, RTCP SR/RR/SDES/BYE and generic NACK, "
                       "SRTP and SRTCP (AES_CM_128_HMAC_SHA1_80). context.layer names the parser; srtp/srtcp vectors "
                       "are protected with context.key (master key 16 || master salt 14, RFC 3711 B.3's), rollover "
                       "counter 0, and decode to the plain packet given in 'plain'. context.received lists packets "
                       "the receiver accepted before the vector. Byte fields are lowercase hex; ntp_ns is the NTP "
                       "timestamp as server time (ns since 1970).",
        "spec": "PROTOCOL.md section 5",
        "context": {"key": hexs(KEY), "roc": 0},
        "vectors": vectors + invalid(good),
    }
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
