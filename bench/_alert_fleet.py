"""The fleet side of `loa bench alert`, run as its own process: ``python -m loa.bench._alert_fleet SPEC RESULT``.

``SPEC`` is a JSON file written by the bench: the server address and public key, the authority key, the device
keys' seed and count, how many decode (``full``), the start rate, and a time limit. The devices run in a
:class:`loa.devices.FleetHost` on real loopback sockets, with kernel receive timestamps. Each device records,
on the host's monotonic clock (the true timeline, shared with the bench's process):

* ``arrival``: when the kernel received the datagram that delivered the signed alert it accepted;
* ``own``: the CPU time (``time.thread_time``) the device itself spent on that datagram: decryption, decoding,
  the Ed25519 verification, the zone, expiry and replay checks, and queueing its answers;
* ``accepted``: ``arrival + own``, when a device with a processor of its own would hold the alert;
* ``first_packet``: when the kernel received the first media packet handled after that;

decoding devices also log the true start of every frame played. When the server gives the zone a multicast group,
the decoding devices join it and play from it, the counting ones do not (:class:`loa.devices.FleetHost`); ``io``
in ``RESULT`` counts the datagrams that came on a group (``group_received``), and ``decoding`` gives each decoding
device's media counters and its playout log by kind of frame (what stopped a device from playing: packets late,
frames never logged), and ``diagnosis``, for each decoding device that never played, its state as last seen
while the fleet ran (arbiter, output, buffered frames, when its next playout was due and when the host would have
run it: :func:`diagnose`). ``copies`` gives, per device, what the bench's diagnosis of its slowest devices
needs (:meth:`TimedCore.copies`), ``addresses`` each device's local address and ``drops`` its socket's kernel drop
count (``/proc/net/udp``, :func:`udp_drops`) once every device held the alert. Once every device holds the
alert and every decoding device has played its first frame (or at the time limit) the process writes ``RESULT``
(JSON) and exits. A line ``ready`` on stdout says the devices are being started.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from loa.devices.content import MemoryStore
from loa.devices.core import Address, SpeakerCore
from loa.devices.fleet import raise_open_file_limit
from loa.devices.fleet_host import FleetHost
from loa.devices.runner import run
from loa.devices.simclock import SimulatedClock
from loa.devices.sinks import CounterSink
from loa.protocol.connection import Connected, ConnectionEvent, Received
from loa.protocol.control import SignedAlert
from loa.protocol.datagram import TYPE_BEACON

STATUS_EVERY_S = 0.5
DROP_WINDOW_S = 0.05  # the test seam's window after a device's first beacon (spec "drop_window_s")
DECODING_FIGURES = ("boot", "alerts_accepted", "received", "late", "skipped", "unplayed", "gaps", "watchdog_fires",
                    "drops")


def device_keys(seed: int, count: int) -> list[bytes]:
    """The device private keys both processes derive from one seed."""
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(count)]


class GcClock:
    """The CPU time (``time.thread_time``) this process spent in the garbage collector, summed by a ``gc.callbacks``
    hook (:meth:`install`): the fleet's heap holds every device, where a device's own would hold one."""

    total = 0.0
    _started = 0.0

    @classmethod
    def install(cls) -> None:
        if cls._hook not in gc.callbacks:
            gc.callbacks.append(cls._hook)

    @classmethod
    def _hook(cls, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            cls._started = time.thread_time()
        else:
            cls.total += time.thread_time() - cls._started


class TimedCore(SpeakerCore):
    """A device core that notes when it accepted an alert and when the first RTP packet after that arrived
    (see the module docstring); ``host`` supplies the kernel's arrival time of the datagram being handled.

    For the bench's diagnosis of its slowest devices it also counts, at the cost of a counter per alert copy:
    the copies of the alert that reached it (``beacon_copies``, and ``alert_copies``: reliable ``alert`` messages
    its channel delivered; a retransmitted copy of one already delivered counts in the channel's ``duplicates``),
    the kernel arrival of the first (``first_copy_at``), whether it held the alert back for want of a clock
    estimate or zone (``held_back``), which copy it accepted (``via``: ``beacon``, ``reliable`` or ``held``), the
    collector's CPU inside the accepting datagram (``gc_s``, part of ``own_s``), and its sessions (``connects``,
    ``last_connect_at``). ``drop_after_beacon``: a test seam; the device ignores every datagram that arrives
    within that many seconds after its first beacon, that beacon included, as if its socket had overflowed."""

    host: FleetHost | None = None
    arrival_at: float | None = None
    own_s: float | None = None
    accepted_at: float | None = None
    first_packet_at: float | None = None
    first_copy_at: float | None = None
    beacon_copies = 0
    alert_copies = 0
    duplicates_before: int | None = None  # the channel's duplicates when the first copy came
    held_back = False
    via: str | None = None
    gc_s = 0.0
    connects = 0
    last_connect_at: float | None = None
    drop_after_beacon: float | None = None
    dropped = 0  # by the seam
    _drop_until: float | None = None

    def _arrival(self) -> float:
        return self.host.arrival if self.host is not None else time.monotonic()

    def _first_copy(self) -> None:
        if self.first_copy_at is None:
            self.first_copy_at = self._arrival()
            self.duplicates_before = self.conn.channel.statistics().duplicates

    def receive_datagram(self, data: bytes, source: Address, now: float, *, group: str | None = None) -> None:
        if self.drop_after_beacon is not None and self._dropped(data):
            return
        before = self.alerts_accepted
        gc_before = GcClock.total
        started = time.thread_time()
        super().receive_datagram(data, source, now, group=group)
        if self.accepted_at is None:
            if self.alerts_accepted != before:
                own = time.thread_time() - started
                arrival = self._arrival()
                self.arrival_at, self.own_s, self.accepted_at = arrival, own, arrival + own
                self.gc_s = GcClock.total - gc_before
        elif self.first_packet_at is None and len(data) > 12 and data[0] & 0xC0 == 0x80 and not 200 <= data[1] <= 204:
            self.first_packet_at = self._arrival()

    def _dropped(self, data: bytes) -> bool:
        """The test seam (see the class docstring): whether to ignore ``data``."""
        if self._drop_until is None:
            if self.first_copy_at is not None or not data or data[0] != TYPE_BEACON:
                return False
            self._drop_until = self._arrival() + (self.drop_after_beacon or 0.0)
        if self._arrival() <= self._drop_until:
            self.dropped += 1
            return True
        return False

    def _on_beacon(self, data: bytes, source: Address, now: float) -> None:
        self.beacon_copies += 1
        self._first_copy()
        super()._on_beacon(data, source, now)

    def _on_events(self, events: list[ConnectionEvent], now: float) -> None:
        for event in events:
            if isinstance(event, Received):
                if isinstance(event.message, SignedAlert):
                    self.alert_copies += 1
                    self._first_copy()
            elif isinstance(event, Connected):
                self.connects += 1
                self.last_connect_at = self._arrival()
        super()._on_events(events, now)

    def _on_alert(self, message: SignedAlert, now: float, *, beacon: bool = False) -> None:
        waiting = len(self._deferred_alerts)
        before = self.alerts_accepted
        super()._on_alert(message, now, beacon=beacon)
        if len(self._deferred_alerts) > waiting:
            self.held_back = True
        if self.alerts_accepted != before and self.via is None:
            self.via = "held" if self.held_back else "beacon" if beacon else "reliable"

    def advance(self, now: float) -> None:
        before = self.alerts_accepted
        super().advance(now)
        if self.accepted_at is None and self.alerts_accepted != before:  # held back until the clock was ready
            self.accepted_at = time.monotonic()

    def copies(self) -> dict[str, Any]:
        """The figures above, for the fleet's result (JSON)."""
        duplicates = None
        if self.duplicates_before is not None:
            duplicates = self.conn.channel.statistics().duplicates - self.duplicates_before
        return {"first_copy": self.first_copy_at, "beacons": self.beacon_copies, "alerts": self.alert_copies,
                "duplicates": duplicates, "held_back": self.held_back, "via": self.via, "gc_s": self.gc_s,
                "connects": self.connects, "last_connect": self.last_connect_at, "seam_dropped": self.dropped}


def udp_drops(text: str) -> dict[tuple[str, int], int]:
    """The kernel's per-socket receive drop counts (``sk_drops``: a full receive buffer, a checksum, a filter) by
    local ``(IPv4 address, port)``, from the text of ``/proc/net/udp``. Lines that do not parse are skipped."""
    drops: dict[tuple[str, int], int] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 13:
            continue
        host, _, port = fields[1].partition(":")
        try:
            address = ".".join(str(b) for b in bytes.fromhex(host)[::-1]) if len(host) == 8 else None
            if address is None:
                continue
            drops[(address, int(port, 16))] = int(fields[12])
        except ValueError:
            continue
    return drops


def read_udp_drops(path: str = "/proc/net/udp") -> dict[tuple[str, int], int] | None:
    """:func:`udp_drops` of this host's table; None where there is none (not Linux)."""
    try:
        return udp_drops(Path(path).read_text())
    except OSError:
        return None


def diagnose(host: FleetHost, index: int) -> dict[str, Any]:
    """Why decoding device ``index`` plays or not: its arbiter, output, broadcasts, and when its next playout and
    timer are due (seconds from now, on its own clock; ``scheduled_in_s``: when the host will run it)."""
    core, clock = host.cores[index], host.clocks[index]
    now = time.monotonic()
    local = clock.local(now)

    def rel(at: float | None) -> float | None:
        return None if at is None else round(at - local, 3)

    broadcasts = {}
    for bid, broadcast in core.broadcasts.items():
        live = broadcast.live
        entry: dict[str, Any] = {"live": live is not None}
        if live is not None:
            stats = live.statistics()
            entry.update(received=stats.received, late=stats.late, played=stats.played, skipped=stats.skipped,
                         next_in_s=rel(live.next_time(core.clock)),
                         buffered_end_in_s=rel(live.buffered_end(core.clock)),
                         group=live.group, ending=live.ending)
        broadcasts[str(bid)] = entry
    output = core.output
    scheduled = host.scheduled_at(index)
    return {
        "current": core.arbiter.current, "state": core.state, "clock_ready": core.clock.ready,
        "primary": None if output.primary is None else [output.primary.source, output.primary.bid],
        "secondary": None if output.secondary is None else [output.secondary.source, output.secondary.bid],
        "frames": output.frames, "groups_wanted": sorted(core.groups()), "groups_joined": sorted(host.groups(index)),
        "next_playout_in_s": rel(core.next_playout()), "next_timeout_in_s": rel(core.next_timeout()),
        "scheduled_in_s": None if scheduled is None else round(scheduled - now, 3),
        "broadcasts": broadcasts,
    }


def build(spec: dict[str, Any]) -> list[tuple[SpeakerCore, SimulatedClock]]:
    rng = random.Random(spec["seed"] + 1)
    server: Address = (spec["host"], spec["port"])
    out: list[tuple[SpeakerCore, SimulatedClock]] = []
    drop_first = set(spec.get("drop_first", ()))  # the test seam of TimedCore.drop_after_beacon
    for i, key in enumerate(device_keys(spec["seed"], spec["count"])):
        clock = SimulatedClock(rng.uniform(-100, 100), rng.uniform(-10, 10))
        decode = i < spec["full"]
        core = TimedCore(
            static_private=key, server_public=bytes.fromhex(spec["server_public"]),
            authority_keys=[bytes.fromhex(spec["authority"])], server_address=server,
            sink=CounterSink(decode=decode), store=MemoryStore(1 << 20), batch=0.05, count_only=not decode,
            log_limit=2_000 if decode else 0, rng=random.Random(rng.random()),
        )
        if i in drop_first:
            core.drop_after_beacon = float(spec.get("drop_window_s", DROP_WINDOW_S))
        out.append((core, clock))
    return out


def main(spec_path: str, result_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    raise_open_file_limit(spec["count"])
    GcClock.install()
    devices = build(spec)
    cores = [core for core, _ in devices]
    full = spec["full"]
    host = FleetHost(devices, (spec["host"], spec["port"]), bind_host="127.0.0.1", start_rate=spec["start_rate"],
                     priority=full, timestamps=True)
    for core in cores:
        if isinstance(core, TimedCore):
            core.host = host

    def playout(core: SpeakerCore) -> float | None:
        starts = [e.true_at for e in core.log.entries if e.true_at is not None]
        return min(starts) if starts else None

    def done() -> bool:
        return (all(isinstance(c, TimedCore) and c.accepted_at is not None for c in cores)
                and all(playout(c) is not None for c in cores[:full]))

    diagnosis: dict[int, dict[str, Any]] = {}  # decoding devices that had not played, as last seen running
    addresses: list[tuple[str, int]] = []  # each device's local address, for its socket's drops
    drops: dict[tuple[str, int], int] | None = None  # the kernel's drop counts when every device held the alert
    status_path = Path(spec["status"])
    last_status = 0.0

    def write_status() -> None:
        """How many devices have a session and a ready clock estimate, for the bench to wait on."""
        started = cores[: host.started]
        status: dict[str, Any] = {"started": host.started, "connected": sum(c.conn.connected for c in started),
                                  "clocks": sum(c.clock.ready for c in started)}
        unready = [c for c in started if not c.clock.ready]
        if unready:  # why: what their clock estimators refused, answers too late, sessions down
            counts: Counter[str] = Counter()
            for c in unready:
                counts.update(dataclasses.asdict(c.clock.estimator.statistics()))
            status["unready"] = {"count": len(unready), "estimator": dict(counts),
                                 "stale_answers": sum(c.probe.stale for c in unready),
                                 "connected": sum(c.conn.connected for c in unready)}
        tmp = status_path.with_name(status_path.name + ".tmp")
        tmp.write_text(json.dumps(status))
        tmp.replace(status_path)

    async def body() -> None:
        print("ready", flush=True)
        with anyio.move_on_after(spec["limit"]) as scope:
            async def tick(_: FleetHost) -> None:
                nonlocal last_status, drops
                if time.monotonic() - last_status >= STATUS_EVERY_S:
                    last_status = time.monotonic()
                    write_status()
                    diagnosis.clear()
                    diagnosis.update((i, diagnose(host, i)) for i in range(full) if playout(cores[i]) is None)
                if done():
                    drops = read_udp_drops()
                    addresses.extend((str(a[0]), int(a[1])) for a in (s.getsockname() for s in host.socks))
                    scope.cancel()
            await host.run(tick=0.05, on_tick=tick)
        connected = sum(core.statistics().connected for core in cores[: host.started])
        result = {
            "started": host.started,
            "connected": connected,
            "accepted": [getattr(c, "accepted_at", None) for c in cores],
            "arrival": [getattr(c, "arrival_at", None) for c in cores],
            "own": [getattr(c, "own_s", None) for c in cores],
            "timestamps": host.timestamps,
            "refused": dict(sum((Counter(c.alerts_refused) for c in cores), Counter())),
            "offset_change_ns": host.offset_change_ns,
            "first_packet": [getattr(c, "first_packet_at", None) for c in cores],
            "playout": [playout(c) for c in cores[:full]],
            "io": dataclasses.asdict(host.stats),
            "decoding": [{**{k: v for k, v in dataclasses.asdict(c.statistics()).items() if k in DECODING_FIGURES},
                          "log": dict(Counter(e.kind for e in c.log.entries))} for c in cores[:full]],
            "diagnosis": [diagnosis[i] for i in range(full) if playout(cores[i]) is None and i in diagnosis],
            "copies": [c.copies() if isinstance(c, TimedCore) else None for c in cores],
            "addresses": addresses or None,
            "drops": None if drops is None or not addresses else [drops.get(a) for a in addresses],
        }
        Path(result_path).write_text(json.dumps(result))

    run(body, spec.get("backend", "asyncio"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
