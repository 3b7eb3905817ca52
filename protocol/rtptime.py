"""RTP number arithmetic: 16-bit sequence numbers, 32-bit timestamps, NTP 64-bit timestamps.

Sequence numbers and RTP timestamps wrap; comparing them needs the serial-number arithmetic of RFC 1982:
:func:`seq_diff` and :func:`ts_diff` return the signed distance the shorter way round. NTP timestamps
(RFC 5905: 32-bit seconds since 1900-01-01 and a 32-bit binary fraction) convert to and from server time
(signed 64-bit nanoseconds since 1970-01-01) with rounding to nearest, so ``ntp64_to_ns(ns_to_ntp64(ns)) == ns``
for every ``ns`` between 1968-01-20 and 2104-02-26; outside that span the era is ambiguous (RFC 4330 section 3).
"""

from __future__ import annotations

from loa.protocol.errors import LocalProtocolError

__all__ = [
    "NTP_UNIX_OFFSET_S",
    "SeqUnwrapper",
    "ns_to_ntp64",
    "ntp64_to_ns",
    "seq_add",
    "seq_diff",
    "seq_newer",
    "ts_add",
    "ts_diff",
]

NTP_UNIX_OFFSET_S = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
_NS = 1_000_000_000
_U32 = 0xFFFFFFFF


def seq_add(seq: int, n: int) -> int:
    """``seq + n`` modulo 2^16."""
    return (seq + n) & 0xFFFF


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between two sequence numbers, in -32768..32767."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def seq_newer(a: int, b: int) -> bool:
    """Whether sequence number ``a`` comes after ``b`` (the shorter way round the circle)."""
    return seq_diff(a, b) > 0


def ts_add(ts: int, n: int) -> int:
    """``ts + n`` modulo 2^32."""
    return (ts + n) & _U32


def ts_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between two RTP timestamps, in -2^31..2^31-1."""
    return ((a - b + 0x80000000) & _U32) - 0x80000000


def ns_to_ntp64(ns: int) -> int:
    """Server time (ns since 1970) to a 64-bit NTP timestamp, rounding the fraction to nearest.

    Times from 2036-02-07 on wrap into NTP era 1 (seconds modulo 2^32), as RFC 5905 specifies. Raises
    :class:`LocalProtocolError` for times before 1900, which NTP cannot express.
    """
    total = ns + NTP_UNIX_OFFSET_S * _NS
    if total < 0:
        raise LocalProtocolError(f"time {ns} ns is before the NTP epoch")
    seconds, frac_ns = divmod(total, _NS)
    frac = ((frac_ns << 32) + _NS // 2) // _NS
    return ((seconds & _U32) << 32) | frac


def ntp64_to_ns(ntp: int) -> int:
    """A 64-bit NTP timestamp to server time (ns since 1970), rounding to the nearest nanosecond.

    Seconds with the top bit set are era 0 (1968-2036), others era 1 (2036-2104), as RFC 4330 section 3
    recommends. Raises :class:`LocalProtocolError` if ``ntp`` is not a 64-bit value.
    """
    if not 0 <= ntp <= 0xFFFFFFFFFFFFFFFF:
        raise LocalProtocolError("NTP timestamp must be a 64-bit value")
    seconds = ntp >> 32
    if not seconds & 0x80000000:
        seconds += 1 << 32
    frac_ns = ((ntp & _U32) * _NS + (1 << 31)) >> 32
    return (seconds - NTP_UNIX_OFFSET_S) * _NS + frac_ns


class SeqUnwrapper:
    """Extends 16-bit sequence numbers to unbounded integers, as RFC 3550 appendix A.1 counts cycles.

    The first number maps to itself; each later one maps to the previous result plus the signed distance
    (:func:`seq_diff`) from the previous number, so reordering up to 32767 packets either way is followed.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: int | None = None

    def unwrap(self, seq: int) -> int:
        """The extended value of ``seq``. Raises :class:`LocalProtocolError` if ``seq`` is not 16-bit."""
        if not 0 <= seq <= 0xFFFF:
            raise LocalProtocolError(f"sequence number {seq} is not 16-bit")
        last = self._last
        value = seq if last is None else last + seq_diff(seq, last & 0xFFFF)
        self._last = value
        return value
