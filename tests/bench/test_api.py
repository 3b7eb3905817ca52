"""`loa bench api` runs end to end at a tiny size: the JSON line's shape, and counts that add up (no timing
thresholds)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from loa.bench.api import BACKENDS, PHASES, api

pytestmark = pytest.mark.e2e


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def test_api_bench_json_shape_and_counts() -> None:
    budget = 24
    result = CliRunner().invoke(api, ["--json", "--clients", "3", "--requests", str(budget), "--seconds", "20",
                                      "--devices", "6"])
    assert result.exit_code == 0, result.output
    record: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(record) == {"bench", "metrics", "env"}
    assert record["bench"] == "api"
    metrics, env = record["metrics"], record["env"]
    ran = env["backends"]
    assert ran[0] == "sqlite"
    if "postgresql" not in ran:  # only when the binaries are missing, and then it says so
        assert env["postgresql"].startswith("skipped: initdb/pg_ctl not found")
    for backend in ran:
        for phase in PHASES:
            sent, ok, errors = (metrics[f"{phase}_{key}_{backend}"] for key in ("requests", "ok", "errors"))
            assert sent == ok + errors
            assert 0 < ok <= sent <= budget
            assert (f"errors_{phase}_{backend}" in env) == (errors > 0)  # every failure is quoted
            assert metrics[f"{phase}_rps_{backend}"] > 0
            assert metrics[f"{phase}_p99_ms_{backend}"] > 0
        done, dispatched, sent = (metrics[f"{key}_{backend}"]
                                  for key in ("trigger_ok", "dispatched", "trigger_requests"))
        assert done <= dispatched <= sent  # each done trigger dispatched once; a failed one at most once
        for phase in ("status", "trigger"):
            ratio = metrics[f"{phase}_ratio_to_healthz_{backend}"]
            assert _number(ratio)
            assert ratio == pytest.approx(metrics[f"{phase}_rps_{backend}"] / metrics[f"healthz_rps_{backend}"],
                                          rel=0.01)
    for key in [k for k in metrics if k.endswith("_sqlite")]:  # unsuffixed: the embedded default's figures
        assert metrics[key.removesuffix("_sqlite")] == metrics[key]
    assert all(_number(v) for v in metrics.values())
    assert env["clients"] == 3
    assert env["requests_per_phase"] == budget


def test_api_bench_human_table_on_one_backend() -> None:
    result = CliRunner().invoke(api, ["--backends", "sqlite", "--clients", "2", "--requests", "6", "--devices", "2"])
    assert result.exit_code == 0, result.output
    assert "trigger_ratio_to_healthz_sqlite" in result.stdout
    assert "postgresql" not in result.stdout


@pytest.mark.parametrize("backends", ["mysql", "sqlite,oracle", ","])
def test_unknown_backend_is_one_clear_line(backends: str) -> None:
    result = CliRunner().invoke(api, ["--backends", backends])
    assert result.exit_code == 1
    assert "--backends" in result.output
    assert all(name in result.output for name in BACKENDS)
    assert "Traceback" not in result.output
