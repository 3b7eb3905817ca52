"""The content store: files named by the SHA-256 of their bytes, ``DATA_DIR/content/<sha256><suffix>``.

The same bytes are stored once, and a name always means the same bytes (it is the content id devices fetch and
check). Every file is written under a temporary name in the same folder, fsynced and renamed, and the folder is
fsynced: a reader, or a crash, sees the whole file or none of it. The library writes a file *before* the
database row that refers to it commits, so a committed row always has its file; a crash between the two leaves
an unreferenced file, which is harmless and is reused by the next upload of the same content. A file being
received or encoded lives in ``content/.incoming`` until it is complete; what a killed process left there is
removed by :meth:`ContentStore.sweep` when ``loa serve`` starts.

Failure semantics: ``OSError`` from the file system (disk full, permissions) propagates; nothing partial is
left under a final name, and temporary files are removed on failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path
from typing import Final

from loa.codecs.atomic import atomic_write

__all__ = ["MEDIA_SUFFIXES", "ContentStore"]

MEDIA_SUFFIXES: Final = {
    "audio/ogg": ".opus",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "text/plain": ".txt",
}
_INCOMING = ".incoming"


class ContentStore:
    """Content-addressed files under ``root`` (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str, media_type: str) -> Path:
        """Where the content ``sha256`` of ``media_type`` lives (whether or not it is there)."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a content id: {sha256!r}")
        return self.root / f"{sha256}{MEDIA_SUFFIXES[media_type]}"

    def has(self, sha256: str, media_type: str) -> bool:
        return self.path(sha256, media_type).is_file()

    def incoming(self, suffix: str = "") -> Path:
        """A fresh path for a file being received or encoded (in the store's file system, so it can be adopted
        by a rename). The caller removes it if it does not :meth:`adopt` it. Its name starts with this process's
        id, so that :meth:`sweep` can tell a file of a process that died before removing it."""
        folder = self.root / _INCOMING
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folder / f"{os.getpid()}.{secrets.token_hex(8)}{suffix}"

    def sweep(self) -> int:
        """Remove the unfinished files of processes that are gone (an upload or encoding cut by a crash or a
        ``kill -9``): never part of the store, and nothing else would ever remove them. A file whose process is
        still running (another ``loa`` on the same data directory) is left alone. Returns how many were
        removed; a file that cannot be removed is left for the next sweep."""
        folder = self.root / _INCOMING
        try:
            entries = list(folder.iterdir())
        except OSError:
            return 0  # no folder yet (nothing was ever received), or unreadable: nothing to do here
        removed = 0
        for entry in entries:
            owner, dot, _ = entry.name.partition(".")
            if dot and owner.isdigit() and _running(int(owner)):
                continue
            try:
                entry.unlink()
            except OSError:
                continue
            removed += 1
        return removed

    def put_bytes(self, blob: bytes, media_type: str) -> tuple[str, Path]:
        """Store ``blob``; returns its sha256 and path. Storing bytes already there writes nothing."""
        digest = hashlib.sha256(blob).hexdigest()
        target = self.path(digest, media_type)
        if not target.is_file():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write(target, blob)
        return digest, target

    def adopt(self, finished: Path, sha256: str, media_type: str) -> Path:
        """Move a complete, fsynced file (from :meth:`incoming`) to its content address; if the content is already
        stored the file is just removed. Returns the final path."""
        target = self.path(sha256, media_type)
        try:
            if target.is_file():
                return target
            os.replace(finished, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                finished.unlink()
        _fsync_dir(self.root)
        return target

    def discard(self, path: Path) -> None:
        """Remove a temporary file from :meth:`incoming` (no error if it is gone)."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _running(pid: int) -> bool:
    """Whether a process ``pid`` exists (another user's counts: it may be writing there)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _fsync_dir(directory: Path) -> None:
    try:  # make the rename durable; not possible everywhere, so best effort
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
