"""Fuzz target ``sdp``: :func:`~loa.protocol.sdp.parse_sdp` on any text (the input decoded as UTF-8, errors
replaced).

Accepted errors: ``MalformedError`` and ``FieldError`` (:class:`~loa.protocol.errors.RemoteProtocolError`).
Oracle: a description that parses writes out (``write_sdp``) without error and parses back to itself.
"""

from __future__ import annotations

from loa.protocol.errors import RemoteProtocolError
from loa.protocol.sdp import SdpDescription, parse_sdp, write_sdp

MAX_LEN = 2048


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer and atheris use
    try:
        description = parse_sdp(data.decode("utf-8", "replace"))
    except RemoteProtocolError:
        return
    again = parse_sdp(write_sdp(description))
    if again != description:
        raise AssertionError(f"{description!r} does not survive a write and a parse: {again!r}")


def seeds() -> dict[str, bytes]:
    examples = {
        "unicast": SdpDescription("127.0.0.1", 5004),
        "srtp": SdpDescription("192.0.2.1", 5004, key=bytes(range(30)), ptime=20, rtcp_mux=True),
        "multicast": SdpDescription("239.1.2.3", 5006, ttl=16, fec=False, session_id=7, session_version=2),
        "ipv6": SdpDescription("2001:db8::1", 40000, payload_type=96, name="loa demo"),
    }
    return {name: write_sdp(d).encode() for name, d in examples.items()}
