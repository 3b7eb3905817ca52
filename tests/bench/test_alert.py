"""`loa bench alert --multicast` end to end with a tiny fleet: the zone's stream goes to a group, the decoding
devices play it from there (without the group membership they would play nothing: the server sends them no
unicast copy), and the JSON line says so (no timing thresholds)."""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from loa.bench._alert_fleet import build, diagnose, read_udp_drops, udp_drops
from loa.bench.alert import CAUSES, _run_count, alert, classify_slow, free_group, slow_indexes
from loa.devices.fleet import raise_open_file_limit
from loa.devices.fleet_host import FleetHost


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
    # the slowest devices' diagnosis: at least the top five, each with one cause
    assert metrics["slow_devices_6"] >= 5
    assert sum(metrics["slow_cause_6"].values()) == metrics["slow_devices_6"]
    assert set(metrics["slow_cause_6"]) <= set(CAUSES)
    assert metrics["server_resent_6"] >= 0
    assert metrics["unplayed_6"] >= 0
    assert metrics["timer_lag_max_s_6"] >= 0


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


@pytest.mark.e2e
def test_a_device_whose_first_copies_are_lost_is_diagnosed_as_retransmitted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Device 4 ignores what arrives in the 50 ms after its first beacon (the fleet's test seam: the beacon, the
    reliable ``alert``, ``amp`` and ``join``, as if its socket had overflowed); the server's channel sends them
    again after its RTO, and the diagnosis says so. Every device that held the alert handled a copy of it."""
    raise_open_file_limit(6)

    async def one() -> dict[str, Any]:
        return await _run_count(6, full=2, start_rate=150.0, settle=1.0, seed=4, workdir=str(tmp_path),
                                drop_first=[4])

    metrics = anyio.run(one, backend="asyncio")
    lines = [line.split(": ", 2)[2] for line in capsys.readouterr().err.splitlines()
             if line.startswith("alert 6: a slow device (")]
    slow = {entry["device"]: entry for entry in map(json.loads, lines)}
    assert metrics["slow_devices_6"] == len(slow) >= 1
    assert sum(metrics["slow_cause_6"].values()) == len(slow)
    dropped = slow[4]  # the slowest: it waited for a retransmission
    assert dropped["cause"] == "retransmitted", dropped
    assert dropped["seam_dropped"] >= 2  # the beacon and the sealed alert at least
    assert dropped["server_resent"] >= 1
    assert dropped["via"] == "reliable"
    assert dropped["arrival_ms"] >= 0.5 * dropped["server_rto_ms"]
    assert dropped["first_copy_ms"] == dropped["arrival_ms"]  # what it handled first was the copy sent again
    assert dropped["held_ms"] == max(entry["held_ms"] for entry in slow.values())
    assert metrics["server_resent_6"] >= dropped["server_resent"]
    result = json.loads((tmp_path / "result-6.json").read_text())
    for index, (accepted, copies) in enumerate(zip(result["accepted"], result["copies"], strict=True)):
        if accepted is not None:
            assert copies["beacons"] + copies["alerts"] >= 1, index
            assert copies["first_copy"] is not None
            assert copies["first_copy"] <= result["arrival"][index]
            assert copies["via"] in ("beacon", "reliable", "held"), index
        if index != 4:
            assert copies["seam_dropped"] == 0


def _device(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"held_ms": 80.0, "arrival_ms": 75.0, "own_ms": 5.0, "gc_ms": 0.0, "held_back": False,
                            "last_connect_ms": -60_000.0, "server_resent": 0, "server_rto_ms": 100.0}
    return {**base, **fields}


@pytest.mark.parametrize(("fields", "cause"), [
    ({"held_ms": None}, "not_held"),
    ({"held_back": True, "held_ms": 900.0}, "held_back"),
    ({"last_connect_ms": -200.0}, "rehandshake"),
    ({"last_connect_ms": 30.0}, "rehandshake"),
    ({"server_resent": 3, "arrival_ms": 104.0, "held_ms": 110.0, "via": "reliable"}, "retransmitted"),
    ({"server_resent": 1, "arrival_ms": 30.0, "own_ms": 1.0, "via": "reliable"}, "sent_late"),  # not this copy
    ({"server_resent": 17, "arrival_ms": 84.0, "held_ms": 85.0, "via": "beacon"}, "sent_late"),  # sent once
    ({"arrival_ms": 20.0, "own_ms": 550.0, "gc_ms": 530.0, "held_ms": 570.0}, "fleet_gc"),
    ({"arrival_ms": 20.0, "own_ms": 50.0, "gc_ms": 10.0, "held_ms": 70.0}, "own_cpu"),
    ({}, "sent_late"),
])
def test_classify_slow_decides_between_the_causes(fields: dict[str, Any], cause: str) -> None:
    assert classify_slow(_device(**fields)) == cause
    assert cause in CAUSES


def test_slow_indexes_are_the_slowest_then_the_far_ones_then_the_unheld() -> None:
    held: list[float | None] = [float(i % 10) for i in range(200)]
    held[17] = 1000.0  # far above 4 x p99 (9.0)
    held[3] = None
    chosen = slow_indexes(held, top=5)
    assert chosen[0] == 17
    assert all(held[i] == 9.0 for i in chosen[1:5])
    assert chosen[-1] == 3
    assert len(chosen) == 6
    assert slow_indexes([None, None]) == [0, 1]
    assert slow_indexes([]) == []


@given(st.lists(st.one_of(st.none(), st.floats(0, 1e6)), max_size=60), st.integers(0, 10))
def test_slow_indexes_properties(held: list[float | None], top: int) -> None:
    chosen = slow_indexes(held, top=top)
    assert len(set(chosen)) == len(chosen)
    timed = [h for h in held if h is not None]
    assert sum(held[i] is not None for i in chosen) >= min(top, len(timed))
    assert all(held[i] is None for i in chosen if i not in chosen[: len(chosen) - held.count(None)])
    if timed and top:
        assert held[chosen[0]] == max(timed)


PROC_NET_UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  296: 0100007F:DE65 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1128149 2 5f97de35 0
 2812: 0100007F:A839 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1128158 2 105ba375 17
 3000: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1128159 2 105ba376 3
 junk line
"""


def test_udp_drops_reads_the_kernel_table_by_local_address() -> None:
    assert udp_drops(PROC_NET_UDP) == {("127.0.0.1", 0xDE65): 0, ("127.0.0.1", 0xA839): 17, ("0.0.0.0", 53): 3}
    assert udp_drops("") == {}


def test_udp_drops_of_this_host_name_a_bound_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        drops = read_udp_drops()
        if drops is None:
            pytest.skip("no /proc/net/udp (not Linux)")
        assert drops[("127.0.0.1", sock.getsockname()[1])] == 0
