"""`loa bench soak`: `loa serve` under a whole province for a bounded time: memory flat, no descriptor or task leak.

One `loa serve` child (trio, SQLite in a fresh data directory) and ``--fleet-procs`` fleet children
(:mod:`loa.bench._soak_fleet`, ``--devices`` reference devices in all, each child a disjoint slice of them, on
loopback sockets, counting only, as ``loa fleet`` runs them), each in a session of its own, as on machines of their
own (with Linux's autogroup scheduling a session is a scheduling group with its own share of the processor,
whatever else runs on the host; as `loa bench flood` does). The bench sums the children's status files
(:func:`loa.bench._soak_fleet.merge_statuses`). By default one child per ``FLEET_DEVICES_PER_PROC`` devices, and
no more children than processors (:func:`default_fleet_procs`): an alert to the province has every device verify
it, take its ``amp`` and ``join`` and report its ``state`` at once, which 10,000 devices in one Python process
turned into tens of seconds of backlog; a second process puts the other core to that work, and a child per core
is the most that adds processor time rather than scheduling groups competing with the server (each session has
its own share of the processor).

1. **Set-up.** The database is seeded directly before the server starts (no HTTP: 10,000 enrolments one request
   at a time would take longer than the soak): a province ``P`` with ``--communes`` communes, the devices spread
   over them, and the people of the story with API tokens: an editor, an approver, a scheduler, a viewer and two
   NOC operators. Then, through the API: a test tone (``--alert-seconds`` long) uploaded, submitted and approved.
2. **Devices.** The fleet starts ``--start-rate`` devices per second until every device has a session (counted by
   the fleet and by the server). Telemetry: every device reports every 60 s, the protocol's default
   ``telemetry_s``; `loa serve` configures no other.
3. **Live stream.** A live broadcast (``POST /api/v1/broadcasts``, an RTP input port) fed by a 440 Hz RTP/Opus
   stream in real time (:class:`loa.bench._serve.RtpFeeder`). The streamer re-frames it into 20 ms frames, the only
   frame size it sends (PROTOCOL.md 5.1 allows 10-60 ms; `loa serve` has no setting for it): 50 unicast datagrams
   per second to each member, 500,000/s for 10,000 devices, about 1.55 s of CPU per second at the ~3.1 us per
   datagram `loa bench fanout` measures, more than one core, which the streamer shares with everything else
   `loa serve` does. So by default the stream goes to as many communes as keep it within ``LIVE_PPS_MAX``
   datagrams/s (the whole province up to 1,000 devices; 2 of 20 communes, 1,000 devices, at 10,000), and
   ``--live-communes`` sets another share (all of them: ``--live-communes 20``). Its figures are never scaled:
   ``live_devices``, ``live_needed_pps`` (50 x those), ``live_to_all_needed_pps`` (50 x every device),
   ``live_frames_per_s`` (frames the server produced per second: 50 when it keeps time), ``live_late_frames``
   (produced more than 2 ms after their time), and ``media_sent_pps`` (the media datagrams, live stream and
   alerts, that the devices' sequence numbers say were sent to them, per second). The fleet's sockets keep one
   RTP packet in ``--rtp-keep`` K (a kernel socket filter, see :mod:`loa.bench._soak_fleet`; by default the
   smallest power of two that leaves at most ``FLEET_READ_PPS`` live packets/s to read) and its devices a
   watchdog of ``max(1.5 s, 8 K x 20 ms)`` (the filter makes gaps of K frames on purpose; the watchdog itself is
   measured by `loa bench crash`).
4. **Alerts.** Every ``--alert-every`` seconds (first at half that; none that would end less than
   ``ALERT_MARGIN_S`` before the soak does) a NOC operator triggers an emergency alert to
   ``P`` with the test tone, and a second operator confirms it (the two-person rule, on as `loa serve` runs it).
   It preempts the live stream; ``alerts_held_min_fraction``: the smallest share of devices that reported
   playing an alert; ``live_resumed_min_fraction``: the smallest share back on the live stream, both read when
   every device is back or ``RESUME_WAIT_S`` after the alert's end, whichever comes first
   (``live_resume_max_s``).
5. **API traffic.** ``--readers`` clients each do ``--read-rate`` reads per second (a page of a commune's device
   status, one device, the schedule, the zones) and ``--writers`` clients ``--write-rate`` schedule edits per
   second (create an entry two days ahead, rename it, delete it), each with its own keep-alive connection:
   ``api_ok``, ``api_errors``, ``api_p99_ms``.
6. **Multicast** (``--multicast``). Every commune gets an IP multicast group (``239.255.x.y`` and a free port,
   :func:`loa.bench.alert.free_group`), given to `loa serve --multicast`; the fleet's devices say ``multicast``
   in ``hello`` (every reference device does). The live stream and the alerts then leave the server once per
   packet per commune group: a member's copy goes to the group of its nearest zone inside the target that has
   one (PROTOCOL.md 5.7, ``control_plane/dataplane.py``), so an alert to ``P`` goes to each commune's group once,
   and a group on ``P`` itself would carry nothing; ``join``, the alert message and NACK retransmissions stay
   per device. The fleet follows each group through one shared socket (a group tap, see
   :mod:`loa.bench._soak_fleet`; each device is handed the newest packet it plays every ``TAP_FEED_S``, its
   watchdog is five of those), so no RTP filter is needed (``--rtp-keep`` 1 by default) and the live stream
   goes to every commune by default. ``groups``, ``group_datagrams`` (what the taps received),
   ``group_pps``, and ``live_resumed_from_group_min``: of the devices back on the live stream, the fewest
   whose stream came from their group.
7. **Samples.** Every ``--sample-every`` seconds: the server's RSS (``VmRSS``), open descriptors
   (``/proc/PID/fd``), threads, and from its ``/metrics`` the live async tasks (``loa_async_tasks``), sessions
   and the interpreter's allocated blocks (``loa_python_allocated_blocks``: ``py_blocks_growth_pct`` over the
   same windows as RSS says whether a growth of RSS is live Python objects or the C allocator's). At the end of the
   bring-up and of the soak: ``server_udp_drops_bringup`` and ``server_udp_drops``, datagrams the kernel dropped at
   the server's UDP sockets because their receive buffers were full (:func:`udp_drops`). From the first sample to
   the last: ``server_sessions_started`` (handshakes that gave a session: each device's rekey every
   ``REKEY_AFTER_TIME``, and every return of a device that lost its session) and ``server_messages`` (control
   messages received, by type). ``--trace FILE`` keeps every sample, with all of the server's ``loa_`` gauges (among
   them the reliable control messages it sent, retransmitted and received twice) and the fleet's status then, and
   each alert's time, as JSON lines: the timeline behind the figures.

Verdicts (goals; the bench prints its JSON line, then exits 1 naming each missed one):

* ``rss_growth_pct`` <= 5: from the median RSS of the samples in the window after the warm-up
  (``--warmup-minutes``) to the median of the last window (each window a minute, or half of what follows the
  warm-up if that is shorter);
* ``fd_growth`` <= ``fd_tolerance`` and ``task_growth`` <= ``task_tolerance``: the sample at the end of the
  warm-up to the last one. The tolerance is what comes and goes by design: each API client's keep-alive
  connection (hypercorn may have closed an idle one at either sample: one descriptor and up to
  ``TASKS_PER_CONNECTION`` tasks each), and the SQLite pool's overflow connections (opened under load, closed when
  idle: up to ``SQLITE_OVERFLOW`` of them, three descriptors each: the database, its WAL and shared memory);
* ``sessions_end`` = ``devices`` (the server's count at the end);
* ``alerts_held_min_fraction`` >= 0.99 and ``live_resumed_min_fraction`` >= 0.99 (a device reconnecting at that
  moment is out of reach; every miss is counted);
* ``api_errors`` = 0.

The fleet's own figures say where the simulation, not the server, fell short: ``fleet_procs``;
``fleet_timer_lag_max_s``, the latest any device's timer ran after it was due (a device of its own would never
lag); ``fleet_drained_at_timers``, datagrams handed to a device just before its timer ran, and
``fleet_sessions_lost_at_timers``, sessions a device's own timer ended (its server silent to its clock probes, or
``DEAD_AFTER``, or a rekey unanswered until ``REJECT_AFTER_TIME``), see :class:`loa.devices.FleetHost`; and
``fleet_alert_verifications`` (signatures verified) against ``fleet_alert_verifications_shared`` (outcomes shared
within a child, :func:`loa.devices.fleet.share_alert_verification`).

Bounded: every child has a hard time limit (the fleet its own, and both are killed with this process), a watchdog
thread kills everything if the run overstays its plan by ``OVERSTAY_S``, and every loop is bounded in time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import httpx2
import numpy as np

from loa.bench._alert_fleet import device_keys
from loa.bench._report import emit, environment, read_status
from loa.bench._serve import Child, RtpFeeder, wav_tone
from loa.bench._soak_fleet import merge_statuses
from loa.cli import UserError

FRAME_S = 0.02
FLEET_DEVICES_PER_PROC = 5_000  # devices per fleet child by default (see the module docstring)
FLEET_READ_PPS = 20_000  # the RTP packets per second the fleet process is left to read (chooses K)
LIVE_PPS_MAX = 50_000  # the live stream's fan-out by default (see the module docstring)
TAP_FEED_S = 1.0  # --multicast: how often the fleet's group taps hand each device the newest packet it plays
RESUME_WAIT_S = 30.0
ALERT_MARGIN_S = 5.0  # an alert starts only if it ends this long before the soak does
START_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 30.0
SCRAPE_TIMEOUT_S = 10.0
OVERSTAY_S = 600.0
TASKS_PER_CONNECTION = 4  # hypercorn (trio): the connection, its reader, its idle timer, the request
SQLITE_OVERFLOW = 8  # control_plane/db/engine.py: max_overflow of the SQLite pool
FDS_PER_SQLITE = 3
RSS_GOAL_PCT = 5.0
HELD_GOAL = 0.99
PASSWORD = "mật khẩu đủ dài 2026"  # noqa: S105 - accounts on a throw-away server


@dataclass(frozen=True, slots=True)
class SoakConfig:
    """One run (see the module docstring); times in seconds."""

    devices: int = 10_000
    seconds: float = 600.0
    warmup: float = 120.0
    communes: int = 20
    start_rate: float = 150.0
    alert_every: float = 120.0
    alert_seconds: float = 8.0
    sample_every: float = 10.0
    readers: int = 3
    read_rate: float = 4.0
    writers: int = 1
    write_rate: float = 1.0
    rtp_keep: int | None = None
    live_communes: int | None = None
    seed: int = 1
    multicast: bool = False
    fleet_procs: int | None = None  # None: default_fleet_procs(devices)
    trace: str | None = None  # a file for every sample, server and fleet, as JSON lines

    def live_count(self) -> int:
        """Communes of the live stream: every one, unless that is more than ``LIVE_PPS_MAX`` datagrams/s by
        unicast."""
        if self.live_communes is not None:
            return min(self.live_communes, self.communes)
        if self.multicast:
            return self.communes
        per_commune = self.devices / self.communes
        return max(1, min(self.communes, int(LIVE_PPS_MAX * FRAME_S / per_commune)))

    def live_members(self) -> int:
        """Devices in the live stream's communes (device i stands in commune i mod communes)."""
        k = self.live_count()
        return sum(1 for i in range(self.devices) if i % self.communes < k)

    def keep(self) -> int:
        if self.rtp_keep is not None:
            return self.rtp_keep
        if self.multicast:
            return 1  # no stream reaches the devices' own sockets
        k = 1
        while self.live_members() / FRAME_S / k > FLEET_READ_PPS:
            k *= 2
        return k

    def watchdog_ms(self) -> int | None:
        if self.multicast:
            return int(5 * TAP_FEED_S * 1000)  # five hand-overs, as a filtered stream gets eight packets
        k = self.keep()
        return None if k == 1 else max(1500, int(8 * k * FRAME_S * 1000))

    def bringup_limit(self) -> float:
        """Six times the start schedule (a loaded host, handshake retries), and two minutes."""
        return 6 * self.devices / self.start_rate + 120.0

    def clients(self) -> int:
        return self.readers + self.writers + 2  # and the sampler's and the alerting operators'


# -- processes -------------------------------------------------------------------------------------------------

# Runs a module as ``python -m`` would, after asking the kernel to SIGKILL it when this process ends (Linux
# ``PR_SET_PDEATHSIG``; elsewhere the children's own limits and the stop at the end remain).
_LAUNCH = """import ctypes, os, runpy, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit("the bench ended before this process started")
sys.argv = [sys.argv[2], *sys.argv[3:]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def default_fleet_procs(devices: int) -> int:
    """Fleet children by default: one per ``FLEET_DEVICES_PER_PROC`` devices, at most one per processor."""
    return max(1, min(os.cpu_count() or 1, -(-devices // FLEET_DEVICES_PER_PROC)))


def share_nice(procs: int) -> int | None:
    """The autogroup nice value that gives ``procs`` fleet sessions together about the weight of one (each step of
    nice is a factor of ~1.25 in the scheduler's weight); None for one child (left as it is)."""
    return None if procs <= 1 else min(19, round(math.log(procs) / math.log(1.25)))


def fleet_slices(devices: int, procs: int) -> list[tuple[int, int]]:
    """``(first, count)`` of each fleet child: disjoint, in order, covering every device, sizes within one."""
    procs = max(1, min(procs, devices))
    return [(devices * k // procs, devices * (k + 1) // procs - devices * k // procs) for k in range(procs)]


def spawn_fleets(spec: dict[str, Any], slices: list[tuple[int, int]], status_paths: list[Path],
                 workdir: Path) -> list[Child]:
    """Start a fleet child per slice of ``spec``'s devices (its start rate shared out, so that the whole fleet
    starts at it), each writing its status to its own path; returns them once every one is ready."""
    children: list[Child] = []
    try:
        for k, (first, count) in enumerate(slices):
            path = workdir / f"fleet-{k}.json"
            path.write_text(json.dumps({**spec, "first": first, "slice": count, "status": str(status_paths[k]),
                                        "start_rate": spec["start_rate"] * count / spec["count"],
                                        "autogroup_nice": share_nice(len(slices))}))
            children.append(spawn([str(path)], module="loa.bench._soak_fleet"))
        for child in children:
            child.find(r"^ready$", START_TIMEOUT_S)
    except BaseException:
        for child in children:
            child.kill()
        raise
    return children


def spawn(args: list[str], *, module: str = "loa.cli") -> Child:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _LAUNCH, str(os.getpid()), module, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    child = Child(proc)
    child.start_reader()
    return child


# -- set-up ----------------------------------------------------------------------------------------------------


@dataclass
class Site:
    tokens: dict[str, str]
    device_ids: list[str]
    communes: list[str]


def seed_site(data_dir: Path, config: SoakConfig) -> Site:
    """Zones, people and devices, written directly (see the module docstring)."""
    import logging

    from loa.control_plane import devices as device_records
    from loa.control_plane.auth import Actor
    from loa.control_plane.settings import ControlPlane
    from loa.control_plane.testing import Seed, fast_settings
    from loa.protocol.noise import x25519_public

    communes = [f"C{c:02d}" for c in range(config.communes)]
    csv = "code,name,parent,level\nP,Tỉnh thử,,province\n" + "".join(f"{c},Xã {c},P,commune\n" for c in communes)
    quiet = logging.getLogger("loa.control_plane.authority")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        cp = ControlPlane(fast_settings(data_dir))
    finally:
        quiet.setLevel(level)
    try:
        seed = Seed(cp)
        seed.province(csv)
        people = {"bien-tap": ("editor", "P"), "duyet": ("approver", "P"), "lich": ("scheduler", "P"),
                  "xem": ("viewer", "P"), "noc1": ("noc", None), "noc2": ("noc", None)}
        tokens = {name: seed.user(name, role, scope, password=PASSWORD) for name, (role, scope) in people.items()}
        keys = device_keys(config.seed, config.devices)
        ids: list[str] = []
        for start in range(0, len(keys), 500):
            with cp.db.write() as tx:
                for i in range(start, min(start + 500, len(keys))):
                    ids.append(device_records.enrol(tx, Actor("soak"), public_key=x25519_public(keys[i]),
                                                    kind="speaker", zone=communes[i % len(communes)],
                                                    name=f"cụm loa {i}").id)
    finally:
        cp.close()
    return Site(tokens, ids, communes)


class Api:
    """One client with its own connection; every request counted, timed, and never raised."""

    def __init__(self, base: str, token: str) -> None:
        self.client = httpx2.Client(base_url=base, timeout=REQUEST_TIMEOUT_S,
                                    headers={"Authorization": f"Bearer {token}"})
        self.ok = 0
        self.errors = 0
        self.latencies_ms: list[float] = []
        self.first_error: str | None = None

    def close(self) -> None:
        self.client.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded answer of a 2xx, else None (counted as an error, the first quoted)."""
        began = time.perf_counter()
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx2.HTTPError as exc:
            problem = f"{method} {path}: {type(exc).__name__}"
        else:
            if 200 <= response.status_code < 300:
                self.ok += 1
                self.latencies_ms.append(1000 * (time.perf_counter() - began))
                return response.json() if response.content else {}
            problem = f"{method} {path}: {response.status_code} {response.text[:200]}"
        self.errors += 1
        self.first_error = self.first_error or problem
        return None

    def need(self, method: str, path: str, **kwargs: Any) -> Any:
        """As :meth:`call`, for set-up steps: a failure ends the run with one line."""
        answer = self.call(method, path, **kwargs)
        if answer is None:
            raise UserError(f"soak set-up failed: {self.first_error}")
        return answer


class Traffic:
    """The API clients of step 5, each a thread at a fixed rate (a late request is not made up for)."""

    def __init__(self, base: str, site: Site, config: SoakConfig, item: int) -> None:
        self.site = site
        self.item = item
        self.stop = threading.Event()
        self.clients: list[Api] = []
        self.threads: list[threading.Thread] = []
        for r in range(config.readers):
            self._start(Api(base, site.tokens["xem"]), config.read_rate, self._read, r)
        for w in range(config.writers):
            self._start(Api(base, site.tokens["lich"]), config.write_rate, self._write, w)

    def _start(self, api: Api, rate: float, op: Callable[[Api, int], None], n: int) -> None:
        self.clients.append(api)

        def loop() -> None:
            step = 1.0 / rate
            next_at = time.monotonic() + step * n / max(1, len(self.clients))
            k = 0
            while not self.stop.wait(max(0.0, next_at - time.monotonic())):
                op(api, k + n)
                k += 1
                next_at = max(next_at + step, time.monotonic() - step)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _read(self, api: Api, k: int) -> None:
        site = self.site
        what = k % 4
        if what == 0:
            api.call("GET", "/api/v1/devices", params={"zone": site.communes[k % len(site.communes)], "limit": 100})
        elif what == 1:
            api.call("GET", f"/api/v1/devices/{site.device_ids[(k * 7919) % len(site.device_ids)]}")
        elif what == 2:
            api.call("GET", "/api/v1/schedule", params={"limit": 100})
        else:
            api.call("GET", "/api/v1/zones", params={"limit": 100})

    def _write(self, api: Api, k: int) -> None:
        pending = getattr(api, "pending", None)
        if pending is None or k % 3 == 0:
            start = (datetime.now(UTC) + timedelta(days=2, minutes=k % 10_000)).replace(microsecond=0)
            saved = api.call("POST", "/api/v1/schedule", json={
                "title": f"lịch {k}", "item": self.item, "zones": [self.site.communes[k % len(self.site.communes)]],
                "start": start.isoformat(), "tz": "UTC", "force": True})
            api.pending = None if saved is None else int(saved["entry"]["id"])  # type: ignore[attr-defined]
        elif k % 3 == 1:
            api.call("PATCH", f"/api/v1/schedule/{pending}", json={"title": f"lịch {k} sửa", "force": True})
        else:
            api.call("DELETE", f"/api/v1/schedule/{pending}")
            api.pending = None  # type: ignore[attr-defined]

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(REQUEST_TIMEOUT_S + 5)
        for api in self.clients:
            api.close()

    def figures(self) -> dict[str, Any]:
        latencies = [x for api in self.clients for x in api.latencies_ms]
        return {
            "api_ok": sum(api.ok for api in self.clients),
            "api_errors": sum(api.errors for api in self.clients),
            "api_p50_ms": round(float(np.percentile(latencies, 50)), 1) if latencies else None,
            "api_p99_ms": round(float(np.percentile(latencies, 99)), 1) if latencies else None,
            "api_max_ms": round(max(latencies), 1) if latencies else None,
        }

    def first_error(self) -> str | None:
        return next((api.first_error for api in self.clients if api.first_error), None)


# -- samples ---------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the soak began
    rss_kib: int
    fds: int
    threads: int
    cpu_s: float
    tasks: int | None
    sessions: int | None
    gauges: dict[str, float] = field(default_factory=dict)
    fleet: dict[str, Any] = field(default_factory=dict)  # the fleet's merged status file, when asked for


BLOCKS = "loa_python_allocated_blocks"
_GAUGE = re.compile(r"^(loa_[a-z_]+)(\{[^}]*\})? (\S+)$", re.MULTILINE)


def udp_drops(pid: int) -> int | None:
    """Datagrams the kernel dropped at process ``pid``'s UDP sockets (a full receive buffer), from the ``drops``
    column of ``/proc/net/udp`` and ``udp6`` for the sockets among its descriptors; None where that cannot be read."""
    try:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        total = 0
        for table in ("udp", "udp6"):
            with contextlib.suppress(FileNotFoundError):
                for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                    fields = line.split()
                    if len(fields) >= 13 and fields[9] in inodes:
                        total += int(fields[-1])
    except (OSError, ValueError):
        return None
    return total


MESSAGES = "loa_streamer_messages_received"  # {type="Hello"}...
SESSIONS_STARTED = "loa_streamer_sessions_started"
KERNEL_DROPS = "loa_streamer_kernel_drops"


def parse_gauges(text: str) -> dict[str, float]:
    """``name`` or ``name{labels}`` -> value, of every ``loa_`` line of a Prometheus text page."""
    return {name + (labels or ""): float(value) for name, labels, value in _GAUGE.findall(text)}


def sample_process(pid: int, metrics: Api | None, t: float) -> Sample:
    """The server's memory, descriptors, threads and CPU from /proc now, then its gauges from /metrics (None
    when the scrape fails or ``metrics`` is None)."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1))  # type: ignore[union-attr]
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE).group(1))  # type: ignore[union-attr]
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    gauges: dict[str, float] = {}
    if metrics is not None:
        with contextlib.suppress(httpx2.HTTPError):
            response = metrics.client.get("/metrics", timeout=SCRAPE_TIMEOUT_S)
            if response.status_code == 200:
                gauges = parse_gauges(response.text)
    tasks = gauges.get("loa_async_tasks")
    sessions = gauges.get("loa_streamer_sessions")
    return Sample(t, rss, fds, threads, cpu, None if tasks is None else int(tasks),
                  None if sessions is None else int(sessions), gauges)


class Sampler:
    """A thread taking :func:`sample_process` every ``every`` seconds from ``began`` (a slow scrape delays the
    next sample, never the rest of the run)."""

    def __init__(self, pid: int, metrics: Api, began: float, every: float,
                 fleet: Callable[[], dict[str, Any]] | None = None) -> None:
        self.samples: list[Sample] = []
        self._stop = threading.Event()

        def loop() -> None:
            next_at = began
            while not self._stop.wait(max(0.0, next_at - time.monotonic())):
                with contextlib.suppress(OSError):
                    sample = sample_process(pid, metrics, time.monotonic() - began)
                    if fleet is not None:
                        sample.fleet = fleet()
                    self.samples.append(sample)
                next_at = max(next_at + every, time.monotonic())

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(SCRAPE_TIMEOUT_S + 5)


def write_trace(path: Path, samples: list[Sample], rounds: list[AlertRound]) -> None:
    """``--trace``: one JSON line per alert (``alert_at``), then per sample (its fields, gauges and fleet status)."""
    with path.open("w", encoding="utf-8") as out:
        for r in rounds:
            out.write(json.dumps({"alert_at": round(r.at, 2), "bid": r.bid}) + "\n")
        for sample in samples:
            out.write(json.dumps(dataclasses.asdict(sample), default=str) + "\n")


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _block_growth(samples: list[Sample], config: SoakConfig, window: float) -> dict[str, Any]:
    """The interpreter's allocated blocks (``loa_python_allocated_blocks``) over the same windows as RSS: RSS
    growing while these stay flat is the C allocator's, not live Python objects (a figure, not a goal)."""
    end = samples[-1].t
    early = [s.gauges[BLOCKS] for s in samples if BLOCKS in s.gauges and config.warmup <= s.t <= config.warmup + window]
    late = [s.gauges[BLOCKS] for s in samples if BLOCKS in s.gauges and s.t >= end - window]
    first, last = _median(early), _median(late)
    return {"py_blocks_warm": None if first is None else int(first),
            "py_blocks_end": None if last is None else int(last),
            "py_blocks_growth_pct": None if not first or last is None else round(100 * (last - first) / first, 2)}


def verdicts(samples: list[Sample], config: SoakConfig) -> dict[str, Any]:
    """Memory growth after the warm-up, descriptor and task growth (see the module docstring)."""
    if not samples:
        return {"rss_growth_pct": None, "fd_growth": None, "task_growth": None}
    end = samples[-1].t
    window = min(60.0, max(0.0, end - config.warmup) / 2)
    early = [s.rss_kib for s in samples if config.warmup <= s.t <= config.warmup + window]
    late = [s.rss_kib for s in samples if s.t >= end - window]
    first, last = _median([float(x) for x in early]), _median([float(x) for x in late])
    at_warmup = min(samples, key=lambda s: abs(s.t - config.warmup))
    final = samples[-1]
    counted = [s for s in samples if s.tasks is not None]  # a scrape may have failed
    tasks_warm = min(counted, key=lambda s: abs(s.t - config.warmup)).tasks if counted else None
    tasks_end = counted[-1].tasks if counted else None
    growth = None if first is None or last is None else round(100 * (last - first) / first, 2)
    return {
        "rss_growth_pct": growth,
        "rss_warm_mib": None if first is None else round(first / 1024, 1),
        "rss_end_mib": None if last is None else round(last / 1024, 1),
        "rss_max_mib": round(max(s.rss_kib for s in samples) / 1024, 1),
        "rss_window_s": round(window, 1),
        "fds_warm": at_warmup.fds,
        "fds_end": final.fds,
        "fd_growth": final.fds - at_warmup.fds,
        "threads_warm": at_warmup.threads,
        "threads_end": final.threads,
        "tasks_warm": tasks_warm,
        "tasks_end": tasks_end,
        "task_growth": None if tasks_end is None or tasks_warm is None else tasks_end - tasks_warm,
        **_block_growth(samples, config, window),
        "scrapes_failed": len(samples) - len(counted),
        "samples": len(samples),
    }


def goals_missed(metrics: dict[str, Any], config: SoakConfig) -> list[str]:
    """Each goal of the module docstring that the figures miss, as a short phrase."""
    missed = []

    def check(ok: bool, phrase: str) -> None:
        if not ok:
            missed.append(phrase)

    growth = metrics.get("rss_growth_pct")
    check(growth is not None and growth <= RSS_GOAL_PCT, f"rss_growth_pct {growth} > {RSS_GOAL_PCT}")
    fd = metrics.get("fd_growth")
    check(fd is not None and fd <= metrics["fd_tolerance"], f"fd_growth {fd} > {metrics['fd_tolerance']}")
    tasks = metrics.get("task_growth")
    check(tasks is not None and tasks <= metrics["task_tolerance"],
          f"task_growth {tasks} > {metrics['task_tolerance']}")
    check(metrics.get("sessions_end") == config.devices, f"sessions_end {metrics.get('sessions_end')} "
          f"!= {config.devices}")
    held = metrics.get("alerts_held_min_fraction")
    check(metrics.get("alerts", 0) > 0 and held is not None and held >= HELD_GOAL,
          f"alerts_held_min_fraction {held} < {HELD_GOAL}")
    resumed = metrics.get("live_resumed_min_fraction")
    check(resumed is not None and resumed >= HELD_GOAL, f"live_resumed_min_fraction {resumed} < {HELD_GOAL}")
    check(metrics.get("api_errors") == 0 and metrics.get("api_ok", 0) > 0,
          f"api_errors {metrics.get('api_errors')} (ok {metrics.get('api_ok')})")
    return missed


# -- progress --------------------------------------------------------------------------------------------------


class Progress:
    """A rich bar on a terminal (elapsed, rate, ETA), else a plain line every ``every`` seconds."""

    def __init__(self, total_s: float, every: float = 30.0) -> None:
        self.total = total_s
        self.every = every
        self._last = -float("inf")
        self._bar: Any = None
        from rich.console import Console

        console = Console(stderr=True)
        if console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("soak"), BarColumn(), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)
            self._task = self._bar.add_task("soak", total=total_s, info="")
            self._bar.start()

    def note(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(f"soak: {line}")
        else:
            click.echo(f"soak: {line}", err=True)

    def update(self, done_s: float, info: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=min(done_s, self.total), info=info)
        elif time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            eta = max(0.0, self.total - done_s)
            click.echo(f"soak: {done_s / 60:.1f}/{self.total / 60:.1f} min, {info}, ETA {eta / 60:.1f} min", err=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# -- the run ---------------------------------------------------------------------------------------------------


class BringUpError(Exception):
    """Not every device had a session within the bring-up limit."""

    def __init__(self, connected: int, sessions: int, started: int, limit: float) -> None:
        super().__init__(f"only {connected} devices (the server counted {sessions}) had a session {limit:.0f} s "
                         f"after the fleet started")
        self.figures = {"bringup_connected": connected, "bringup_server_sessions": sessions,
                        "bringup_started": started, "bringup_limit_s": round(limit)}


@dataclass
class AlertRound:
    at: float  # seconds since the soak began
    bid: int | None
    ends_at: float = 0.0  # monotonic
    held: int | None = None
    resumed: int | None = None
    resumed_group: int | None = None  # of ``resumed``: on the live stream from their group
    resume_s: float | None = None
    problem: str | None = None


def run_soak(config: SoakConfig, workdir: Path, progress: Progress) -> dict[str, Any]:
    """The whole run (see the module docstring) in ``workdir``; returns the metrics."""
    began = time.monotonic()
    data_dir = workdir / "data"
    site = seed_site(data_dir, config)
    progress.note(f"seeded {config.devices} devices in {len(site.communes)} communes in "
                  f"{time.monotonic() - began:.1f} s")
    server: Child | None = None
    feeder: RtpFeeder | None = None
    traffic: Traffic | None = None
    clients: list[Api] = []
    killed = threading.Event()
    slices = fleet_slices(config.devices, config.fleet_procs or default_fleet_procs(config.devices))
    status_paths = [workdir / f"fleet-status-{k}.json" for k in range(len(slices))]
    fleets: list[Child] = []

    def fleet_status() -> dict[str, Any]:
        return merge_statuses([read_status(path) for path in status_paths])

    def fleet_ended() -> bool:
        return any(child.proc.poll() is not None for child in fleets)

    def kill_all() -> None:
        killed.set()
        for child in (*fleets, server):
            if child is not None and child.proc.poll() is None:
                child.proc.kill()

    plan = config.bringup_limit() + config.seconds + 2 * START_TIMEOUT_S
    overstay = threading.Timer(plan + OVERSTAY_S, kill_all)
    overstay.daemon = True
    overstay.start()
    samples: list[Sample] = []
    rounds: list[AlertRound] = []
    groups = commune_groups(site.communes) if config.multicast else {}
    try:
        server = spawn(["serve", "--data-dir", str(data_dir), "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0",
                        *(arg for code, group in groups.items() for arg in ("--multicast", f"{code}={group}"))])
        server.find(r"devices on udp \S+; server public key", START_TIMEOUT_S)
        _, http = server.find(r"control plane API on (http://\S+)", 5)
        _, udp = server.find(r"devices on udp (\S+); server public key (\S+)", 5)
        _, authority = server.find(r"alert authority public key (\S+)", START_TIMEOUT_S)
        base = http.group(1)
        editor, approver, noc1, noc2, watcher, sampler_api = (
            Api(base, site.tokens[n]) for n in ("bien-tap", "duyet", "noc1", "noc2", "xem", "xem"))
        clients += [editor, approver, noc1, noc2, watcher, sampler_api]
        item = editor.need("POST", "/api/v1/library/audio", data={"title": "Âm thử", "zone": "P"},
                           files={"file": ("tone.wav", wav_tone(config.alert_seconds, 880.0), "audio/wav")})
        editor.need("POST", f"/api/v1/library/{item['id']}/submit")
        approver.need("POST", f"/api/v1/library/{item['id']}/approve")

        import base64

        host, _, port = udp.group(1).rpartition(":")
        spec = {"host": host, "port": int(port), "server_public": base64.b64decode(udp.group(2)).hex(),
                "authority": base64.b64decode(authority.group(1)).hex(), "seed": config.seed,
                "count": config.devices, "start_rate": config.start_rate, "rtp_keep": config.keep(),
                "watchdog_ms": config.watchdog_ms(), "backend": "asyncio",
                "multicast": config.multicast, "feed_every": TAP_FEED_S,
                "limit": config.bringup_limit() + config.seconds + 2 * START_TIMEOUT_S}
        fleets += spawn_fleets(spec, slices, status_paths, workdir)
        up_began = time.monotonic()
        sessions = 0
        while True:  # every device with a session, as the fleet and the server count them
            status = fleet_status()
            with contextlib.suppress(OSError, AttributeError):
                sessions = sample_process(server.proc.pid, watcher, 0.0).sessions or 0
            if status.get("connected") == config.devices and sessions == config.devices:
                break
            if killed.is_set() or fleet_ended() or server.proc.poll() is not None:
                raise UserError("a child process ended during the bring-up: " + _tail(*fleets, server))
            if time.monotonic() - up_began > config.bringup_limit():
                raise BringUpError(int(status.get("connected", 0)), sessions, int(status.get("started", 0)),
                                   config.bringup_limit())
            progress.update(0.0, f"bring-up {status.get('connected', 0)}/{config.devices} sessions")
            time.sleep(1.0)
        bringup_s = time.monotonic() - up_began
        drops_bringup = udp_drops(server.proc.pid)
        progress.note(f"{config.devices} sessions in {bringup_s:.1f} s")

        live_zones = ["P"] if config.live_count() == config.communes else site.communes[: config.live_count()]
        live = noc1.need("POST", "/api/v1/broadcasts", json={"zones": live_zones, "title": "Trực tiếp", "port": 0})
        live_bid = int(live["bid"])
        lhost, _, lport = str(live["listen"]).rpartition(":")
        feeder = RtpFeeder((lhost, int(lport)))
        traffic = Traffic(base, site, config, int(item["id"]))
        soak_began = time.monotonic()
        first_status = fleet_status()
        sampler = Sampler(server.proc.pid, sampler_api, soak_began, config.sample_every,
                          fleet_status if config.trace else None)
        samples = sampler.samples
        next_alert = soak_began + config.alert_every / 2
        pending: list[AlertRound] = []
        while (now := time.monotonic()) < soak_began + config.seconds:
            if killed.is_set() or server.proc.poll() is not None or fleet_ended():
                raise UserError("a child process ended during the soak: " + _tail(*fleets, server))
            if now >= next_alert and now + config.alert_seconds + ALERT_MARGIN_S < soak_began + config.seconds:
                next_alert += config.alert_every
                pending.append(_alert(noc1, noc2, now - soak_began, item=int(item["id"]),
                                      content_id=item["content_id"], config=config))
                rounds.append(pending[-1])
            for round_ in list(pending):
                if _follow(round_, fleet_status(), live_bid, config):
                    pending.remove(round_)
            last = samples[-1] if samples else None
            so_far = traffic.figures()
            progress.update(now - soak_began,
                            f"rss {last.rss_kib / 1024:.0f} MiB, fds {last.fds}, tasks {last.tasks}, sessions "
                            f"{last.sessions}, api {so_far['api_ok']} ok/{so_far['api_errors']} err, alerts "
                            f"{len(rounds)}"
                            if last else "starting")
            time.sleep(0.25)
        sampler.stop()
        samples.append(sample_process(server.proc.pid, sampler_api, time.monotonic() - soak_began))
        if config.trace:
            samples[-1].fleet = fleet_status()
        drops_end = udp_drops(server.proc.pid)
        soak_s = time.monotonic() - soak_began
        if config.trace:
            write_trace(Path(config.trace), samples, rounds)
        final_status = fleet_status()
        for round_ in pending:  # the soak ended first: read as things stand
            _follow(round_, final_status, live_bid, config, final=True)
        traffic.close()
        api_figures = traffic.figures()
        api_error = traffic.first_error()
        traffic = None
        feeder.stop()
        feeder = None
    finally:
        overstay.cancel()
        if traffic is not None:
            traffic.close()
        if feeder is not None:
            feeder.stop()
        for api in clients:
            api.close()
        for child in fleets:
            child.stop(grace=30.0)
        if server is not None:
            server.stop(grace=30.0)
    end_status = fleet_status()
    live_gauge = f'loa_broadcast_frames{{bid="{live_bid}"}}'
    late_gauge = f'loa_broadcast_late_frames{{bid="{live_bid}"}}'
    frames = samples[-1].gauges.get(live_gauge, 0.0)
    span = [s for s in samples if live_gauge in s.gauges]
    frames_rate = ((span[-1].gauges[live_gauge] - span[0].gauges[live_gauge]) / (span[-1].t - span[0].t)
                   if len(span) > 1 and span[-1].t > span[0].t else None)
    expected = final_status.get("rtp_expected", 0) - first_status.get("rtp_expected", 0)
    cpu = (samples[-1].cpu_s - samples[0].cpu_s) / (samples[-1].t - samples[0].t) if len(samples) > 1 else None
    held = [r.held / config.devices for r in rounds if r.held is not None]
    resumed = [r.resumed / config.live_members() for r in rounds if r.resumed is not None]
    from_group = [r.resumed_group for r in rounds if r.resumed_group is not None]
    group_datagrams = (final_status.get("group_received_max", 0)  # what the groups carried, not x fleet children
                       - first_status.get("group_received_max", 0))
    first_gauges, last_gauges = (samples[0].gauges, samples[-1].gauges) if samples else ({}, {})

    def grown(name: str) -> float:
        return last_gauges.get(name, 0.0) - first_gauges.get(name, 0.0)

    messages = {key[len(MESSAGES) + 7:-2]: int(grown(key)) for key in last_gauges if key.startswith(MESSAGES + "{")}
    metrics: dict[str, Any] = {
        "devices": config.devices,
        "soak_s": round(soak_s, 1),
        "bringup_s": round(bringup_s, 1),
        **verdicts(samples, config),
        "fd_tolerance": config.clients() + SQLITE_OVERFLOW * FDS_PER_SQLITE,
        "task_tolerance": TASKS_PER_CONNECTION * config.clients(),
        "sessions_end": next((s.sessions for s in reversed(samples) if s.sessions is not None), None),
        "sessions_min": min((s.sessions for s in samples if s.sessions is not None), default=None),
        "fleet_connected_end": final_status.get("connected"),
        "alerts": len(rounds),
        "alerts_failed": sum(r.bid is None for r in rounds),
        "alerts_held_min_fraction": round(min(held), 5) if len(held) == len(rounds) and held else None,
        "live_resumed_min_fraction": round(min(resumed), 5) if len(resumed) == len(rounds) and resumed else None,
        "live_resume_max_s": max((r.resume_s for r in rounds if r.resume_s is not None), default=None),
        "live_frames": int(frames),
        "live_frames_per_s": None if frames_rate is None else round(frames_rate, 2),
        "live_late_frames": int(samples[-1].gauges.get(late_gauge, 0.0)),
        "live_communes": config.live_count(),
        "live_devices": config.live_members(),
        "live_needed_pps": round(config.live_members() / FRAME_S),
        "live_to_all_needed_pps": round(config.devices / FRAME_S),
        "media_sent_pps": round(expected / soak_s) if soak_s > 0 else None,
        "rtp_keep": config.keep(),
        "multicast": config.multicast,
        "groups": len(groups),
        "group_datagrams": group_datagrams,
        "group_pps": round(group_datagrams / soak_s) if soak_s > 0 else None,
        "group_errors": final_status.get("io", {}).get("group_errors"),
        "fleet_tap_drops": end_status.get("taps", {}).get("drops"),
        "live_resumed_from_group_min": min(from_group) if len(from_group) == len(rounds) and from_group else None,
        "server_sessions_started": int(grown(SESSIONS_STARTED)),
        "server_messages": dict(sorted(messages.items(), key=lambda kv: -kv[1])),
        "fleet_rtp_received": final_status.get("rtp_received"),
        "fleet_rtp_expected": final_status.get("rtp_expected"),
        "fleet_kernel_drops": end_status.get("kernel_drops"),
        "fleet_watchdog_fires": final_status.get("watchdog_fires"),
        "server_udp_drops_bringup": drops_bringup,
        "server_udp_drops": drops_end,
        "fleet_procs": len(slices),
        "fleet_timer_lag_max_s": end_status.get("timer_lag_max_s"),
        "fleet_drained_at_timers": end_status.get("drained_at_timers"),
        "fleet_sessions_lost_at_timers": end_status.get("sessions_lost_at_timers"),
        "fleet_alert_verifications": end_status.get("verifications", {}).get("verified"),
        "fleet_alert_verifications_shared": end_status.get("verifications", {}).get("shared"),
        "telemetry_reports": final_status.get("telemetry_sent"),
        "server_cpu_pct": None if cpu is None else round(100 * cpu, 1),
        **api_figures,
    }
    if api_error:
        progress.note(f"first API error: {api_error}")
    for r in rounds:
        if r.problem:
            progress.note(f"alert at {r.at:.0f} s: {r.problem}")
    progress.note("alerts (at s, devices that held it, back on the live stream (of them from their group), seconds "
                  "to that): " + ", ".join(f"{r.at:.0f}: {r.held}/{r.resumed} ({r.resumed_group})/{r.resume_s}"
                                           for r in rounds))
    progress.note("samples (t s, RSS MiB, fds, threads, tasks, sessions, datagrams the kernel dropped at the "
                  "server's socket so far): " + ", ".join(
        f"{s.t:.0f}: {s.rss_kib / 1024:.1f}/{s.fds}/{s.threads}/{s.tasks}/{s.sessions}/"
        f"{s.gauges.get(KERNEL_DROPS, 0):.0f}" for s in samples))
    return metrics


def _tail(*children: Child | None) -> str:
    lines = [line for child in children if child is not None for _, line in child.lines[-5:]]
    return " | ".join(lines)[-600:] or "no output"


def _alert(noc1: Api, noc2: Api, at: float, *, item: int, content_id: str, config: SoakConfig) -> AlertRound:
    """One alert to the province: triggered by one operator, confirmed by the other."""
    draft = noc1.call("POST", "/api/v1/alerts", json={
        "zones": ["P"], "status": "actual", "content_id": content_id, "library_item": item,
        "title": f"Diễn tập {int(at)}", "text": "Bão: sơ tán", "trigger": True})
    if draft is None:
        return AlertRound(at, None, problem=noc1.first_error)
    confirmed = noc2.call("POST", f"/api/v1/alerts/{draft['id']}/confirm")
    if confirmed is None or confirmed.get("state") != "active" or confirmed.get("bid") is None:
        return AlertRound(at, None, problem=noc2.first_error or f"state {confirmed and confirmed.get('state')}")
    return AlertRound(at, int(confirmed["bid"]), ends_at=time.monotonic() + config.alert_seconds)


def _follow(round_: AlertRound, status: dict[str, Any], live_bid: int, config: SoakConfig, *,
            final: bool = False) -> bool:
    """Note who held the alert and who is back on the live stream after it; True once done with it."""
    if round_.bid is None:
        return True
    now = time.monotonic()
    if (now < round_.ends_at or not status) and not final:
        return False
    round_.held = int(status.get("seen", {}).get(str(round_.bid), 0))  # grows while late devices catch up
    back = int(status.get("now", {}).get(str(live_bid), 0))  # of the live stream's devices
    everyone = round_.held == config.devices and back == config.live_members()
    if everyone or final or now >= round_.ends_at + RESUME_WAIT_S:
        round_.resumed = back
        round_.resumed_group = int(status.get("now_group", {}).get(str(live_bid), 0))
        round_.resume_s = round(now - round_.ends_at, 1)
        return True
    return False


def commune_groups(communes: list[str]) -> dict[str, str]:
    """A multicast group for each commune (see the module docstring), all different."""
    from loa.bench.alert import free_group

    groups: dict[str, str] = {}
    for code in communes:
        for _ in range(100):  # bounded: 64,516 addresses, so a repeat is rare
            group = free_group()
            if group.rpartition(":")[0] not in {g.rpartition(":")[0] for g in groups.values()}:
                break
        groups[code] = group
    return groups


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="loa-soak-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@click.command("soak")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
@click.option("--devices", type=click.IntRange(1, 20_000), default=10_000, show_default=True,
              help="Reference devices in the fleet process, all in the province.")
@click.option("--minutes", type=click.FloatRange(0.2, 240), default=10.0, show_default=True,
              help="Length of the soak, from the start of the live stream.")
@click.option("--warmup-minutes", type=click.FloatRange(0, 60), default=2.0, show_default=True,
              help="Warm-up at the start of the soak, left out of the growth verdicts.")
@click.option("--alert-every", type=click.FloatRange(5, 3600), default=120.0, show_default=True,
              help="Seconds between alerts to the province (the first at half this).")
@click.option("--alert-seconds", type=click.FloatRange(1, 60), default=8.0, show_default=True,
              help="Length of the alert's test tone.")
@click.option("--start-rate", type=click.FloatRange(1, 190), default=150.0, show_default=True,
              help="Devices started per second (below the server's cookie threshold of 200 inits/s).")
@click.option("--sample-every", type=click.FloatRange(0.5, 60), default=10.0, show_default=True,
              help="Seconds between samples of the server process.")
@click.option("--trace", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write every sample (the server's figures and gauges, the fleet's status) and each alert's "
                   "time to this file, as JSON lines.")
@click.option("--readers", type=click.IntRange(0, 32), default=3, show_default=True, help="API reading clients.")
@click.option("--read-rate", type=click.FloatRange(0.1, 100), default=4.0, show_default=True,
              help="Reads per second per reading client.")
@click.option("--writers", type=click.IntRange(0, 8), default=1, show_default=True,
              help="API clients editing the schedule.")
@click.option("--write-rate", type=click.FloatRange(0.1, 20), default=1.0, show_default=True,
              help="Schedule edits per second per writing client.")
@click.option("--rtp-keep", type=click.IntRange(1, 1024), default=None,
              help="Keep one RTP packet in K at the fleet's sockets (a power of two; default: enough to leave the "
                   f"fleet {FLEET_READ_PPS} packets/s).")
@click.option("--live-communes", type=click.IntRange(1, 20), default=None,
              help=f"Communes the live stream goes to (default: as many as keep it within {LIVE_PPS_MAX} "
                   "datagrams/s; the province has min(20, devices/10) communes).")
@click.option("--multicast", is_flag=True,
              help="Give every commune an IP multicast group (loa serve --multicast): the live stream and alerts "
                   "go once per packet to each group, and the live stream to every commune by default.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seeds the device keys.")
@click.option("--fleet-procs", type=click.IntRange(1, 64), default=None,
              help=f"Fleet processes, each with a disjoint slice of the devices (default: one per "
                   f"{FLEET_DEVICES_PER_PROC} devices, at most one per processor).")
def soak(*, as_json: bool, devices: int, minutes: float, warmup_minutes: float, alert_every: float,
         alert_seconds: float, start_rate: float, sample_every: float, readers: int, read_rate: float, writers: int,
         write_rate: float, rtp_keep: int | None, live_communes: int | None, multicast: bool, seed: int,
         fleet_procs: int | None, trace: str | None) -> None:
    """10,000 devices, a live stream, alerts and API traffic for a bounded soak: memory, descriptors, tasks."""
    if warmup_minutes >= minutes:
        raise UserError(f"--warmup-minutes ({warmup_minutes:g}) must be shorter than --minutes ({minutes:g})")
    if rtp_keep is not None and rtp_keep & (rtp_keep - 1):
        raise UserError(f"--rtp-keep must be a power of two, not {rtp_keep}")
    if readers + writers == 0:
        raise UserError("give at least one API client (--readers or --writers)")
    from loa.devices.fleet import FleetError, raise_open_file_limit

    try:
        raise_open_file_limit(devices)
    except FleetError as exc:
        raise UserError(str(exc)) from None
    config = SoakConfig(devices=devices, seconds=60 * minutes, warmup=60 * warmup_minutes,
                        communes=max(1, min(20, devices // 10)), start_rate=start_rate, alert_every=alert_every,
                        alert_seconds=alert_seconds, sample_every=sample_every, readers=readers,
                        read_rate=read_rate, writers=writers, write_rate=write_rate, rtp_keep=rtp_keep,
                        live_communes=live_communes, seed=seed, multicast=multicast,
                        fleet_procs=None if fleet_procs is None else min(fleet_procs, devices), trace=trace)
    progress = Progress(config.seconds)
    try:
        with _workdir() as workdir:
            metrics = run_soak(config, workdir, progress)
    except BringUpError as exc:  # what it reached, then the one line
        emit("soak", {"devices": devices, **exc.figures}, as_json=as_json,
             env=environment(start_rate=start_rate, failed=str(exc)))
        raise UserError(f"soak: {exc}") from None
    finally:
        progress.close()
    missed = goals_missed(metrics, config)
    metrics["goals_missed"] = len(missed)
    procs = len(fleet_slices(devices, config.fleet_procs or default_fleet_procs(devices)))
    fleet_kind = (f"{procs} process{'es' if procs > 1 else ''}, asyncio+uvloop, count-only devices, shared alert "
                  "verification, timers after input" + (", group taps" if multicast else ""))
    env = environment(server="loa serve (trio, SQLite)", fleet=fleet_kind, multicast=multicast,
                      frame_ms=20, telemetry_s=60, rtp_keep=config.keep(), watchdog_ms=config.watchdog_ms(),
                      start_rate=start_rate, communes=config.communes, readers=readers, read_rate=read_rate,
                      writers=writers, write_rate=write_rate, alert_every_s=alert_every,
                      warmup_s=config.warmup, two_person_rule=True, network="loopback")
    emit("soak", metrics, as_json=as_json, env=env)
    if missed:
        raise UserError("soak goals missed: " + "; ".join(missed))
