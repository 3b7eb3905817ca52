"""Durable, atomic replacement of a file: readers see the old content or the new, never a torn write."""

from __future__ import annotations

import contextlib
import os
import secrets

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike[str], blob: bytes) -> None:
    """Write ``blob`` to ``path`` via a temporary file in the same directory, fsync, rename, fsync the folder.

    The temporary file (``.NAME.RANDOM.tmp``, mode 0666 minus umask) is removed on any failure. Raises
    ``OSError`` (the caller names the file in its own error); the folder fsync is best effort.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    tmp = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable; not possible everywhere (e.g. Windows), so best effort
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
