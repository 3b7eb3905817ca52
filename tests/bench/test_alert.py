"""`loa bench alert --multicast` end to end with a tiny fleet: the zone's stream goes to a group, the decoding
devices play it from there (without the group membership they would play nothing: the server sends them no
unicast copy), and the JSON line says so (no timing thresholds)."""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner

from loa.bench._alert_fleet import build, diagnose
from loa.bench.alert import alert, free_group
from loa.devices.runner import FleetHost


@pytest.mark.e2e
def test_alert_bench_multicast_json() -> None:
    result = CliRunner().invoke(alert, ["--json", "--devices", "6", "--full", "2", "--settle", "1", "--multicast"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["bench"] == "alert"
    assert record["env"]["multicast"] is True
    metrics = record["metrics"]
    assert metrics["held_fraction_6"] == 1.0
    for key in ("p99_ms_6", "playout_p50_ms_6", "playout_p99_ms_6", "packet_p99_ms_6", "stream_destinations_6"):
        value = metrics[key]
        assert isinstance(value, (int, float)), key
        assert not isinstance(value, bool), key
    assert metrics["stream_destinations_6"] == 1  # the group, and no device's own address
    assert metrics["playout_p99_ms"] == metrics["playout_p99_ms_6"]


def test_free_group_is_an_administratively_scoped_group_with_a_port() -> None:
    host, _, port = free_group(random.Random(3)).rpartition(":")
    octets = [int(part) for part in host.split(".")]
    assert octets[:2] == [239, 255]
    assert all(0 < octet < 255 for octet in octets[2:])
    assert 0 < int(port) < 65536
    assert free_group(random.Random(3)).rpartition(":")[0] == host  # the address follows the generator


def test_a_device_that_has_not_started_is_diagnosed_as_unscheduled() -> None:
    spec = {"seed": 5, "count": 2, "full": 1, "host": "127.0.0.1", "port": 9, "server_public": "11" * 32,
            "authority": "22" * 32}
    devices = build(spec)
    host = FleetHost(devices, ("127.0.0.1", 9), bind_host="127.0.0.1")
    try:
        report = diagnose(host, 0)
    finally:
        host.close()
    assert report["current"] is None
    assert report["primary"] is None
    assert report["frames"] == 0
    assert report["scheduled_in_s"] is None  # never started: the host holds no timer for it
    assert report["broadcasts"] == {}
    assert report["clock_ready"] is False
    json.dumps(report)  # it goes into the fleet's JSON result
