"""Faults made by the kernel, not by our proxy: `loa bench faults --kernel` as a real process, scaled down.

The bench moves itself into a network namespace of its own (``unshare(CLONE_NEWNET)``, only ``lo``), runs the
streamer service and three decoding devices there, and impairs the datagrams to and from the server's port in
the kernel: ``tc netem`` loss where the kernel has ``sch_netem``; where it has not (many containers, this test's
usual machine among them) random loss is an nftables ``numgen random`` drop rule on the ``input`` hook, and a
one-way outage is an nftables drop rule for that direction. Skipped, with the reason, only when neither works
here (not root, or no nftables): :func:`loa.bench.impair.kernel_support` says which.

* ``loss10``: 10 % loss both ways, counted by the rules' own counters: nearly every frame slot plays from its
  packet or its FEC, and every device gets the alert;
* ``outage_down_3s``: every datagram from the server dropped for 3 s: every device plays from packets again
  within 2 s of the end and holds the alert triggered at its start."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loa.bench.impair import kernel_support

pytestmark = pytest.mark.e2e
BACKEND, WHY = kernel_support()


@pytest.mark.skipif(BACKEND is None, reason=WHY)
def test_kernel_loss_and_outage_through_a_real_bench_process() -> None:
    args = [sys.executable, "-m", "loa.cli", "bench", "faults", "--kernel", "--devices", "3", "--seconds", "4",
            "--scenarios", "loss10,outage_down_3s", "--limit", "20", "--seed", "5", "--json"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=150, check=False)
    print(done.stderr)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.strip().splitlines()[-1])
    m = record["metrics"]
    print(record["env"]["network"], m)
    assert record["env"]["network"] == f"loopback UDP, kernel: {BACKEND}"
    if BACKEND == "nft":  # netem's own drops are not seen by the nftables counters
        assert 0.05 < m["loss10_loss_seen"] < 0.15
    assert m["loss10_exact_fraction"] + m["loss10_fec_fraction"] >= 0.9
    assert m["loss10_played_twice"] == 0
    assert m["loss10_alert_held_fraction"] == 1.0
    assert m["outage_down_3s_rejoined_fraction"] == 1.0
    assert m["outage_down_3s_rejoin_ms"] < 2_000
    assert m["outage_down_3s_alert_held_fraction"] == 1.0
    assert m["outage_down_3s_alert_ms"] >= 2_900
