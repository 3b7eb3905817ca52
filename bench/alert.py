"""`loa bench alert`: from an alert accepted by the streamer to the last of N devices holding it, and playing it.

For each N in ``--devices`` (default 1,000 and 10,000) the streamer service (:class:`loa.streamer.StreamerService`
on anyio, asyncio with uvloop) runs in this process on a loopback UDP socket, and a fleet of N reference devices
(:class:`loa.devices.FleetHost`, one socket, session and alert verification each; the first ``--full`` decode
and play, the rest only count packets, as ``loa fleet --full K``) runs in a child process
(:mod:`loa.bench._alert_fleet`), so that the two sides do not share an event loop. Devices are brought up at
``--start-rate`` per second; once every one has a session and a ready clock estimate (it cannot check an alert's
times without one), and ``--settle`` seconds passed, the fleet is lowered in scheduling priority (nice 10: see
below), the bench signs an emergency alert for their zone and hands it to the service. ``t0`` is read just before
(``time.monotonic``: on Linux one clock for every process of the host, so the fleet's stamps share its timeline).

What "holding it" means, per device: the kernel's receive timestamp (``SO_TIMESTAMPNS``, wall clock, moved onto the
monotonic clock with an offset read in bracketed pairs and re-read every tick) of the datagram that delivered the
alert the device accepted, plus the CPU time (``time.thread_time``) the device itself spent on that datagram:
decryption, decoding, its own Ed25519 verification (no cache is shared between devices), its zone, expiry and
replay checks, and queueing its acknowledgement. One process plays the part of many devices one after the other;
a device with a processor of its own would have started on the datagram when it arrived, so the time the fleet
process took to reach it is not counted, and the fleet runs below the streamer's priority so that it does not
take the processor from the streamer in the middle of the fan-out. An alert accepted later (its first copy was
held back for want of a clock estimate) counts from the moment it was accepted, on the fleet's own clock.

Metrics at each N (suffix ``_N``): ``p50_ms``, ``p99_ms``, ``max_ms`` (alert held, as above); ``arrival_first_ms``
and ``arrival_last_ms`` (kernel arrival of the first and last alert datagram: the streamer's signing and sealing,
then its sending); ``own_p50_ms``/``own_p99_ms`` (the devices' own processing); ``alert_send_us_per_device``
(``arrival_last_ms`` per device: the streamer's whole path from the call to the last alert in the kernel);
``trigger_cpu_us_per_device`` (the streamer's CPU for the whole trigger: alert, ``amp``, stream and ``join`` to
every device, with their system calls); ``packet_p99_ms`` (first audio packet received);
``playout_p50_ms``/``playout_p99_ms`` (first frame played by the decoding devices; it includes the stream's
playout delay, ``delay_ms`` of the join, 500 ms by default, and the pre-roll, 0 here); ``held_fraction``
(devices that accepted the alert within the time limit); ``bringup_s``; ``floor_ms``: the peer measured in the
same run, the wall time of the C ``sendmmsg`` ceiling (``bench/ceiling``, compiled at run time) sending one
256-byte datagram to each of N loopback destinations (median of 5); ``ratio_to_floor`` = ``p99_ms / floor_ms``;
``clock_offset_change_us`` (how far the wall clock moved against the monotonic one during the run);
``stream_destinations`` (the alert stream's fan-out just after the trigger: N sessions, or one group with
``--multicast``; each of the stream's 50 packets a second goes to every one). Top level:
those figures at the largest N that ran.

The slowest devices (the :data:`SLOW_TOP` largest held times, every one above :data:`SLOW_FACTOR` times p99, every
one that did not hold the alert) each get a diagnosis line on stderr, ``alert N: a slow device (CAUSE): {...}``
(:func:`diagnose_slow`): when the first copy of the alert reached it (its beacon or its reliable ``alert``, kernel
time) and which copy it accepted, how many copies it handled, whether it held the alert back for want of a clock
estimate, its sessions, its socket's drops in the kernel during the alert (``/proc/net/udp``, read before the
trigger and when every device holds the alert), and what the streamer did: the retransmissions on its reliable
channel in the alert's window and the RTO the alert went out with; :func:`classify_slow` names the cause. Metrics:
``slow_devices_N`` (lines), ``slow_cause_N`` (how many of each cause), ``server_resent_N`` (retransmissions on
every device's channel from the trigger to the end), ``socket_drops_N`` (the fleet sockets' kernel drops in that
window, None where not known), ``timer_lag_max_s_N`` (the fleet's timers, as in the stderr line) and
``unplayed_N`` (frames the decoding devices left unplayed).

``--multicast``: the bench's zone gets an IP multicast group (PROTOCOL.md section 5.7; a 239.255.0.0/16 group, RFC
2365, with a port free on this host, :func:`free_group`) and the streamer's socket is set up to send to groups
(``open_udp_socket(..., multicast=True)``, bound to 127.0.0.1 so that groups go out of ``lo``). Every device says
``multicast`` in ``hello``, so the alert's stream goes once per packet to the group instead of once per device;
the decoding devices join the group and play from it; the counting ones do not join (see
:class:`loa.devices.FleetHost`), so ``packet_p99_ms`` is then over the decoding devices only. The alert itself and
the ``join`` still go to each device over its session. ``env.multicast`` says which way the run went. Without a
group, N devices cost the streamer N datagrams per 20 ms packet (500,000 per second at 10,000 devices).

If N devices cannot all connect within the bring-up limit, or fewer than 99 % have a clock estimate 60 s
after that, the bench reports what it measured at the smaller counts and names the count that failed in
``env.failed``. Devices still without an estimate then (``clocks_ready_fraction``) hold the alert back until they
have one, and count from when they accepted it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import click
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from loa.bench._alert_fleet import device_keys, read_udp_drops
from loa.bench._report import emit, environment, read_status
from loa.bench.fanout import Receivers, compile_ceiling
from loa.cli import UserError
from loa.devices.fleet import FleetError, raise_open_file_limit
from loa.protocol.alert import key_id
from loa.protocol.noise import x25519_public
from loa.streamer.core import StreamerCore
from loa.streamer.fanout import MAX_BATCH
from loa.streamer.service import StreamerService, epoch_for, open_udp_socket
from loa.streamer.sources import ToneSource
from loa.streamer.zones import Zone, ZoneTree

ZONE = "X1"
FLEET_NICE = 10  # the fleet's scheduling priority below the streamer's (see the module docstring)
CLOCK_LIMIT_S = 60.0  # after bring-up, for every device's clock estimate to be ready
CLOCKS_ENOUGH = 0.99  # at the limit, the alert goes out if this share has one (the rest: see the docstring)
FLOOR_DATAGRAM = 256  # bytes: about the size of the transport datagram carrying a signed alert
SLOW_TOP = 5  # the slowest devices diagnosed at each N ...
SLOW_FACTOR = 4.0  # ... and every device that held the alert later than this many times p99
SLOW_PRINTED = 20  # diagnosis lines printed at most (the metrics count them all)
REHANDSHAKE_WINDOW_MS = 1000.0  # a session that came up this long before the alert, or after it, is a rehandshake
CAUSES = ("not_held", "held_back", "rehandshake", "retransmitted", "fleet_gc", "own_cpu", "sent_late")


class BringUpError(Exception):
    """The fleet did not come up in time."""


def free_group(rng: random.Random | None = None) -> str:
    """``"239.255.x.y:port"``: an administratively scoped IPv4 group (RFC 2365) picked at random, with a UDP port
    no socket of this host holds on that address now (the kernel's choice for a bind to port 0). OSError if the
    host has no IPv4."""
    rng = rng or random.SystemRandom()
    host = f"239.255.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return f"{host}:{probe.getsockname()[1]}"


def classify_slow(device: Mapping[str, Any]) -> str:
    """The cause of one slow device's delay, from its diagnosis (times in ms from the trigger; see
    :func:`diagnose_slow`), the first that fits of :data:`CAUSES`:

    ``not_held``: it never accepted the alert; ``held_back``: a copy came while it had no clock estimate (or no
    zone yet), and it accepted the alert later, on a timer; ``rehandshake``: its session came up
    within :data:`REHANDSHAKE_WINDOW_MS` before the trigger or after it; ``retransmitted``: it accepted a reliable
    copy (not the beacon, which is sent once), the server sent it something again in the alert's window, and that
    copy arrived after half the RTO the alert was sent with (the first copies were lost: a full socket buffer, or
    the test seam); ``fleet_gc``: its own processing was
    the larger part and at least half of that was the fleet process's garbage collector (a cost of one process
    holding every device's heap); ``own_cpu``: its own processing was the larger part; ``sent_late``: one copy,
    on time as sent, arrived late (its place in the streamer's fan-out, the kernel)."""
    held = device.get("held_ms")
    if held is None:
        return "not_held"
    if device.get("held_back"):
        return "held_back"
    last_connect = device.get("last_connect_ms")
    if last_connect is not None and last_connect >= -REHANDSHAKE_WINDOW_MS:
        return "rehandshake"
    arrival = device.get("arrival_ms") or 0.0
    rto = device.get("server_rto_ms")
    if (device.get("via") == "reliable" and (device.get("server_resent") or 0) > 0 and rto is not None
            and arrival >= 0.5 * rto):
        return "retransmitted"
    own = device.get("own_ms") or 0.0
    if own >= arrival:
        return "fleet_gc" if (device.get("gc_ms") or 0.0) >= 0.5 * own else "own_cpu"
    return "sent_late"


def slow_indexes(held: Sequence[float | None], *, top: int = SLOW_TOP, factor: float = SLOW_FACTOR) -> list[int]:
    """The devices to diagnose, slowest first: the ``top`` largest held times, every one above ``factor`` times
    their p99, and every device that did not hold the alert (``None``, last)."""
    timed = sorted((i for i, h in enumerate(held) if h is not None), key=lambda i: -(held[i] or 0.0))
    if not timed:
        return [i for i, h in enumerate(held) if h is None]
    p99 = float(np.percentile(np.array([held[i] for i in timed]), 99))
    chosen = [i for n, i in enumerate(timed) if n < top or (held[i] or 0.0) > factor * p99]
    return chosen + [i for i, h in enumerate(held) if h is None]


def _ms(at: float | None, t0: float) -> float | None:
    return None if at is None else round((at - t0) * 1000, 3)


def diagnose_slow(index: int, *, t0: float, result: Mapping[str, Any], server: Mapping[str, Any]) -> dict[str, Any]:
    """One slow device's diagnosis line: its times in ms from the trigger (``held_ms``; ``arrival_ms``, kernel
    arrival of the copy it accepted; ``first_copy_ms``, of the first copy of any kind it handled), its own CPU on
    that copy (``own_ms``, of which ``gc_ms`` in the fleet's collector), the copies it handled by the time every
    device held the alert (``beacons``, ``alerts``: reliable ones its channel delivered, ``duplicates``: copies of
    messages already delivered, as a retransmission that crossed an acknowledgement; the fleet process handles a
    device's datagrams in turn, so a copy still in its socket is not counted), which it accepted (``via``),
    whether it held the alert back (``held_back``), its sessions (``connects``, ``last_connect_ms``), its socket's
    drops in the kernel during the alert (``socket_drops``, None where unknown), what the streamer did
    (``server_resent``: retransmissions on the device's channel from the trigger to the end, the alert, ``amp`` and
    ``join`` among them; ``server_rto_ms`` the RTO the alert was sent with; ``alert_acked``), and the
    :func:`classify_slow` cause."""
    copies = (result.get("copies") or [None] * (index + 1))[index] or {}
    own = result["own"][index]
    drops_after = (result.get("drops") or [None] * (index + 1))[index]
    drops_before = server["drops_before"][index]
    entry: dict[str, Any] = {
        "device": index,
        "held_ms": _ms(result["accepted"][index], t0),
        "arrival_ms": _ms(result["arrival"][index], t0),
        "first_copy_ms": _ms(copies.get("first_copy"), t0),
        "own_ms": None if own is None else round(own * 1000, 3),
        "gc_ms": round(copies.get("gc_s", 0.0) * 1000, 3),
        "beacons": copies.get("beacons"), "alerts": copies.get("alerts"), "duplicates": copies.get("duplicates"),
        "via": copies.get("via"), "held_back": copies.get("held_back"),
        "connects": copies.get("connects"), "last_connect_ms": _ms(copies.get("last_connect"), t0),
        "socket_drops": None if drops_after is None or drops_before is None else drops_after - drops_before,
        "seam_dropped": copies.get("seam_dropped") or None,
        "server_resent": server["resent"][index], "server_rto_ms": server["rto_ms"][index],
        "alert_acked": server["acked"][index],
    }
    entry["cause"] = classify_slow(entry)
    return entry


def _server_channels(core: StreamerCore, publics: Sequence[bytes]) -> list[Any]:
    return [core.sessions.conn.channel(public) for public in publics]


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.array(values), q)), 3) if values else None


async def _run_count(count: int, *, full: int, start_rate: float, settle: float, seed: int,
                     workdir: str, multicast: bool = False, drop_first: Sequence[int] = ()) -> dict[str, Any]:
    """One fleet of ``count``: its metrics (module docstring). ``drop_first``: devices that ignore what arrives
    in the 50 ms after their first beacon (a test seam: their first copies of the alert are lost)."""
    rng_seed = seed * 1_000_003 + count
    authority = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    core = StreamerCore(static_private=os.urandom(32), zones=ZoneTree([Zone(ZONE, "bench")]),
                        authorities={key_id(authority.public_key()): authority.public_key()},
                        epoch_ns=epoch_for(anyio.current_time()), send_clock=anyio.current_time,
                        groups={ZONE: free_group()} if multicast else None)
    keys = device_keys(rng_seed, count)
    now = anyio.current_time()
    publics = [x25519_public(key) for key in keys]
    for i, public in enumerate(publics):
        core.add_device(public, ZONE, now, name=f"bench-{i:05d}")
    sock = open_udp_socket("127.0.0.1", 0, multicast=multicast)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    service = StreamerService(core, sock)
    bringup_limit = 3 * count / start_rate + 30.0  # thrice the start schedule: retries, a loaded host
    spec = {"host": "127.0.0.1", "port": 0, "server_public": core.public_key.hex(),
            "authority": authority.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex(),
            "seed": rng_seed, "count": count, "full": min(full, count), "start_rate": start_rate,
            "limit": bringup_limit + CLOCK_LIMIT_S + settle + 30.0, "backend": "asyncio",
            "drop_first": list(drop_first)}
    spec_path = Path(workdir) / f"spec-{count}.json"
    result_path = Path(workdir) / f"result-{count}.json"
    status_path = Path(workdir) / f"status-{count}.json"
    spec["status"] = str(status_path)
    async with anyio.create_task_group() as tg:
        await tg.start(service.serve)
        spec["port"] = service.address[1]
        spec_path.write_text(json.dumps(spec))
        log_path = Path(workdir) / f"fleet-{count}.log"
        with log_path.open("wb") as log:
            child = subprocess.Popen([sys.executable, "-m", "loa.bench._alert_fleet", str(spec_path),
                                      str(result_path)], stdout=subprocess.DEVNULL, stderr=log)
        try:
            began = time.monotonic()
            while core.statistics().devices_online < count:
                if child.poll() is not None or time.monotonic() - began > bringup_limit:
                    raise BringUpError(f"{core.statistics().devices_online} of {count} devices connected within "
                                       f"{time.monotonic() - began:.0f} s")
                await anyio.sleep(0.1)
            bringup = time.monotonic() - began
            print(f"alert {count}: {count} sessions in {bringup:.1f} s", file=sys.stderr)
            ready = 0
            while ready < count:  # every device's clock estimate ready: it can check an alert's times
                if child.poll() is not None or time.monotonic() - began > bringup_limit + CLOCK_LIMIT_S:
                    if child.poll() is None and ready >= CLOCKS_ENOUGH * count:
                        break  # the others hold the alert back until their estimate is ready: counted so
                    raise BringUpError(f"{ready} of {count} devices had a clock estimate within "
                                       f"{time.monotonic() - began:.0f} s")
                await anyio.sleep(0.2)
                ready = read_status(status_path).get("clocks", 0)
            clocks = time.monotonic() - began
            print(f"alert {count}: {count} clocks ready at {clocks:.1f} s", file=sys.stderr)
            await anyio.sleep(settle)
            # From here on the fleet runs below the streamer's priority: its stamps make its own delays harmless,
            # and it must not take the processor from the streamer in the middle of the fan-out.
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, child.pid, FLEET_NICE)
            # for the slow devices' diagnosis: each device's socket drops and server channel, as the alert goes out
            drops_before = read_udp_drops()
            addresses = [core.sessions.online_address(public) for public in publics]
            channels = _server_channels(core, publics)
            resent_before = [channel.statistics().retransmitted for channel in channels]
            rto_ms = [round(channel.rto * 1000, 1) for channel in channels]
            cpu0 = time.thread_time()
            t0 = time.monotonic()
            bid = service.trigger_alert(ToneSource(880.0, seconds=3.0), signing_key=authority, zones=[ZONE],
                                        text="bench")
            trigger_cpu = time.thread_time() - cpu0
            fanout = len(core.destinations(bid))
            while child.poll() is None:
                await anyio.sleep(0.1)
            resent = [channel.statistics().retransmitted - before for channel, before in zip(channels, resent_before,
                                                                                           strict=True)]
            acked = []
            for public, channel in zip(publics, channels, strict=True):
                runtime = core.sessions.get(public)
                msg_id = None if runtime is None or runtime.sent is None else runtime.sent.get(("alert", bid))
                acked.append(None if msg_id is None else channel.is_acked(msg_id))
        finally:
            if child.poll() is None:
                child.terminate()
            while child.poll() is None:
                await anyio.sleep(0.05)
            errors = log_path.read_text(errors="replace")
            service.stop()
    sock.close()
    if not result_path.exists():
        raise BringUpError(f"the fleet process ended without a result: {errors.strip()[-300:]}")
    result = json.loads(result_path.read_text())
    io = result["io"]
    decoding = result["decoding"]
    print(f"alert {count}: the stream went to {fanout} destination(s); the fleet received {io['received']} "
          f"datagrams, {io['group_received']} of them on a multicast group; the {len(decoding)} decoding devices "
          f"received {sum(d['received'] for d in decoding)} media packets ({sum(d['late'] for d in decoding)} late) "
          f"and logged {sum(sum(d['log'].values()) for d in decoding)} frames "
          f"({sum(d.get('unplayed', 0) for d in decoding)} left unplayed when their stream ended); "
          f"the fleet's timers ran up to "
          f"{io.get('timer_lag_max_s', 0):.3f} s late (the decoding devices' "
          f"{io.get('priority_timer_lag_max_s', 0):.3f} s)",
          file=sys.stderr)
    for device in result.get("diagnosis", [])[:3]:
        print(f"alert {count}: a decoding device that did not play: {json.dumps(device)}", file=sys.stderr)
    held_by_device = [None if t is None else (t - t0) * 1000 for t in result["accepted"]]
    if drops_before is not None:  # by the addresses the server saw, which the fleet's sockets are bound to
        drops_by_device = [None if a is None else drops_before.get((str(a[0]), int(a[1]))) for a in addresses]
    else:
        drops_by_device = [None] * count
    server = {"drops_before": drops_by_device, "resent": resent, "rto_ms": rto_ms, "acked": acked}
    slow = [diagnose_slow(i, t0=t0, result=result, server=server) for i in slow_indexes(held_by_device)]
    for entry in slow[:SLOW_PRINTED]:
        print(f"alert {count}: a slow device ({entry['cause']}): {json.dumps(entry)}", file=sys.stderr)
    causes = Counter(entry["cause"] for entry in slow)
    after = result.get("drops")
    socket_drops = None
    if after is not None and drops_before is not None:
        socket_drops = sum(a - b for a, b in zip(after, drops_by_device, strict=True)
                           if a is not None and b is not None)
    held = [h for h in held_by_device if h is not None]
    arrived = [(t - t0) * 1000 for t in result["arrival"] if t is not None]
    own = [t * 1000 for t in result["own"] if t is not None]
    packets = [(t - t0) * 1000 for t in result["first_packet"] if t is not None]
    played = [(t - t0) * 1000 for t in result["playout"] if t is not None]
    floor_ms = measure_floor(count, workdir)
    p99 = _percentile(held, 99)
    return {
        f"p50_ms_{count}": _percentile(held, 50),
        f"p99_ms_{count}": p99,
        f"max_ms_{count}": round(max(held), 3) if held else None,
        f"arrival_first_ms_{count}": round(min(arrived), 3) if arrived else None,
        f"arrival_last_ms_{count}": round(max(arrived), 3) if arrived else None,
        f"own_p50_ms_{count}": _percentile(own, 50),
        f"own_p99_ms_{count}": _percentile(own, 99),
        f"alert_send_us_per_device_{count}": round(1000 * max(arrived) / count, 3) if arrived else None,
        f"trigger_cpu_us_per_device_{count}": round(trigger_cpu * 1e6 / count, 3),
        f"packet_p99_ms_{count}": _percentile(packets, 99),
        f"playout_p50_ms_{count}": _percentile(played, 50),
        f"playout_p99_ms_{count}": _percentile(played, 99),
        f"held_fraction_{count}": round(len(held) / count, 5),
        f"bringup_s_{count}": round(bringup, 2),
        f"clocks_ready_fraction_{count}": round(ready / count, 5),
        f"floor_ms_{count}": round(floor_ms, 3),
        f"ratio_to_floor_{count}": round(p99 / floor_ms, 2) if p99 is not None and floor_ms > 0 else None,
        f"clock_offset_change_us_{count}": round(result["offset_change_ns"] / 1000, 1),
        f"stream_destinations_{count}": fanout,
        f"timer_lag_max_s_{count}": round(io.get("timer_lag_max_s", 0.0), 3),
        f"unplayed_{count}": sum(d.get("unplayed", 0) for d in decoding),
        f"server_resent_{count}": sum(resent),
        f"socket_drops_{count}": socket_drops,
        f"slow_devices_{count}": len(slow),
        f"slow_cause_{count}": {cause: causes[cause] for cause in CAUSES if causes[cause]},
    }


def measure_floor(count: int, workdir: str, *, repeat: int = 5) -> float:
    """The floor in milliseconds: the wall time of the C sendmmsg ceiling (``bench/ceiling``, compiled here)
    sending one alert-sized datagram to each of ``count`` loopback destinations, median of ``repeat`` runs."""
    binary = str(Path(workdir) / "sendmmsg_ceiling")
    if not Path(binary).exists():
        binary = compile_ceiling(workdir)
    payload = bytes(FLOOR_DATAGRAM)
    walls = []
    with ExitStack() as stack:
        rx = Receivers(stack, count, samples=2)
        listing = "".join(f"{host} {port}\n" for host, port in rx.addresses)
        for _ in range(repeat):
            done = subprocess.run([binary, "1", str(MAX_BATCH), payload.hex()], input=listing, capture_output=True,
                                  text=True, check=False)
            if done.returncode != 0:
                raise UserError(f"the C ceiling failed: {done.stderr.strip()[:300]}")
            walls.append(int(json.loads(done.stdout.strip().splitlines()[-1])["wall_ns"]) / 1e6)
            rx.drain(1, payload)
    return statistics.median(walls)


@click.command("alert")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
@click.option("--devices", default="1000,10000", show_default=True, help="Comma-separated fleet sizes.")
@click.option("--full", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="Devices that decode and play (the rest count packets).")
@click.option("--start-rate", type=click.FloatRange(10, 100_000), default=150.0, show_default=True,
              help="Devices started per second (below the server's cookie threshold of 200 inits/s, each device "
                   "connects at its first init).")
@click.option("--settle", type=click.FloatRange(0, 120), default=3.0, show_default=True,
              help="Seconds between the last session and the alert (clock estimates).")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--multicast", is_flag=True,
              help="Give the zone an IP multicast group: the alert's stream goes once per packet to the group.")
def alert(*, as_json: bool, devices: str, full: int, start_rate: float, settle: float, seed: int,
          multicast: bool) -> None:
    """Alert delivery and first playout across a fleet in another process, on loopback sockets."""
    try:
        counts = sorted({int(part) for part in devices.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--devices must be comma-separated integers, not {devices!r}") from None
    if not counts or counts[0] < 1 or counts[-1] > 60_000:
        raise UserError("--devices must name counts between 1 and 60000")
    try:
        raise_open_file_limit(counts[-1])
    except FleetError as exc:
        raise UserError(str(exc)) from None
    metrics: dict[str, Any] = {"full": full}
    done: list[int] = []
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="loa-alert-") as workdir:
        for count in counts:
            async def one(n: int = count) -> dict[str, Any]:
                return await _run_count(n, full=full, start_rate=start_rate, settle=settle, seed=seed,
                                        workdir=workdir, multicast=multicast)
            problem = None
            try:
                metrics.update(anyio.run(one, backend="asyncio", backend_options={"use_uvloop": True}))
            except* BringUpError as group:  # raised inside the service's task group
                problem = str(group.exceptions[0])
            if problem is not None:
                failed[str(count)] = problem
                print(f"alert {count}: {problem}", file=sys.stderr)
                break
            done.append(count)
            print(f"alert {count}: p99 {metrics[f'p99_ms_{count}']} ms", file=sys.stderr)
    if not done:
        raise UserError(f"no fleet came up: {'; '.join(failed.values())}")
    top = done[-1]
    for key in ("p50_ms", "p99_ms", "max_ms", "playout_p99_ms", "held_fraction", "ratio_to_floor", "floor_ms"):
        metrics[key] = metrics[f"{key}_{top}"]
    metrics["devices"] = top
    env = environment(transport="UDP loopback, streamer and fleet in two processes", backend="asyncio+uvloop",
                      start_rate=start_rate, multicast=multicast, failed=failed or None)
    emit("alert", metrics, as_json=as_json, env=env)
