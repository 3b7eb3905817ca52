"""What `loa bench soak` measures (:mod:`loa.bench.soak`, whose docstring defines each figure and goal): samples
of the server process from /proc and its /metrics, the trace file, the growth figures after the warm-up, and the
goals missed."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from loa.bench._soak_fleet import ARRIVAL_BIN_S, HANDLED_BIN_S
from loa.bench._soak_site import Api, SoakConfig

SCRAPE_TIMEOUT_S = 10.0
RSS_GOAL_PCT = 5.0
HELD_GOAL = 0.99
RESUME_WAIT_S = 30.0  # after an alert's end, the longest its figures wait for every device to be back
# after that, the longest the count of devices back by kernel arrival waits for the fleet to have handled what
# arrived by then (it falls behind by up to tens of seconds; SECURITY.md)
BACK_HANDLED_WAIT_S = 60.0


@dataclass
class AlertRound:
    at: float  # seconds since the soak began
    bid: int | None
    ends_at: float = 0.0  # monotonic
    held: int | None = None
    half_s: float | None = None  # from the alert's start until half of the devices had reported playing it
    resumed: int | None = None
    resumed_group: int | None = None  # of ``resumed``: on the live stream from their group
    resume_s: float | None = None
    confirming_at: float = 0.0  # monotonic, just before the second operator's confirmation was sent
    ready: int | None = None  # devices ready to play it, by kernel arrival, before it ended (Readiness)
    ready_p99_s: float | None = None  # from confirming_at until 99 % of the devices were, by kernel arrival
    handled_p50_s: float | None = None  # the same for half of the devices, by when the fleet handled it
    stragglers: dict[str, Any] | None = None  # the fleet's ``not_ready`` for it, once it has one
    back: int | None = None  # of the live stream's devices, back on it by kernel arrival within RESUME_WAIT_S
    back_p99_s: float | None = None  # from the earliest the alert could have ended until 99 % of them were
    problem: str | None = None


def ready_by(bins: dict[str, int], bin_s: float, until: float) -> int:
    """Devices of a readiness histogram (bin index as a string -> devices, bins of ``bin_s`` seconds) whose whole
    bin lies at or before ``until``: a device in a bin that ``until`` cuts is not counted."""
    return sum(n for k, n in bins.items() if (int(k) + 1) * bin_s <= until)


def time_to_share(bins: dict[str, int], bin_s: float, since: float, count: float) -> float | None:
    """Seconds from ``since`` to the end of the bin in which the histogram's running total first reaches
    ``count`` devices (the latest any of them can have been, so never early); None if it never does."""
    total = 0
    for k in sorted(int(key) for key in bins):
        total += bins[str(k)]
        if total >= count:
            return (k + 1) * bin_s - since
    return None


def follow_alert(round_: AlertRound, status: dict[str, Any], live_bid: int, config: SoakConfig, *,
                 final: bool = False) -> bool:
    """Note who held the alert and who is back on the live stream after it; True once done with it: the
    simulation's figures once every device is back in it, or ``RESUME_WAIT_S`` after the alert's end; the devices
    back by kernel arrival within that time once the fleet has handled every live device's way back, or
    ``BACK_HANDLED_WAIT_S`` later still; everything as it stands with ``final``."""
    if round_.bid is None:
        return True
    if round_.resume_s is None and not _follow_simulated(round_, status, live_bid, config, final=final):
        return False
    now = time.monotonic()
    members = config.live_members()
    bins = status.get("live_back_arrived", {}).get(str(round_.bid), {})
    if not (final or sum(bins.values()) >= members or now >= round_.ends_at + RESUME_WAIT_S + BACK_HANDLED_WAIT_S):
        return False
    earliest_end = round_.confirming_at + config.alert_seconds
    round_.back = ready_by(bins, ARRIVAL_BIN_S, round_.ends_at + RESUME_WAIT_S)
    p99 = time_to_share(bins, ARRIVAL_BIN_S, earliest_end, 0.99 * members)
    round_.back_p99_s = None if p99 is None else round(p99, 3)
    return True


def _follow_simulated(round_: AlertRound, status: dict[str, Any], live_bid: int, config: SoakConfig, *,
                      final: bool) -> bool:
    now = time.monotonic()
    seen = int(status.get("seen", {}).get(str(round_.bid), 0))
    if round_.half_s is None and 2 * seen >= config.devices:
        round_.half_s = round(now - (round_.ends_at - config.alert_seconds), 1)
    if (now < round_.ends_at or not status) and not final:
        return False
    round_.held = seen  # grows while late devices catch up
    back = int(status.get("now", {}).get(str(live_bid), 0))  # of the live stream's devices
    everyone = round_.held == config.devices and back == config.live_members()
    if everyone or final or now >= round_.ends_at + RESUME_WAIT_S:
        arrived = status.get("ready_arrived", {}).get(str(round_.bid), {})
        round_.ready = ready_by(arrived, ARRIVAL_BIN_S, round_.ends_at)
        p99 = time_to_share(arrived, ARRIVAL_BIN_S, round_.confirming_at, 0.99 * config.devices)
        p50 = time_to_share(status.get("ready_handled", {}).get(str(round_.bid), {}), HANDLED_BIN_S,
                            round_.confirming_at, 0.5 * config.devices)
        round_.stragglers = status.get("not_ready", {}).get(str(round_.bid))
        round_.ready_p99_s = None if p99 is None else round(p99, 3)
        round_.handled_p50_s = None if p50 is None else round(p50, 1)
        round_.resumed = back
        round_.resumed_group = int(status.get("now_group", {}).get(str(live_bid), 0))
        round_.resume_s = round(now - round_.ends_at, 1)
        return True
    return False


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


C_HEAP_IN_USE = 'loa_c_heap_bytes{state="in_use"}'
SQLITE = "loa_sqlite_bytes"


def _gauge_growth(samples: list[Sample], config: SoakConfig, window: float, gauge: str, name: str, *,
                  scale: float = 1.0) -> dict[str, Any]:
    """A gauge's medians over the same windows as RSS (``NAME_warm``, ``NAME_end``, divided by ``scale``) and the
    growth between them (``NAME_growth_pct``); None where the server did not report it (a figure, not a goal)."""
    end = samples[-1].t
    early = [s.gauges[gauge] for s in samples if gauge in s.gauges and config.warmup <= s.t <= config.warmup + window]
    late = [s.gauges[gauge] for s in samples if gauge in s.gauges and s.t >= end - window]
    first, last = _median(early), _median(late)
    return {f"{name}_warm": None if first is None else round(first / scale, 1),
            f"{name}_end": None if last is None else round(last / scale, 1),
            f"{name}_growth_pct": None if not first or last is None else round(100 * (last - first) / first, 2)}


def _memory_growth(samples: list[Sample], config: SoakConfig, window: float) -> dict[str, Any]:
    """Where a growth of RSS is: the interpreter's allocated blocks (live Python objects), the C allocator's bytes
    in use, and SQLite's (``loa_python_allocated_blocks``, ``loa_c_heap_bytes``, ``loa_sqlite_bytes``). RSS growing
    while all three stay level is memory the allocators keep, not memory in use."""
    blocks = _gauge_growth(samples, config, window, BLOCKS, "py_blocks")
    for key in ("py_blocks_warm", "py_blocks_end"):
        blocks[key] = None if blocks[key] is None else int(blocks[key])
    return {**blocks, **_gauge_growth(samples, config, window, C_HEAP_IN_USE, "c_heap_in_use_mib", scale=2**20),
            **_gauge_growth(samples, config, window, SQLITE, "sqlite_mib", scale=2**20)}


def verdict_window(config: SoakConfig, end: float) -> float:
    """How long each of the two windows whose medians the memory verdicts compare is: whole alert cycles, the
    fewest that last a minute, when two such windows fit after the warm-up (then each holds the same part of the
    cycle, an alert's burst included, wherever the run ends); otherwise a minute, or half of what follows the
    warm-up if that is shorter."""
    span = max(0.0, end - config.warmup)
    cycles = math.ceil(60.0 / config.alert_every) * config.alert_every
    return cycles if 2 * cycles <= span else min(60.0, span / 2)


def verdicts(samples: list[Sample], config: SoakConfig) -> dict[str, Any]:
    """Memory growth after the warm-up, descriptor and task growth (see the module docstring)."""
    if not samples:
        return {"rss_growth_pct": None, "fd_growth": None, "task_growth": None}
    end = samples[-1].t
    window = verdict_window(config, end)
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
        **_memory_growth(samples, config, window),
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
    ready = metrics.get("alerts_ready_min_fraction")
    check(metrics.get("alerts", 0) > 0 and ready is not None and ready >= HELD_GOAL,
          f"alerts_ready_min_fraction {ready} < {HELD_GOAL}")
    back = metrics.get("live_back_min_fraction")
    check(back is not None and back >= HELD_GOAL, f"live_back_min_fraction {back} < {HELD_GOAL}")
    check(metrics.get("api_errors") == 0 and metrics.get("api_ok", 0) > 0,
          f"api_errors {metrics.get('api_errors')} (ok {metrics.get('api_ok')})")
    return missed
