"""spec/vectors/run_vectors.py: every vector file passes as shipped; a copy with one vector corrupted fails, naming
that vector, whatever the file's kind; the other files still run."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import loa

VECTORS = Path(loa.__file__).resolve().parent / "spec" / "vectors"
RUNNER = VECTORS / "run_vectors.py"
KINDS = ["control", "session", "alert", "priority", "media"]


def _doc(kind: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTORS / f"{kind}.json").read_text(encoding="utf-8"))
    return doc


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(RUNNER), *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=False)


def _load_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_vectors", RUNNER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_file_passes_by_default() -> None:
    result = _run()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines == [f"{kind}.json: {len(_doc(kind)['vectors'])} passed, 0 failed"
                     for kind in ["control", "session", "alert", "priority", "media"]]


def test_named_files_only() -> None:
    result = _run(VECTORS / "priority.json", VECTORS / "alert.json")
    assert result.returncode == 0, result.stdout
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["priority.json", "alert.json"]


# -- corruptions: each changes one vector so that a right implementation must disagree with it ------------------


def _two_way(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Vectors checked both ways (decode and encode): any change to their bytes must be caught."""
    return [v for v in doc["vectors"] if "decoded" in v and not v.get("decode_only")]


def _bump_first_int(value: Any) -> bool:
    """Add 1 to the first integer (not a bool) inside ``value``, in place; False if it holds none."""
    items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
    for key, x in items:
        if isinstance(x, int) and not isinstance(x, bool):
            value[key] = x + 1
            return True
        if isinstance(x, dict | list) and _bump_first_int(x):
            return True
    return False


def corrupt(doc: dict[str, Any], how: str) -> str:
    """Corrupt one vector of ``doc`` in place (the middle one that fits); return its id."""
    if doc["name"] == "priority":
        vector = doc["vectors"][len(doc["vectors"]) // 2]
        step = vector["steps"][-1]
        if how == "bytes":
            step["current"] = 999
        elif how == "decoded":
            step["events"] = step["events"][:-1]
        else:
            step["waiting"] = [*step["waiting"], 999]
        return str(vector["id"])
    if how == "error":
        candidates = [v for v in doc["vectors"] if "error" in v]
        vector = candidates[len(candidates) // 2]
        vector["error"] = "FieldError" if vector["error"] != "FieldError" else "MalformedError"
        return str(vector["id"])
    candidates = _two_way(doc)
    vector = candidates[len(candidates) // 2]
    if how == "bytes":
        data = bytearray.fromhex(vector["hex"])
        data[-1] ^= 0x01
        vector["hex"] = data.hex()
    else:
        assert _bump_first_int(vector["decoded"]), vector["id"]
    return str(vector["id"])


@pytest.mark.parametrize("how", ["bytes", "decoded", "error"])
def test_one_corrupted_vector_per_file_fails_and_is_named(tmp_path: Path, how: str) -> None:
    corrupted: dict[str, str] = {}
    for kind in KINDS:
        doc = _doc(kind)
        corrupted[kind] = corrupt(doc, how)
        (tmp_path / f"{kind}.json").write_text(json.dumps(doc), encoding="utf-8")
    result = _run(*(tmp_path / f"{kind}.json" for kind in KINDS))
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    for kind, vector_id in corrupted.items():
        total = len(_doc(kind)["vectors"])
        assert f"{kind}.json: {total - 1} passed, 1 failed" in lines, result.stdout
        assert [line for line in lines if line.startswith("FAIL ") and line.split()[1].rstrip(":").startswith(
            f"{kind}.")] == [line for line in lines if line.startswith(f"FAIL {vector_id}: ")], result.stdout


def test_the_failure_line_says_what_differs(tmp_path: Path) -> None:
    doc = _doc("control")
    vector = next(v for v in doc["vectors"] if v["id"] == "control.volume")
    vector["decoded"]["level"] = 81
    (tmp_path / "control.json").write_text(json.dumps(doc), encoding="utf-8")
    result = _run(tmp_path / "control.json")
    assert result.returncode == 1
    assert "FAIL control.volume: decode: got {'t': 'volume', 'id': 7, 'level': 80}" in result.stdout


def test_an_unreadable_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "odd.json").write_text(json.dumps({"name": "toaster", "context": {}, "vectors": []}))
    result = _run(tmp_path / "missing.json", tmp_path / "odd.json", VECTORS / "priority.json")
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert lines[0].startswith("missing.json: cannot run: FileNotFoundError")
    assert lines[1] == "odd.json: cannot run: KeyError('toaster')"
    assert lines[2].startswith("priority.json: ")
    assert "Traceback" not in result.stdout + result.stderr


RUNNER_MODULE = _load_runner()
TWO_WAY = [(kind, v) for kind in KINDS if kind != "priority" for v in _two_way(_doc(kind))]
CONTEXTS = {kind: _doc(kind)["context"] for kind in KINDS}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pick=st.sampled_from(TWO_WAY), where=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_changed_byte_of_a_two_way_vector_fails(pick: tuple[str, dict[str, Any]], where: int, flip: int) -> None:
    kind, original = pick
    vector = copy.deepcopy(original)
    data = bytearray.fromhex(vector["hex"])
    data[where % len(data)] ^= flip
    vector["hex"] = data.hex()
    ctx = {**CONTEXTS[kind], **vector.get("context", {})}
    try:
        why = RUNNER_MODULE.CHECKS[kind](vector, ctx)
    except Exception:  # noqa: BLE001 - the runner counts a crash on a vector as that vector's failure
        why = "raised"
    assert why is not None
