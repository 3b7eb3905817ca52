"""Load any audio file ffmpeg can read (through PyAV) as loudness-normalised 48 kHz mono :class:`Audio`.

Decoding goes through PyAV: the first audio stream is decoded and resampled/downmixed by ffmpeg's resampler
to 48 kHz mono float32 (its default matrix takes each stereo channel at -3 dB, which keeps the BS.1770
loudness of correlated stereo; the float path cannot clip an over). The integrated loudness (ITU-R
BS.1770-4, pyloudnorm) is measured and a gain applied to reach the target, capped so the true peak stays
at or below -1 dBFS (see :mod:`loa.codecs.loudness`).

Only local regular files are opened, through ffmpeg's ``file`` protocol alone: a path such as
``http://...`` or ``concat:...`` is a file name here, never a URL, and playlists cannot make ffmpeg fetch
anything over the network.

Failure semantics: every failure is an :class:`IngestError` naming the file, e.g.
``cannot read 'x.png': not an audio file (no audio stream; found video)``. A few undecodable packets in an
otherwise good file are skipped, as ffmpeg does; a file where more than a tenth of the packets fail, or
where nothing decodes, is rejected. Audio at a sample rate outside 1-768 kHz is rejected before it reaches the
resampler (a header may claim any rate: at 1.3 GHz ffmpeg's resampler takes half a minute and over a gigabyte
to set up; far below 1 kHz one frame upsamples to hundreds of megabytes). ffmpeg is made to refuse any single
allocation above 64 MiB (its default limit is 2 GiB): a header may declare a chunk of gigabytes, which ffmpeg
allocates before it finds the file far shorter (a 300-byte WAV file whose LIST chunk declared 4 GB cost 2 GB
and 5 s); such a file is then refused like any other that does not open.
"""

from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Iterator
from typing import Final

import av
import av.error
import numpy as np
import numpy.typing as npt

from loa.codecs.audio import Audio, SampleType, normalised
from loa.codecs.errors import ConfigError, IngestError
from loa.codecs.opus import SAMPLE_RATE

__all__ = ["STREAM_PROTOCOLS", "decode_stream", "load_audio"]

_MAX_BAD_FRACTION: Final = 0.1
_MIN_RATE: Final = 1_000
_MAX_RATE: Final = 768_000
_MAX_ALLOC: Final = 64 << 20


def _cap_ffmpeg_allocations() -> None:
    """Set ffmpeg's largest single allocation (``av_max_alloc``) to :data:`_MAX_ALLOC` in the libavutil that
    PyAV loaded, found among this process's mapped files (Linux); elsewhere ffmpeg keeps its own limit."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {fields[5] for fields in (line.split(maxsplit=5) for line in maps)
                     if len(fields) == 6 and "libavutil" in fields[5]}
    except OSError:
        return
    for path in paths:
        library = ctypes.CDLL(path.strip())  # already loaded by PyAV: the same library, not a second copy
        library.av_max_alloc.argtypes = [ctypes.c_size_t]
        library.av_max_alloc.restype = None
        library.av_max_alloc(_MAX_ALLOC)


_cap_ffmpeg_allocations()


def load_audio(path: str | os.PathLike[str], *, target_lufs: float | None = -16.0,
               max_seconds: float | None = None, dtype: SampleType = "int16") -> Audio:
    """Decode ``path`` to 48 kHz mono, normalise its loudness to ``target_lufs`` and return it.

    ``target_lufs=None`` skips loudness normalisation (a programme peaking above -1 dBFS is still attenuated
    so it cannot clip). ``max_seconds`` keeps only the beginning of long files (and bounds memory: the whole
    programme is held in memory, 4 bytes per sample while decoding). ``dtype`` is the sample type of
    :attr:`Audio.samples`. A missing, empty, unreadable, non-audio or badly damaged file raises
    :class:`IngestError`; a bad ``max_seconds`` or ``dtype`` raises :class:`ConfigError`.
    """
    if max_seconds is not None and not max_seconds > 0:
        raise ConfigError(f"max_seconds must be positive, not {max_seconds!r}")
    if dtype not in ("int16", "float32"):
        raise ConfigError(f"sample type must be 'int16' or 'float32', not {dtype!r}")
    shown = os.fspath(path)
    _check_file(shown)
    limit = None if max_seconds is None else max(1, round(max_seconds * SAMPLE_RATE))
    samples = _decode(shown, limit)
    return normalised(samples, source=os.path.basename(shown) or shown, target_lufs=target_lufs, dtype=dtype)


def _check_file(path: str) -> None:
    try:
        info = os.stat(path)
        if stat.S_ISREG(info.st_mode):
            with open(path, "rb"):
                pass
    except FileNotFoundError:
        raise IngestError(path, "no such file") from None
    except OSError as exc:
        raise IngestError(path, (exc.strerror or str(exc)).lower()) from exc
    if stat.S_ISDIR(info.st_mode):
        raise IngestError(path, "is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise IngestError(path, "not a regular file")
    if info.st_size == 0:
        raise IngestError(path, "empty file")


def _why(exc: av.error.FFmpegError) -> str:
    return exc.strerror or type(exc).__name__


def _decode(path: str, limit: int | None) -> npt.NDArray[np.float32]:
    """Decode the first audio stream to one float32 48 kHz mono array (at most ``limit`` samples)."""
    try:
        container = av.open("file:" + os.path.abspath(path), "r", options={"protocol_whitelist": "file"},
                            metadata_errors="replace")  # tags are the file's bytes: never fail on their encoding
    except av.error.FFmpegError as exc:
        raise IngestError(path, f"not an audio file ({_why(exc)})") from exc
    chunks: list[npt.NDArray[np.float32]] = []
    total = good = bad = 0
    with container:
        if not container.streams.audio:
            found = sorted({s.type for s in container.streams})
            raise IngestError(path, "not an audio file (no audio stream" +
                              (f"; found {', '.join(found)})" if found else ")"))
        stream = container.streams.audio[0]
        resampler = _Resampler()
        try:
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError:
                    bad += 1
                    continue
                good += packet.size > 0
                for frame in decoded:
                    total += resampler.push(frame, chunks)
                if limit is not None and total >= limit:
                    break
            total += resampler.push(None, chunks)
        except av.error.FFmpegError as exc:
            raise IngestError(path, f"damaged audio ({_why(exc)})") from exc
        except ValueError as exc:  # the resampler refused a frame PyAV decoded
            raise IngestError(path, f"unsupported audio format ({exc})") from exc
    if total == 0:
        reason = f"{bad} undecodable packets" if bad else "no audio samples"
        raise IngestError(path, f"not a decodable audio file ({reason})")
    if bad > _MAX_BAD_FRACTION * (good + bad):
        raise IngestError(path, f"damaged audio ({bad} of {good + bad} packets undecodable)")
    samples = np.concatenate(chunks) if len(chunks) != 1 else chunks[0]
    return samples[:limit] if limit is not None else samples


STREAM_PROTOCOLS: Final = ("http", "https", "rtsp", "rtp", "udp", "tcp", "tls", "hls")


def decode_stream(url: str, *, timeout_s: float = 10.0) -> Iterator[npt.NDArray[np.float32]]:
    """Decode a live stream (``http(s)://``, ``rtsp://``, ``rtp://``, ``udp://``, HLS) to 48 kHz mono float32
    chunks as they arrive, for relaying; no loudness normalisation (a live stream has no end to measure).

    Only network protocols are allowed (no local files, no ``concat:``), and a read that stalls for
    ``timeout_s`` ends the stream. Raises :class:`IngestError` naming the URL when it cannot be opened or has no
    audio; a stream that breaks later just ends (the iterator stops).
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in STREAM_PROTOCOLS:
        raise IngestError(url, f"not a stream URL (expected one of {', '.join(STREAM_PROTOCOLS)})")
    options = {"protocol_whitelist": ",".join((*STREAM_PROTOCOLS, "crypto", "data")),
               "rw_timeout": str(int(timeout_s * 1_000_000)), "timeout": str(int(timeout_s * 1_000_000))}
    try:
        container = av.open(url, "r", options=options, timeout=timeout_s, metadata_errors="replace")
    except av.error.FFmpegError as exc:
        raise IngestError(url, f"cannot open the stream ({_why(exc)})") from exc
    with container:
        if not container.streams.audio:
            raise IngestError(url, "the stream has no audio")
        stream = container.streams.audio[0]
        resampler = _Resampler()
        chunks: list[npt.NDArray[np.float32]] = []
        try:
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError:
                    continue
                for frame in decoded:
                    resampler.push(frame, chunks)
                yield from chunks
                chunks.clear()
        except (av.error.FFmpegError, ValueError, OSError):
            return
        resampler.push(None, chunks)
        yield from chunks


class _Resampler:
    """ffmpeg's resampler to 48 kHz mono float32, rebuilt if the input format changes mid-stream."""

    def __init__(self) -> None:
        self._inner: av.AudioResampler | None = None

    def push(self, frame: av.AudioFrame | None, out: list[npt.NDArray[np.float32]]) -> int:
        """Resample ``frame`` (``None`` flushes), append the results to ``out``, return samples appended.

        Raises ``ValueError`` if even a fresh resampler rejects the frame."""
        flushed = 0
        if self._inner is not None and frame is not None:
            try:
                return self._append(self._inner.resample(frame), out)
            except ValueError:  # PyAV: "Frame does not match AudioResampler setup" on a format change
                flushed = self._drain(out)
                self._inner = None
        if frame is None:
            return self._drain(out)
        if not _MIN_RATE <= frame.sample_rate <= _MAX_RATE:
            raise ValueError(f"sample rate {frame.sample_rate} Hz is outside {_MIN_RATE}..{_MAX_RATE} Hz")
        self._inner = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        return flushed + self._append(self._inner.resample(frame), out)

    def _drain(self, out: list[npt.NDArray[np.float32]]) -> int:
        return self._append(self._inner.resample(None), out) if self._inner is not None else 0

    @staticmethod
    def _append(results: list[av.AudioFrame], out: list[npt.NDArray[np.float32]]) -> int:
        n = 0
        for result in results:
            array = result.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            out.append(array)
            n += array.shape[0]
        return n
