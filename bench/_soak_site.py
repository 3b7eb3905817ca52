"""The set-up of `loa bench soak` (:mod:`loa.bench.soak`, whose docstring says what each part is for): one run's
configuration, the child processes (the server and the fleet), the seeded site, and the API clients of its traffic."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import numpy as np

from loa.bench._alert_fleet import device_keys
from loa.bench._serve import Child
from loa.cli import UserError

FRAME_S = 0.02
FLEET_DEVICES_PER_PROC = 5_000  # devices per fleet child by default (see the module docstring)
FLEET_READ_PPS = 20_000  # the RTP packets per second the fleet process is left to read (chooses K)
LIVE_PPS_MAX = 50_000  # the live stream's fan-out by default (see the module docstring)
TAP_FEED_S = 1.0  # --multicast: how often the fleet's group taps hand each device the newest packet it plays
START_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 30.0
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
