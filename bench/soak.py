"""`loa bench soak`: `loa serve` under a whole province for a bounded time: memory flat, no descriptor or task leak.

One `loa serve` child (trio, SQLite in a fresh data directory) and ``--fleet-procs`` fleet children
(:mod:`loa.bench._soak_fleet`, ``--devices`` reference devices in all, each child a disjoint slice of them, on
loopback sockets, counting only, as ``loa fleet`` runs them), each in a session of its own, as on machines of their
own (with Linux's autogroup scheduling a session is a scheduling group with its own share of the processor,
whatever else runs on the host; as `loa bench flood` does). The bench sums the children's status files
(:func:`loa.bench._soak_fleet.merge_statuses`). By default one child per ``FLEET_DEVICES_PER_PROC`` devices, and
no more children than processors (:func:`loa.bench._soak_site.default_fleet_procs`): an alert to the province
has every device verify it, take its ``amp`` and ``join`` and report its ``state`` at once, which 10,000 devices
in one Python process turned into tens of seconds of backlog; a second process puts the other core to that work,
and a child per core is the most that adds processor time rather than scheduling groups competing with the server
(each session has its own share of the processor).

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
   It preempts the live stream. ``alerts_ready_min_fraction``: the smallest share of devices that were ready to
   play an alert before it ended (``--alert-seconds`` after the confirmation came back), by the kernel's arrival
   time of the datagram that made each ready: the alert was its current broadcast and it knew the alert's stream
   (:class:`loa.bench._soak_fleet.Readiness`). That is the rule of `loa bench alert`: a fleet process does the
   work of thousands of devices one after another, and a device with a processor of its own would have started
   on the datagram when it arrived. ``alerts_ready_p99_max_s``: for the slowest alert, the seconds from just
   before the confirmation was sent until 99 % of the devices were ready, by the same arrival times (None when
   an alert never got there). ``alerts_half_handled_max_s``: the same for half of the devices, by when the fleet
   process came round to those datagrams: the difference is the simulation falling behind. Devices still not
   ready ``STRAGGLERS_AFTER_S`` after the first one was are counted, and a few described (their session, what
   they hold and play, their alert counts, drops and reliable channel), in a line of the output and in the
   fleet's status in the trace. ``live_back_min_fraction``: the smallest share of the live stream's devices back
   on it within ``RESUME_WAIT_S`` of an alert's end, by the same rule: the kernel's arrival time of the first
   datagram after which a device that was ready for the alert had the live stream as its current broadcast again,
   its stream known; a device never ready for the alert is never counted back from it.
   ``live_back_p99_max_s``: for the slowest alert, the seconds from the earliest it could have ended (just before
   the confirmation was sent, plus ``--alert-seconds``) until 99 % of them were back. Both are read once the
   fleet has handled every live device's way back, or ``BACK_HANDLED_WAIT_S`` after ``RESUME_WAIT_S``; when the
   soak's time is up, the server and the fleet run on until the last alerts' figures are read (at most
   ``SETTLE_S``).
   ``alerts_held_min_fraction``: the smallest share of devices that reported playing an alert in the simulation
   (a counting device reports ``ip`` once the group tap hands it a packet of the alert's stream, so a device the
   fleet reached after the stream ended never does); ``live_resumed_min_fraction``: the smallest share that
   reported playing the live stream again; all of these read when every device is back or ``RESUME_WAIT_S``
   after the alert's end, whichever comes first (``live_resume_max_s``). ``alerts_half_held_max_s``: the longest
   an alert took, from its confirmation, until half of the devices had reported playing it (read from the fleet's
   status, written every second; None when an alert never got there).
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
   and where the memory is, over the same windows as RSS: the interpreter's allocated blocks
   (``loa_python_allocated_blocks``: ``py_blocks_growth_pct``, live Python objects), the C allocator's bytes in
   use (``loa_c_heap_bytes``: ``c_heap_in_use_mib_growth_pct``) and SQLite's (``sqlite_mib_growth_pct``); RSS
   growing while these stay level is memory the allocators keep, not memory in use. At the end of the bring-up
   and of the soak: ``server_udp_drops_bringup`` and ``server_udp_drops``, datagrams the kernel dropped at
   the server's UDP sockets because their receive buffers were full (:func:`loa.bench._soak_measure.udp_drops`).
   From the first sample to the last: ``server_sessions_started`` (handshakes that gave a session: each device's
   rekey every ``REKEY_AFTER_TIME``, and every return of a device that lost its session) and ``server_messages``
   (control messages received, by type). ``--trace FILE`` keeps every sample, with all of the server's ``loa_``
   gauges (among them the reliable control messages it sent, retransmitted and received twice) and the fleet's
   status then, and each alert's time, as JSON lines: the timeline behind the figures.

Verdicts (goals; the bench prints its JSON line, then exits 1 naming each missed one):

* ``rss_growth_pct`` <= 5: from the median RSS of the samples in the window after the warm-up
  (``--warmup-minutes``) to the median of the last window. Each window is whole alert cycles, the fewest that
  last a minute, when two such windows fit after the warm-up: both then hold the same part of the cycle, an
  alert's burst included, so a window that happens to follow an alert does not read as growth. Otherwise each is
  a minute, or half of what follows the warm-up if that is shorter. ``rss_window_s`` says which;
* ``fd_growth`` <= ``fd_tolerance`` and ``task_growth`` <= ``task_tolerance``: the sample at the end of the
  warm-up to the last one. The tolerance is what comes and goes by design: each API client's keep-alive
  connection (hypercorn may have closed an idle one at either sample: one descriptor and up to
  ``TASKS_PER_CONNECTION`` tasks each), and the SQLite pool's overflow connections (opened under load, closed when
  idle: up to ``SQLITE_OVERFLOW`` of them, three descriptors each: the database, its WAL and shared memory);
* ``sessions_end`` = ``devices`` (the server's count at the end);
* ``alerts_ready_min_fraction`` >= 0.99 and ``live_back_min_fraction`` >= 0.99 (a device reconnecting at that
  moment is out of reach; every miss is counted);
* ``api_errors`` = 0.

The fleet's own figures say where the simulation, not the server, fell short: ``alerts_held_min_fraction``,
``live_resumed_min_fraction`` and ``alerts_half_held_max_s`` (above: on 2 cores, 10,000 counting devices in two
Python processes beside the server reach the last of an alert's datagrams tens of seconds after they arrived;
SECURITY.md has the figures); ``fleet_procs``;
``fleet_timer_lag_max_s``, the latest any device's timer ran after it was due (a device of its own would never
lag); ``fleet_drained_at_timers``, datagrams handed to a device just before its timer ran, and
``fleet_sessions_lost_at_timers``, sessions a device's own timer ended (its server silent to its clock probes, or
``DEAD_AFTER``, or a rekey unanswered until ``REJECT_AFTER_TIME``), see :class:`loa.devices.FleetHost`;
``fleet_sessions_ended``, every session the devices' own timers ended, by cause: ``silent`` (clock probes
unanswered, PROTOCOL.md 4.7), ``dead`` (``DEAD_AFTER``) and ``expired`` (``REJECT_AFTER_TIME``);
``fleet_clock_answers_stale``, the devices' clock answers refused as unknown, repeated or come more than 10 s
after their probe; and
``fleet_alert_verifications`` (signatures verified) against ``fleet_alert_verifications_shared`` (outcomes shared
within a child, :func:`loa.devices.fleet.share_alert_verification`).

The code: :mod:`loa.bench._soak_site` (the configuration, the processes, the seeded site, the API traffic),
:mod:`loa.bench._soak_measure` (samples, trace, verdicts and goals), this module (the run and the command).

Bounded: every child has a hard time limit (the fleet its own, and both are killed with this process), a watchdog
thread kills everything if the run overstays its plan by ``OVERSTAY_S``, and every loop is bounded in time.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from loa.bench._report import emit, environment, read_status
from loa.bench._serve import Child, RtpFeeder, wav_tone
from loa.bench._soak_fleet import STRAGGLERS_AFTER_S, merge_statuses
from loa.bench._soak_measure import (
    BACK_HANDLED_WAIT_S,
    KERNEL_DROPS,
    MESSAGES,
    RESUME_WAIT_S,
    SESSIONS_STARTED,
    AlertRound,
    Sample,
    Sampler,
    follow_alert,
    goals_missed,
    sample_process,
    udp_drops,
    verdicts,
    write_trace,
)
from loa.bench._soak_site import (
    FLEET_DEVICES_PER_PROC,
    FLEET_READ_PPS,
    FRAME_S,
    LIVE_PPS_MAX,
    START_TIMEOUT_S,
    TAP_FEED_S,
    Api,
    SoakConfig,
    Traffic,
    default_fleet_procs,
    fleet_slices,
    seed_site,
    spawn,
    spawn_fleets,
)
from loa.cli import UserError

ALERT_MARGIN_S = 5.0  # an alert starts only if it ends this long before the soak does
OVERSTAY_S = 600.0
SETTLE_S = RESUME_WAIT_S + BACK_HANDLED_WAIT_S  # after the soak, the longest it waits for its last alerts' figures
TASKS_PER_CONNECTION = 4  # hypercorn (trio): the connection, its reader, its idle timer, the request
SQLITE_OVERFLOW = 8  # control_plane/db/engine.py: max_overflow of the SQLite pool
FDS_PER_SQLITE = 3


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

    plan = config.bringup_limit() + config.seconds + SETTLE_S + 2 * START_TIMEOUT_S
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
                "limit": config.bringup_limit() + config.seconds + SETTLE_S + 2 * START_TIMEOUT_S}
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

        def follow(status: dict[str, Any], *, final: bool = False) -> None:
            """Take from ``pending`` the alerts whose figures the fleet's ``status`` completes."""
            pending[:] = [r for r in pending if not follow_alert(r, status, live_bid, config, final=final)]

        while (now := time.monotonic()) < soak_began + config.seconds:
            if killed.is_set() or server.proc.poll() is not None or fleet_ended():
                raise UserError("a child process ended during the soak: " + _tail(*fleets, server))
            if now >= next_alert and now + config.alert_seconds + ALERT_MARGIN_S < soak_began + config.seconds:
                next_alert += config.alert_every
                pending.append(_alert(noc1, noc2, now - soak_began, item=int(item["id"]),
                                      content_id=item["content_id"], config=config))
                rounds.append(pending[-1])
            follow(fleet_status())
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
        # the last alerts' ways back: the server and the fleet keep running until they are read (bounded)
        settle_until = time.monotonic() + SETTLE_S
        while pending and time.monotonic() < settle_until:
            if killed.is_set() or server.proc.poll() is not None or fleet_ended():
                break
            follow(fleet_status())
            progress.update(soak_s, f"reading the last alert's way back ({len(pending)} left)")
            time.sleep(0.25)
        final_status = fleet_status()
        follow(final_status, final=True)  # what the soak ended before: read as things stand
        if config.trace:
            write_trace(Path(config.trace), samples, rounds)
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
    ready = [r.ready / config.devices for r in rounds if r.ready is not None]
    resumed = [r.resumed / config.live_members() for r in rounds if r.resumed is not None]
    back = [r.back / config.live_members() for r in rounds if r.back is not None]
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
        "alerts_ready_min_fraction": round(min(ready), 5) if len(ready) == len(rounds) and ready else None,
        "alerts_ready_p99_max_s": (max(r.ready_p99_s for r in rounds if r.ready_p99_s is not None)
                                   if rounds and all(r.ready_p99_s is not None for r in rounds) else None),
        "alerts_held_min_fraction": round(min(held), 5) if len(held) == len(rounds) and held else None,
        "live_back_min_fraction": round(min(back), 5) if len(back) == len(rounds) and back else None,
        "live_back_p99_max_s": (max(r.back_p99_s for r in rounds if r.back_p99_s is not None)
                                if rounds and all(r.back_p99_s is not None for r in rounds) else None),
        "live_resumed_min_fraction": round(min(resumed), 5) if len(resumed) == len(rounds) and resumed else None,
        "live_resume_max_s": max((r.resume_s for r in rounds if r.resume_s is not None), default=None),
        "alerts_half_held_max_s": (max(r.half_s for r in rounds if r.half_s is not None)
                                   if rounds and all(r.half_s is not None for r in rounds) else None),
        "alerts_half_handled_max_s": (max(r.handled_p50_s for r in rounds if r.handled_p50_s is not None)
                                      if rounds and all(r.handled_p50_s is not None for r in rounds) else None),
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
        "fleet_sessions_ended": final_status.get("sessions_ended"),
        "fleet_clock_answers_stale": final_status.get("clock_answers_stale"),
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
    progress.note("alerts (at s, devices ready for it by kernel arrival (seconds until 99 % were; until half were "
                  "handled by the fleet), back on the live stream by kernel arrival within 30 s of its end (seconds "
                  "until 99 % were), devices that held it (seconds until half had), back on the live stream in the "
                  "fleet (of them from their group), seconds to that): "
                  + ", ".join(f"{r.at:.0f}: {r.ready} ({r.ready_p99_s}; {r.handled_p50_s})/{r.back} ({r.back_p99_s})/"
                              f"{r.held} ({r.half_s})/{r.resumed} ({r.resumed_group})/{r.resume_s}" for r in rounds))
    for r in rounds:
        if r.stragglers and r.stragglers.get("devices"):
            progress.note(f"alert at {r.at:.0f} s: {r.stragglers['devices']} devices not ready "
                          f"{STRAGGLERS_AFTER_S:.0f} s after the first was; for example: "
                          + json.dumps(r.stragglers.get("sample", [])[:3]))
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
    confirming_at = time.monotonic()
    confirmed = noc2.call("POST", f"/api/v1/alerts/{draft['id']}/confirm")
    if confirmed is None or confirmed.get("state") != "active" or confirmed.get("bid") is None:
        return AlertRound(at, None, problem=noc2.first_error or f"state {confirmed and confirmed.get('state')}")
    return AlertRound(at, int(confirmed["bid"]), ends_at=time.monotonic() + config.alert_seconds,
                      confirming_at=confirming_at)


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
