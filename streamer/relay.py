"""A relayed stream (an internet radio, a provincial station's HTTP/RTSP stream) as a broadcast source.

:class:`RelaySource` decodes the stream (:func:`loa.codecs.ingest.decode_stream`, PyAV) in a thread of its own,
into 20 ms frames of 48 kHz mono ``int16``, and keeps at most ``buffer_frames`` of them; the broadcast's frame
clock pulls one per frame without waiting (``None`` while the stream is late: the broadcast leaves a gap). The
thread is paced by the full buffer: it reads the stream as fast as the broadcast plays it.

Failure semantics: a stream that cannot be opened, or breaks, ends the source (:attr:`finished`, with
:attr:`error` saying why); nothing raises into the frame clock. :meth:`close` stops the thread within
``poll_s``.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from loa.codecs import CodecError
from loa.codecs.ingest import decode_stream

__all__ = ["RelaySource"]

FRAME = 960


class RelaySource:
    """Frames of a stream URL, decoded in a background thread (see the module docstring)."""

    def __init__(self, url: str, *, buffer_frames: int = 50, timeout_s: float = 10.0, poll_s: float = 0.1) -> None:
        self.url = url
        self.error: str | None = None
        self._frames: queue.Queue[npt.NDArray[np.int16]] = queue.Queue(maxsize=buffer_frames)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._timeout = timeout_s
        self._poll = poll_s
        self.received = 0
        self._thread = threading.Thread(target=self._run, name=f"relay {url[:40]}", daemon=True)
        self._thread.start()

    @property
    def finished(self) -> bool:
        return self._done.is_set() and self._frames.empty()

    def pull(self) -> npt.NDArray[np.int16] | None:
        try:
            return self._frames.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        self._stop.set()

    @staticmethod
    def _pcm(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
        scaled: Any = samples.astype(np.float64) * 32768.0  # Any: numpy's stubs disagree across versions here
        pcm: npt.NDArray[np.int16] = scaled.clip(-32768.0, 32767.0).astype(np.int16)
        return pcm

    def _run(self) -> None:
        pending = np.zeros(0, dtype=np.float32)
        try:
            for chunk in decode_stream(self.url, timeout_s=self._timeout):
                pending = np.concatenate((pending, chunk))
                while pending.shape[0] >= FRAME:
                    frame = self._pcm(pending[:FRAME])
                    pending = pending[FRAME:]
                    if not self._put(frame):
                        return
            if pending.shape[0]:
                frame = np.zeros(FRAME, dtype=np.int16)
                frame[: pending.shape[0]] = self._pcm(pending)
                self._put(frame)
        except CodecError as exc:
            self.error = str(exc)
        finally:
            self._done.set()

    def _put(self, frame: npt.NDArray[np.int16]) -> bool:
        while not self._stop.is_set():
            try:
                self._frames.put(frame, timeout=self._poll)
            except queue.Full:
                continue
            self.received += 1
            return True
        return False
