"""A tiny wire-vector runner: the shape every implementation's own runner takes (PROTOCOL.md section 11).

For each vector of a file: a valid vector's ``hex`` must decode to exactly ``decoded`` and ``decoded`` must encode
to exactly ``hex``; an error vector's ``hex`` must be rejected. Binary values in ``decoded`` are ``{"$bin": hex}``.
This runner plugs loa's own codec in for the control messages; a vendor replaces ``decode``/``encode`` with
theirs (same loop, any language). Usage: ``python spec/vectors/run_vectors.py [control.json]``.
"""

import json
import sys
from pathlib import Path
from typing import Any


def from_json(v: Any) -> Any:
    if isinstance(v, dict):
        return bytes.fromhex(v["$bin"]) if set(v) == {"$bin"} else {k: from_json(x) for k, x in v.items()}
    return [from_json(x) for x in v] if isinstance(v, list) else v


def to_json(v: Any) -> Any:
    if isinstance(v, bytes):
        return {"$bin": v.hex()}
    if isinstance(v, dict):
        return {k: to_json(x) for k, x in v.items()}
    return [to_json(x) for x in v] if isinstance(v, list | tuple) else v


def decode(data: bytes) -> Any:  # yours here: bytes -> a map like "decoded", or raise on bad input
    from loa.protocol import control
    message = control.decode(data)
    if isinstance(message, control.UnknownMessage):
        return {"t": message.t, "id": message.id}
    return to_json(control.to_map(message))


def encode(decoded: Any) -> bytes:  # replace with your implementation: a map like "decoded" -> bytes
    from loa.protocol import control
    return control.encode(control.from_map(from_json(decoded)))  # type: ignore[arg-type]


def run(path: str | Path) -> bool:
    passed = failed = 0
    for v in json.loads(Path(path).read_text(encoding="utf-8"))["vectors"]:
        data = bytes.fromhex(v["hex"])
        try:
            if "error" in v:
                try:
                    decode(data)
                    ok = False
                except Exception:  # noqa: BLE001 - any rejection is what an error vector asks for
                    ok = True
            elif v.get("unknown"):
                ok = decode(data).get("t") == v["decoded"]["t"]
            else:
                ok = decode(data) == v["decoded"] and (v.get("decode_only") or encode(v["decoded"]) == data)
        except Exception as exc:  # noqa: BLE001 - a crash on a vector is a failure of that vector
            ok, v["why"] = False, repr(exc)
        passed, failed = passed + ok, failed + (not ok)
        if not ok:
            print(f"FAIL {v['id']}: {v.get('why', v['description'])}")
    print(f"{Path(path).name}: {passed} passed, {failed} failed")
    return failed == 0


if __name__ == "__main__":
    files: list[str | Path] = [*sys.argv[1:]] or [Path(__file__).with_name("control.json")]
    results = [run(f) for f in files]  # every file runs, not just up to the first failure
    sys.exit(0 if all(results) else 1)
