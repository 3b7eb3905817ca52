"""Signed alerts at the reference device (PROTOCOL.md sections 6.4, 6.5, 8): verified before anything plays."""

from __future__ import annotations

import dataclasses

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from serverdriver import SERVER, World

from loa.protocol.beacon import BEACON_VERIFY_BURST, encode_beacon
from loa.protocol.control import ConfigValues, Leave, SignedAlert


def _setup(seed: int, **config: object) -> tuple[World, object, bytes]:
    values = ConfigValues(zones=("79", "760", "26734"), telemetry_s=10, **config)  # type: ignore[arg-type]
    world = World(seed, config=values)
    node = world.add_device(offset_s=-3.0, drift_ppm=15)
    world.run(10.0)
    return world, node, world.pub(node)


def test_refused_alerts_are_counted_by_error_and_never_play(alert_payloads: list[bytes]) -> None:
    world, node, pub = _setup(20)
    core = node.core  # type: ignore[attr-defined]
    genuine = world.alert(40, alert_id="flood-1")
    bad_sig = bytes(64)
    forged_body = bytearray(genuine.body)
    forged_body[-1] ^= 1  # a relay changed the broadcast id
    stranger = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    refused = {
        "SignatureError": [SignedAlert(body=genuine.body, sig=bad_sig),
                           SignedAlert(body=bytes(forged_body), sig=genuine.sig)],
        "UnknownKeyError": [world.alert(41, key=stranger)],  # signed, but not by a provisioned authority
        "ExpiredError": [world.alert(42, issued_in=-20.0, lifetime=10.0), world.alert(43, issued_in=60.0)],
        "WrongZoneError": [world.alert(44, zones=("01", "02"))],
    }
    for messages in refused.values():
        for message in messages:
            world.server.send(pub, message)
    world.server.start_stream(40, [pub], cls=2, lvl=2, payloads=alert_payloads, start_in=0.1, join=True)
    world.run(2.0)
    refusals = core.statistics().alerts_refused
    assert refusals == {name: len(messages) for name, messages in refused.items()}
    drops = core.drops()  # the same counts reach telemetry `drops` (with the stream's unjoined packets)
    assert all(drops[name] >= count for name, count in refusals.items())
    assert core.arbiter.current is None
    assert core.log.entries == type(core.log.entries)()  # nothing played
    # the genuine alert plays; sent again (a replay) it is refused and counted, and plays no second time
    world.server.send(pub, genuine)
    world.run(2.0)
    assert core.arbiter.current == 40
    assert len(core.log.for_bid(40)) > 50
    world.server.send(pub, dataclasses.replace(genuine))
    world.run(0.5)
    assert core.statistics().alerts_refused["ReplayError"] == 1
    assert core.statistics().alerts_accepted == 1


def test_emergency_join_without_an_alert_never_plays(alert_payloads: list[bytes]) -> None:
    world, node, pub = _setup(21)
    core = node.core  # type: ignore[attr-defined]
    world.server.start_stream(50, [pub], cls=2, lvl=3, payloads=alert_payloads, start_in=0.1)
    world.run(12.0)  # longer than the device waits for the alert of a join it holds
    assert core.arbiter.current is None
    assert core.log.for_bid(50) == []
    assert core.statistics().alerts_refused == {"SignatureError": 1}  # section 8: counted as SignatureError
    assert core.drops()["UnknownKeyError"] > 0  # its packets: an SSRC the device did not join


def test_join_before_its_alert_plays_once_the_alert_is_accepted(alert_payloads: list[bytes]) -> None:
    world, node, pub = _setup(22)
    core = node.core  # type: ignore[attr-defined]
    world.server.start_stream(60, [pub], cls=2, lvl=2, payloads=alert_payloads, start_in=0.1)
    world.run(1.0)
    assert core.arbiter.current is None
    world.server.send(pub, world.alert(60))
    world.run(2.0)
    assert core.arbiter.current == 60
    assert len(core.log.for_bid(60)) > 50


def test_exercise_alerts_play_only_where_config_says_so(alert_payloads: list[bytes]) -> None:
    for exercise, plays in ((False, False), (True, True)):
        world, node, pub = _setup(23, exercise=exercise)
        core = node.core  # type: ignore[attr-defined]
        world.server.send(pub, world.alert(70, status="exercise"))
        world.server.start_stream(70, [pub], cls=2, lvl=2, payloads=alert_payloads, start_in=0.1)
        world.run(2.0)
        assert core.statistics().alerts_accepted == 1  # accepted (and acknowledged) either way
        assert (core.arbiter.current == 70) is plays
        assert "SignatureError" not in core.drops()


def test_cancel_ends_the_alert_and_expiry_too(payloads: list[bytes], alert_payloads: list[bytes]) -> None:
    world, node, pub = _setup(24)
    core = node.core  # type: ignore[attr-defined]
    world.server.start_stream(1, [pub], cls=0, lvl=1, payloads=payloads, start_in=0.1)
    world.run(1.0)
    world.server.send(pub, world.alert(80, alert_id="storm-7"))
    world.server.start_stream(80, [pub], cls=2, lvl=2, payloads=alert_payloads, start_in=0.1)
    world.run(2.0)
    assert core.arbiter.current == 80
    world.server.send(pub, world.cancel("storm-7"))
    world.run(1.0)
    assert core.arbiter.current == 1  # the normal programme resumed
    world.server.send(pub, world.alert(80, alert_id="storm-7"))  # a late copy of the cancelled alert
    world.run(1.0)
    assert core.statistics().alerts_refused == {"ReplayError": 1}
    # an alert that expires ends by itself
    world.server.send(pub, world.alert(81, lifetime=3.0))
    world.server.start_stream(81, [pub], cls=2, lvl=2, payloads=alert_payloads, start_in=0.1)
    world.run(1.5)
    assert core.arbiter.current == 81
    world.run(3.0)
    assert core.arbiter.current == 1
    # both alerts are among the states the device reported, the last of them its state now
    bids = [bid for bid, _src in core.recent_states]
    assert {80, 81} <= set(bids)
    assert bids.index(80) < bids.index(81)
    assert core.recent_states[-1] == core.state


def test_an_alert_whose_leave_overtook_it_does_not_silence_the_programme(payloads: list[bytes]) -> None:
    """After an outage, retransmissions arrive in any order (section 4.3): the `leave` of an alert whose audio
    already ended can come before the `alert` itself. The device counts the alert as accepted but does not start
    a broadcast that has ended, so the programme it preempted is not held silent until the alert expires."""
    world, node, pub = _setup(24)
    core = node.core  # type: ignore[attr-defined]
    world.server.start_stream(7, [pub], payloads=payloads, start_in=0.1, delay_ms=300)
    world.run(2.0)
    assert core.arbiter.current == 7
    world.server.send(pub, Leave(bid=40))
    world.run(0.2)
    world.server.send(pub, world.alert(40, alert_id="ended-before-it-arrived"))
    world.run(2.0)
    assert core.statistics().alerts_accepted == 1
    assert core.arbiter.current == 7
    played = [e for e in core.log.for_bid(7) if e.true_at is not None and e.true_at > world.net.now - 1.0]
    assert len(played) >= 45  # the programme went on playing


# -- alert beacons (section 6.4.2) ------------------------------------------------------------------------------

def _beacon_to(world: World, node: object, message: SignedAlert, *, src: tuple[str, int] = SERVER) -> None:
    address = next(a for a, e in world.net._endpoints.items() if e is node)
    world.net.inject(encode_beacon(message.body, message.sig), src, address)


def test_a_beacon_delivers_the_alert_and_its_reliable_copy_is_not_counted_again(alert_payloads: list[bytes]) -> None:
    world, node, pub = _setup(23)
    core = node.core  # type: ignore[attr-defined]
    genuine = world.alert(70, alert_id="beacon-1")
    _beacon_to(world, node, genuine)
    world.run(0.2)
    assert core.statistics().alerts_accepted == 1  # held from the beacon alone, before any reliable message
    assert core.alerts.for_bid(70) is not None
    world.server.send(pub, genuine)  # the reliable copy: acknowledged, neither checked nor counted again
    world.server.start_stream(70, [pub], cls=2, lvl=2, payloads=alert_payloads, start_in=0.1, join=True)
    world.run(2.0)
    assert core.arbiter.current == 70
    assert len(core.log.for_bid(70)) > 50
    assert core.statistics().alerts_accepted == 1
    assert core.statistics().alerts_refused == {}
    assert world.server.conn.channel(pub).statistics().in_flight == 0  # the reliable copy was acknowledged
    _beacon_to(world, node, genuine)  # a third copy is a replay: checked and counted
    world.run(0.2)
    assert core.statistics().alerts_refused == {"ReplayError": 1}


def test_beacons_from_elsewhere_malformed_or_forged_are_dropped_and_counted() -> None:
    world, node, _pub = _setup(24)
    core = node.core  # type: ignore[attr-defined]
    genuine = world.alert(80, alert_id="beacon-2")
    _beacon_to(world, node, genuine, src=("203.0.113.9", 4433))  # not the server's address
    address = next(a for a, e in world.net._endpoints.items() if e is node)
    datagram = encode_beacon(genuine.body, genuine.sig)
    world.net.inject(datagram[:-1], SERVER, address)  # truncated
    world.net.inject(datagram + b"\x00", SERVER, address)  # a byte after the signature
    world.net.inject(datagram[:1] + b"\x02" + datagram[2:], SERVER, address)  # version 2
    _beacon_to(world, node, SignedAlert(body=genuine.body, sig=bytes(64)))  # forged
    world.run(0.5)
    drops = core.drops()
    assert drops["UnknownKeyError"] >= 1
    assert drops["TruncatedError"] == 1
    assert drops["BadLengthError"] == 1
    assert drops["UnknownVersionError"] == 1
    assert core.statistics().alerts_refused == {"SignatureError": 1}
    assert core.statistics().alerts_accepted == 0
    _beacon_to(world, node, genuine)  # the genuine one, from the server's address, still goes through
    world.run(0.2)
    assert core.statistics().alerts_accepted == 1


def test_beacon_signature_checks_are_rate_limited() -> None:
    world, node, _pub = _setup(25)
    core = node.core  # type: ignore[attr-defined]
    forged = world.alert(90, alert_id="beacon-3")
    flood = BEACON_VERIFY_BURST + 20
    for i in range(flood):  # within 0.3 s: the burst, and at most one more as the bucket refills
        _beacon_to(world, node, SignedAlert(body=forged.body, sig=bytes([i + 1]) * 64))
    world.run(0.3)
    verified = core.statistics().alerts_refused["SignatureError"]
    assert BEACON_VERIFY_BURST <= verified <= BEACON_VERIFY_BURST + 1
    assert core.drops()["RateLimitError"] == flood - verified
    world.run(10.0)  # the bucket refills: a genuine beacon is verified again
    _beacon_to(world, node, world.alert(91, alert_id="beacon-4"))
    world.run(0.2)
    assert core.statistics().alerts_accepted == 1
