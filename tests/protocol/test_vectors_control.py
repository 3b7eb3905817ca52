"""spec/vectors/control.json: every vector encodes to its bytes, decodes to its map, or fails as named."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from loa.protocol import control as c
from loa.protocol.errors import error_by_name

VECTORS_FILE = pathlib.Path(__file__).parents[2] / "spec" / "vectors" / "control.json"
DOC = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
VALID = [v for v in DOC["vectors"] if "error" not in v]
INVALID = [v for v in DOC["vectors"] if "error" in v]


def from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return bytes.fromhex(value["$bin"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def test_file_shape() -> None:
    assert DOC["name"] == "control"
    assert DOC["spec"].startswith("PROTOCOL.md section 4")
    ids = [v["id"] for v in DOC["vectors"]]
    assert len(ids) == len(set(ids))
    covered = {v["decoded"]["t"] for v in VALID if not v.get("decode_only")}
    assert covered == set(c.SCHEMA)
    assert len(INVALID) >= 12


@pytest.mark.parametrize("vector", VALID, ids=[v["id"] for v in VALID])
def test_valid_vector(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    decoded = c.decode(data)
    if vector.get("unknown"):
        assert isinstance(decoded, c.UnknownMessage)
        assert {"t": decoded.t, "id": decoded.id} == vector["decoded"]
        return
    assert not isinstance(decoded, c.UnknownMessage)
    assert to_json(c.to_map(decoded)) == vector["decoded"]
    if not vector.get("decode_only"):
        message = c.from_map(from_json(vector["decoded"]))
        assert not isinstance(message, c.UnknownMessage)
        assert c.encode(message) == data


@pytest.mark.parametrize("vector", INVALID, ids=[v["id"] for v in INVALID])
def test_invalid_vector(vector: dict[str, Any]) -> None:
    error = error_by_name(vector["error"])
    with pytest.raises(error) as info:
        c.decode(bytes.fromhex(vector["hex"]))
    assert type(info.value) is error


def test_volume_vector_is_the_spec_example() -> None:
    volume = next(v for v in VALID if v["id"] == "control.volume")
    assert volume["hex"] == "83a174a6766f6c756d65a2696407a56c6576656c50"
