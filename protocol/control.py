"""Control messages (spec section 4): one frozen dataclass per type, the schema as data, encode and decode.

A control message is one msgpack map. :data:`SCHEMA` maps every type ``t`` to its direction, whether it is
reliable (carries ``id``), and its fields (:class:`loa.protocol._schema.Field`: kind, range, optional). The
values of ``config`` (section 4.6) and ``telemetry`` (section 4.8) are tables of the same kind:
:data:`CONFIG_FIELDS` and :data:`TELEMETRY_FIELDS`.

:func:`encode` writes ``t`` first, then ``id``, then the fields with keys sorted by their UTF-8 bytes (nested
maps sorted too), every integer in its shortest form, so equal messages give equal bytes. It raises
:class:`LocalProtocolError` for a message that breaks the schema (a volume of 300, a reliable message without
``id``) and sends nothing.

:func:`decode` accepts exactly one map and raises, for any input bytes, only :class:`OversizeError`
(size, entry, string and nesting limits), :class:`MalformedError` (not one msgpack map, trailing bytes, no
str ``t``, duplicate keys) or :class:`FieldError` (a known type with a missing, wrong-typed or out-of-range
field, or a bad ``id``). A type it does not know is not an error: it returns :class:`UnknownMessage` so the
caller can acknowledge and ignore it. Unknown fields are ignored.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loa.protocol._control_messages import (
    Ack,
    Amp,
    Board,
    BoardClear,
    Bye,
    Chunk,
    Config,
    Fetch,
    FmPreset,
    FmPresets,
    Have,
    Hello,
    Join,
    Leave,
    Message,
    Mute,
    Play,
    Played,
    PlayedFrame,
    Prefetch,
    Reboot,
    ReliableMessage,
    Rotate,
    Rtcp,
    SignedAlert,
    SignedAlertCancel,
    Source,
    State,
    Telemetry,
    TimeReq,
    TimeResp,
    UnknownMessage,
    Volume,
)
from loa.protocol._control_values import (
    CONFIG_FIELDS,
    CONFIG_RULES,
    TELEMETRY_FIELDS,
    ConfigValues,
    TelemetryValues,
)
from loa.protocol._schema import (
    MAX_MESSAGE,
    U32_MAX,
    AtLeastOne,
    Field,
    Kind,
    Record,
    RequiredIf,
    Rule,
    check_limits,
    pack,
    read,
    read_record,
    unpack_map,
    write_record,
)
from loa.protocol.errors import FieldError, LocalProtocolError, MalformedError, RemoteProtocolError

__all__ = [
    "CONFIG_FIELDS",
    "MAX_MESSAGE",
    "SCHEMA",
    "TELEMETRY_FIELDS",
    "Ack",
    "Amp",
    "Board",
    "BoardClear",
    "Bye",
    "Chunk",
    "Config",
    "ConfigValues",
    "Direction",
    "Envelope",
    "Fetch",
    "FmPreset",
    "FmPresets",
    "Have",
    "Hello",
    "Join",
    "Leave",
    "Message",
    "MessageSpec",
    "Mute",
    "Play",
    "Played",
    "PlayedFrame",
    "Prefetch",
    "Reboot",
    "ReliableMessage",
    "Rotate",
    "Rtcp",
    "Side",
    "SignedAlert",
    "SignedAlertCancel",
    "Source",
    "State",
    "Telemetry",
    "TelemetryValues",
    "TimeReq",
    "TimeResp",
    "UnknownMessage",
    "Volume",
    "decode",
    "decode_envelope",
    "decode_message",
    "encode",
    "from_map",
    "is_reliable",
    "to_map",
]


class Direction(enum.StrEnum):
    S2D = "S2D"
    D2S = "D2S"
    BOTH = "both"


class Side(enum.StrEnum):
    """The receiving side, for :func:`decode`'s direction check."""

    SERVER = "server"
    DEVICE = "device"


_ACCEPTS = {Side.SERVER: (Direction.D2S, Direction.BOTH), Side.DEVICE: (Direction.S2D, Direction.BOTH)}


def _uint(lo: int = 0, hi: int = U32_MAX, **kw: Any) -> Field:
    return Field(Kind.UINT, lo, hi, **kw)


def _int(**kw: Any) -> Field:
    return Field(Kind.INT, **kw)


def _str(lo: int = 0, hi: int = 512, **kw: Any) -> Field:
    return Field(Kind.STR, lo, hi, **kw)


def _bin(lo: int, hi: int, **kw: Any) -> Field:
    return Field(Kind.BIN, lo, hi, **kw)


_ID = _uint(1, U32_MAX)
_BOOL = Field(Kind.BOOL)
_CID = _bin(32, 32, doc="SHA-256 of the Ogg Opus file")
_KEY = _bin(30, 30, doc="SRTP master key (16) followed by master salt (14)")
_SIG = _bin(64, 64, doc="Ed25519 signature")
_BID = _uint(doc="broadcast id")
_CLS = _uint(0, 2, doc="class: 0 normal, 1 priority, 2 emergency")
_LVL = _uint(0, 3, doc="level: 0 commune, 1 district, 2 province, 3 national")
_POLICY = _str(choices=("resume", "drop"))
_ZONE = _str(1, 64, doc="zone code")
_TIME = _int(doc="server time, ns")
_FREQ = _uint(64000, 108000, unit="kHz")


_FM_PRESET = Record("fm preset", {"freq_khz": _FREQ, "name": _str(0, 64)}, FmPreset)
_PLAYED_FRAME = Record(
    "played frame",
    {"bid": _BID, "ssrc": _uint(), "seq": _uint(0, 0xFFFF), "rtp_ts": _uint(), "at": _TIME},
    PlayedFrame,
    positional=True,
)
_CONFIG_VALUES = Record("config values", CONFIG_FIELDS, ConfigValues, CONFIG_RULES)
_TELEMETRY_VALUES = Record("telemetry values", TELEMETRY_FIELDS, TelemetryValues)


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """One row of the message table of spec section 4.2."""

    t: str
    direction: Direction
    reliable: bool
    record: Record
    doc: str


def _row(
    cls: type[Any], d: Direction, reliable: bool, fields: Mapping[str, Field], doc: str, *, rules: tuple[Rule, ...] = ()
) -> MessageSpec:
    return MessageSpec(cls.TYPE, d, reliable, Record(cls.TYPE, fields, cls, rules), doc)


_S2D, _D2S, _BOTH = Direction.S2D, Direction.D2S, Direction.BOTH
_RANK = {"cls": _CLS, "lvl": _LVL, "policy": _POLICY, "zone": _ZONE}

SCHEMA: Mapping[str, MessageSpec] = {
    spec.t: spec
    for spec in (
        _row(Ack, _BOTH, False, {"ids": Field(Kind.ARRAY, 1, 64, items=_ID)}, "acknowledges reliable messages"),
        _row(TimeReq, _D2S, False, {"t1": _int(doc="device clock, ns")}, "clock probe"),
        _row(TimeResp, _S2D, False, {"t1": _int(doc="device clock, echoed"), "t2": _TIME, "t3": _TIME}, "clock answer"),
        _row(
            Hello,
            _D2S,
            True,
            {
                "kind": _str(choices=("speaker", "board")),
                "model": _str(1, 64),
                "fw": _str(1, 64),
                "caps": Field(Kind.ARRAY, 0, 64, items=_str(1, 32)),
                "token": _str(1, 128, optional=True),
            },
            "first message of each device start",
        ),
        _row(Config, _S2D, True, {"values": Field(Kind.RECORD, record=_CONFIG_VALUES)}, "device settings"),
        _row(Volume, _S2D, True, {"level": _uint(0, 100, unit="%")}, "output volume"),
        _row(Mute, _S2D, True, {"on": _BOOL}, "mute output"),
        _row(Amp, _S2D, True, {"on": _BOOL, "preroll_ms": _uint(0, 120000, unit="ms")}, "amplifier power"),
        _row(
            Source,
            _S2D,
            True,
            {
                "src": _str(choices=("ip", "fm", "line", "local")),
                "freq_khz": _uint(64000, 108000, optional=True),
            },
            "select the audio source",
            rules=(RequiredIf("freq_khz", "src", "fm"),),
        ),
        _row(
            FmPresets,
            _S2D,
            True,
            {
                "presets": Field(Kind.ARRAY, 0, 32, items=Field(Kind.RECORD, record=_FM_PRESET)),
            },
            "FM stations to relay",
        ),
        _row(Reboot, _S2D, True, {"delay_ms": _uint(0, 3600000, unit="ms")}, "reboot after the delay"),
        _row(
            Prefetch,
            _S2D,
            True,
            {"cid": _CID, "size": _uint(1, U32_MAX, unit="bytes"), "name": _str(0, 128)},
            "fetch a programme",
        ),
        _row(Fetch, _D2S, False, {"cid": _CID, "off": _uint(), "len": _uint(1, 1024)}, "ask for content"),
        _row(Chunk, _S2D, False, {"cid": _CID, "off": _uint(), "data": _bin(0, 1024)}, "a piece of content"),
        _row(Have, _D2S, True, {"cid": _CID, "ok": _BOOL}, "content stored and verified, or given up"),
        _row(Play, _S2D, True, {"bid": _BID, "cid": _CID, "at": _TIME, **_RANK}, "play stored content"),
        _row(
            Join,
            _S2D,
            True,
            {
                "bid": _BID,
                "ssrc": _uint(),
                "key": _KEY,
                **_RANK,
                "delay_ms": _uint(0, 10000, unit="ms"),
                "group": _str(3, 64, optional=True),
            },
            "join a live stream",
        ),
        _row(Rotate, _S2D, True, {"bid": _BID, "ssrc": _uint(), "key": _KEY}, "new SSRC and key"),
        _row(Leave, _S2D, True, {"bid": _BID}, "the broadcast ended"),
        _row(SignedAlert, _S2D, True, {"body": _bin(1, MAX_MESSAGE), "sig": _SIG}, "a signed alert"),
        _row(SignedAlertCancel, _S2D, True, {"body": _bin(1, MAX_MESSAGE), "sig": _SIG}, "a signed cancel"),
        _row(
            Board,
            _S2D,
            True,
            {
                "item": _uint(),
                "cls": _CLS,
                "lvl": _LVL,
                "text": _str(0, 512, optional=True),
                "cid": _bin(32, 32, optional=True),
                "until": _int(optional=True, nullable=True),
            },
            "show an item on an e-board",
            rules=(AtLeastOne(("text", "cid")),),
        ),
        _row(BoardClear, _S2D, True, {"item": _uint()}, "remove an item"),
        _row(Telemetry, _D2S, True, {"v": Field(Kind.RECORD, record=_TELEMETRY_VALUES)}, "device status"),
        _row(
            State,
            _D2S,
            True,
            {
                "bid": _uint(nullable=True),
                "src": _str(choices=("ip", "fm", "line", "local", "mic", "idle")),
                "since": _TIME,
            },
            "what the device is playing now",
        ),
        _row(Rtcp, _D2S, False, {"pkt": _bin(1, 1024)}, "an RTCP compound packet"),
        _row(
            Played,
            _D2S,
            True,
            {
                "log": Field(Kind.ARRAY, 0, 32, items=Field(Kind.RECORD, record=_PLAYED_FRAME)),
            },
            "frames played (test hook)",
        ),
        _row(Bye, _BOTH, False, {"reason": _str(0, 128)}, "closing the session"),
    )
}


def is_reliable(t: str) -> bool:
    """Whether messages of type ``t`` carry an ``id`` and are acknowledged (False for unknown types)."""
    spec = SCHEMA.get(t)
    return spec is not None and spec.reliable


@dataclass(frozen=True, slots=True)
class Envelope:
    """A received map whose ``t`` is a str and whose ``id`` (where it counts) is valid; fields not yet checked."""

    t: str
    id: int | None
    fields: Mapping[str, Any]


def decode_envelope(data: bytes) -> Envelope:
    """First half of :func:`decode`: one map with a str ``t``, and ``id`` checked on reliable and unknown types.

    An ``id`` on a known unreliable type is ignored like any unknown field. Raises :class:`OversizeError`,
    :class:`MalformedError`, or :class:`FieldError` (bad ``id``).
    """
    return _envelope(unpack_map(data))


def _envelope(fields: Mapping[str, Any]) -> Envelope:
    t = fields.get("t")
    if type(t) is not str:
        raise MalformedError("no str 't': not a control message")
    spec = SCHEMA.get(t)
    msg_id = None
    if "id" in fields and (spec is None or spec.reliable):
        msg_id = read(_ID, fields["id"], f"{t}.id")
    return Envelope(t, msg_id, fields)


def decode_message(envelope: Envelope, *, side: Side | None = None) -> Message | UnknownMessage:
    """Second half of :func:`decode`: check the fields of a known type and build its message.

    With ``side`` (the receiving side), a type defined only for the other direction is returned as
    :class:`UnknownMessage`. Raises :class:`FieldError` (missing ``id`` on a reliable type included).
    """
    spec = SCHEMA.get(envelope.t)
    if spec is None or (side is not None and spec.direction not in _ACCEPTS[side]):
        return UnknownMessage(envelope.t, envelope.id)
    if spec.reliable and envelope.id is None:
        raise FieldError(f"{spec.t}: reliable message without 'id'")
    extra = {"id": envelope.id} if spec.reliable else {}
    message: Message = read_record(spec.record, envelope.fields, spec.t, **extra)
    return message


def decode(data: bytes, *, side: Side | None = None) -> Message | UnknownMessage:
    """Decode one control message (the plaintext of one transport message); see the module docstring.

    Raises only :class:`OversizeError`, :class:`MalformedError` and :class:`FieldError`.
    """
    return decode_message(decode_envelope(data), side=side)


def from_map(fields: Mapping[str, Any], *, side: Side | None = None) -> Message | UnknownMessage:
    """Like :func:`decode`, from a map already decoded (as msgpack would: lists, dicts, bytes for bin)."""
    check_limits(dict(fields))
    return decode_message(_envelope(fields), side=side)


def to_map(message: Message) -> dict[str, Any]:
    """The wire map of ``message``: ``t``, ``id`` (reliable types), then fields sorted, absent optionals left out.

    Raises :class:`LocalProtocolError` if ``message`` is not a control message or its values have the wrong
    shape; values are not range-checked here (:func:`encode` does that).
    """
    spec = SCHEMA.get(getattr(message, "TYPE", ""))
    if spec is None or type(message) is not spec.record.build:
        raise LocalProtocolError(f"{type(message).__name__} is not a control message that can be sent")
    out: dict[str, Any] = {"t": spec.t}
    if spec.reliable:
        out["id"] = getattr(message, "id", None)
    out.update(write_record(spec.record, message))
    return out


def encode(message: Message) -> bytes:
    """The msgpack bytes of ``message``, deterministic (``t``, ``id``, then sorted keys).

    Raises :class:`LocalProtocolError` (nothing encoded) for a reliable message without an ``id`` in
    1..2^32-1, a value out of range or of the wrong type, or a result over the section 4.1 limits.
    """
    wire = to_map(message)
    if "id" in wire and (type(wire["id"]) is not int or not 1 <= wire["id"] <= U32_MAX):
        raise LocalProtocolError(f"{wire['t']}: reliable message needs an id in 1..2^32-1, has {wire['id']!r}")
    try:
        check_limits(wire)
        decode_message(_envelope(wire))
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"invalid {wire['t']}: {exc}") from exc
    data = pack(wire)
    if len(data) > MAX_MESSAGE:
        raise LocalProtocolError(f"{wire['t']}: {len(data)} bytes, more than {MAX_MESSAGE}")
    return data


def _check_table() -> None:
    for spec in SCHEMA.values():
        names = [f.name for f in dataclasses.fields(spec.record.build)]
        expected = [*spec.record.fields, *(["id"] if spec.reliable else [])]
        if sorted(names) != sorted(expected):  # pragma: no cover - guards the table against drift
            raise AssertionError(f"{spec.t}: dataclass fields {names} differ from the schema {expected}")


_check_table()
