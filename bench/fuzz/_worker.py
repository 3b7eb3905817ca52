"""One fuzzing process: ``python -m loa.bench.fuzz._worker TARGET [libFuzzer flags and corpus dirs]``.

Instruments ``loa`` (and the target's extra packages) while importing the target, then hands control to
libFuzzer through atheris, which runs until its flags say stop or an input crashes. Started by
:mod:`loa.bench.fuzz.run`, one process per target, as atheris needs.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any


def main(argv: list[str]) -> None:
    atheris: Any = importlib.import_module("atheris")  # ships no type information

    from loa.bench.fuzz import INSTRUMENT, load

    name = argv[1]
    with atheris.instrument_imports(include=["loa", *INSTRUMENT.get(name, ())]):
        target = load(name)
    if hook := getattr(target, "instrument", None):  # a target's own choice of third-party functions
        hook(atheris.instrument_func)
    atheris.Setup([argv[0], *argv[2:]], target.TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
