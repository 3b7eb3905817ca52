"""The errors of `loa.codecs`: everything a caller or a bad file can cause derives from :class:`CodecError`.

Library exceptions (PyAV's ``FFmpegError``, opuslib's ``OpusError``, ``OSError`` while reading a file) never
escape a public function of this package: they are wrapped in one of these classes with the original kept as
``__cause__``. Messages are one line, name the file when there is one, and say what is wrong in words a user
can act on, e.g. ``cannot read 'x.mp3': not an audio file (Invalid data found when processing input)``.

Parameter mistakes (a frame duration libopus does not support, a frame of the wrong length) also derive from
:class:`ValueError`, so code that already catches ``ValueError`` for bad arguments keeps working.
"""

from __future__ import annotations

import os

__all__ = [
    "CodecError",
    "ConfigError",
    "CorruptPacketError",
    "EncodeError",
    "FrameError",
    "IngestError",
    "OggOpusError",
]


class CodecError(Exception):
    """Base class of every error raised on purpose by `loa.codecs`."""


class ConfigError(CodecError, ValueError):
    """An unsupported codec setting: frame duration, bitrate, complexity, application, sample count."""


class FrameError(CodecError, ValueError):
    """A PCM frame handed to the encoder has the wrong length, shape or sample type."""


class EncodeError(CodecError):
    """libopus refused to encode a frame (or the codec was used after :meth:`close`)."""


class CorruptPacketError(CodecError):
    """An Opus packet is empty, malformed or otherwise rejected by the decoder."""


class _FileError(CodecError):
    """A failure about one file; ``path`` is the file as the caller named it, ``reason`` the words after it."""

    def __init__(self, path: str | os.PathLike[str], reason: str, *, writing: bool = False) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        self.writing = writing
        super().__init__(f"{'cannot write' if writing else 'cannot read'} '{self.path}': {reason}")

    def __reduce__(self) -> tuple[object, ...]:  # keep the keyword-only flag across pickling (multiprocessing)
        return (_rebuild, (type(self), self.path, self.reason, self.writing))


def _rebuild(cls: type[_FileError], path: str, reason: str, writing: bool) -> _FileError:
    return cls(path, reason, writing=writing)


class IngestError(_FileError):
    """A source file is missing, empty, unreadable, not audio, or too damaged to decode."""


class OggOpusError(_FileError):
    """An Ogg Opus file is missing, truncated, corrupt (bad CRC, missing page) or not a mono/stereo Ogg Opus
    stream; or, with ``writing`` true, could not be written (nothing is left behind in that case)."""
