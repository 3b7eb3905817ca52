"""The ``rrule`` fuzz target instruments dateutil's rule parsing and set-up but not its expansion loop."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from dateutil import _common as du_common
from dateutil import rrule as du_rrule

from loa.bench.fuzz import INSTRUMENT
from loa.bench.fuzz import rrule as target


def _functions() -> dict[str, Callable[..., Any]]:
    out = {}
    for module in (du_rrule, du_common):
        for class_name, cls in vars(module).items():
            if inspect.isclass(cls) and cls.__module__ == module.__name__:
                out.update({f"{module.__name__}.{class_name}.{name}": f for name, f in vars(cls).items()
                            if inspect.isfunction(f)})
    return out


def test_every_rule_function_but_the_expansion_loop_is_instrumented() -> None:
    seen: list[Callable[..., Any]] = []
    count = target.instrument(seen.append)
    functions = _functions()
    expansion = {f"dateutil.rrule.{name}" for name in target.EXPANSION}
    assert expansion <= functions.keys()  # a dateutil rename would otherwise instrument the loop again
    assert count == len(seen) == len(functions) - len(expansion)
    assert {f.__qualname__ for f in seen} >= {"_rrulestr._parse_rfc_rrule", "_iterinfo.rebuild", "rrule.__init__"}
    assert not {functions[name] for name in expansion} & set(seen)
    assert "rrule" not in INSTRUMENT  # dateutil is imported uninstrumented: the hook chooses
