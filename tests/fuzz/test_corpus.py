"""Replay every file of ``tests/fuzz/corpus/<target>/`` through its fuzz target, without atheris.

The corpus holds seed inputs (valid examples, most from ``spec/vectors``) and every input a fuzzer ever found
to crash a parser (``crash-*``, ``timeout-*``, ``oom-*``), kept after the fix: if a parser regresses, the
target raises here the way it did under the fuzzer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loa.bench.fuzz import TARGETS, load

CORPUS = Path(__file__).resolve().parent / "corpus"
CASES = [(name, path) for name in TARGETS for path in sorted((CORPUS / name).glob("*"))]


@pytest.mark.parametrize(("target", "path"), CASES, ids=[f"{n}/{p.name}" for n, p in CASES])
def test_corpus_input_is_handled(target: str, path: Path) -> None:
    load(target).TestOneInput(path.read_bytes())


@pytest.mark.parametrize("target", list(TARGETS))
def test_every_target_has_its_seeds_in_the_corpus(target: str) -> None:
    module = load(target)
    names = {p.name for p in (CORPUS / target).glob("seed-*")}
    seeds = module.seeds()
    assert seeds, f"{target} has no seeds"
    missing = [s for s in seeds if not any(n.startswith(f"seed-{s.replace('/', '_')}") for n in names)]
    assert not missing, f"run `loa bench fuzz --write-seeds --target {target}`: {missing}"
    assert isinstance(module.MAX_LEN, int)
    assert max(len(d) for d in seeds.values()) <= module.MAX_LEN


def test_crash_inputs_are_kept_with_their_fixes() -> None:
    kept = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.glob("*/*") if not p.name.startswith("seed-"))
    assert all(p.split("/")[1].split("-")[0] in ("crash", "timeout", "oom") for p in kept), kept
