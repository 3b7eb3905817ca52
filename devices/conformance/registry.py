"""The case registry and the verdict rules of the conformance kit (in the manner of Autobahn|Testsuite).

A :class:`Case` has an id ``X.Y.Z`` whose ``X.Y`` is the PROTOCOL.md section it tests, a title, a DESCRIPTION
(what the kit does), an EXPECTATION (what a conforming device does) and the spec sentence it rests on, quoted
word for word (``quote``), with the requirement level of that sentence (``MUST`` or ``SHOULD``). Its ``run``
coroutine drives the device through a :class:`Context` and records :class:`Check` results.

Verdicts: ``OK`` (every check passed); ``NON-STRICT`` (a SHOULD-level check failed, every MUST passed);
``INFORMATIONAL`` (the case only reports); ``UNIMPLEMENTED`` (the device, or the way it is attached, lacks
what the case needs: the case raises :class:`Unimplemented`); ``FAILED`` (a MUST-level check failed, or what the
case waited for never happened within its timeout).
"""

from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loa.devices.conformance.context import Context

__all__ = ["CASES", "Case", "Check", "Unimplemented", "Verdict", "case", "case_table", "select", "verdict_of"]


class Verdict(enum.StrEnum):
    OK = "OK"
    NON_STRICT = "NON-STRICT"
    INFORMATIONAL = "INFORMATIONAL"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    FAILED = "FAILED"


LEVELS = ("MUST", "SHOULD")


class Unimplemented(Exception):  # noqa: N818 - a verdict, not an error
    """The case cannot run against this device or attachment (the message says what is missing)."""


@dataclass(slots=True)
class Check:
    """One expectation checked: ``level`` MUST or SHOULD; ``expected`` and ``observed`` as text for reports."""

    what: str
    ok: bool
    expected: str
    observed: str
    level: str = "MUST"

    def as_json(self) -> dict[str, Any]:
        return {"what": self.what, "ok": self.ok, "level": self.level, "expected": self.expected,
                "observed": self.observed}


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    title: str
    description: str
    expectation: str
    quote: str
    level: str
    run: Callable[[Context], Awaitable[None]] = field(repr=False, compare=False)
    timeout: float = 15.0
    needs: frozenset[str] = frozenset()
    informational: bool = False

    @property
    def section(self) -> str:
        """The PROTOCOL.md section: ``X.Y`` of the id, or ``X`` for ``X.0.Z`` (a section without subsections)."""
        major, minor, _ = self.id.split(".")
        return major if minor == "0" else f"{major}.{minor}"

    def sort_key(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.id.split("."))


CASES: dict[str, Case] = {}

_ID = re.compile(r"\d+\.\d+\.\d+")


def case(case_id: str, title: str, *, description: str, expectation: str, quote: str, level: str = "MUST",
         timeout: float = 15.0, needs: Iterable[str] = (), informational: bool = False,
         ) -> Callable[[Callable[[Context], Awaitable[None]]], Callable[[Context], Awaitable[None]]]:
    """Register the decorated coroutine as case ``case_id`` (ValueError on a malformed or repeated id)."""

    def register(run: Callable[[Context], Awaitable[None]]) -> Callable[[Context], Awaitable[None]]:
        if not _ID.fullmatch(case_id):
            raise ValueError(f"case id {case_id!r} is not X.Y.Z")
        if case_id in CASES:
            raise ValueError(f"case id {case_id} registered twice")
        if level not in LEVELS:
            raise ValueError(f"case {case_id}: level {level!r} is not one of {LEVELS}")
        CASES[case_id] = Case(case_id, title, " ".join(description.split()), " ".join(expectation.split()),
                              " ".join(quote.split()), level, run, timeout, frozenset(needs), informational)
        return run

    return register


def all_cases() -> list[Case]:
    from loa.devices.conformance import cases  # noqa: F401 - registers every case

    return sorted(CASES.values(), key=Case.sort_key)


class SelectionError(ValueError):
    """A --cases or --exclude pattern matched no case."""


def select(include: Iterable[str] = (), exclude: Iterable[str] = ()) -> list[Case]:
    """Cases whose id matches any ``include`` pattern (all when none) and no ``exclude`` pattern.

    A pattern is an id (``3.3.1``), a prefix ending in a dot or a section (``3.3`` means ``3.3.*``), or a
    glob (``5.*``). Raises :class:`SelectionError` for a pattern that matches no case at all.
    """
    cases = all_cases()

    def matches(pattern: str, c: Case) -> bool:
        pattern = pattern.strip()
        if any(ch in pattern for ch in "*?["):
            return fnmatch.fnmatchcase(c.id, pattern)
        return c.id == pattern or c.id.startswith(pattern.rstrip(".") + ".")

    for pattern in [*include, *exclude]:
        if not any(matches(pattern, c) for c in cases):
            raise SelectionError(f"pattern {pattern!r} matches no case (see `loa conformance list`)")
    chosen = [c for c in cases if not include or any(matches(p, c) for p in include)]
    return [c for c in chosen if not any(matches(p, c) for p in exclude)]


def case_table() -> str:
    """The Markdown table of every case (id, level, title), as spec/CONFORMANCE.md lists them."""
    rows = ["| Case | Level | Title |", "|---|---|---|"]
    rows += [f"| {c.id} | {c.level} | {c.title.replace('|', '/')} |" for c in all_cases()]
    return "\n".join(rows)


def verdict_of(c: Case, checks: list[Check], *, unimplemented: bool = False) -> Verdict:
    if unimplemented:
        return Verdict.UNIMPLEMENTED
    if any(not ch.ok and ch.level == "MUST" for ch in checks):
        return Verdict.FAILED
    if any(not ch.ok for ch in checks):
        return Verdict.NON_STRICT
    if c.informational:
        return Verdict.INFORMATIONAL
    return Verdict.OK
