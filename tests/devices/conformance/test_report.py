"""Reports: index.json's shape, index.html's matrix and a per-case JSON and HTML with the datagram log."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from loa.devices.conformance.agents import ReferenceAgent
from loa.devices.conformance.kit import KitState
from loa.devices.conformance.registry import Verdict, select
from loa.devices.conformance.report import write_reports
from loa.devices.conformance.runner import CaseResult, run_cases


@pytest.fixture(scope="module")
def results() -> list[CaseResult]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    state = KitState(static_private=bytes(range(32)), authority=Ed25519PrivateKey.generate())
    out: list[CaseResult] = []

    async def main() -> None:
        out.extend(await run_cases(select(["3.3.1", "4.3.3"]), ReferenceAgent(), state, jobs=2))

    anyio.run(main, backend="trio")
    return out


def test_index_json_shape(results: list[CaseResult], tmp_path: Path) -> None:
    write_reports(results, tmp_path)
    index = json.loads((tmp_path / "index.json").read_text())
    assert set(index) == {"reference"}
    assert set(index["reference"]) == {"3.3.1", "4.3.3"}
    for case_id, entry in index["reference"].items():
        assert set(entry) == {"verdict", "duration_ms", "report"}
        assert entry["verdict"] in {str(v) for v in Verdict}
        assert isinstance(entry["duration_ms"], int)
        report = json.loads((tmp_path / entry["report"]).read_text())
        assert report["id"] == case_id
        assert report["description"]
        assert report["expectation"]
        assert report["checks"]
        assert report["log"], "the datagram log is in the report"
        first = report["log"][0]
        assert set(first) == {"t", "dir", "len", "hex", "note"}
        assert bytes.fromhex(first["hex"])[:1] == b"\x01"  # the device's HandshakeInit comes first
        html = (tmp_path / entry["report"].replace(".json", ".html")).read_text()
        assert first["hex"] in html
        assert "<script" not in html


def test_index_html_matrix_links_every_case(results: list[CaseResult], tmp_path: Path) -> None:
    write_reports(results, tmp_path)
    html = (tmp_path / "index.html").read_text()
    for result in results:
        assert f'href="reference_{result.case.id}.html"' in html
    assert "<script" not in html


def test_runs_of_several_agents_merge_into_one_index(results: list[CaseResult], tmp_path: Path) -> None:
    write_reports(results, tmp_path)
    other = [CaseResult(r.case, "mutant:x", Verdict.FAILED, 1) for r in results]
    index = write_reports(other, tmp_path)
    assert set(index) == {"reference", "mutant:x"}
    assert "mutant:x" in (tmp_path / "index.html").read_text()
