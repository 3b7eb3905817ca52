"""`loa bench flood`: an unauthenticated flood at the streamer while it streams live to a fleet and sends an alert.

The streamer service (:class:`~loa.streamer.service.StreamerService`, asyncio with uvloop, the receive buffer ``loa
streamer`` asks for, :data:`~loa.streamer.service.RECEIVE_BUFFER`) runs in this process on 127.0.0.1 with
``--devices`` enrolled devices. The fleet (the reference device code of ``loa fleet``:
:class:`~loa.devices.fleet_host.FleetHost`, one socket and session each; the first ``--full`` decode and play, the
rest count packets) runs in a child process (``python -m loa.bench.flood fleet``). The fleet and the flooder each
run in a session of their own, as they would on machines of their own (on Linux with autogroup scheduling a session
is a scheduling group with its own share of the processor, whatever else runs on the host). The flooder is a C
program (``bench/ceiling/flooder.c``, compiled at run time) sending with ``sendmmsg`` from ``--sources`` sockets on
127.1.0.1 and up, paced to ``--rate`` datagrams per second, and counting on each socket what the server sends back.
It sends, in turn: garbage (random bytes, 1-1300 long), HandshakeInits with a valid ``mac1`` from keys the server
does not know, the same with ``mac1`` broken, forged CookieReplies, and transport datagrams with unknown receiver
indexes.

Sequence: the fleet comes up (sessions, clock estimates); a live tone starts to every device; one alert that is
not counted (``alert_warmup_ms``: a server's first alert costs more than the later ones); then ``--rounds`` times
in turn, a quiet window of ``--seconds`` with ``--alerts`` alerts triggered at even spacing in it, and the flood
for ``--seconds`` with as many alerts at the same moments of it. Each alert plays two seconds of tone and the live
stream resumes before the next (so with more than one, the spacing, ``--seconds`` / ``--alerts``, is at least
``ALERT_TONE_S`` + 1 s). Every figure of a kind of window (``*_quiet``, ``*_flood``, the flood's counts) is over
all its rounds: an alert's time is that of its slowest devices, and one alert slowed by the host's scheduling (a
few in a hundred on a shared 2-core machine, in either kind of window) decides the p99 of one window's few
alerts; over several rounds such alerts weigh as often as they come, and the two kinds share the host's changes.

Metrics:

* ``rounds``; ``flood_sent``/``flood_rate_sent`` (datagrams and datagrams/s the flooder got out), ``flood_per_kind``;
  ``server_received``/``server_rate_received`` (datagrams the service read from unverified sources), and
  ``kernel_drops`` (the ``drops`` column of ``/proc/net/udp`` for the server's socket over the flood: datagrams
  the kernel discarded, because the socket filter refused them or the socket's buffer was full);
  ``socket_filter`` (whether the server's socket had the filter of :mod:`loa.streamer.sockfilter`; off with
  ``--no-socket-filter``), ``flood_filterable`` (flood datagrams of a shape no server takes, which the filter
  drops), ``service_kernel_drops`` (the service's own reading of the kernel's count, at the end);
* ``bare_rate_sent``/``bare_received``/``bare_rate_received``/``bare_kernel_drops`` (``--bare``, after the rest):
  the same flood at a socket that plain Python only drains, one ``recvfrom`` per datagram and nothing else, in a
  thread of this process with the service stopped and the fleet gone: what Python can take off a socket at all;
* ``late_quiet``/``late_flood`` (frames arriving after their play time at the decoding devices, per window),
  ``played_quiet``/``played_flood``, ``plc_quiet``/``plc_flood`` (frames concealed), ``received_quiet``/
  ``received_flood`` (media packets at every device);
* ``alert_p99_quiet_ms``/``alert_p99_flood_ms`` (from each trigger to each device holding that verified alert,
  over the window's alerts: the kernel's arrival time of the datagram that brought it plus the processor time
  the device spent on that datagram, when a device with a processor of its own would hold it, as `loa bench
  alert` counts, on the host's monotonic clock) and ``alert_p99_ratio``; ``alert_p99_quiet_in_process_ms``/
  ``alert_p99_flood_in_process_ms`` and ``alert_p99_in_process_ratio``: the same to when the fleet process,
  which runs every device one after another on a processor it shares with the server and the flooder, got
  round to it; ``alert_worst_quiet_ms``/``alert_worst_flood_ms`` (each alert's slowest device, in the order
  of the triggers); ``alert_held_quiet``/``alert_held_flood`` (devices that held every alert of the window);
  ``alerts_per_window``;
* ``loop_lag_p99_quiet_ms``/``loop_lag_p99_flood_ms`` and ``loop_lag_max_*``: how late a task of the server's
  event loop that sleeps ``LAG_PROBE_S`` at a time wakes, per window; the wait of anything ready to run there (a
  frame, an API call that triggers an alert, a timer) while the receive loop has the loop. The alert's figures
  start when its trigger runs, after that wait;
* amplification, per unverified source address: ``amplification_max`` (the largest bytes sent to it / bytes
  received from it, counted by the server on its side), ``amplification_total``; ``flooder_received_bytes`` and
  ``server_sent_unverified_bytes`` (the flooder's own count of what came back, and the server's: they must agree
  but for what was still in flight); ``cookie_replies``, ``handshake_responses``, ``sessions`` (devices with a
  session at the end: the fleet's, no more).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import click
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from loa.bench._alert_fleet import device_keys
from loa.bench._report import emit, environment, read_status
from loa.bench.fanout import compile_c
from loa.cli import UserError
from loa.devices.content import MemoryStore
from loa.devices.core import Address, SpeakerCore
from loa.devices.fleet import FleetError, raise_open_file_limit
from loa.devices.fleet_host import FleetHost
from loa.devices.runner import run
from loa.devices.simclock import SimulatedClock
from loa.devices.sinks import CounterSink
from loa.protocol.alert import key_id
from loa.protocol.connection import DeviceConnection
from loa.protocol.datagram import MAX_DATAGRAM, HandshakeInit
from loa.protocol.noise import x25519_public
from loa.streamer import sockfilter
from loa.streamer.core import StreamerCore
from loa.streamer.service import RECEIVE_BUFFER, StreamerService, epoch_for, open_udp_socket
from loa.streamer.sources import ToneSource
from loa.streamer.zones import Zone, ZoneTree

__all__ = ["FLOODER_SOURCE", "Meter", "compile_flooder", "flood", "flood_templates", "socket_drops"]

FLOODER_SOURCE = Path(__file__).resolve().parent / "ceiling" / "flooder.c"
ZONE = "X1"
FIRST_SOURCE = "127.1.0.1"
KIND_NAMES = ("garbage", "init_mac1_valid", "init_mac1_bad", "cookie_reply", "transport_unknown_index")
STATUS_EVERY_S = 0.2
LAG_PROBE_S = 0.01
ALERT_TONE_S = 2.0
PHASES = ("quiet", "flood")
BRINGUP_LIMIT_S = 60.0


def compile_flooder(workdir: str) -> str:
    """Compile the flooder into ``workdir``; UserError when there is no working compiler."""
    return compile_c(FLOODER_SOURCE, workdir, "flooder", "the flooder")


def flood_templates(server_public: bytes, rng: random.Random, per_kind: int = 64) -> list[tuple[int, bytes]]:
    """``(kind index, datagram)`` for every kind of :data:`KIND_NAMES`, interleaved."""
    out: list[tuple[int, bytes]] = []
    for _ in range(per_kind):
        size = rng.choice((rng.randrange(1, 64), rng.randrange(64, 1201), rng.randrange(1201, 1301)))
        garbage = bytes([rng.choice((0x00, 0x05, 0x7F, 0x80, 0xC0, 0xFF))]) + rng.randbytes(size - 1)
        conn = DeviceConnection(static_private=rng.randbytes(32), server_public=server_public,
                                random_bytes=rng.randbytes, rng=rng.random)
        conn.connect(1.0)
        init = conn.datagrams_to_send()[0]
        bad = bytearray(init)
        bad[HandshakeInit.MAC1_OFFSET + rng.randrange(16)] ^= 1 << rng.randrange(8)
        cookie = b"\x03\x01\x00\x00" + rng.randbytes(48)
        transport = b"\x04\x01\x00\x00" + rng.randbytes(12) + rng.randbytes(rng.randrange(16, 200))
        out += [(0, garbage), (1, init), (2, bytes(bad)), (3, cookie), (4, transport)]
    return out


def socket_drops(port: int) -> int | None:
    """The kernel's drop count (``/proc/net/udp``, last column) for the UDP socket bound to 127.0.0.1:``port``."""
    local = f"0100007F:{port:04X}"
    try:
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 12 and fields[1] == local:
                return int(fields[-1])
    except OSError:
        return None
    return None


class Meter:
    """Bytes in and out per unverified source address (anything but the fleet's 127.0.0.1), counted on the
    server's side by wrapping its core's ``receive_datagram`` and ``datagrams_to_send``."""

    def __init__(self, core: StreamerCore, trusted_host: str) -> None:
        self.bytes_in: Counter[Address] = Counter()
        self.bytes_out: Counter[Address] = Counter()
        self.datagrams_in = 0
        receive, drain = core.receive_datagram, core.datagrams_to_send
        bytes_in, bytes_out = self.bytes_in, self.bytes_out

        def metered_receive(data: bytes, address: Address, now: float, *, arrived: float | None = None) -> None:
            if address[0] != trusted_host:
                bytes_in[address] += len(data)
                self.datagrams_in += 1
            receive(data, address, now, arrived=arrived)

        def metered_drain() -> list[tuple[bytes, Address]]:
            out = drain()
            for data, address in out:
                if address[0] != trusted_host:
                    bytes_out[address] += len(data)
            return out

        core.receive_datagram = metered_receive  # type: ignore[method-assign]
        core.datagrams_to_send = metered_drain  # type: ignore[method-assign]

    def amplification(self) -> tuple[float, float]:
        """(the largest per-source ratio, the ratio over all sources); a source that was sent something it did
        not send counts as infinite."""
        worst = 0.0
        for address, out in self.bytes_out.items():
            got = self.bytes_in.get(address, 0)
            worst = max(worst, out / got if got else float("inf"))
        total_in = sum(self.bytes_in.values())
        return worst, (sum(self.bytes_out.values()) / total_in if total_in else 0.0)


# -- the fleet, in its own process ---------------------------------------------------------------------------------


class AlertTimedCore(SpeakerCore):
    """A device that notes, for each alert it accepts (by broadcast id), when a device with a processor of its own
    would hold it (``accepted_at``: the kernel's arrival time of the datagram that brought it, plus the processor
    time the device spent on that datagram, as in `loa bench alert`), and when this process had it
    (``held_at``), both on the host's monotonic clock. An alert held back until the clock estimate was ready
    counts from when it was taken."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.host: FleetHost | None = None
        self.accepted_at: dict[int, float] = {}
        self.held_at: dict[int, float] = {}
        self._accepting: list[int] = []
        accept = self.alerts.accept

        def noted(*a: Any, **k: Any) -> Any:
            accepted = accept(*a, **k)  # raises for an alert it refuses
            self._accepting.append(accepted.alert.bid)
            return accepted

        self.alerts.accept = noted  # type: ignore[method-assign]

    def _note(self, at: float) -> None:
        held = time.monotonic()
        for bid in self._accepting:
            self.accepted_at.setdefault(bid, at)
            self.held_at.setdefault(bid, held)
        self._accepting.clear()

    def receive_datagram(self, data: bytes, source: Address, now: float, *, group: str | None = None) -> None:
        started = time.thread_time()
        super().receive_datagram(data, source, now, group=group)
        if self._accepting:
            arrival = self.host.arrival if self.host is not None else time.monotonic()
            self._note(arrival + time.thread_time() - started)

    def advance(self, now: float) -> None:
        super().advance(now)
        if self._accepting:  # held back until the clock estimate was ready
            self._note(time.monotonic())


def fleet_main(spec_path: str) -> None:
    """The fleet process: run the devices and write a status file every ``STATUS_EVERY_S``, until the spec's
    ``stop`` file exists or its time limit passed; then write the status once more."""
    spec = json.loads(Path(spec_path).read_text())
    raise_open_file_limit(spec["count"] + 64)
    rng = random.Random(spec["seed"] + 1)
    server: Address = (spec["host"], spec["port"])
    devices: list[tuple[SpeakerCore, SimulatedClock]] = []
    for i, key in enumerate(device_keys(spec["seed"], spec["count"])):
        decode = i < spec["full"]
        core = AlertTimedCore(
            static_private=key, server_public=bytes.fromhex(spec["server_public"]),
            authority_keys=[bytes.fromhex(spec["authority"])], server_address=server,
            sink=CounterSink(decode=decode), store=MemoryStore(1 << 20), batch=0.05, count_only=not decode,
            log_limit=0, rng=random.Random(rng.random()),
        )
        devices.append((core, SimulatedClock(rng.uniform(-50, 50), rng.uniform(-5, 5))))
    cores = [core for core, _ in devices]
    host = FleetHost(devices, server, bind_host="127.0.0.1", start_rate=200.0, priority=spec["full"], timestamps=True)
    for timed in cores:
        if isinstance(timed, AlertTimedCore):
            timed.host = host
    status_path = Path(spec["status"])

    def write_status(_: FleetHost | None = None) -> None:
        started = cores[: host.started]
        stats = [c.statistics() for c in started]
        full = stats[: spec["full"]]
        status = {
            "at": time.monotonic(), "started": host.started, "connected": sum(s.connected for s in stats),
            "clocks": sum(s.clock_ready for s in stats), "late": sum(s.late for s in full),
            "played": sum(s.played for s in full), "plc": sum(s.plc for s in full),
            "received": sum(s.received for s in stats),
            "alerts": [{str(bid): t for bid, t in c.accepted_at.items()} for c in cores
                       if isinstance(c, AlertTimedCore)],
            "alerts_in_process": [{str(bid): t for bid, t in c.held_at.items()} for c in cores
                                  if isinstance(c, AlertTimedCore)],
            "refused": dict(sum((Counter(s.alerts_refused) for s in stats), Counter())),
        }
        tmp = status_path.with_name(status_path.name + ".tmp")
        tmp.write_text(json.dumps(status))
        tmp.replace(status_path)

    stop = Path(spec["stop"])

    async def body() -> None:
        with anyio.move_on_after(spec["limit"]) as scope:
            def tick(_: FleetHost) -> None:
                write_status()
                if stop.exists():
                    scope.cancel()
            await host.run(tick=STATUS_EVERY_S, on_tick=tick)

    run(body, "asyncio")
    write_status()


# -- the bench ---------------------------------------------------------------------------------------------------


def alert_times(held: list[dict[str, float]], triggers: list[tuple[int, float]]) -> tuple[list[float], int]:
    """Milliseconds from each trigger ``(bid, t0)`` to each device's holding of that alert (``held``: per device,
    bid -> when), and how many devices held every one of them."""
    times = [(device[str(bid)] - t0) * 1000 for device in held for bid, t0 in triggers if str(bid) in device]
    return times, sum(all(str(bid) in device for bid, _ in triggers) for device in held)


def _p99_ms(times: list[float]) -> float | None:
    return round(float(np.percentile(np.array(times), 99)), 3) if times else None


def _slowest_ms(status: dict[str, Any], trigger: tuple[int, float]) -> float | None:
    """The time to the slowest device's holding of one alert, ms (None if no device held it)."""
    slowest = max(alert_times(status.get("alerts", []), [trigger])[0], default=None)
    return None if slowest is None else round(slowest, 3)


def bare_drain(sock: Any, seconds: float) -> tuple[int, float]:
    """Read ``sock`` (blocking) as fast as plain Python can, one ``recvfrom`` a datagram and nothing else, from
    the first datagram for ``seconds`` (or until 1 s passes with none); returns (datagrams, seconds)."""
    sock.settimeout(1.0)
    count, first = 0, None
    while first is None or time.monotonic() - first < seconds:
        try:
            sock.recvfrom(MAX_DATAGRAM + 1)
        except TimeoutError:
            break
        count += 1
        if first is None:
            first = time.monotonic()
    return count, (time.monotonic() - first if first is not None else 0.0)


async def _bare_ceiling(binary: str, listing: str, *, rate: float, seconds: float, sources: int,
                        workdir: str) -> dict[str, Any]:
    """The same flood at a socket drained by :func:`bare_drain` in a thread of this process (the service is
    stopped, the fleet gone): how many datagrams a second Python can take off a socket at all."""
    sock = open_udp_socket("127.0.0.1", 0)
    sock.setblocking(True)
    out_path, err_path = Path(workdir) / "bare.json", Path(workdir) / "bare.err"
    with sock:
        port = sock.getsockname()[1]
        with out_path.open("wb") as out_file, err_path.open("wb") as err_file:
            flooder = subprocess.Popen([binary, str(rate), str(seconds), str(sources), "127.0.0.1", str(port),
                                        FIRST_SOURCE], stdin=subprocess.PIPE, stdout=out_file, stderr=err_file,
                                       text=True, start_new_session=True)
        assert flooder.stdin is not None
        flooder.stdin.write(listing)
        flooder.stdin.close()
        count, span = await anyio.to_thread.run_sync(bare_drain, sock, seconds)
        while flooder.poll() is None:
            await anyio.sleep(0.05)
        drops = sockfilter.kernel_drops(sock)
    sent = json.loads(out_path.read_text().strip().splitlines()[-1]) if flooder.returncode == 0 else {}
    wall = sent.get("wall_ns", 0) / 1e9
    return {"bare_rate_sent": round(sent.get("sent", 0) / wall, 1) if wall else None,
            "bare_received": count, "bare_rate_received": round(count / span, 1) if span else None,
            "bare_kernel_drops": drops}


async def _run(*, rate: float, seconds: float, alerts_per_window: int, rounds: int, devices: int, full: int,
               sources: int, seed: int,
               workdir: str, profile: str | None, socket_filter: bool, bare: bool) -> dict[str, Any]:
    binary = compile_flooder(workdir)
    rng = random.Random(seed)
    authority = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    core = StreamerCore(static_private=rng.randbytes(32), zones=ZoneTree([Zone(ZONE, "flood")]),
                        authorities={key_id(authority.public_key()): authority.public_key()},
                        epoch_ns=epoch_for(anyio.current_time()), send_clock=anyio.current_time)
    for i, key in enumerate(device_keys(seed, devices)):
        core.add_device(x25519_public(key), ZONE, anyio.current_time(), name=f"flood-{i:03d}")
    meter = Meter(core, "127.0.0.1")
    service = StreamerService(core, open_udp_socket("127.0.0.1", 0, receive_buffer_size=RECEIVE_BUFFER))
    service.socket_filter = socket_filter
    status_path = Path(workdir) / "status.json"
    flood_out, flood_err = Path(workdir) / "flooder.json", Path(workdir) / "flooder.err"
    templates = flood_templates(core.public_key, random.Random(seed + 5))
    listing = "".join(f"{kind} {data.hex()}\n" for kind, data in templates)
    metrics: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:
        await tg.start(service.serve)
        lags: list[tuple[float, float]] = []  # (when a probe was due, how late it woke), on the service's clock
        probe_scope = anyio.CancelScope()

        async def probe() -> None:
            with probe_scope:
                while True:
                    due = anyio.current_time() + LAG_PROBE_S
                    await anyio.sleep_until(due)
                    lags.append((due, anyio.current_time() - due))

        tg.start_soon(probe)
        port = service.address[1]
        spec: dict[str, Any] = {"host": "127.0.0.1", "port": port, "server_public": core.public_key.hex(),
                "authority": authority.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex(),
                "seed": seed, "count": devices, "full": full, "status": str(status_path),
                "stop": str(Path(workdir) / "stop"),
                "limit": BRINGUP_LIMIT_S + (2 * rounds + 2) * (seconds + 1.0) + ALERT_TONE_S + 60.0}
        spec_path = Path(workdir) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        log_path = Path(workdir) / "fleet.log"
        with log_path.open("wb") as log:
            fleet = subprocess.Popen([sys.executable, "-m", "loa.bench.flood", "fleet", str(spec_path)],
                                     stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        try:
            began = time.monotonic()
            while read_status(status_path).get("clocks", 0) < devices:
                if fleet.poll() is not None or time.monotonic() - began > BRINGUP_LIMIT_S:
                    raise UserError(f"the fleet did not come up: {read_status(status_path)} "
                                    f"{log_path.read_text(errors='replace')[-300:]}")
                await anyio.sleep(0.2)
            print(f"flood: {devices} devices up in {time.monotonic() - began:.1f} s", file=sys.stderr)
            service.start_broadcast(ToneSource(440.0), [ZONE], name="live")
            await anyio.sleep(3.0)  # every device joined and playing
            # one alert first, not counted: the first one a server sends costs what no later one does (code paths
            # and caches warming up), which would make the quiet window's p99 that cost and the ratio look better
            def alert(text: str) -> tuple[int, float]:
                """Trigger one alert: its broadcast id, and the host's monotonic time just before the call."""
                t0 = time.monotonic()
                return service.trigger_alert(ToneSource(880.0, seconds=ALERT_TONE_S), signing_key=authority,
                                             zones=[ZONE], text=text), t0

            warmup = alert("flood bench warm-up")
            await anyio.sleep(ALERT_TONE_S + 1.0)
            windows: dict[str, dict[str, Any]] = {
                phase: {"lags": [], "counts": Counter(), "received": 0, "drops": 0} for phase in PHASES}
            alerts: dict[str, list[tuple[int, float]]] = {phase: [] for phase in PHASES}
            flooder_runs: list[dict[str, Any]] = []
            for round_ in range(rounds):
                for phase in PHASES:
                    start_status = read_status(status_path)
                    received0, drops0 = meter.datagrams_in, socket_drops(port)
                    flooder = spy = None
                    if phase == "flood":
                        with flood_out.open("wb") as out_file, flood_err.open("wb") as err_file:
                            flooder = subprocess.Popen([binary, str(rate), str(seconds), str(sources), "127.0.0.1",
                                                        str(port), FIRST_SOURCE], stdin=subprocess.PIPE,
                                                       stdout=out_file, stderr=err_file, text=True,
                                                       start_new_session=True)
                        assert flooder.stdin is not None
                        flooder.stdin.write(listing)
                        flooder.stdin.close()
                        if profile is not None and round_ == 0:
                            spy = subprocess.Popen(["py-spy", "record", "--pid", str(os.getpid()), "--duration",
                                                    str(max(1, int(seconds) - 1)), "--format", "raw", "--output",
                                                    profile, "--nonblocking"], stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL)
                    window_start = anyio.current_time()
                    for i in range(alerts_per_window):
                        await anyio.sleep_until(window_start + seconds * (i + 0.5) / alerts_per_window)
                        alerts[phase].append(alert(f"flood bench {phase} {round_ + 1}.{i + 1}"))
                    await anyio.sleep_until(window_start + seconds)
                    window = windows[phase]
                    window["lags"] += [lag for due, lag in lags if window_start <= due <= anyio.current_time()]
                    if flooder is not None:
                        while flooder.poll() is None:
                            await anyio.sleep(0.05)
                        if flooder.returncode != 0:
                            raise UserError(f"the flooder failed: {flood_err.read_text().strip()[:300]}")
                        flooder_runs.append(json.loads(flood_out.read_text().strip().splitlines()[-1]))
                        if spy is not None:
                            while spy.poll() is None:
                                await anyio.sleep(0.1)
                    await anyio.sleep(0.5)  # the last alert acknowledgements, the status file's next write
                    end_status = read_status(status_path)
                    drops1 = socket_drops(port)
                    for name in ("late", "played", "plc", "received"):
                        window["counts"][name] += end_status.get(name, 0) - start_status.get(name, 0)
                    window["received"] += meter.datagrams_in - received0
                    window["drops"] = (None if window["drops"] is None or drops0 is None or drops1 is None
                                       else window["drops"] + drops1 - drops0)
            sessions_at_end = core.sessions.conn.endpoint.statistics().active_devices
            service_stats = service.statistics()
            Path(spec["stop"]).touch()
            with anyio.move_on_after(10):
                while fleet.poll() is None:
                    await anyio.sleep(0.05)
            service.stop()
        finally:
            probe_scope.cancel()
            if fleet.poll() is None:
                fleet.terminate()
            while fleet.poll() is None:
                await anyio.sleep(0.05)
    service.sock.close()
    if bare:
        metrics.update(await _bare_ceiling(binary, listing, rate=rate, seconds=seconds, sources=sources,
                                           workdir=workdir))
    final = read_status(status_path)
    flooder_out = _summed(flooder_runs)
    wall = flooder_out["wall_ns"] / 1e9
    for phase in PHASES:
        for name in ("late", "played", "plc", "received"):
            metrics[f"{name}_{phase}"] = windows[phase]["counts"][name]
        times, held_all = alert_times(final.get("alerts", []), alerts[phase])
        metrics[f"alert_p99_{phase}_ms"] = _p99_ms(times)
        metrics[f"alert_held_{phase}"] = held_all
        metrics[f"alert_worst_{phase}_ms"] = [_slowest_ms(final, trigger) for trigger in alerts[phase]]
        metrics[f"alert_p99_{phase}_in_process_ms"] = _p99_ms(alert_times(final.get("alerts_in_process", []),
                                                                          alerts[phase])[0])
        phase_lags = np.array(windows[phase]["lags"] or [0.0]) * 1000
        metrics[f"loop_lag_p99_{phase}_ms"] = round(float(np.percentile(phase_lags, 99)), 3)
        metrics[f"loop_lag_max_{phase}_ms"] = round(float(phase_lags.max()), 3)
    metrics["alert_warmup_ms"] = _slowest_ms(final, warmup)
    quiet, flooded = metrics["alert_p99_quiet_ms"], metrics["alert_p99_flood_ms"]
    metrics["alert_p99_ratio"] = round(flooded / quiet, 3) if quiet and flooded is not None else None
    quiet, flooded = metrics["alert_p99_quiet_in_process_ms"], metrics["alert_p99_flood_in_process_ms"]
    metrics["alert_p99_in_process_ratio"] = round(flooded / quiet, 3) if quiet and flooded is not None else None
    worst, total = meter.amplification()
    per_kind = dict(zip(KIND_NAMES, flooder_out["per_kind"], strict=False))
    shares = {name: [not sockfilter.accepts(data) for kind, data in templates if KIND_NAMES[kind] == name]
              for name in per_kind}  # the share of each kind's templates no server takes
    stats = core.sessions.conn.endpoint.statistics()
    metrics.update(
        flood_sent=flooder_out["sent"], flood_rate_sent=round(flooder_out["sent"] / wall, 1),
        flood_blocked=flooder_out["blocked"],
        flood_per_kind=per_kind, socket_filter=service.filtered,
        flood_filterable=round(sum(n * sum(shares[k]) / len(shares[k]) for k, n in per_kind.items() if shares[k])),
        service_kernel_drops=service_stats.kernel_drops,
        server_received=windows["flood"]["received"],
        server_rate_received=round(windows["flood"]["received"] / wall, 1),
        kernel_drops=windows["flood"]["drops"], kernel_drops_quiet=windows["quiet"]["drops"],
        amplification_max=round(worst, 4), amplification_total=round(total, 4),
        flooder_received_bytes=flooder_out["received_bytes"],
        server_sent_unverified_bytes=sum(meter.bytes_out.values()),
        server_received_unverified_bytes=sum(meter.bytes_in.values()),
        sources=sources, sources_answered=sum(1 for s in flooder_out["sources"] if s[1]),
        cookie_replies=stats.cookie_replies_sent, handshake_responses=stats.responses_sent,
        sessions=sessions_at_end,
        refused_alerts=final.get("refused", {}), devices=devices, full=full, rate_target=rate, seconds=seconds,
        alerts_per_window=alerts_per_window, rounds=rounds,
    )
    return metrics


def _summed(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The flooder's reports of every flood window as one, its counts summed (per kind and per source too)."""
    return {"sent": sum(r["sent"] for r in runs), "wall_ns": sum(r["wall_ns"] for r in runs),
            "blocked": sum(r["blocked"] for r in runs), "received_bytes": sum(r["received_bytes"] for r in runs),
            "per_kind": [sum(kind) for kind in zip(*(r["per_kind"] for r in runs), strict=True)],
            "sources": [[sum(column) for column in zip(*per_run, strict=True)]
                        for per_run in zip(*(r["sources"] for r in runs), strict=True)]}


@click.command("flood")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
@click.option("--rate", type=click.FloatRange(100, 10_000_000), default=100_000, show_default=True,
              help="Flood datagrams per second.")
@click.option("--seconds", type=click.FloatRange(1, 600), default=10.0, show_default=True,
              help="Length of the quiet window and of the flood.")
@click.option("--alerts", "alerts_per_window", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Alerts in each window, evenly spaced (at least ALERT_TONE_S + 1 s apart).")
@click.option("--rounds", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Quiet and flood windows, in turn, this many of each; each figure is over all of a kind.")
@click.option("--devices", type=click.IntRange(1, 2000), default=50, show_default=True)
@click.option("--full", type=click.IntRange(1, 2000), default=10, show_default=True,
              help="Devices that decode and play (the rest count packets).")
@click.option("--sources", type=click.IntRange(1, 4000), default=256, show_default=True,
              help="Flood source addresses (127.1.0.1 and up).")
@click.option("--profile", type=click.Path(dir_okay=False), default=None,
              help="Record where the server's time goes during the flood with py-spy (raw folded stacks).")
@click.option("--socket-filter/--no-socket-filter", default=True, show_default=True,
              help="Give the server's socket its kernel filter (loa.streamer.sockfilter; Linux).")
@click.option("--bare/--no-bare", default=True, show_default=True,
              help="Then flood a socket that plain Python only drains (bare_* metrics: the receive ceiling).")
@click.option("--seed", type=int, default=1, show_default=True)
def flood(*, as_json: bool, rate: float, seconds: float, alerts_per_window: int, rounds: int, devices: int,
          full: int, sources: int, profile: str | None, socket_filter: bool, bare: bool, seed: int) -> None:
    """An unauthenticated flood at the streamer during a live stream and alerts."""
    if full > devices:
        raise UserError(f"--full ({full}) cannot exceed --devices ({devices})")
    if alerts_per_window > 1 and seconds / alerts_per_window < ALERT_TONE_S + 1:
        raise UserError(f"--alerts {alerts_per_window} in --seconds {seconds:g} are less than "
                        f"{ALERT_TONE_S + 1:g} s apart: an alert plays {ALERT_TONE_S:g} s, and the live stream "
                        "resumes before the next")
    if profile is not None and shutil.which("py-spy") is None:
        raise UserError("--profile needs py-spy (pip install py-spy)")
    try:
        raise_open_file_limit(devices + sources + 64)
    except FleetError as exc:
        raise UserError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="loa-flood-") as workdir:
        async def main() -> dict[str, Any]:
            return await _run(rate=rate, seconds=seconds, alerts_per_window=alerts_per_window, rounds=rounds,
                              devices=devices, full=full, sources=sources, seed=seed,
                              workdir=workdir, profile=profile, socket_filter=socket_filter, bare=bare)
        metrics = anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
    env = environment(transport="UDP loopback; streamer in this process, fleet and C flooder in two others",
                      backend="asyncio+uvloop")
    emit("flood", metrics, as_json=as_json, env=env)


if __name__ == "__main__":  # python -m loa.bench.flood fleet SPEC
    if len(sys.argv) == 3 and sys.argv[1] == "fleet":
        fleet_main(sys.argv[2])
    else:
        sys.exit("usage: python -m loa.bench.flood fleet SPEC")
