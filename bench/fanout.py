"""`loa bench fanout`: sender CPU per datagram of the fan-out, beside a plain `sendto` loop and a C ceiling.

For each device count N the same payload (an SRTP-sized datagram) is sent to N distinct loopback addresses
``127.a.b.c`` on one port, by three senders, each measured as CPU time of the sending thread
(``time.thread_time_ns`` here, ``CLOCK_THREAD_CPUTIME_ID`` in C) over the send loop only:

* ours: :class:`loa.streamer.fanout.Fanout` (sendmmsg through ctypes, or ``--backend sendto``);
* peer: a plain Python ``for address in addresses: sock.sendto(payload, address)`` loop;
* ceiling: ``bench/ceiling/sendmmsg_ceiling.c``, compiled at run time with ``$CC`` (default ``cc``) ``-O2``,
  sending the same payload to the same destinations with sendmmsg in batches of 1024.

Every datagram reaches a bound socket, so the kernel never answers with ICMP: a few sample destinations have
their own receiver (large buffer, drained between chunks of frames, untimed) which must receive every frame
exactly once; the rest land on one catch-all socket bound to the wildcard address, whose full queue drops them,
the same for all three senders. On loopback the sender's CPU time includes the kernel's receive path.

With :mod:`loa.protocol.srtp` available, a fourth figure adds to ours the making of each frame as the streamer
makes it (sequence and timestamp advanced, one SRTP protection per frame), amortised over the N sends
(``with_srtp_us_per_pkt_N``).

Peers added with ``--peers`` (default ``streamer,gstreamer``), on the same destinations and payload:

* ``streamer``: the whole streamer service (:mod:`loa.bench._streamer_load`), sessions made through the real
  handshake in memory, a live test tone encoded, protected and fanned out by the service's frame clock, on trio
  (``trio_us_per_pkt_N``) and on asyncio with uvloop (``asyncio_us_per_pkt_N``), for ``--stream-seconds`` per
  measurement: CPU of the service's thread per datagram sent;
* ``gstreamer``: ``gst-launch-1.0 filesrc ! multiudpsink clients=...`` (one ``multiudpsink`` per 4,000 clients,
  behind a ``tee``) sending the same payload; its CPU is the child's ``getrusage`` (all its threads) for a run of
  F frames minus the median of runs of one frame (start-up and plugin loading), per datagram of the F - 1 frames
  (``gst_us_per_pkt_N``). Without GStreamer (``./dev.sh bench`` installs it) ``env.gstreamer`` says "not
  installed" and its metrics are absent.

Each peer P also has ``P_ratio_to_ceiling_N`` (ceiling cost / P's, median of per-repeat ratios).

Metrics per N: ``us_per_pkt_N``, ``sendto_us_per_pkt_N``, ``ceiling_us_per_pkt_N`` (median CPU microseconds per
datagram), ``pps_N``/``ceiling_pps_N`` (datagrams per CPU-second), ``ratio_to_ceiling_N`` (ceiling cost / ours,
median of the per-repeat ratios; 1.0 means as cheap as C), ``sendto_ratio_to_ceiling_N``, ``spread_pct_N`` (max -
min of our per-repeat cost over the median, in percent), ``sample_delivery_N`` (fraction of the datagrams due to
the sample receivers that arrived). Top level: ``ratio_to_ceiling``, ``pps``, ``ceiling_pps`` at the largest N.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal, cast

import click

from loa.bench._report import emit, environment
from loa.cli import UserError
from loa.streamer.fanout import DEFAULT_BACKEND, MAX_BATCH, Backend, Fanout

CEILING_SOURCE = Path(__file__).resolve().parent / "ceiling" / "sendmmsg_ceiling.c"
CHUNK_FRAMES = 200  # frames between two drains of the sample receivers (each holds far more than this)
SO_RCVBUFFORCE = 33  # Linux; lets root exceed net.core.rmem_max
SAMPLE_RCVBUF = 8 << 20


def destinations(count: int, port: int) -> list[tuple[str, int]]:
    """``count`` distinct loopback unicast addresses (host octet 1..250) on one port."""
    out = []
    for i in range(count):
        hi, lo = divmod(i, 250)
        out.append((f"127.{1 + hi // 250}.{hi % 250}.{1 + lo}", port))
    return out


class Receivers:
    """A catch-all wildcard socket on the port plus exact receivers for a few sample destinations."""

    def __init__(self, stack: ExitStack, count: int, samples: int) -> None:
        catch_all = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        catch_all.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        catch_all.bind(("0.0.0.0", 0))  # noqa: S104 - receives for every 127/8 destination; loopback only
        self.port: int = catch_all.getsockname()[1]
        self.addresses = destinations(count, self.port)
        picks = sorted({round(i * (count - 1) / max(samples - 1, 1)) for i in range(min(samples, count))})
        self.samples: list[socket.socket] = []
        for index in picks:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _big_rcvbuf(sock)
            sock.bind(self.addresses[index])
            sock.setblocking(False)
            self.samples.append(sock)
        self.expected = 0
        self.received = 0

    def drain(self, frames: int, payload: bytes | None) -> None:
        """Empty the sample receivers; each should hold exactly ``frames`` copies of ``payload``.

        With ``payload`` None (datagrams that differ frame by frame) nothing is counted.
        """
        if payload is not None:
            self.expected += frames * len(self.samples)
        for sock in self.samples:
            while True:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    break
                if data == payload:
                    self.received += 1

    def delivery(self) -> float:
        return self.received / self.expected if self.expected else 1.0


def _big_rcvbuf(sock: socket.socket) -> None:
    if sys.platform.startswith("linux"):
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, SAMPLE_RCVBUF)
        except PermissionError:
            pass
        else:
            return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SAMPLE_RCVBUF)


def _chunks(frames: int) -> Iterator[int]:
    while frames > 0:
        step = min(frames, CHUNK_FRAMES)
        yield step
        frames -= step


def measure_ours(rx: Receivers, frames: int, payload: bytes, backend: Backend,
                 next_frame: Callable[[], bytes] | None = None) -> tuple[int, int]:
    """Send ``frames`` frames with Fanout; return (thread CPU ns, datagrams sent).

    With ``next_frame``, each frame is made by it (one SRTP protection per frame) instead of being ``payload``.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        fanout = Fanout(sock, backend=backend)
        for i, address in enumerate(rx.addresses):
            fanout.add(i, address)
        send, cpu, sent = fanout.send, 0, 0
        for step in _chunks(frames):
            start = time.thread_time_ns()
            for _ in range(step):
                sent += send(payload if next_frame is None else next_frame())
                while fanout.pending:
                    select.select([], [sock], [], 0.01)
                    sent += fanout.resume()
            cpu += time.thread_time_ns() - start
            rx.drain(step, payload if next_frame is None else None)
        return cpu, sent


def measure_sendto(rx: Receivers, frames: int, payload: bytes) -> tuple[int, int]:
    """The peer: a plain Python ``sendto`` loop on a blocking socket; return (thread CPU ns, datagrams sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        addresses = rx.addresses
        sendto, cpu = sock.sendto, 0
        for step in _chunks(frames):
            start = time.thread_time_ns()
            for _ in range(step):
                for address in addresses:
                    sendto(payload, address)
            cpu += time.thread_time_ns() - start
            rx.drain(step, payload)
        return cpu, frames * len(addresses)


def compile_c(source: Path, workdir: str, name: str, what: str) -> str:
    """Compile the C program ``source`` into ``workdir/name``; UserError (naming ``what``) when there is no
    working compiler or it fails."""
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        raise UserError(f"no C compiler {compiler!r} found (set CC): {what} is compiled at run time")
    binary = str(Path(workdir) / name)
    done = subprocess.run([compiler, "-O2", "-o", binary, str(source)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise UserError(f"compiling {source.name} with {compiler} failed: {done.stderr.strip()[:500]}")
    return binary


def compile_ceiling(workdir: str) -> str:
    """Compile the C ceiling into ``workdir``; raise UserError when there is no working compiler."""
    return compile_c(CEILING_SOURCE, workdir, "sendmmsg_ceiling", "the fan-out ceiling")


def measure_ceiling(rx: Receivers, frames: int, payload: bytes, binary: str) -> tuple[int, int]:
    """Run the C ceiling; return (its sending thread's CPU ns, datagrams sent)."""
    listing = "".join(f"{host} {port}\n" for host, port in rx.addresses)
    cpu = sent = 0
    for step in _chunks(frames):
        done = subprocess.run([binary, str(step), str(MAX_BATCH), payload.hex()], input=listing,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise UserError(f"the C ceiling failed: {done.stderr.strip()[:500]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        cpu += int(result["cpu_ns"])
        sent += int(result["sent"])
        rx.drain(step, payload)
    return cpu, sent


GST_LAUNCH = "gst-launch-1.0"
GST_MIN_PACKETS = 20_000
GST_CHUNK_FRAMES = 2000
GST_CLIENTS_PER_SINK = 4000  # keeps one argument well under the kernel's 128 KiB limit per argument


def gstreamer_available() -> str | None:
    """Why GStreamer cannot be measured here, or None when gst-launch and multiudpsink are present."""
    launcher = shutil.which(GST_LAUNCH)
    if launcher is None:
        return f"not installed ({GST_LAUNCH} not found; ./dev.sh bench installs gstreamer1.0-tools)"
    inspect = shutil.which("gst-inspect-1.0")
    if inspect is not None:
        done = subprocess.run([inspect, "multiudpsink"], capture_output=True, check=False, timeout=30)
        if done.returncode != 0:
            return "not installed (multiudpsink missing: gstreamer1.0-plugins-good)"
    return None


def _gst_run(rx: Receivers, frames: int, payload: bytes, workdir: str) -> int:
    """One gst-launch run sending ``frames`` copies of ``payload`` to every destination; the child's CPU ns."""
    source = Path(workdir) / "payload.bin"
    source.write_bytes(payload * frames)
    pipeline = ["filesrc", f"location={source}", f"blocksize={len(payload)}", "!"]
    groups = [rx.addresses[i:i + GST_CLIENTS_PER_SINK] for i in range(0, len(rx.addresses), GST_CLIENTS_PER_SINK)]
    sinks = [["multiudpsink", "clients=" + ",".join(f"{h}:{p}" for h, p in group), "sync=false", "async=false"]
             for group in groups]
    if len(sinks) == 1:
        pipeline += sinks[0]
    else:
        pipeline += ["tee", "name=t"]
        for sink in sinks:
            pipeline += ["t.", "!", "queue", "!", *sink]
    child = subprocess.Popen([GST_LAUNCH, "-q", *pipeline], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, status, usage = os.wait4(child.pid, 0)
    finally:
        child.returncode = 0  # reaped above
        errors = child.stderr.read().decode(errors="replace") if child.stderr else ""
        if child.stderr:
            child.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise UserError(f"gst-launch-1.0 failed: {errors.strip()[:300]}")
    return round((usage.ru_utime + usage.ru_stime) * 1e9)


def measure_gstreamer(rx: Receivers, frames: int, payload: bytes, workdir: str) -> tuple[int, int]:
    """GStreamer's multiudpsink: (marginal CPU ns, datagrams) over ``frames`` frames, start-up subtracted."""
    base = statistics.median(_gst_run(rx, 1, payload, workdir) for _ in range(3))
    rx.drain(3, payload)
    cpu = sent = 0
    frames = max(frames, -(-GST_MIN_PACKETS // len(rx.addresses)))  # start-up noise stays small beside it
    while frames > 0:  # each sample receiver holds a few thousand datagrams: drained between runs
        step = max(min(frames, GST_CHUNK_FRAMES), 2)
        frames -= step
        cpu += max(_gst_run(rx, step, payload, workdir) - round(base), 0)
        sent += (step - 1) * len(rx.addresses)
        rx.drain(step, payload)
    return cpu, sent


def srtp_frames(payload: bytes) -> Callable[[], bytes] | None:
    """Per call, the next RTP packet of a stream (sequence and timestamp advanced) protected as SRTP.

    The plaintext is ``payload`` shortened by the SRTP tag, so the datagram sent has the size of ``payload``.
    None when :mod:`loa.protocol.srtp` is not available.
    """
    try:
        from loa.protocol.srtp import SRTP_TAG_SIZE, StreamProtector
    except ImportError:
        return None
    protector = StreamProtector(bytes(range(30)))
    rtp = bytearray(payload[: len(payload) - SRTP_TAG_SIZE])
    sequence = 0

    def next_frame() -> bytes:
        nonlocal sequence
        sequence += 1
        rtp[2:4] = (sequence & 0xFFFF).to_bytes(2, "big")
        rtp[4:8] = (sequence * 960 & 0xFFFFFFFF).to_bytes(4, "big")
        return protector.protect(rtp)

    return next_frame


def _payload(size: int) -> bytes:
    """An RTP-shaped datagram: a 12-byte header (version 2, payload type 111) and filler of ``size`` bytes."""
    header = bytes([0x80, 111, 0x12, 0x34, 0, 0, 0x03, 0xC0, 0xDE, 0xAD, 0xBE, 0xEF])
    return (header + bytes((i * 37) & 0xFF for i in range(size)))[:size]


@click.command("fanout")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
@click.option("--devices", default="1000,10000", show_default=True, help="Comma-separated destination counts.")
@click.option("--packets", type=click.IntRange(1, 20_000_000), default=200_000, show_default=True,
              help="Datagrams per measurement (frames = packets / devices, at least 1).")
@click.option("--repeat", type=click.IntRange(1, 50), default=5, show_default=True,
              help="Measurements per figure; the median is reported.")
@click.option("--size", type=click.IntRange(32, 1200), default=160, show_default=True, help="Datagram bytes.")
@click.option("--samples", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Destinations with their own receiver, to confirm delivery.")
@click.option("--backend", type=click.Choice(["auto", "sendmmsg", "sendto"]), default="auto", show_default=True,
              help="Fan-out backend measured as ours.")
@click.option("--peers", default="streamer,gstreamer", show_default=True,
              help="Extra senders: streamer (the service on trio and asyncio), gstreamer (multiudpsink); or none.")
@click.option("--stream-seconds", type=click.FloatRange(0.1, 30), default=1.0, show_default=True,
              help="Seconds of streaming per measurement of the streamer peer.")
def fanout(*, as_json: bool, devices: str, packets: int, repeat: int, size: int, samples: int, backend: str,
           peers: str, stream_seconds: float) -> None:
    """Fan-out sender CPU per datagram: ours, a plain sendto loop and a C sendmmsg ceiling, on loopback."""
    chosen = {part.strip() for part in peers.split(",") if part.strip()} - {"none"}
    if chosen - set(PEERS):
        raise UserError(f"--peers must name some of {', '.join(PEERS)} (or none), not {peers!r}")
    try:
        counts = sorted({int(part) for part in devices.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--devices must be comma-separated integers, not {devices!r}") from None
    if not counts or counts[0] < 1 or counts[-1] > 1_000_000:
        raise UserError("--devices must name counts between 1 and 1000000")
    payload = _payload(size)
    srtp = srtp_frames(payload) is not None
    metrics: dict[str, Any] = {"size": size, "repeat": repeat}
    gst = gstreamer_available() if "gstreamer" in chosen else "not measured (--peers)"
    extra = {name for name in chosen if name != "gstreamer" or gst is None}
    with tempfile.TemporaryDirectory(prefix="loa-fanout-") as workdir:
        binary = compile_ceiling(workdir)
        for count in counts:
            metrics.update(_measure_count(count, packets=packets, repeat=repeat, samples=samples, payload=payload,
                                          backend=cast(Backend, backend), binary=binary, srtp=srtp, peers=extra,
                                          workdir=workdir, stream_seconds=stream_seconds))
    top = counts[-1]
    metrics["ratio_to_ceiling"] = metrics[f"ratio_to_ceiling_{top}"]
    metrics["pps"] = metrics[f"pps_{top}"]
    metrics["ceiling_pps"] = metrics[f"ceiling_pps_{top}"]
    env = environment(backend=DEFAULT_BACKEND if backend == "auto" else backend, srtp=srtp,
                      gstreamer=gst or _gst_version(), peers=sorted(extra))
    emit("fanout", metrics, as_json=as_json, env=env)


PEERS = ("streamer", "gstreamer")


def _gst_version() -> str | None:
    try:
        done = subprocess.run([GST_LAUNCH, "--version"], capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.splitlines()[0].strip() if done.stdout else None


def _streamer_senders(rx: Receivers, count: int, seconds: float,
                      stack: ExitStack) -> dict[str, Callable[[Receivers, int], tuple[int, int]]]:
    """The streamer service on trio and on asyncio, sending to the destinations of ``rx``."""
    from loa.bench._streamer_load import StreamerLoad, leaf
    from loa.streamer.service import open_udp_socket

    load = StreamerLoad(rx.addresses, leaf_size=count)
    sock = stack.enter_context(open_udp_socket("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)

    def run(backend: Literal["trio", "asyncio"]) -> Callable[[Receivers, int], tuple[int, int]]:
        def measure(rx: Receivers, frames: int) -> tuple[int, int]:
            out = load.measure(sock, [[leaf(0)]], seconds=seconds if frames > 1 else 0.1, backend=backend)
            rx.drain(CHUNK_FRAMES, None)
            return out
        return measure

    return {"trio": run("trio"), "asyncio": run("asyncio")}


def _measure_count(count: int, *, packets: int, repeat: int, samples: int, payload: bytes, backend: Backend,
                   binary: str, srtp: bool, peers: set[str] | frozenset[str] = frozenset(), workdir: str = "",
                   stream_seconds: float = 1.0) -> dict[str, Any]:
    frames = max(1, packets // count)
    senders: dict[str, Callable[[Receivers, int], tuple[int, int]]] = {
        "ours": lambda rx, n: measure_ours(rx, n, payload, backend),
        "sendto": lambda rx, n: measure_sendto(rx, n, payload),
        "ceiling": lambda rx, n: measure_ceiling(rx, n, payload, binary),
    }
    if srtp:
        senders["srtp"] = lambda rx, n: measure_ours(rx, n, payload, backend, srtp_frames(payload))
    if "gstreamer" in peers:
        senders["gst"] = lambda rx, n: measure_gstreamer(rx, n, payload, workdir)
    figures: dict[str, list[float]] = {}
    with ExitStack() as stack:
        rx = Receivers(stack, count, samples)
        if "streamer" in peers:
            senders.update(_streamer_senders(rx, count, stream_seconds, stack))
        figures = {name: [] for name in senders}
        for measure in senders.values():  # warm-up, untimed
            measure(rx, max(1, frames // 10))
        rx.expected = rx.received = 0
        names = list(senders)
        for turn in range(repeat):  # a different order each turn, so that no sender always goes first
            for name in names[turn % len(names):] + names[: turn % len(names)]:
                figures[name].append(_per_datagram(senders[name](rx, frames)))
        delivery = rx.delivery()
    ours, peer, ceiling, with_srtp = (figures.get(name, []) for name in ("ours", "sendto", "ceiling", "srtp"))
    ours_us, peer_us, ceiling_us = (statistics.median(v) for v in (ours, peer, ceiling))
    out: dict[str, Any] = {
        f"frames_{count}": frames,
        f"us_per_pkt_{count}": round(ours_us, 4),
        f"sendto_us_per_pkt_{count}": round(peer_us, 4),
        f"ceiling_us_per_pkt_{count}": round(ceiling_us, 4),
        f"pps_{count}": round(1e6 / ours_us),
        f"ceiling_pps_{count}": round(1e6 / ceiling_us),
        f"ratio_to_ceiling_{count}": round(statistics.median(c / o for c, o in zip(ceiling, ours, strict=True)), 4),
        f"sendto_ratio_to_ceiling_{count}": round(
            statistics.median(c / p for c, p in zip(ceiling, peer, strict=True)), 4),
        f"spread_pct_{count}": round(100 * (max(ours) - min(ours)) / ours_us, 2),
        f"sample_delivery_{count}": round(delivery, 6),
    }
    if with_srtp:
        out[f"with_srtp_us_per_pkt_{count}"] = round(statistics.median(with_srtp), 4)
    for name in ("trio", "asyncio", "gst"):
        values = figures.get(name)
        if values and min(values) > 0:
            out[f"{name}_us_per_pkt_{count}"] = round(statistics.median(values), 4)
            out[f"{name}_ratio_to_ceiling_{count}"] = round(
                statistics.median(c / v for c, v in zip(ceiling, values, strict=True)), 4)
    return out


def _per_datagram(measured: tuple[int, int]) -> float:
    cpu_ns, sent = measured
    return cpu_ns / 1000 / max(sent, 1)


