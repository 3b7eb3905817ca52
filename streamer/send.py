"""`loa send`: stream a file or the built-in test programme as standard RTP/Opus (optionally SRTP) in real time.

Any RTP receiver that reads SDP can play it, e.g. ``ffplay -protocol_whitelist file,udp,rtp OUT.sdp``. The SDP
is written (atomically) before the first packet is sent; with ``--srtp`` it carries the stream's random key in
its ``a=crypto`` line. RTCP sender reports go out right after the first packet and then every second, to
``PORT + 1`` as RFC 3550 receivers expect, or to ``PORT`` itself with ``--rtcp-mux`` (announced in the SDP as
``a=rtcp-mux``). The stream ends with an RTCP BYE, on which ffmpeg stops reading.

Pacing: frame *k* is sent when the monotonic clock reaches ``start + (samples before k) / 48 kHz``; a frame
whose time has passed is sent at once and counted as late, and the schedule never slips, so lateness does not
accumulate.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import random
import secrets
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from loa.codecs import CodecError, OpusEncoder, demo_programme, frames, load_audio
from loa.codecs.audio import Audio
from loa.protocol.rtcp import Bye, RtcpPacket, SdesChunk, SourceDescription, build_rtcp
from loa.protocol.sdp import SdpDescription, write_sdp
from loa.protocol.srtp import SRTP_KEY_SIZE, StreamProtector
from loa.streamer.packetizer import CLOCK_RATE, Packetizer

__all__ = ["Destination", "SendStatistics", "parse_destination", "send", "stream", "write_file_atomically"]

SR_INTERVAL_NS = 1_000_000_000
LATE_TOLERANCE_NS = 2_000_000
FEC_LOSS_PERCENT = 10
MULTICAST_TTL = 16


@dataclass(frozen=True, slots=True)
class Destination:
    """A resolved ``HOST:PORT``: the numeric address goes into the SDP, ``sockaddr`` to ``sendto``."""

    family: socket.AddressFamily
    address: str
    port: int

    def sockaddr(self, port: int | None = None) -> tuple[str, int]:
        return (self.address, self.port if port is None else port)

    @property
    def multicast(self) -> bool:
        return ipaddress.ip_address(self.address).is_multicast


@dataclass(frozen=True, slots=True)
class SendStatistics:
    packets: int
    late: int
    rtcp: int
    seconds: float


def parse_destination(text: str) -> Destination:
    """``HOST:PORT`` or ``[V6ADDR]:PORT`` -> Destination; raises ``click.ClickException`` (one line) if bad."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise click.ClickException(f"bad destination {text!r}: expected HOST:PORT with a port 1-65535")
    try:
        infos = socket.getaddrinfo(host, int(port_text), type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise click.ClickException(f"bad destination {text!r}: cannot resolve {host!r} ({exc})") from None
    family, _, _, _, sockaddr = infos[0]
    return Destination(family, str(sockaddr[0]).split("%")[0], int(port_text))


def write_file_atomically(path: str, text: str, *, private: bool = False) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers see all of it or nothing.

    The file is readable by its owner only when ``private`` (an SDP holding an SRTP key), else by everyone.
    Raises ``click.ClickException`` (one line) if the directory is not writable; leaves nothing behind then.
    """
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise click.ClickException(f"cannot write SDP {path!r}: {exc.strerror or exc}") from None
    try:
        os.chmod(tmp, 0o600 if private else 0o644)
        with os.fdopen(fd, "w", encoding="ascii", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise click.ClickException(f"cannot write SDP {path!r}: {exc.strerror or exc}") from None


def _encoded(audio: Audio, encoder: OpusEncoder, frame_ms: int, *, loop: bool, limit: int | None) -> Iterator[bytes]:
    count = 0
    while True:
        sent_any = False
        for frame in frames(audio, frame_ms):
            if limit is not None and count >= limit:
                return
            yield encoder.encode(frame)
            count += 1
            sent_any = True
        if not loop or not sent_any:
            return


def stream(
    payloads: Iterator[bytes],
    *,
    packetizer: Packetizer,
    protector: StreamProtector | None,
    send_rtp: Callable[[bytes], object],
    send_rtcp: Callable[[bytes], object],
    cname: bytes,
    monotonic_ns: Callable[[], int] = time.monotonic_ns,
    sleep: Callable[[float], object] = time.sleep,
) -> SendStatistics:
    """Send each payload at its due time, with sender reports and a closing BYE (see the module docstring).

    If sending raises (``OSError``) or the caller interrupts, the BYE is still attempted; the exception
    propagates. Every payload lasts ``packetizer.frame_samples`` samples.
    """
    start = monotonic_ns()
    samples = packets = late = reports = 0
    next_sr = start
    sdes = SourceDescription((SdesChunk(packetizer.ssrc, ((1, cname),)),))

    def send_report(extra: tuple[RtcpPacket, ...] = ()) -> None:
        nonlocal reports
        data = build_rtcp([packetizer.sender_report(), sdes, *extra])
        send_rtcp(protector.protect_rtcp(data) if protector is not None else data)
        reports += 1

    try:
        for payload in payloads:
            due = start + samples * 1_000_000_000 // CLOCK_RATE
            now = monotonic_ns()
            if now < due:
                sleep((due - now) / 1e9)
            elif now - due > LATE_TOLERANCE_NS:
                late += 1
            packet = packetizer.packetize(payload)
            send_rtp(protector.protect(packet) if protector is not None else packet)
            packets += 1
            samples += packetizer.frame_samples
            if monotonic_ns() >= next_sr:
                send_report()
                next_sr += SR_INTERVAL_NS
    finally:
        if packets:
            with contextlib.suppress(OSError):
                send_report((Bye((packetizer.ssrc,)),))
    return SendStatistics(packets, late, reports, (monotonic_ns() - start) / 1e9)


def _open_socket(dest: Destination) -> socket.socket:
    """A UDP socket for ``dest`` (with the multicast TTL for a group); ``click.ClickException`` if refused."""
    try:
        sock = socket.socket(dest.family, socket.SOCK_DGRAM)
    except OSError as exc:
        raise click.ClickException(f"cannot open a UDP socket: {exc.strerror or exc}") from None
    if dest.multicast:
        level, opt = (
            (socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) if dest.family == socket.AF_INET
            else (socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS)
        )
        try:
            sock.setsockopt(level, opt, MULTICAST_TTL)
        except OSError as exc:
            sock.close()
            raise click.ClickException(f"cannot set the multicast TTL: {exc.strerror or exc}") from None
    return sock


def _load(file: str | None, tone: bool) -> tuple[Audio, bool]:
    """The programme and whether it repeats by default (the built-in one does)."""
    if file is not None and tone:
        raise click.ClickException("give either FILE or --tone, not both")
    if file is None:
        return demo_programme(), True
    try:
        return load_audio(file), False
    except CodecError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("send")
@click.argument("file", required=False)
@click.option("--tone", is_flag=True, help="Send the built-in test programme (the default without FILE); it repeats.")
@click.option("--to", "to", required=True, metavar="HOST:PORT", help="Destination of the RTP packets.")
@click.option("--srtp", is_flag=True, help="Encrypt as SRTP with a random key, written into the SDP.")
@click.option("--sdp", "sdp_path", required=True, metavar="OUT.sdp", help="Where to write the SDP.")
@click.option("--frame-ms", type=click.Choice(["10", "20", "40", "60"]), default="20", show_default=True)
@click.option("--bitrate", type=click.IntRange(6000, 510000), default=32000, show_default=True, help="bits/s")
@click.option("--fec/--no-fec", default=True, show_default=True, help="Opus in-band FEC (sized for 10 % loss).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Stop after this many seconds.")
@click.option("--loop", is_flag=True, help="Repeat FILE until --duration or Ctrl-C.")
@click.option("--rtcp-mux", is_flag=True, help="Send RTCP to PORT (a=rtcp-mux) instead of PORT+1.")
@click.option("--start-delay", type=click.FloatRange(min=0), default=0.0, help="Seconds between SDP and first packet.")
def send(
    *,
    file: str | None,
    tone: bool,
    to: str,
    srtp: bool,
    sdp_path: str,
    frame_ms: str,
    bitrate: int,
    fec: bool,
    duration: float | None,
    loop: bool,
    rtcp_mux: bool,
    start_delay: float,
) -> None:
    """Stream FILE (anything ffmpeg reads) or the test programme as RTP/Opus in real time, with its SDP."""
    dest = parse_destination(to)
    audio, repeats = _load(file, tone)
    ms = int(frame_ms)
    limit = None if duration is None else math.ceil(duration * 1000 / ms)
    key = secrets.token_bytes(SRTP_KEY_SIZE) if srtp else None
    if not rtcp_mux and dest.port == 65535:
        raise click.ClickException("port 65535 leaves no PORT+1 for RTCP; use another port or --rtcp-mux")
    try:
        loss = FEC_LOSS_PERCENT if fec else 0
        encoder = OpusEncoder(frame_ms=ms, bitrate=bitrate, fec=fec, packet_loss_percent=loss)
    except CodecError as exc:
        raise click.ClickException(str(exc)) from None
    ttl = MULTICAST_TTL if dest.multicast and dest.family == socket.AF_INET else None
    session = time.time_ns() // 1000
    desc = SdpDescription(
        dest.address, dest.port, key=key, fec=fec, ptime=ms, rtcp_mux=rtcp_mux, session_id=session, ttl=ttl
    )
    sock = _open_socket(dest)
    with sock:
        write_file_atomically(sdp_path, write_sdp(desc), private=key is not None)
        rtcp_addr = dest.sockaddr(dest.port if rtcp_mux else dest.port + 1)
        source = "test programme" if file is None else repr(file)
        click.echo(
            f"loa send: {source} as {'SRTP' if key else 'RTP'}/Opus {ms} ms {bitrate} bit/s to "
            f"{dest.address}:{dest.port}, SDP in {sdp_path}",
            err=True,
        )
        if start_delay:
            time.sleep(start_delay)
        payloads = _encoded(audio, encoder, ms, loop=loop or repeats, limit=limit)
        packetizer = Packetizer.random_start(random.SystemRandom(), time.time_ns, frame_samples=encoder.frame_samples)
        try:
            stats = stream(
                payloads,
                packetizer=packetizer,
                protector=StreamProtector(key) if key is not None else None,
                send_rtp=lambda data: sock.sendto(data, dest.sockaddr()),
                send_rtcp=lambda data: sock.sendto(data, rtcp_addr),
                cname=f"loa-{secrets.token_hex(6)}".encode("ascii"),
            )
        except OSError as exc:
            raise click.ClickException(f"cannot send to {to}: {exc.strerror or exc}") from None
        except CodecError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"loa send: sent {stats.packets} packets in {stats.seconds:.1f} s ({stats.late} late)", err=True)
