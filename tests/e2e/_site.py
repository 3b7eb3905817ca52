"""A site on loopback for the end-to-end tests: our streamer service and our reference devices, real sockets.

:class:`Site` runs a :class:`~loa.streamer.service.StreamerService` on 127.0.0.1 with a lab alerting authority
and devices (:class:`~loa.devices.runner.DeviceRunner`, each with its own socket and simulated clock) that
decode and record what they play: a :class:`~loa.devices.sinks.WavRecorder` behind a
:class:`~loa.devices.simnode.TrueTimeSink`, so the WAV is placed on the true (host monotonic) timeline, plus
the frame metadata kept beside it (:class:`Recorder`). Helpers compare recordings with the signals sent.
"""

from __future__ import annotations

import itertools
import random
import time
import wave
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from loa.devices.content import MemoryStore
from loa.devices.core import SpeakerCore
from loa.devices.playout import PlayoutEntry
from loa.devices.runner import DeviceRunner
from loa.devices.simclock import SimulatedClock
from loa.devices.simnode import TrueTimeSink
from loa.devices.sinks import FrameInfo, Pcm, WavRecorder
from loa.protocol.alert import key_id
from loa.protocol.control import ConfigValues
from loa.protocol.noise import x25519_public
from loa.streamer.content import ContentStore
from loa.streamer.core import StreamerCore
from loa.streamer.service import StreamerService, epoch_for, open_udp_socket
from loa.streamer.settings import Settings
from loa.streamer.sources import ToneSource
from loa.streamer.zones import Zone, ZoneTree

SAMPLE_RATE = 48_000
FRAME = 960
FRAME_NS = 20_000_000
Address = tuple[str, int]


def site_zones() -> ZoneTree:
    """Province P > districts D1, D2 > communes A (in D1) and B (in D2)."""
    return ZoneTree([Zone("P", "Tỉnh"), Zone("D1", "Huyện 1", "P"), Zone("D2", "Huyện 2", "P"),
                     Zone("A", "Xã A", "D1"), Zone("B", "Xã B", "D2")])


@dataclass(frozen=True, slots=True)
class Played:
    """One frame as it reached the speaker: true time (s), what it was, and its place in the WAV."""

    at: float
    info: FrameInfo


class Recorder(WavRecorder):
    """A WAV recorder that also keeps every frame's instant and description (for segmenting the WAV)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.played: list[Played] = []

    def on_frame(self, at: float, pcm: Pcm | None, info: FrameInfo) -> None:
        super().on_frame(at, pcm, info)
        self.played.append(Played(at, info))


@dataclass
class Device:
    name: str
    zone: str
    core: SpeakerCore
    runner: DeviceRunner
    clock: SimulatedClock
    recorder: Recorder | None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    @property
    def public_key(self) -> bytes:
        return self.core.public_key

    def stop(self) -> None:
        self.scope.cancel()


class Site:
    """The server and its devices, all inside one task group (see the module docstring)."""

    def __init__(self, tmp: Path, *, seed: int = 1, content: bool = False, delay_ms: int = 300,
                 groups: dict[str, str] | None = None, peers_path: Path | None = None) -> None:
        self.tmp = tmp
        self.peers_path = peers_path  # the service's restart-notice file (PROTOCOL.md 3.16), if any
        self.log: list[str] = []
        self.rng = random.Random(seed)
        self.zones = site_zones()
        self.authority = Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))
        self.authority_public = self.authority.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.server_key = self.rng.randbytes(32)
        self.settings = Settings(config=ConfigValues(delay_ms=delay_ms, preroll_ms=0), delay_ms=delay_ms)
        self.content_dir = tmp / "content" if content else None
        self.devices: list[Device] = []
        self.keys: dict[str, tuple[bytes, str]] = {}  # device name -> (private key, zone): kept across restarts
        self._tg: anyio.abc.TaskGroup | None = None
        self.core: StreamerCore
        self.service: StreamerService
        self._service_scope: anyio.CancelScope | None = None
        self.groups = groups  # zone code -> multicast group "a.b.c.d:port"; the socket then sends to groups

    # -- server ------------------------------------------------------------------------------------------------

    def _new_core(self) -> StreamerCore:
        content = ContentStore(self.content_dir) if self.content_dir is not None else None
        return StreamerCore(
            static_private=self.server_key, zones=self.zones, content=content, settings=self.settings,
            authorities={key_id(self.authority_public): self.authority_public},
            epoch_ns=epoch_for(anyio.current_time()), send_clock=anyio.current_time,
            first_bid=time.time_ns() // 1_000_000 & 0xFFFFFF, groups=self.groups,
        )

    async def start_server(self, tg: anyio.abc.TaskGroup, port: int = 0) -> None:
        self._tg = tg
        self.core = self._new_core()
        for name, (private, zone) in self.keys.items():
            self.core.add_device(x25519_public(private), zone, anyio.current_time(), name=name)
        self.service = StreamerService(self.core, open_udp_socket("127.0.0.1", port, multicast=bool(self.groups)),
                                       peers_path=self.peers_path, log=self.log.append)
        self._service_scope = anyio.CancelScope()
        self._service_ended = anyio.Event()
        await tg.start(self._serve, self.service, self._service_scope, self._service_ended)

    @staticmethod
    async def _serve(service: StreamerService, scope: anyio.CancelScope, ended: anyio.Event, *,
                     task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            with scope:
                await service.serve(task_status=task_status)
        finally:
            ended.set()

    async def kill_server(self) -> None:
        """The server dies as under SIGKILL: no ``bye``, nothing more sent or saved; its socket closes."""
        assert self._service_scope is not None
        self._service_scope.cancel()
        with anyio.fail_after(5):
            await self._service_ended.wait()
        self.service.sock.close()

    async def stop_server(self) -> None:
        """A clean shutdown (devices get ``bye``); returns when the service stopped and its socket closed."""
        with anyio.fail_after(5):
            self.service.stop()
            while self.service._tg is not None:  # serve() returns
                await anyio.sleep(0.01)
        self.service.sock.close()

    @property
    def address(self) -> Address:
        return self.service.address

    def server_now_ns(self) -> int:
        return self.core.server_time(self.service.now())

    # -- devices -----------------------------------------------------------------------------------------------

    def add_device(self, zone: str, *, clock: SimulatedClock | None = None, record: bool = True,
                   server: Address | None = None, **core_options: Any) -> Device:
        assert self._tg is not None
        name = f"dev{len(self.devices)}"
        private = self.rng.randbytes(32)
        self.keys[name] = (private, zone)
        self.core.add_device(x25519_public(private), zone, self.service.now(), name=name)
        self.service.changed()
        clock = clock or SimulatedClock()
        recorder = Recorder(self.tmp / f"{name}.wav") if record else None
        address = server or self.address
        core = SpeakerCore(
            static_private=private, server_public=self.core.public_key, authority_keys=[self.authority_public],
            server_address=address, sink=TrueTimeSink(recorder, clock) if recorder is not None else None,
            store=MemoryStore(16 * 1024 * 1024), rng=random.Random(self.rng.random()),
            timestamp_source=lambda _now: time.time_ns(), **core_options,
        )
        runner = DeviceRunner(core, address, clock=clock, bind_host="127.0.0.1")
        device = Device(name, zone, core, runner, clock, recorder)
        self.devices.append(device)
        self._tg.start_soon(self._run_device, device)
        return device

    async def _run_device(self, device: Device) -> None:
        with device.scope:
            await device.runner.run()

    def in_zone(self, zone: str) -> list[Device]:
        return [d for d in self.devices if d.zone == zone]

    def close(self) -> None:
        for device in self.devices:
            device.stop()
            if device.recorder is not None:
                device.recorder.close()


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> float:
    """Poll ``predicate`` every 10 ms; the seconds it took. TimeoutError naming ``what`` after ``timeout``."""
    start = time.monotonic()
    deadline = start + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await anyio.sleep(0.01)
    return time.monotonic() - start


def tone_frames(freq: float, count: int) -> npt.NDArray[np.int16]:
    """``count`` frames of the tone exactly as :class:`ToneSource` makes them (the signal sent)."""
    source = ToneSource(freq)
    out = [source.pull() for _ in range(count)]
    return np.concatenate([np.asarray(f, dtype=np.int16) for f in out])


def read_wav(path: Path) -> npt.NDArray[np.float64]:
    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (SAMPLE_RATE, 1, 2)
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64)


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of consecutive broadcast frames of one ``bid`` (true times ``start``..``end`` in seconds)."""

    bid: int | None
    start: float
    end: float
    frames: list[Played]


def segments(played: Sequence[Played]) -> list[Segment]:
    """Runs of frames by broadcast id (None: not a broadcast)."""
    out: list[Segment] = []
    run: list[Played] = []
    for p in played:
        if run and p.info.bid != run[0].info.bid:
            out.append(Segment(run[0].info.bid, run[0].at, run[-1].at + run[-1].info.samples / SAMPLE_RATE, run))
            run = []
        run.append(p)
    if run:
        out.append(Segment(run[0].info.bid, run[0].at, run[-1].at + run[-1].info.samples / SAMPLE_RATE, run))
    return out


def excerpt(wav: npt.NDArray[np.float64], t0: float, segment: Segment, trim: float = 0.06) -> npt.NDArray[np.float64]:
    """The WAV samples of ``segment`` (``t0``: the true time of sample 0), ``trim`` seconds off both ends (the
    decoder's start and the cut at a switch)."""
    first = round((segment.start - t0 + trim) * SAMPLE_RATE)
    last = round((segment.end - t0 - trim) * SAMPLE_RATE)
    return wav[max(0, first):max(0, last)]


def best_correlation(recorded: npt.NDArray[np.float64], reference: npt.NDArray[np.float64], max_lag: int) -> float:
    """The largest normalised cross-correlation of ``recorded`` with ``reference[lag:lag+len]``, lag 0..max_lag."""
    n = len(recorded)
    assert n > 0
    assert len(reference) >= n + max_lag
    rec_norm = float(np.sqrt(np.dot(recorded, recorded)))
    if rec_norm == 0.0:
        return 0.0
    best = -1.0
    for lag in range(max_lag + 1):
        ref = reference[lag:lag + n]
        denom = rec_norm * float(np.sqrt(np.dot(ref, ref)))
        if denom:
            best = max(best, float(np.dot(recorded, ref)) / denom)
    return best


def tone_correlation(recorded: npt.NDArray[np.float64], freq: float) -> float:
    """Correlation of ``recorded`` with the tone ``freq`` as the source makes it, at the best phase (a lag of up
    to one period and a bit: a live stream is joined, and resumed, anywhere in the tone)."""
    period = int(np.ceil(SAMPLE_RATE / freq)) + 2
    frames_needed = (len(recorded) + period) // FRAME + 2
    reference = tone_frames(freq, frames_needed).astype(np.float64)
    return best_correlation(recorded, reference, period)


def windowed_tone_correlation(recorded: npt.NDArray[np.float64], freq: float, window: float = 0.25,
                              cuts: Sequence[int] = ()) -> float:
    """The smallest :func:`tone_correlation` over consecutive ``window``-second pieces of ``recorded``. The
    recorder places each frame at its true instant, and a device's clock estimate slews by fractions of a
    millisecond over seconds: each piece is aligned on its own, as an ear would.

    ``cuts``: sample indices where the frames stepped off their grid (a correction of the device's clock estimate
    moves the next frame by up to a few hundred µs, a phase jump in the recording); pieces never straddle one.
    The frames' timing is checked on its own (the callers' frame-grid checks); this checks what was heard.
    Between two cuts: whole pieces, or the span itself when it is shorter than one but at least a tenth of it;
    what is left over is not used (as at the end); there is always at least one piece."""
    n = round(window * SAMPLE_RATE)
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(recorded)), len(recorded)]
    pieces = []
    for a, b in itertools.pairwise(bounds):
        span = recorded[a:b]
        whole = [span[i:i + n] for i in range(0, len(span) - n + 1, n)]
        pieces += whole or ([span] if len(span) >= n // 10 else [])
    pieces = pieces or [recorded]
    return min(tone_correlation(piece, freq) for piece in pieces)


def frame_counts(entries: list[PlayoutEntry]) -> Counter[str]:
    """Frames by kind, plus ``missing``: slots between the first and last frame that never played."""
    counts = Counter(e.kind for e in entries)
    span = ((entries[-1].rtp_ts - entries[0].rtp_ts) % 2**32) // FRAME + 1
    counts["missing"] = span - len(entries)
    counts["slots"] = span
    return counts
