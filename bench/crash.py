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
  ``REKEY_TIMEOUT`` + 333 ms when the last one fell before readiness and the device waited for its retry) and
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
import hashlib
import io
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import httpx2
import numpy as np

from loa.bench._report import emit, environment
from loa.cli import UserError
from loa.devices.watchdog import DEFAULT_WATCHDOG_MS

PASSWORD = "mật khẩu đủ dài 2026"  # noqa: S105 - a test account on a throw-away server
ZONES_CSV = "code,name,parent,level\nP,Tỉnh thử,,province\nA,Xã A,P,commune\nB,Xã B,P,commune\n"
PROGRAMME_S = 4.0
UPLOAD_S = 0.5
SLOT_GAP_S = 6  # slots are at least this far apart (a programme lasts PROGRAMME_S)
START_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 60.0


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


# -- processes ---------------------------------------------------------------------------------------------------


@dataclass
class Child:
    """A child process whose output lines are kept with the monotonic time they were read."""

    proc: subprocess.Popen[str]
    lines: list[tuple[float, str]] = field(default_factory=list)
    on_line: Callable[[float, str], None] | None = None

    def start_reader(self) -> None:
        def read(stream: Any) -> None:
            for line in stream:
                stamped = (time.monotonic(), line.rstrip("\n"))
                if self.on_line is not None:
                    self.on_line(*stamped)
                self.lines.append(stamped)

        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                threading.Thread(target=read, args=(stream,), daemon=True).start()

    def find(self, pattern: str, timeout: float) -> tuple[float, re.Match[str]]:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            lines = list(self.lines)
            for at, line in lines[seen:]:
                if (found := re.search(pattern, line)) is not None:
                    return at, found
            seen = len(lines)
            if self.proc.poll() is not None and seen == len(self.lines):
                break
            time.sleep(0.01)
        tail = "\n".join(line for _, line in self.lines[-20:])
        raise UserError(f"`loa serve` did not print {pattern!r} in {timeout:g} s; its output ends:\n{tail}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, grace: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _spawn(args: list[str], *, module: str = "loa.cli", on_line: Callable[[float, str], None] | None = None) -> Child:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    child = Child(proc, on_line=on_line)
    child.start_reader()
    return child


def _free_port(kind: int, rng: random.Random) -> int:
    """A free port below the usual ephemeral range (32768-60999), so that no socket bound to port 0 takes it
    while the server is down."""
    for _ in range(200):
        port = rng.randrange(20_000, 32_000)
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise UserError("no free port found between 20000 and 32000 on 127.0.0.1")


# -- test content --------------------------------------------------------------------------------------------------


def wav_tone(seconds: float, frequency: float) -> bytes:
    """A mono 48 kHz WAV file of a tone (every upload gets its own frequency, so its own content id)."""
    t = np.arange(int(48_000 * seconds)) / 48_000
    samples = (0.3 * 32767 * np.sin(2 * math.pi * frequency * t)).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48_000)
        w.writeframes(samples.tobytes())
    return out.getvalue()


class RtpFeeder:
    """Sends a 440 Hz RTP/Opus stream (20 ms frames, real time) to a live input until stopped."""

    def __init__(self, address: tuple[str, int]) -> None:
        from loa.codecs import OpusEncoder
        from loa.protocol.rtp import write_opus_rtp

        encoder = OpusEncoder()
        t = np.arange(960) / 48_000
        self._frame = encoder.encode((0.2 * 32767 * np.sin(2 * math.pi * 440 * t)).astype(np.int16))
        self._write = write_opus_rtp
        self._address = address
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ssrc = random.getrandbits(32)
        buf = bytearray(1500)
        start = time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for k in range(10**7):
                wait = start + k * 0.02 - time.monotonic()
                if self._stop.wait(max(0.0, wait)):
                    return
                size = self._write(buf, sequence=k & 0xFFFF, timestamp=(k * 960) & 0xFFFFFFFF, ssrc=ssrc,
                                   payload=self._frame, marker=k == 0)
                with contextlib.suppress(OSError):
                    sock.sendto(bytes(buf[:size]), self._address)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


# -- the HTTP side -------------------------------------------------------------------------------------------------


class UnacknowledgedError(Exception):
    """A request got no 2xx answer (the server was killed under it, or refused it)."""


class Api:
    def __init__(self, base: str) -> None:
        self.client = httpx2.Client(base_url=base, timeout=REQUEST_TIMEOUT_S)
        self.token = ""

    def close(self) -> None:
        self.client.close()

    def login(self, username: str, password: str) -> str:
        response = self.client.post("/api/v1/auth/login", json={"username": username, "password": password})
        if response.status_code != 200:
            raise UnacknowledgedError(f"login {username}: {response.status_code} {response.text[:200]}")
        return str(response.json()["token"])

    def call(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> Any:
        try:
            response = self.client.request(method, path, headers={"Authorization": f"Bearer {token or self.token}"},
                                           **kwargs)
        except httpx2.HTTPError as exc:
            raise UnacknowledgedError(f"{method} {path}: {type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise UnacknowledgedError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    def read(self, path: str, **params: Any) -> Any:
        """A GET, tried three times (a freshly started server on a busy machine can be slow)."""
        for attempt in range(3):
            try:
                return self.call("GET", path, params=params)
            except UnacknowledgedError:
                if attempt == 2:
                    raise
                time.sleep(1.0)
        raise AssertionError("unreachable")

    def pages(self, path: str, **params: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cursor = None
        for _ in range(10_000):
            page = self.read(path, limit=1000, **params, **({"cursor": cursor} if cursor else {}))
            rows.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return rows


@dataclass
class Ledger:
    """What the server acknowledged, and what was asked when the answer never came."""

    uploads: dict[int, str] = field(default_factory=dict)            # item id -> content id
    pending_uploads: set[str] = field(default_factory=set)            # titles of unanswered uploads
    entries: dict[int, dict[str, Any] | None] = field(default_factory=dict)  # id -> fields (None: deleted)
    pending_entries: dict[int, list[dict[str, Any] | None]] = field(default_factory=dict)
    pending_creates: dict[str, dict[str, Any]] = field(default_factory=dict)  # title -> fields
    slots: dict[int, datetime] = field(default_factory=dict)          # slot entry id -> occurrence
    broadcasts: set[int] = field(default_factory=set)
    acknowledged: int = 0
    unacknowledged: int = 0
    adopted: int = 0


def _fields(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in ("title", "start", "zones", "item", "enabled")}


class Workload:
    """The client thread: uploads, schedule edits and slots, paced, each result kept in the ledger."""

    def __init__(self, api: Api, ledger: Ledger, rng: random.Random, programme: int, slot_ahead: float) -> None:
        self.api = api
        self.slot_ahead = slot_ahead
        self.ledger = ledger
        self.rng = rng
        self.programme = programme
        self.lock = threading.Lock()
        self.running = threading.Event()
        self.stop_all = threading.Event()
        self.busy = threading.Lock()  # held while one operation is under way
        self.counter = 0
        self.want_slot = True  # each round adds one slot first
        self.slot_floor = datetime.now(UTC)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stop_all.is_set():
            if not self.running.wait(0.1):
                continue
            with self.busy:
                if not self.running.is_set():
                    continue
                try:
                    self._one()
                except UnacknowledgedError:
                    with self.lock:
                        self.ledger.unacknowledged += 1
                    time.sleep(0.05)
            time.sleep(self.rng.uniform(0.02, 0.15))

    def pause(self) -> None:
        """Stop issuing requests; returns once none is under way."""
        self.running.clear()
        with self.busy:
            pass

    def close(self) -> None:
        self.stop_all.set()
        self.running.clear()
        self._thread.join(REQUEST_TIMEOUT_S + 5)

    def _name(self, what: str) -> str:
        self.counter += 1
        return f"{what} {self.counter} {self.rng.getrandbits(32):08x}"

    def _one(self) -> None:
        roll = self.rng.random()
        live = [i for i, f in self.ledger.entries.items() if f is not None and i not in self.ledger.slots]
        if roll < 0.15 or self.want_slot:
            self.want_slot = False
            self._slot()
        elif roll < 0.4:
            self._upload()
        elif roll < 0.7 or not live:
            self._create()
        elif roll < 0.88:
            self._patch(self.rng.choice(live))
        else:
            self._delete(self.rng.choice(live))

    def _upload(self) -> None:
        title = self._name("upload")
        blob = wav_tone(UPLOAD_S, self.rng.uniform(200.0, 2000.0))
        with self.lock:
            self.ledger.pending_uploads.add(title)
        item = self.api.call("POST", "/api/v1/library/audio", files={"file": (f"{title}.wav", blob, "audio/wav")},
                             data={"title": title, "zone": "P"})
        with self.lock:
            self.ledger.pending_uploads.discard(title)
            self.ledger.uploads[int(item["id"])] = str(item["content_id"])
            self.ledger.acknowledged += 1

    def _body(self, title: str, start: datetime, zone: str = "A") -> dict[str, Any]:
        return {"title": title, "item": self.programme, "zones": [zone], "start": start.isoformat(), "tz": "UTC",
                "force": True}

    def _create(self) -> None:
        title = self._name("entry")
        start = (datetime.now(UTC) + timedelta(days=2, minutes=self.rng.randrange(0, 10_000))).replace(microsecond=0)
        body = self._body(title, start)
        expected = {"title": title, "start": start.replace(tzinfo=None).isoformat(), "zones": ["A"],
                    "item": self.programme, "enabled": True}
        with self.lock:
            self.ledger.pending_creates[title] = expected
        saved = self.api.call("POST", "/api/v1/schedule", json=body)
        with self.lock:
            self.ledger.pending_creates.pop(title, None)
            self.ledger.entries[int(saved["entry"]["id"])] = _fields(saved["entry"])
            self.ledger.acknowledged += 1

    def _patch(self, entry_id: int) -> None:
        before = self.ledger.entries[entry_id]
        assert before is not None
        change: dict[str, Any] = {"title": self._name("edited")}
        if self.rng.random() < 0.3:
            change["enabled"] = not before["enabled"]
        after = {**before, **change}
        with self.lock:
            self.ledger.pending_entries[entry_id] = [after]
        saved = self.api.call("PATCH", f"/api/v1/schedule/{entry_id}", json={**change, "force": True})
        with self.lock:
            self.ledger.pending_entries.pop(entry_id, None)
            self.ledger.entries[entry_id] = _fields(saved["entry"])
            self.ledger.acknowledged += 1

    def _delete(self, entry_id: int) -> None:
        with self.lock:
            self.ledger.pending_entries[entry_id] = [None]
        self.api.call("DELETE", f"/api/v1/schedule/{entry_id}")
        with self.lock:
            self.ledger.pending_entries.pop(entry_id, None)
            self.ledger.entries[entry_id] = None
            self.ledger.acknowledged += 1

    def _slot(self) -> None:
        """A one-off slot of the programme for zone A, 1 to ``slot_ahead`` s ahead, apart from every other slot."""
        at = (datetime.now(UTC) + timedelta(seconds=self.rng.uniform(1.0, self.slot_ahead))).replace(microsecond=0)
        at = max(at, self.slot_floor + timedelta(seconds=SLOT_GAP_S))
        self.slot_floor = at
        title = self._name("slot")
        expected = {"title": title, "start": at.replace(tzinfo=None).isoformat(), "zones": ["A"],
                    "item": self.programme, "enabled": True}
        with self.lock:
            self.ledger.pending_creates[title] = expected
        saved = self.api.call("POST", "/api/v1/schedule", json=self._body(title, at))
        entry_id = int(saved["entry"]["id"])
        with self.lock:
            self.ledger.pending_creates.pop(title, None)
            self.ledger.entries[entry_id] = _fields(saved["entry"])
            self.ledger.slots[entry_id] = at
            self.ledger.acknowledged += 1


# -- checks --------------------------------------------------------------------------------------------------------


@dataclass
class Findings:
    lost: list[str] = field(default_factory=list)
    corrupted: list[str] = field(default_factory=list)


def verify(api: Api, ledger: Ledger, checked_content: dict[str, bool]) -> Findings:
    """Compare the server's records with the ledger (the workload is paused); adopt what in-flight requests
    did. ``checked_content`` caches content ids already downloaded and hashed (content is immutable)."""
    found = Findings()
    items = {int(i["id"]): i for i in api.pages("/api/v1/library")}
    for item_id, content_id in ledger.uploads.items():
        item = items.get(item_id)
        if item is None:
            found.lost.append(f"library item {item_id}")
        elif item["content_id"] != content_id:
            found.corrupted.append(f"library item {item_id}: content id {item['content_id']} != {content_id}")
    for item_id, item in items.items():
        if item["kind"] != "audio":
            continue
        title = str(item["title"])
        if item_id not in ledger.uploads and title in ledger.pending_uploads:  # an unanswered upload took effect
            ledger.uploads[item_id] = str(item["content_id"])
            ledger.pending_uploads.discard(title)
            ledger.adopted += 1
        content_id = str(item["content_id"])
        if content_id not in checked_content:
            response = api.client.get(f"/api/v1/library/{item_id}/content",
                                      headers={"Authorization": f"Bearer {api.token}"})
            checked_content[content_id] = (response.status_code == 200
                                           and hashlib.sha256(response.content).hexdigest() == content_id)
        if not checked_content[content_id]:
            found.corrupted.append(f"library item {item_id}: its content is missing or does not match {content_id}")
    ledger.pending_uploads.clear()  # an upload not there now never will be

    entries = {int(e["id"]): e for e in api.pages("/api/v1/schedule")}
    for entry_id, expected in list(ledger.entries.items()):
        allowed = [expected, *ledger.pending_entries.get(entry_id, [])]
        there = entries.get(entry_id)
        actual = None if there is None else _fields(there)
        if actual in allowed:
            ledger.entries[entry_id] = actual
            if actual != expected:
                ledger.adopted += 1
        elif actual is None:
            found.lost.append(f"schedule entry {entry_id}")
        else:
            found.corrupted.append(f"schedule entry {entry_id}: {actual} is none of {allowed}")
    ledger.pending_entries.clear()
    by_title = {str(e["title"]): e for e in entries.values()}
    for title, expected in list(ledger.pending_creates.items()):
        there = by_title.get(title)
        if there is not None:
            entry_id = int(there["id"])
            if _fields(there) != expected:
                found.corrupted.append(f"schedule entry {entry_id}: {_fields(there)} != {expected}")
            ledger.entries[entry_id] = _fields(there)
            if title.startswith("slot"):
                ledger.slots[entry_id] = datetime.fromisoformat(expected["start"]).replace(tzinfo=UTC)
            ledger.adopted += 1
    ledger.pending_creates.clear()
    known = set(ledger.entries)
    for entry_id, entry in entries.items():
        if entry_id not in known and str(entry["title"]).startswith(("entry", "slot", "edited")):
            found.corrupted.append(f"schedule entry {entry_id} was never asked for")

    for bid in ledger.broadcasts:
        try:
            api.read(f"/api/v1/broadcasts/{bid}")
        except UnacknowledgedError:
            found.lost.append(f"broadcast {bid}")
    audit = api.read("/api/v1/audit/verify")
    if not audit["ok"]:
        found.corrupted.append(f"audit chain: {audit['summary']}")
    return found


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
        self.child = _spawn([str(spec_path)], module="loa.bench._crash_fleet", on_line=self._line)

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
    http_port, udp_port = _free_port(socket.SOCK_STREAM, ports), _free_port(socket.SOCK_DGRAM, ports)
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
            child = _spawn(serve_args)
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


def check_slots(api: Api, ledger: Ledger, fleet: Fleet | None, *,
                note: Callable[[str], None] = lambda _s: None) -> dict[str, int]:
    """Every slot due by now fired exactly once (see the module docstring); ``note`` gets one line per slot
    missed or doubled, naming it, its firings and its broadcast ids."""
    now = datetime.now(UTC)
    due = {e: at for e, at in ledger.slots.items() if at <= now - timedelta(seconds=3)}
    scheduled = api.pages("/api/v1/broadcasts", kind="scheduled")
    bids_at: dict[datetime, set[int]] = defaultdict(set)
    for row in scheduled:
        bids_at[datetime.fromisoformat(row["started_at"]).astimezone(UTC)].add(int(row["bid"]))
    missed = doubled = late = 0
    slot_of_bid: dict[int, int] = {}
    for entry_id, at in due.items():
        firings = api.read(f"/api/v1/schedule/{entry_id}/firings")["items"]
        started = [f for f in firings if f["status"] == "started"]
        missed += not started
        if not started:
            note(f"slot {entry_id} at {at.isoformat()} missed: firings {firings}")
        bids = set(bids_at.get(at, set()))
        for firing in started:
            bids.update(int(b) for b in firing["broadcasts"])
            claimed = datetime.fromisoformat(firing["claimed_at"]).astimezone(UTC)
            late += claimed > at - timedelta(seconds=1)  # claimed after its time: the server was down then
        doubled += len(bids) > 1 or len(started) > 1
        if len(bids) > 1 or len(started) > 1:
            note(f"slot {entry_id} at {at.isoformat()} doubled: broadcasts {sorted(bids)}, firings {firings}")
        for bid in bids:
            slot_of_bid[bid] = entry_id
    if fleet is not None:  # the devices' side: one slot played under two broadcast ids
        device_doubles: set[int] = set()
        for states in fleet.states.values():
            seen: dict[int, set[int]] = defaultdict(set)
            for _, played, src in list(states):
                if src == "local" and played is not None and played in slot_of_bid:
                    seen[slot_of_bid[played]].add(played)
            for e, b in seen.items():
                if len(b) > 1 and e not in device_doubles:
                    device_doubles.add(e)
                    note(f"slot {e} played by a device under broadcasts {sorted(b)}")
        doubled = max(doubled, len(device_doubles))
    return {"slots": len(due), "late_slots": late, "doubled_slots": doubled, "missed_slots": missed}


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
