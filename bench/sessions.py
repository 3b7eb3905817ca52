"""`loa bench sessions`: server memory per device session and handshake rate, through the real handshake.

Devices here are the protocol's own :class:`~loa.protocol.connection.DeviceConnection`, driven in memory against a
real :class:`~loa.streamer.core.StreamerCore` (sans-I/O on both sides, no sockets): each device initiates the
Noise IK handshake (PROTOCOL.md section 3), sends ``hello``, and the core's answers (handshake response, then
``config``/``volume``) are handed back until both sides are quiet. Each device has its own source address, and
the devices start ``1 / HANDSHAKE_SPACING`` apart on the virtual clock, below the rate at which the server turns
on cookie mode (``HANDSHAKES_PER_SECOND_BEFORE_COOKIE``), so every session takes one round trip as on a quiet
network. Every side's timers run every ``TICK`` (10) virtual seconds meanwhile, as they would on a network, so
that the devices already up keep their sessions alive (keepalives, PROTOCOL.md section 3.8.2) while the others
come up: a device whose timers first ran more than ``DEAD_AFTER`` (45 s) after its handshake would find the
server silent and handshake again.

Memory (``bytes_per_session_N``): :mod:`tracemalloc` traces the Python heap while N sessions are established
and settle (half a virtual second of timers on every side, so that delayed acknowledgements flow and nothing
waits for one: the steady state of an idle session); then every device object is dropped and the garbage
collected, so what is still traced is what the server holds for those N sessions (session keys, replay windows,
reliable channels, runtime records, indexes), divided by N.
The registry entries (``add_device``) were made before tracing started: ``registry_bytes_per_device_N`` is
measured the same way, separately. ``rss_bytes_per_session_N`` is the process's resident-set growth over the same
sessions without tracing (a cross-check that includes allocator overhead; page-granular and noisy at small N).
The goal is 2 KiB per session: ``goal_ratio_N`` = 2048 / ``bytes_per_session_N`` (>= 1 meets it).

Handshake rate: the thread CPU time spent inside the core on each device's handshake initiation (reading the
148-byte init, answering with the 96-byte response), as ``handshakes_per_s`` (handshakes per CPU-second).
``setup_per_s`` adds everything else the core does to bring that session up (the device's first transport
datagram with ``hello``, the state messages, their acknowledgements). Ceiling (``ceiling_handshakes_per_s``): the
responder's public-key and AEAD work of one Noise IK handshake computed by ``cryptography`` alone in a tight loop
(one X25519 key generation, four X25519 exchanges - es, ss, ee, se - and three ChaCha20-Poly1305 operations), with
no hashing, parsing or bookkeeping; ``ratio_to_ceiling`` = ours / ceiling (1.0 would be as fast as the bare
primitives).
"""

from __future__ import annotations

import gc
import os
import random
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import click
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from loa.bench._report import emit, environment
from loa.cli import UserError
from loa.protocol.connection import DeviceConnection
from loa.protocol.control import Hello
from loa.protocol.noise import x25519_public
from loa.protocol.session import HANDSHAKES_PER_SECOND_BEFORE_COOKIE
from loa.streamer.core import StreamerCore
from loa.streamer.zones import Zone, ZoneTree

__all__ = ["GOAL_BYTES", "InMemoryDevices", "handshake_ceiling_s", "measure_handshakes", "measure_memory"]

ZONE = "B1"
EPOCH_NS = 1_750_000_000 * 1_000_000_000
GOAL_BYTES = 2048
HANDSHAKE_SPACING = 1.0 / (HANDSHAKES_PER_SECOND_BEFORE_COOKIE // 2)  # virtual seconds between two devices
MAX_ROUNDS = 8  # exchanges per device before giving up on quiet
TICK = 10.0  # virtual seconds between two runs of every side's timers while the devices come up
Address = tuple[str, int]


def new_core(zones: Iterable[str] = (ZONE,), *, seed: int = 1) -> StreamerCore:
    """A streamer core with the given zones and a fixed static key."""
    return StreamerCore(static_private=random.Random(seed).randbytes(32),
                        zones=ZoneTree([Zone(code, code) for code in zones]), epoch_ns=EPOCH_NS)


@dataclass
class InMemoryDevices:
    """Devices with real sessions to a core, driven in memory: datagrams pass by function call.

    ``addresses[i]`` is the source address the core sees for device ``i`` (so a fan-out to the core's
    destinations sends to those addresses). Raises RuntimeError if a device does not come online.
    """

    core: StreamerCore
    devices: dict[Address, DeviceConnection]
    handshake_ns: int = 0  # thread CPU inside the core on handshake inits
    setup_ns: int = 0  # thread CPU inside the core on everything else of the setup

    @classmethod
    def establish(cls, core: StreamerCore, addresses: list[Address], *, zone: str | list[str] = ZONE, seed: int = 1,
                  start: float = 1.0, enrol: bool = True, spacing: float = HANDSHAKE_SPACING,
                  timed: bool = True) -> InMemoryDevices:
        """Bring up one device per address (enrolled first in ``zone``, one zone or one per device, unless
        ``enrol`` is false because :func:`device_keys` of the same seed were enrolled already), ``spacing``
        virtual seconds apart from ``start`` on; ``timed`` reads the thread's CPU clock around the core's work."""
        rng = random.Random(seed + 7)
        zones = [zone] * len(addresses) if isinstance(zone, str) else zone
        out = cls(core, {})
        now = start
        keys = device_keys(seed, len(addresses))
        ticked = start
        for i, (address, device_zone, key) in enumerate(zip(addresses, zones, keys, strict=True)):
            if now - ticked >= TICK:
                out.tick(now)
                ticked = now
            if enrol:
                core.add_device(x25519_public(key), device_zone, now, name=f"bench-{i:05d}")
            device = DeviceConnection(static_private=key, server_public=core.public_key,
                                      random_bytes=rng.randbytes, rng=rng.random)
            out.devices[address] = device
            device.connect(now)
            device.send(Hello(kind="speaker", model="bench", fw="0", caps=("amp",), token=None), now)
            out._handshake(device, address, now, timed)
            now += spacing
        online = core.statistics().devices_online
        if online < len(addresses):
            raise RuntimeError(f"only {online} of {len(addresses)} in-memory devices came online")
        return out

    def _handshake(self, device: DeviceConnection, address: Address, now: float, timed: bool) -> None:
        core, clock = self.core, time.thread_time_ns if timed else _no_clock
        first = True
        for _ in range(MAX_ROUNDS):
            outgoing = device.datagrams_to_send()
            start = clock()
            for data in outgoing:
                core.receive_datagram(data, address, now)
            answers = core.datagrams_to_send()
            spent = clock() - start
            if first:
                self.handshake_ns += spent
                first = False
            else:
                self.setup_ns += spent
            for data, _to in answers:
                device.receive_datagram(data, now)
            if not outgoing and not answers:
                return

    def settle(self, now: float, *, steps: int = 5, step: float = 0.1) -> float:
        """Let delayed acknowledgements and answers flow (every side's timers run ``steps`` times, ``step``
        virtual seconds apart), so that what the server holds afterwards is its steady state: no message still
        waits for its acknowledgement. Returns the virtual time reached."""
        for _ in range(steps):
            now += step
            self.tick(now)
        return now

    def tick(self, now: float) -> None:
        """Run every side's timers at ``now`` (retransmissions, delayed acknowledgements, keepalives) and let
        what they send flow until quiet."""
        self.core.handle_timeout(now)
        for address, device in self.devices.items():
            device.handle_timeout(now)
            for data in device.datagrams_to_send():
                self.core.receive_datagram(data, address, now)
        self.pump(now)

    def pump(self, now: float, rounds: int = MAX_ROUNDS) -> int:
        """Hand the core's queued datagrams to their devices and the answers back until quiet; datagrams moved."""
        moved = 0
        for _ in range(rounds):
            answers = self.core.datagrams_to_send()
            back = 0
            for data, address in answers:
                device = self.devices.get(address)
                if device is not None:
                    device.receive_datagram(data, now)
            for address, device in self.devices.items():
                for data in device.datagrams_to_send():
                    self.core.receive_datagram(data, address, now)
                    back += 1
            moved += len(answers) + back
            if not answers and not back:
                break
        return moved


def _no_clock() -> int:
    return 0


def device_keys(seed: int, count: int) -> list[bytes]:
    """The static private keys of the in-memory devices of ``seed``."""
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(count)]


def _addresses(count: int) -> list[Address]:
    return [(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 40000 + i % 1000) for i in range(count)]


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the peak is the best there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_memory(count: int, *, seed: int = 1) -> dict[str, float]:
    """Bytes the server holds per established session (tracemalloc) and per registry entry; RSS cross-check."""
    out: dict[str, float] = {}
    addresses = _addresses(count)
    # tracemalloc: registry entries first, then sessions, each on its own baseline.
    core = new_core(seed=seed)
    publics = [x25519_public(key) for key in device_keys(seed, count)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, public in enumerate(publics):
            core.add_device(public, ZONE, 0.0, name=f"bench-{i:05d}")
        gc.collect()
        registry = tracemalloc.get_traced_memory()[0] - before
        before = tracemalloc.get_traced_memory()[0]
        fleet = InMemoryDevices.establish(core, addresses, seed=seed, enrol=False)
        fleet.settle(1.0 + count * HANDSHAKE_SPACING)
        fleet.devices.clear()
        del fleet
        gc.collect()
        sessions = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    per_session = sessions / count
    out[f"bytes_per_session_{count}"] = round(per_session, 1)
    out[f"registry_bytes_per_device_{count}"] = round(registry / count, 1)
    out[f"goal_ratio_{count}"] = round(GOAL_BYTES / max(per_session, 1.0), 3)
    del core
    gc.collect()
    # RSS, untraced: a fresh core; the devices are dropped before the second reading.
    core = new_core(seed=seed + 1)
    gc.collect()
    rss_before = _rss_bytes()
    fleet = InMemoryDevices.establish(core, addresses, seed=seed + 1)
    fleet.settle(1.0 + count * HANDSHAKE_SPACING)
    fleet.devices.clear()
    del fleet
    gc.collect()
    out[f"rss_bytes_per_session_{count}"] = round((_rss_bytes() - rss_before) / count, 1)
    return out


def measure_handshakes(count: int, *, seed: int = 1) -> tuple[float, float]:
    """(handshakes per CPU-second, session set-ups per CPU-second) inside the core over ``count`` devices."""
    core = new_core(seed=seed)
    fleet = InMemoryDevices.establish(core, _addresses(count), seed=seed)
    handshake_s = max(fleet.handshake_ns, 1) / 1e9
    return count / handshake_s, count / (handshake_s + fleet.setup_ns / 1e9)


def handshake_ceiling_s(rounds: int) -> float:
    """Thread CPU seconds for one responder's primitives of a Noise IK handshake, by ``cryptography`` alone."""
    initiator_static = X25519PrivateKey.generate().public_key().public_bytes_raw()
    initiator_ephemeral = X25519PrivateKey.generate().public_key().public_bytes_raw()
    static = X25519PrivateKey.generate()
    aead = ChaCha20Poly1305(bytes(32))
    nonce = bytes(12)
    sealed_static = aead.encrypt(nonce, bytes(32), b"h" * 32)
    sealed_payload = aead.encrypt(nonce, bytes(12), b"h" * 32)
    start = time.thread_time_ns()
    for _ in range(rounds):
        remote_e = X25519PublicKey.from_public_bytes(initiator_ephemeral)
        static.exchange(remote_e)  # es
        aead.decrypt(nonce, sealed_static, b"h" * 32)  # the initiator's static key
        remote_s = X25519PublicKey.from_public_bytes(initiator_static)
        static.exchange(remote_s)  # ss
        aead.decrypt(nonce, sealed_payload, b"h" * 32)  # the initiator's payload
        ephemeral = X25519PrivateKey.generate()
        ephemeral.public_key().public_bytes_raw()
        ephemeral.exchange(remote_e)  # ee
        ephemeral.exchange(remote_s)  # se
        aead.encrypt(nonce, b"", b"h" * 32)  # the responder's empty payload
    return (time.thread_time_ns() - start) / 1e9 / rounds


@click.command("sessions")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
@click.option("--devices", default="1000,10000", show_default=True, help="Comma-separated session counts.")
@click.option("--repeat", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Handshake-rate measurements; the median and min-max are reported.")
@click.option("--seed", type=int, default=1, show_default=True)
def sessions(*, as_json: bool, devices: str, repeat: int, seed: int) -> None:
    """Server memory per device session and handshakes per second, beside the bare crypto's ceiling."""
    try:
        counts = sorted({int(part) for part in devices.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--devices must be comma-separated integers, not {devices!r}") from None
    if not counts or counts[0] < 1 or counts[-1] > 100_000:
        raise UserError("--devices must name counts between 1 and 100000")
    metrics: dict[str, Any] = {"goal_bytes": GOAL_BYTES, "repeat": repeat}
    for count in counts:
        began = time.perf_counter()
        metrics.update(measure_memory(count, seed=seed))
        rates, setups, ceilings = [], [], []
        for turn in range(repeat):
            rate, setup = measure_handshakes(min(count, 2000), seed=seed + turn)
            rates.append(rate)
            setups.append(setup)
            ceilings.append(1.0 / handshake_ceiling_s(500))
        ratios = [r / c for r, c in zip(rates, ceilings, strict=True)]
        metrics[f"handshakes_per_s_{count}"] = round(statistics.median(rates), 1)
        metrics[f"handshakes_per_s_min_{count}"] = round(min(rates), 1)
        metrics[f"handshakes_per_s_max_{count}"] = round(max(rates), 1)
        metrics[f"setup_per_s_{count}"] = round(statistics.median(setups), 1)
        metrics[f"ceiling_handshakes_per_s_{count}"] = round(statistics.median(ceilings), 1)
        metrics[f"ratio_to_ceiling_{count}"] = round(statistics.median(ratios), 4)
        print(f"sessions {count}: {metrics[f'bytes_per_session_{count}']:.0f} B/session, "
              f"{metrics[f'handshakes_per_s_{count}']:.0f} handshakes/s "
              f"({time.perf_counter() - began:.1f} s)", file=sys.stderr)
    top = counts[-1]
    for key in ("bytes_per_session", "goal_ratio", "handshakes_per_s", "ceiling_handshakes_per_s",
                "ratio_to_ceiling"):
        metrics[key] = metrics[f"{key}_{top}"]
    env = environment(method="tracemalloc over N sessions established in memory through the real handshake",
                      cookie_threshold_per_s=HANDSHAKES_PER_SECOND_BEFORE_COOKIE, seed=seed)
    emit("sessions", metrics, as_json=as_json, env=env)
