"""The ``srtp`` fuzz target keeps one sender and one receiver: every input must still meet fresh stream state."""

from __future__ import annotations

import pytest

from loa.bench.fuzz import srtp
from loa.protocol.errors import LocalProtocolError, ReplayError


def _seed(mode: int) -> bytes:
    return next(d for d in srtp.seeds().values() if d[0] == mode)[1:]


def test_one_stream_refuses_to_protect_a_packet_twice() -> None:
    rtp = _seed(2)
    srtp.SENDER.protect(rtp)
    with pytest.raises(LocalProtocolError):
        srtp.SENDER.protect(rtp)
    srtp._forget(rtp, rtcp=False)


@pytest.mark.parametrize("mode", [2, 3])
def test_forgetting_the_ssrc_gives_a_fresh_stream_on_both_sides(mode: int) -> None:
    packet, rtcp = _seed(mode), mode == 3
    for _ in range(3):
        protected = srtp.SENDER.protect_rtcp(packet) if rtcp else srtp.SENDER.protect(packet)
        assert (srtp.RECEIVER.unprotect_rtcp(protected) if rtcp else srtp.RECEIVER.unprotect(protected)) == packet
        srtp._forget(packet, rtcp)


def test_an_input_leaves_no_stream_behind() -> None:
    packet = _seed(2)
    protected = srtp.StreamProtector(srtp.KEY).protect(packet)
    srtp.TestOneInput(b"\0" + protected)  # mode 0: it passes under the shared receiver, which then forgets it
    assert srtp.RECEIVER.unprotect(protected) == packet  # accepted again: no stream kept its index
    with pytest.raises(ReplayError):  # as a stream that is kept refuses a replay
        srtp.RECEIVER.unprotect(protected)
    srtp._forget(packet, rtcp=False)
