"""`loa bench loss`: how much of a stream devices play exactly under loss, and what the recovery costs in bytes.

The real streamer core and ``--devices`` decoding reference devices (default 10) run on the deterministic fake
network (:mod:`loa.protocol.sim`) under a virtual clock, 20-40 ms one way. After ``--settle`` virtual seconds a
live tone of ``--seconds`` (default 30: 1,500 frames of 20 ms, Opus with in-band FEC) plays to all of them, under
two loss models applied, from the moment the stream starts (sessions are set up before), to every datagram in
both directions (media, NACKs, RTCP, control, keepalives):

* ``5pct``: independent random loss of 5 %;
* ``burst20``: Gilbert-Elliott bursts, 20 % long-run loss, mean burst ``--burst`` packets (default 3), one
  channel per direction per device (:class:`loa.bench._sim.BurstLoss`).

Per model M, over all devices' frames of the stream: ``exact_fraction_M`` (played from the packet itself, on
time: received or retransmitted after a NACK), ``fec_fraction_M`` (rebuilt from the next packet's in-band FEC),
``concealed_fraction_M`` (Opus PLC), ``missing_fraction_M`` (not played at all); ``overhead_M`` = media bytes
the server sent including NACK retransmissions / media bytes of the first transmissions (SRTP and SRTCP, per
destination); ``loss_seen_M`` (the fraction the channel actually dropped). In-band FEC is carried inside every
packet, so it is part of both sides of ``overhead_M``; at the stream's fixed target bitrate libopus takes the
FEC bits from the primary encoding rather than adding bytes, which ``fec_bitrate_ratio`` (Opus bytes per frame
with FEC / without, same audio and encoder settings) shows.

Goal: ``exact_fraction_5pct`` >= 0.995 with ``overhead_5pct`` <= 1.3.
"""

from __future__ import annotations

import random
import sys
import time
from typing import Any

import click
import numpy as np

from loa.bench._report import emit, environment
from loa.bench._sim import SERVER, BurstLoss, LossyDevice, SimWorld
from loa.cli import UserError
from loa.codecs import OpusEncoder
from loa.devices.simclock import SimulatedClock
from loa.devices.simnode import SimulatedDevice
from loa.protocol.sim import LinkConditions
from loa.streamer.settings import EncoderSettings
from loa.streamer.sources import ToneSource

LINK = LinkConditions(delay=(0.020, 0.040))
MODELS = ("5pct", "burst20")


def measure(model: str, *, devices: int, settle: float, seconds: float, burst: float, seed: int) -> dict[str, Any]:
    """Run one loss model; the fractions and the byte overhead."""
    rng = random.Random(seed)
    channels: list[BurstLoss] = []
    world = SimWorld(seed, downlink=LINK, uplink=LINK)
    wrap = None
    if model == "burst20":
        def wrap(node: SimulatedDevice) -> LossyDevice:
            down = BurstLoss(random.Random(rng.random()), loss=0.2, mean_burst=burst)
            up = BurstLoss(random.Random(rng.random()), loss=0.2, mean_burst=burst)
            channels.extend((down, up))
            return LossyDevice(node, down, up)
    for _ in range(devices):
        world.add_device(SimulatedClock(rng.uniform(-50, 50), rng.uniform(-5, 5)), decode=True, wrap=wrap)
    world.run(settle)
    online = world.online()
    if online < devices:
        raise UserError(f"only {online} of {devices} devices connected within {settle:g} s ({model})")
    if model == "5pct":
        lossy = LinkConditions(loss=0.05, delay=LINK.delay)
        world.net.set_link(SERVER, None, lossy)
        world.net.set_link(None, SERVER, lossy)
    for channel in channels:
        channel.active = True
    world.start_tone(seconds)
    sent_before = world.net.statistics()
    world.run(seconds + 5.0)
    frames = world.server.frames
    played = fec = plc = 0
    for node in world.devices:
        stats = node.core.statistics()
        played += stats.played
        fec += stats.fec
        plc += stats.plc
    total = max(frames * devices, 1)
    if channels:
        loss_seen = sum(c.lost for c in channels) / max(sum(c.seen for c in channels), 1)
    else:
        after = world.net.statistics()
        loss_seen = (after.lost - sent_before.lost) / max(after.sent - sent_before.sent, 1)
    first = max(world.server.media_bytes, 1)
    return {
        f"frames_{model}": frames,
        f"exact_fraction_{model}": round(played / total, 5),
        f"fec_fraction_{model}": round(fec / total, 5),
        f"concealed_fraction_{model}": round(plc / total, 5),
        f"missing_fraction_{model}": round(max(0, total - played - fec - plc) / total, 5),
        f"overhead_{model}": round((world.server.media_bytes + world.server.rtx_bytes) / first, 4),
        f"retransmissions_{model}": world.server.rtx_packets,
        f"loss_seen_{model}": round(loss_seen, 4),
    }


def fec_bitrate_ratio(seconds: float = 10.0) -> float:
    """Opus bytes per frame with in-band FEC over without, for the stream's tone and encoder settings."""
    settings = EncoderSettings()
    sizes = []
    for fec in (True, False):
        encoder = OpusEncoder(frame_ms=20, bitrate=settings.bitrate, fec=fec,
                              packet_loss_percent=settings.packet_loss_percent, application=settings.application)
        source = ToneSource(440.0, seconds=seconds)
        total = 0
        while (frame := source.pull()) is not None:
            pcm = np.frombuffer(frame, dtype=np.int16) if isinstance(frame, bytes) else frame
            total += len(encoder.encode(pcm))
        encoder.close()
        sizes.append(total)
    return sizes[0] / max(sizes[1], 1)


@click.command("loss")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
@click.option("--devices", type=click.IntRange(1, 500), default=10, show_default=True)
@click.option("--settle", type=click.FloatRange(5, 600), default=20.0, show_default=True,
              help="Virtual seconds for sessions and clocks before the stream.")
@click.option("--seconds", type=click.FloatRange(0.2, 600), default=30.0, show_default=True,
              help="Virtual seconds of audio.")
@click.option("--burst", type=click.FloatRange(1, 100), default=3.0, show_default=True,
              help="Mean burst length (packets) of the bursty model.")
@click.option("--models", default=",".join(MODELS), show_default=True, help="Comma-separated: 5pct, burst20.")
@click.option("--seed", type=int, default=1, show_default=True)
def loss(*, as_json: bool, devices: int, settle: float, seconds: float, burst: float, models: str,
         seed: int) -> None:
    """Exactly played frames and byte overhead at 5 % random and 20 % bursty loss (fake network)."""
    names = [part.strip() for part in models.split(",") if part.strip()]
    if not names or any(name not in MODELS for name in names):
        raise UserError(f"--models must name some of {', '.join(MODELS)}, not {models!r}")
    metrics: dict[str, Any] = {"devices": devices}
    for name in names:
        began = time.perf_counter()
        metrics.update(measure(name, devices=devices, settle=settle, seconds=seconds, burst=burst, seed=seed))
        print(f"loss {name}: exact {metrics[f'exact_fraction_{name}']}, overhead {metrics[f'overhead_{name}']} "
              f"({time.perf_counter() - began:.1f} s)", file=sys.stderr)
    ratio = fec_bitrate_ratio()
    metrics["fec_bitrate_ratio"] = round(ratio, 4)
    if "5pct" in names:
        metrics["exact_fraction"] = metrics["exact_fraction_5pct"]
        metrics["overhead"] = metrics["overhead_5pct"]
    env = environment(network="fake (loa.protocol.sim), virtual clock", one_way_delay_s=list(LINK.delay),
                      burst_mean_packets=burst, seed=seed)
    emit("loss", metrics, as_json=as_json, env=env)
