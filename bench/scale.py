"""`loa bench scale`: fan-out cost against the number of devices and of simultaneous streams; frame sizes; multicast.

Every figure is sender CPU per datagram (or per frame) on loopback, beside the C ``sendmmsg`` ceiling measured in
the same run on the same destinations and payload (:mod:`loa.bench.fanout`, whose helpers this reuses).

* Devices (``--devices``, default 100, 1,000, 5,000, 10,000, 20,000): for each N, ours
  (:class:`~loa.streamer.fanout.Fanout`), the C ceiling, a plain ``sendto`` loop and GStreamer's
  ``multiudpsink`` (when installed) send ``--packets`` datagrams (``us_per_pkt_N``, ``ceiling_us_per_pkt_N``,
  ``sendto_us_per_pkt_N``, ``gst_us_per_pkt_N``, ``ratio_to_ceiling_N``); then the whole streamer service streams a
  live tone to N devices with sessions made through the real handshake (:mod:`loa.bench._streamer_load`), on trio
  and on asyncio (``trio_us_per_pkt_N``, ``asyncio_us_per_pkt_N``, ``trio_ratio_to_ceiling_N``...; the ceiling
  of those ratios, measured beside them, is ``streamer_ceiling_us_per_pkt_N``), up to ``--streamer-devices``
  (``--streamer-counts`` picks other counts for this part). The counts up to ``--streams-devices`` share one set
  of sessions; each larger count has a set of its own, made just before it is measured and dropped after, so that
  a small count does not carry the bookkeeping of many idle sessions and no set lives long enough to rekey (120 s;
  making and settling 20,000 sessions takes about a minute on 2 shared cores).
* Streams (``--streams``, default 1, 10, 100): the same devices (the largest N that is at most
  ``--streams-devices``) split into S zones, each with its own live stream (its own encoding, SRTP and frame
  clock): ``streams_trio_us_per_pkt_S``, ``streams_asyncio_us_per_pkt_S``, ``streams_ratio_to_ceiling_S`` (the
  ceiling of one stream to all of them, the cheapest possible way to reach them).
* Frame sizes (20, 40, 60 ms): the datagram an Opus stream at ``--bitrate`` sends (RTP header, Opus payload, SRTP
  tag) to ``--frame-devices`` destinations: ``frame_us_per_pkt_Fms`` and its ceiling, ``frame_pps_Fms``
  (datagrams per second to the whole set), ``frame_cpu_pct_Fms`` (percent of one core the fan-out takes for
  that set, at ours' cost per datagram), ``frame_ratio_to_ceiling_Fms``.
* Multicast (``--multicast``, default 10, 100, 1,000 receivers): one IP multicast group per zone
  (``239.255.0.1``; sender with ``IP_MULTICAST_IF`` 127.0.0.1 and ``IP_MULTICAST_LOOP``, receivers joined on
  127.0.0.1, no route needed) beside unicast fan-out to the same number of receivers: ``multicast_us_per_frame_M``,
  ``unicast_us_per_frame_M`` (sender thread CPU per frame to all M), ``multicast_gain_M`` (unicast / multicast),
  ``multicast_delivery_M``. On loopback the sending kernel makes every copy (on a LAN the switch does), so the
  gain here is a lower bound. Unavailable multicast (no loopback multicast) is reported in
  ``env.multicast`` with the reason.

Each measured figure is the median of ``--repeat`` runs; ``_min``/``_max`` keys give the spread of ours.
"""

from __future__ import annotations

import gc
import socket
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from typing import Any, cast

import click

from loa.bench._report import emit, environment
from loa.bench.fanout import (
    Receivers,
    _measure_count,
    _payload,
    compile_ceiling,
    gstreamer_available,
    measure_ceiling,
    measure_ours,
    srtp_frames,
)
from loa.cli import UserError
from loa.devices.fleet import FleetError, raise_open_file_limit
from loa.streamer.fanout import DEFAULT_BACKEND
from loa.streamer.service import open_udp_socket

FRAME_MS = (20, 40, 60)
RTP_HEADER = 12
SRTP_TAG = 10
MULTICAST_GROUP = "239.255.0.1"
BACKENDS = ("trio", "asyncio")


def _counts(text: str, option: str, low: int, high: int) -> list[int]:
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"{option} must be comma-separated integers, not {text!r}") from None
    if not counts or counts[0] < low or counts[-1] > high:
        raise UserError(f"{option} must name counts between {low} and {high}")
    return counts


def _median_ratio(ceiling: list[float], ours: list[float]) -> float | None:
    """Median of the per-run ratios ceiling / ours; None when a run measured no CPU time at all."""
    if min(ours) <= 0:
        return None
    return round(statistics.median(c / o for c, o in zip(ceiling, ours, strict=True)), 4)


def measure_streamer(counts: list[int], streams: list[int], *, streams_devices: int, seconds: float, repeat: int,
                     binary: str, payload: bytes, most: int) -> dict[str, Any]:
    """The streamer service to N devices, and to S zones of one total; see the module.

    Only counts up to ``most``. The counts up to ``streams_devices`` share one set of sessions (the largest of
    them, also the one the streams part splits into zones); every larger count gets a set of its own, made
    through the handshake just before it is measured and dropped after. So no measurement carries many more
    idle sessions than it sends to, and no set lives long enough for its devices to rekey (120 s), which at
    20,000 devices costs as much as making them."""
    from loa.bench._streamer_load import StreamerLoad, leaf

    out: dict[str, Any] = {}
    counts = [count for count in counts if count <= most] or counts[:1]
    shared = max((c for c in counts if c <= streams_devices), default=counts[0])
    leaf_size = max(1, min(counts[0], shared // max(streams)))
    if any(count % leaf_size for count in counts):
        raise UserError(f"--devices must all be multiples of {leaf_size} to share one set of sessions")
    with ExitStack() as stack:
        sock = stack.enter_context(open_udp_socket("127.0.0.1", 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)

        def ceiling_of(count: int) -> float:
            with ExitStack() as inner:
                part = Receivers(inner, count, 1)
                cpu, sent = measure_ceiling(part, max(2, 20_000 // count), payload, binary)
            return cpu / 1000 / max(sent, 1)

        def one_set(size: int, measured: list[int], with_streams: bool) -> None:
            with ExitStack() as inner:
                rx = Receivers(inner, size, 2)
                began = time.perf_counter()
                load = StreamerLoad(rx.addresses, leaf_size=leaf_size)
                print(f"scale: {size} sessions in {time.perf_counter() - began:.1f} s", file=sys.stderr)

                def run(groups: list[list[str]], backend: str) -> float:
                    cpu, sent = load.measure(sock, groups, seconds=seconds, backend=cast(Any, backend))
                    rx.drain(1, None)
                    return cpu / 1000 / max(sent, 1)

                for count in measured:
                    began = time.perf_counter()
                    zones = [leaf(i) for i in range(count // leaf_size)]
                    figures: dict[str, list[float]] = {name: [] for name in (*BACKENDS, "ceiling")}
                    for turn in range(repeat):
                        for backend in BACKENDS if turn % 2 == 0 else BACKENDS[::-1]:
                            figures[backend].append(run([zones], backend))
                        figures["ceiling"].append(ceiling_of(count))
                    for backend in BACKENDS:
                        out[f"{backend}_us_per_pkt_{count}"] = round(statistics.median(figures[backend]), 4)
                        out[f"{backend}_ratio_to_ceiling_{count}"] = _median_ratio(figures["ceiling"],
                                                                                   figures[backend])
                    out[f"streamer_ceiling_us_per_pkt_{count}"] = round(
                        statistics.median(figures["ceiling"]), 4)
                    print(f"scale: streamer to {count}: trio {out[f'trio_us_per_pkt_{count}']} asyncio "
                          f"{out[f'asyncio_us_per_pkt_{count}']} us/pkt ({time.perf_counter() - began:.1f} s)",
                          file=sys.stderr)
                if with_streams:
                    measure_streams(run, size)

        def measure_streams(run: Any, total: int) -> None:
            leaves = total // leaf_size
            out["streams_devices"] = total
            for count in streams:
                if count > leaves:
                    continue
                per = leaves // count
                groups = [[leaf(j) for j in range(i * per, (i + 1) * per)] for i in range(count)]
                figures: dict[str, list[float]] = {name: [] for name in (*BACKENDS, "ceiling")}
                for turn in range(repeat):
                    for backend in BACKENDS if turn % 2 == 0 else BACKENDS[::-1]:
                        figures[backend].append(run(groups, backend))
                    figures["ceiling"].append(ceiling_of(per * count * leaf_size))
                for backend in BACKENDS:
                    out[f"streams_{backend}_us_per_pkt_{count}"] = round(statistics.median(figures[backend]), 4)
                out[f"streams_ceiling_us_per_pkt_{count}"] = round(statistics.median(figures["ceiling"]), 4)
                out[f"streams_ratio_to_ceiling_{count}"] = _median_ratio(figures["ceiling"], figures["asyncio"])
                print(f"scale: {count} streams to {per * count * leaf_size}: asyncio "
                      f"{out[f'streams_asyncio_us_per_pkt_{count}']} us/pkt", file=sys.stderr)

        one_set(shared, [c for c in counts if c <= shared], with_streams=True)
        for count in counts:
            if count > shared:
                gc.collect()  # the previous set's sessions, before the next is made
                one_set(count, [count], with_streams=False)
    return out


def measure_frames(devices: int, *, bitrate: int, packets: int, repeat: int, binary: str) -> dict[str, Any]:
    """Cost per datagram and per second of 20/40/60 ms frames to ``devices`` destinations (module docstring)."""
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        rx = Receivers(stack, devices, 2)
        frames = max(2, packets // devices)
        for ms in FRAME_MS:
            size = RTP_HEADER + bitrate * ms // 8000 + SRTP_TAG
            payload = _payload(size)
            ours, ceiling = [], []
            for _ in range(repeat):
                cpu, sent = measure_ours(rx, frames, payload, "auto")
                ours.append(cpu / 1000 / max(sent, 1))
                cpu, sent = measure_ceiling(rx, frames, payload, binary)
                ceiling.append(cpu / 1000 / max(sent, 1))
            cost = statistics.median(ours)
            pps = devices * 1000 / ms
            out[f"frame_bytes_{ms}ms"] = size
            out[f"frame_us_per_pkt_{ms}ms"] = round(cost, 4)
            out[f"frame_ceiling_us_per_pkt_{ms}ms"] = round(statistics.median(ceiling), 4)
            out[f"frame_ratio_to_ceiling_{ms}ms"] = _median_ratio(ceiling, ours)
            out[f"frame_pps_{ms}ms"] = round(pps)
            out[f"frame_cpu_pct_{ms}ms"] = round(pps * cost / 1e4, 2)
        out["frame_devices"] = devices
        out["frame_delivery"] = round(rx.delivery(), 6)
    return out


def _multicast_receivers(stack: ExitStack, count: int) -> tuple[list[socket.socket], int]:
    first = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    first.bind((MULTICAST_GROUP, 0))
    port = first.getsockname()[1]
    sockets = [first]
    for _ in range(count - 1):
        sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((MULTICAST_GROUP, port))
        sockets.append(sock)
    membership = socket.inet_aton(MULTICAST_GROUP) + socket.inet_aton("127.0.0.1")
    for sock in sockets:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        sock.setblocking(False)
    return sockets, port


def _drain_all(sockets: list[socket.socket], payload: bytes) -> int:
    got = 0
    for sock in sockets:
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            got += data == payload
    return got


def measure_multicast(counts: list[int], *, frames: int, repeat: int, payload: bytes) -> tuple[dict[str, Any], str]:
    """Multicast to one group with M receivers beside unicast fan-out to M; (metrics, availability)."""
    out: dict[str, Any] = {}
    try:
        raise_open_file_limit(counts[-1] * 2 + 64)
    except FleetError as exc:
        return out, f"unavailable: {exc}"
    for count in counts:
        with ExitStack() as stack:
            try:
                receivers, port = _multicast_receivers(stack, count)
                sender = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
                sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
                sender.sendto(payload, (MULTICAST_GROUP, port))
            except OSError as exc:
                return out, f"unavailable: loopback multicast failed ({exc.strerror or exc})"
            time.sleep(0.01)
            if _drain_all(receivers, payload) != count:
                return out, "unavailable: multicast on 127.0.0.1 did not reach every joined receiver"
            uni = Receivers(stack, count, 1)
            multi_cost, uni_cost, delivered, due = [], [], 0, 0
            step = max(1, min(frames, 50_000 // count))
            for _ in range(repeat):
                start = time.thread_time_ns()
                for _ in range(step):
                    sender.sendto(payload, (MULTICAST_GROUP, port))
                multi_cost.append((time.thread_time_ns() - start) / 1000 / step)
                delivered += _drain_all(receivers, payload)
                due += step * count
                cpu, _sent = measure_ours(uni, step, payload, "auto")
                uni_cost.append(cpu / 1000 / step)
            out[f"multicast_us_per_frame_{count}"] = round(statistics.median(multi_cost), 3)
            out[f"unicast_us_per_frame_{count}"] = round(statistics.median(uni_cost), 3)
            out[f"multicast_gain_{count}"] = _median_ratio(uni_cost, multi_cost)
            out[f"multicast_delivery_{count}"] = round(delivered / max(due, 1), 4)
    return out, "available (loopback: IP_MULTICAST_IF 127.0.0.1, receivers joined on 127.0.0.1)"


@click.command("scale")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
@click.option("--devices", default="100,1000,5000,10000,20000", show_default=True,
              help="Comma-separated device counts, each a multiple of the smallest.")
@click.option("--streams", default="1,10,100", show_default=True, help="Comma-separated simultaneous stream counts.")
@click.option("--streams-devices", type=click.IntRange(1, 100_000), default=5000, show_default=True,
              help="Devices shared by the streams (the largest device count up to this).")
@click.option("--streamer-devices", type=click.IntRange(1, 100_000), default=20_000, show_default=True,
              help="The largest device count the streamer service is measured at (its sessions are made first).")
@click.option("--streamer-counts", default=None,
              help="Comma-separated device counts of the streamer service [default: every --devices count up to "
                   "--streamer-devices].")
@click.option("--packets", type=click.IntRange(1, 5_000_000), default=100_000, show_default=True,
              help="Datagrams per fan-out measurement.")
@click.option("--stream-seconds", type=click.FloatRange(0.1, 10), default=1.0, show_default=True,
              help="Seconds per streamer measurement.")
@click.option("--frame-devices", type=click.IntRange(1, 100_000), default=5000, show_default=True,
              help="Destinations of the frame-size comparison.")
@click.option("--bitrate", type=click.IntRange(6000, 510_000), default=32_000, show_default=True)
@click.option("--multicast", default="10,100,1000", show_default=True,
              help="Comma-separated receiver counts of the multicast comparison (or 0 to skip).")
@click.option("--repeat", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Runs per figure; the median is reported.")
@click.option("--parts", default="devices,streamer,frames,multicast", show_default=True,
              help="Which parts to run: devices, streamer, frames, multicast.")
def scale(*, as_json: bool, devices: str, streams: str, streams_devices: int, streamer_devices: int,
          streamer_counts: str | None, packets: int, stream_seconds: float,
          frame_devices: int, bitrate: int, multicast: str, repeat: int, parts: str) -> None:
    """Fan-out cost against devices and simultaneous streams; 20/40/60 ms frames; unicast against multicast."""
    counts = _counts(devices, "--devices", 1, 100_000)
    if streamer_counts is not None:
        served = _counts(streamer_counts, "--streamer-counts", 1, 100_000)
        streamer_devices = served[-1]
    else:
        served = counts
    stream_counts = _counts(streams, "--streams", 1, 1000)
    chosen = {part.strip() for part in parts.split(",") if part.strip()}
    known = {"devices", "streamer", "frames", "multicast"}
    if not chosen or chosen - known:
        raise UserError(f"--parts must name some of {', '.join(sorted(known))}, not {parts!r}")
    multicast_counts = [] if multicast.strip() == "0" else _counts(multicast, "--multicast", 1, 4000)
    try:
        raise_open_file_limit(max(multicast_counts, default=1) + 256)
    except FleetError as exc:
        raise UserError(str(exc)) from None
    payload = _payload(160)
    gst = gstreamer_available()
    metrics: dict[str, Any] = {"repeat": repeat, "size": len(payload)}
    env_extra: dict[str, Any] = {"gstreamer": gst or "installed", "counts": counts}
    with tempfile.TemporaryDirectory(prefix="loa-scale-") as workdir:
        binary = compile_ceiling(workdir)
        if "devices" in chosen:
            peers = frozenset({"gstreamer"} if gst is None else set())
            for count in counts:
                began = time.perf_counter()
                metrics.update(_measure_count(count, packets=packets, repeat=repeat, samples=2, payload=payload,
                                              backend="auto", binary=binary,
                                              srtp=srtp_frames(payload) is not None, peers=peers, workdir=workdir))
                print(f"scale: fan-out to {count}: {metrics[f'us_per_pkt_{count}']} us/pkt, ceiling "
                      f"{metrics[f'ceiling_us_per_pkt_{count}']} ({time.perf_counter() - began:.1f} s)",
                      file=sys.stderr)
        if "streamer" in chosen:
            metrics.update(measure_streamer(served, stream_counts, streams_devices=streams_devices,
                                            seconds=stream_seconds, repeat=repeat, binary=binary, payload=payload,
                                            most=streamer_devices))
        if "frames" in chosen:
            metrics.update(measure_frames(frame_devices, bitrate=bitrate, packets=packets, repeat=repeat,
                                          binary=binary))
        if "multicast" in chosen and multicast_counts:
            found, status = measure_multicast(multicast_counts, frames=200, repeat=repeat, payload=payload)
            metrics.update(found)
            env_extra["multicast"] = status
    env = environment(backend=DEFAULT_BACKEND, bitrate=bitrate, **env_extra)
    emit("scale", metrics, as_json=as_json, env=env)


__all__ = ["measure_frames", "measure_multicast", "measure_streamer", "scale"]
