"""A stored programme played as a broadcast or as the local programme (PROTOCOL.md sections 4.4 ``play``, 5.8).

:class:`StoredPlayer` places a prefetched Ogg Opus programme on the server timeline: programme sample *p*
plays at server time ``anchor + p / 48 kHz``. It starts at any position (a ``play`` received after its ``at``
starts at ``now - at``): it finds the packet whose granule range holds ``pre_skip + p``, decodes from at least
3840 samples (80 ms) earlier as RFC 7845 recommends, and discards what precedes the target. Each output frame is
(the rest of) one Opus packet. A preempted programme that resumes continues from where it stopped: the caller
moves the anchor with :meth:`StoredPlayer.resume_at`.
"""

from __future__ import annotations

import bisect

import numpy as np

from loa.codecs import CodecError, OpusDecoder, packet_samples
from loa.devices.content import Programme
from loa.devices.frame import NS, Frame, ServerClock

__all__ = ["PREROLL_SAMPLES", "StoredPlayer"]

CLOCK_RATE = 48_000
PREROLL_SAMPLES = 3840  # decode at least 80 ms before a seek target (RFC 7845 section 4.6)


class StoredPlayer:
    """Frames of one stored programme; ``anchor`` is the server time (ns) of programme sample 0."""

    def __init__(self, programme: Programme, anchor: int, *, position: int = 0, loop: bool = False) -> None:
        self.programme = programme
        self.anchor = anchor
        self.loop = loop
        packets = programme.packets
        self._ends = [p.granule for p in packets]
        first = packets[0]
        self._offset = first.granule - packet_samples(first.data)  # granule at the start of the first packet
        self._final = programme.info.final_granule
        self.position = 0
        self._decoder: OpusDecoder | None = None
        self._warm = False  # the decoder state matches the packet before the next one
        self.seek(position)

    @property
    def samples(self) -> int:
        return self.programme.samples

    @property
    def finished(self) -> bool:
        return not self.loop and self.position >= self.samples

    def end_time(self) -> int:
        """Server time (ns) at which the programme ends on the current anchor."""
        return self.anchor + self.samples * NS // CLOCK_RATE

    def seek(self, position: int) -> None:
        self.position = max(0, position)
        self._warm = False

    def resume_at(self, server_ns: int) -> None:
        """Continue from the current position at server time ``server_ns``."""
        self.anchor = server_ns - self.position * NS // CLOCK_RATE

    def next_time(self, clock: ServerClock) -> float | None:
        if self.finished:
            return None
        return clock.to_local(self.anchor + self.position * NS // CLOCK_RATE)

    def skip_before(self, local: float, clock: ServerClock) -> int:
        return 0  # a stored programme never loses its place

    def _packet_at(self, decoded: int) -> int:
        return min(bisect.bisect_right(self._ends, decoded), len(self._ends) - 1)

    def take(self, now: float, clock: ServerClock, decode: bool) -> Frame | None:
        at = self.next_time(clock)
        if at is None:
            return None
        if self.loop and self.position >= self.samples:
            self.anchor += self.samples * NS // CLOCK_RATE
            self.seek(0)
        target = self._offset + self.programme.pre_skip + self.position
        index = self._packet_at(target)
        start = self._ends[index - 1] if index else self._offset
        end = min(self._ends[index], self._final)
        count = max(0, end - target)
        pcm = None
        if decode:
            pcm = self._decode(index, target - start, count)
        server_at = self.anchor + self.position * NS // CLOCK_RATE
        frame = Frame(at, server_at, count, "packet", pcm, 0, index & 0xFFFF, self.position & 0xFFFFFFFF)
        self.position += count
        if count == 0:  # past the last packet: nothing more to play
            self.position = self.samples
        return frame

    def _decode(self, index: int, skip: int, count: int) -> np.ndarray | None:
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = OpusDecoder()
        packets = self.programme.packets
        try:
            if not self._warm:
                decoder.reset()
                first = self._packet_at(max(self._offset, self._ends[index - 1] - PREROLL_SAMPLES) if index else 0)
                for i in range(first, index):
                    decoder.decode(packets[i].data)
            pcm = decoder.decode(packets[index].data)
        except CodecError:
            self._warm = False
            return np.zeros(count, dtype=np.int16)
        self._warm = True
        out = pcm[skip : skip + count]
        if len(out) < count:
            out = np.concatenate([out, np.zeros(count - len(out), dtype=np.int16)])
        return out

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
