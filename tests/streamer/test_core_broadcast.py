"""Live broadcasts in the core over the fake network: membership by zone, one protection per frame, the same bytes
to every member, late joiners, NACK retransmission, key rotation, roaming (PROTOCOL.md sections 5 and 7.3-7.7)."""

from __future__ import annotations

import random
from collections import Counter
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from streamer_kit import EPOCH_NS, SERVER, World

from loa.protocol.control import Join, Leave, Rotate
from loa.protocol.rtcp import Bye as RtcpBye
from loa.protocol.rtcp import ReceiverReport, ReportBlock, SenderReport, SourceDescription, build_rtcp
from loa.protocol.rtp import ntp64_to_ns
from loa.protocol.sim import LinkConditions
from loa.protocol.srtp import StreamProtector
from loa.streamer import broadcast as broadcast_module
from loa.streamer.broadcast import WRAP_MARGIN, LiveBroadcast
from loa.streamer.sources import ToneSource
from loa.streamer.status import BroadcastEnded


class CountingProtector(StreamProtector):
    calls: ClassVar[Counter[str]] = Counter()

    def protect(self, rtp: bytes | bytearray | memoryview) -> bytes:
        CountingProtector.calls["rtp"] += 1
        return super().protect(rtp)

    def protect_rtcp(self, rtcp: bytes | bytearray | memoryview) -> bytes:
        CountingProtector.calls["rtcp"] += 1
        return super().protect_rtcp(rtcp)


def dominant_hz(frames: list[np.ndarray]) -> float:
    pcm = np.concatenate(frames[5:]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * 48_000 / len(pcm))


def test_a_broadcast_reaches_only_its_zone_protected_once_per_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    CountingProtector.calls.clear()
    monkeypatch.setattr(broadcast_module, "StreamProtector", CountingProtector)
    world = World()
    commune, hamlet = world.device("C11"), world.device("H111")
    outsider, board = world.device("D2"), world.device("C12", kind="board")
    assert world.run_until(lambda: world.online(commune, hamlet, outsider, board), 10.0)
    started = world.now
    bid = world.core.start_broadcast(ToneSource(440.0, seconds=1.0), ["D1"], started, cls=1, lvl=1)
    assert world.run_until(lambda: bid in commune.left and bid in hamlet.left, 5.0)
    world.run_for(0.5)

    # one second of tone: 50 frames, 50 protections; SR after the first packet and a second later with the BYE
    assert CountingProtector.calls["rtp"] == 50
    assert CountingProtector.calls["rtcp"] == 2
    sent = [entry for entry in world.node.media_sent if entry[0] == bid]
    assert len(sent) == 52
    assert all(set(targets) == {world.address(commune), world.address(hamlet)} for _, _, targets in sent)
    assert len(commune.packets(bid)) == len(hamlet.packets(bid)) == 50
    assert [p.raw for p in commune.packets(bid)] == [p.raw for p in hamlet.packets(bid)]  # the same bytes
    assert outsider.media == []
    assert board.media == []
    assert not outsider.of_type(Join)
    assert not board.of_type(Join)
    (join,) = commune.of_type(Join)
    assert (join.cls, join.lvl, join.policy, join.zone, join.delay_ms) == (1, 1, "resume", "D1", 500)
    first = commune.packets(bid)[0].rtp
    assert first.marker
    assert first.ntp64 is not None
    assert [p.rtp.ntp64 is not None for p in commune.packets(bid)[:6]] == [True] * 5 + [False]
    # the first frame leaves start_lead_s (0.1 s) after the joins, and its timestamp says so in server time
    assert abs(ntp64_to_ns(first.ntp64) - (EPOCH_NS + round((started + 0.1) * 1e9))) <= 1
    assert abs(dominant_hz(commune.decode(bid)) - 440.0) < 5.0
    assert any(isinstance(e, BroadcastEnded) and e.bid == bid for e in world.core.events())
    assert world.core.statistics().broadcasts == 0


def test_sender_reports_every_second_state_the_packets_own_timeline() -> None:
    world = World()
    device = world.device("C11")
    assert world.run_until(lambda: world.online(device), 10.0)
    bid = world.core.start_broadcast(ToneSource(seconds=3.0), ["C11"], world.now)
    assert world.run_until(lambda: bid in device.left, 5.0)
    world.run_for(0.2)
    packets = device.packets(bid)
    first = packets[0].rtp
    assert first.ntp64 is not None
    ref_ns = ntp64_to_ns(first.ntp64)
    reports = [(p, compound) for _, _, compound in device.rtcp for p in compound if isinstance(p, SenderReport)]
    assert len(reports) == 4  # right after the first packet, at +1 s and +2 s, and with the closing BYE
    times = [ntp64_to_ns(sr.ntp) for sr, _ in reports]
    assert [t - ref_ns for t in times[:3]] == [0, 10**9, 2 * 10**9]
    for sr, compound in reports:
        # the SR's NTP <-> RTP pair is the very mapping the packets' rapid-sync extension started
        assert ntp64_to_ns(sr.ntp) - ref_ns == ((sr.rtp_timestamp - first.timestamp) & 0xFFFFFFFF) * 10**9 // 48_000
        (sdes,) = [p for p in compound if isinstance(p, SourceDescription)]
        assert sdes.chunks[0].items[0][1].startswith(b"loa-")
    assert [sr.packet_count for sr, _ in reports] == [1, 51, 101, 150]
    assert isinstance(reports[-1][1][-1], RtcpBye)


def test_devices_that_come_later_are_joined() -> None:
    world = World()
    early = world.device("C11")
    assert world.run_until(lambda: world.online(early), 10.0)
    bid = world.core.start_broadcast(ToneSource(), ["P"], world.now)
    world.run_for(1.0)
    late = world.device("C21")  # enrolled, starts after the broadcast began
    stranger = world.device(None, enrol=False)  # unknown: refused until enrolled
    world.run_for(1.0)
    assert late.joined
    assert late.packets(bid)
    assert not stranger.joined
    assert stranger.received_bytes == 0
    world.core.add_device(stranger.public_key, "C12", world.now)
    assert world.run_until(lambda: len(stranger.packets(bid)) > 10, 12.0)  # at its next handshake retry
    assert stranger.joined[bid].zone == "P"
    assert world.core.broadcast_status(bid).members == 3


def test_nack_is_answered_with_the_same_bytes_to_the_requester_only_once_per_rtt() -> None:
    world = World()
    lossy, clean = world.device("C11"), world.device("C12")
    assert world.run_until(lambda: world.online(lossy, clean), 10.0)
    world.net.set_link(SERVER, world.address(lossy), LinkConditions(loss=0.25, delay=(0.01, 0.02)))
    bid = world.core.start_broadcast(ToneSource(), ["D1"], world.now)
    world.run_for(2.0)
    clean_by_seq = {p.rtp.sequence: p.raw for p in clean.packets(bid) if p.at > world.now - 1.5}
    have = {p.rtp.sequence for p in lossy.packets(bid)}
    missing = sorted(set(clean_by_seq) - have)[:20]
    assert len(missing) >= 5
    ssrc = clean.packets(bid)[0].ssrc
    world.net.set_link(SERVER, world.address(lossy), LinkConditions(delay=(0.01, 0.02)))
    clean_before = clean.received_bytes
    clean_media_before = len(clean.media)
    lossy.nack(ssrc, missing, world.now)
    lossy.nack(ssrc, missing, world.now)  # a duplicate within one RTT is not answered again
    world.run_for(0.1)
    recovered = {p.rtp.sequence: p.raw for p in lossy.packets(bid) if p.rtp.sequence in missing}
    assert recovered == {seq: clean_by_seq[seq] for seq in missing}  # identical SRTP bytes
    status = world.core.device_status(lossy.public_key)
    assert status.retransmitted == len(missing)
    assert status.nacked == 2 * len(missing)
    assert not any(seq in missing for seq in (p.rtp.sequence for p in clean.media[clean_media_before:]))
    assert clean.received_bytes > clean_before  # it kept receiving the stream, and nothing else
    # after a round trip the same numbers may be asked again; the device's SRTP replay check drops the copies
    world.run_for(0.5)
    lossy.nack(ssrc, missing[-3:], world.now)
    world.run_for(0.1)
    assert world.core.device_status(lossy.public_key).retransmitted == len(missing) + 3
    assert lossy.media_drops.get("ReplayError") == 3
    # an SSRC it has not joined, and numbers no longer held, are ignored and counted
    lossy.nack(0x12345678, [1, 2], world.now)
    world.run_for(2.5)
    lossy.nack(ssrc, missing[:2], world.now)
    world.run_for(0.1)
    assert world.core.device_status(lossy.public_key).retransmitted == len(missing) + 3
    assert world.core.statistics().drops["nack_ignored"] == 1


def test_nack_from_a_device_that_did_not_join_is_ignored() -> None:
    world = World()
    member, outsider = world.device("C11"), world.device("C21")
    assert world.run_until(lambda: world.online(member, outsider), 10.0)
    bid = world.core.start_broadcast(ToneSource(), ["D1"], world.now)
    world.run_for(0.5)
    ssrc = member.packets(bid)[0].ssrc
    before = outsider.received_bytes
    outsider.nack(ssrc, [member.packets(bid)[3].rtp.sequence], world.now)
    world.run_for(0.2)
    assert outsider.received_bytes == before  # nothing at all: rtcp is unreliable, and nothing is resent
    assert not outsider.media
    assert world.core.device_status(outsider.public_key).retransmitted == 0
    assert world.core.statistics().drops["nack_ignored"] == 1


@pytest.mark.parametrize("change", ["move", "revoke", "remove"])
def test_key_rotation_when_membership_shrinks(change: str) -> None:
    world = World()
    a, b, leaving = world.device("C11"), world.device("C12"), world.device("H111")
    assert world.run_until(lambda: world.online(a, b, leaving), 10.0)
    bid = world.core.start_broadcast(ToneSource(), ["D1"], world.now)
    world.run_for(1.0)
    old_ssrc = a.packets(bid)[0].ssrc
    drops_before = dict(leaving.media_drops)
    if change == "move":
        world.core.update_device(leaving.public_key, world.now, zone="C21")
    elif change == "revoke":
        world.core.update_device(leaving.public_key, world.now, enrolled=False)
    else:
        world.core.remove_device(leaving.public_key, world.now)
    changed_at = world.now
    world.run_for(1.5)
    rotates = [m for m in a.of_type(Rotate) if m.bid == bid]
    assert (len(rotates) == 1 and b.of_type(Rotate) == rotates[:1]) or b.of_type(Rotate)[0].ssrc == rotates[0].ssrc
    new_ssrc = rotates[0].ssrc
    assert new_ssrc != old_ssrc
    assert not leaving.of_type(Rotate)
    if change == "move":
        assert bid in leaving.left  # told to leave; revoked and removed devices lose their session instead
    after = [p for p in a.packets(bid) if p.at > changed_at + 0.2]
    assert after
    assert {p.ssrc for p in after} == {new_ssrc}
    switch = next(p for p in a.packets(bid) if p.ssrc == new_ssrc)
    assert switch.rtp.marker
    assert switch.rtp.ntp64 is not None
    assert switch.at - changed_at < 0.2  # every online member acknowledged quickly; no 2 s grace needed
    assert [p.raw for p in a.packets(bid) if p.ssrc == new_ssrc][:20] == \
        [p.raw for p in b.packets(bid) if p.ssrc == new_ssrc][:20]
    assert not [p for p in leaving.media if p.ssrc == new_ssrc]
    assert leaving.media_drops == drops_before  # nothing of the new stream was sent to it


def test_rtp_timeline_is_continuous_across_a_rotation() -> None:
    world = World(delay=(0.01, 0.01))
    a, leaving = world.device("C11"), world.device("C12")
    assert world.run_until(lambda: world.online(a, leaving), 10.0)
    bid = world.core.start_broadcast(ToneSource(), ["D1"], world.now)
    world.run_for(0.5)
    world.core.update_device(leaving.public_key, world.now, zone="C21")
    world.run_for(1.0)
    packets = a.packets(bid)
    old, new = packets[0].ssrc, packets[-1].ssrc
    assert old != new
    base_old = packets[0]
    first_new = next(p for p in packets if p.ssrc == new)
    last_old = [p for p in packets if p.ssrc == old][-1]
    assert base_old.rtp.ntp64 is not None
    assert first_new.rtp.ntp64 is not None
    old_time = ntp64_to_ns(base_old.rtp.ntp64) + (last_old.rtp.timestamp - base_old.rtp.timestamp) * 10**9 // 48_000
    assert ntp64_to_ns(first_new.rtp.ntp64) - old_time == 20_000_000  # the very next frame, on the same timeline


def test_rotation_waits_for_acks_at_most_two_seconds() -> None:
    world = World()
    a, silent, leaving = world.device("C11"), world.device("C12"), world.device("H111")
    assert world.run_until(lambda: world.online(a, silent, leaving), 10.0)
    bid = world.core.start_broadcast(ToneSource(), ["D1"], world.now)
    world.run_for(0.5)
    world.net.add_outage(world.now, world.now + 10.0, src=world.address(silent))  # its acks are lost
    world.core.update_device(leaving.public_key, world.now, zone="C21")
    changed = world.now
    world.run_for(3.0)
    (rotate,) = a.of_type(Rotate)
    switch = next(p for p in a.packets(bid) if p.ssrc == rotate.ssrc)
    assert 2.0 <= switch.at - changed < 2.1


class FirstSequence(random.Random):
    """A seeded source whose first 16-bit draw (the first stream's initial sequence number) is ``left`` short of
    the wrap; later draws are its own. (The server draws again when ``left`` is ``WRAP_MARGIN`` or less.)"""

    def __init__(self, seed: int, left: int) -> None:
        super().__init__(seed)
        self.first: int | None = (0x10000 - left) % 0x10000

    def getrandbits(self, k: int) -> int:
        if k == 16 and self.first is not None:
            first, self.first = self.first, None
            return first
        return super().getrandbits(k)


@settings(max_examples=12, deadline=None)
@given(left=st.integers(WRAP_MARGIN + 1, 3 * WRAP_MARGIN))
@example(left=WRAP_MARGIN + 1)
@example(left=WRAP_MARGIN + 2)
def test_a_stream_never_wraps_under_its_key_so_a_device_joining_later_decodes_it(left: int) -> None:
    """PROTOCOL.md 5.3.2: the key rotates before the sequence number wraps, so every receiver's rollover counter
    stays 0, including that of a device which joins after the first stream would have wrapped."""
    world = World(rng=FirstSequence(7, left))
    early = world.device("C11")
    assert world.run_until(lambda: world.online(early), 10.0)
    bid = world.core.start_broadcast(ToneSource(), ["D1"], world.now)
    world.run_for(left * 0.02 + 1.0)  # past the point where the first stream would have wrapped
    late = world.device("C12")
    assert world.run_until(lambda: len(late.packets(bid)) > 50, 10.0), late.media_drops
    for device in (early, late):
        assert "AuthError" not in device.media_drops
        by_ssrc: dict[int, list[int]] = {}
        for packet in device.packets(bid):
            by_ssrc.setdefault(packet.ssrc, []).append(packet.rtp.sequence)
        for seqs in by_ssrc.values():  # in order, none lost, and never from 65535 back to 0
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert len({p.ssrc for p in early.packets(bid)}) >= 2  # it rotated
    assert len(early.packets(bid)) >= world.core.broadcast_status(bid).frames - 3  # and lost no frame to it


@given(left=st.integers(1, WRAP_MARGIN))
@example(left=WRAP_MARGIN)
def test_a_stream_never_starts_within_the_margin_of_the_wrap(left: int) -> None:
    """PROTOCOL.md 5.1.1: a start that would need a new key at once is drawn again."""
    broadcast = LiveBroadcast(1, ToneSource(), zones=("P",), cls=0, lvl=0, policy="resume", start=0.0,
                              server_start_ns=EPOCH_NS, rng=FirstSequence(7, left))
    assert broadcast.stream.left > WRAP_MARGIN
    assert not broadcast.needs_rotation


def test_a_rotation_before_the_wrap_waits_for_a_slow_member_up_to_the_wrap() -> None:
    """PROTOCOL.md 5.3.2: not ROTATE_GRACE. A member whose acknowledgements are lost for 6 s keeps every frame."""
    world = World(rng=FirstSequence(7, WRAP_MARGIN + 100))  # the rotation begins 2 s into the stream
    fast, slow = world.device("C11"), world.device("C12")
    assert world.run_until(lambda: world.online(fast, slow), 10.0)
    bid = world.core.start_broadcast(ToneSource(), ["D1"], world.now)
    assert world.run_until(lambda: len(slow.packets(bid)) > 0, 5.0)
    cut = world.now
    world.net.add_outage(cut, cut + 6.0, src=world.address(slow))  # its acknowledgements are lost
    world.run_for(15.0)
    (rotate,) = [m for m in slow.of_type(Rotate) if m.bid == bid]
    switch = next(p for p in fast.packets(bid) if p.ssrc == rotate.ssrc)
    # when the slow member's acknowledgement came through: after the outage, at the rotate's next retransmission
    # (its backoff reaches 8 s), well before the wrap (22 s)
    assert 6.0 <= switch.at - cut < 6.0 + 8.0
    for device in (fast, slow):
        assert "AuthError" not in device.media_drops
        assert len(device.packets(bid)) >= world.core.broadcast_status(bid).frames - 3


def test_a_member_leaving_during_a_rotation_before_the_wrap_is_cut_off_within_the_grace() -> None:
    world = World(rng=FirstSequence(7, WRAP_MARGIN + 100))
    fast, slow, leaving = world.device("C11"), world.device("C12"), world.device("H111")
    assert world.run_until(lambda: world.online(fast, slow, leaving), 10.0)
    bid = world.core.start_broadcast(ToneSource(), ["D1"], world.now)
    assert world.run_until(lambda: len(slow.packets(bid)) > 0, 5.0)
    world.net.add_outage(world.now, world.now + 20.0, src=world.address(slow))  # holds up the wrap's rotation
    world.run_for(3.0)  # that rotation began 2 s into the stream, and waits
    assert world.core.broadcast_status(bid).rotating
    world.core.update_device(leaving.public_key, world.now, zone="C21")
    moved = world.now
    world.run_for(3.0)
    final = [m for m in fast.of_type(Rotate) if m.bid == bid][-1]
    switch = next(p for p in fast.packets(bid) if p.ssrc == final.ssrc)
    assert 2.0 <= switch.at - moved < 2.1  # ROTATE_GRACE, not the wrap's wait
    assert not [p for p in leaving.media if p.ssrc == final.ssrc]


def test_a_device_that_roams_keeps_receiving_at_its_new_address() -> None:
    world = World()
    roamer = world.device("C11")
    assert world.run_until(lambda: world.online(roamer), 10.0)
    bid = world.core.start_broadcast(ToneSource(), ["C11"], world.now)
    world.run_for(0.5)
    new_address = ("198.51.100.99", 5555)
    world.net.move(world.address(roamer), new_address)
    moved = world.now
    world.run_for(0.5)
    roamer.probe_clock(world.now)  # its next datagram comes from the new address
    world.run_for(0.5)
    assert world.core.device_status(roamer.public_key).address == new_address
    assert [p for p in roamer.packets(bid) if p.at > moved + 0.6]
    assert world.net.statistics().undeliverable > 0  # the frames sent to the old address in between


def test_receiver_reports_reach_the_device_status() -> None:
    world = World()
    device = world.device("C11")
    assert world.run_until(lambda: world.online(device), 10.0)
    bid = world.core.start_broadcast(ToneSource(), ["C11"], world.now)
    world.run_for(0.5)
    ssrc = device.packets(bid)[0].ssrc
    block = ReportBlock(ssrc, fraction_lost=64, cumulative_lost=7, highest_seq=1000, jitter=480, lsr=0, dlsr=0)
    from loa.protocol.control import Rtcp

    device.conn.send(Rtcp(pkt=build_rtcp([ReceiverReport(1, (block,))])), world.now)
    world.run_for(0.2)
    status = world.core.device_status(device.public_key)
    assert (status.loss, status.cumulative_lost, status.jitter_ms) == (0.25, 7, 10.0)


def test_stop_sends_leave_and_the_stream_ends() -> None:
    world = World()
    device = world.device("C11")
    assert world.run_until(lambda: world.online(device), 10.0)
    bid = world.core.start_broadcast(ToneSource(), ["C11"], world.now)
    world.run_for(0.5)
    world.core.stop_broadcast(bid, world.now)
    stopped = world.now
    world.run_for(1.0)
    assert bid in device.left
    assert Leave(bid=bid, id=device.of_type(Leave)[0].id) in device.messages
    assert not [p for p in device.packets(bid) if p.at > stopped + 0.05]
    assert world.core.live_broadcasts() == []
    with pytest.raises(KeyError):
        world.core.stop_broadcast(bid, world.now)
