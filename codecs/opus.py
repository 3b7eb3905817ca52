"""Opus frames for the wire: :class:`OpusEncoder` and :class:`OpusDecoder`, 48 kHz mono, over libopus.

The codec states are created and configured through opuslib (the ctypes binding of libopus; its ``ctl``
helpers give what its high-level classes lack, e.g. DTX). The per-frame calls go straight to opuslib's
``opus_encode``/``opus_decode`` prototypes with buffers allocated once per codec object, so encoding or
decoding a frame allocates only the returned ``bytes``/array.

Failure semantics: a bad setting raises :class:`ConfigError`; a frame of the wrong length or sample type
raises :class:`FrameError`; a packet libopus rejects raises :class:`CorruptPacketError`, and the decoder
stays usable afterwards. opuslib's own ``OpusError`` never escapes. Codec objects are not thread-safe: use one
per stream (they are cheap, a few tens of kilobytes). :meth:`close` (or ``with``) frees the libopus state
early; using a closed codec raises :class:`CodecError`.
"""

from __future__ import annotations

import ctypes
from types import TracebackType
from typing import Any, Final, Literal, Self

import numpy as np
import numpy.typing as npt
import opuslib
import opuslib.api.ctl as opus_ctl
import opuslib.api.decoder as opus_dec
import opuslib.api.encoder as opus_enc
import opuslib.api.info as opus_info

from loa.codecs.errors import CodecError, ConfigError, CorruptPacketError, EncodeError, FrameError
from loa.codecs.packet import MAX_PACKET_SAMPLES

__all__ = [
    "FRAME_DURATIONS_MS",
    "SAMPLE_RATE",
    "Application",
    "OpusDecoder",
    "OpusEncoder",
    "frame_samples",
    "libopus_version",
]

SAMPLE_RATE: Final = 48_000
#: Frame durations we encode, in milliseconds (libopus also knows 2.5 and 5 ms; they cost too much overhead).
FRAME_DURATIONS_MS: Final = (10, 20, 40, 60)
Application = Literal["audio", "voip"]

_APPLICATIONS: Final = {"audio": opuslib.APPLICATION_AUDIO, "voip": opuslib.APPLICATION_VOIP}
_MAX_PACKET_BYTES: Final = 4000  # libopus' recommended output buffer; a 60 ms packet is at most 3 x 1275 bytes
_MIN_BITRATE, _MAX_BITRATE = 6_000, 510_000


def frame_samples(frame_ms: int) -> int:
    """Samples in one mono 48 kHz frame of ``frame_ms``; :class:`ConfigError` unless it is 10, 20, 40 or 60."""
    if isinstance(frame_ms, bool) or frame_ms not in FRAME_DURATIONS_MS:
        raise ConfigError(f"unsupported Opus frame duration {frame_ms!r} ms (use one of {FRAME_DURATIONS_MS})")
    return SAMPLE_RATE // 1000 * int(frame_ms)


def libopus_version() -> str:
    """The version string of the libopus actually loaded, e.g. ``"libopus 1.3.1"``."""
    return bytes(opus_info.get_version_string()).decode("ascii", "replace")


def _strerror(code: int) -> str:
    return bytes(opus_info.strerror(code)).decode("ascii", "replace")


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer from {low} to {high}, not {value!r}")
    return int(value)


class OpusEncoder:
    """Encode 48 kHz mono PCM frames of a fixed duration into Opus packets.

    ``frame_ms`` is 10, 20, 40 or 60. ``bitrate`` (bits/s, 6000-510000), ``complexity`` (0-10), ``fec``
    (in-band forward error correction, only effective when libopus runs SILK or hybrid, i.e. "voip" or low
    bitrates) with ``packet_loss_percent`` (the loss the FEC is sized for, 0-100), and ``dtx`` (discontinuous
    transmission: near-empty packets during silence) can be changed between frames through the attributes of
    the same names. ``application`` ("audio" for programme material, "voip" for speech) is fixed.
    """

    def __init__(self, *, frame_ms: int = 20, bitrate: int = 32_000, complexity: int = 10,
                 application: Application = "audio", fec: bool = False, packet_loss_percent: int = 0,
                 dtx: bool = False) -> None:
        self._state: Any = None
        self._samples = frame_samples(frame_ms)
        self._frame_ms = int(frame_ms)
        if application not in _APPLICATIONS:
            raise ConfigError(f"unsupported Opus application {application!r} (use 'audio' or 'voip')")
        self._application: Application = application
        try:
            self._state = opus_enc.create_state(SAMPLE_RATE, 1, _APPLICATIONS[application])
        except opuslib.OpusError as exc:
            raise EncodeError(f"libopus could not create an encoder: {exc}") from exc
        self._pcm16 = (ctypes.c_int16 * self._samples)()
        self._pcm16_np = np.frombuffer(memoryview(self._pcm16), dtype=np.int16)
        self._pcmf: ctypes.Array[ctypes.c_float] | None = None  # made on first float32 frame
        self._pcmf_np: npt.NDArray[np.float32] | None = None
        self._out = (ctypes.c_char * _MAX_PACKET_BYTES)()
        self.bitrate = bitrate
        self.complexity = complexity
        self.packet_loss_percent = packet_loss_percent
        self.fec = fec
        self.dtx = dtx

    # -- settings --------------------------------------------------------------------------------------------

    @property
    def frame_ms(self) -> int:
        """Frame duration in milliseconds, fixed at construction."""
        return self._frame_ms

    @property
    def frame_samples(self) -> int:
        """Samples per frame (per channel): 480, 960, 1920 or 2880."""
        return self._samples

    @property
    def application(self) -> Application:
        """``"audio"`` or ``"voip"``, fixed at construction."""
        return self._application

    @property
    def lookahead(self) -> int:
        """Encoder delay in 48 kHz samples (312 for "audio"/"voip"): the Ogg Opus pre-skip to declare."""
        return int(self._ctl(opus_ctl.get_lookahead))

    @property
    def bitrate(self) -> int:
        """Target bitrate in bits per second (variable bitrate)."""
        return self._bitrate

    @bitrate.setter
    def bitrate(self, value: int) -> None:
        value = _check_int("bitrate", value, _MIN_BITRATE, _MAX_BITRATE)
        self._ctl(opus_ctl.set_bitrate, value)
        self._bitrate = value

    @property
    def complexity(self) -> int:
        """CPU/quality trade-off, 0 (cheapest) to 10 (best, libopus' default)."""
        return self._complexity

    @complexity.setter
    def complexity(self, value: int) -> None:
        value = _check_int("complexity", value, 0, 10)
        self._ctl(opus_ctl.set_complexity, value)
        self._complexity = value

    @property
    def fec(self) -> bool:
        """In-band FEC: each packet also carries a low-bitrate copy of the previous frame (LBRR)."""
        return self._fec

    @fec.setter
    def fec(self, value: bool) -> None:
        self._ctl(opus_ctl.set_inband_fec, int(bool(value)))
        self._fec = bool(value)

    @property
    def packet_loss_percent(self) -> int:
        """Expected packet loss (0-100) that FEC and the encoder's robustness are tuned for."""
        return self._loss

    @packet_loss_percent.setter
    def packet_loss_percent(self, value: int) -> None:
        value = _check_int("packet_loss_percent", value, 0, 100)
        self._ctl(opus_ctl.set_packet_loss_perc, value)
        self._loss = value

    @property
    def dtx(self) -> bool:
        """Discontinuous transmission: during silence libopus emits 1-2 byte packets (mostly in SILK mode)."""
        return self._dtx

    @dtx.setter
    def dtx(self, value: bool) -> None:
        self._ctl(opus_ctl.set_dtx, int(bool(value)))
        self._dtx = bool(value)

    # -- encoding --------------------------------------------------------------------------------------------

    def encode(self, frame: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> bytes:
        """Encode exactly one frame and return the Opus packet.

        ``frame`` is a 1-D numpy array of :attr:`frame_samples` samples, either ``int16`` or ``float32``
        (nominal range -1.0 to 1.0; libopus accepts overs but integer decoders will clip them). Any other
        length, shape or dtype raises :class:`FrameError`; a libopus failure raises :class:`EncodeError`.
        """
        state = self._state
        if state is None:
            raise CodecError("Opus encoder used after close()")
        if not isinstance(frame, np.ndarray) or frame.shape != (self._samples,):
            shape = getattr(frame, "shape", type(frame).__name__)
            raise FrameError(f"Opus encoder expects one frame of {self._samples} mono samples, got {shape}")
        if frame.dtype == np.int16:
            self._pcm16_np[:] = frame
            n: int = opus_enc.libopus_encode(state, self._pcm16, self._samples, self._out, _MAX_PACKET_BYTES)
        elif frame.dtype == np.float32:
            if self._pcmf is None or self._pcmf_np is None:
                self._pcmf = (ctypes.c_float * self._samples)()
                self._pcmf_np = np.frombuffer(memoryview(self._pcmf), dtype=np.float32)
            self._pcmf_np[:] = frame
            n = opus_enc.libopus_encode_float(state, self._pcmf, self._samples, self._out, _MAX_PACKET_BYTES)
        else:
            raise FrameError(f"Opus encoder takes int16 or float32 samples, not {frame.dtype}")
        if n < 0:
            raise EncodeError(f"libopus could not encode a frame: {_strerror(n)}")
        return ctypes.string_at(self._out, n)

    def reset(self) -> None:
        """Forget the signal history (as at a new programme), keeping every setting."""
        self._ctl(opus_ctl.reset_state)

    # -- lifetime --------------------------------------------------------------------------------------------

    def _ctl(self, request: Any, *value: int) -> Any:
        if self._state is None:
            raise CodecError("Opus encoder used after close()")
        try:
            return opus_enc.encoder_ctl(self._state, request, *value)
        except opuslib.OpusError as exc:
            raise ConfigError(f"libopus rejected an encoder setting {value!r}: {exc}") from exc

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has freed the libopus state."""
        return self._state is None

    def close(self) -> None:
        """Free the libopus state now (also done when the object is garbage collected). Idempotent."""
        state, self._state = self._state, None
        if state is not None:
            opus_enc.destroy(state)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_state", None) is not None:
            self.close()


class OpusDecoder:
    """Decode Opus packets to 48 kHz mono ``int16`` arrays, with FEC recovery and loss concealment.

    For a lost packet call :meth:`decode_fec` with the packet that followed it (if it arrived) or
    :meth:`conceal` (if not), then decode the following packet normally with :meth:`decode`.
    Stereo packets are downmixed by libopus. The returned arrays are fresh copies the caller may keep.
    """

    def __init__(self) -> None:
        self._state: Any = None
        try:
            self._state = opus_dec.create_state(SAMPLE_RATE, 1)
        except opuslib.OpusError as exc:
            raise CodecError(f"libopus could not create a decoder: {exc}") from exc
        self._pcm = (ctypes.c_int16 * MAX_PACKET_SAMPLES)()
        self._pcm_np = np.frombuffer(memoryview(self._pcm), dtype=np.int16)

    def decode(self, packet: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
        """Decode one packet (any duration up to 120 ms) and return its samples.

        An empty packet is not a valid Opus packet here: it raises :class:`CorruptPacketError` (use
        :meth:`conceal` for a lost packet). A packet libopus rejects raises :class:`CorruptPacketError`.
        """
        if len(packet) == 0:
            raise CorruptPacketError("empty Opus packet (use conceal() for a lost packet)")
        return self._run(packet, MAX_PACKET_SAMPLES, 0)

    def decode_fec(self, next_packet: bytes | bytearray | memoryview, samples: int) -> npt.NDArray[np.int16]:
        """Recover the lost packet *before* ``next_packet`` from the FEC (LBRR) data ``next_packet`` carries.

        ``samples`` is the duration of the lost packet (a multiple of 120, at most 5760). If ``next_packet``
        carries no FEC data (FEC off, CELT-only mode) libopus conceals instead, so the result is never worse
        than :meth:`conceal`. ``next_packet`` itself must still be passed to :meth:`decode` afterwards.
        """
        if len(next_packet) == 0:
            raise CorruptPacketError("empty Opus packet cannot carry FEC data (use conceal())")
        return self._run(next_packet, _check_duration(samples), 1)

    def conceal(self, samples: int) -> npt.NDArray[np.int16]:
        """Synthesise ``samples`` (a multiple of 120, at most 5760) for a lost packet by libopus' PLC."""
        return self._run(None, _check_duration(samples), 0)

    def reset(self) -> None:
        """Forget the decoding history (as at a new stream)."""
        state = self._live()
        try:
            opus_dec.decoder_ctl(state, opus_ctl.reset_state)
        except opuslib.OpusError as exc:  # pragma: no cover - libopus cannot fail this on a valid state
            raise CodecError(f"libopus could not reset the decoder: {exc}") from exc

    def _run(self, packet: bytes | bytearray | memoryview | None, samples: int, fec: int) -> npt.NDArray[np.int16]:
        state = self._live()
        data = packet if packet is None or isinstance(packet, bytes) else bytes(packet)
        length = 0 if data is None else len(data)
        n = int(opus_dec.libopus_decode(state, data, length, self._pcm, samples, fec))
        if n < 0:
            raise CorruptPacketError(f"libopus rejected a {length}-byte Opus packet: {_strerror(n)}")
        return self._pcm_np[:n].copy()

    def _live(self) -> Any:
        if self._state is None:
            raise CodecError("Opus decoder used after close()")
        return self._state

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has freed the libopus state."""
        return self._state is None

    def close(self) -> None:
        """Free the libopus state now (also done when the object is garbage collected). Idempotent."""
        state, self._state = self._state, None
        if state is not None:
            opus_dec.destroy(state)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_state", None) is not None:
            self.close()


def _check_duration(samples: int) -> int:
    samples = _check_int("samples", samples, 120, MAX_PACKET_SAMPLES)
    if samples % 120:
        raise ConfigError(f"samples must be a multiple of 120 (2.5 ms at 48 kHz), not {samples}")
    return samples
