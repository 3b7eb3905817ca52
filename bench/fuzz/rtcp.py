"""Fuzz target ``rtcp``: :func:`~loa.protocol.rtcp.parse_rtcp` on any bytes (compound packets).

Accepted errors: :class:`~loa.protocol.errors.RemoteProtocolError` subclasses. Oracle: the parsed packets
build (``build_rtcp``) into a compound packet that parses back to equal packets (a NACK's lost numbers as a
set: the builder puts them in its own order, section 5.5).
"""

from __future__ import annotations

from loa.bench.fuzz._common import vectors
from loa.protocol.errors import RemoteProtocolError
from loa.protocol.rtcp import GenericNack, RtcpPacket, build_rtcp, parse_rtcp

MAX_LEN = 1300


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer and atheris use
    try:
        packets = parse_rtcp(data)
    except RemoteProtocolError:
        return
    again = parse_rtcp(build_rtcp(packets))
    if _normal(again) != _normal(packets):
        raise AssertionError(f"RTCP packets do not survive a build and a parse: {packets!r} != {again!r}")


def _normal(packets: tuple[RtcpPacket, ...]) -> list[object]:
    return [(p.sender_ssrc, p.media_ssrc, frozenset(p.lost)) if isinstance(p, GenericNack) else p for p in packets]


def seeds() -> dict[str, bytes]:
    return {v["id"]: bytes.fromhex(v["hex"]) for v in vectors("media")["vectors"] if v["context"]["layer"] == "rtcp"}
