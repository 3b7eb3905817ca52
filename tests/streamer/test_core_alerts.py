"""Alerts in the core: signed (here or by the authority), verified by devices, amplifier pre-roll with silence
before the audio, cancel, expiry, late joiners (PROTOCOL.md sections 6.3-6.5, 7.4)."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from streamer_kit import EPOCH_NS, World

from loa.protocol.alert import Alert, key_id, sign_alert, verify_alert, verify_cancel
from loa.protocol.beacon import parse_beacon
from loa.protocol.control import Amp, Join, Leave, SignedAlert, SignedAlertCancel
from loa.protocol.rtp import ntp64_to_ns
from loa.streamer.alerts import AlertError
from loa.streamer.sources import ToneSource
from loa.streamer.status import BroadcastEnded


def rms(frame: np.ndarray) -> float:
    return float(np.sqrt(np.mean(frame.astype(np.float64) ** 2)))


def test_alert_is_signed_preceded_by_amp_and_silence_then_cancelled() -> None:
    world = World()
    speaker, hamlet = world.device("C11"), world.device("H111")
    board, outsider = world.device("C12", kind="board"), world.device("D2")
    assert world.run_until(lambda: world.online(speaker, hamlet, board, outsider), 10.0)
    triggered = world.now
    bid = world.core.trigger_alert(ToneSource(1000.0), triggered, signing_key=world.authority, zones=["D1"],
                                   preroll_ms=1000, text="Lũ quét ở huyện Một", alert_id="ls-2025-001")
    world.run_for(2.0)
    for device in (speaker, hamlet, board):
        (alert,) = device.alerts
        assert (alert.bid, alert.id, alert.zones, alert.cls, alert.lvl) == (bid, "ls-2025-001", ("D1",), 2, 2)
        assert alert.text == "Lũ quét ở huyện Một"
    assert not outsider.messages[2:]
    assert not outsider.alerts
    assert not outsider.media
    for device in (speaker, hamlet):
        ids = {type(m): m.id for m in device.messages if hasattr(m, "id")}
        assert ids[SignedAlert] < ids[Amp] < ids[Join]  # sent as alert, amp, join (arrival order may differ)
        assert device.of_type(Amp)[0] == Amp(on=True, preroll_ms=1000, id=device.of_type(Amp)[0].id)
        assert device.joined[bid].cls == 2
    assert not board.of_type(Join)
    assert not board.of_type(Amp)
    assert not board.media

    # pre-roll: silence frames until 1 s after the trigger, then the tone; the timeline is continuous
    packets = sorted(speaker.packets(bid), key=lambda p: p.rtp.sequence)
    frames = speaker.decode(bid)
    first_loud = next(i for i, f in enumerate(frames) if rms(f) > 500)
    assert all(rms(f) < 5 for f in frames[:first_loud])
    first = packets[0].rtp
    assert first.ntp64 is not None
    loud_at = ntp64_to_ns(first.ntp64) + (packets[first_loud].rtp.timestamp - first.timestamp) * 10**9 // 48_000
    assert loud_at - (EPOCH_NS + round(triggered * 1e9)) == 1_000_000_000  # exactly preroll_ms after the trigger
    assert world.core.broadcast_status(bid).silent_frames == first_loud

    world.core.cancel_alert(bid, world.now, signing_key=world.authority)
    cancelled = world.now
    world.run_for(1.0)
    for device in (speaker, hamlet, board):
        (cancel,) = device.of_type(SignedAlertCancel)
        verified = verify_cancel(cancel.body, cancel.sig, world.authorities, now=EPOCH_NS + round(world.now * 1e9))
        assert verified.cancel == "ls-2025-001"
    for device in (speaker, hamlet):
        assert bid in device.left
        assert device.of_type(Amp)[-1].on is False
        assert not [p for p in device.packets(bid) if p.at > cancelled + 0.05]
    assert any(isinstance(e, BroadcastEnded) and e.reason == "cancelled" for e in world.core.events())


def test_an_alert_signed_by_the_authority_is_checked_before_it_is_sent() -> None:
    world = World()
    device = world.device("C21")
    assert world.run_until(lambda: world.online(device), 10.0)
    now_ns = EPOCH_NS + round(world.now * 1e9)
    kid = key_id(world.authority.public_key())

    def signed(key: Ed25519PrivateKey = world.authority, **fields: object) -> tuple[bytes, bytes]:
        values: dict[str, object] = {"id": "a-1", "kid": kid, "status": "actual", "cls": 2, "lvl": 2,
                                     "zones": ("D2",), "issued": now_ns, "expires": now_ns + 600 * 10**9,
                                     "bid": world.core.allocate_bid()}
        values.update(fields)
        return sign_alert(Alert(**values), key)  # type: ignore[arg-type]

    rogue = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    refusals = {
        "unknown authority": signed(rogue, kid=key_id(rogue.public_key())),
        "expired": signed(issued=now_ns - 20 * 10**9, expires=now_ns - 10**9),
        "no zone of ours": signed(zones=("79",)),
    }
    body, sig = signed()
    refusals["forged"] = (body, bytes(64))
    for reason, (b, s) in refusals.items():
        with pytest.raises(AlertError):
            world.core.trigger_alert(ToneSource(seconds=0.5), world.now, body=b, sig=s)
        assert world.core.live_broadcasts() == [], reason
    bid = world.core.trigger_alert(ToneSource(seconds=0.5), world.now, body=body, sig=sig)
    with pytest.raises(AlertError):  # the same alert id again: a replay
        world.core.trigger_alert(ToneSource(seconds=0.5), world.now, body=body, sig=sig)
    world.run_for(1.5)
    (alert,) = device.alerts
    assert alert.bid == bid
    assert alert.id == "a-1"
    assert device.of_type(SignedAlert)[0].body == body  # relayed byte for byte
    assert len(device.packets(bid)) == 25
    assert bid in device.left


def test_devices_that_connect_during_an_alert_get_it_and_it_expires() -> None:
    world = World()
    first = world.device("C11")
    assert world.run_until(lambda: world.online(first), 10.0)
    bid = world.core.trigger_alert(ToneSource(), world.now, signing_key=world.authority, zones=["P"], ttl_s=3.0)
    world.run_for(1.0)
    late = world.device("C21")
    world.run_for(1.0)
    assert [a.bid for a in late.alerts] == [bid]
    assert late.joined[bid].cls == 2
    assert late.packets(bid)
    assert len(late.of_type(SignedAlert)) == 1  # sent once, not again with the state on connection
    assert late.of_type(SignedAlert)[0].id < late.of_type(Join)[0].id
    world.run_for(1.5)  # the alert expires 3 s after it was issued: its audio ends
    for device in (first, late):
        assert bid in device.left
        assert Leave in [type(m) for m in device.messages]
    assert any(isinstance(e, BroadcastEnded) and e.reason == "expired" for e in world.core.events())
    assert world.core.live_broadcasts() == []


def test_cancel_must_come_from_the_same_authority() -> None:
    world = World()
    device = world.device("C11")
    assert world.run_until(lambda: world.online(device), 10.0)
    bid = world.core.trigger_alert(ToneSource(), world.now, signing_key=world.authority, zones=["C11"])
    other = Ed25519PrivateKey.from_private_bytes(bytes(32))
    with pytest.raises(AlertError):
        world.core.cancel_alert(bid, world.now, signing_key=other)
    with pytest.raises(AlertError):
        world.core.cancel_alert(bid, world.now, body=b"\x80", sig=bytes(64))
    assert world.core.live_broadcasts() == [bid]


def test_an_alert_sends_one_beacon_to_each_device_with_a_session_before_anything_sealed() -> None:
    world = World()
    online = [world.device("C11"), world.device("C21"), world.device("C11", kind="board")]
    offline = world.device("C21", start=False)  # enrolled, never connected: no verified address
    assert world.run_until(lambda: world.online(*online), 10.0)
    bid = world.core.trigger_alert(ToneSource(), world.now, signing_key=world.authority, zones=["D2"], ttl_s=30.0)
    out = world.core.datagrams_to_send()
    beacons = [(data, address) for data, address in out if data[0] == 0x05]
    targets = [online[1]]  # the speaker in D2; C11 devices are in D1
    assert [address for _, address in beacons] == [world.address(d) for d in targets]
    assert out[: len(beacons)] == beacons  # ahead of every sealed datagram
    assert world.address(offline) not in {address for _, address in out}
    ((data, _),) = beacons
    body, sig = parse_beacon(data)
    alert = verify_alert(body, sig, world.authorities, now=EPOCH_NS + round(world.now * 1e9),
                         zone_path=("P", "D2", "C21"), seen_ids=())
    assert alert.bid == bid


def test_every_target_of_a_wide_alert_gets_the_same_beacon_bytes() -> None:
    world = World()
    devices = [world.device(zone) for zone in ("C11", "C12", "C21", "C11", "C21")]
    board = world.device("C12", kind="board")
    assert world.run_until(lambda: world.online(*devices, board), 10.0)
    world.core.trigger_alert(ToneSource(), world.now, signing_key=world.authority, zones=["P"], ttl_s=30.0)
    out = world.core.datagrams_to_send()
    beacons = [(data, address) for data, address in out if data[0] == 0x05]
    assert sorted(address for _, address in beacons) == sorted(world.address(d) for d in [*devices, board])
    assert len({data for data, _ in beacons}) == 1
    # and each also gets the reliable alert, sealed for its session
    world.run_for(1.0)
    for device in [*devices, board]:
        assert len(device.of_type(SignedAlert)) == 1
