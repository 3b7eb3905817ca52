"""Fuzz target ``rtp``: :func:`~loa.protocol.rtp.parse_rtp` on any bytes.

Accepted errors: :class:`~loa.protocol.errors.RemoteProtocolError` subclasses. Oracle: a parsed packet writes
out (``to_bytes``) and parses back to an equal packet, and its ``ntp64`` can be read.
"""

from __future__ import annotations

from loa.bench.fuzz._common import vectors
from loa.protocol.errors import RemoteProtocolError
from loa.protocol.rtp import parse_rtp

MAX_LEN = 1300


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer and atheris use
    try:
        packet = parse_rtp(data)
    except RemoteProtocolError:
        return
    _ = packet.ntp64
    again = parse_rtp(packet.to_bytes())
    if again != packet:
        raise AssertionError(f"RTP packet does not survive a write and a parse: {packet!r} != {again!r}")


def seeds() -> dict[str, bytes]:
    media = vectors("media")["vectors"]
    out = {v["id"]: bytes.fromhex(v["hex"]) for v in media if v["context"]["layer"] == "rtp"}
    out.update({v["id"]: bytes.fromhex(v["plain"]) for v in media if v["context"]["layer"] == "srtp" and "plain" in v})
    return out
