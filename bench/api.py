"""`loa bench api`: requests per second and p99 latency of the control plane's HTTP API under concurrent clients.

For each database backend (``--backends``, default SQLite then PostgreSQL) the bench seeds a fresh database (the
sample province, ``--devices`` devices with live status, a province NOC operator with an API token), then runs the
real app under hypercorn in a child process, on a loopback port, the way ``loa serve`` runs it (trio by default).
``--clients`` clients in this process (one ``httpx2.AsyncClient`` each, so one connection each, on asyncio) share
each phase's budget of ``--requests`` requests and stop at ``--seconds`` whichever comes first:

1. ``healthz``: ``GET /healthz``, the cheapest route (one read of the schema revision): the ceiling of this server,
   client and machine, measured in the same run.
2. ``status``: device status reads, alternating ``GET /api/v1/devices?zone=COMMUNE&limit=100`` (a page of devices
   with their live status) and ``GET /api/v1/devices/{id}``.
3. ``trigger``: alert triggers with the two-person rule off: ``POST /api/v1/alerts`` with ``trigger: true``, which
   composes the alert, signs it and dispatches it (three write transactions, each with its audit entries). Only
   an answer ``201`` with state ``active`` counts as done.

The server has no streamer attached (``ControlPlane.alert_dispatcher`` is ``None`` unless one is, and then every
trigger would be refused), so it runs with a small in-process dispatcher that allocates broadcast ids and counts
what it is handed: the figures are the control plane's cost alone. What the streamer adds (signing checks and
delivery to devices) is measured by ``loa bench alert``. The child reports how many alerts it dispatched when it
stops; the bench fails unless it lies between the triggers the clients saw succeed and those they sent.

A request answered otherwise than asked (an error status, a trigger not ``active``, a broken connection) counts
in ``*_errors`` and the first one of each phase is quoted in ``env`` (``errors_PHASE_BACKEND``): under many
concurrent writers SQLite can keep a writer waiting past its 15 s busy timeout, which the API answers with 503.
A phase in which nothing succeeded is an error.

Metrics, per backend (suffix ``_sqlite``, ``_postgresql``): ``healthz_rps``, ``status_rps``, ``status_p99_ms``,
``trigger_rps``, ``trigger_p99_ms``, ``healthz_p99_ms``, the ratios ``status_ratio_to_healthz`` and
``trigger_ratio_to_healthz`` (a phase's rate over the ceiling's), and the counts ``*_requests`` (sent),
``*_ok``, ``*_errors`` (``requests = ok + errors``) and ``dispatched``. Without a suffix: the SQLite figures (the
embedded default). A rate is done requests over the phase's wall time; latencies are per done request.

PostgreSQL runs as a throw-away server started from the system's ``initdb``/``pg_ctl`` (``$LOA_PG_BIN``, else
``/usr/lib/postgresql/*/bin``, else ``PATH``) in a temporary directory, on a Unix socket only, as the ``postgres``
user when run as root; durability settings are left at PostgreSQL's defaults (``fsync``, ``synchronous_commit``
on; SQLite runs with ``synchronous=FULL``). Without the binaries the PostgreSQL figures are skipped and
``env.postgresql`` says why; a server that is installed but fails to start is an error.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from loa.bench._report import emit, environment
from loa.cli import UserError

BACKENDS = ("sqlite", "postgresql")
PHASES = ("healthz", "status", "trigger")
PG_PORT = 5432  # names the socket file in the private directory; no TCP port is opened
COMMUNES = ("20194", "20195", "20227")
LEAVES = ("20194-01", "20194-02", "20195", "20227-01")
START_TIMEOUT_S = 60.0


class BenchError(Exception):
    """The bench could not measure (server failed, requests refused, counts disagree)."""


class PostgresUnavailableError(Exception):
    """PostgreSQL is not installed here (the reason says what is missing)."""


# -- the server (child process) ---------------------------------------------------------------------------------

class CountingDispatcher:
    """An alert dispatcher that allocates broadcast ids and counts the alerts and cancels it is handed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0
        self.triggered = 0
        self.cancelled = 0

    def allocate_bid(self) -> int:
        with self._lock:
            self._next += 1
            return self._next

    def trigger(self, body: bytes, sig: bytes, *, zones: Sequence[str], audio: Any, preroll_ms: int,
                text: str | None, status: str) -> int:
        from loa.protocol.alert import decode_alert

        bid = decode_alert(body).bid
        with self._lock:
            self.triggered += 1
        return bid

    def cancel(self, bid: int, body: bytes, sig: bytes) -> None:
        with self._lock:
            self.cancelled += 1


def serve_child() -> None:
    """The server process: ``argv[1]`` is ``{"data_dir", "url", "backend"}``. Prints ``{"port"}`` once listening
    and ``{"dispatched", "cancelled"}`` after SIGTERM ends it."""
    import anyio
    from hypercorn.config import Config

    from loa.control_plane.api import create_app
    from loa.control_plane.settings import ControlPlane, Settings

    spec = json.loads(sys.argv[1])
    cp = ControlPlane(Settings(data_dir=Path(spec["data_dir"]), database_url=spec["url"], alerts_two_person=False))
    dispatcher = CountingDispatcher()
    cp.alert_dispatcher = dispatcher
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    print(json.dumps({"port": listener.getsockname()[1]}), flush=True)
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]
    config.graceful_timeout = 5.0
    config.accesslog = None
    app = create_app(control_plane=cp)

    async def shutdown_trigger() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                return

    async def main() -> None:
        if spec["backend"] == "trio":
            from hypercorn.trio import serve as serve_trio

            await serve_trio(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
        else:
            from hypercorn.asyncio import serve as serve_asyncio

            await serve_asyncio(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]

    try:
        anyio.run(main, backend=spec["backend"])
    finally:
        cp.close()
    print(json.dumps({"dispatched": dispatcher.triggered, "cancelled": dispatcher.cancelled}), flush=True)


class Server:
    """The child process serving the API; ``stop()`` returns what its dispatcher counted."""

    def __init__(self, data_dir: Path, url: str | None, backend: str) -> None:
        spec = json.dumps({"data_dir": str(data_dir), "url": url, "backend": backend})
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in stop())
        code = "from loa.bench.api import serve_child; serve_child()"
        self.proc = subprocess.Popen([sys.executable, "-c", code, spec], stdout=subprocess.PIPE,
                                     stderr=self._log, text=True)
        assert self.proc.stdout is not None
        line = _read_line(self.proc.stdout, START_TIMEOUT_S)
        if not line:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise BenchError(f"the API server did not start: {self._tail()}")
        self.url = f"http://127.0.0.1:{json.loads(line)['port']}"

    def _tail(self) -> str:
        self._log.seek(0)
        return " ".join(self._log.read().split())[-600:] or f"exit status {self.proc.poll()}"

    def stop(self) -> dict[str, int]:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                out, _ = self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, _ = self.proc.communicate(timeout=10)
                raise BenchError("the API server did not stop within 30 s of SIGTERM") from None
            lines = [line for line in out.splitlines() if line.startswith("{")]
            if self.proc.returncode != 0 or not lines:
                raise BenchError(f"the API server failed (exit status {self.proc.returncode}): {self._tail()}")
            return dict(json.loads(lines[-1]))
        finally:
            self._log.close()


def _read_line(stream: Any, timeout: float) -> str:
    """One line from a child's stdout, or "" if none came within ``timeout`` (or the child ended)."""
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return str(stream.readline())


# -- PostgreSQL (a throw-away server) ---------------------------------------------------------------------------

def _pg_bin_dir() -> Path | None:
    chosen = os.environ.get("LOA_PG_BIN")
    if chosen:
        return Path(chosen) if all(os.access(Path(chosen) / t, os.X_OK) for t in ("initdb", "pg_ctl")) else None

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path))

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if all(os.access(Path(candidate) / t, os.X_OK) for t in ("initdb", "pg_ctl")):
            return Path(candidate)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


def _pg_run(argv: list[str], *, user: str | None, cwd: Path, timeout: float = 120) -> str:
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env, check=False)
    if result.returncode != 0:
        raise BenchError(f"{Path(argv[0]).name if user is None else argv[4]} failed: "
                         f"{' '.join(result.stderr.split())[-500:]}")
    return result.stdout


@contextlib.contextmanager
def postgres() -> Iterator[tuple[str, str]]:
    """A throw-away PostgreSQL server with an empty database ``loa``: yields ``(url, version)``.

    :class:`PostgresUnavailableError` when it is not installed; :class:`BenchError` when it is but does not start.
    """
    bin_dir = _pg_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailableError("initdb/pg_ctl not found ($LOA_PG_BIN, /usr/lib/postgresql/*/bin, PATH); "
                                  "Debian: apt-get install postgresql")
    user = None
    root = Path(tempfile.mkdtemp(prefix="loa-bench-pg-"))  # short: Unix socket paths are limited
    data, sockets = root / "data", root / "sock"
    started = False
    try:
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailableError("running as root and there is no 'postgres' user to run the server as") \
                    from None
            user = "postgres"
            os.chown(root, pw.pw_uid, pw.pw_gid)
        _pg_run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                 "--locale=C", "--no-instructions"], user=user, cwd=root)
        _pg_run(["mkdir", "-m", "700", str(sockets)], user=user, cwd=root)
        conf = (f"listen_addresses = ''\nunix_socket_directories = '{sockets}'\nport = {PG_PORT}\n"
                "max_connections = 100\n")
        _pg_run(["sh", "-c", f"cat >> {data / 'postgresql.conf'} <<'EOF'\n{conf}EOF"], user=user, cwd=root)
        _pg_run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
                 "start"], user=user, cwd=root, timeout=90)
        started = True
        import psycopg

        with psycopg.connect(host=str(sockets), port=PG_PORT, user="postgres", dbname="postgres", autocommit=True,
                             connect_timeout=10) as conn:
            conn.execute("CREATE DATABASE loa")
            version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        yield f"postgresql+psycopg://postgres@/loa?host={sockets}&port={PG_PORT}", version
    finally:
        if started:
            with contextlib.suppress(BenchError, subprocess.TimeoutExpired):
                _pg_run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"],
                        user=user, cwd=root, timeout=45)
        shutil.rmtree(root, ignore_errors=True)


# -- seeding ----------------------------------------------------------------------------------------------------

def seed(data_dir: Path, url: str | None, devices: int) -> tuple[str, list[str]]:
    """Migrate and fill a fresh database: the sample province, ``devices`` devices online with telemetry, and a
    province NOC operator. Returns the operator's API token and the device ids."""
    from loa.control_plane import devices as device_records
    from loa.control_plane.settings import ControlPlane
    from loa.control_plane.testing import Seed, fast_settings

    quiet = logging.getLogger("loa.control_plane.authority")  # the key of a throw-away data directory
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        cp = ControlPlane(fast_settings(data_dir, url))
    finally:
        quiet.setLevel(level)
    try:
        seeded = Seed(cp)
        seeded.province()
        token = seeded.user("noc", "noc", "48")
        ids = [seeded.device(LEAVES[i % len(LEAVES)], name=f"Loa {i:05d}") for i in range(devices)]
        with cp.db.write() as tx:
            for i, ident in enumerate(ids):
                device_records.record_status(
                    tx, ident, online=True, reason="hello",
                    status={"rssi_dbm": -60 - i % 30, "temp_c": 40 + i % 15, "faults": ["amp"] if i % 50 == 0 else []})
    finally:
        cp.close()
    return token, ids


# -- the clients ------------------------------------------------------------------------------------------------

Request = tuple[str, str, dict[str, Any] | None]


@dataclass
class Phase:
    requests: int = 0
    ok: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    first_error: str | None = None

    def rps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def p99_ms(self) -> float | None:
        return round(float(np.percentile(np.array(self.latencies_ms), 99)), 3) if self.latencies_ms else None


def _status_request(ids: Sequence[str]) -> Callable[[int], Request]:
    def make(i: int) -> Request:
        if i % 2 == 0:
            return "GET", f"/api/v1/devices?zone={COMMUNES[(i // 2) % len(COMMUNES)]}&limit=100", None
        return "GET", f"/api/v1/devices/{ids[(i // 2) % len(ids)]}", None
    return make


def _trigger_request(i: int) -> Request:
    return "POST", "/api/v1/alerts", {
        "zones": [LEAVES[i % len(LEAVES)]], "status": "test", "class": "emergency", "live_port": 5004,
        "title": f"Thử nghiệm {i}", "text": "Thử nghiệm hệ thống cảnh báo: không cần làm gì.", "expires_in_s": 600,
        "trigger": True}


def _done(method: str, response: Any) -> str | None:
    """None if the answer is what the phase asks for, else why not."""
    if method == "POST":
        if response.status_code != 201:
            return f"{response.status_code}: {response.text[:200]}"
        state = response.json().get("state")
        return None if state == "active" else f"alert state {state!r}"
    return None if response.status_code == 200 else f"{response.status_code}: {response.text[:200]}"


async def run_phase(url: str, token: str, make: Callable[[int], Request], *, clients: int, requests: int,
                    seconds: float) -> Phase:
    """``clients`` concurrent clients share ``requests`` requests, stopping at ``seconds`` (wall time)."""
    import anyio
    import httpx2

    phase = Phase()
    counter = itertools.count()
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx2.Limits(max_connections=1, max_keepalive_connections=1)
    opened = [httpx2.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60.0) for _ in range(clients)]
    deadline = 0.0

    async def worker(client: Any) -> None:
        while True:
            i = next(counter)
            if i >= requests or time.perf_counter() >= deadline:
                return
            method, path, body = make(i)
            phase.requests += 1
            started = time.perf_counter()
            try:
                response = await client.request(method, path, json=body)
                problem = _done(method, response)
            except httpx2.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem is None:
                phase.ok += 1
                phase.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                phase.errors += 1
                phase.first_error = phase.first_error or f"{method} {path}: {problem}"

    try:
        for client in opened:  # open each connection before the clock starts
            await client.get("/healthz")
        begun = time.perf_counter()
        deadline = begun + seconds
        async with anyio.create_task_group() as group:
            for client in opened:
                group.start_soon(worker, client)
        phase.elapsed_s = time.perf_counter() - begun
    finally:
        for client in opened:
            await client.aclose()
    return phase


def _measure(url: str, token: str, ids: Sequence[str], *, clients: int, requests: int,
             seconds: float) -> dict[str, Phase]:
    """The phases in order, each from a standing start, on one client event loop."""
    import anyio

    makers: dict[str, Callable[[int], Request]] = {
        "healthz": lambda i: ("GET", "/healthz", None), "status": _status_request(ids), "trigger": _trigger_request}

    async def phases() -> dict[str, Phase]:
        return {name: await run_phase(url, token, makers[name], clients=clients, requests=requests, seconds=seconds)
                for name in PHASES}

    return anyio.run(phases, backend="asyncio", backend_options=_loop_options())


def _loop_options() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def _backend_metrics(phases: dict[str, Phase], dispatched: int, suffix: str) -> dict[str, Any]:
    ceiling = phases["healthz"].rps()
    metrics: dict[str, Any] = {}
    for name, phase in phases.items():
        metrics[f"{name}_rps{suffix}"] = round(phase.rps(), 1)
        metrics[f"{name}_p99_ms{suffix}"] = phase.p99_ms()
        metrics[f"{name}_requests{suffix}"] = phase.requests
        metrics[f"{name}_ok{suffix}"] = phase.ok
        metrics[f"{name}_errors{suffix}"] = phase.errors
    for name in ("status", "trigger"):
        metrics[f"{name}_ratio_to_healthz{suffix}"] = round(phases[name].rps() / ceiling, 4) if ceiling else None
    metrics[f"dispatched{suffix}"] = dispatched
    return metrics


def run_backend(name: str, *, devices: int, clients: int, requests: int, seconds: float,
                server_backend: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Seed, serve and measure one database backend; returns its metrics and its env entries."""
    with contextlib.ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="loa-bench-api-")))
        env: dict[str, Any] = {}
        url = None
        if name == "postgresql":
            url, version = stack.enter_context(postgres())
            env["postgresql"] = f"PostgreSQL {version}, throw-away server on a Unix socket, default durability"
        token, ids = seed(data_dir, url, devices)
        server = Server(data_dir, url, server_backend)
        try:
            phases = _measure(server.url, token, ids, clients=clients, requests=requests, seconds=seconds)
        finally:
            counts = server.stop()
    for phase_name, phase in phases.items():
        if phase.errors:
            env[f"errors_{phase_name}_{name}"] = f"{phase.errors} of {phase.requests}; first: {phase.first_error}"
        if phase.ok == 0:
            raise BenchError(f"{name}: no {phase_name} request succeeded; first error: {phase.first_error}")
    trigger = phases["trigger"]
    # Each trigger the clients saw done was dispatched once; a failed one may have been dispatched before failing.
    if not trigger.ok <= counts["dispatched"] <= trigger.requests:
        raise BenchError(f"{name}: the clients saw {trigger.ok} of {trigger.requests} alerts triggered, the "
                         f"dispatcher counted {counts['dispatched']}")
    return _backend_metrics(phases, counts["dispatched"], f"_{name}"), env


@click.command()
@click.option("--json", "as_json", is_flag=True, help="End with the one JSON line.")
@click.option("--backends", default=",".join(BACKENDS), show_default=True,
              help="Comma-separated: sqlite, postgresql.")
@click.option("--clients", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Concurrent clients (one connection each).")
@click.option("--requests", type=click.IntRange(1, 10_000_000), default=2000, show_default=True,
              help="Requests per phase, shared by the clients.")
@click.option("--seconds", type=click.FloatRange(0.1, 3600), default=15.0, show_default=True,
              help="Longest a phase runs (wall time).")
@click.option("--devices", type=click.IntRange(1, 100_000), default=500, show_default=True,
              help="Devices seeded (with live status).")
@click.option("--server-backend", type=click.Choice(["trio", "asyncio"]), default="trio", show_default=True,
              help="Event loop of the server, as `loa serve --backend`.")
def api(*, as_json: bool, backends: str, clients: int, requests: int, seconds: float, devices: int,
        server_backend: str) -> None:
    """API rate and p99 latency: device status reads and alert triggers, beside /healthz on the same server."""
    chosen = [part.strip() for part in backends.split(",") if part.strip()]
    unknown = sorted(set(chosen) - set(BACKENDS))
    if unknown or not chosen:
        raise UserError(f"--backends: unknown {', '.join(unknown) or '(none given)'}; choose from "
                        f"{', '.join(BACKENDS)}")
    metrics: dict[str, Any] = {}
    env = environment(clients=clients, requests_per_phase=requests, seconds_per_phase=seconds, devices=devices,
                      server=f"hypercorn on {server_backend}, child process, 127.0.0.1",
                      client=f"httpx2 AsyncClient x{clients} on asyncio{' (uvloop)' if _loop_options() else ''}",
                      dispatcher="counting stand-in (the streamer's cost: loa bench alert)", backends=[])
    for name in dict.fromkeys(chosen):
        try:
            found, extra = run_backend(name, devices=devices, clients=clients, requests=requests, seconds=seconds,
                                       server_backend=server_backend)
        except PostgresUnavailableError as exc:
            env["postgresql"] = f"skipped: {exc}"
            continue
        except BenchError as exc:
            raise UserError(str(exc)) from None
        metrics.update(found)
        env.update(extra)
        env["backends"].append(name)
    if not env["backends"]:
        raise UserError(f"no backend could run: {env.get('postgresql', '')}")
    first = env["backends"][0]
    for key in [k for k in metrics if k.endswith(f"_{first}")]:
        metrics[key.removesuffix(f"_{first}")] = metrics[key]
    env["unsuffixed"] = first
    emit("api", metrics, as_json=as_json, env=env)
