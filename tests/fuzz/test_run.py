"""`loa bench fuzz`: a real atheris run of one target, the JSON it prints, and its user errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from loa.bench.fuzz import TARGETS
from loa.bench.fuzz.run import atheris_version, fuzz

CORPUS = Path(__file__).resolve().parent / "corpus"


def test_a_two_second_run_executes_and_reports(tmp_path: Path) -> None:
    if atheris_version() is None:  # the dev extras install it on Linux x86-64; elsewhere there is no wheel
        import pytest

        pytest.skip("atheris is not installed (pip install 'loa[fuzz]')")
    shutil.copytree(CORPUS / "datagram", tmp_path / "datagram")
    out = subprocess.run(
        [sys.executable, "-c", "from loa.cli import run; run()", "bench", "fuzz", "--target", "datagram",
         "--seconds", "2", "--corpus", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["bench"] == "fuzz"
    metrics = record["metrics"]
    assert metrics["datagram_executions"] > 0
    assert metrics["executions"] == metrics["datagram_executions"]
    assert metrics["datagram_cov"] > 0
    assert metrics["crashes"] == 0, out.stderr
    assert metrics["crash_inputs"] == []
    assert record["env"]["atheris"] == atheris_version()
    assert "fuzz datagram:" in out.stderr
    assert sorted(p.name for p in (tmp_path / "datagram").iterdir()) == sorted(
        p.name for p in (CORPUS / "datagram").iterdir())  # nothing but crash inputs is ever written there


def test_seconds_are_required() -> None:
    result = CliRunner().invoke(fuzz, ["--target", "rtp"])
    assert result.exit_code == 1
    assert "--seconds" in result.output
    assert "Traceback" not in result.output


def test_write_seeds_writes_every_seed(tmp_path: Path) -> None:
    result = CliRunner().invoke(fuzz, ["--write-seeds", "--target", "sdp", "--target", "rtcp", "--corpus",
                                       str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rtcp", "sdp"]
    for name in ("sdp", "rtcp"):
        written = {p.name: p.read_bytes() for p in (tmp_path / name).iterdir()}
        kept = {p.name: p.read_bytes() for p in (CORPUS / name).glob("seed-*") if p.name in written}
        assert written == kept


def test_unknown_target_is_refused() -> None:
    result = CliRunner().invoke(fuzz, ["--target", "nope", "--seconds", "1"])
    assert result.exit_code == 2
    assert sorted(TARGETS)[0] in result.output
