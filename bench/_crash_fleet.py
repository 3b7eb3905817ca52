"""The fleet side of `loa bench crash`, run as its own process: ``python -m loa.bench._crash_fleet SPEC``.

``SPEC`` is a JSON file written by the bench: the server address and public key, the authority key, the keys
folder and device count (:func:`loa.devices.fleet.load_fleet_keys`, the same files `loa fleet` uses), how many
devices decode (``full``), an optional ``watchdog_ms`` (as a server's ``config`` would set it; absent: the
protocol's default) and a time limit. The devices run in a :class:`loa.devices.FleetHost` on loopback, exactly
as `loa fleet` runs them, and stay up while the server is killed and restarted.

Every ``POLL_S`` the process looks at each device and prints, on stdout, one JSON line per change, stamped on
the host's monotonic clock (the true timeline, shared with the bench's process):

* ``{"ev": "session", "d": I, "t": T, "n": N}``: device I's N-th session started (a handshake completed);
* ``{"ev": "init", "d": I, "t": T, "n": N}``: device I has sent N HandshakeInits (first ones or retries);
* ``{"ev": "watchdog", "d": I, "t": T}``: its media watchdog fired at T (the device's own record of the
  instant, moved to the true timeline), and the fallback plays;
* ``{"ev": "state", "d": I, "t": T, "bid": B, "src": S}``: what it reports playing changed.

A line ``{"ev": "ready"}`` says the devices are being started. The process ends at the time limit, or when
SIGTERM arrives (devices then send ``bye``).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from loa.devices.fleet import build_fleet, load_fleet_keys, raise_open_file_limit
from loa.devices.fleet_host import FleetHost
from loa.devices.runner import run
from loa.protocol.control import ConfigValues

POLL_S = 0.02


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    raise_open_file_limit(spec["count"])
    keys = load_fleet_keys(spec["keys_dir"], spec["count"])
    devices = build_fleet(keys, server_public=bytes.fromhex(spec["server_public"]),
                          server_address=(spec["host"], spec["port"]),
                          authority_keys=[bytes.fromhex(spec["authority"])], full=spec["full"], seed=spec["seed"])
    cores = [core for core, _ in devices]
    clocks = [clock for _, clock in devices]
    if spec.get("watchdog_ms") is not None:
        for core in cores:
            core.settings.apply_config(ConfigValues(watchdog_ms=int(spec["watchdog_ms"])))
    host = FleetHost(devices, (spec["host"], spec["port"]), bind_host="127.0.0.1", start_rate=spec["start_rate"],
                     priority=spec["full"])
    sessions = [0] * len(cores)
    inits = [0] * len(cores)
    fires = [0] * len(cores)
    states: list[Any] = [None] * len(cores)

    def poll(_: FleetHost) -> None:
        now = time.monotonic()
        for i, core in enumerate(cores[: host.started]):
            stats = core.conn.session.statistics()
            if stats.inits_sent != inits[i]:
                inits[i] = stats.inits_sent
                _emit({"ev": "init", "d": i, "t": now, "n": stats.inits_sent})
            started = stats.sessions_started
            if started != sessions[i]:
                sessions[i] = started
                _emit({"ev": "session", "d": i, "t": now, "n": started})
            watchdog = core.watchdog
            if watchdog.fires != fires[i]:
                fires[i] = watchdog.fires
                at = clocks[i].true(watchdog.fired_at) if watchdog.fired_at is not None else now
                _emit({"ev": "watchdog", "d": i, "t": at})
            if core.state != states[i]:
                states[i] = core.state
                bid, src = core.state if core.state is not None else (None, None)
                _emit({"ev": "state", "d": i, "t": now, "bid": bid, "src": src})

    async def body() -> None:
        _emit({"ev": "ready"})
        with anyio.open_signal_receiver(signal.SIGTERM) as signals, anyio.move_on_after(spec["limit"]) as scope:
            async with anyio.create_task_group() as tg:
                async def on_signal() -> None:
                    async for _ in signals:
                        scope.cancel()
                        return

                tg.start_soon(on_signal)
                await host.run(tick=POLL_S, on_tick=poll)

    run(body, spec.get("backend", "trio"))


if __name__ == "__main__":
    main(sys.argv[1])
