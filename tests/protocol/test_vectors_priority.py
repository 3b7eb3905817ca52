"""spec/vectors/priority.json: every arbitration sequence gives exactly its events, current and waiting list."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import pytest

from loa.protocol.priority import Arbiter

VECTORS_FILE = pathlib.Path(__file__).parents[2] / "spec" / "vectors" / "priority.json"
DOC = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))


def test_file_shape() -> None:
    assert DOC["name"] == "priority"
    ids = [v["id"] for v in DOC["vectors"]]
    assert len(ids) == len(set(ids)) >= 10


@pytest.mark.parametrize("vector", DOC["vectors"], ids=[v["id"] for v in DOC["vectors"]])
def test_sequence(vector: dict[str, Any]) -> None:
    arbiter = Arbiter()
    for step in vector["steps"]:
        if "arrive" in step:
            a = step["arrive"]
            events = arbiter.arrive(a["bid"], a["cls"], a["lvl"], a["policy"])
        else:
            events = arbiter.end(step["end"])
        assert [{"event": type(e).__name__, **dataclasses.asdict(e)} for e in events] == step["events"]
        assert arbiter.current == step["current"]
        assert list(arbiter.waiting) == step["waiting"]
