"""Fuzz target ``datagram``: the first look at every UDP datagram (demultiplexing, then the loa header).

Accepted errors: :class:`~loa.protocol.errors.RemoteProtocolError` subclasses. Oracles: a datagram
:func:`~loa.protocol.datagram.parse` accepts is one :func:`~loa.protocol.datagram.classify` calls ``"loa"``,
and writing the parsed message gives back the same bytes; a restart notice (type ``0x06``, section 3.16) goes
through a device's checks under the vectors' notice key and session boot, and one that passes is one
:func:`~loa.protocol.restart.encode_notice` writes byte for byte.
"""

from __future__ import annotations

from loa.bench.fuzz._common import vectors
from loa.protocol.datagram import classify, parse
from loa.protocol.errors import RemoteProtocolError
from loa.protocol.restart import check_notice, encode_notice

_CONTEXT = vectors("session")["context"]
NOTICE_KEY = bytes.fromhex(_CONTEXT["notice_key"])
SESSION_BOOT = int(_CONTEXT["server_boot"])

MAX_LEN = 1300


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer and atheris use
    try:
        kind: str | None = classify(data)
    except RemoteProtocolError:
        kind = None
    if kind == "notice":
        try:
            new_boot = check_notice(NOTICE_KEY, data, SESSION_BOOT)
        except RemoteProtocolError:
            pass
        else:
            if encode_notice(NOTICE_KEY, SESSION_BOOT, new_boot) != data:
                raise AssertionError("a notice passed the checks but is not the one its boots give")
    try:
        message = parse(data)
    except RemoteProtocolError:
        return
    if kind != "loa":
        raise AssertionError(f"parse accepted a datagram that classify calls {kind!r}")
    if message.to_bytes() != data:
        raise AssertionError("a parsed datagram does not write back to the same bytes")


def seeds() -> dict[str, bytes]:
    out = {v["id"]: bytes.fromhex(v["hex"]) for v in vectors("session")["vectors"]}
    out.update({v["id"]: bytes.fromhex(v["hex"]) for v in vectors("media")["vectors"]})
    return out
