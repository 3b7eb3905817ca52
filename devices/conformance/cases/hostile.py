"""Cases of sections 8 and 9: hostile datagrams (oversized, garbage, floods) and amplification."""

from __future__ import annotations

import os
import random

import anyio
import msgpack

from loa.devices.conformance.cases._common import ack_count, raw_reliable
from loa.devices.conformance.context import Context
from loa.devices.conformance.registry import case
from loa.protocol.control import Volume

FLOOD = 2000


def _garbage(rng: random.Random, count: int) -> list[bytes]:
    """Datagrams of every shape a receiver must drop: undefined types, bad versions and sizes, RTP junk."""
    out = []
    for i in range(count):
        kind = i % 8
        if kind == 0:
            out.append(bytes([rng.choice([0x00, 0x05, 0x7F, 0xC0, 0xFF])]) + rng.randbytes(rng.randrange(0, 200)))
        elif kind == 1:
            out.append(b"\x01\x01\x00\x00" + rng.randbytes(144))  # an init-sized datagram: a device never takes one
        elif kind == 2:
            out.append(b"\x02\x01\x00\x00" + rng.randbytes(92))  # a response for no pending init
        elif kind == 3:
            out.append(b"\x04\x02\x00\x00" + rng.randbytes(60))  # unknown version
        elif kind == 4:
            out.append(b"\x04\x01\x00\x01" + rng.randbytes(60))  # reserved bits set
        elif kind == 5:
            out.append(b"\x04\x01\x00\x00" + rng.randbytes(rng.randrange(0, 28)))  # truncated transport
        elif kind == 6:
            out.append(bytes([0x80, 111]) + rng.randbytes(rng.randrange(0, 100)))  # RTP junk
        else:
            out.append(bytes([0x03, 0x01, 0x00, 0x00]) + rng.randbytes(48))  # a cookie reply for no init
    return out


async def _still_alive(ctx: Context, what: str) -> None:
    kit = ctx.kit
    msg_id = kit.send(Volume(level=61))
    try:
        await kit.wait_for(lambda: ack_count(ctx, msg_id or 0) > 0, 2.0, "the ack of a command after the input")
        ctx.check(True, what, expected="the session works", observed="command acknowledged")
    except Exception:  # noqa: BLE001 - reported as the check
        ctx.check(False, what, expected="the session works", observed="no ack within 2 s")


def _amplification(ctx: Context) -> None:
    sent = sum(len(a.data) for a in ctx.kit.alt_arrivals)
    received = sum(len(e.data) for e in ctx.kit.log.entries if e.direction == "alt>dev")
    ctx.check(sent <= received and not ctx.kit.alt_arrivals, "nothing is sent to the unverified address",
              expected=f"0 bytes (never more than the {received} bytes it sent)",
              observed=f"{len(ctx.kit.alt_arrivals)} datagrams, {sent} bytes")


@case("8.0.1", "Garbage from the server's address is dropped; the session survives",
      description="On an established session the kit sends 400 malformed datagrams from its own address: undefined "
                  "types, wrong versions, reserved bits, truncated transports, handshake messages for nothing, RTP "
                  "junk.",
      expectation="The device MUST drop every one without answering and MUST keep its session: a command sent "
                  "afterwards is acknowledged.",
      quote="A receiver never crashes, never blocks, and never answers unauthenticated input with more bytes than it "
            "received.")
async def garbage(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    for data in _garbage(random.Random(81), 400):
        kit.send_raw(data, note="garbage")
    await anyio.sleep(0.2)
    await _still_alive(ctx, "the session survives")


@case("8.0.2", "Oversized datagrams are dropped, even when authentic",
      description="The kit seals a reliable command (a valid map padded with an unknown field) into a transport "
                  "datagram of 1201 bytes with a valid tag, and sends a 1300-byte RTP-looking datagram.",
      expectation="The device MUST drop datagrams larger than 1200 bytes (OversizeError): the oversized command is "
                  "not acknowledged.",
      quote="A datagram MUST NOT exceed **1200 bytes** (so that it fits the IPv6 minimum MTU with room for tunnels); a "
            "receiver MUST drop a larger one (`OversizeError`).")
async def oversize(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    msg_id, _ = raw_reliable(ctx, lambda i: Volume(level=62, id=i))
    padded = b""
    for size in range(1100, 1169):  # a valid map (an unknown bin field) of exactly 1169 bytes
        padded = msgpack.packb({"t": "volume", "id": msg_id, "level": 62, "zz": bytes(size)})
        if len(padded) >= 1169:
            break
    datagram = kit.seal(padded)
    ctx.check(len(datagram) == 1201, "the test datagram", expected="1201 bytes", observed=f"{len(datagram)} bytes")
    kit.send_raw(datagram, note="oversized, authentic")
    kit.send_raw(bytes([0x80, 111]) + os.urandom(1298), note="oversized RTP")
    await anyio.sleep(0.4)
    ctx.check(ack_count(ctx, msg_id) == 0, "the oversized command is dropped", expected="no ack",
              observed=f"{ack_count(ctx, msg_id)} ack(s)")
    await _still_alive(ctx, "the session survives")


@case("9.0.1", "Never more bytes to an unverified address: a stranger gets no answer",
      description="From a second address the kit sends 400 datagrams: garbage of every kind, a copy of the "
                  "HandshakeResponse, copies of authentic transport datagrams of the session, and RTP.",
      expectation="The device MUST NOT send the unverified address more bytes than it received from it (in "
                  "practice: nothing), and MUST keep its session with the server.",
      quote="No answer is ever larger than the unauthenticated datagram that caused it")
async def amplification(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    await kit.open_alt(ctx.tg)
    target = kit.device_address()
    assert target is not None
    copies = [e.data for e in kit.log.entries if e.direction == "kit>dev"][:10]
    for data in _garbage(random.Random(91), 400) + copies:
        kit.send_alt(data, target, "from a stranger")
    await anyio.sleep(0.5)
    _amplification(ctx)
    await _still_alive(ctx, "the session survives")


@case("8.0.3", "A flood does not take the device down",
      description=f"The kit sends {FLOOD} garbage datagrams from a stranger's address and {FLOOD // 2} from its "
                  "own, as fast as it can, then a command.",
      expectation="The device MUST NOT answer the stranger and MUST keep its session: the command is acknowledged.",
      quote="A receiver never crashes, never blocks, and never answers unauthenticated input with more bytes than it "
            "received.")
async def flood(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    await kit.open_alt(ctx.tg)
    target = kit.device_address()
    assert target is not None
    rng = random.Random(101)
    junk = _garbage(rng, FLOOD)
    for i, data in enumerate(junk):
        kit.send_alt(data, target, "flood")
        if i % 2 == 0:
            kit.send_raw(data, note="flood")
        if i % 200 == 0:
            await anyio.sleep(0)
    await anyio.sleep(0.5)
    _amplification(ctx)
    await _still_alive(ctx, "the session survives the flood")
