"""The fleet side of `loa bench soak`, run as its own process: ``python -m loa.bench._soak_fleet SPEC``.

``SPEC`` is a JSON file written by the bench: the server address and public key, the authority key, the device
keys' seed and count (:func:`loa.bench._alert_fleet.device_keys`) and this process's slice of them (``first``
and ``slice``: devices ``first`` .. ``first + slice - 1``; the whole fleet by default), the start rate, ``rtp_keep``
(K, a power of two), an optional ``watchdog_ms``, ``multicast``, an optional ``autogroup_nice`` (the scheduler
weight of this process's session, :func:`lower_share`), the status file and a time limit. The devices run
in a :class:`loa.devices.FleetHost` on loopback sockets with kernel receive timestamps, counting only
(``count_only``: control, clock, telemetry and alerts as on a real device; RTP counted, not authenticated or
played), as ``loa fleet`` runs them. The bench
may run several of these processes, each with a disjoint slice; :func:`merge_statuses` sums their status files
into the status of one fleet.

**Simulation shortcuts**, beside those below (group taps, the RTP filter), all in the host process, none in
what a device decides:

* The devices of one process verify alert and cancel signatures through one shared verifier per authority key
  (:func:`loa.devices.fleet.share_alert_verification`): each distinct (body, signature) is verified once per
  process and every device gets that outcome. Every device still makes every check of PROTOCOL.md 6.4.1; a forged
  or altered alert is refused by each as it would be by itself.
* Timers after input (:class:`loa.devices.FleetHost`): before a device's timer runs, the datagrams waiting in its
  socket are handed to it, as a device of its own would have read them when they arrived. Without this, a process
  seconds behind (an alert to ten thousand devices at once) had its devices run their timers on a state that
  missed what had reached them: a rekey's handshake response unread when the retry timer sent a new init (so the
  session expired at ``REJECT_AFTER_TIME``), or probe answers unread when three probes counted as unanswered.
  The status says how often (``drained_at_timers``) and how many sessions ended at a device's own timer even so
  (``sessions_lost_at_timers``), with the host's worst timer lag (``timer_lag_max_s``) and its latest
  (``timer_lag_s``). The devices' reliable messages sent, retransmitted and received twice are summed with the other
  counters (``control_sent``, ``control_retransmitted``, ``control_duplicates``).

**Multicast.** Every reference device says ``multicast`` in ``hello``; when the server gives their zones groups
(``loa serve --multicast``), their streams go to the groups and not to them. With ``multicast`` the host follows
each group through one shared socket, a *group tap* (:class:`loa.devices.FleetHost` ``taps``: the tap counts each
datagram once and hands every device that wants the group the newest packet of the stream it plays every
``feed_every`` seconds of the spec, through its counting path). A device is then on a stream from its group, as from
unicast, when its ``state`` says ``ip`` for it: which only a packet of that stream, received on the group after the
device was counted onto the tap, makes it say. The status counts those devices apart (``now_group``: their broadcast
has a group and the tap received datagrams since they joined it) and sums the taps (``taps``).

**The RTP filter.** With K > 1 every device socket gets a classic BPF filter (:func:`program`, ``SO_ATTACH_FILTER``)
that passes every datagram that is not RTP (the protocol's datagrams start with a type byte 1-4, RTCP has packet
type 192-223, anything shorter than an RTP header goes through too) and, of RTP, only the packets whose sequence
number is a multiple of K. The kernel drops the rest before they are queued, so one Python process can hold
10,000 devices under a 20 ms stream to each: the streamer still sends every datagram, and each device still sees
the whole sequence span (``expected`` counts the numbers from the first to the highest seen, so the missing
ones are gaps the device counts, not lost sends). :func:`keeps` is the same decision in Python.

Every ``STATUS_EVERY_S`` the process writes the status file (JSON, through a temporary file): devices started and
connected; for each broadcast id the number of devices that reported playing it at some point (``seen``) and now
(``now``, source ``ip``; ``now_group``: of those, the ones on a group stream); refreshed every
``COUNTERS_EVERY_S``, the sums of the devices' counters (``rtp_received``, ``rtp_expected``, ``telemetry_sent``,
``alerts_accepted``, ``watchdog_fires``); for the newest emergency broadcasts, when their devices became ready
to play them, by the kernel's arrival time of the datagram that did it and by when this process handled it
(``ready_arrived``, ``ready_handled``: :class:`Readiness`) and when they were back on the live stream after it, by
kernel arrival (``live_back_arrived``), and, ``STRAGGLERS_AFTER_S`` after the first device was
ready, how many were not and what some of them were doing (``not_ready``); the open taps and what they
received; and the sum of the sockets' kernel drop counters (filtered, or a full receive buffer; read at every tenth
write and at SIGTERM). The process ends at the time limit, or when SIGTERM arrives (devices then send ``bye``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import signal
import socket
import struct
import sys
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any, Final

import anyio

from loa.bench._alert_fleet import device_keys
from loa.devices.core import SpeakerCore
from loa.devices.fleet import build_fleet, raise_open_file_limit, share_alert_verification
from loa.devices.fleet_host import FEED_EVERY_S, FleetHost
from loa.devices.reports import drops as device_drops
from loa.devices.reports import media_totals
from loa.devices.runner import run
from loa.protocol.control import ConfigValues
from loa.protocol.priority import Class
from loa.streamer.sockfilter import kernel_drops

STATUS_EVERY_S = 1.0  # a pass over every device's state: at 0.5 s a tenth of a 5,000-device process's time
COUNTERS_EVERY_S = 10.0  # the devices' counters: a dearer pass (exact in the final status)
SO_ATTACH_FILTER: Final = 26
_UDP: Final = 8  # a UDP socket's filter sees the UDP header first
_LD_LEN, _LDB, _LDH = 0x80, 0x30, 0x28
_AND_K = 0x54
_JEQ_K, _JGE_K = 0x15, 0x35
_RET_K = 0x06
_ACCEPT, _DROP = 0xFFFFFFFF, 0
RTP_HEADER: Final = 12
ARRIVAL_BIN_S: Final = 0.01  # the status's bins of kernel arrival times (host monotonic seconds)
HANDLED_BIN_S: Final = 0.1  # and of the times this process handled those datagrams
READY_KEPT: Final = 16  # emergency broadcasts whose readiness the status carries, the newest
STRAGGLERS_AFTER_S: Final = 30.0  # after the first device was ready, the devices still not ready are described
STRAGGLERS_SAMPLE: Final = 10  # how many of them, per process


def program(keep: int) -> tuple[tuple[int, int, int, int], ...]:
    """The filter keeping one RTP packet in ``keep`` (a power of two) and every other datagram."""
    if keep < 1 or keep & (keep - 1):
        raise ValueError(f"rtp_keep must be a power of two, not {keep}")
    return (
        (_LD_LEN, 0, 0, 0),                      # 0: A = UDP header + payload
        (_JGE_K, 0, 9, _UDP + RTP_HEADER),       # 1: shorter than an RTP header -> accept
        (_LDB, 0, 0, _UDP),                      # 2: A = first byte
        (_AND_K, 0, 0, 0xC0),                    # 3: its version bits
        (_JEQ_K, 0, 6, 0x80),                    # 4: not version 2 (a protocol datagram) -> accept
        (_LDB, 0, 0, _UDP + 1),                  # 5: A = marker and payload type
        (_JGE_K, 1, 0, 224),                     # 6: 224 and above: RTP -> the sequence test
        (_JGE_K, 3, 0, 192),                     # 7: 192-223: RTCP -> accept
        (_LDH, 0, 0, _UDP + 2),                  # 8: A = sequence number
        (_AND_K, 0, 0, keep - 1),                # 9
        (_JEQ_K, 0, 1, 0),                       # 10: a multiple of keep -> accept, else drop
        (_RET_K, 0, 0, _ACCEPT),                 # 11
        (_RET_K, 0, 0, _DROP),                   # 12
    )


def keeps(payload: bytes, keep: int) -> bool:
    """What :func:`program` decides for a UDP payload, in Python."""
    if len(payload) < RTP_HEADER or payload[0] & 0xC0 != 0x80 or 192 <= payload[1] <= 223:
        return True
    return int.from_bytes(payload[2:4], "big") % keep == 0


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def attach(sock: socket.socket, keep: int) -> bool:
    """Give ``sock`` the filter; False (socket unchanged) where the kernel has no socket filters."""
    code = program(keep)
    raw = b"".join(struct.pack("=HBBI", *instruction) for instruction in code)
    buf = ctypes.create_string_buffer(raw, len(raw))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(_SockFprog(len(code), ctypes.addressof(buf))))
    except OSError:
        return False
    return True


_SUMMED = ("started", "connected", "rtp_received", "rtp_expected", "telemetry_sent", "alerts_accepted",
           "watchdog_fires", "kernel_drops", "drained_at_timers", "acks_first", "sessions_lost_at_timers",
           "control_sent", "control_retransmitted", "control_duplicates", "clock_answers_stale")
_SUMMED_MAPS = ("alerts_refused", "sessions_ended", "seen", "now", "now_group", "io", "taps", "verifications")
_SUMMED_NESTED = ("ready_arrived", "ready_handled", "live_back_arrived")


class Readiness:
    """When each device became ready to play an emergency broadcast: the broadcast is its current one and it
    knows the broadcast's stream (``join``, or the ``alert`` that found its ``join`` waiting), so that a device
    with a processor of its own would play the stream from there on. :meth:`observe` is called after a device was
    handed a datagram; the first time it finds the device ready for a broadcast it counts the device in two
    histograms of that broadcast: ``arrived``, by the kernel's arrival time of the datagram that made it ready
    (``ARRIVAL_BIN_S`` bins of host monotonic time), and ``handled``, by when this process handled that datagram
    (``HANDLED_BIN_S`` bins). The difference is the time the device waited for this process, which a device of
    its own would not. A device is counted once per broadcast (one byte per device and broadcast), and only the
    newest ``READY_KEPT`` broadcasts are kept.

    The way back: a device counted for an emergency broadcast is counted once more, in ``back`` (that broadcast's
    histogram, by kernel arrival as ``arrived``), at the first datagram after which its current broadcast is one
    of another class whose stream it knows: the live stream the alert preempted, resumed. A device that was not
    ready for the alert, or that is taken by another emergency broadcast first, is not counted back for it."""

    __slots__ = ("_counted", "_devices", "_first", "_pending", "arrived", "back", "handled", "stragglers")

    def __init__(self, devices: int) -> None:
        self._devices = devices
        self._counted: dict[int, bytearray] = {}  # broadcast id -> 1 for each device counted, in arrival order
        self._first: dict[int, float] = {}  # broadcast id -> when the first device was counted (host monotonic)
        # device -> the emergency broadcast it was last counted ready for and is not yet back from; -1 for none
        self._pending = array("q", [-1]) * devices
        self.arrived: dict[int, Counter[int]] = {}
        self.handled: dict[int, Counter[int]] = {}
        self.back: dict[int, Counter[int]] = {}
        self.stragglers: dict[int, dict[str, Any]] = {}  # broadcast id -> :meth:`diagnose`'s findings

    def observe(self, index: int, core: SpeakerCore, arrival: float, handled: float) -> None:
        current = core.arbiter.current
        if current is None:
            return
        counted = self._counted.get(current)
        if counted is not None and counted[index]:
            return
        broadcast = core.broadcasts.get(current)
        if broadcast is None or broadcast.live is None:
            return
        if broadcast.cls != Class.EMERGENCY:
            left = self._pending[index]
            if left >= 0:  # back from the emergency broadcast ``left``
                self._pending[index] = -1
                back = self.back.get(left)
                if back is not None:  # None: no longer kept
                    back[int(arrival / ARRIVAL_BIN_S)] += 1
            return
        if counted is None:
            counted = self._counted[current] = bytearray(self._devices)
            self.arrived[current], self.handled[current], self.back[current] = Counter(), Counter(), Counter()
            self._first[current] = handled
            while len(self._counted) > READY_KEPT:
                oldest = next(iter(self._counted))
                del self._counted[oldest], self.arrived[oldest], self.handled[oldest], self._first[oldest]
                del self.back[oldest]
                self.stragglers.pop(oldest, None)
        counted[index] = 1
        self._pending[index] = current
        self.arrived[current][int(arrival / ARRIVAL_BIN_S)] += 1
        self.handled[current][int(handled / HANDLED_BIN_S)] += 1

    def diagnose(self, now: float, cores: list[SpeakerCore], first_index: int = 0) -> None:
        """Once per broadcast, ``STRAGGLERS_AFTER_S`` after its first device was counted: the number of devices
        still not ready for it, and what the first ``STRAGGLERS_SAMPLE`` of them were doing (:func:`straggler`;
        ``first_index`` numbers them as the whole fleet does)."""
        for bid, first in self._first.items():
            if bid in self.stragglers or now - first < STRAGGLERS_AFTER_S:
                continue
            counted = self._counted[bid]
            missing = [i for i in range(len(cores)) if not counted[i]]
            self.stragglers[bid] = {"devices": len(missing), "sample": [
                straggler(first_index + i, cores[i], bid) for i in missing[:STRAGGLERS_SAMPLE]]}

    def status(self) -> dict[str, Any]:
        """The histograms as the status file carries them (broadcast id -> bin -> devices, keys as strings), and
        the stragglers (``not_ready``: broadcast id -> their number and sample); ``live_back_arrived`` is ``back``."""
        out: dict[str, Any] = {
            name: {str(bid): {str(k): n for k, n in bins.items()} for bid, bins in table.items()}
            for name, table in (("ready_arrived", self.arrived), ("ready_handled", self.handled),
                                ("live_back_arrived", self.back))}
        out["not_ready"] = {str(bid): found for bid, found in self.stragglers.items()}
        return out


def straggler(index: int, core: SpeakerCore, bid: int) -> dict[str, Any]:
    """What device ``index`` (``core``), not ready for broadcast ``bid``, was doing: its session, what it plays
    and waits for, whether it holds ``bid`` and knows its stream or has ended it, whether it could check an
    alert (a clock estimate and a zone), what became of its clock exchanges (the estimator's counts of those it
    took and refused; answers dropped as stale are with the drops), its round-trip time and whether a probe is
    due at all, its stream's watchdog, its alert counts, what it dropped (all of it, as its telemetry reports
    it), and its reliable channel's counters."""
    broadcast = core.broadcasts.get(bid)
    channel = core.conn.statistics().channel
    return {"device": index, "connected": core.conn.connected, "session": core.conn.session.state.value,
            "current": core.arbiter.current, "waiting": list(core.arbiter.waiting), "holds": broadcast is not None,
            "stream": broadcast is not None and broadcast.live is not None, "ended": bid in core.finished,
            "clock_ready": core.clock.ready,
            "clock": {**dataclasses.asdict(core.clock.estimator.statistics()), "rtt": round(core.rtt, 3),
                      "probing": core.probe.next_at is not None},
            "zones": bool(core.settings.zones), "watchdog": core.watchdog.fired,
            "alerts_accepted": core.alerts_accepted, "alerts_refused": dict(core.alerts_refused),
            "drops": device_drops(core), "channel": None if channel is None else dataclasses.asdict(channel)}


def merge_statuses(statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """The status of one fleet made of the processes whose status files are ``statuses`` (disjoint slices of the
    devices): counts and per-broadcast counts summed, the taps' figures summed (each process has taps of its own:
    ``group_received_max`` is the most datagrams one process's taps received, what the groups carried when each
    process has a device in every group), ``timer_lag_max_s`` and ``timer_lag_s`` (the last round's) the worst,
    ``t`` the oldest, the readiness histograms (:class:`Readiness`) summed bin by bin and the stragglers' numbers
    summed and samples joined, ``filtered`` and
    ``final`` true only if true of all. ``{}`` until every process has written one (a partial sum would look like
    a fleet that lost devices)."""
    if not statuses or any(not status for status in statuses):
        return {}
    merged: dict[str, Any] = {"t": min(s["t"] for s in statuses), "procs": len(statuses),
                              "filtered": all(s.get("filtered") for s in statuses),
                              "final": all(s.get("final") for s in statuses),
                              "rtp_keep": statuses[0].get("rtp_keep"),
                              "timer_lag_max_s": max(s.get("timer_lag_max_s", 0.0) for s in statuses),
                              "timer_lag_s": max(s.get("timer_lag_s", 0.0) for s in statuses),
                              "group_received_max": max(s.get("io", {}).get("group_received", 0) for s in statuses)}
    for key in _SUMMED:
        if any(key in s for s in statuses):
            merged[key] = sum(s.get(key, 0) for s in statuses)
    for key in _SUMMED_MAPS:
        if any(key in s for s in statuses):
            total: Counter[str] = Counter()
            for s in statuses:
                total.update(s.get(key, {}))
            merged[key] = dict(total)
    if any("not_ready" in s for s in statuses):
        found: dict[str, dict[str, Any]] = {}
        for s in statuses:
            for bid, part in s.get("not_ready", {}).items():
                into = found.setdefault(bid, {"devices": 0, "sample": []})
                into["devices"] += part["devices"]
                into["sample"] += part["sample"]
        merged["not_ready"] = found
    for key in _SUMMED_NESTED:
        if any(key in s for s in statuses):
            nested: dict[str, Counter[str]] = {}
            for s in statuses:
                for sub, counts in s.get(key, {}).items():
                    nested.setdefault(sub, Counter()).update(counts)
            merged[key] = {sub: dict(counts) for sub, counts in nested.items()}
    return merged


def lower_share(nice: int) -> bool:
    """Give this process's session (its autogroup, Linux) the scheduler weight of ``nice``; False where there are no
    autogroups. The bench's fleet children use it so that together they weigh what one session does."""
    try:
        Path("/proc/self/autogroup").write_text(str(nice))
    except OSError:
        return False
    return True


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    shared = spec.get("autogroup_nice") is not None and lower_share(int(spec["autogroup_nice"]))
    first = int(spec.get("first", 0))
    count = int(spec.get("slice", int(spec["count"]) - first))
    raise_open_file_limit(count)
    keys = device_keys(spec["seed"], first + count)[first:]
    devices = build_fleet(keys, server_public=bytes.fromhex(spec["server_public"]),
                          server_address=(spec["host"], spec["port"]),
                          authority_keys=[bytes.fromhex(spec["authority"])], seed=spec["seed"] + first)
    cores = [core for core, _ in devices]
    verifiers = share_alert_verification(cores)
    if spec.get("watchdog_ms") is not None:
        for core in cores:
            core.settings.apply_config(ConfigValues(watchdog_ms=int(spec["watchdog_ms"])))
    host = FleetHost(devices, (spec["host"], spec["port"]), bind_host="127.0.0.1", start_rate=spec["start_rate"],
                     taps=bool(spec.get("multicast")), feed_every=float(spec.get("feed_every", FEED_EVERY_S)),
                     timestamps=True)
    readiness = Readiness(len(cores))
    host.on_received = lambda index: readiness.observe(index, cores[index], host.arrival, time.monotonic())
    keep = int(spec["rtp_keep"])
    filtered = keep > 1 and all(attach(sock, keep) for sock in host.socks)
    status_path = Path(spec["status"])
    seen: list[set[int]] = [set() for _ in cores]
    ever: Counter[int] = Counter()  # broadcast id -> devices whose `seen` holds it
    last_status = 0.0
    drops = [0]
    writes = [0]

    tap_drops = [0]

    def read_drops() -> None:
        drops[0] = sum(kernel_drops(sock) or 0 for sock in host.socks)
        tap_drops[0] = sum(kernel_drops(sock) or 0 for sock in host.tap_sockets())

    counters: dict[str, Any] = {}
    counted_at = [-COUNTERS_EVERY_S]

    def tally() -> None:
        # The counters themselves, not core.statistics(): that also computes each device's clock estimate, which
        # made this pass over 10,000 devices hold the event loop for seconds every COUNTERS_EVERY_S.
        received = expected = telemetry = accepted = fires = sent = again = twice = silent = dead = expired = 0
        stale = 0
        refused: Counter[str] = Counter()
        for core in cores[: host.started]:
            media = media_totals(core)
            received += media["received"]
            expected += media["expected"]
            telemetry += core.report.reports
            accepted += core.alerts_accepted
            fires += core.watchdog.fires
            session = core.conn.session
            silent += core.probe.silences
            stale += core.probe.stale
            dead, expired = dead + session.ended_dead, expired + session.ended_expired
            channel = core.conn.statistics().channel
            if channel is not None:
                sent, again, twice = sent + channel.sent, again + channel.retransmitted, twice + channel.duplicates
            if core.alerts_refused:
                refused.update(core.alerts_refused)
        counters.update({"rtp_received": received, "rtp_expected": expected, "telemetry_sent": telemetry,
                         "alerts_accepted": accepted, "alerts_refused": dict(refused), "watchdog_fires": fires,
                         "control_sent": sent, "control_retransmitted": again, "control_duplicates": twice,
                         "sessions_ended": {"silent": silent, "dead": dead, "expired": expired},
                         "clock_answers_stale": stale})
        counted_at[0] = time.monotonic()

    def write_status(*, final: bool = False) -> None:
        started = cores[: host.started]
        if final or time.monotonic() - counted_at[0] >= COUNTERS_EVERY_S:
            tally()
        now_playing: Counter[int] = Counter()
        from_group: Counter[int] = Counter()
        for i, core in enumerate(started):
            for bid, _src in core.recent_states:  # every state since the last write, not only the one now
                if bid is not None and bid not in seen[i]:  # `ever` kept up to date as it grows, not recounted
                    seen[i].add(bid)
                    ever[bid] += 1
            state = core.state
            if state is not None and state[0] is not None:
                bid = state[0]
                if state[1] == "ip":
                    now_playing[bid] += 1
                    broadcast = core.broadcasts.get(bid)
                    if (broadcast is not None and broadcast.live is not None and broadcast.live.group
                            and host.group_received(i) > 0):
                        from_group[bid] += 1
        taps = host.taps()
        status: dict[str, Any] = {
            "t": time.monotonic(), "started": host.started, "connected": sum(c.conn.connected for c in started),
            "filtered": filtered, "rtp_keep": keep, "autogroup_nice": spec.get("autogroup_nice") if shared else None,
            **counters,
            "seen": {str(b): n for b, n in ever.items()}, "now": {str(b): n for b, n in now_playing.items()},
            "now_group": {str(b): n for b, n in from_group.items()},
            **readiness.status(),
            "taps": {"open": len(taps), "datagrams": sum(taps.values()), "drops": tap_drops[0]},
            "io": {"received": host.stats.received, "sent": host.stats.sent,
                   "send_errors": host.stats.send_errors, "receive_errors": host.stats.receive_errors,
                   "group_received": host.stats.group_received, "group_errors": host.stats.group_errors},
        }
        readiness.diagnose(time.monotonic(), cores, first)
        writes[0] += 1
        if writes[0] % 10 == 0 and not final:  # a system call per socket: not at every write
            read_drops()
        status["kernel_drops"] = drops[0]
        status["timer_lag_max_s"] = round(host.stats.timer_lag_max_s, 3)
        status["timer_lag_s"] = round(host.stats.timer_lag_s, 3)
        status["drained_at_timers"] = host.drained_at_timers
        status["acks_first"] = host.acks_first
        status["sessions_lost_at_timers"] = host.sessions_lost_at_timers
        status["verifications"] = {"verified": sum(v.verified for v in verifiers),
                                   "shared": sum(v.shared for v in verifiers)}
        status["final"] = final
        tmp = status_path.with_name(status_path.name + ".tmp")
        tmp.write_text(json.dumps(status))
        tmp.replace(status_path)

    async def body() -> None:
        nonlocal last_status
        print("ready", flush=True)
        with anyio.open_signal_receiver(signal.SIGTERM) as signals, anyio.move_on_after(spec["limit"]) as scope:
            async with anyio.create_task_group() as tg:
                async def on_signal() -> None:
                    async for _ in signals:
                        read_drops()
                        scope.cancel()
                        return

                def tick(_: FleetHost) -> None:
                    nonlocal last_status
                    if time.monotonic() - last_status >= STATUS_EVERY_S:
                        last_status = time.monotonic()
                        write_status()

                tg.start_soon(on_signal)
                await host.run(tick=0.25, on_tick=tick)
        write_status(final=True)

    run(body, spec.get("backend", "asyncio"))


if __name__ == "__main__":
    main(sys.argv[1])
