"""A short unauthenticated flood at the real streamer (`loa bench flood`, scaled down): the C flooder from many
loopback addresses, a fleet in its own process playing a live stream, two alerts before and two during the flood.
Nothing of the flood is accepted, no flood source is sent more bytes than it sent, the devices keep playing and
every device holds both alerts; the socket filter keeps the junk out of Python."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

DEVICES = 6


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler: the flooder is compiled at run time")
def test_a_short_flood_is_refused_and_never_amplified() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loa.cli", "bench", "flood", "--json", "--rate", "1500", "--seconds", "6",
         "--alerts", "2", "--rounds", "2", "--devices", str(DEVICES), "--full", "2", "--sources", "24"],
        capture_output=True, text=True, timeout=150, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["bench"] == "flood"
    m = record["metrics"]
    assert m["rounds"] == 2
    assert m["flood_sent"] == 2 * 9000  # two flood windows
    assert m["server_received"] > 0
    assert m["amplification_max"] <= 1.0
    assert m["flooder_received_bytes"] == m["server_sent_unverified_bytes"]  # both sides agree on what went back
    assert m["flooder_received_bytes"] <= m["server_received_unverified_bytes"]
    assert m["sessions"] == DEVICES  # the flood's handshakes opened no session
    assert m["handshake_responses"] >= DEVICES
    assert m["refused_alerts"] == {}
    assert m["alerts_per_window"] == 2
    assert m["alert_held_quiet"] == m["alert_held_flood"] == DEVICES  # every device held all eight alerts
    for phase in ("quiet", "flood"):  # a device of its own holds an alert no later than the shared process does
        assert 0 < m[f"alert_p99_{phase}_ms"] <= m[f"alert_p99_{phase}_in_process_ms"]
        worst = m[f"alert_worst_{phase}_ms"]  # each alert's slowest device: the p99 is one of theirs or below
        assert len(worst) == 2 * 2
        assert m[f"alert_p99_{phase}_ms"] <= max(worst)
    assert m["alert_warmup_ms"] > 0  # the alert before the windows, held by every device and not counted
    assert m["played_flood"] > 0  # the decoding devices kept playing through the flood
    assert m["received_flood"] > 0
    if sys.platform.startswith("linux"):  # the kernel filter dropped what no server takes, before Python saw it
        assert m["socket_filter"] is True
        assert m["flood_filterable"] > 0
        assert m["kernel_drops"] >= m["flood_filterable"]
        assert m["server_received"] <= m["flood_sent"] - m["flood_filterable"]
    assert m["bare_received"] > 0  # the ceiling: the same flood at a socket plain Python only drains
