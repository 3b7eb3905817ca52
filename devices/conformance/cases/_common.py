"""Steps and readings shared by the cases."""

from __future__ import annotations

from collections.abc import Callable

from loa.devices.conformance.context import Context
from loa.devices.conformance.kit import Arrival
from loa.protocol.control import Ack, Message, encode

__all__ = ["RAW_ID_BASE", "ack_count", "inits", "raw_reliable", "sender_index", "transports_from_device"]

RAW_ID_BASE = 600  # ids the cases give their hand-made reliable messages (the kit's own channel stays far below)


def ack_count(ctx: Context, msg_id: int, after: float = -1.0) -> int:
    """How many times ``msg_id`` was listed in the device's acks that arrived after case time ``after``."""
    total = 0
    for p in ctx.kit.plaintexts:
        if p.t > after and isinstance(p.message, Ack):
            total += list(p.message.ids).count(msg_id)
    return total


def raw_reliable(ctx: Context, make: Callable[[int], Message]) -> tuple[int, bytes]:
    """A reliable message with a case-chosen id, encoded (not sent): ``(id, plaintext)``."""
    ctx._bids += 1
    msg_id = RAW_ID_BASE + ctx._bids % 300
    return msg_id, encode(make(msg_id))


def inits(ctx: Context) -> list[Arrival]:
    return [a for a in ctx.kit.arrivals if a.data[:1] == b"\x01"]


def transports_from_device(ctx: Context) -> list[Arrival]:
    return [a for a in ctx.kit.arrivals if a.data[:1] == b"\x04" and len(a.data) >= 32]


def sender_index(init: bytes) -> int:
    return int.from_bytes(init[4:8], "big")
