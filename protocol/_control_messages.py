"""The control messages of spec section 4.2 as frozen dataclasses, one per type (schema: :mod:`.control`).

Attributes are the wire keys. Reliable types have ``id`` (None until a reliable channel assigns one); optional
fields default to None and are left out on the wire. Arrays are tuples; nested maps are dataclasses, except
free-keyed maps (``telemetry`` ``drops``), which are dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from loa.protocol._control_values import ConfigValues, TelemetryValues

__all__ = [
    "Ack",
    "Amp",
    "Board",
    "BoardClear",
    "Bye",
    "Chunk",
    "Config",
    "Fetch",
    "FmPreset",
    "FmPresets",
    "Have",
    "Hello",
    "Join",
    "Leave",
    "Message",
    "Mute",
    "Play",
    "Played",
    "PlayedFrame",
    "Prefetch",
    "Reboot",
    "ReliableMessage",
    "Rotate",
    "Rtcp",
    "SignedAlert",
    "SignedAlertCancel",
    "Source",
    "State",
    "Telemetry",
    "TimeReq",
    "TimeResp",
    "UnknownMessage",
    "Volume",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class FmPreset:
    freq_khz: int
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PlayedFrame:
    """One entry of ``played.log``: on the wire the array ``[bid, ssrc, seq, rtp_ts, at]``."""

    bid: int
    ssrc: int
    seq: int
    rtp_ts: int
    at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    TYPE: ClassVar[str] = "ack"
    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeReq:
    TYPE: ClassVar[str] = "time_req"
    t1: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeResp:
    TYPE: ClassVar[str] = "time_resp"
    t1: int
    t2: int
    t3: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    TYPE: ClassVar[str] = "hello"
    kind: str
    model: str
    fw: str
    caps: tuple[str, ...]
    token: str | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    TYPE: ClassVar[str] = "config"
    values: ConfigValues
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Volume:
    TYPE: ClassVar[str] = "volume"
    level: int
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Mute:
    TYPE: ClassVar[str] = "mute"
    on: bool
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Amp:
    TYPE: ClassVar[str] = "amp"
    on: bool
    preroll_ms: int
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    TYPE: ClassVar[str] = "source"
    src: str
    freq_khz: int | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FmPresets:
    TYPE: ClassVar[str] = "fm_presets"
    presets: tuple[FmPreset, ...]
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Reboot:
    TYPE: ClassVar[str] = "reboot"
    delay_ms: int
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Prefetch:
    TYPE: ClassVar[str] = "prefetch"
    cid: bytes
    size: int
    name: str
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetch:
    TYPE: ClassVar[str] = "fetch"
    cid: bytes
    off: int
    len: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Chunk:
    TYPE: ClassVar[str] = "chunk"
    cid: bytes
    off: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Have:
    TYPE: ClassVar[str] = "have"
    cid: bytes
    ok: bool
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Play:
    TYPE: ClassVar[str] = "play"
    bid: int
    cid: bytes
    at: int
    cls: int
    lvl: int
    policy: str
    zone: str
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Join:
    TYPE: ClassVar[str] = "join"
    bid: int
    ssrc: int
    key: bytes
    cls: int
    lvl: int
    policy: str
    zone: str
    delay_ms: int
    group: str | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Rotate:
    TYPE: ClassVar[str] = "rotate"
    bid: int
    ssrc: int
    key: bytes
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Leave:
    TYPE: ClassVar[str] = "leave"
    bid: int
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedAlert:
    """The ``alert`` message: a signed alert body (verify it with :func:`loa.protocol.alert.verify_alert`)."""

    TYPE: ClassVar[str] = "alert"
    body: bytes
    sig: bytes
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedAlertCancel:
    TYPE: ClassVar[str] = "alert_cancel"
    body: bytes
    sig: bytes
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Board:
    TYPE: ClassVar[str] = "board"
    item: int
    cls: int
    lvl: int
    text: str | None = None
    cid: bytes | None = None
    until: int | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BoardClear:
    TYPE: ClassVar[str] = "board_clear"
    item: int
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Telemetry:
    TYPE: ClassVar[str] = "telemetry"
    v: TelemetryValues
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class State:
    TYPE: ClassVar[str] = "state"
    bid: int | None
    src: str
    since: int
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Rtcp:
    TYPE: ClassVar[str] = "rtcp"
    pkt: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Played:
    TYPE: ClassVar[str] = "played"
    log: tuple[PlayedFrame, ...]
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Bye:
    TYPE: ClassVar[str] = "bye"
    reason: str


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A message of a type this implementation does not know: acknowledge it if it has an ``id``, else ignore."""

    t: str
    id: int | None


Message = (
    Ack
    | TimeReq
    | TimeResp
    | Hello
    | Config
    | Volume
    | Mute
    | Amp
    | Source
    | FmPresets
    | Reboot
    | Prefetch
    | Fetch
    | Chunk
    | Have
    | Play
    | Join
    | Rotate
    | Leave
    | SignedAlert
    | SignedAlertCancel
    | Board
    | BoardClear
    | Telemetry
    | State
    | Rtcp
    | Played
    | Bye
)

ReliableMessage = (
    Hello
    | Config
    | Volume
    | Mute
    | Amp
    | Source
    | FmPresets
    | Reboot
    | Prefetch
    | Have
    | Play
    | Join
    | Rotate
    | Leave
    | SignedAlert
    | SignedAlertCancel
    | Board
    | BoardClear
    | Telemetry
    | State
    | Played
)
