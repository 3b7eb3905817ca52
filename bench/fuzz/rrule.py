"""Fuzz target ``rrule``: schedule recurrence text (:mod:`loa.control_plane.recurrence`).

The input gives a time zone (one byte, among a few with and without daylight saving), a start (four bytes:
minutes after 2000-01-01, so years 2000-2200 and beyond), a validity window (two bytes each, in days), and the
RRULE text (the rest, decoded as Latin-1). The rule is checked with :func:`~loa.control_plane.recurrence.make`
as the API does; an accepted rule is then expanded over one :data:`~loa.control_plane.recurrence.HORIZON`
from its start and from a later time, as the scheduler does.

Accepted errors: :class:`~loa.control_plane.errors.InvalidError`. Oracles: occurrences come strictly
ascending, inside the asked window and the validity window; :meth:`first` is the first of them.

Coverage: besides ``loa``, dateutil's rule parsing and set-up are instrumented (:func:`instrument`), but not its
day-by-day expansion loop, which runs up to 146,000 times per input when the impossible-rule probe searches a
400-year cycle: counters there made an execution about six times slower.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from dateutil import _common as du_common
from dateutil import rrule as du_rrule

from loa.bench.fuzz._common import Reader
from loa.control_plane.errors import InvalidError
from loa.control_plane.recurrence import HORIZON, make

MAX_LEN = 600
ZONES = ("Asia/Ho_Chi_Minh", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC")
EPOCH = datetime(2000, 1, 1)


#: dateutil functions left uninstrumented: the expansion loop and what it calls once per period.
EXPANSION = frozenset({
    "rrule._iter", "rruleset._iter", "rrulebase.__iter__", "rrulebase._iter_cached", "rrulebase.before",
    "rrulebase.after", "rrulebase.xafter", "rrulebase.between", "rrulebase.count", "rrulebase.__getitem__",
    "rrulebase.__contains__", "_iterinfo.ydayset", "_iterinfo.mdayset", "_iterinfo.wdayset", "_iterinfo.ddayset",
    "_iterinfo.htimeset", "_iterinfo.mtimeset", "_iterinfo.stimeset",
})


def instrument(instrument_func: Callable[[Callable[..., Any]], Any]) -> int:
    """Instrument (with atheris' ``instrument_func``) every function of dateutil's rrule classes except
    :data:`EXPANSION`; returns how many. Called by the fuzz worker, which imports dateutil uninstrumented."""
    count = 0
    for module in (du_rrule, du_common):
        for class_name, cls in vars(module).items():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            for name, func in vars(cls).items():
                if inspect.isfunction(func) and f"{class_name}.{name}" not in EXPANSION:
                    instrument_func(func)
                    count += 1
    return count


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer and atheris use
    reader = Reader(data)
    tz = ZONES[reader.byte() % len(ZONES)]
    start = EPOCH + timedelta(minutes=reader.uint(4) % (201 * 366 * 24 * 60))
    from_days, until_days = reader.uint(2), reader.uint(2)
    text = reader.rest().decode("latin-1")
    valid_from = (start + timedelta(days=from_days % 4000 - 2000)).replace(tzinfo=UTC) if from_days else None
    valid_until = (start + timedelta(days=until_days % 4000)).replace(tzinfo=UTC) if until_days else None
    try:
        recurrence = make(start, tz=tz, rrule_text=text, valid_from=valid_from, valid_until=valid_until)
    except InvalidError:
        return
    first_start = recurrence.start_local.replace(tzinfo=recurrence.zone).astimezone(UTC)
    for since in (first_start, first_start + timedelta(days=400)):
        window = recurrence.between(since, since + HORIZON)
        if any(b <= a for a, b in itertools.pairwise(window)):
            raise AssertionError(f"occurrences not strictly ascending: {window}")
        lower = max(since, valid_from) if valid_from is not None else since
        upper = min(since + HORIZON, valid_until) if valid_until is not None else since + HORIZON
        if any(not lower <= t < upper for t in window):
            raise AssertionError(f"an occurrence outside {lower}..{upper}: {window}")
        if window and recurrence.first(since) != window[0]:
            raise AssertionError(f"first() is {recurrence.first(since)}, not {window[0]}")


def seeds() -> dict[str, bytes]:
    def entry(tz: int, minutes: int, rule: str, valid_from: int = 0, valid_until: int = 0) -> bytes:
        return bytes((tz,)) + minutes.to_bytes(4, "big") + valid_from.to_bytes(2, "big") \
            + valid_until.to_bytes(2, "big") + rule.encode("latin-1")

    june_2025 = 13_300_000
    return {
        "daily": entry(0, june_2025, "FREQ=DAILY;BYHOUR=6,18;BYMINUTE=0"),
        "weekly": entry(1, june_2025, "RRULE:FREQ=WEEKLY;BYDAY=MO,WE,FR;INTERVAL=2"),
        "monthly.last": entry(2, june_2025, "FREQ=MONTHLY;BYMONTHDAY=-1;COUNT=12"),
        "yearly.leap": entry(3, june_2025, "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29"),
        "hourly.until": entry(4, june_2025, "FREQ=HOURLY;INTERVAL=3;UNTIL=20260101T000000Z", 2001, 30),
        "setpos": entry(0, june_2025, "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1"),
        "never": entry(0, june_2025, "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"),
        "minutely": entry(0, june_2025, "FREQ=MINUTELY"),
        "weekno": entry(1, june_2025, "FREQ=YEARLY;BYWEEKNO=53;BYDAY=TH"),
    }
