"""Fuzz target ``srtp``: SRTP and SRTCP unprotect (libsrtp through pylibsrtp), raw and behind a real key.

The first byte picks a mode:

* 0, 1 - the rest is taken as SRTP (0) or SRTCP (1) and unprotected under the vectors' key;
* 2, 3 - the rest is protected as RTP (2) or RTCP (3) with that key (inputs ``protect`` refuses end there),
  unprotected by a fresh receiver, which must give back exactly the input, then parsed: this reaches the RTP
  and RTCP parsers with packets that passed authentication, as a member of a stream would see them;
* 4, 5 - as 2, 3, but one byte of the protected packet is then changed (position and XOR mask from the
  input): unprotecting it must fail, so a forged packet never passes.

Accepted errors: :class:`~loa.protocol.errors.RemoteProtocolError` subclasses from unprotect and the parsers,
:class:`~loa.protocol.errors.LocalProtocolError` from ``protect`` only (the input is then not a packet we
would send).

One sender and one receiver serve every input: after each input the streams of the SSRCs it used are removed
from both libsrtp sessions, so the next input meets the state a new session would have (libsrtp makes a
stream per SSRC from the key's template, a fraction of the cost of making a session, which derives the keys).
"""

from __future__ import annotations

import contextlib

import pylibsrtp

from loa.bench.fuzz._common import Reader, vectors
from loa.protocol.errors import LocalProtocolError, RemoteProtocolError
from loa.protocol.rtcp import parse_rtcp
from loa.protocol.rtp import parse_rtp
from loa.protocol.srtp import StreamProtector, StreamUnprotector

MAX_LEN = 1300
KEY = bytes.fromhex(vectors("media")["context"]["key"])
SENDER = StreamProtector(KEY)
RECEIVER = StreamUnprotector(KEY)


def _forget(packet: bytes, rtcp: bool) -> None:
    """Remove the stream of ``packet``'s SSRC (if it has one) from both sessions."""
    offset = 4 if rtcp else 8
    if len(packet) < offset + 4:
        return
    ssrc = int.from_bytes(packet[offset : offset + 4], "big")
    for session in (SENDER._session, RECEIVER._session):  # the wrappers keep it private
        with contextlib.suppress(pylibsrtp.Error):  # no stream was made for it
            session.remove_stream(ssrc)


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer and atheris use
    reader = Reader(data)
    mode = reader.byte() % 6
    position = mask = 0
    if mode in (4, 5):
        position, mask = reader.uint(2), reader.byte() or 1
    rtcp = mode % 2 == 1
    packet = reader.rest()
    forged = b""
    try:
        forged = _check(mode, rtcp, packet, position, mask)
    finally:
        _forget(packet, rtcp)
        _forget(forged, rtcp)


def _check(mode: int, rtcp: bool, packet: bytes, position: int, mask: int) -> bytes:
    """Run one input; returns the forged packet (modes 4, 5) so that its stream is removed too."""
    unprotect = RECEIVER.unprotect_rtcp if rtcp else RECEIVER.unprotect
    if mode < 2:
        with contextlib.suppress(RemoteProtocolError):
            unprotect(packet)
        return b""
    try:
        protected = SENDER.protect_rtcp(packet) if rtcp else SENDER.protect(packet)
    except LocalProtocolError:
        return b""
    if mode >= 4:
        forged = bytearray(protected)
        forged[position % len(forged)] ^= mask
        try:
            unprotect(bytes(forged))
        except RemoteProtocolError:
            return bytes(forged)
        raise AssertionError(f"a changed byte at {position % len(forged)} still passed authentication")
    plain = unprotect(protected)
    if plain != packet:
        raise AssertionError("unprotect did not give back the packet that was protected")
    with contextlib.suppress(RemoteProtocolError):
        parse_rtcp(plain) if rtcp else parse_rtp(plain)
    return b""


def seeds() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for v in vectors("media")["vectors"]:
        layer = v["context"]["layer"]
        if layer in ("srtp", "srtcp"):
            out[v["id"]] = bytes((0 if layer == "srtp" else 1,)) + bytes.fromhex(v["hex"])
        elif layer in ("rtp", "rtcp") and "error" not in v:
            mode = 2 if layer == "rtp" else 3
            out[v["id"]] = bytes((mode,)) + bytes.fromhex(v["hex"])
            out[v["id"] + ".forged"] = bytes((mode + 2, 0, 20, 1)) + bytes.fromhex(v["hex"])
    return out
