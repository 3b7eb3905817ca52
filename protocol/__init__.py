"""The loa wire protocol (spec/PROTOCOL.md), sans-I/O: formats, state machines, crypto composition.

Nothing here opens a socket or reads a clock: callers pass datagrams and ``now`` in, and take events and
datagrams out. The names below are the public surface; the submodules (``loa.protocol.control``,
``loa.protocol.rtp``...) hold the full detail of each layer.
"""

from loa.protocol.alert import Alert, AlertCancel, key_id, sign_alert, sign_cancel, verify_alert, verify_cancel
from loa.protocol.clock import ClockEstimator, clock_sample
from loa.protocol.connection import (
    Connected,
    ConnectionStatistics,
    DeviceConnection,
    Disconnected,
    Received,
    ServerConnection,
)
from loa.protocol.control import decode, encode
from loa.protocol.datagram import MAX_DATAGRAM, classify
from loa.protocol.errors import (
    AuthError,
    BadLengthError,
    BadMacError,
    ExpiredError,
    FieldError,
    LocalProtocolError,
    MalformedError,
    OversizeError,
    ProtocolError,
    RateLimitError,
    RemoteProtocolError,
    ReplayError,
    ReservedBitsError,
    SignatureError,
    TruncatedError,
    UnknownKeyError,
    UnknownTypeError,
    UnknownVersionError,
    WrongZoneError,
)
from loa.protocol.priority import Arbiter, Class, Level, Policy, rank
from loa.protocol.rtcp import build_rtcp, parse_rtcp
from loa.protocol.rtp import RtpPacket, parse_rtp
from loa.protocol.sdp import SdpDescription, parse_sdp, write_sdp
from loa.protocol.session import DeviceSession, ServerEndpoint, device_id
from loa.protocol.srtp import StreamProtector, StreamUnprotector

__all__ = [
    "MAX_DATAGRAM",
    "Alert",
    "AlertCancel",
    "Arbiter",
    "AuthError",
    "BadLengthError",
    "BadMacError",
    "Class",
    "ClockEstimator",
    "Connected",
    "ConnectionStatistics",
    "DeviceConnection",
    "DeviceSession",
    "Disconnected",
    "ExpiredError",
    "FieldError",
    "Level",
    "LocalProtocolError",
    "MalformedError",
    "OversizeError",
    "Policy",
    "ProtocolError",
    "RateLimitError",
    "Received",
    "RemoteProtocolError",
    "ReplayError",
    "ReservedBitsError",
    "RtpPacket",
    "SdpDescription",
    "ServerConnection",
    "ServerEndpoint",
    "SignatureError",
    "StreamProtector",
    "StreamUnprotector",
    "TruncatedError",
    "UnknownKeyError",
    "UnknownTypeError",
    "UnknownVersionError",
    "WrongZoneError",
    "build_rtcp",
    "classify",
    "clock_sample",
    "decode",
    "device_id",
    "encode",
    "key_id",
    "parse_rtcp",
    "parse_rtp",
    "parse_sdp",
    "rank",
    "sign_alert",
    "sign_cancel",
    "verify_alert",
    "verify_cancel",
    "write_sdp",
]
