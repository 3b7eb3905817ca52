"""`loa bench faults`: frames played exactly, alert delivery and rejoin time under network faults, real sockets.

The real streamer service (:class:`loa.streamer.StreamerService`) and ``--devices`` reference devices (default
10, :class:`loa.devices.runner.DeviceRunner`, each with its own socket, simulated clock offset and drift, Opus
decoding every frame) run in this process on loopback, every device behind its own leg of the seeded impairment
proxy (:class:`loa.bench.impair.ImpairProxy`). Sessions and clock estimates are set up on a perfect link first;
then each scenario runs in turn (the link is made perfect again, and 1 s passes, between two):

* ``lossN``: independent random loss of N % in both directions (every datagram: media, NACKs, RTCP, control);
* ``burstN``: Gilbert-Elliott bursts, N % long-run loss, mean burst 3 datagrams, both directions;
* ``reorderN``: N % of datagrams held back 50 ms (behind two or three later media packets), both directions;
* ``dupN``: N % of datagrams duplicated, both directions;
* ``jitterN``: every datagram delayed uniformly 0..N ms, both directions (which also reorders);
* ``slowN``: every datagram delayed N ms, both directions: over 300 ms, a path slower than the playout delay,
  where the devices play the stream later (PROTOCOL.md 5.6) and lose its first ``LATE_RUN`` packets;
* ``outage_up_Ns`` / ``outage_down_Ns``: one-way outage of N s, device -> server or server -> device;
* ``move``: every device's address changes (its leg moves to a new source port) halfway through the programme.

Non-outage scenarios: a live programme (a 440 Hz tone, ``--seconds`` long, default 8) to every device, then,
still under the impairment, a signed emergency alert (0.5 s of audio). Figures: ``S_exact_fraction`` (frame slots
of the programme, on all devices, played from the packet itself, received or retransmitted after a NACK, in
time), ``S_fec_fraction`` (rebuilt from the next packet's in-band FEC), ``S_concealed_fraction`` (Opus PLC),
``S_missing_fraction`` (never played; includes a device's late join when its ``join`` was lost), over
``frames x devices`` slots; ``S_played_twice`` (slots a device played more than once: must be 0);
``S_alert_ms`` (from the call that triggers the alert to the last device holding it: its core accepted the
signed alert) and ``S_alert_p50_ms``; ``S_loss_seen`` (fraction of datagrams the proxy dropped, both ways).

Outage scenarios: a live programme plays; 2 s in, the outage starts and the alert is triggered right after.
Figures: ``S_rejoin_ms`` (outage end -> the last device to play a frame decoded from a packet again, on the true
timeline of the frame's start; it includes the stream's playout delay, 300 ms, for packets sent after the
outage, and is near 0 when audio never stopped) and ``S_rejoin_p50_ms``; ``S_alert_ms`` (trigger -> every device
holds it) and, for a downlink outage, ``S_alert_after_outage_ms`` (outage end -> every device holds it: what the
retransmission back-off or a new session adds). A device that does not rejoin or get the alert within
``--limit`` seconds (default 75) counts as failed: ``S_rejoined_fraction`` / ``S_alert_held_fraction`` below 1.
``S_not_rejoined`` counts the devices of an outage scenario that did not play from packets again, and each gets
a line on standard error with what it and the streamer were doing then (its session, broadcasts, stream state and
counters; the streamer's record of it, its memberships and whether the broadcast's destinations hold it).

Top level: ``exact_fraction_loss5`` (the random 5 % loss figure), ``exact_fraction_min`` (the worst non-outage
scenario), ``alert_ms_max`` and ``rejoin_ms_max`` (over every scenario run).

``--kernel``: the process moves into a network namespace of its own and the faults are made by the kernel
instead of the proxy (:class:`loa.bench.impair.KernelFaults`): random loss by nftables ``numgen random`` drops
(``tc netem`` where the kernel has it) and outages by nftables drop rules, on the datagrams to and from the
server's port on ``lo``; devices talk to the server directly. Only ``lossN`` and outage scenarios run there.
Needs root and nftables; a clear error otherwise.

Default: every scenario above with 1, 5, 20 s outages (about 5 minutes); ``--long`` adds the 60 s outages each way
(about 3 minutes more). ``--scenarios`` names any list.
"""

from __future__ import annotations

import json
import math
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from loa.bench._report import emit, environment
from loa.bench.impair import (
    Direction,
    Impairment,
    ImpairProxy,
    KernelFaultError,
    KernelFaults,
    Leg,
    enter_private_network,
    kernel_support,
)
from loa.cli import UserError
from loa.devices.content import MemoryStore
from loa.devices.core import Address, SpeakerCore
from loa.devices.runner import DeviceRunner
from loa.devices.simclock import SimulatedClock
from loa.devices.sinks import CounterSink
from loa.protocol.alert import key_id
from loa.protocol.control import ConfigValues
from loa.protocol.noise import x25519_public
from loa.streamer.core import StreamerCore
from loa.streamer.service import StreamerService, epoch_for, open_udp_socket
from loa.streamer.settings import Settings
from loa.streamer.sources import ToneSource
from loa.streamer.zones import Zone, ZoneTree

HOST = "127.0.0.1"
ZONE = "A"
FRAMES_PER_S = 50  # 20 ms frames
DELAY_MS = 300
LEAD_S = 2.0  # programme before an outage starts
GAP_S = 1.0  # perfect link between two scenarios
_RANK = {"packet": 0, "fec": 1, "plc": 2}
DEFAULT = ("loss1,loss5,loss10,loss20,loss30,burst20,reorder10,dup10,jitter50,jitter200,"
           "outage_up_1s,outage_down_1s,outage_up_5s,outage_down_5s,outage_up_20s,outage_down_20s,move")
LONG = "outage_up_60s,outage_down_60s"
_PATTERNS: list[tuple[str, Callable[[int], Impairment]]] = [
    (r"loss(\d+)", lambda n: Impairment(loss=n / 100)),
    (r"burst(\d+)", lambda n: Impairment(loss=n / 100, burst=3.0)),
    (r"reorder(\d+)", lambda n: Impairment(reorder=n / 100, reorder_gap=0.05)),
    (r"dup(\d+)", lambda n: Impairment(duplicate=n / 100)),
    (r"jitter(\d+)", lambda n: Impairment(jitter=n / 1000)),
    (r"slow(\d+)", lambda n: Impairment(delay=n / 1000)),
]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One fault case (see the module docstring); ``impairment`` applies to both directions."""

    name: str
    impairment: Impairment = field(default_factory=Impairment)
    outage: tuple[Direction, float] | None = None
    move: bool = False

    @property
    def kernel_ready(self) -> bool:
        """Whether :class:`KernelFaults` can make it (random loss, outages)."""
        imp = self.impairment
        return not self.move and imp == Impairment(loss=imp.loss, reorder_gap=imp.reorder_gap)


def parse_scenario(name: str) -> Scenario:
    """A scenario from its name; ValueError with the accepted forms otherwise."""
    if name == "move":
        return Scenario(name, move=True)
    if m := re.fullmatch(r"outage_(up|down)_(\d+)s", name):
        seconds = int(m.group(2))
        if not 1 <= seconds <= 600:
            raise ValueError(f"{name}: an outage lasts 1 to 600 s")
        return Scenario(name, outage=("up" if m.group(1) == "up" else "down", float(seconds)))
    for pattern, make in _PATTERNS:
        if m := re.fullmatch(pattern, name):
            try:
                return Scenario(name, make(int(m.group(1))))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
    raise ValueError(f"unknown scenario {name!r}: use lossN, burstN, reorderN, dupN (N %), jitterN, slowN (ms), "
                     "outage_up_Ns, outage_down_Ns or move")


class TimedCore(SpeakerCore):
    """A device core that notes (``time.monotonic``) when it accepts each alert."""

    accepted: list[float]

    def receive_datagram(self, data: bytes, source: Address, now: float, *, group: str | None = None) -> None:
        before = self.alerts_accepted
        super().receive_datagram(data, source, now, group=group)
        if self.alerts_accepted != before:
            self.accepted.append(time.monotonic())

    def advance(self, now: float) -> None:
        before = self.alerts_accepted
        super().advance(now)
        if self.alerts_accepted != before:  # an alert held back until the clock estimate was ready
            self.accepted.append(time.monotonic())


@dataclass
class Device:
    core: TimedCore
    runner: DeviceRunner
    leg: Leg | None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


class FaultSite:
    """The streamer service and its devices on loopback, through the proxy or straight (kernel faults)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.authority = Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))
        public = self.authority.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.authority_public = public
        settings = Settings(config=ConfigValues(delay_ms=DELAY_MS, preroll_ms=0), delay_ms=DELAY_MS)
        self.core = StreamerCore(
            static_private=self.rng.randbytes(32), zones=ZoneTree([Zone(ZONE, "Zone A")]), settings=settings,
            authorities={key_id(public): public}, epoch_ns=epoch_for(anyio.current_time()),
            send_clock=anyio.current_time, first_bid=time.time_ns() // 1_000_000 & 0xFFFFFF,
        )
        self.service = StreamerService(self.core, open_udp_socket(HOST, 0))
        self.devices: list[Device] = []
        self.proxy: ImpairProxy | None = None

    async def start(self, tg: anyio.abc.TaskGroup, count: int, *, proxy: bool,
                    link: Impairment | None = None) -> None:
        """Serve, and start ``count`` devices, each through its leg of the proxy (``link`` both ways from their
        first datagram, if given) or straight to the service."""
        await tg.start(self.service.serve)
        if proxy:
            self.proxy = ImpairProxy(tg, self.service.address, seed=self.seed)
            if link is not None:
                self.proxy.set(up=link, down=link)
        for _ in range(count):
            leg = await self.proxy.add_leg() if self.proxy is not None else None
            self.add_device(tg, leg)

    def add_device(self, tg: anyio.abc.TaskGroup, leg: Leg | None) -> None:
        private = self.rng.randbytes(32)
        self.core.add_device(x25519_public(private), ZONE, self.service.now(), name=f"dev{len(self.devices)}")
        self.service.changed()
        address = leg.address if leg is not None else self.service.address
        core = TimedCore(
            static_private=private, server_public=self.core.public_key, authority_keys=[self.authority_public],
            server_address=address, sink=CounterSink(decode=True), store=MemoryStore(1 << 20),
            rng=random.Random(self.rng.random()), timestamp_source=lambda _now: time.time_ns(),
        )
        core.accepted = []
        clock = SimulatedClock(self.rng.uniform(-50, 50), self.rng.uniform(-20, 20))
        device = Device(core, DeviceRunner(core, address, clock=clock, bind_host=HOST), leg)
        self.devices.append(device)
        tg.start_soon(self._run, device)

    @staticmethod
    async def _run(device: Device) -> None:
        with device.scope:
            await device.runner.run()

    def trigger_alert(self) -> tuple[float, list[int]]:
        """Trigger an alert for the zone (0.5 s of audio); (monotonic time of the call, accepted counts before)."""
        marks = [len(d.core.accepted) for d in self.devices]
        at = time.monotonic()
        self.service.trigger_alert(ToneSource(880.0, seconds=0.5), signing_key=self.authority, zones=[ZONE],
                                   ttl_s=600)
        return at, marks

    async def stop(self) -> None:
        for device in self.devices:
            device.scope.cancel()
        self.service.stop()
        with anyio.move_on_after(5):
            while self.service._tg is not None:
                await anyio.sleep(0.01)
        self.service.sock.close()
        if self.proxy is not None:
            await self.proxy.aclose()


async def wait_until(predicate: Callable[[], bool], limit: float) -> bool:
    """Poll every 10 ms for at most ``limit`` seconds; whether ``predicate`` came true."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(0.01)
    return True


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 1)


def _first_packet_after(device: Device, after: float) -> float | None:
    """The true start of the first frame decoded from a packet at or after ``after`` (any broadcast)."""
    first = None
    for entry in reversed(device.core.log.entries):
        if entry.true_at is None or entry.true_at < after:
            break
        if entry.kind == "packet":
            first = entry.true_at
    return first


class Faults:
    """Applies a scenario's faults, in process or in the kernel, and says what was dropped."""

    def __init__(self, site: FaultSite, kernel: KernelFaults | None) -> None:
        self.site = site
        self.kernel = kernel
        self._before: tuple[int, int] = (0, 0)

    def _counts(self) -> tuple[int, int]:
        if self.kernel is not None:
            seen = dropped = 0
            for direction in ("up", "down"):
                s, d = self.kernel.counts()[direction]
                seen, dropped = seen + s, dropped + d
            return seen, dropped
        assert self.site.proxy is not None
        totals = self.site.proxy.totals().values()
        return sum(c.offered for c in totals), sum(c.dropped + c.blocked for c in totals)

    def apply(self, impairment: Impairment) -> None:
        if self.kernel is not None:
            self.kernel.loss(impairment.loss)
        else:
            assert self.site.proxy is not None
            self.site.proxy.set(up=impairment, down=impairment)
        self._before = self._counts()

    def loss_seen(self) -> float:
        seen, dropped = self._counts()
        return (dropped - self._before[1]) / max(seen - self._before[0], 1)

    def clear(self) -> None:
        if self.kernel is not None:
            self.kernel.clear()
        else:
            assert self.site.proxy is not None
            self.site.proxy.set(up=Impairment(), down=Impairment())

    def begin_outage(self, direction: Direction, seconds: float) -> float:
        """Start a one-way outage now (in force when this returns); its planned end (monotonic)."""
        if self.kernel is not None:
            self.kernel.block(direction)
            return time.monotonic() + seconds
        assert self.site.proxy is not None
        return self.site.proxy.outage(direction, seconds)[1]

    async def end_outage(self, direction: Direction, end: float) -> float:
        """Return once the outage is over, with its actual end (monotonic)."""
        await anyio.sleep(max(0.0, end - time.monotonic()))
        if self.kernel is not None:
            self.kernel.unblock(direction)
            return time.monotonic()
        return end


async def _alert_figures(site: FaultSite, at: float, marks: list[int], limit: float,
                         prefix: str) -> dict[str, Any]:
    devices = site.devices
    await wait_until(lambda: all(len(d.core.accepted) > m for d, m in zip(devices, marks, strict=True)), limit)
    held = [d.core.accepted[m] - at for d, m in zip(devices, marks, strict=True) if len(d.core.accepted) > m]
    out: dict[str, Any] = {f"{prefix}_alert_held_fraction": round(len(held) / len(devices), 4)}
    if held:
        out[f"{prefix}_alert_ms"] = _ms(max(held))
        out[f"{prefix}_alert_p50_ms"] = _ms(statistics.median(held))
    return out


async def run_programme(site: FaultSite, faults: Faults, scenario: Scenario, seconds: float,
                        limit: float) -> dict[str, Any]:
    """A non-outage scenario (see the module docstring); its figures."""
    name = scenario.name
    faults.apply(scenario.impairment)
    frames = math.ceil(seconds * FRAMES_PER_S)
    bid = site.service.start_broadcast(ToneSource(440.0, seconds=seconds), [ZONE])
    if scenario.move:
        await anyio.sleep(seconds / 2)
        for device in site.devices:
            if device.leg is not None:
                await device.leg.move()
        await anyio.sleep(seconds / 2 + DELAY_MS / 1000 + 0.7)
    else:
        # on a slow path the last frames come a path's delay later and play up to about as much later again
        await anyio.sleep(seconds + DELAY_MS / 1000 + 0.7 + 2 * scenario.impairment.delay)
    at, marks = site.trigger_alert()
    metrics = await _alert_figures(site, at, marks, limit, name)
    await anyio.sleep(0.5 + DELAY_MS / 1000 + 0.3)  # the alert's audio ends
    metrics[f"{name}_loss_seen"] = round(faults.loss_seen(), 4)
    faults.clear()
    packet = fec = plc = twice = 0
    for device in site.devices:
        entries = device.core.log.for_bid(bid)
        slots = {e.rtp_ts for e in entries}
        twice += len(entries) - len(slots)
        kinds: dict[int, str] = {}
        for e in entries:  # a slot played twice counts by its best: packet, then fec, then plc
            if _RANK.get(e.kind, 3) < _RANK.get(kinds.get(e.rtp_ts, ""), 3):
                kinds[e.rtp_ts] = e.kind
        packet += sum(k == "packet" for k in kinds.values())
        fec += sum(k == "fec" for k in kinds.values())
        plc += sum(k == "plc" for k in kinds.values())
    total = frames * len(site.devices)
    metrics.update({
        f"{name}_frames": frames,
        f"{name}_exact_fraction": round(packet / total, 5),
        f"{name}_fec_fraction": round(fec / total, 5),
        f"{name}_concealed_fraction": round(plc / total, 5),
        f"{name}_missing_fraction": round(max(0, total - packet - fec - plc) / total, 5),
        f"{name}_played_twice": twice,
    })
    return metrics


def not_rejoined(site: FaultSite, device: Device, bid: int, end: float) -> dict[str, Any]:
    """What a device that has not played from packets since ``end`` is doing, seen from both sides: its own
    statistics (session, broadcasts, stream state, counters) and the streamer's record of it (online, its
    address, the broadcasts it is a member of, whether ``bid``'s destinations hold it)."""
    stats = device.core.statistics()
    mine: dict[str, Any] = {
        field: getattr(stats, field)
        for field in ("connected", "boot", "current", "waiting", "mode", "stream", "clock_ready", "received",
                      "played", "late", "skipped", "unplayed", "gaps", "watchdog_fires", "faults")
    }
    key = device.core.public_key
    try:
        status = site.core.device_status(key)
        theirs: dict[str, Any] = {"online": status.online, "address": status.address,
                                  "broadcasts": list(status.broadcasts), "boot": status.boot,
                                  "last_seen_s_after_end": (round(status.last_seen - end, 3)
                                                            if status.last_seen is not None else None)}
    except KeyError:
        theirs = {"known": False}
    try:
        theirs["in_destinations"] = any(dest == key for dest, _address in site.core.destinations(bid))
    except KeyError:
        theirs["in_destinations"] = None  # the broadcast is gone
    return {"device": site.devices.index(device), "device_side": mine, "server_side": theirs}


async def run_outage(site: FaultSite, faults: Faults, scenario: Scenario, limit: float,
                     log: Callable[[str], None] = lambda _line: None) -> dict[str, Any]:
    """An outage scenario (see the module docstring); its figures. Each device that has not played from
    packets again within ``limit`` gets a line on ``log`` saying what it and the streamer were doing
    (:func:`not_rejoined`), and their number is ``S_not_rejoined``."""
    assert scenario.outage is not None
    name = scenario.name
    direction, seconds = scenario.outage
    faults.apply(Impairment())
    bid = site.service.start_broadcast(ToneSource(440.0), [ZONE])
    await anyio.sleep(LEAD_S)
    planned = faults.begin_outage(direction, seconds)
    at, marks = site.trigger_alert()
    end = await faults.end_outage(direction, planned)
    devices = site.devices
    await wait_until(lambda: all(_first_packet_after(d, end) is not None for d in devices), limit)
    firsts = [_first_packet_after(d, end) for d in devices]
    rejoins = [f - end for f in firsts if f is not None]
    metrics: dict[str, Any] = {f"{name}_rejoined_fraction": round(len(rejoins) / len(devices), 4)}
    missing = [not_rejoined(site, d, bid, end) for d, f in zip(devices, firsts, strict=True) if f is None]
    metrics[f"{name}_not_rejoined"] = len(missing)
    for entry in missing:
        log(f"faults {name}: not playing from packets {limit:g} s after the outage: {json.dumps(entry, default=str)}")
    if rejoins:
        metrics[f"{name}_rejoin_ms"] = _ms(max(rejoins))
        metrics[f"{name}_rejoin_p50_ms"] = _ms(statistics.median(rejoins))
    metrics.update(await _alert_figures(site, at, marks, limit, name))
    if direction == "down" and f"{name}_alert_ms" in metrics:
        metrics[f"{name}_alert_after_outage_ms"] = _ms(max(d.core.accepted[m] - end for d, m in
                                                           zip(devices, marks, strict=True)
                                                           if len(d.core.accepted) > m))
    site.service.stop_broadcast(bid)
    faults.clear()
    return metrics


async def run_scenarios(scenarios: Sequence[Scenario], *, devices: int = 10, seconds: float = 8.0, seed: int = 1,
                        kernel: str | None = None, limit: float = 75.0,
                        log: Callable[[str], None] = lambda _line: None) -> dict[str, Any]:
    """Bring the site up, run ``scenarios`` in order and return every figure (see the module docstring).
    ``kernel``: ``"nft"`` or ``"netem"`` to impair in the kernel (the caller is in a namespace of its own).
    TimeoutError if the devices cannot all connect and estimate their clocks within 30 s."""
    metrics: dict[str, Any] = {}
    site = FaultSite(seed)
    async with anyio.create_task_group() as tg:
        await site.start(tg, devices, proxy=kernel is None)
        kernel_faults = KernelFaults(site.service.address[1], backend=kernel) if kernel is not None else None
        faults = Faults(site, kernel_faults)
        try:
            if not await wait_until(lambda: all(d.core.statistics().clock_ready and d.core.settings.zones
                                                for d in site.devices), 30.0):
                ready = sum(d.core.statistics().clock_ready for d in site.devices)
                raise TimeoutError(f"only {ready} of {devices} devices connected with a clock estimate in 30 s")
            for scenario in scenarios:
                began = time.monotonic()
                if scenario.outage is not None:
                    figures = await run_outage(site, faults, scenario, limit, log)
                else:
                    figures = await run_programme(site, faults, scenario, seconds, limit)
                metrics.update(figures)
                shown = ", ".join(f"{k[len(scenario.name) + 1:]} {v}" for k, v in figures.items())
                log(f"faults {scenario.name}: {shown} ({time.monotonic() - began:.1f} s)")
                await anyio.sleep(GAP_S)
        finally:
            if kernel_faults is not None:
                kernel_faults.close()
            await site.stop()
            tg.cancel_scope.cancel()
    return metrics


def summary(metrics: dict[str, Any], scenarios: Sequence[Scenario]) -> dict[str, Any]:
    """The top-level figures (see the module docstring)."""
    out: dict[str, Any] = {}
    exact = [metrics[f"{s.name}_exact_fraction"] for s in scenarios if f"{s.name}_exact_fraction" in metrics]
    if exact:
        out["exact_fraction_min"] = min(exact)
    if "loss5_exact_fraction" in metrics:
        out["exact_fraction_loss5"] = metrics["loss5_exact_fraction"]
    for figure in ("alert_ms", "rejoin_ms"):
        values = [metrics[f"{s.name}_{figure}"] for s in scenarios if f"{s.name}_{figure}" in metrics]
        if values:
            out[f"{figure}_max"] = max(values)
    return out


@click.command("faults")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
@click.option("--devices", type=click.IntRange(1, 50), default=10, show_default=True,
              help="Decoding devices, each behind its own proxy leg.")
@click.option("--seconds", type=click.FloatRange(1, 120), default=8.0, show_default=True,
              help="Programme length of each non-outage scenario.")
@click.option("--scenarios", default=None, help=f"Comma-separated scenario names [default: {DEFAULT}].")
@click.option("--long", "long_", is_flag=True, help=f"Add the 60 s outages ({LONG}).")
@click.option("--kernel", is_flag=True, help="Impair in the kernel (nftables/netem) in a private namespace.")
@click.option("--limit", type=click.FloatRange(5, 600), default=75.0, show_default=True,
              help="Seconds to wait for a device to rejoin or hold an alert before counting it failed.")
@click.option("--seed", type=int, default=1, show_default=True)
def faults(*, as_json: bool, devices: int, seconds: float, scenarios: str | None, long_: bool, kernel: bool,
           limit: float, seed: int) -> None:
    """Frames played exactly, alert delivery and rejoin time under loss, bursts, reordering, duplication,
    jitter, one-way outages and address changes (real sockets on loopback)."""
    names = [n.strip() for n in (scenarios or DEFAULT).split(",") if n.strip()]
    if long_:
        names += [n for n in LONG.split(",") if n not in names]
    if not names:
        raise UserError("--scenarios names no scenario")
    try:
        chosen = [parse_scenario(n) for n in names]
    except ValueError as exc:
        raise UserError(str(exc)) from None
    backend = None
    if kernel:
        if scenarios is None:
            chosen = [s for s in chosen if s.kernel_ready]
        if unfit := [s.name for s in chosen if not s.kernel_ready]:
            raise UserError(f"--kernel makes only random loss and outages, not {', '.join(unfit)}")
        backend, why = kernel_support()
        if backend is None:
            raise UserError(f"--kernel: {why}")
        try:
            enter_private_network()
        except KernelFaultError as exc:
            raise UserError(f"--kernel: {exc}") from None

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        metrics = anyio.run(lambda: run_scenarios(chosen, devices=devices, seconds=seconds, seed=seed,
                                                  kernel=backend, limit=limit, log=log), backend="asyncio")
    except TimeoutError as exc:
        raise UserError(str(exc)) from None
    metrics = {"devices": devices, **summary(metrics, chosen), **metrics}
    env = environment(network=f"loopback UDP, {'kernel: ' + str(backend) if backend else 'in-process proxy'}",
                      backend="asyncio", delay_ms=DELAY_MS, seed=seed, scenarios=[s.name for s in chosen])
    emit("faults", metrics, as_json=as_json, env=env)
