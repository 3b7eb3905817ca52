"""The SDP of section 5.3: how a standard RTP receiver (ffmpeg, GStreamer, a hardware speaker) plays a stream.

:func:`write_sdp` produces the description; :func:`parse_sdp` reads back exactly that dialect (and nothing
else), so that tests and tools can check what was written. Lines end with CRLF (RFC 8866); the parser also
accepts bare LF.

Failure semantics: :func:`parse_sdp` raises ``MalformedError`` for a text that is not this dialect (missing,
extra or reordered lines, unknown attributes) and ``FieldError`` for a value out of range (port, payload type,
key length, address, an empty or unprintable session name). :func:`write_sdp` raises
:class:`~loa.protocol.errors.LocalProtocolError` for a description that cannot be written.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass

from loa.protocol.errors import FieldError, LocalProtocolError, MalformedError
from loa.protocol.rtp import NTP64_EXT_ID, OPUS_PAYLOAD_TYPE
from loa.protocol.srtp import SRTP_KEY_SIZE, SRTP_SUITE

__all__ = ["NTP64_URI", "SdpDescription", "parse_sdp", "write_sdp"]

NTP64_URI = "urn:ietf:params:rtp-hdrext:ntp-64"


@dataclass(frozen=True, slots=True)
class SdpDescription:
    """One Opus audio stream to ``address``:``port``.

    ``key`` (30 bytes: master key ‖ master salt) makes the profile ``RTP/SAVP`` with an ``a=crypto`` line;
    without it the profile is ``RTP/AVP``. The RFC 6051 ntp-64 element is always declared
    (``a=extmap``, RFC 8285). ``ttl`` is written for IPv4 multicast groups only. ``ptime`` (ms)
    adds ``a=ptime``. ``rtcp_mux`` adds ``a=rtcp-mux`` (RFC 5761): sender reports arrive on ``port`` itself.
    """

    address: str
    port: int
    key: bytes | None = None
    payload_type: int = OPUS_PAYLOAD_TYPE
    fec: bool = True
    ptime: int | None = None
    rtcp_mux: bool = False
    session_id: int = 0
    session_version: int = 0
    name: str = "loa"
    ttl: int | None = None


def _family(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise FieldError(f"{address!r} is not an IP address") from None
    return "IP4" if ip.version == 4 else "IP6"


def write_sdp(desc: SdpDescription) -> str:
    """The SDP text (CRLF line ends). Raises :class:`LocalProtocolError` for out-of-range fields."""
    try:
        family = _family(desc.address)
    except FieldError as exc:
        raise LocalProtocolError(str(exc)) from None
    if not 1 <= desc.port <= 65535 or not 96 <= desc.payload_type <= 127:
        raise LocalProtocolError("port must be 1..65535 and the payload type dynamic (96..127)")
    if desc.key is not None and len(desc.key) != SRTP_KEY_SIZE:
        raise LocalProtocolError(f"SRTP key must be {SRTP_KEY_SIZE} bytes")
    if not desc.name.isprintable() or not desc.name or desc.session_id < 0 or desc.session_version < 0:
        raise LocalProtocolError("session name must be printable, session id and version non-negative")
    connection = desc.address
    if desc.ttl is not None:
        if family != "IP4" or not ipaddress.ip_address(desc.address).is_multicast or not 0 <= desc.ttl <= 255:
            raise LocalProtocolError("ttl is for IPv4 multicast groups only, 0..255")
        connection = f"{desc.address}/{desc.ttl}"
    pt = desc.payload_type
    lines = [
        "v=0",
        f"o=- {desc.session_id} {desc.session_version} IN {family} {desc.address}",
        f"s={desc.name}",
        f"c=IN {family} {connection}",
        "t=0 0",
        f"m=audio {desc.port} {'RTP/SAVP' if desc.key is not None else 'RTP/AVP'} {pt}",
        f"a=rtpmap:{pt} opus/48000/2",
        f"a=fmtp:{pt} sprop-stereo=0;stereo=0;useinbandfec={int(desc.fec)}",
    ]
    if desc.ptime is not None:
        lines.append(f"a=ptime:{desc.ptime}")
    lines.append(f"a=extmap:{NTP64_EXT_ID} {NTP64_URI}")
    if desc.rtcp_mux:
        lines.append("a=rtcp-mux")
    if desc.key is not None:
        lines.append(f"a=crypto:1 {SRTP_SUITE} inline:{base64.b64encode(desc.key).decode('ascii')}")
    return "".join(line + "\r\n" for line in lines)


def _expect(lines: list[str], prefix: str) -> str:
    if not lines or not lines[0].startswith(prefix):
        got = lines[0] if lines else "end of text"
        raise MalformedError(f"expected a line starting {prefix!r}, got {got!r}")
    return lines.pop(0)[len(prefix) :]


def _int(text: str, low: int, high: int, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise FieldError(f"{what} {text!r} is not an integer in {low}..{high}")
    return int(text)


def parse_sdp(text: str) -> SdpDescription:
    """Parse SDP written by :func:`write_sdp` (see the module docstring for the errors)."""
    if not text.endswith("\n"):
        raise MalformedError("SDP must end with a line break")
    lines = [line.removesuffix("\r") for line in text[:-1].split("\n")]
    if _expect(lines, "v=") != "0":
        raise MalformedError("SDP version must be 0")
    origin = _expect(lines, "o=- ").split(" ")
    if len(origin) != 5 or origin[2] != "IN":
        raise MalformedError("origin line must be 'o=- <id> <version> IN <family> <address>'")
    session_id = _int(origin[0], 0, 2**64 - 1, "session id")
    session_version = _int(origin[1], 0, 2**64 - 1, "session version")
    name = _expect(lines, "s=")
    if not name or not name.isprintable():
        raise FieldError(f"session name {name!r} is empty or not printable")
    conn = _expect(lines, "c=IN ").split(" ")
    if len(conn) != 2:
        raise MalformedError("connection line must be 'c=IN <family> <address>'")
    address, _, ttl_text = conn[1].partition("/")
    family = _family(address)
    if conn[0] != family or origin[3] != family or origin[4] != address:
        raise FieldError("address family or origin address does not match the connection line")
    ttl = _int(ttl_text, 0, 255, "ttl") if ttl_text else None
    if _expect(lines, "t=") != "0 0":
        raise MalformedError("timing must be 't=0 0'")
    media = _expect(lines, "m=audio ").split(" ")
    if len(media) != 3 or media[1] not in ("RTP/AVP", "RTP/SAVP"):
        raise MalformedError("media line must be 'm=audio <port> RTP/AVP|RTP/SAVP <pt>'")
    port = _int(media[0], 1, 65535, "port")
    pt = _int(media[2], 96, 127, "payload type")
    if _expect(lines, f"a=rtpmap:{pt} ") != "opus/48000/2":
        raise MalformedError("rtpmap must be 'opus/48000/2'")
    fmtp = _expect(lines, f"a=fmtp:{pt} ")
    if fmtp not in ("sprop-stereo=0;stereo=0;useinbandfec=1", "sprop-stereo=0;stereo=0;useinbandfec=0"):
        raise MalformedError(f"unexpected fmtp {fmtp!r}")
    ptime = None
    if lines and lines[0].startswith("a=ptime:"):
        ptime = _int(lines.pop(0)[len("a=ptime:") :], 1, 120, "ptime")
    if _expect(lines, "a=extmap:") != f"{NTP64_EXT_ID} {NTP64_URI}":
        raise MalformedError(f"extmap must map ID {NTP64_EXT_ID} to {NTP64_URI}")
    rtcp_mux = bool(lines) and lines[0] == "a=rtcp-mux"
    if rtcp_mux:
        lines.pop(0)
    key = None
    if media[1] == "RTP/SAVP":
        key = _crypto_key(_expect(lines, f"a=crypto:1 {SRTP_SUITE} inline:"))
    if lines:
        raise MalformedError(f"unexpected line {lines[0]!r}")
    return SdpDescription(
        address=address,
        port=port,
        key=key,
        payload_type=pt,
        fec=fmtp.endswith("1"),
        ptime=ptime,
        rtcp_mux=rtcp_mux,
        session_id=session_id,
        session_version=session_version,
        name=name,
        ttl=ttl,
    )


def _crypto_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise FieldError("a=crypto inline key is not base64") from None
    if len(key) != SRTP_KEY_SIZE:
        raise FieldError(f"a=crypto inline key is {len(key)} bytes, not {SRTP_KEY_SIZE}")
    return key
