"""Cases of section 6: preemption and resume for every class x level, signed alerts and their cancel."""

from __future__ import annotations

import os
from typing import Any

import anyio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loa.devices.conformance.cases.media import played_of, reliable, settle
from loa.devices.conformance.context import Context
from loa.devices.conformance.media import KitStream
from loa.devices.conformance.registry import case
from loa.protocol.alert import Alert, AlertCancel, key_id, sign_alert, sign_cancel
from loa.protocol.beacon import encode_beacon
from loa.protocol.control import Leave, SignedAlert, SignedAlertCancel

NS = 1_000_000_000
CLASSES = ("normal", "priority", "emergency")
LEVELS = ("commune", "district", "province", "national")
TELEMETRY_WAIT = 7.0
#: Frames a stream that plays "until the case stops it" may send at most (8 s): the bound of every pacing loop.
UNTIL_STOPPED = 400
#: How long the broadcast that should resume keeps streaming after the leave was acknowledged.
RESUME_S = 0.6


def make_alert(ctx: Context, bid: int, *, cls: int = 2, lvl: int = 2, zones: tuple[str, ...] = ("760",),
               status: str = "actual", issued_in: float = 0.0, lifetime: float = 60.0, alert_id: str | None = None,
               key: Ed25519PrivateKey | None = None) -> tuple[SignedAlert, str]:
    key = key or ctx.kit.state.authority
    now = ctx.kit.server_time()
    alert_id = alert_id or f"conformance-{bid}-{os.urandom(3).hex()}"
    alert = Alert(id=alert_id, kid=key_id(key.public_key()), status=status, cls=cls, lvl=lvl, zones=zones,
                  issued=now + round(issued_in * NS), expires=now + round((issued_in + lifetime) * NS), bid=bid)
    body, sig = sign_alert(alert, key)
    return SignedAlert(body=body, sig=sig), alert_id


def state_bids(ctx: Context) -> list[int]:
    out: list[int] = []
    for s in ctx.kit.states():
        if s.bid is not None and (not out or out[-1] != s.bid):
            out.append(s.bid)
    return out


async def _admit(ctx: Context, s: KitStream) -> None:
    """Join ``s``; an emergency-class broadcast is announced by its signed alert first."""
    if s.cls == 2:
        alert, _ = make_alert(ctx, s.bid, cls=s.cls, lvl=s.lvl)
        await reliable(ctx, alert, "alert")
    await reliable(ctx, s.join(), "join")


def _family(rank: int) -> None:
    a_rank = max(rank - 1, 0)
    a_cls, a_lvl, b_cls, b_lvl = a_rank // 4, a_rank % 4, rank // 4, rank % 4
    name = f"{CLASSES[b_cls]}/{LEVELS[b_lvl]}"
    if rank == 0:
        title = f"Equal ranks never preempt ({name} over {name}); the waiting one starts when the current ends"
        expectation = ("The arriving broadcast MUST NOT preempt an equal rank: it waits (policy resume) and MUST "
                       "start when the current one ends.")
    else:
        title = f"{name} (rank {rank}) preempts {CLASSES[a_cls]}/{LEVELS[a_lvl]} (rank {a_rank}), which then resumes"
        expectation = ("The higher rank MUST preempt at once, and when it ends the preempted broadcast (policy "
                       "resume) MUST resume at its live position.")

    async def run(ctx: Context) -> None:
        await ctx.start()
        await ctx.clock_ready()
        kit = ctx.kit
        a = ctx.stream(cls=a_cls, lvl=a_lvl)
        b = ctx.stream(cls=b_cls, lvl=b_lvl)
        await _admit(ctx, a)
        # the one that should play after the leave streams on until RESUME_S after it, however long the
        # admissions and acks took
        async with anyio.create_task_group() as tg:
            tg.start_soon(kit.pace, a, UNTIL_STOPPED)
            await anyio.sleep(0.5)
            await _admit(ctx, b)
            tg.start_soon(kit.pace, b, UNTIL_STOPPED if rank == 0 else 35)
            await anyio.sleep(0.8)
            await reliable(ctx, Leave(bid=a.bid if rank == 0 else b.bid), "leave")
            await anyio.sleep(RESUME_S)
            tg.cancel_scope.cancel()
        await settle(ctx, a)
        bids = state_bids(ctx)
        expected = [a.bid, b.bid] if rank == 0 else [a.bid, b.bid, a.bid]
        ctx.check(bids[: len(expected)] == expected, "what plays, in order (state messages)",
                  expected=" -> ".join(map(str, expected)), observed=" -> ".join(map(str, bids)) or "nothing")
        ctx.check(bool(played_of(ctx, b.bid)), "the arriving broadcast's frames are played", expected="frames",
                  observed=f"{len(played_of(ctx, b.bid))} frames")

    case(f"6.2.{rank + 1}", title,
         description=f"A live broadcast of {CLASSES[a_cls]}/{LEVELS[a_lvl]} plays; a second one of {name} (both "
                     f"policy resume; emergency ones announced by a signed alert) joins 0.5 s later; then the "
                     f"{'first' if rank == 0 else 'second'} one leaves.",
         expectation=expectation,
         quote="If `rank(B) > rank(current)`, *B* **preempts**: the device switches to *B* at the next frame boundary "
               "of its output" if rank else "Equal ranks never preempt each other, so two equal broadcasts never flap.",
         timeout=20.0)(run)


for _rank in range(12):
    _family(_rank)


@case("6.2.13", "A preempted broadcast with policy drop never plays again",
      description="A normal broadcast with policy drop plays; a priority one preempts it, then leaves.",
      expectation="The preempted drop-policy broadcast MUST be forgotten: it does not resume after the "
                  "preempting one ends.",
      quote="The preempted broadcast goes to the waiting list if its `policy` is `\"resume\"`, and is forgotten if "
            "`\"drop\"`.", timeout=20.0)
async def preempt_drop(ctx: Context) -> None:
    await ctx.start()
    await ctx.clock_ready()
    kit = ctx.kit
    a = ctx.stream(cls=0, lvl=2, policy="drop")
    b = ctx.stream(cls=1, lvl=0)
    await _admit(ctx, a)
    async with anyio.create_task_group() as tg:
        tg.start_soon(kit.pace, a, UNTIL_STOPPED)  # a goes on after b's leave: it could resume, and must not
        await anyio.sleep(0.5)
        await _admit(ctx, b)
        tg.start_soon(kit.pace, b, 35)
        await anyio.sleep(0.8)
        await reliable(ctx, Leave(bid=b.bid), "leave")
        await anyio.sleep(RESUME_S)
        tg.cancel_scope.cancel()
    await settle(ctx, a)
    bids = state_bids(ctx)
    ctx.check(bids == [a.bid, b.bid], "the dropped broadcast does not resume", expected=f"{a.bid} -> {b.bid}",
              observed=" -> ".join(map(str, bids)))


async def _send_beacon(ctx: Context, signed: SignedAlert, *, forged: bool, stranger: bool) -> None:
    """The alert as a beacon (section 6.4.2): from the server's address, or a second address of the kit."""
    kit = ctx.kit
    sig = bytes(b ^ 0x5A for b in signed.sig) if forged else signed.sig
    beacon = encode_beacon(signed.body, sig)
    if stranger:
        await kit.open_alt(ctx.tg)
        target = kit.device_address()
        assert target is not None
        kit.send_alt(beacon, target, "alert beacon from a stranger")
    else:
        kit.send_raw(beacon, note="alert beacon")
    await anyio.sleep(0.2)


async def _alert_case(ctx: Context, *, plays: bool, join_cls: int = 2, error: str | None = None,
                      config: Any = None, beacon: bool = False, forged: bool = False, stranger: bool = False,
                      **alert: Any) -> None:
    """An alert (by its reliable message, or with ``beacon`` by its beacon alone), then the join and its audio."""
    await ctx.start(config=config)
    await ctx.clock_ready()
    kit = ctx.kit
    stream = ctx.stream(cls=join_cls, lvl=2)
    if alert.pop("send", True):
        signed, _ = make_alert(ctx, stream.bid, lvl=2, **alert)
        if beacon:
            await _send_beacon(ctx, signed, forged=forged, stranger=stranger)
        else:
            await reliable(ctx, signed, "alert")
    await reliable(ctx, stream.join(), "join")
    await kit.pace(stream, 30)
    await settle(ctx, stream)
    played = played_of(ctx, stream.bid)
    if plays:
        ctx.check(len(played) >= 20, "the alert's broadcast plays", expected="its frames", observed=f"{len(played)}")
        return
    ctx.check(not played and stream.bid not in state_bids(ctx), "the alert's broadcast does not play",
              expected="no frame, no state", observed=f"{len(played)} frames")
    if error is not None:
        values = await ctx.telemetry_after(kit.t(), TELEMETRY_WAIT)
        drops = values.drops or {}
        ctx.check(drops.get(error, 0) >= 1, f"the refusal is counted as {error}", expected=f"drops.{error} >= 1",
                  observed=str(drops), level="SHOULD")


@case("6.4.1", "A valid signed alert plays its emergency broadcast",
      description="The kit sends an alert signed by the provisioned authority for zone 760 (the device's path "
                  "includes it), then the emergency join and the audio.",
      expectation="The device MUST accept the alert and play the broadcast.",
      quote="Then it treats the alert as a broadcast with the alert's `cls`, `lvl` and `bid`, and plays the stream "
            "`bid` it has been (or will be) told to `join`.", timeout=20.0)
async def alert_valid(ctx: Context) -> None:
    await _alert_case(ctx, plays=True)


@case("6.4.2", "An alert with a forged signature is refused",
      description="The alert's body is signed by a key with the provisioned authority's kid but not its private key.",
      expectation="The device MUST refuse it (SignatureError) and MUST NOT play the broadcast.",
      quote="verify `sig` over `\"loa-alert/1\" ‖ 0x00 ‖ body`, else drop (`SignatureError`);", timeout=20.0)
async def alert_forged(ctx: Context) -> None:
    await ctx.start()
    await ctx.clock_ready()
    kit = ctx.kit
    stream = ctx.stream(cls=2, lvl=2)
    good, _ = make_alert(ctx, stream.bid)
    forged = SignedAlert(body=good.body, sig=bytes(b ^ 0x5A for b in good.sig))
    await reliable(ctx, forged, "forged alert")
    await reliable(ctx, stream.join(), "join")
    await kit.pace(stream, 30)
    await settle(ctx, stream)
    played = played_of(ctx, stream.bid)
    ctx.check(not played, "the forged alert does not play", expected="no frame", observed=f"{len(played)} frames")
    values = await ctx.telemetry_after(kit.t(), TELEMETRY_WAIT)
    ctx.check((values.drops or {}).get("SignatureError", 0) >= 1, "counted as SignatureError",
              expected="drops.SignatureError >= 1", observed=str(values.drops), level="SHOULD")


@case("6.4.3", "An alert signed by an unknown authority is refused",
      description="The alert is validly signed by a key the device was never provisioned with.",
      expectation="The device MUST refuse it (UnknownKeyError) and MUST NOT play the broadcast.",
      quote="find the authority public key by `kid` among its provisioned keys, else drop (`UnknownKeyError`);",
      timeout=20.0)
async def alert_unknown_kid(ctx: Context) -> None:
    await _alert_case(ctx, plays=False, error="UnknownKeyError", key=Ed25519PrivateKey.generate())


@case("6.4.4", "An expired alert is refused",
      description="The alert was issued 120 s ago and expired 60 s ago.",
      expectation="The device MUST refuse it (ExpiredError) and MUST NOT play it.",
      quote="check `expires > now` and `issued ≤ now + 30 s` (clock skew allowance) on its estimate of server "
            "time, else drop (`ExpiredError`);", timeout=20.0)
async def alert_expired(ctx: Context) -> None:
    await _alert_case(ctx, plays=False, error="ExpiredError", issued_in=-120.0, lifetime=60.0)


@case("6.4.5", "An alert issued more than 30 s in the future is refused",
      description="The alert's issued time is 60 s ahead of server time.",
      expectation="The device MUST refuse it (ExpiredError): only 30 s of clock skew is allowed.",
      quote="check `expires > now` and `issued ≤ now + 30 s` (clock skew allowance) on its estimate of server time, "
            "else drop (`ExpiredError`);", timeout=20.0)
async def alert_future(ctx: Context) -> None:
    await _alert_case(ctx, plays=False, error="ExpiredError", issued_in=60.0, lifetime=600.0)


@case("6.4.6", "An alert for another zone is refused",
      description="The alert targets zone 99999, which is not on the device's zone path (config zones).",
      expectation="The device MUST refuse it (WrongZoneError) and MUST NOT play it.",
      quote="check that `zones` targets it, else drop (`WrongZoneError`);", timeout=20.0)
async def alert_wrong_zone(ctx: Context) -> None:
    await _alert_case(ctx, plays=False, error="WrongZoneError", zones=("99999",))


@case("6.4.7", "A replayed alert id is not played again",
      description="A valid alert plays and its broadcast leaves; the kit then sends an alert with the same id (new "
                  "bid, freshly signed) and its emergency join.",
      expectation="The device MUST ignore the second alert (ReplayError, acknowledged) and MUST NOT play it.",
      quote="check that it has not accepted an alert with this `id` from this authority before, else ignore it but "
            "ack it (`ReplayError`); devices remember accepted ids until their `expires` passes;", timeout=25.0)
async def alert_replay(ctx: Context) -> None:
    await ctx.start()
    await ctx.clock_ready()
    kit = ctx.kit
    first = ctx.stream(cls=2, lvl=2)
    signed, alert_id = make_alert(ctx, first.bid)
    await reliable(ctx, signed, "alert")
    await reliable(ctx, first.join(), "join")
    await kit.pace(first, 20)
    await reliable(ctx, Leave(bid=first.bid), "leave")
    await settle(ctx, first)
    ctx.check(bool(played_of(ctx, first.bid)), "the first alert plays", expected="frames",
              observed=f"{len(played_of(ctx, first.bid))}")
    second = ctx.stream(cls=2, lvl=2)
    again, _ = make_alert(ctx, second.bid, alert_id=alert_id)
    await reliable(ctx, again, "the replayed alert id")
    await reliable(ctx, second.join(), "join")
    await kit.pace(second, 25)
    await settle(ctx, second)
    ctx.check(not played_of(ctx, second.bid), "the replayed id does not play", expected="no frame",
              observed=f"{len(played_of(ctx, second.bid))} frames")


@case("6.4.8", "An emergency join without an accepted alert is not played",
      description="The kit sends a join of class 2 (emergency) and its audio, but no alert.",
      expectation="The device MUST NOT play emergency-class audio without an accepted signed alert for its bid.",
      quote="A `join` whose `cls` is 2 (emergency) is played only once an alert for the same `bid` has been "
            "accepted: a relay that holds a server session cannot start emergency-class audio without an "
            "authority's signature.", timeout=20.0)
async def emergency_unsigned(ctx: Context) -> None:
    await _alert_case(ctx, plays=False, send=False)


@case("6.4.9", "An exercise alert is not played unless config exercise is true",
      description="A valid alert with status exercise; the device's config says exercise: false.",
      expectation="The device MUST accept and acknowledge it but MUST NOT play it.",
      quote="an `\"exercise\"` or `\"test\"` alert is played only if the device's `config` says `exercise: true`, and "
            "is otherwise accepted, acknowledged, reported and not played.", timeout=20.0)
async def alert_exercise(ctx: Context) -> None:
    await _alert_case(ctx, plays=False, status="exercise")


@case("6.4.10", "An alert beacon alone is enough to play the alert",
      description="The kit sends a valid alert as a beacon (type 0x05, in the clear, from the server's address) and "
                  "no reliable alert, then the emergency join and the audio.",
      expectation="The device MUST verify and accept the beacon's alert and play the broadcast.",
      quote="then treats it exactly as an `alert` message (section 6.4: the same steps, errors, holding and "
            "acting), except that nothing is sent back", timeout=20.0)
async def beacon_valid(ctx: Context) -> None:
    await _alert_case(ctx, plays=True, beacon=True)


@case("6.4.11", "An alert beacon with a forged signature is refused",
      description="The beacon's signature does not verify; then the emergency join and the audio.",
      expectation="The device MUST refuse it (SignatureError) and MUST NOT play the broadcast.",
      quote="then treats it exactly as an `alert` message (section 6.4: the same steps, errors, holding and "
            "acting)", timeout=20.0)
async def beacon_forged(ctx: Context) -> None:
    await _alert_case(ctx, plays=False, beacon=True, forged=True, error="SignatureError")


@case("6.4.12", "An alert beacon from an address other than the server's is dropped",
      description="A valid alert's beacon comes from a second address of the kit; then the emergency join and the "
                  "audio from the server's address.",
      expectation="The device MUST drop the beacon (UnknownKeyError) and MUST NOT play the broadcast.",
      quote="drops a beacon whose source address and port are not those it sends its session traffic to "
            "(`UnknownKeyError`)", timeout=20.0)
async def beacon_stranger(ctx: Context) -> None:
    await _alert_case(ctx, plays=False, beacon=True, stranger=True, error="UnknownKeyError")


@case("6.4.13", "The reliable copy of an alert accepted from its beacon is acknowledged and not a replay",
      description="The kit sends a valid alert as a beacon, then the same alert as a reliable alert message, then "
                  "the emergency join and the audio.",
      expectation="The device MUST acknowledge the reliable alert and play the broadcast once; it SHOULD NOT count "
                  "the second copy as a ReplayError.",
      quote="The reliable `alert` of an alert first accepted from its beacon is acknowledged and not checked or "
            "counted again", timeout=25.0)
async def beacon_then_reliable(ctx: Context) -> None:
    await ctx.start()
    await ctx.clock_ready()
    kit = ctx.kit
    stream = ctx.stream(cls=2, lvl=2)
    signed, _ = make_alert(ctx, stream.bid, lvl=2)
    kit.send_raw(encode_beacon(signed.body, signed.sig), note="alert beacon")
    await anyio.sleep(0.2)
    await reliable(ctx, signed, "the reliable copy of the alert")
    await reliable(ctx, stream.join(), "join")
    await kit.pace(stream, 30)
    await settle(ctx, stream)
    played = played_of(ctx, stream.bid)
    ctx.check(len(played) >= 20, "the alert's broadcast plays", expected="its frames", observed=f"{len(played)}")
    values = await ctx.telemetry_after(kit.t(), TELEMETRY_WAIT)
    drops = values.drops or {}
    ctx.check(drops.get("ReplayError", 0) == 0, "the reliable copy is not counted as a replay",
              expected="drops.ReplayError = 0", observed=str(drops), level="SHOULD")


async def _cancel_case(ctx: Context, *, valid: bool) -> None:
    await ctx.start()
    await ctx.clock_ready()
    kit = ctx.kit
    stream = ctx.stream(cls=2, lvl=2)
    signed, alert_id = make_alert(ctx, stream.bid)
    await reliable(ctx, signed, "alert")
    await reliable(ctx, stream.join(), "join")
    at_ns = [0]

    async def cancel_soon() -> None:
        await anyio.sleep(0.6)
        authority = kit.state.authority
        body, sig = sign_cancel(AlertCancel(kid=key_id(authority.public_key()), cancel=alert_id,
                                            issued=kit.server_time()), authority)
        if not valid:
            sig = bytes(b ^ 0x33 for b in sig)
        at_ns[0] = kit.server_time()
        await reliable(ctx, SignedAlertCancel(body=body, sig=sig), "alert_cancel")

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_soon)
        await kit.pace(stream, 60)
    await settle(ctx, stream)
    after = [e for _, e in played_of(ctx, stream.bid) if e.at > at_ns[0] + stream.delay_ms * 1_000_000 + 60_000_000]
    if valid:
        ctx.check(not after, "the cancelled alert stops", expected="no frame after the cancel (+ delay)",
                  observed=f"{len(after)} frames after it")
    else:
        ctx.check(len(after) >= 10, "a cancel with a bad signature changes nothing", expected="the alert plays on",
                  observed=f"{len(after)} frames after it")


@case("6.5.1", "A valid alert_cancel stops the alert's broadcast",
      description="A valid alert plays; 0.6 s in, the kit sends alert_cancel signed by the same authority.",
      expectation="The device MUST stop the alert's broadcast as if it ended.",
      quote="On a valid cancel the device stops the alert's broadcast (as if it ended, section 6.2 step 4) and "
            "remembers the id as cancelled, so a late or replayed `alert` with that id is not played.", timeout=20.0)
async def cancel_valid(ctx: Context) -> None:
    await _cancel_case(ctx, valid=True)


@case("6.5.2", "An alert_cancel with a bad signature is ignored",
      description="A valid alert plays; the kit sends an alert_cancel whose signature does not verify.",
      expectation="The device MUST refuse the cancel (SignatureError) and MUST keep playing the alert.",
      quote="`alert_cancel` carries a signed body `{v: 1, kid, cancel: <alert id>, issued}` with the signature over "
            "`\"loa-alert-cancel/1\" ‖ 0x00 ‖ body`, checked as in 6.4 steps 1–2", timeout=20.0)
async def cancel_forged(ctx: Context) -> None:
    await _cancel_case(ctx, valid=False)
