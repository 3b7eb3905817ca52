"""Site-wide settings of a streamer, and what its parts need from the device layer (:class:`DeviceLink`)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from loa.codecs import Application, OpusEncoder
from loa.protocol.control import BoardClear, ConfigValues, Message, ReliableMessage
from loa.streamer.status import DeviceRuntime

__all__ = ["DeviceLink", "EncoderSettings", "Settings"]

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class EncoderSettings:
    """Opus settings of live streams: FEC on, sized for the loss of 4G links (PROTOCOL.md section 5.1)."""

    bitrate: int = 32_000
    fec: bool = True
    packet_loss_percent: int = 10
    application: Application = "audio"

    def encoder(self) -> OpusEncoder:
        return OpusEncoder(frame_ms=20, bitrate=self.bitrate, fec=self.fec,
                           packet_loss_percent=self.packet_loss_percent, application=self.application)


@dataclass(frozen=True, slots=True)
class Settings:
    """Site-wide values.

    * ``config``: the ``config`` every device gets (its ``zones`` path is added per device);
    * ``volume``: the volume of devices that have none of their own;
    * ``delay_ms``: the playout delay put in ``join``;
    * ``start_lead_s``: how long after its ``join`` messages a live stream's first frame leaves, so that the key
      is there before the audio;
    * ``encoder``: the Opus settings of live streams;
    * ``play_lead_s``: how long before its start a ``play`` goes to members that have not reported the content;
    * ``chunk_rate``, ``chunk_burst``: the per-device limit on ``chunk`` answers (per second, at once);
    * ``alert_ttl_s``: the lifetime of alerts signed here when none is given.
    """

    config: ConfigValues = field(default_factory=lambda: ConfigValues(delay_ms=500))
    volume: int = 80
    delay_ms: int = 500
    start_lead_s: float = 0.1
    encoder: EncoderSettings = EncoderSettings()
    play_lead_s: float = 10.0
    chunk_rate: float = 400.0
    chunk_burst: int = 32
    alert_ttl_s: float = 3600.0


class DeviceLink(Protocol):
    """What the broadcast managers need from the device layer (the core implements it)."""

    def send(self, key: bytes, message: Message, now: float) -> int | None:
        """Send a reliable message (queued until the device has a session); its id, or None if refused."""

    def send_tracked(self, key: bytes, tag: Hashable, message: Message, now: float) -> int | None:
        """As :meth:`send`, unless the message last sent under ``tag`` is still unacknowledged (it is on its
        way, and a copy would be a duplicate): then its id is returned and nothing is sent."""

    def send_many(self, keys: Sequence[bytes], message: ReliableMessage, now: float) -> list[int | None]:
        """:meth:`send` to every device of ``keys``, the message encoded once; the ids in the order of ``keys``."""

    def send_tracked_many(self, keys: Sequence[bytes], tag: Hashable, message: ReliableMessage,
                          now: float) -> None:
        """:meth:`send_tracked` to every device of ``keys``, the message encoded once."""

    def end(self, key: bytes, bid: int, message: ReliableMessage | None, now: float, *,
            since: float | None) -> int | None:
        """Broadcast ``bid`` is over for ``key``, and ``message`` (``leave``, ``alert_cancel`` or None) says so.
        What the device was sent of ``bid`` and has not received is taken back, and ``message`` is not sent when
        the device has held nothing of ``bid`` (it lost its session before ``since``, when this run first sent
        anything of ``bid``; None: unknown). The message's id, or None when not sent."""

    def end_item(self, key: bytes, item: int, message: BoardClear | None, now: float, *,
                 since: float | None) -> int | None:
        """As :meth:`end`, for board item ``item`` (cleared, its zones left, or expired), with ``board_clear`` or
        None: the item's unsent ``board`` is taken back."""

    def send_beacon(self, keys: Sequence[bytes], datagram: bytes) -> int:
        """Queue ``datagram`` (an alert beacon: bytes that need no sealing) to the session address of every device
        of ``keys`` that has a confirmed session, ahead of everything sealed; how many it goes to."""

    def acked(self, key: bytes, msg_id: int) -> bool:
        """Whether reliable message ``msg_id`` to ``key`` has been acknowledged (or taken back unsent)."""

    def online_address(self, key: bytes) -> Address | None:
        """The session address of ``key`` while it has a session, else None."""

    def runtime(self, key: bytes) -> DeviceRuntime:
        """The device's runtime record (created if missing)."""
