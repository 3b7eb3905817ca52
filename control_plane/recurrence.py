"""When a schedule entry plays: a start in local wall-clock time, an IANA time zone, an optional RFC 5545 RRULE
and an optional validity window. Pure computation: no database, no clock.

The start is a wall-clock time in the entry's zone (``Asia/Ho_Chi_Minh`` by default), and so is every recurrence:
"daily at 06:00" stays at 06:00 local across a daylight-saving change. A wall-clock time that does not exist
(skipped by a DST change) is taken with the offset before the change (RFC 5545 section 3.3.5: it plays an hour
"later"); an ambiguous one is its first occurrence. Vietnam has no DST; the rules hold for any zone.

RRULE text is what RFC 5545 puts after ``RRULE:`` (the prefix is accepted), expanded by python-dateutil.
``UNTIL`` must be UTC (``...Z``), as RFC 5545 requires when the start has a time zone. A rule is refused when it
recurs more often than hourly, never occurs, has no occurrence within ten years of its start, or has more than
:data:`MAX_PER_HORIZON` occurrences in any :data:`HORIZON` it is checked over. Impossible rules (``BYMONTH=2;
BYMONTHDAY=30``) are found by a probe over a 400-year-shifted copy of the rule, whose calendar is the same, so
the check costs a fraction of a second however far the rule's end is.

Failure semantics: every check raises :class:`InvalidError` with a one-line reason.
"""

from __future__ import annotations

import functools
import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, available_timezones

from dateutil import rrule as du

from loa.control_plane.errors import InvalidError

__all__ = [
    "DEFAULT_TZ",
    "HORIZON",
    "MAX_PER_HORIZON",
    "Recurrence",
    "check_rrule",
    "check_tz",
    "make",
    "to_local",
]

DEFAULT_TZ: Final = "Asia/Ho_Chi_Minh"
HORIZON: Final = timedelta(days=14)
MAX_PER_HORIZON: Final = 2000
MIN_YEAR, MAX_YEAR = 2000, 2200
MAX_RULE_LEN: Final = 500
MAX_INTERVAL: Final = 1_000_000  # a million hours is 114 years: every INTERVAL a schedule can use
_FREQS = {"YEARLY": du.YEARLY, "MONTHLY": du.MONTHLY, "WEEKLY": du.WEEKLY, "DAILY": du.DAILY,
          "HOURLY": du.HOURLY}
_RULE_TEXT = re.compile(r"[A-Z0-9=;,+\-]+")
_WEEKDAY = re.compile(r"[+-]?(\d{1,2})?(?:MO|TU|WE|TH|FR|SA|SU)")
_PROBE_FROM, _PROBE_YEARS = 9590, 400
_SLACK = timedelta(days=2)  # wall-clock comparisons inside dateutil ignore offsets: search a little wider


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def check_tz(name: str) -> str:
    """An IANA time zone name known to this system (``tzdata``)."""
    if not isinstance(name, str) or name not in _zones():
        raise InvalidError(f"unknown time zone {name!r}: use an IANA name such as {DEFAULT_TZ}")
    return name


def to_local(when: datetime, tz: str) -> datetime:
    """``when`` as a naive wall-clock time in ``tz`` (an aware time is converted; a naive one is taken as is),
    to the second, within the years 2000-2200."""
    zone = ZoneInfo(check_tz(tz))
    if when.tzinfo is not None and when.utcoffset() is not None:
        try:
            when = when.astimezone(zone)
        except (OverflowError, ValueError):
            raise InvalidError(f"{when.isoformat()} is out of range") from None
    when = when.replace(tzinfo=None, microsecond=0)
    if not MIN_YEAR <= when.year <= MAX_YEAR:
        raise InvalidError(f"times must lie in the years {MIN_YEAR}-{MAX_YEAR}")
    return when


def _check_utc(when: datetime | None, what: str) -> datetime | None:
    if when is None:
        return None
    if when.tzinfo is None or when.utcoffset() is None:
        raise InvalidError(f"{what} needs a UTC offset (e.g. 2025-06-01T00:00:00+07:00)")
    try:
        when = when.astimezone(UTC)
    except (OverflowError, ValueError):
        when = datetime.max.replace(tzinfo=UTC)
    if not MIN_YEAR <= when.year <= MAX_YEAR:
        raise InvalidError(f"{what} must lie in the years {MIN_YEAR}-{MAX_YEAR}")
    return when


def _parse(text: str, start: datetime) -> du.rrule:
    try:
        rule = du.rrulestr(text, dtstart=start)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError) as exc:
        reason = str(exc) or type(exc).__name__
        if "UNTIL" in reason or "invalid" in reason.lower() or "unknown" in reason.lower():
            raise InvalidError(f"rrule: {reason}") from None
        raise InvalidError(f"rrule: not a valid RFC 5545 RRULE ({reason})") from None
    if not isinstance(rule, du.rrule):
        raise InvalidError("rrule: give a single RRULE")
    return rule


def _parts(rule_text: str) -> dict[str, str]:
    """``NAME=VALUE`` parts of a normalised rule (one that :func:`check_rrule` accepted or is checking)."""
    out: dict[str, str] = {}
    for part in rule_text.split(";"):
        name, _, value = part.partition("=")
        out[name] = value
    return out


def check_rrule(text: str, start_local: datetime, tz: str) -> str:
    """The rule in normal form (upper case, no ``RRULE:`` prefix), if it is one this schedule accepts."""
    rule_text = text.strip()
    if rule_text.upper().startswith("RRULE:"):
        rule_text = rule_text[6:]
    rule_text = rule_text.upper()
    if not rule_text or len(rule_text) > MAX_RULE_LEN or not _RULE_TEXT.fullmatch(rule_text):
        raise InvalidError(f"rrule: one RFC 5545 RRULE value, such as FREQ=DAILY;BYHOUR=6, of at most "
                           f"{MAX_RULE_LEN} characters")
    if "DTSTART" in rule_text or "TZID" in rule_text:
        raise InvalidError("rrule: give the start as `start`, not inside the rule")
    if any(p.startswith("INTERVAL=") and not (p[9:].isdigit() and 0 < int(p[9:]) <= MAX_INTERVAL)
           for p in rule_text.split(";")):  # dateutil loops forever on 0; a huge one overflows timedelta
        raise InvalidError(f"rrule: INTERVAL must be a whole number from 1 to {MAX_INTERVAL}")
    if any(p.startswith("BYHOUR=") and not all(h.isdigit() and int(h) <= 23 for h in p[7:].split(","))
           for p in rule_text.split(";")):
        raise InvalidError("rrule: BYHOUR values must lie in 0..23")  # dateutil raises TypeError on 24 when HOURLY
    _check_byday(rule_text.split(";"))
    start = start_local.replace(tzinfo=ZoneInfo(check_tz(tz)))
    rule = _parse(rule_text, start)
    if _parts(rule_text).get("FREQ") not in _FREQS:
        raise InvalidError("rrule: a schedule recurs at most hourly (FREQ=HOURLY, DAILY, WEEKLY, MONTHLY or "
                           "YEARLY)")
    shift = _PROBE_FROM - start_local.year
    shift = ((shift + _PROBE_YEARS - 1) // _PROBE_YEARS) * _PROBE_YEARS  # whole 400-year cycles: same calendar
    probe_start = start_local.replace(year=start_local.year + shift)
    try:
        probe = rule.replace(dtstart=probe_start, until=None, count=None)
        possible = probe.after(probe_start, inc=True) is not None
        first = rule.after(start, inc=True) if possible else None
    except (ValueError, OverflowError) as exc:
        raise InvalidError(f"rrule: {exc}") from None
    if not possible:
        raise InvalidError("rrule: it never occurs (check BYMONTH, BYMONTHDAY, BYSETPOS...)")
    if first is None:
        raise InvalidError("rrule: it has no occurrence from the start on (check COUNT and UNTIL)")
    if first.replace(tzinfo=None) > _years_later(start_local, 10):
        raise InvalidError("rrule: its first occurrence is more than ten years after the start")
    return rule_text


def _check_byday(parts: list[str]) -> None:
    """BYDAY values are weekdays with an optional ordinal: 1..5 counted within a month (FREQ=MONTHLY, or YEARLY
    with BYMONTH), 1..53 within a year (RFC 5545 section 3.3.10); dateutil indexes past its tables beyond those."""
    names = {p.partition("=")[0] for p in parts}
    in_month = "FREQ=MONTHLY" in parts or ("FREQ=YEARLY" in parts and "BYMONTH" in names)
    top = 5 if in_month else 53
    for part in parts:
        if not part.startswith("BYDAY="):
            continue
        for item in part[6:].split(","):
            day = _WEEKDAY.fullmatch(item)
            if day is None:
                raise InvalidError(f"rrule: {item!r} is not a BYDAY value (such as MO, 1MO or -1FR)")
            if day[1] and not 1 <= int(day[1]) <= top:
                raise InvalidError(f"rrule: BYDAY ordinal in {item!r} must lie in 1..{top}"
                                   f"{' (within a month)' if in_month else ''}")


def _years_later(when: datetime, years: int) -> datetime:
    """``when`` moved ``years`` later (29 February to the 28th in a common year), at most into MAX_YEAR."""
    year = min(when.year + years, MAX_YEAR)
    try:
        return when.replace(year=year)
    except ValueError:
        return when.replace(year=year, day=28)


@dataclass(frozen=True, slots=True)
class Recurrence:
    """The timing of a schedule entry. ``start_local`` is naive wall-clock time in ``tz``; ``valid_from`` and
    ``valid_until`` (UTC; either may be None) bound the occurrences (from inclusive, until exclusive)."""

    start_local: datetime
    tz: str
    rrule: str | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def _rule(self, since: datetime | None = None) -> du.rrule | None:
        """The rule, its start moved forward by whole periods to just before ``since`` where that gives the same
        occurrences (no COUNT; no month or year start that a later period may lack), so that expanding it near
        ``since`` does not walk every period since the start."""
        if self.rrule is None:
            return None
        rule = _parse(self.rrule, self.start_local.replace(tzinfo=self.zone))
        parts = _parts(self.rrule)
        if since is None or "COUNT" in parts:
            return rule
        base, target = self.start_local, since.astimezone(self.zone).replace(tzinfo=None) - _SLACK
        if target <= base:
            return rule
        freq, n = _FREQS[parts["FREQ"]], int(parts.get("INTERVAL", "1") or 1)
        moved = None
        if freq in (du.HOURLY, du.DAILY, du.WEEKLY):
            period = {du.HOURLY: timedelta(hours=n), du.DAILY: timedelta(days=n), du.WEEKLY: timedelta(weeks=n)}[freq]
            moved = base + period * ((target - base) // period)
        elif freq == du.MONTHLY and base.day <= 28:
            months = ((target.year - base.year) * 12 + target.month - base.month - 1) // n * n
            if months > 0:
                year, month = divmod(base.month - 1 + months, 12)
                moved = base.replace(year=base.year + year, month=month + 1)
        elif freq == du.YEARLY and (base.month, base.day) != (2, 29):
            years = (target.year - base.year - 1) // n * n
            if years > 0:
                moved = base.replace(year=base.year + years)
        if moved is None or moved <= base:
            return rule
        return rule.replace(dtstart=moved.replace(tzinfo=self.zone))

    def between(self, since: datetime, until: datetime) -> list[datetime]:
        """Occurrence starts (aware UTC, ascending) with ``since <= start < until``."""
        return list(self.iter_from(since, until))

    def iter_from(self, since: datetime, until: datetime | None = None) -> Iterator[datetime]:
        """Occurrence starts (aware UTC, strictly ascending) from ``since`` on, and before ``until`` if given."""
        since = since.astimezone(UTC)
        if self.valid_from is not None and since < self.valid_from:
            since = self.valid_from
        ends = [t for t in (until, self.valid_until) if t is not None]
        stop = min(ends) if ends else None
        rule = self._rule(since)
        if rule is None:
            first = self.start_local.replace(tzinfo=self.zone).astimezone(UTC)
            if first >= since and (stop is None or first < stop):
                yield first
            return
        # dateutil walks wall-clock time; around a DST change UTC order can differ from it by the size of the
        # change, so each start is held back until the walk is _SLACK past it.
        pending: list[datetime] = []
        last: datetime | None = None
        search = max(since - _SLACK, datetime(MIN_YEAR, 1, 1, tzinfo=UTC)).astimezone(self.zone)
        for local in rule.xafter(search, inc=True):
            when = local.astimezone(UTC)
            while pending and pending[0] <= when - _SLACK:
                ready = heapq.heappop(pending)
                if ready != last:
                    last = ready
                    yield ready
            if stop is not None and when >= stop:
                if when >= stop + _SLACK:
                    break
                continue
            if when >= since:
                heapq.heappush(pending, when)
        while pending:
            ready = heapq.heappop(pending)
            if ready != last:
                last = ready
                yield ready

    def first(self, since: datetime) -> datetime | None:
        """The first occurrence at or after ``since``, if any."""
        return next(self.iter_from(since), None)


def make(start: datetime, *, tz: str = DEFAULT_TZ, rrule_text: str | None = None,
         valid_from: datetime | None = None, valid_until: datetime | None = None) -> Recurrence:
    """A checked :class:`Recurrence`. ``start``: an aware time (converted to ``tz``) or a naive wall-clock time."""
    tz = check_tz(tz)
    start_local = to_local(start, tz)
    valid_from, valid_until = _check_utc(valid_from, "valid_from"), _check_utc(valid_until, "valid_until")
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise InvalidError("valid_until must be after valid_from")
    rule = check_rrule(rrule_text, start_local, tz) if rrule_text is not None and rrule_text.strip() else None
    return Recurrence(start_local, tz, rule, valid_from, valid_until)
