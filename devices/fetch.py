"""Resumable content fetch (PROTOCOL.md section 4.9), sans-I/O.

:class:`Fetcher` turns ``prefetch`` commands into ``fetch`` requests for the byte ranges a store still lacks,
at most ``WINDOW`` (16) unanswered at a time, asks again for a range after ``max(1 s, 2 × RTT)`` without an
answer, takes ``chunk`` answers it asked for (and ignores every other), and reports each job's outcome once:
verified (``have ok``), or given up after a second failed verification or for lack of room (``have !ok``).
Ranges live in the store, so a break, a reboot or a restart resumes where the store left off.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from loa.devices.content import ContentStore, StorageError
from loa.protocol.control import Chunk, Fetch

__all__ = ["CHUNK", "WINDOW", "FetchOutcome", "Fetcher"]

CHUNK = 1024
WINDOW = 16
RETRY_MIN_S = 1.0


@dataclass(frozen=True, slots=True)
class FetchOutcome:
    """A job ended: ``ok`` (stored and verified) or not; ``reason`` is ``"verified"``, ``"mismatch"`` (the
    second verification failed) or ``"storage"`` (no room, or the store failed)."""

    cid: bytes
    ok: bool
    reason: str


@dataclass(slots=True)
class _Job:
    cid: bytes
    size: int
    name: str
    attempt: int = 1
    asked: dict[int, tuple[int, float]] = field(default_factory=dict)  # offset -> (length, sent at)


class Fetcher:
    """The fetch jobs of one device, over one :class:`ContentStore`."""

    def __init__(self, store: ContentStore) -> None:
        self.store = store
        self._jobs: OrderedDict[bytes, _Job] = OrderedDict()
        self.requests = 0
        self.chunks = 0
        self.ignored = 0

    def fetching(self, cid: bytes) -> bool:
        return cid in self._jobs

    def jobs(self) -> list[bytes]:
        return list(self._jobs)

    def start(self, cid: bytes, size: int, name: str = "") -> FetchOutcome | None:
        """Begin (or continue) fetching ``cid`` of ``size`` bytes; an outcome at once if it is already stored
        or cannot fit."""
        if self.store.has(cid):
            return FetchOutcome(cid, True, "verified")
        if cid in self._jobs:
            return None
        held = sum(b - a for a, b in self.store.ranges(cid))
        if size - held > self.store.free():
            return FetchOutcome(cid, False, "storage")
        self._jobs[cid] = _Job(cid, size, name)
        if self._complete(cid, size):
            return self._finish(self._jobs[cid])
        return None

    def _complete(self, cid: bytes, size: int) -> bool:
        return self.store.ranges(cid) == [(0, size)]

    def _missing(self, job: _Job, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` requests ``(offset, length)`` for bytes neither held nor asked for."""
        out: list[tuple[int, int]] = []
        pos = 0
        holes = []
        for a, b in [*self.store.ranges(job.cid), (job.size, job.size)]:
            if a > pos:
                holes.append((pos, a))
            pos = max(pos, b)
        for a, b in holes:
            off = a
            while off < b and len(out) < limit:
                length = min(CHUNK, b - off)
                if off not in job.asked:
                    out.append((off, length))
                off += length
            if len(out) >= limit:
                break
        return out

    def _outstanding(self) -> int:
        return sum(len(job.asked) for job in self._jobs.values())

    def requests_due(self, now: float, rtt: float) -> list[Fetch]:
        """The ``fetch`` messages to send now: retries of unanswered ranges, then new ranges, within the window."""
        retry = max(RETRY_MIN_S, 2 * rtt)
        out: list[Fetch] = []
        for job in self._jobs.values():
            for off, (length, sent) in list(job.asked.items()):
                if now >= sent + retry:  # the same expression as next_timeout: no float disagreement
                    job.asked[off] = (length, now)
                    out.append(Fetch(cid=job.cid, off=off, len=length))
        room = WINDOW - self._outstanding()
        for job in self._jobs.values():
            if room <= 0:
                break
            for off, length in self._missing(job, room):
                job.asked[off] = (length, now)
                out.append(Fetch(cid=job.cid, off=off, len=length))
                room -= 1
        self.requests += len(out)
        return out

    def next_timeout(self, rtt: float) -> float | None:
        retry = max(RETRY_MIN_S, 2 * rtt)
        times = [sent + retry for job in self._jobs.values() for _, sent in job.asked.values()]
        return min(times, default=None)

    def wants_requests(self) -> bool:
        """Whether :meth:`requests_due` would send something new now (a free slot and a range to ask for)."""
        if not self._jobs or self._outstanding() >= WINDOW:
            return False
        return any(self._missing(job, 1) for job in self._jobs.values())

    def on_chunk(self, chunk: Chunk) -> FetchOutcome | None:
        """Take a ``chunk``; returns the job's outcome when it completed the file."""
        job = self._jobs.get(chunk.cid)
        asked = job.asked.get(chunk.off) if job is not None else None
        if job is None or asked is None:
            self.ignored += 1
            return None
        expected = min(asked[0], max(0, job.size - chunk.off))
        if len(chunk.data) != expected:
            self.ignored += 1
            return None
        del job.asked[chunk.off]
        self.chunks += 1
        try:
            self.store.write(job.cid, job.size, chunk.off, chunk.data)
        except StorageError:
            del self._jobs[job.cid]
            return FetchOutcome(job.cid, False, "storage")
        if self._complete(job.cid, job.size):
            return self._finish(job)
        return None

    def _finish(self, job: _Job) -> FetchOutcome | None:
        try:
            ok = self.store.commit(job.cid)
        except StorageError:
            del self._jobs[job.cid]
            return FetchOutcome(job.cid, False, "storage")
        if ok:
            del self._jobs[job.cid]
            return FetchOutcome(job.cid, True, "verified")
        if job.attempt >= 2:
            del self._jobs[job.cid]
            return FetchOutcome(job.cid, False, "mismatch")
        job.attempt += 1
        job.asked.clear()
        return None

    def cancel(self, cid: bytes) -> None:
        self._jobs.pop(cid, None)
