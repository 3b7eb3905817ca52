"""Content-addressed storage of prefetched programmes and images (PROTOCOL.md sections 4.9 and 5.8).

A store holds complete, verified files named by their ``cid`` (SHA-256 of the bytes), and partial files with the
byte ranges received so far, so that a fetch resumes after a break, a reboot or (for :class:`DirectoryStore`) a
process restart. :class:`MemoryStore` keeps everything in memory (fleets, tests); :class:`DirectoryStore` keeps
``<hex>`` (verified), ``<hex>.part`` and ``<hex>.ranges`` files in one folder.

Verification: :meth:`ContentStore.commit` computes SHA-256 over the ``size`` bytes; a file that starts like an
Ogg page must also read back as a valid mono Ogg Opus programme (CRC, page sequence, end-of-stream page). A file
that fails is discarded (its ranges forgotten). :meth:`ContentStore.programme` returns the parsed programme.

Failure semantics: storage errors (disk full, permissions) raise :class:`StorageError`; bad content never raises
from :meth:`commit` (it returns False).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loa.codecs import CodecError, OggOpusInfo, OggOpusPacket, read_ogg_opus

__all__ = ["ContentStore", "DirectoryStore", "MemoryStore", "Programme", "StorageError", "merge_range"]

_OGG_CAPTURE = b"OggS"


class StorageError(Exception):
    """The store cannot hold or read content (the message says which file and why)."""


@dataclass(frozen=True, slots=True)
class Programme:
    """A stored Ogg Opus programme: its header facts and packets (granule = decoded samples through it)."""

    cid: bytes
    info: OggOpusInfo
    packets: tuple[OggOpusPacket, ...]

    @property
    def samples(self) -> int:
        """Playable samples (48 kHz), pre-skip excluded."""
        return self.info.samples

    @property
    def pre_skip(self) -> int:
        return self.info.pre_skip


def merge_range(ranges: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """``ranges`` (sorted, disjoint, half-open) with ``[start, end)`` added and neighbours merged."""
    out: list[tuple[int, int]] = []
    for a, b in ranges:
        if b < start or a > end:
            out.append((a, b))
        else:
            start, end = min(a, start), max(b, end)
    out.append((start, end))
    out.sort()
    return out


def _parse(cid: bytes, path: str) -> Programme:
    try:
        info, packets = read_ogg_opus(path)
    except CodecError as exc:
        raise StorageError(str(exc)) from None
    if info.channels != 1:
        raise StorageError(f"programme {cid.hex()[:16]} has {info.channels} channels, not 1")
    return Programme(cid, info, tuple(packets))


class ContentStore:
    """The interface both stores implement (see the module docstring)."""

    capacity: int

    def has(self, cid: bytes) -> bool:
        raise NotImplementedError

    def ranges(self, cid: bytes) -> list[tuple[int, int]]:
        """Byte ranges of ``cid`` held so far (empty when nothing is held; the whole file when complete)."""
        raise NotImplementedError

    def write(self, cid: bytes, size: int, offset: int, data: bytes) -> None:
        """Store ``data`` at ``offset`` of the partial file ``cid`` of ``size`` bytes; raises StorageError."""
        raise NotImplementedError

    def commit(self, cid: bytes) -> bool:
        """Verify the complete partial file; keep it (True) or discard it (False)."""
        raise NotImplementedError

    def discard(self, cid: bytes) -> None:
        raise NotImplementedError

    def read(self, cid: bytes) -> bytes:
        raise NotImplementedError

    def used(self) -> int:
        raise NotImplementedError

    def cids(self) -> list[bytes]:
        """Verified content, oldest first."""
        raise NotImplementedError

    def programme(self, cid: bytes) -> Programme:
        """The verified programme ``cid``, parsed (cached); StorageError if absent or not Ogg Opus."""
        raise NotImplementedError

    def free(self) -> int:
        return max(0, self.capacity - self.used())

    def programmes(self) -> list[bytes]:
        """Verified content that is Ogg Opus, oldest first (the candidates for the local programme)."""
        out = []
        for cid in self.cids():
            with contextlib.suppress(StorageError):
                self.programme(cid)
                out.append(cid)
        return out


def _verified(cid: bytes, blob: bytes | bytearray) -> bool:
    return hashlib.sha256(blob).digest() == cid


class MemoryStore(ContentStore):
    """Content in memory, up to ``capacity`` bytes."""

    def __init__(self, capacity: int = 256 * 1024 * 1024) -> None:
        self.capacity = capacity
        self._complete: dict[bytes, bytes] = {}
        self._partial: dict[bytes, tuple[bytearray, list[tuple[int, int]]]] = {}
        self._parsed: dict[bytes, Programme] = {}

    def has(self, cid: bytes) -> bool:
        return cid in self._complete

    def ranges(self, cid: bytes) -> list[tuple[int, int]]:
        if cid in self._complete:
            return [(0, len(self._complete[cid]))]
        held = self._partial.get(cid)
        return list(held[1]) if held is not None else []

    def write(self, cid: bytes, size: int, offset: int, data: bytes) -> None:
        held = self._partial.get(cid)
        if held is None or len(held[0]) != size:
            if size > self.free():
                raise StorageError(f"no room for {size} bytes")
            held = self._partial[cid] = (bytearray(size), [])
        buf, ranges = held
        end = min(size, offset + len(data))
        buf[offset:end] = data[: end - offset]
        self._partial[cid] = (buf, merge_range(ranges, offset, end))

    def commit(self, cid: bytes) -> bool:
        held = self._partial.pop(cid, None)
        if held is None:
            return cid in self._complete
        blob = bytes(held[0])
        if not _verified(cid, blob):
            return False
        if blob.startswith(_OGG_CAPTURE):
            try:
                self._parsed[cid] = self._parse_blob(cid, blob)
            except StorageError:
                return False
        self._complete[cid] = blob
        return True

    def _parse_blob(self, cid: bytes, blob: bytes) -> Programme:
        fd, name = tempfile.mkstemp(suffix=".opus")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            return _parse(cid, name)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)

    def discard(self, cid: bytes) -> None:
        self._partial.pop(cid, None)
        self._complete.pop(cid, None)
        self._parsed.pop(cid, None)

    def read(self, cid: bytes) -> bytes:
        try:
            return self._complete[cid]
        except KeyError:
            raise StorageError(f"content {cid.hex()[:16]} is not stored") from None

    def used(self) -> int:
        return sum(map(len, self._complete.values())) + sum(len(b) for b, _ in self._partial.values())

    def cids(self) -> list[bytes]:
        return list(self._complete)

    def programme(self, cid: bytes) -> Programme:
        parsed = self._parsed.get(cid)
        if parsed is None:
            parsed = self._parsed[cid] = self._parse_blob(cid, self.read(cid))
        return parsed


class DirectoryStore(ContentStore):
    """Content in the folder ``root`` (created if missing), up to ``capacity`` bytes.

    Verified files are ``<hex of cid>``; a partial one is ``<hex>.part`` (written in place at its offsets)
    with ``<hex>.ranges`` (JSON ``{"size": n, "ranges": [[a, b], ...]}``, replaced by a rename after each
    write), so a restarted device asks only for what it lacks. Nothing is fsynced per chunk: after a power
    cut a range may be claimed whose bytes did not reach the disk, and the SHA-256 check then discards the
    file and fetches it once more from the start (section 4.9 step 4).
    """

    def __init__(self, root: str | os.PathLike[str], capacity: int = 1024 * 1024 * 1024) -> None:
        self.root = Path(root)
        self.capacity = capacity
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot use {str(self.root)!r} for content: {exc.strerror or exc}") from None
        self._parsed: dict[bytes, Programme] = {}
        self._ranges: dict[bytes, tuple[int, list[tuple[int, int]]]] = {}
        for meta in self.root.glob("*.ranges"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                doc = json.loads(meta.read_text(encoding="ascii"))
                cid = bytes.fromhex(meta.stem)
                self._ranges[cid] = (int(doc["size"]), [(int(a), int(b)) for a, b in doc["ranges"]])

    def _path(self, cid: bytes, suffix: str = "") -> Path:
        return self.root / (cid.hex() + suffix)

    def has(self, cid: bytes) -> bool:
        return self._path(cid).is_file()

    def ranges(self, cid: bytes) -> list[tuple[int, int]]:
        path = self._path(cid)
        if path.is_file():
            return [(0, path.stat().st_size)]
        held = self._ranges.get(cid)
        return list(held[1]) if held is not None else []

    def write(self, cid: bytes, size: int, offset: int, data: bytes) -> None:
        held = self._ranges.get(cid)
        part = self._path(cid, ".part")
        try:
            if held is None or held[0] != size:
                if size > self.free():
                    raise StorageError(f"no room for {size} bytes in {str(self.root)!r}")
                with open(part, "wb") as f:
                    f.truncate(size)
                held = (size, [])
            end = min(size, offset + len(data))
            with open(part, "r+b") as f:
                f.seek(offset)
                f.write(data[: end - offset])
            ranges = merge_range(held[1], offset, end)
            self._ranges[cid] = (size, ranges)
            meta = self._path(cid, ".ranges")
            tmp = meta.with_suffix(".ranges-tmp")
            tmp.write_text(json.dumps({"size": size, "ranges": ranges}), encoding="ascii")
            os.replace(tmp, meta)
        except OSError as exc:
            raise StorageError(f"cannot write {str(part)!r}: {exc.strerror or exc}") from None

    def commit(self, cid: bytes) -> bool:
        part = self._path(cid, ".part")
        try:
            blob = part.read_bytes()
        except OSError:
            return self.has(cid)
        ok = _verified(cid, blob)
        if ok:
            os.replace(part, self._path(cid))
            if blob.startswith(_OGG_CAPTURE):
                try:
                    self._parsed[cid] = _parse(cid, str(self._path(cid)))
                except StorageError:
                    ok = False
        if not ok:
            self.discard(cid)
        else:
            self._forget_partial(cid)
        return ok

    def _forget_partial(self, cid: bytes) -> None:
        self._ranges.pop(cid, None)
        for suffix in (".part", ".ranges"):
            with contextlib.suppress(OSError):
                self._path(cid, suffix).unlink()

    def discard(self, cid: bytes) -> None:
        self._forget_partial(cid)
        self._parsed.pop(cid, None)
        with contextlib.suppress(OSError):
            self._path(cid).unlink()

    def read(self, cid: bytes) -> bytes:
        try:
            return self._path(cid).read_bytes()
        except OSError as exc:
            raise StorageError(f"content {cid.hex()[:16]} is not readable: {exc.strerror or exc}") from None

    def used(self) -> int:
        total = 0
        for path in self.root.iterdir():
            with contextlib.suppress(OSError):
                if path.suffix in ("", ".part"):
                    total += path.stat().st_size
        return total

    def cids(self) -> list[bytes]:
        found = []
        for path in self.root.iterdir():
            if not path.suffix and len(path.name) == 64:
                with contextlib.suppress(ValueError, OSError):
                    found.append((path.stat().st_mtime, bytes.fromhex(path.name)))
        return [cid for _, cid in sorted(found)]

    def programme(self, cid: bytes) -> Programme:
        parsed = self._parsed.get(cid)
        if parsed is None:
            if not self.has(cid):
                raise StorageError(f"content {cid.hex()[:16]} is not stored")
            parsed = self._parsed[cid] = _parse(cid, str(self._path(cid)))
        return parsed
