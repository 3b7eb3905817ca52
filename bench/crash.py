"""`loa bench crash`: `loa serve` killed with SIGKILL again and again while clients work and devices play.

One data directory (SQLite, or ``--db`` PostgreSQL) and one `loa serve` process at a time, always on the same
HTTP and UDP ports. A fleet of ``--devices`` reference devices (:mod:`loa.bench._crash_fleet`, the devices of
`loa fleet` in another process) stays up throughout: half stand in zone ``A``, which gets the schedule's
slots (a stored programme the devices prefetch), half in zone ``B``, which gets a live broadcast started at every
start (an RTP/Opus input fed by this process). Meanwhile a client thread keeps doing acknowledged work through
the HTTP API: audio uploads, schedule entries created, patched and deleted, and new one-off slots for zone ``A``
a few seconds ahead, so that some fall while the server is down and some while it is up.

Each round: start the server; after a restart check every record (below); start the live broadcast; wait for
every device to start a session with the new server; let the clients work for a random (``--seed``) uptime;
SIGKILL the server in the middle of whatever it is doing; wait a random outage; start again. ``--kills`` rounds
or ``--seconds``, whichever comes first; at the end the server is stopped and every child process ended.

What counts, checked after every restart against what the server acknowledged (a 2xx answer):

* **lost**: an acknowledged upload, schedule entry (or its deletion), edit or live broadcast missing, or seen in
  a state older than the acknowledged one;
* **corrupted**: a library item whose content (downloaded through the API) does not hash to its content id, an
  entry whose fields differ from every state it was acknowledged or asked to have, or an audit chain that does
  not verify (``GET /api/v1/audit/verify`` after each restart, `loa audit verify` at the end). A request that
  was in flight at the kill may or may not have taken effect: either is accepted, but what is there must be
  whole (an item listed through the API must have its content, and that content must match);
* **rejoin**: from the new server's readiness (its "devices on udp" line) to each device's first session with
  it; reported as p50, p99 and max over all devices and restarts. Its parts: ``detect`` (the kill to the
  device's first HandshakeInit after it: how long the device took to notice the silent server, section 7.6),
  ``init_wait`` (readiness to the init that made the new session: 0 when an init was already on its way, up to
  ``JOIN_RETRY`` + 500 ms, 2.5 s, when the last one fell before readiness and the device waited for its retry) and
  ``handshake`` (that init to the session: the server's and the device's processing);
* **fallback**: for each device of zone ``B`` that was playing the live broadcast at the kill, the time from the
  kill to its media watchdog firing (the device then plays its fallback; PROTOCOL.md 5.6, ``watchdog_ms`` by
  default 1500 ms, settable with ``--watchdog-ms`` as a server's ``config`` would); ``prefetched_kept`` and
  ``prefetched_cut`` count zone ``A`` devices that were playing a stored programme at a kill and did or did not
  go on playing it until the server was back;
* **slots**: the scheduler's rule (control_plane/scheduler.py) is that a slot whose time passed while the
  server was down fires late, once, if the server is back within ``grace`` (2 min), and is recorded ``missed``
  otherwise. Outages here are seconds, so every slot must fire exactly once: ``missed_slots`` counts slots whose
  firing is missing or not ``started``, ``doubled_slots`` slots started under more than one broadcast id (in
  the broadcast log, or reported by devices).

Metrics: ``kills``, ``acknowledged`` (records), ``unacknowledged_present`` (in-flight requests that took
effect), ``lost``, ``corrupted``, ``slots``, ``late_slots`` (fired after a restart), ``doubled_slots``,
``missed_slots``, ``rejoin_p50_ms``, ``rejoin_p99_ms``, ``rejoin_max_ms``, ``rejoins``, ``rejoin_timeouts``,
``detect_p50_ms``, ``detect_max_ms``, ``init_wait_max_ms``, ``handshake_p50_ms``, ``handshake_max_ms``,
``fallback_p50_ms``, ``fallback_p99_ms``, ``fallback_max_ms``, ``fallbacks``, ``live_playing_at_kill`` and
``live_not_playing_at_kill`` (zone ``B`` devices, over all kills, playing or not the live broadcast of that run),
``prefetched_kept``, ``prefetched_cut``, ``reused_bids`` (broadcast ids the log holds more than once),
``restart_ms_max`` (process start to readiness), ``orphan_files`` (temporary files left in the content store's
incoming folder, never visible through the API), ``audit_entries``, ``seconds``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import numpy as np

from loa.bench._crash_checks import Ledger, Workload, check_slots, verify
from loa.bench._report import emit, environment
from loa.bench._serve import (
    START_TIMEOUT_S,
    Api,
    Child,
    RtpFeeder,
    UnacknowledgedError,
    free_port,
    spawn,
    wav_tone,
)
from loa.cli import UserError
from loa.devices.watchdog import DEFAULT_WATCHDOG_MS

PASSWORD = "mật khẩu đủ dài 2026"  # noqa: S105 - a test account on a throw-away server
ZONES_CSV = "code,name,parent,level\nP,Tỉnh thử,,province\nA,Xã A,P,commune\nB,Xã B,P,commune\n"
PROGRAMME_S = 4.0


@dataclass(frozen=True, slots=True)
class CrashConfig:
    """One run (see the module docstring). Times in seconds; ``db_url`` None: SQLite in ``data_dir``."""

    kills: int = 50
    devices: int = 20
    full: int = 4
    seed: int = 1
    seconds: float = 1800.0
    uptime: tuple[float, float] = (2.0, 6.0)
    outage: tuple[float, float] = (0.0, 2.0)
    rejoin_timeout: float = 30.0
    slot_ahead: float = 12.0  # new slots fall 1 s to this far ahead
    watchdog_ms: int | None = None
    db_url: str | None = None
    backend: str = "trio"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else 0.0


# -- the run -------------------------------------------------------------------------------------------------------


class Fleet:
    """The device process and what it reports (see :mod:`loa.bench._crash_fleet`)."""

    def __init__(self, spec: dict[str, Any], workdir: Path) -> None:
        spec_path = workdir / "fleet.json"
        spec_path.write_text(json.dumps(spec))
        self.sessions: dict[int, list[float]] = defaultdict(list)
        self.inits: dict[int, list[float]] = defaultdict(list)
        self.watchdog: dict[int, list[float]] = defaultdict(list)
        self.states: dict[int, list[tuple[float, int | None, str | None]]] = defaultdict(list)
        self.child = spawn([str(spec_path)], module="loa.bench._crash_fleet", on_line=self._line)

    def _line(self, _at: float, line: str) -> None:
        if not line.startswith("{"):
            return
        record = json.loads(line)
        if record["ev"] == "session":
            self.sessions[record["d"]].append(record["t"])
        elif record["ev"] == "init":
            self.inits[record["d"]].append(record["t"])
        elif record["ev"] == "watchdog":
            self.watchdog[record["d"]].append(record["t"])
        elif record["ev"] == "state":
            self.states[record["d"]].append((record["t"], record["bid"], record["src"]))

    def state_at(self, device: int, at: float) -> tuple[int | None, str | None]:
        last: tuple[int | None, str | None] = (None, None)
        for t, bid, src in list(self.states[device]):
            if t > at:
                break
            last = (bid, src)
        return last


@dataclass
class Round:
    kill_at: float
    live_bid: int | None
    ready_at: float = 0.0


def run_crash(config: CrashConfig, workdir: Path, *, progress: Callable[[str], None] = lambda _s: None,
              ) -> dict[str, Any]:
    """Run the whole thing in ``workdir`` (see the module docstring); returns the metrics."""
    rng = random.Random(config.seed)
    began = time.monotonic()
    cap = began + config.seconds
    data_dir = workdir / "data"
    ports = random.Random()
    http_port, udp_port = free_port(socket.SOCK_STREAM, ports), free_port(socket.SOCK_DGRAM, ports)
    serve_args = ["serve", "--data-dir", str(data_dir), "--http", f"127.0.0.1:{http_port}",
                  "--udp", f"127.0.0.1:{udp_port}", "--backend", config.backend]
    if config.db_url:
        serve_args += ["--db", config.db_url]
    server: Child | None = None
    fleet: Fleet | None = None
    workload: Workload | None = None
    feeder: RtpFeeder | None = None
    api = Api(f"http://127.0.0.1:{http_port}")
    ledger = Ledger()
    checked: dict[str, bool] = {}
    lost: list[str] = []
    corrupted: list[str] = []
    rounds: list[Round] = []
    restart_ms: list[float] = []
    rejoin_ms: list[float] = []
    detect_ms: list[float] = []  # kill -> the device's first init after it (it noticed the silent server)
    init_wait_ms: list[float] = []  # readiness -> the init that made the new session (0: sent before readiness)
    handshake_ms: list[float] = []  # that init -> the session
    rejoin_timeouts = 0
    fallback_ms: list[float] = []
    kept = cut = live_playing = live_not_playing = 0
    zone_of: dict[int, str] = {}

    def start() -> tuple[Child, float]:
        for _ in range(5):  # a port taken by another program meanwhile: try again shortly
            launched = time.monotonic()
            child = spawn(serve_args)
            try:
                ready_at, _ = child.find(r"devices on udp \S+; server public key", START_TIMEOUT_S)
                break
            except UserError:
                child.stop()
                if not any("already in use" in line for _, line in child.lines):
                    raise
                progress("a port of the server was taken by another program; starting again")
                time.sleep(1.0)
        else:
            raise UserError("the server's ports stayed taken by another program")
        child.find(r"alert authority public key", START_TIMEOUT_S)
        restart_ms.append(1000 * (ready_at - launched))
        return child, ready_at

    def start_live() -> int | None:
        nonlocal feeder
        try:
            started = api.call("POST", "/api/v1/broadcasts", json={"zones": ["B"], "title": "Trực tiếp", "port": 0})
        except UnacknowledgedError as exc:
            progress(f"live broadcast not started: {exc}")
            return None
        ledger.broadcasts.add(int(started["bid"]))
        ledger.acknowledged += 1
        host, _, port = str(started["listen"]).rpartition(":")
        feeder = RtpFeeder((host, int(port)))
        return int(started["bid"])

    def wait_rejoin(since: float, ready_at: float) -> None:
        nonlocal rejoin_timeouts
        assert fleet is not None
        deadline = ready_at + config.rejoin_timeout
        while time.monotonic() < deadline:
            if all(any(t > since for t in fleet.sessions[d]) for d in range(config.devices)):
                break
            time.sleep(0.05)
        for d in range(config.devices):
            after = [t for t in fleet.sessions[d] if t > since]
            if after:
                rejoin_ms.append(1000 * max(0.0, after[0] - ready_at))
            else:
                rejoin_timeouts += 1
                continue
            if since <= 0.0:
                continue
            inits = [t for t in fleet.inits[d] if since < t <= after[0]]
            if inits:  # a rejoin's two parts: waiting for an init the new server can take, and the handshake
                detect_ms.append(1000 * (inits[0] - since))
                init_wait_ms.append(1000 * max(0.0, inits[-1] - ready_at))
                handshake_ms.append(1000 * (after[0] - inits[-1]))

    try:
        server, ready_at = start()
        _, found = server.find(r"password: (\S+)", 5)
        _, udp = server.find(r"devices on udp (\S+); server public key (\S+)", 5)
        _, authority = server.find(r"alert authority public key (\S+)", 5)
        first = api.login("admin", found.group(1))
        api.call("POST", "/api/v1/auth/password", token=first, json={"current": found.group(1), "new": PASSWORD})
        api.token = api.login("admin", PASSWORD)
        api.call("POST", "/api/v1/zones/import", files={"file": ("zones.csv", ZONES_CSV.encode(), "text/csv")})
        api.call("POST", "/api/v1/users", json={"username": "duyet", "role": "approver", "scope": "P",
                                                 "password": PASSWORD})
        approver = api.login("duyet", PASSWORD)
        programme = api.call("POST", "/api/v1/library/audio", data={"title": "Chương trình", "zone": "P"},
                             files={"file": ("programme.wav", wav_tone(PROGRAMME_S, 523.0), "audio/wav")})
        api.call("POST", f"/api/v1/library/{programme['id']}/submit")
        api.call("POST", f"/api/v1/library/{programme['id']}/approve", token=approver)

        from loa.devices.fleet import load_fleet_keys
        from loa.protocol.noise import x25519_public

        keys_dir = workdir / "fleet-keys"
        for i, private in enumerate(load_fleet_keys(keys_dir, config.devices)):
            zone_of[i] = "A" if i % 2 == 0 else "B"
            api.call("POST", "/api/v1/devices", json={
                "public_key": base64.b64encode(x25519_public(private)).decode(), "kind": "speaker",
                "zone": zone_of[i], "name": f"cụm loa {i}"})
        host, _, port = udp.group(1).rpartition(":")
        fleet = Fleet({"host": host, "port": int(port), "server_public": base64.b64decode(udp.group(2)).hex(),
                       "authority": base64.b64decode(authority.group(1)).hex(), "keys_dir": str(keys_dir),
                       "count": config.devices, "full": min(config.full, config.devices), "seed": config.seed,
                       "start_rate": 200.0, "watchdog_ms": config.watchdog_ms, "backend": config.backend,
                       "limit": config.seconds + 600}, workdir)
        wait_rejoin(0.0, ready_at)
        rejoin_ms.clear()  # the first join is not a rejoin
        workload = Workload(api, ledger, random.Random(config.seed + 7), int(programme["id"]), config.slot_ahead)
        live_bid = start_live()
        kills = 0
        while kills < config.kills and time.monotonic() < cap:
            workload.want_slot = True
            workload.running.set()
            time.sleep(rng.uniform(*config.uptime))
            kill_at = time.monotonic()
            server.kill()
            server.stop()
            kills += 1
            if feeder is not None:
                feeder.stop()
                feeder = None
            workload.pause()
            round_ = Round(kill_at, live_bid)
            rounds.append(round_)
            time.sleep(rng.uniform(*config.outage))
            server, ready_at = start()
            round_.ready_at = ready_at
            found_now = verify(api, ledger, checked)
            lost += [f"after kill {kills}: {x}" for x in found_now.lost]
            corrupted += [f"after kill {kills}: {x}" for x in found_now.corrupted]
            live_bid = start_live()
            before = (len(rejoin_ms), len(fallback_ms), len(detect_ms))
            wait_rejoin(kill_at, ready_at)
            for d, zone in zone_of.items():
                bid, src = fleet.state_at(d, kill_at)
                if zone == "B" and round_.live_bid is not None:
                    live_playing += bid == round_.live_bid
                    live_not_playing += bid != round_.live_bid
                if zone == "B" and round_.live_bid is not None and bid == round_.live_bid:
                    fired = [t for t in fleet.watchdog[d] if t > kill_at - 0.1]
                    if fired:
                        fallback_ms.append(1000 * max(0.0, fired[0] - kill_at))
                elif zone == "A" and src == "local" and bid is not None:
                    later = [(t, b, s) for t, b, s in fleet.states[d] if kill_at < t <= ready_at]
                    if all(b == bid for _, b, _ in later) or (later and later[0][0] - kill_at >= PROGRAMME_S - 0.5):
                        kept += 1
                    else:
                        cut += 1
            progress(f"kill {kills}/{config.kills}: ready {restart_ms[-1]:.0f} ms after start, rejoin max "
                     f"{max(rejoin_ms[before[0]:], default=0):.0f} ms (detect max "
                     f"{max(detect_ms[before[2]:], default=0):.0f}, init wait max "
                     f"{max(init_wait_ms[before[2]:], default=0):.0f}, handshake max "
                     f"{max(handshake_ms[before[2]:], default=0):.0f}), fallback max "
                     f"{max(fallback_ms[before[1]:], default=0):.0f} ms of {len(fallback_ms) - before[1]}, "
                     f"{ledger.acknowledged} acknowledged, lost {len(lost)}, corrupted {len(corrupted)}")

        # Let every slot come due (and fire), then the last checks.
        workload.pause()
        if ledger.slots:
            last_slot = max(ledger.slots.values())
            wait = (last_slot - datetime.now(UTC)).total_seconds() + 4.0
            time.sleep(min(max(wait, 0.0), 30.0))
        final = verify(api, ledger, checked)
        lost += [f"at the end: {x}" for x in final.lost]
        corrupted += [f"at the end: {x}" for x in final.corrupted]
        slot_figures = check_slots(api, ledger, fleet, note=progress)
        audit_entries = int(api.read("/api/v1/audit/verify")["entries"])
        logged = [int(row["bid"]) for row in api.pages("/api/v1/broadcasts")]
        reused = len(logged) - len(set(logged))
    finally:
        if feeder is not None:
            feeder.stop()
        if workload is not None:
            workload.close()
        if server is not None:
            server.stop()
        if fleet is not None:
            fleet.child.stop()
        api.close()
    verify_cli = subprocess.run([sys.executable, "-m", "loa.cli", "audit", "verify",
                                 *(["--db", config.db_url] if config.db_url else ["--data-dir", str(data_dir)])],
                                capture_output=True, text=True, timeout=120, check=False)
    if verify_cli.returncode != 0:
        corrupted.append(f"loa audit verify: {verify_cli.stdout.strip()} {verify_cli.stderr.strip()}")
    incoming = data_dir / "content" / ".incoming"
    orphans = len(list(incoming.iterdir())) if incoming.is_dir() else 0
    for line in (lost + corrupted)[:20]:
        progress(line)
    return {
        "kills": len(rounds),
        "devices": config.devices,
        "acknowledged": ledger.acknowledged,
        "unacknowledged_requests": ledger.unacknowledged,
        "unacknowledged_present": ledger.adopted,
        "lost": len(lost),
        "corrupted": len(corrupted),
        **slot_figures,
        "rejoins": len(rejoin_ms),
        "rejoin_timeouts": rejoin_timeouts,
        "rejoin_p50_ms": round(percentile(rejoin_ms, 50), 1),
        "rejoin_p99_ms": round(percentile(rejoin_ms, 99), 1),
        "rejoin_max_ms": round(max(rejoin_ms, default=0.0), 1),
        "detect_p50_ms": round(percentile(detect_ms, 50), 1),
        "detect_max_ms": round(max(detect_ms, default=0.0), 1),
        "init_wait_max_ms": round(max(init_wait_ms, default=0.0), 1),
        "handshake_p50_ms": round(percentile(handshake_ms, 50), 1),
        "handshake_max_ms": round(max(handshake_ms, default=0.0), 1),
        "fallbacks": len(fallback_ms),
        "fallback_p50_ms": round(percentile(fallback_ms, 50), 1),
        "fallback_p99_ms": round(percentile(fallback_ms, 99), 1),
        "fallback_max_ms": round(max(fallback_ms, default=0.0), 1),
        "live_playing_at_kill": live_playing,
        "live_not_playing_at_kill": live_not_playing,
        "prefetched_kept": kept,
        "prefetched_cut": cut,
        "restart_ms_max": round(max(restart_ms, default=0.0), 1),
        "reused_bids": reused,
        "orphan_files": orphans,
        "audit_entries": audit_entries,
        "seconds": round(time.monotonic() - began, 1),
    }


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    path = Path(tempfile.mkdtemp(prefix="loa-crash-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@click.command("crash")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
@click.option("--kills", type=click.IntRange(1, 10_000), default=50, show_default=True,
              help="How many times `loa serve` is killed with SIGKILL.")
@click.option("--devices", type=click.IntRange(2, 2000), default=20, show_default=True,
              help="Reference devices in the fleet process (half in the scheduled zone, half in the live one).")
@click.option("--seconds", type=click.FloatRange(10, 86_400), default=1800.0, show_default=True,
              help="Stop after this long even if fewer kills were made.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seeds the kill moments and the work.")
@click.option("--watchdog-ms", type=click.IntRange(200, 60_000), default=None,
              help="The devices' media watchdog (as a server's config would set it; default: the protocol's).")
@click.option("--db", "db_url", metavar="URL", help="A PostgreSQL URL instead of SQLite in the data directory.")
@click.option("--keep", type=click.Path(path_type=Path, file_okay=False),
              help="Work in this folder and keep it (default: a temporary folder, removed).")
def crash(*, as_json: bool, kills: int, devices: int, seconds: float, seed: int, watchdog_ms: int | None,
          db_url: str | None, keep: Path | None) -> None:
    """SIGKILL `loa serve` again and again under work and devices: lost records, slots, rejoin and fallback."""
    config = CrashConfig(kills=kills, devices=devices, seed=seed, seconds=seconds, watchdog_ms=watchdog_ms,
                         db_url=db_url)
    with _workdir(keep) as workdir:
        try:
            metrics = run_crash(config, workdir, progress=lambda line: print(f"crash: {line}", file=sys.stderr))
        except UnacknowledgedError as exc:
            raise UserError(f"the run could not go on: {exc}") from None
    env = environment(database="postgresql" if db_url else "sqlite", seed=seed, uptime_s=list(config.uptime),
                      outage_s=list(config.outage), watchdog_ms=watchdog_ms or DEFAULT_WATCHDOG_MS, network="loopback")
    emit("crash", metrics, as_json=as_json, env=env)
