"""The kit against the reference device (every case OK) and against every mutant (FAILED exactly as declared).

These run every case on real loopback sockets in real time (about 40 s per agent with 8 cases at once); they
are marked e2e. A mutant's run that fails a case it does not declare, or passes one it declares, fails here:
the kit detects exactly what it claims.
"""

from __future__ import annotations

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loa.devices.conformance.agents import Agent, ReferenceAgent
from loa.devices.conformance.kit import KitState
from loa.devices.conformance.mutants import MUTANTS
from loa.devices.conformance.registry import Verdict, all_cases
from loa.devices.conformance.runner import CaseResult, run_cases

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _run(agent: Agent, ids: set[str] | None = None) -> list[CaseResult]:
    cases = [c for c in all_cases() if ids is None or c.id in ids]
    state = KitState(static_private=bytes(32 - i for i in range(32)), authority=Ed25519PrivateKey.generate())
    out: list[CaseResult] = []

    async def main() -> None:
        out.extend(await run_cases(cases, agent, state, jobs=10))

    anyio.run(main, backend="trio")
    return out


def _failed(results: list[CaseResult]) -> set[str]:
    return {r.case.id for r in results if r.verdict is Verdict.FAILED}


def _explain(results: list[CaseResult]) -> str:
    return "; ".join(f"{r.case.id}: {r.verdict} ({r.reason})" for r in results if r.verdict is not Verdict.OK)


@pytest.mark.flaky(reruns=1)
def test_reference_passes_every_case() -> None:
    results = _run(ReferenceAgent())
    assert {r.verdict for r in results} == {Verdict.OK}, _explain(results)


@pytest.mark.flaky(reruns=1)
@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_fails_exactly_its_declared_cases(name: str) -> None:
    mutant = MUTANTS[name]
    results = _run(mutant.agent())
    assert _failed(results) == set(mutant.fails), _explain(results)
