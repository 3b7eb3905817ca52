"""What members send back about a live stream (loa.streamer.reports): any RTCP, well formed or not.

The NACK exchanges themselves are in test_core_broadcast.py; here a member sends whatever RTCP it likes and the
server must answer only with copies of that member's own stream, each sequence number at most once per RTT,
nothing to anyone else, and count every payload it cannot parse.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from streamer_kit import World

from loa.protocol.control import Rtcp
from loa.protocol.errors import RemoteProtocolError
from loa.protocol.rtcp import GenericNack, ReceiverReport, ReportBlock, build_rtcp, parse_rtcp
from loa.streamer.sources import ToneSource

OWN = -1  # stands for the member's own SSRC in the drawn NACKs

seqs = st.lists(st.integers(-20, 100), min_size=1, max_size=40)  # offsets from the stream's first number
nacks = st.builds(lambda ssrc, lost: ("nack", ssrc, lost), st.sampled_from([OWN, OWN, OWN, 0x12345678, 0]), seqs)
reports = st.builds(lambda ssrc, lost: ("rr", ssrc, lost), st.sampled_from([OWN, 0x0BADF00D]), st.integers(0, 255))
payloads = st.lists(st.one_of(nacks, nacks, reports, st.binary(min_size=1, max_size=80)), min_size=1, max_size=6)


def _build(item: object, ssrc: int, first: int) -> bytes:
    if isinstance(item, bytes):
        return item
    assert isinstance(item, tuple)
    kind, target, arg = item
    target = ssrc if target == OWN else target
    if kind == "nack":
        return build_rtcp([GenericNack(0x0D0E0F10, target, tuple((first + n) & 0xFFFF for n in arg))])
    return build_rtcp([ReceiverReport(0x0D0E0F10, (ReportBlock(target, arg, 7, 0, 96, 0, 0),))])


def _parse(pkt: bytes) -> list[object] | None:
    try:
        return list(parse_rtcp(pkt))
    except RemoteProtocolError:
        return None


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
@example([("nack", OWN, [5, 6]), ("nack", OWN, [5]), b"\x80"])  # the same number twice within one RTT
def test_any_rtcp_from_a_member_is_answered_only_with_its_own_stream_at_most_once_per_rtt(
        drawn: list[object]) -> None:
    world = World()
    member, outsider = world.device("C11"), world.device("C21")
    assert world.run_until(lambda: world.online(member, outsider), 10.0)
    bid = world.core.start_broadcast(ToneSource(), ["C11"], world.now)
    world.run_for(1.5)
    ssrc, first = member.packets(bid)[0].ssrc, member.packets(bid)[0].rtp.sequence
    outsider_bytes, outsider_media = outsider.received_bytes, len(outsider.media)
    drops_before = Counter(world.core.statistics().drops)

    sent = [_build(item, ssrc, first) for item in drawn]
    for pkt in sent:
        member.conn.send(Rtcp(pkt=pkt), world.now)
    world.run_for(0.05)  # well within one RTT on the fake network's default link

    parsed = [_parse(pkt) for pkt in sent]
    nacked = [packet for packets in parsed if packets is not None for packet in packets
              if isinstance(packet, GenericNack)]
    asked = {seq for nack in nacked if nack.media_ssrc == ssrc for seq in nack.lost}
    status = world.core.device_status(member.public_key)
    held = {p.rtp.sequence for p in member.packets(bid)}  # what the server had sent it, by now
    assert status.nacked == sum(len(nack.lost) for nack in nacked if nack.media_ssrc == ssrc)
    assert status.retransmitted <= len(asked & held)  # each held number at most once, nothing else
    # every copy is a packet of its own stream it already had: SRTP authenticates it, the replay check drops it
    assert member.media_drops.get("ReplayError", 0) == status.retransmitted
    assert (outsider.received_bytes, len(outsider.media)) == (outsider_bytes, outsider_media)
    drops = Counter(world.core.statistics().drops) - drops_before
    assert sum(n for name, n in drops.items() if name.endswith("Error")) == parsed.count(None)
    assert drops["nack_ignored"] == sum(1 for nack in nacked if nack.media_ssrc != ssrc)
