"""`loa bench latency`: a live announcement from RTP in to device playout, beside GStreamer on the same stream.

What is measured, all on loopback with real sockets, in one run:

* **loa**: the streamer service (:class:`~loa.streamer.service.StreamerService` on trio) opens a live input
  (:meth:`~loa.streamer.service.StreamerService.open_live_source`) and broadcasts it to ``--devices`` full
  reference devices (:class:`~loa.devices.runner.DeviceRunner`, each on its own socket, with a simulated clock
  offset of up to ±1 s), as an operator's live announcement. A sender in this process plays the microphone:
  20 ms mono Opus frames (a tone over faint noise, so that every packet's bytes differ) in plain RTP, one every
  20 ms, noting the host monotonic instant just before each datagram leaves. Each device logs when it plays
  every frame (its playout log, on the host timeline through its simulated clock). The streamer passes mono
  20 ms Opus through untouched; the frame clock's pulls tell which input packet each broadcast frame carries
  (the payload bytes), and the broadcast's timeline (frame *k* stands for server time ``start + k × 20 ms``,
  PROTOCOL.md 5.1.1) tells which frame each playout-log entry is. Latency = play instant − send instant, per
  device and frame; frames that were concealed (PLC/FEC) are not counted.
  One broadcast per ``--delay-ms`` value (default: the site default 500 ms, then a low setting, 100 ms).
* **GStreamer** (the peer): every datagram also goes, at the same instant, to one GStreamer pipeline per
  ``--gst-latency`` value (default 200 ms, rtpjitterbuffer's default, and a low setting, 20 ms)::

      udpsrc ! rtpjitterbuffer latency=L ! rtpopusdepay ! opusdec ! fakesink sync=true

  run by a small PyGObject program (Debian ``python3-gi`` and ``gir1.2-gstreamer-1.0``, which
  ``./dev.sh bench`` installs; any ``python3`` that can import them is used). ``fakesink sync=true`` takes each
  decoded buffer at its render instant on the pipeline clock (CLOCK_MONOTONIC), as an audio sink would start
  playing it; the program notes that instant in the sink's hand-off and the RTP sequence number of the packet
  being pushed (a pad probe on the depayloader: jitter buffer, depayloader, decoder and sink run in one
  streaming thread, so the hand-off belongs to that packet). Buffers the decoder makes up for lost packets
  have no packet and are not counted. Without GStreamer, ``env.gstreamer`` says why and the run goes on.

The latency budget of loa, so a reader sees where the milliseconds go: ``loa_dD_input_wait_p50_ms`` is send ->
the frame clock taking the frame from the live input (its pre-roll of ``--prebuffer`` packets,
``prebuffer_ms``, plus the phase between the sender's and the frame clock's 20 ms ticks); the rest is the
playout delay ``D`` put in ``join`` (the devices' jitter-buffer target), ``loa_dD_output_p50_ms`` = frame clock
-> playout.

Metrics (ms unless named otherwise): for each delay D ``loa_dD_p50_ms``, ``loa_dD_p99_ms``,
``loa_dD_input_wait_p50_ms``, ``loa_dD_output_p50_ms``, ``frames_loa_dD`` (device-frames measured),
``loa_dD_late`` (packets the devices received after their play time), ``loa_dD_input_underruns`` (times the
live input ran dry while the sender was sending and pre-rolled again, each adding its pre-roll); for each
jitter-buffer latency L ``gst_jbL_p50_ms``, ``gst_jbL_p99_ms``, ``frames_gst_jbL``;
``latency_p50_ms``/``latency_p99_ms`` (loa at the first delay), ``gst_p50_ms`` (GStreamer at the first L),
``ratio_vs_gstreamer`` = loa p50 / GStreamer p50 at the first settings of each (defaults),
``ratio_vs_gstreamer_low`` the same at the last settings (low); > 1: loa's announcement is heard later than
GStreamer's. ``frames_sent``, ``prebuffer_ms``, ``devices``.

Failure semantics: a device that does not connect and synchronise its clock within 15 s, a stream of which no
frame plays, a GStreamer program that dies: one clear error line (exit status 1), no traceback.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import click
import numpy as np
import numpy.typing as npt

from loa.bench._report import emit, environment
from loa.cli import UserError
from loa.codecs import OpusEncoder
from loa.devices.core import SpeakerCore
from loa.devices.runner import DeviceRunner
from loa.devices.simclock import SimulatedClock
from loa.devices.sinks import CounterSink
from loa.protocol.rtp import RtpPacket
from loa.streamer.core import StreamerCore
from loa.streamer.service import StreamerService, epoch_for, open_udp_socket
from loa.streamer.settings import Settings
from loa.streamer.sources import LiveRtpSource
from loa.streamer.zones import Zone, ZoneTree

__all__ = ["GST_ELEMENTS", "GST_PYTHONS", "gstreamer_python", "latency"]

FRAME = 960
FRAME_NS = 20_000_000
PAYLOAD_TYPE = 96
ZONE = "X1"
READY_TIMEOUT_S = 15.0
GST_START_TIMEOUT_S = 15.0
GST_ELEMENTS = ("udpsrc", "rtpjitterbuffer", "rtpopusdepay", "opusdec", "fakesink")
GST_PYTHONS = ("python3", "/usr/bin/python3")  # any that imports gi + Gst; Debian's own python3 has python3-gi

# The GStreamer peer, run by a python3 that has PyGObject (not necessarily ours): one pipeline per jitter-buffer
# latency given as arguments. Prints "ports P1 P2 ..." once playing, then on a line on stdin (or EOF) stops and
# prints one JSON object {"L": [[rtp_seq, monotonic_ns], ...], ..., "errors": [...]}.
_GST_PROGRAM = r"""
import json, sys, time
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
CAPS = "application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=96"
pipes, outs, ports = [], {}, []
for latency in sys.argv[1:]:
    pipe = Gst.parse_launch(
        f'udpsrc name=src address=127.0.0.1 port=0 caps="{CAPS}" ! rtpjitterbuffer latency={latency} '
        '! rtpopusdepay name=depay ! opusdec ! fakesink name=sink sync=true signal-handoffs=true')
    out, current = [], [None]
    def probe(pad, info, current=current):
        buf = info.get_buffer()
        head = buf.extract_dup(0, 4)
        current[0] = int.from_bytes(head[2:4], "big") if len(head) == 4 else None
        return Gst.PadProbeReturn.OK
    def handoff(sink, buf, pad, current=current, out=out):
        now = time.monotonic_ns()
        if current[0] is not None:
            out.append((current[0], now))
            current[0] = None
    pipe.get_by_name("depay").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    pipe.get_by_name("sink").connect("handoff", handoff)
    pipe.set_state(Gst.State.PLAYING)
    ports.append(pipe.get_by_name("src").get_property("port"))
    pipes.append(pipe)
    outs[latency] = out
print("ports " + " ".join(map(str, ports)), flush=True)
sys.stdin.readline()
errors = []
for pipe in pipes:
    bus = pipe.get_bus()
    while True:
        msg = bus.pop_filtered(Gst.MessageType.ERROR)
        if msg is None:
            break
        errors.append(str(msg.parse_error()[0].message))
    pipe.set_state(Gst.State.NULL)
print(json.dumps({**{k: v for k, v in outs.items()}, "errors": errors}), flush=True)
"""

_PROBE = ("import gi; gi.require_version('Gst', '1.0'); from gi.repository import Gst; Gst.init(None); "
          f"print(' '.join(e for e in {GST_ELEMENTS!r} if Gst.ElementFactory.find(e) is None) or 'ok'); "
          "print(Gst.version_string())")


def gstreamer_python() -> tuple[str | None, str]:
    """(a python3 that runs the GStreamer peer, its GStreamer version), or (None, why not)."""
    why = ("not installed (no python3 with PyGObject and GStreamer: ./dev.sh bench installs python3-gi "
           "gir1.2-gstreamer-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good)")
    for name in GST_PYTHONS:
        path = shutil.which(name)
        if path is None:
            continue
        try:
            done = subprocess.run([path, "-c", _PROBE], capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        lines = done.stdout.split("\n")
        if done.returncode != 0 or len(lines) < 2:
            continue
        if lines[0] != "ok":
            why = f"not installed (GStreamer elements missing: {lines[0]}; gstreamer1.0-plugins-base/-good)"
            continue
        return path, lines[1].strip()
    return None, why


class _GstPeer:
    """The GStreamer program in a child process (see the module docstring)."""

    def __init__(self, python: str, latencies: Sequence[int]) -> None:
        self.latencies = list(latencies)
        self.proc = subprocess.Popen([python, "-c", _GST_PROGRAM, *map(str, latencies)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = _readline(self.proc, GST_START_TIMEOUT_S)
        if not line.startswith("ports "):
            self.close()
            raise UserError(f"the GStreamer peer did not start: {line.strip() or self._stderr()}")
        self.ports = [int(p) for p in line.split()[1:]]

    def _stderr(self) -> str:
        try:
            _, err = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            return "no answer"
        return (err or "").strip().splitlines()[-1:][0][:300] if (err or "").strip() else "no output"

    def finish(self) -> dict[int, list[tuple[int, int]]]:
        """Stop the pipelines; per latency the (RTP sequence, monotonic ns) of every buffer played."""
        try:
            out, err = self.proc.communicate("stop\n", timeout=30)
        except subprocess.TimeoutExpired:
            self.close()
            raise UserError("the GStreamer peer did not stop within 30 s") from None
        try:
            record = json.loads(out.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            raise UserError(f"the GStreamer peer failed: {(err or '').strip()[-300:] or 'no output'}") from None
        if record["errors"]:
            raise UserError(f"GStreamer reported: {record['errors'][0]}")
        return {int(k): [(int(s), int(t)) for s, t in v] for k, v in record.items() if k != "errors"}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """One line of the child's output, or "" if none within ``timeout`` (bounded wait, no thread left behind)."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return proc.stdout.readline()


# -- the microphone --------------------------------------------------------------------------------------------


def announcement(frames: int, seed: int) -> list[bytes]:
    """``frames`` 20 ms mono Opus packets: a 440 Hz tone at -20 dBFS over noise at -50 dBFS (no two alike)."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames * FRAME) / 48_000
    pcm = 3277 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 104, t.size)
    samples: npt.NDArray[np.int16] = np.clip(np.rint(pcm), -32768, 32767).astype(np.int16)
    encoder = OpusEncoder(frame_ms=20, bitrate=32_000, fec=False, packet_loss_percent=0, application="voip")
    try:
        packets = [encoder.encode(samples[i * FRAME:(i + 1) * FRAME]) for i in range(frames)]
    finally:
        encoder.close()
    if len(set(packets)) != len(packets):  # the frames are told apart by their bytes
        raise UserError("two announcement frames encoded alike; try another --seed")
    return packets


@dataclass
class _Sent:
    """What the sender sent: RTP sequence -> monotonic ns, payload -> sequence."""

    at: dict[int, int] = field(default_factory=dict)
    seq_of: dict[bytes, int] = field(default_factory=dict)
    next_seq: int = 0
    ssrc: int = 0x10A0B0C0


async def _send(sock: socket.socket, targets: list[tuple[str, int]], payloads: list[bytes], sent: _Sent,
                t0: float) -> None:
    """Send ``payloads`` one every 20 ms from ``t0`` (service clock), RTP timestamps on the same timeline."""
    for i, payload in enumerate(payloads):
        due = t0 + i * 0.02
        await anyio.sleep_until(due)
        seq = sent.next_seq & 0xFFFF
        sent.next_seq += 1
        ts = round(due * 48_000) & 0xFFFFFFFF
        data = RtpPacket(payload_type=PAYLOAD_TYPE, sequence=seq, timestamp=ts, ssrc=sent.ssrc,
                         payload=payload, marker=i == 0).to_bytes()
        sent.at[seq] = time.monotonic_ns()
        sent.seq_of[payload] = seq
        for target in targets:
            with contextlib.suppress(BlockingIOError):  # a full buffer: lost for that receiver, as on a network
                sock.sendto(data, target)


class _Traced:
    """The live input as the broadcast sees it, noting what each pull of the frame clock returned and when."""

    def __init__(self, inner: LiveRtpSource) -> None:
        self.inner = inner
        self.pulls: list[tuple[bytes | None, int]] = []

    @property
    def finished(self) -> bool:
        return self.inner.finished

    def pull(self) -> Any:
        frame = self.inner.pull()
        self.pulls.append((frame if isinstance(frame, bytes) else None, time.monotonic_ns()))
        return frame

    def close(self) -> None:
        self.inner.close()


@dataclass
class _Phase:
    delay_ms: int
    server_start_ns: int
    traced: _Traced
    late_before: int = 0
    late_after: int = 0
    underruns: int = 0


# -- one run ---------------------------------------------------------------------------------------------------


async def _site(*, devices: int, delays: Sequence[int], seconds: float, prebuffer: int, gst_ports: list[int],
                seed: int) -> tuple[list[_Phase], list[SpeakerCore], list[SimulatedClock], _Sent]:
    rng = random.Random(seed)
    core = StreamerCore(static_private=rng.randbytes(32), zones=ZoneTree([Zone(ZONE, "bench")]),
                        settings=Settings(), epoch_ns=epoch_for(anyio.current_time()), send_clock=anyio.current_time,
                        random_bytes=rng.randbytes, rng=random.Random(seed + 1))
    service = StreamerService(core, open_udp_socket("127.0.0.1", 0))
    cores: list[SpeakerCore] = []
    clocks: list[SimulatedClock] = []
    phases: list[_Phase] = []
    sent = _Sent()
    mic = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mic.bind(("127.0.0.1", 0))
    mic.setblocking(False)
    with service.sock, mic:
        async with anyio.create_task_group() as tg:
            await tg.start(service.serve)
            for i in range(devices):
                private = rng.randbytes(32)
                speaker = SpeakerCore(static_private=private, server_public=core.public_key,
                                      server_address=service.address, sink=CounterSink(decode=True),
                                      rng=random.Random(rng.random()), random_bytes=rng.randbytes)
                core.add_device(speaker.public_key, ZONE, service.now(), name=f"bench-{i}")
                clock = SimulatedClock(0.0, rng.uniform(-1.0, 1.0))
                runner = DeviceRunner(speaker, service.address, clock=clock, bind_host="127.0.0.1")
                tg.start_soon(runner.run)
                cores.append(speaker)
                clocks.append(clock)
            service.changed()
            await _wait(lambda: all(c.statistics().connected and c.statistics().clock_ready for c in cores),
                        READY_TIMEOUT_S, f"{devices} devices to connect and set their clocks")
            for index, delay in enumerate(delays):
                payloads = announcement(max(1, round(seconds * 50)), seed * 1000 + index)  # new bytes each time
                source = await service.open_live_source("127.0.0.1", 0, prebuffer=prebuffer)
                assert source.address is not None
                traced = _Traced(source)
                now = service.now()
                bid = core.start_broadcast(traced, [ZONE], now, name="announcement", delay_ms=delay)
                service.changed()
                phase = _Phase(delay, core.server_time(now + core.settings.start_lead_s), traced,
                               late_before=sum(c.statistics().late for c in cores))
                phases.append(phase)
                # the operator speaks once the devices have joined
                await _wait(lambda bid=bid: all(bid in (c.statistics().current, *c.statistics().waiting)
                                                for c in cores), READY_TIMEOUT_S, "the devices to join")
                await anyio.sleep(0.2)
                targets = [source.address, *(("127.0.0.1", p) for p in gst_ports)]
                await _send(mic, targets, payloads, sent, service.now() + 0.02)
                phase.underruns = source.statistics().underruns  # before the stream's end empties the input
                await anyio.sleep(delay / 1000 + 0.5)  # the last frames play out
                phase.late_after = sum(c.statistics().late for c in cores)
                service.stop_broadcast(bid)
                await anyio.sleep(0.3)
            service.stop()
            await _wait(lambda: service._tg is None, 5.0, "the streamer to stop")
            tg.cancel_scope.cancel()
    return phases, cores, clocks, sent


async def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise UserError(f"timed out after {timeout:g} s waiting for {what}")
        await anyio.sleep(0.02)


def _loa_latencies(phase: _Phase, cores: Sequence[SpeakerCore], sent: _Sent) -> tuple[list[float], list[float]]:
    """(send -> playout per device-frame, send -> frame-clock pull per frame), in ms."""
    pulls = phase.traced.pulls
    total: list[float] = []
    waits: list[float] = []
    for payload, pulled_ns in pulls:
        if payload is not None and payload in sent.seq_of:
            waits.append((pulled_ns - sent.at[sent.seq_of[payload]]) / 1e6)
    delay_ns = phase.delay_ms * 1_000_000
    for speaker in cores:
        for entry in speaker.log.entries:
            if entry.kind != "packet" or entry.true_at is None:
                continue
            k, rest = divmod(entry.server_at - delay_ns - entry.extra_ns - phase.server_start_ns, FRAME_NS)
            if rest or not 0 <= k < len(pulls):
                continue  # another phase's frame
            payload = pulls[k][0]
            seq = sent.seq_of.get(payload) if payload is not None else None
            if seq is None:
                continue
            total.append(entry.true_at * 1000 - sent.at[seq] / 1e6)
    return total, waits


def _gst_latencies(played: list[tuple[int, int]], sent: _Sent) -> list[float]:
    return [(at - sent.at[seq]) / 1e6 for seq, at in played if seq in sent.at]


def _pct(values: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 3)


def measure(*, devices: int, delays: Sequence[int], gst_latencies: Sequence[int], seconds: float, prebuffer: int,
            seed: int, gst_python: str | None) -> dict[str, Any]:
    """One run of loa and the GStreamer peer on the same RTP stream; the metrics (see the module docstring)."""
    peer = _GstPeer(gst_python, gst_latencies) if gst_python is not None and gst_latencies else None
    try:
        phases, cores, _, sent = anyio.run(
            lambda: _site(devices=devices, delays=delays, seconds=seconds, prebuffer=prebuffer,
                          gst_ports=peer.ports if peer is not None else [], seed=seed), backend="trio")
        played = peer.finish() if peer is not None else {}
    finally:
        if peer is not None:
            peer.close()
    metrics: dict[str, Any] = {"devices": devices, "frames_sent": len(sent.at), "prebuffer_ms": prebuffer * 20}
    loa_p50: list[float] = []
    for phase in phases:
        total, waits = _loa_latencies(phase, cores, sent)
        d = phase.delay_ms
        if not total:
            raise UserError(f"no frame of the announcement played (delay {d} ms)")
        metrics[f"loa_d{d}_p50_ms"] = _pct(total, 50)
        metrics[f"loa_d{d}_p99_ms"] = _pct(total, 99)
        metrics[f"loa_d{d}_input_wait_p50_ms"] = _pct(waits, 50) if waits else None
        metrics[f"loa_d{d}_output_p50_ms"] = round(metrics[f"loa_d{d}_p50_ms"] - (metrics[
            f"loa_d{d}_input_wait_p50_ms"] or 0.0), 3)
        metrics[f"frames_loa_d{d}"] = len(total)
        metrics[f"loa_d{d}_late"] = phase.late_after - phase.late_before
        metrics[f"loa_d{d}_input_underruns"] = phase.underruns
        loa_p50.append(metrics[f"loa_d{d}_p50_ms"])
    metrics["latency_p50_ms"] = metrics[f"loa_d{phases[0].delay_ms}_p50_ms"]
    metrics["latency_p99_ms"] = metrics[f"loa_d{phases[0].delay_ms}_p99_ms"]
    gst_p50: list[float] = []
    for latency in gst_latencies if peer is not None else ():
        values = _gst_latencies(played.get(latency, []), sent)
        if not values:
            raise UserError(f"GStreamer played no frame (jitter buffer {latency} ms)")
        metrics[f"gst_jb{latency}_p50_ms"] = _pct(values, 50)
        metrics[f"gst_jb{latency}_p99_ms"] = _pct(values, 99)
        metrics[f"frames_gst_jb{latency}"] = len(values)
        gst_p50.append(metrics[f"gst_jb{latency}_p50_ms"])
    if gst_p50:
        metrics["gst_p50_ms"] = gst_p50[0]
        metrics["ratio_vs_gstreamer"] = round(loa_p50[0] / max(gst_p50[0], 1e-3), 3)
        metrics["ratio_vs_gstreamer_low"] = round(loa_p50[-1] / max(gst_p50[-1], 1e-3), 3)
    return metrics


def _numbers(text: str, option: str, low: int, high: int) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{option} takes comma-separated whole milliseconds, not {text!r}") from None
    if any(not low <= v <= high for v in values) or len(set(values)) != len(values):
        raise UserError(f"{option} values must be distinct and {low}-{high} ms, not {text!r}")
    return values


@click.command("latency")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
@click.option("--devices", type=click.IntRange(1, 50), default=3, show_default=True,
              help="Reference devices playing the announcement.")
@click.option("--seconds", type=click.FloatRange(0.2, 120), default=5.0, show_default=True,
              help="Seconds of announcement per playout delay.")
@click.option("--delay-ms", "delays_text", default="500,100", show_default=True,
              help="loa playout delays (the first is the site default), one broadcast each.")
@click.option("--gst-latency", "gst_text", default="200,20", show_default=True,
              help="GStreamer rtpjitterbuffer latencies (200 is its default); empty: no GStreamer peer.")
@click.option("--prebuffer", type=click.IntRange(1, 25), default=3, show_default=True,
              help="Packets the live input holds before the broadcast takes the first (the streamer's default).")
@click.option("--seed", type=int, default=1, show_default=True)
def latency(*, as_json: bool, devices: int, seconds: float, delays_text: str, gst_text: str, prebuffer: int,
            seed: int) -> None:
    """A live announcement's latency, RTP in -> device playout, beside GStreamer's jitter buffer."""
    delays = _numbers(delays_text, "--delay-ms", 0, 10_000)
    if not delays:
        raise UserError("--delay-ms needs at least one value")
    gst_latencies = _numbers(gst_text, "--gst-latency", 0, 10_000)
    gst_python, gst_info = gstreamer_python() if gst_latencies else (None, "not measured (--gst-latency '')")
    began = time.perf_counter()
    metrics = measure(devices=devices, delays=delays, gst_latencies=gst_latencies, seconds=seconds,
                      prebuffer=prebuffer, seed=seed, gst_python=gst_python)
    print(f"latency: loa p50 {metrics['latency_p50_ms']} ms, GStreamer p50 {metrics.get('gst_p50_ms', '-')} ms "
          f"({time.perf_counter() - began:.1f} s)", file=sys.stderr)
    gstreamer = f"{gst_info} via PyGObject ({gst_python})" if gst_python is not None else gst_info
    env = environment(network="loopback UDP, real sockets", event_loop="trio", gstreamer=gstreamer,
                      method=("send instant (host monotonic) -> device playout-log instant / fakesink sync=true "
                              "hand-off; concealed frames not counted"),
                      delays_ms=delays, gst_latencies_ms=gst_latencies, seconds=seconds, seed=seed)
    emit("latency", metrics, as_json=as_json, env=env)
