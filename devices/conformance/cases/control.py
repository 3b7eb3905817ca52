"""Cases of section 4: control encoding, reliable delivery, commands, clock synchronisation, telemetry, content."""

from __future__ import annotations

import contextlib
import hashlib
import itertools

import anyio
import msgpack

from loa.devices.conformance.cases._common import ack_count, raw_reliable
from loa.devices.conformance.context import CLOCK_EXCHANGES, Context
from loa.devices.conformance.kit import Inbound, KitTimeout
from loa.devices.conformance.media import ogg_programme
from loa.devices.conformance.registry import case
from loa.protocol.control import (
    Ack,
    Chunk,
    Config,
    ConfigValues,
    Have,
    Hello,
    Mute,
    Play,
    Prefetch,
    Reboot,
    Telemetry,
    TimeReq,
    TimeResp,
    Volume,
    decode,
    encode,
)

TELEMETRY_WAIT = 7.0
ACK_PREFIX = b"\x82\xa1t\xa3ack"  # {"t": "ack", ...}: how an encoded ack begins


async def _volume_seen(ctx: Context, after: float) -> int | None:
    values = await ctx.telemetry_after(after, TELEMETRY_WAIT)
    return values.volume


@case("4.3.1", "An unacknowledged reliable message is retransmitted with the same id and content",
      description="The kit withholds its acks for 1.5 s after the session starts, then acknowledges normally.",
      expectation="The device MUST retransmit each unacknowledged reliable message with the same id and the same "
                  "content (no sooner than the 100 ms minimum RTO), and MUST stop once it is acknowledged.",
      quote="Retransmissions carry the same `id` and content.")
async def retransmission(ctx: Context) -> None:
    kit = ctx.kit
    kit.plaintext_filter = lambda p: not p.startswith(ACK_PREFIX)
    await ctx.start()
    await anyio.sleep(1.5)
    kit.plaintext_filter = None
    released = kit.t()
    await anyio.sleep(1.2)
    by_id: dict[int, list[Inbound]] = {}
    for p in kit.plaintexts:
        msg_id = getattr(p.message, "id", None)
        if msg_id is not None and not isinstance(p.message, Ack):
            by_id.setdefault(msg_id, []).append(p)
    repeated = {i: ps for i, ps in by_id.items() if len(ps) > 1}
    ctx.check(bool(repeated), "unacknowledged messages are retransmitted", expected="the same id again",
              observed=f"ids sent more than once: {sorted(repeated)}")
    same = all(len({p.plaintext for p in ps}) == 1 for ps in repeated.values())
    ctx.check(same, "retransmissions are identical", expected="same bytes", observed="identical" if same else "differ")
    session_at = kit.connects[0][0] + 0.05  # a new session may send everything unacknowledged at once (4.3.1)
    gaps = [b.t - a.t for ps in repeated.values() for a, b in itertools.pairwise(ps) if a.t > session_at]
    ctx.check(not gaps or min(gaps) >= 0.09, "retransmission interval at least the minimum RTO",
              expected=">= 100 ms (10 % shortening allowed)", observed=f"min {min(gaps, default=0) * 1000:.0f} ms")
    acked_at: dict[int, float] = {}
    for t, plaintext in kit.sent_plaintexts:
        if plaintext.startswith(ACK_PREFIX):
            for i in decode(plaintext).ids:  # type: ignore[union-attr]
                acked_at.setdefault(i, t)
    late = [i for i, ps in repeated.items() if i in acked_at and ps[-1].t > acked_at[i] + 0.3]
    ctx.check(not late, "retransmission stops once acknowledged", expected="no copy 0.3 s after the kit's ack",
              observed=f"ids still retransmitted: {late}; released at {released:.3f} s")


@case("4.3.2", "Reliable messages are acknowledged within ACK_DELAY, duplicates acknowledged again",
      description="The kit sends a volume command, then the very same message (same id) once more in a new "
                  "transport message.",
      expectation="The device MUST acknowledge both copies (a duplicate is acknowledged again, not acted on "
                  "again); the first ack SHOULD come within ACK_DELAY (20 ms; the kit allows 60 ms).",
      quote="The receiver acknowledges every reliable message it receives — new, duplicate, unknown or rejected — "
            "with an `ack` listing its id, sent within `ACK_DELAY` (20 ms) and batching up to 64 ids.")
async def ack_and_duplicate(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    await anyio.sleep(0.2)
    msg_id, plaintext = raw_reliable(ctx, lambda i: Volume(level=51, id=i))
    at = kit.t()
    kit.send_plaintext(plaintext)
    await kit.wait_for(lambda: ack_count(ctx, msg_id) > 0, 1.0, "the ack")
    first = next(p.t for p in kit.plaintexts if isinstance(p.message, Ack)
                 and msg_id in p.message.ids)
    ctx.check(first - at <= 0.06, "ack delay", expected="<= 20 ms (+40 ms allowance)",
              observed=f"{(first - at) * 1000:.1f} ms", level="SHOULD")
    kit.send_plaintext(plaintext)
    await kit.wait_for(lambda: ack_count(ctx, msg_id) > 1, 1.0, "the ack of the duplicate")
    ctx.check(True, "the duplicate is acknowledged again", expected="2 acks", observed=f"{ack_count(ctx, msg_id)}")


@case("4.3.3", "A reliable message of unknown type is acknowledged and ignored",
      description="The kit sends a reliable message of a type no version defines, with unknown fields, then a "
                  "volume command.",
      expectation="The device MUST acknowledge the unknown message, ignore it, and go on: the next command is "
                  "acknowledged too.",
      quote="a reliable message of an unknown type is acknowledged and otherwise ignored, so that a newer server "
            "can talk to an older device.")
async def unknown_message(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    ctx._bids += 1
    msg_id = 700 + ctx._bids % 100
    kit.send_plaintext(msgpack.packb({"t": "x_conformance_future", "id": msg_id, "n": [1, 2, 3], "m": {"a": b"z"}}))
    await kit.wait_for(lambda: ack_count(ctx, msg_id) > 0, 1.0, "the ack of the unknown message")
    next_id = kit.send(Volume(level=52))
    await kit.wait_for(lambda: ack_count(ctx, next_id or 0) > 0, 1.0, "the ack of the next command")
    ctx.check(True, "acknowledged and the session goes on", expected="both acked", observed="both acked")


@case("4.3.4", "Unknown fields in a known message are ignored",
      description="The kit sends volume {level: 37} with two extra fields no version defines.",
      expectation="The device MUST acknowledge it and MUST apply the volume (telemetry reports 37).",
      quote="Inside control messages (section 4), unknown message types and unknown fields are **ignored**, never "
            "errors")
async def unknown_fields(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    msg_id = 800 + ctx.next_bid() % 100
    kit.send_plaintext(msgpack.packb({"t": "volume", "id": msg_id, "level": 37, "zz_future": [1, {"x": 2}],
                                      "zz_more": "ok"}))
    await kit.wait_for(lambda: ack_count(ctx, msg_id) > 0, 1.0, "the ack")
    seen = await _volume_seen(ctx, kit.t())
    ctx.check(seen == 37, "the volume is applied", expected="telemetry volume 37", observed=f"volume {seen}")


@case("4.4.1", "Commands applied by id per state key: an older command arriving later is ignored",
      description="The kit sends volume 30 (id n+1) and then volume 70 (id n): the older command arrives last.",
      expectation="The device MUST acknowledge both and MUST keep volume 30: per state key it ignores a command "
                  "whose id is lower than the last one applied.",
      quote="A device therefore keeps, for each **state key** below, the `id` of the last command it applied for "
            "that key since the server's current `boot`, and ignores (but acknowledges) a command whose `id` is "
            "lower.")
async def reordered_commands(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    base = 850 + ctx.next_bid() % 50
    kit.send_plaintext(encode(Volume(level=30, id=base + 1)))
    kit.send_plaintext(encode(Volume(level=70, id=base)))
    await kit.wait_for(lambda: ack_count(ctx, base) > 0 and ack_count(ctx, base + 1) > 0, 1.0, "both acks")
    seen = await _volume_seen(ctx, kit.t())
    ctx.check(seen == 30, "the newer command wins", expected="volume 30", observed=f"volume {seen}")


@case("4.1.1", "A known message with a bad field is acknowledged but not applied",
      description="The kit sets volume 55, then sends volume {level: 200} (out of range 0-100).",
      expectation="The device MUST acknowledge the bad message and MUST NOT apply it (volume stays 55); it SHOULD "
                  "count it as FieldError in telemetry drops.",
      quote="A known type with a missing field, a wrong type, or a value out of range: `FieldError` (the receiver "
            "acknowledges a reliable message it rejects this way, so that it is not retransmitted forever, and "
            "counts it).")
async def bad_field(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    good = kit.send(Volume(level=55))
    await kit.wait_for(lambda: ack_count(ctx, good or 0) > 0, 1.0, "the ack of volume 55")
    msg_id = 900 + ctx.next_bid() % 50
    kit.send_plaintext(msgpack.packb({"t": "volume", "id": msg_id, "level": 200}))
    await kit.wait_for(lambda: ack_count(ctx, msg_id) > 0, 1.0, "the ack of the bad volume")
    values = await ctx.telemetry_after(kit.t(), TELEMETRY_WAIT)
    ctx.check(values.volume == 55, "the bad command is not applied", expected="volume 55",
              observed=f"volume {values.volume}")
    drops = values.drops or {}
    ctx.check(drops.get("FieldError", 0) >= 1, "counted as FieldError", expected="drops.FieldError >= 1",
              observed=str(drops), level="SHOULD")


@case("4.1.2", "A plaintext that is not one msgpack map is dropped; the session goes on",
      description="The kit sends transport messages whose plaintexts are not msgpack, a map with trailing bytes, "
                  "and an array; then a volume command.",
      expectation="The device MUST drop them (MalformedError) without tearing the session down: the next command "
                  "is acknowledged.",
      quote="A plaintext that is not exactly one msgpack map, or has trailing bytes: `MalformedError`.")
async def malformed_plaintext(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    for junk in (b"\xc1\xc1\xc1", msgpack.packb({"t": "volume", "id": 960, "level": 5}) + b"\x00",
                 msgpack.packb([1, 2, 3])):
        kit.send_plaintext(junk)
    await anyio.sleep(0.2)
    ctx.check(ack_count(ctx, 960) == 0, "the map with trailing bytes is not acknowledged", expected="no ack",
              observed=f"{ack_count(ctx, 960)} ack(s)")
    msg_id = kit.send(Volume(level=53))
    await kit.wait_for(lambda: ack_count(ctx, msg_id or 0) > 0, 1.0, "the ack of the next command")


@case("4.6.1", "A config with vol_min above vol_max is rejected; vol_max clamps the volume",
      description="The kit sends config {vol_min: 90, vol_max: 10} (invalid), then config {vol_max: 60} and "
                  "volume 90.",
      expectation="The device MUST reject the invalid config (FieldError, nothing applied) and MUST clamp the "
                  "volume into [vol_min, vol_max]: telemetry reports 60.",
      quote="A `config` whose `vol_min` is above its `vol_max` is rejected (`FieldError`).")
async def config_volume(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    msg_id = 970 + ctx.next_bid() % 20
    kit.send_plaintext(msgpack.packb({"t": "config", "id": msg_id, "values": {"vol_min": 90, "vol_max": 10}}))
    await kit.wait_for(lambda: ack_count(ctx, msg_id) > 0, 1.0, "the ack of the invalid config")
    kit.send(Config(values=ConfigValues(vol_max=60)))
    last = kit.send(Volume(level=90))
    await kit.wait_for(lambda: ack_count(ctx, last or 0) > 0, 1.0, "the ack of volume 90")
    seen = await _volume_seen(ctx, kit.t())
    ctx.check(seen == 60, "volume clamped to vol_max, the invalid config ignored", expected="volume 60",
              observed=f"volume {seen}")


@case("4.4.2", "reboot: a new boot, hello again, settings kept",
      description="The kit sets volume 33 and mute, then sends reboot {delay_ms: 200}.",
      expectation="The device MUST restart with a new boot (a new handshake whose boot differs), MUST send hello "
                  "again (id 1), and MUST keep volume and mute across the reboot.",
      quote="Restarts after `delay_ms`, and after any current emergency-class broadcast has ended. The restart draws "
            "a new `boot` (section 3.3).", timeout=20.0)
async def reboot(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    kit.send(Volume(level=33))
    kit.send(Mute(on=True))
    last = kit.send(Reboot(delay_ms=200))
    await kit.wait_for(lambda: ack_count(ctx, last or 0) > 0, 1.0, "the ack of reboot")
    at = kit.t()
    await kit.wait_for(lambda: len(kit.connects) >= 2, 12.0, "a new session after the reboot")
    boots = [c[2] for c in kit.connects]
    ctx.check(boots[-1] != boots[0], "a new boot", expected="boot changes",
              observed=f"{boots[0]:08x} -> {boots[-1]:08x}")
    hello = await kit.wait_for(lambda: [p for p in kit.plaintexts if p.t > at and isinstance(p.message, Hello)], 2.0,
                               "hello after the reboot")
    ctx.check(getattr(hello[0].message, "id", None) == 1, "hello is id 1 again", expected="id 1",
              observed=f"id {getattr(hello[0].message, 'id', None)}")
    values = await ctx.telemetry_after(kit.t(), TELEMETRY_WAIT)
    ctx.check(values.volume == 33 and values.muted is True, "volume and mute persist", expected="volume 33, muted",
              observed=f"volume {values.volume}, muted {values.muted}")


@case("4.5.1", "hello carries kind, model, firmware and capabilities",
      description="The kit reads the device's hello.",
      expectation="hello MUST carry kind (speaker or board), model and fw (1-64 bytes) and caps; every message the "
                  "device sends MUST decode without error.",
      quote="`hello` is the first reliable message a device sends after each start (each new `boot`), on its first "
            "session; it is not repeated on later sessions of the same boot.")
async def hello_fields(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    hello = await kit.wait_for(lambda: kit.messages(Hello), 2.0, "hello")
    message = hello[0]
    ctx.check(message.kind in ("speaker", "board") and 1 <= len(message.model.encode()) <= 64
              and 1 <= len(message.fw.encode()) <= 64, "hello fields", expected="kind, model, fw",
              observed=f"kind={message.kind!r} model={message.model!r} fw={message.fw!r} caps={list(message.caps)}")
    await anyio.sleep(0.5)
    bad = [p.error for p in kit.plaintexts if p.error is not None]
    ctx.check(not bad, "every message decodes", expected="no errors", observed=str(bad))


@case("4.7.1", "Clock probes: at once on a new session, never more than 4 per second, t1 increasing",
      description="The kit answers every time_req at once for 4 s. It counts the rate on the device's own send "
                  "times (t1), which must keep pace with the arrivals.",
      expectation="The device MUST send its first time_req within 1 s of the session start, MUST NOT probe more "
                  "than 4 times in any second, and its t1 values MUST increase.",
      quote="A device MAY probe more often, but not more than 4 per second.")
async def clock_probes(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    start = kit.connects[0][0]
    await anyio.sleep(4.0)
    probes = kit.inbound(TimeReq)
    ctx.check(bool(probes) and probes[0].t - start <= 1.0, "first probe at once", expected="within 1 s",
              observed=f"{(probes[0].t - start) if probes else float('nan'):.3f} s")
    t1s = [p.message.t1 for p in probes]  # type: ignore[union-attr]
    rate, tracking = probe_rate(t1s, [p.t for p in probes])
    ctx.check(rate <= PROBES_PER_SECOND, "at most 4 probes per second",
              expected=f"<= {PROBES_PER_SECOND} in any second of the device's clock (t1)",
              observed=f"{rate} in the busiest second")
    ctx.check(tracking <= T1_TRACKING_S, "t1 follows the time the probes take to arrive",
              expected=f"t1's span within {T1_TRACKING_S} s + 2 % of the arrivals' span",
              observed=f"{tracking:.3f} s beyond")
    ctx.check(all(b > a for a, b in itertools.pairwise(t1s)), "t1 increases", expected="strictly increasing",
              observed=f"{len(t1s)} probes")


PROBES_PER_SECOND = 4
T1_TRACKING_S = 0.25
_SECOND_NS = 1_000_000_000 - 1_000_000  # one second less 1 ms: t1 is rounded to ns from a float clock


def probe_rate(t1s: list[int], arrivals: list[float]) -> tuple[int, float]:
    """The most probes in any second by the device's own send times ``t1`` (ns), and how far (s) the span of the
    ``t1`` values strays from the span of the kit's ``arrivals`` beyond 2 % of it.

    The rate is counted on ``t1`` because ``t1`` is the device's clock at sending (section 4.7): the kit's arrival
    times carry its own scheduling jitter, so an honest 4-per-second device can arrive five to a second on a loaded
    machine. The span comparison keeps a device from hiding a faster schedule behind stretched ``t1`` values.
    """
    ordered = sorted(t1s)
    rate, first = 0, 0
    for last, t in enumerate(ordered):
        while t - ordered[first] >= _SECOND_NS:
            first += 1
        rate = max(rate, last - first + 1)
    if len(t1s) < 2:
        return rate, 0.0
    t1_span = (max(t1s) - min(t1s)) / 1e9
    arrival_span = max(arrivals) - min(arrivals)
    return rate, max(0.0, abs(t1_span - arrival_span) - 0.02 * arrival_span)


def _offset_truth(ctx: Context, before: float, window: float = 3.0) -> tuple[int, int]:
    """The kit's own reading of (server time - device clock): min over recent probes of t2 - t1, and the RTT."""
    kit = ctx.kit
    recent = [p for p in kit.inbound(TimeReq) if before - window <= p.t <= before]
    values = sorted(p.server_ns - p.message.t1 for p in recent)  # type: ignore[union-attr]
    return values[0], values[len(values) // 2] - values[0]


async def _check_estimate(ctx: Context, what: str) -> None:
    kit = ctx.kit
    at = kit.t()
    values = await ctx.telemetry_after(at, TELEMETRY_WAIT)
    reported_at = next(m.t for m in kit.inbound(Telemetry) if m.t > at)
    low, spread = _offset_truth(ctx, reported_at)
    offset = values.clk_offset_ns
    if offset is None:
        ctx.check(False, what, expected="clk_offset_ns in telemetry", observed="absent")
        return
    # t2 - t1 = offset + one-way delay: the estimate lies at or a little below the least reading
    error = offset - low
    ctx.check(-2_000_000 - spread <= error <= 1_000_000, what, expected="within -2 ms .. +1 ms of min(t2 - t1)",
              observed=f"clk_offset_ns - min(t2 - t1) = {error / 1e6:.3f} ms (spread {spread / 1e6:.3f} ms)")


@case("4.7.2", "The clock estimate agrees with the kit's own measurement",
      description="The kit answers time_req truthfully and compares the device's reported clk_offset_ns with the "
                  "least (t2 - t1) it measured itself from the device's probes (offset plus one-way delay).",
      expectation="The device MUST derive its offset from the exchanges (minimum-delay filter) and report it: "
                  "clk_offset_ns within a few ms of what the kit measures on loopback.",
      quote="report `clk_offset_ns`, `clk_drift_ppm` (positive when the device clock runs fast) and `clk_err_ns` in "
            "telemetry, and the fault `\"clock\"` while it has fewer than 8 exchanges.")
async def clock_estimate(ctx: Context) -> None:
    await ctx.start()
    await ctx.clock_ready()
    await _check_estimate(ctx, "reported offset matches the kit's measurement")


@case("4.7.3", "The fault \"clock\" is reported while fewer than 8 exchanges were answered",
      description="The kit answers no time_req for 6 s and reads the telemetry that arrives meanwhile.",
      expectation="Every telemetry report sent before 8 exchanges MUST list the fault \"clock\".",
      quote="report `clk_offset_ns`, `clk_drift_ppm` (positive when the device clock runs fast) and `clk_err_ns` in "
            "telemetry, and the fault `\"clock\"` while it has fewer than 8 exchanges.")
async def clock_fault(ctx: Context) -> None:
    kit = ctx.kit
    kit.answer_time = lambda _req, _t2: None
    await ctx.start()
    await ctx.telemetry_after(-1.0, TELEMETRY_WAIT)
    reports = kit.telemetry()
    missing = [r.faults for r in reports if "clock" not in (r.faults or ())]
    ctx.check(not missing, "fault clock listed", expected="\"clock\" in every report",
              observed=f"{len(reports)} report(s); without it: {missing}")


@case("4.7.4", "Outliers and unsolicited answers do not move the estimate",
      description="After the estimate is ready the kit answers one probe 50 ms off, one with t3 < t2, and sends a "
                  "time_resp for a t1 the device never sent; then it compares the reported offset with its own "
                  "measurement.",
      expectation="The device MUST refuse the invalid exchange, ignore the suspect one and the unsolicited answer: "
                  "clk_offset_ns stays within a few ms of the truth.",
      quote="refuse (and count) exchanges with `delay < 0`, `t3 < t2`, `t4 < t1`, or `delay` over 10 s;")
async def clock_outliers(ctx: Context) -> None:
    kit = ctx.kit
    bent = [0]

    def answer(req: TimeReq, t2: int) -> TimeResp:
        t3 = kit.server_time()
        if kit.time_answers == CLOCK_EXCHANGES + 2 and bent[0] == 0:
            bent[0] = 1
            return TimeResp(t1=req.t1, t2=t2 + 50_000_000, t3=t3 + 50_000_000)
        if kit.time_answers == CLOCK_EXCHANGES + 4 and bent[0] == 1:
            bent[0] = 2
            return TimeResp(t1=req.t1, t2=t3 + 1_000_000_000, t3=t3)
        return TimeResp(t1=req.t1, t2=t2, t3=t3)

    kit.answer_time = answer
    await ctx.start()
    await ctx.clock_ready()
    await kit.wait_for(lambda: bent[0] == 2, 8.0, "the bent answers")
    kit.send_unreliable(TimeResp(t1=12345, t2=kit.server_time() + 10**9, t3=kit.server_time() + 10**9))
    await anyio.sleep(0.3)
    await _check_estimate(ctx, "the estimate ignores the outliers")


@case("4.8.1", "Telemetry reports the clock fields and is never queued behind an unacknowledged report",
      description="The kit withholds acks for telemetry for 7 s (config telemetry_s 5), then acknowledges.",
      expectation="While a report is unacknowledged the device MUST NOT send a new one (only retransmit it); "
                  "reports MUST carry clk_offset_ns, clk_drift_ppm and clk_err_ns once the estimate is ready.",
      quote="A device does not queue a report behind an unacknowledged one: when the earlier is acknowledged it "
            "sends the latest snapshot.", timeout=20.0)
async def telemetry_queue(ctx: Context) -> None:
    kit = ctx.kit
    telemetry_ids: set[int] = set()

    def keep(plaintext: bytes) -> bool:
        if not plaintext.startswith(ACK_PREFIX):
            return True
        ids = set(decode(plaintext).ids)  # type: ignore[union-attr]
        # every telemetry received so far, read when the ack is sealed (not when the case last looked)
        return not ids & {m.message.id for m in kit.inbound(Telemetry)}  # type: ignore[union-attr]

    kit.plaintext_filter = keep
    await ctx.start()
    end = kit.t() + 7.0
    while kit.t() < end:
        telemetry_ids.update(m.message.id for m in kit.inbound(Telemetry))  # type: ignore[union-attr, misc]
        await anyio.sleep(0.01)
    distinct = sorted(telemetry_ids)
    ctx.check(len(distinct) == 1, "one report outstanding at a time", expected="1 telemetry id while unacknowledged",
              observed=f"telemetry ids {distinct}")
    kit.plaintext_filter = None
    at = kit.t()
    values = await ctx.telemetry_after(at, TELEMETRY_WAIT)
    fields = {"clk_offset_ns": values.clk_offset_ns, "clk_drift_ppm": values.clk_drift_ppm,
              "clk_err_ns": values.clk_err_ns}
    ctx.check(all(v is not None for v in fields.values()), "clock fields reported", expected="all three present",
              observed=str(fields))


def _prefetch(ctx: Context, blob: bytes, *, cid: bytes | None = None, name: str = "conformance") -> bytes:
    cid = cid or hashlib.sha256(blob).digest()
    ctx.kit.content[cid] = blob
    ctx.kit.send(Prefetch(cid=cid, size=len(blob), name=name))
    return cid


def _haves(ctx: Context, cid: bytes) -> list[Have]:
    return [m for m in ctx.kit.messages(Have) if m.cid == cid]


@case("4.9.1", "prefetch: ranged fetches of at most 1024 bytes, at most 16 outstanding, then have ok",
      description="The kit sends prefetch for an Ogg Opus programme, holds its answers for 0.4 s, then answers "
                  "every fetch.",
      expectation="The device MUST fetch ranges of 1-1024 bytes, keep at most 16 unanswered, and MUST answer "
                  "have {ok: true} once the SHA-256 matches.",
      quote="A device keeps at most 16 fetches unanswered and asks again for a range after 1 s without answer "
            "(or twice its RTT estimate, if larger).")
async def prefetch(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    kit.answer_fetch = False
    blob = ogg_programme()
    cid = _prefetch(ctx, blob)
    await anyio.sleep(0.4)
    burst = len(kit.fetches)
    ctx.check(0 < burst <= 16, "at most 16 fetches unanswered", expected="1-16", observed=f"{burst}")
    kit.answer_fetch = True
    for _, fetch in list(kit.fetches):
        data = blob[fetch.off : fetch.off + fetch.len]
        kit.send_unreliable(Chunk(cid=fetch.cid, off=fetch.off, data=data))
    haves = await kit.wait_for(lambda: _haves(ctx, cid), 8.0, "have")
    ctx.check(haves[0].ok, "have ok", expected="ok: true", observed=f"ok: {haves[0].ok}")
    sizes = [f.len for _, f in kit.fetches]
    ctx.check(all(1 <= n <= 1024 for n in sizes), "fetch sizes", expected="1-1024 bytes",
              observed=f"{min(sizes)}-{max(sizes)} bytes over {len(sizes)} fetches")


@case("4.9.2", "Content that fails its SHA-256 is fetched once more, then given up with have ok false",
      description="The kit answers every fetch with bytes whose SHA-256 is not the cid.",
      expectation="The device MUST discard the content, fetch it once more from the start, and then send have "
                  "{ok: false}.",
      quote="otherwise it discards the file, fetches it once more from the start, and if that also fails sends "
            "`have` `{cid, ok: false}`.", timeout=20.0)
async def prefetch_corrupt(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    blob = ogg_programme()
    cid = hashlib.sha256(blob).digest()
    corrupt = bytes(b ^ 0x55 for b in blob)
    _prefetch(ctx, corrupt, cid=cid)
    haves = await kit.wait_for(lambda: _haves(ctx, cid), 12.0, "have")
    ctx.check(not haves[0].ok, "given up", expected="ok: false", observed=f"ok: {haves[0].ok}")
    starts = sum(1 for _, f in kit.fetches if f.off == 0)
    ctx.check(starts == 2, "fetched twice from the start", expected="2 fetches at offset 0", observed=f"{starts}")


@case("4.9.3", "Content already stored is acknowledged at once without fetching",
      description="The kit prefetches a programme, then sends prefetch for the same cid again (a new id).",
      expectation="The device MUST answer the second prefetch with have {ok: true} at once, without any fetch.",
      quote="A device that already stores `cid` verified answers `have` `{cid, ok: true}` at once.")
async def prefetch_stored(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    blob = ogg_programme()
    cid = _prefetch(ctx, blob)
    await kit.wait_for(lambda: _haves(ctx, cid), 8.0, "the first have")
    fetched = len(kit.fetches)
    _prefetch(ctx, blob)
    await kit.wait_for(lambda: len(_haves(ctx, cid)) >= 2, 2.0, "the second have")
    ctx.check(len(kit.fetches) == fetched and _haves(ctx, cid)[1].ok, "no new fetch, have ok", expected="0 fetches",
              observed=f"{len(kit.fetches) - fetched} fetches")


async def _scheduled(ctx: Context, start_in_ms: int) -> None:
    await ctx.start()
    kit = ctx.kit
    blob = ogg_programme()
    cid = _prefetch(ctx, blob)
    await kit.wait_for(lambda: _haves(ctx, cid), 8.0, "have")
    await ctx.clock_ready()
    bid = ctx.next_bid()
    at = kit.server_time() + start_in_ms * 1_000_000
    kit.send(Play(bid=bid, cid=cid, at=at, cls=0, lvl=0, policy="resume", zone="26734"))
    with contextlib.suppress(KitTimeout):  # 20 frames are 0.4 s of audio: 1.5 s is the least this waits
        await anyio.sleep(max(0.0, start_in_ms / 1000) + 1.5)
        await kit.wait_for(lambda: len([e for _, e in kit.played() if e.bid == bid]) >= 20, 2.5,
                           "20 played frames")
    played = [(arrival, e) for arrival, e in kit.played() if e.bid == bid]
    ctx.check(len(played) >= 20, "the programme plays", expected=">= 20 frames reported",
              observed=f"{len(played)} frames")
    if not played:
        return
    errors = [e.at - (at + e.rtp_ts * 1_000_000_000 // 48_000) for _, e in played]
    worst = max(abs(x) for x in errors)
    ctx.check(worst <= 20_000_000, "every frame at play.at + its position", expected="within 20 ms",
              observed=f"worst {worst / 1e6:.3f} ms")
    ctx.check(worst <= 1_000_000, "every frame within 1 ms of its instant", expected="within 1 ms",
              observed=f"worst {worst / 1e6:.3f} ms", level="SHOULD")
    causal = all(e.at <= arrival + 2_000_000 for arrival, e in played)
    ctx.check(causal, "no frame reported before it could have played", expected="at <= report arrival",
              observed="ok" if causal else "a frame reported as played in the future")
    if start_in_ms < 0:
        first = min(e.rtp_ts for _, e in played)
        ctx.check(first >= -start_in_ms * 48 - 960 * 5, "a late play starts at now - at",
                  expected=f"first position >= {-start_in_ms} ms", observed=f"first position {first / 48:.0f} ms")


@case("7.2.1", "Scheduled start: a prefetched programme starts at play.at",
      description="The kit prefetches a programme and sends play with at = now + 0.8 s.",
      expectation="The device MUST start the programme's sample 0 at server time at; every frame MUST be played at "
                  "at + its position (the kit allows 20 ms; 1 ms is the SHOULD).",
      quote="at server time `at` every device starts the content's first sample, by the arbitration of section 6.2.",
      timeout=25.0)
async def scheduled_start(ctx: Context) -> None:
    await _scheduled(ctx, 800)


@case("7.2.2", "A play received after at starts at the position now - at",
      description="The kit sends play with at = now - 0.4 s for a prefetched programme.",
      expectation="The device MUST start at position now - at, so that it stays in step with devices that started "
                  "on time.",
      quote="A `play` received after `at` starts at position `now − at` (all devices stay in step); one received "
            "after the content's end is ignored.", timeout=25.0)
async def late_play(ctx: Context) -> None:
    await _scheduled(ctx, -400)

