"""Cases of section 3 (session) and 7.6 (server restart): handshake, cookies, transport checks, replay window,
roaming, close."""

from __future__ import annotations

import contextlib
import os

import anyio

from loa.devices.conformance.cases._common import ack_count, inits, raw_reliable, sender_index, transports_from_device
from loa.devices.conformance.context import Context
from loa.devices.conformance.kit import Arrival, KitTimeout
from loa.devices.conformance.registry import case
from loa.protocol.control import Bye, Hello, Volume
from loa.protocol.cookie import mac, mac1_key
from loa.protocol.restart import encode_notice, notice_key

REKEY_TIMEOUT = 5.0
JOIN_RETRY = 2.0  # + 0-500 ms: the retry of a device without a session (PROTOCOL.md 3.8.2)


def _hold_responses(ctx: Context, count: int | None = None) -> None:
    """Hold back the kit's HandshakeResponses (the first ``count`` of them, or all)."""
    held = [0]

    def keep(data: bytes, _address: object) -> bool:
        if data[:1] != b"\x02":
            return True
        held[0] += 1
        return count is not None and held[0] > count

    ctx.kit.outgoing_filter = keep


def _remac(response: bytearray, device_pub: bytes) -> bytes:
    response[64:80] = mac(mac1_key(device_pub), bytes(response[:64]))
    return bytes(response)


async def _pending_response(ctx: Context) -> bytes:
    """Start the device with responses held; return the first (genuine) response, not yet sent."""
    _hold_responses(ctx)
    await ctx.start(connect=False)
    await ctx.kit.wait_for(lambda: ctx.kit.held, 10.0, "the device's first HandshakeInit")
    return ctx.kit.held[0][0]


async def _no_answer_then_genuine(ctx: Context, bad: list[bytes], what: str) -> None:
    """Send ``bad`` datagrams, expect no answer for 0.3 s, then release the genuine response: a session."""
    kit = ctx.kit
    before = len(kit.arrivals)
    for data in bad:
        kit.send_raw(data, kit.held[0][1], note=what)
    await anyio.sleep(0.3)
    answered = kit.arrivals[before:]
    ctx.check(not answered, f"no datagram answers a {what}", expected="nothing sent",
              observed=f"{len(answered)} datagram(s): " + ", ".join(f"{len(a.data)} B" for a in answered))
    kit.outgoing_filter = None
    kit.release_held()
    try:
        await kit.connected(1.5)
        ctx.check(True, "the genuine response still completes the pending handshake", expected="a session",
                  observed="session confirmed by the device's first transport message")
    except Exception:  # noqa: BLE001 - reported as the check
        ctx.check(False, "the genuine response still completes the pending handshake", expected="a session",
                  observed="no transport message on the genuine session within 1.5 s")


@case("3.3.1", "A good handshake: 148-byte init, then hello as the first transport message",
      description="The kit answers the device's HandshakeInit with a genuine HandshakeResponse.",
      expectation="The init MUST be 148 bytes with header 01 01 00 00 and zero mac2 (no cookie yet); the device "
                  "MUST confirm the session at once with its first control message, hello, reliable id 1.",
      quote="Confirmation: after a handshake completes, a device sends a transport message on the new session at "
            "once — its next control message if it has one, otherwise a keepalive (32 bytes).")
async def good_handshake(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    first = inits(ctx)[0].data
    ctx.check(len(first) == 148 and first[:4] == b"\x01\x01\x00\x00", "HandshakeInit size and header",
              expected="148 bytes starting 01 01 00 00", observed=f"{len(first)} bytes starting {first[:4].hex()}")
    ctx.check(first[132:148] == bytes(16), "mac2 is zero without a cookie", expected="16 zero bytes",
              observed=first[132:148].hex())
    response_at = next(e.t for e in kit.log.entries if e.direction == "kit>dev" and e.data[:1] == b"\x02")
    confirm_at = transports_from_device(ctx)[0].t
    ctx.check(confirm_at - response_at <= 0.5, "the session is confirmed at once", expected="within 0.5 s",
              observed=f"{(confirm_at - response_at) * 1000:.1f} ms")
    hello = await kit.wait_for(lambda: next((p for p in kit.plaintexts if p.message is not None), None), 2.0,
                               "the first control message")
    message = hello.message if hello is not None else None
    ctx.check(isinstance(message, Hello) and message.id == 1, "the first control message is hello with id 1",
              expected="hello, id 1", observed=f"{getattr(message, 'TYPE', None)}, id {getattr(message, 'id', None)}")


@case("3.3.2", "An unanswered init is retried with a fresh index, ephemeral key and a greater timestamp",
      description="The kit never sends the HandshakeResponse; it reads the device's next HandshakeInit.",
      expectation="The retry MUST carry a new sender_index and ephemeral key and a strictly greater timestamp "
                  "(the kit's handshake check refuses a timestamp that is not greater); it SHOULD come "
                  "JOIN_RETRY (2 s) + 0-500 ms after the first (the device has no session yet).",
      quote="`timestamp` MUST be strictly greater than in every HandshakeInit the device sent before with the same "
            "static key.", timeout=12.0)
async def init_retry(ctx: Context) -> None:
    _hold_responses(ctx)
    await ctx.start(connect=False)
    kit = ctx.kit
    await kit.wait_for(lambda: len(inits(ctx)) >= 2, 8.0, "a second HandshakeInit")
    first, second = inits(ctx)[:2]
    ctx.check(sender_index(first.data) != sender_index(second.data) and first.data[8:40] != second.data[8:40],
              "fresh sender_index and ephemeral", expected="both differ",
              observed=f"index {sender_index(first.data):08x} -> {sender_index(second.data):08x}")
    replays = kit.conn.statistics().drops.get("ReplayError", 0)
    ctx.check(replays == 0 and len(kit.held) >= 2, "the retry's timestamp is greater", expected="accepted",
              observed=f"{replays} init(s) refused as replays, {len(kit.held)} accepted")
    gap = second.t - first.t
    ctx.check(JOIN_RETRY - 0.1 <= gap <= JOIN_RETRY + 0.8, "retry interval", expected="2.000-2.500 s",
              observed=f"{gap:.3f} s", level="SHOULD")


@case("3.2.1", "A device the server does not know gets no answer and keeps trying",
      description="The kit treats the device's key as not enrolled: it drops every init and sends nothing.",
      expectation="The device MUST NOT get a session; it SHOULD keep handshaking (a new init after about 2 s).",
      quote="A server that has no enrolment open MUST NOT complete a handshake for a key it does not know; it drops "
            "the HandshakeInit (`UnknownKeyError`) and sends nothing.", timeout=12.0)
async def unknown_device(ctx: Context) -> None:
    ctx.kit.refuse_all = True
    await ctx.start(connect=False)
    kit = ctx.kit
    try:
        await kit.wait_for(lambda: len(inits(ctx)) >= 2, 7.0, "a second HandshakeInit")
        ctx.check(True, "the device retries", expected="a new init", observed="a second init")
    except Exception:  # noqa: BLE001
        ctx.check(False, "the device retries", expected="a new init within 7 s", observed="none", level="SHOULD")
    ctx.check(kit.device is None and not transports_from_device(ctx), "no session", expected="no transport",
              observed=f"{len(transports_from_device(ctx))} transport datagram(s)")
    sent = [e for e in kit.log.entries if e.direction == "kit>dev"]
    ctx.check(not sent, "the kit sent nothing (the test's own premise)", expected="0 datagrams",
              observed=f"{len(sent)}")


@case("3.4.1", "A response that does not decrypt (wrong server key) leaves the handshake pending",
      description="The kit sends a HandshakeResponse whose Noise payload does not decrypt (as from a server "
                  "with another static key; mac1 is valid), then the genuine response.",
      expectation="The device MUST drop the bad response without answering and MUST complete the session with "
                  "the genuine one.",
      quote="Noise message 2 does not decrypt: drop (`AuthError`), and the pending handshake stays as it was (a "
            "later genuine response can still complete it).")
async def response_wrong_key(ctx: Context) -> None:
    genuine = await _pending_response(ctx)
    device_pub = ctx.agent_public()
    bad = bytearray(genuine)
    bad[12:44] = os.urandom(32)  # another server's ephemeral: the payload no longer decrypts
    await _no_answer_then_genuine(ctx, [_remac(bad, device_pub)], "response that does not decrypt")


@case("3.4.2", "A response with a wrong mac1 is dropped",
      description="The kit sends the genuine HandshakeResponse with one byte of mac1 changed, then the genuine one.",
      expectation="The device MUST drop it without answering; the genuine response MUST still complete the session.",
      quote="`mac1` does not verify with `HASH(LABEL_MAC1 ‖ D_pub)`: drop (`BadMacError`)")
async def response_bad_mac1(ctx: Context) -> None:
    genuine = await _pending_response(ctx)
    bad = bytearray(genuine)
    bad[70] ^= 0x01
    await _no_answer_then_genuine(ctx, [bytes(bad)], "response with a wrong mac1")


@case("3.4.3", "A response for an index the device never sent is dropped",
      description="The kit sends a HandshakeResponse whose receiver_index names no pending init (mac1 valid).",
      expectation="The device MUST drop it without answering; the genuine response MUST still complete the session.",
      quote="`receiver_index` is not the pending init's `sender_index`: drop (`UnknownKeyError`)")
async def response_unknown_index(ctx: Context) -> None:
    genuine = await _pending_response(ctx)
    bad = bytearray(genuine)
    bad[8:12] = (int.from_bytes(bad[8:12], "big") ^ 0x5A5A5A5A).to_bytes(4, "big")
    await _no_answer_then_genuine(ctx, [_remac(bad, ctx.agent_public())], "response for an unknown index")


@case("3.4.4", "Truncated, overlong and wrong-version responses are dropped",
      description="The kit sends the genuine response cut to 95 bytes, extended to 97 bytes, and with version 2, "
                  "then the genuine response.",
      expectation="The device MUST drop all three without answering (TruncatedError, BadLengthError, "
                  "UnknownVersionError) and MUST complete the session with the genuine one.",
      quote="A receiver MUST drop a datagram whose `version` it does not implement (`UnknownVersionError`) and MUST "
            "NOT answer it.")
async def response_sizes(ctx: Context) -> None:
    genuine = await _pending_response(ctx)
    wrong_version = bytearray(genuine)
    wrong_version[1] = 2
    await _no_answer_then_genuine(ctx, [genuine[:95], genuine + b"\x00", bytes(wrong_version)],
                                  "truncated, overlong or wrong-version response")


@case("3.4.5", "A replayed response does not restart the session",
      description="After the session is up, the kit sends the same HandshakeResponse again.",
      expectation="The device MUST drop it (no pending init) and MUST go on with the same session: the same "
                  "receiver index and ever-increasing counters (a reset counter would reuse nonces).",
      quote="response or CookieReply for no pending init; a duplicate response")
async def response_replayed(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    await anyio.sleep(0.3)
    response = next(e.data for e in kit.log.entries if e.direction == "kit>dev" and e.data[:1] == b"\x02")
    before = transports_from_device(ctx)
    index = before[-1].data[4:8]
    top = max(int.from_bytes(a.data[8:16], "big") for a in before)
    at = kit.t()
    kit.send_raw(response, note="replayed response")
    await anyio.sleep(1.0)
    after = [a for a in transports_from_device(ctx) if a.t > at]
    ctx.check(bool(after), "the device goes on sending", expected="transport datagrams", observed=f"{len(after)}")
    same = all(a.data[4:8] == index for a in after)
    rising = all(int.from_bytes(a.data[8:16], "big") > top for a in after)
    ctx.check(same and rising, "same session, counters keep rising", expected=f"index {index.hex()}, counter > {top}",
              observed=", ".join(f"{a.data[4:8].hex()}/{int.from_bytes(a.data[8:16], 'big')}" for a in after[:6]))
    ctx.check(len(inits(ctx)) == 1, "no new handshake", expected="1 init", observed=f"{len(inits(ctx))} inits")


@case("3.5.1", "Cookie under load: one prompt resend, with a valid mac2",
      description="The kit is under load: it answers the init with a CookieReply (52 bytes) and accepts only inits "
                  "whose mac2 is valid for the device's address.",
      expectation="The device MUST answer the CookieReply with one new init at once, and that init MUST carry a "
                  "valid mac2, so the handshake completes under load.",
      quote="For an accepted CookieReply it sends a new init at once, with `mac2`", timeout=12.0)
async def cookie_under_load(ctx: Context) -> None:
    kit = ctx.kit
    kit.conn.endpoint.set_under_load(True)
    await ctx.start(connect=False)
    await kit.wait_for(lambda: any(e.data[:1] == b"\x03" for e in kit.log.entries if e.direction == "kit>dev"), 10.0,
                       "the kit's CookieReply")
    cookie_at = next(e.t for e in kit.log.entries if e.direction == "kit>dev" and e.data[:1] == b"\x03")
    await kit.wait_for(lambda: len(inits(ctx)) >= 2, 8.0, "the retried HandshakeInit")
    retry = inits(ctx)[1]
    ctx.check(retry.t - cookie_at <= 1.0, "the init is resent at once", expected="next init within 1 s",
              observed=f"{retry.t - cookie_at:.3f} s")
    ctx.check(retry.data[132:148] != bytes(16), "the retry carries mac2", expected="non-zero mac2",
              observed=retry.data[132:148].hex())
    try:
        await kit.connected(2.0)
        ctx.check(True, "the handshake completes under load", expected="a session", observed="session confirmed")
    except Exception:  # noqa: BLE001
        ctx.check(False, "the handshake completes under load", expected="a session",
                  observed="the kit refused the init's mac2 or no transport followed")


@case("3.5.2", "A CookieReply that does not decrypt is ignored",
      description="The kit holds back its response and sends a well-formed CookieReply for the pending init whose "
                  "cookie does not decrypt; it reads the device's next init.",
      expectation="The device MUST ignore the CookieReply: no answer, and its next init carries no mac2.",
      quote="A device MUST ignore a CookieReply that does not decrypt or whose `receiver_index` is not a pending "
            "init.", timeout=12.0)
async def cookie_bogus(ctx: Context) -> None:
    kit = ctx.kit
    _hold_responses(ctx, 1)
    await ctx.start(connect=False)
    await kit.wait_for(lambda: kit.held, 10.0, "the device's first HandshakeInit")
    first = inits(ctx)[0].data
    bogus = b"\x03\x01\x00\x00" + first[4:8] + os.urandom(12) + os.urandom(32)
    before = len(kit.arrivals)
    kit.send_raw(bogus, kit.held[0][1], note="CookieReply that does not decrypt")
    await anyio.sleep(0.3)
    ctx.check(len(kit.arrivals) == before, "no answer to the bad CookieReply", expected="nothing",
              observed=f"{len(kit.arrivals) - before} datagram(s)")
    await kit.wait_for(lambda: len(inits(ctx)) >= 2, 8.0, "the retried HandshakeInit")
    retry = inits(ctx)[1].data
    ctx.check(retry[132:148] == bytes(16), "the retry has no mac2 (no cookie was accepted)",
              expected="16 zero bytes", observed=retry[132:148].hex())


@case("3.6.1", "A transport message whose tag fails is dropped and not acted on",
      description="On an established session the kit sends a reliable volume command whose AEAD tag is corrupted, "
                  "then the same command sealed correctly.",
      expectation="The device MUST drop the forged datagram (no ack for its id) and MUST still acknowledge the "
                  "genuine one: the session is unchanged.",
      quote="Transport whose tag fails | drop; the session and its replay window are unchanged")
async def forged_transport(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    msg_id, plaintext = raw_reliable(ctx, lambda i: Volume(level=41, id=i))
    forged = bytearray(kit.seal(plaintext))
    forged[-1] ^= 0x80
    at = kit.t()
    kit.send_raw(bytes(forged), note="tag corrupted")
    await anyio.sleep(0.4)
    ctx.check(ack_count(ctx, msg_id, at) == 0, "the forged command is not acknowledged", expected="no ack",
              observed=f"{ack_count(ctx, msg_id, at)} ack(s)")
    kit.send_raw(kit.seal(plaintext), note="genuine")
    await kit.wait_for(lambda: ack_count(ctx, msg_id, at) > 0, 1.5, "the ack of the genuine command")
    ctx.check(True, "the genuine command is acknowledged", expected="ack", observed="ack")


@case("3.7.1", "A replayed transport datagram is dropped before it is acted on",
      description="The kit sends a reliable volume command, waits for its ack, then sends the very same datagram "
                  "again.",
      expectation="The device MUST drop the replay (ReplayError) without decrypting it: its id MUST NOT be "
                  "acknowledged a second time.",
      quote="A transport message is accepted only if its tag verifies **and** its counter is greater than the "
            "greatest accepted, or within the window and not yet marked.")
async def replayed_transport(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    msg_id, plaintext = raw_reliable(ctx, lambda i: Volume(level=42, id=i))
    datagram = kit.seal(plaintext)
    kit.send_raw(datagram, note="original")
    await kit.wait_for(lambda: ack_count(ctx, msg_id) > 0, 1.5, "the ack of the original")
    await anyio.sleep(0.1)
    at = kit.t()
    for _ in range(3):
        kit.send_raw(datagram, note="replay")
    await anyio.sleep(0.5)
    ctx.check(ack_count(ctx, msg_id, at) == 0, "the replays are not acknowledged", expected="no new ack",
              observed=f"{ack_count(ctx, msg_id, at)} ack(s) after the replays")


@case("3.7.2", "Counters at 2^60 or below the window are refused",
      description="The kit sends a command under counter 2^60, then jumps its counter 2000 ahead (accepted), then "
                  "sends a command under a skipped counter more than 1024 below the greatest.",
      expectation="The device MUST refuse both (ReplayError): neither id is acknowledged; the jump itself is "
                  "acknowledged and the session goes on.",
      quote="A receiver refuses such a counter (`ReplayError`).")
async def counter_limits(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    peer = kit.conn.endpoint._peer(kit.device)  # type: ignore[arg-type]
    assert peer is not None
    keys = peer.current
    assert keys is not None
    at = kit.t()
    high_id, high = raw_reliable(ctx, lambda i: Volume(level=43, id=i))
    kit.send_raw(kit.seal(high, counter=2**60), note="counter 2^60")
    base = keys.sent
    jump_id, jump = raw_reliable(ctx, lambda i: Volume(level=44, id=i))
    kit.send_raw(kit.seal(jump, counter=base + 2000), note="counter jumps 2000 ahead")
    keys.sent = base + 2001
    await kit.wait_for(lambda: ack_count(ctx, jump_id, at) > 0, 1.5, "the ack of the command 2000 ahead")
    old_id, old = raw_reliable(ctx, lambda i: Volume(level=45, id=i))
    kit.send_raw(kit.seal(old, counter=base + 5), note="counter below the window")
    await anyio.sleep(0.4)
    ctx.check(ack_count(ctx, high_id, at) == 0, "counter 2^60 refused", expected="no ack",
              observed=f"{ack_count(ctx, high_id, at)} ack(s)")
    ctx.check(ack_count(ctx, old_id, at) == 0, "counter below the window refused", expected="no ack",
              observed=f"{ack_count(ctx, old_id, at)} ack(s)")


@case("3.9.1", "Roaming: a new address, the same session",
      description="The kit moves the device to a new UDP port (as a 4G re-attach would) while its session lives.",
      expectation="The device MUST keep its session keys and go on from the new address without a new handshake; "
                  "commands then reach it there and are acknowledged.",
      quote="A device whose address changes (4G reconnect, DHCP) needs no new handshake: its next keepalive or "
            "message moves the server's destination.", needs=("rebind",))
async def roaming(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    await anyio.sleep(0.3)
    old_source = transports_from_device(ctx)[-1].source
    assert ctx.device is not None
    await ctx.device.rebind()
    at = kit.t()
    moved = await kit.wait_for(lambda: [a for a in transports_from_device(ctx) if a.t > at and a.source != old_source],
                               3.0, "a transport message from the new address")
    ctx.check(len(inits(ctx)) == 1, "no new handshake", expected="1 init", observed=f"{len(inits(ctx))} inits")
    msg_id = kit.send(Volume(level=46))
    await kit.wait_for(lambda: ack_count(ctx, msg_id or 0, at) > 0, 2.0, "the ack of a command sent after the move")
    ctx.check(kit.device_address() == moved[0].source, "the kit's destination moved", expected=str(moved[0].source),
              observed=str(kit.device_address()))


@case("3.11.1", "After bye the device forgets the session and handshakes again",
      description="The kit sends bye on the session.",
      expectation="The device MUST forget the session (nothing more on it) and SHOULD start a new handshake "
                  "JOIN_RETRY (2 s) + 0-500 ms after it.",
      quote="A receiver of `bye` forgets the session; a device starts a new handshake `JOIN_RETRY` + a random "
            "0–500 ms after it if it still wants one", timeout=12.0)
async def bye(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    await anyio.sleep(0.3)
    index = transports_from_device(ctx)[-1].data[4:8]
    kit.send(Bye(reason="conformance"))
    at = kit.t()

    def after_bye() -> list[Arrival]:  # not a retry of the first join, sent before the bye
        return [a for a in inits(ctx) if a.t > at]

    await kit.wait_for(after_bye, 8.0, "a new HandshakeInit")
    new_init = after_bye()[0]
    late = [a for a in transports_from_device(ctx) if a.t > at + 0.1 and a.data[4:8] == index]
    ctx.check(not late, "nothing more on the old session", expected="no transport",
              observed=f"{len(late)} transport datagram(s)")
    wait = new_init.t - at
    ctx.check(JOIN_RETRY - 0.2 <= wait <= REKEY_TIMEOUT - 0.5, "the new handshake waits JOIN_RETRY",
              expected="2.000-2.500 s", observed=f"{wait:.3f} s", level="SHOULD")


@case("3.16.1", "A restart notice brings a new handshake at once; notices that do not hold change nothing",
      description="The kit restarts (same key and address, new boot; the device is not told) and sends the device "
                  "two restart notices that do not hold (one for another server boot, one with a wrong mac), then, "
                  "1 s later, a good one.",
      expectation="The device MUST NOT drop its session for the notices that do not hold (no HandshakeInit within "
                  "1 s of them) and SHOULD send a HandshakeInit within 1 s of the good one.",
      quote="then drops its sessions and handshakes at once", timeout=20.0)
async def restart_notice(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    await anyio.sleep(0.5)
    device, address, old_boot = kit.device, kit.device_address(), kit.boot
    assert device is not None
    assert address is not None
    kit.restart()
    key = notice_key(kit.state.static_private, device)
    good = encode_notice(key, old_boot, kit.boot)
    before = len(inits(ctx))
    kit.send_raw(encode_notice(key, old_boot ^ 0x5A5A5A5A, kit.boot), address, "notice for another boot")
    kit.send_raw(good[:-1] + bytes([good[-1] ^ 1]), address, "notice with a wrong mac")
    await anyio.sleep(1.0)
    early = len(inits(ctx)) - before
    ctx.check(early == 0, "notices that do not hold are not acted on", expected="no HandshakeInit",
              observed=f"{early} HandshakeInit(s)")
    kit.send_raw(good, address, "restart notice")
    at = kit.t()
    with contextlib.suppress(KitTimeout):  # a device that ignores notices rejoins later on its own (7.6)
        await kit.wait_for(lambda: len(inits(ctx)) > before + early, 1.5, "a HandshakeInit")
    after = [a.t - at for a in inits(ctx)[before + early:]]
    ctx.check(bool(after) and after[0] <= 1.0, "a HandshakeInit at once after the good notice",
              expected="within 1 s", observed=f"{after[0]:.3f} s" if after else "none within 1.5 s",
              level="SHOULD")


@case("7.6.1", "Server restart: the device handshakes again and does not repeat hello",
      description="The kit loses its sessions (a restart: same key and address, new boot) and drops what arrives on "
                  "the old session.",
      expectation="The device MUST handshake again within DEAD_AFTER (45 s) and MUST NOT send hello again (hello "
                  "is sent once per device boot).",
      quote="it is not repeated on later sessions of the same boot.", timeout=55.0)
async def server_restart(ctx: Context) -> None:
    await ctx.start()
    kit = ctx.kit
    await anyio.sleep(0.5)
    kit.restart()
    at = kit.t()
    await kit.connected(50.0)
    ctx.check(True, "a new session", expected="within 45 s", observed=f"{kit.connects[-1][0] - at:.1f} s")
    await anyio.sleep(0.3)
    hellos = [p for p in kit.plaintexts if p.t > at and isinstance(p.message, Hello)]
    ctx.check(not hellos, "hello is not repeated", expected="no hello", observed=f"{len(hellos)} hello(s)")
