"""`loa bench sessions`: in-memory devices reach real sessions with the core; the bench runs at tiny sizes."""

from __future__ import annotations

import json

from click.testing import CliRunner

from loa.bench.sessions import GOAL_BYTES, InMemoryDevices, handshake_ceiling_s, measure_memory, new_core, sessions
from loa.protocol.session import DEAD_AFTER


def test_in_memory_devices_come_online_at_their_addresses() -> None:
    core = new_core()
    addresses = [(f"10.0.0.{i + 1}", 5000 + i) for i in range(5)]
    fleet = InMemoryDevices.establish(core, addresses)
    assert core.statistics().devices_online == 5
    assert {status.address for status in core.devices()} == set(addresses)
    assert fleet.handshake_ns > 0
    assert all(device.connected for device in fleet.devices.values())


def test_devices_brought_up_over_minutes_keep_their_first_sessions() -> None:
    """The timers run while the fleet comes up: a device up long before the last one still has its session when
    the fleet settles, instead of finding the server silent and handshaking again."""
    core = new_core()
    addresses = [(f"10.0.1.{i + 1}", 5000 + i) for i in range(4)]
    spacing = DEAD_AFTER / 2  # the first device is up 90 s before the fleet settles (and rekeys only at 120 s)
    fleet = InMemoryDevices.establish(core, addresses, spacing=spacing)
    fleet.settle(1.0 + len(addresses) * spacing)
    stats = core.sessions.conn.endpoint.statistics()
    assert (stats.inits, stats.sessions_started, stats.active_devices) == (4, 4, 4)
    assert all(device.connected for device in fleet.devices.values())


def test_memory_is_measured_per_session_and_meets_the_goal() -> None:
    """What the server keeps per settled session stays within the 2 KiB goal, here over 300 sessions (the bench's
    1,000 and 10,000 give figures within a few per cent of it)."""
    out = measure_memory(300)
    assert 0 < out["bytes_per_session_300"] <= GOAL_BYTES
    assert out["registry_bytes_per_device_300"] > 0
    assert out["goal_ratio_300"] >= 1


def test_ceiling_is_positive() -> None:
    assert handshake_ceiling_s(5) > 0


def test_sessions_bench_json() -> None:
    result = CliRunner().invoke(sessions, ["--json", "--devices", "5,12", "--repeat", "1"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["bench"] == "sessions"
    metrics = record["metrics"]
    for n in (5, 12):
        for key in ("bytes_per_session", "handshakes_per_s", "setup_per_s", "ceiling_handshakes_per_s",
                    "ratio_to_ceiling", "goal_ratio"):
            assert metrics[f"{key}_{n}"] > 0, key
        assert metrics[f"setup_per_s_{n}"] <= metrics[f"handshakes_per_s_{n}"]
    assert metrics["bytes_per_session"] == metrics["bytes_per_session_12"]
    assert "tracemalloc" in record["env"]["method"]


def test_bad_devices_option() -> None:
    result = CliRunner().invoke(sessions, ["--devices", "0"])
    assert result.exit_code == 1
    assert "--devices" in result.output
