"""`loa admin schedule`: entries that play approved items to zones, once or by an RRULE; their conflicts and
firings. Start times are local wall-clock in the entry's time zone (``--tz``, default Asia/Ho_Chi_Minh) unless
they carry an offset; errors are one line (a conflict lists each conflicting entry) and exit 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import click

from loa.control_plane.admin_client import (
    CLASSES,
    LEVELS,
    LOCAL_TZ,
    Api,
    F,
    api_of,
    cell,
    conflict_row,
    fields,
    local,
    present,
    show,
    stacked,
    tsv,
)

__all__ = ["schedule"]


def _entry_row(e: Mapping[str, Any]) -> str:
    return tsv(e["id"], "enabled" if e["enabled"] else "disabled", local(e["next_occurrence"], e["tz"]),
                e["rrule"] or "once", e["item"], cell(e["zones"]), cell(e["title"]))


def _start(value: str | None) -> str | None:
    """A start time as the API takes it: local wall-clock (no offset: in the entry's time zone) or with one."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected YYYY-MM-DD HH:MM[:SS] (local time), or with an offset",
                                 param_hint="--start") from None
    return when.isoformat(timespec="seconds")


def _when(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a time", param_hint=name) from None
    if when.tzinfo is None:
        raise click.BadParameter("give a UTC offset (e.g. 2025-06-01T00:00:00+07:00)", param_hint=name)
    return when.isoformat()


def _entry_options(required: bool) -> Callable[[F], F]:
    """The options of an entry (add, check: the item, zones and start are required; edit: all optional)."""
    return stacked([
        click.option("--zone", "zones", multiple=True, required=required, help="Target zone (repeat for more)."),
        click.option("--start", required=required,
                     help="First occurrence: YYYY-MM-DD HH:MM[:SS] in --tz (or any time with an offset)."),
        click.option("--tz", help=f"IANA time zone of --start and the RRULE (default: {LOCAL_TZ})."),
        click.option("--rrule", help="RFC 5545 RRULE, e.g. FREQ=DAILY;BYHOUR=6 (UNTIL in UTC)."),
        click.option("--title", help="Default: the item's title."),
        click.option("--class", "cls", type=click.Choice(CLASSES), help="Default: the item's (never above it)."),
        click.option("--level", type=click.Choice(LEVELS), help="Default: the item's (never above it)."),
        click.option("--policy", type=click.Choice(["resume", "drop"]), help="When preempted (default: resume)."),
        click.option("--duration-ms", type=click.IntRange(1), help="Board items: how long to show."),
        click.option("--valid-from", help="No occurrence before this time (with an offset)."),
        click.option("--valid-until", help="No occurrence from this time on (with an offset)."),
    ])


def _entry_body(api: Api, *, item: int | None, zones: tuple[str, ...], start: str | None, tz: str | None,
                rrule: str | None, title: str | None, cls: str | None, level: str | None, policy: str | None,
                duration_ms: int | None, valid_from: str | None, valid_until: str | None) -> dict[str, Any]:
    if item is not None and title is None:
        title = api.call("GET", f"/api/v1/library/{item}")["title"]
    return present(title=title, item=item, zones=list(zones) or None, start=_start(start), tz=tz, rrule=rrule,
                 duration_ms=duration_ms, valid_from=_when(valid_from, "--valid-from"),
                 valid_until=_when(valid_until, "--valid-until"), level=level, policy=policy, **{"class": cls})


@click.group()
def schedule() -> None:
    """The schedule: approved items played to zones, once or by an RRULE."""


@schedule.command("list")
@click.option("--zone", help="Only entries with a target in this zone's subtree.")
@click.option("--item", type=int, help="Only entries playing this library item.")
@click.option("--enabled/--disabled", default=None)
@click.option("--limit", default=1000, show_default=True)
@click.pass_context
def schedule_list(ctx: click.Context, zone: str | None, item: int | None, enabled: bool | None, limit: int) -> None:
    """Entries that play in my zones: id, enabled, next occurrence (local), rule, item, zones, title."""
    items = list(api_of(ctx).pages("/api/v1/schedule", present(zone=zone, item=item, enabled=enabled), limit))
    show(ctx, items, "\n".join(_entry_row(e) for e in items))


@schedule.command("show")
@click.argument("entry_id", type=int)
@click.pass_context
def schedule_show(ctx: click.Context, entry_id: int) -> None:
    entry = api_of(ctx).call("GET", f"/api/v1/schedule/{entry_id}")
    show(ctx, entry, fields(entry, times=("next_occurrence", "valid_from", "valid_until", "created_at",
                                            "updated_at"), tz=entry["tz"]))


def _saved(ctx: click.Context, saved: Mapping[str, Any]) -> None:
    lines = [_entry_row(saved["entry"])] + [conflict_row(c) for c in saved["conflicts"]]
    show(ctx, saved, "\n".join(lines))


@schedule.command("add")
@click.argument("item", type=int)
@_entry_options(required=True)
@click.option("--disabled", is_flag=True, help="Save it disabled.")
@click.option("--force", is_flag=True, help="Save even if it conflicts with other entries.")
@click.pass_context
def schedule_add(ctx: click.Context, *, item: int, zones: tuple[str, ...], start: str, tz: str | None,
                 rrule: str | None, title: str | None, cls: str | None, level: str | None, policy: str | None,
                 duration_ms: int | None, valid_from: str | None, valid_until: str | None, disabled: bool,
                 force: bool) -> None:
    """Schedule approved ITEM (an id) to zones. A conflict refuses it (409, each conflicting entry listed),
    unless --force, which saves it and lists what it collides with."""
    api = api_of(ctx)
    body = _entry_body(api, item=item, zones=zones, start=start, tz=tz, rrule=rrule, title=title, cls=cls,
                       level=level, policy=policy, duration_ms=duration_ms, valid_from=valid_from,
                       valid_until=valid_until)
    _saved(ctx, api.call("POST", "/api/v1/schedule", json={**body, "enabled": not disabled, "force": force}))


@schedule.command("check")
@click.argument("item", type=int)
@_entry_options(required=True)
@click.option("--replaces", type=int, help="The entry this would replace (left out of the check).")
@click.pass_context
def schedule_check(ctx: click.Context, *, item: int, zones: tuple[str, ...], start: str, tz: str | None,
                   rrule: str | None, title: str | None, cls: str | None, level: str | None, policy: str | None,
                   duration_ms: int | None, valid_from: str | None, valid_until: str | None,
                   replaces: int | None) -> None:
    """Check an entry as `add` would, saving nothing: its conflicts and next occurrences. Exit 1 on conflicts."""
    api = api_of(ctx)
    body = _entry_body(api, item=item, zones=zones, start=start, tz=tz, rrule=rrule, title=title, cls=cls,
                       level=level, policy=policy, duration_ms=duration_ms, valid_from=valid_from,
                       valid_until=valid_until)
    result = api.call("POST", "/api/v1/schedule/check", json=present(**body, replaces=replaces))
    shown_tz = tz or LOCAL_TZ
    lines = [conflict_row(c) for c in result["conflicts"]]
    lines += [tsv("next", local(t, shown_tz)) for t in result["next_occurrences"]]
    lines.insert(0, "ok: no conflicts" if result["ok"] else f"{len(result['conflicts'])} conflicting entries "
                    f"within {result['horizon_days']} days")
    show(ctx, result, "\n".join(lines))
    if not result["ok"]:
        ctx.exit(1)


@schedule.command("edit")
@click.argument("entry_id", type=int)
@click.option("--item", type=int, help="Play this library item instead.")
@_entry_options(required=False)
@click.option("--once", is_flag=True, help="Remove the RRULE: a one-off entry.")
@click.option("--enable/--disable", "enabled", default=None)
@click.option("--force", is_flag=True, help="Save even if it conflicts with other entries.")
@click.pass_context
def schedule_edit(ctx: click.Context, *, entry_id: int, item: int | None, zones: tuple[str, ...], start: str | None,
                  tz: str | None, rrule: str | None, title: str | None, cls: str | None, level: str | None,
                  policy: str | None, duration_ms: int | None, valid_from: str | None, valid_until: str | None,
                  once: bool, enabled: bool | None, force: bool) -> None:
    """Change an entry; options left out stay as they are. Conflicts as for `add`."""
    if once and rrule:
        raise click.UsageError("give --rrule or --once, not both")
    body = present(title=title, item=item, zones=list(zones) or None, start=_start(start), tz=tz, rrule=rrule,
                 duration_ms=duration_ms, valid_from=_when(valid_from, "--valid-from"),
                 valid_until=_when(valid_until, "--valid-until"), level=level, policy=policy, enabled=enabled,
                 **{"class": cls})
    if once:
        body["rrule"] = None
    _saved(ctx, api_of(ctx).call("PATCH", f"/api/v1/schedule/{entry_id}", json={**body, "force": force}))


@schedule.command("delete")
@click.argument("entry_id", type=int)
@click.pass_context
def schedule_delete(ctx: click.Context, entry_id: int) -> None:
    """Delete an entry (what the scheduler did with it stays on record)."""
    api_of(ctx).call("DELETE", f"/api/v1/schedule/{entry_id}")
    show(ctx, {"deleted": entry_id}, f"deleted schedule entry {entry_id}")


@schedule.command("firings")
@click.argument("entry_id", type=int)
@click.option("--limit", default=100, show_default=True)
@click.pass_context
def schedule_firings(ctx: click.Context, entry_id: int, limit: int) -> None:
    """What the scheduler did with each occurrence, newest first: time (local), status, item, broadcasts, detail."""
    items = list(api_of(ctx).pages(f"/api/v1/schedule/{entry_id}/firings", {}, limit))
    show(ctx, items, "\n".join(tsv(local(f["occurrence_at"]), f["status"], cell(f["item"]),
                                     cell(f["broadcasts"]), cell(f["detail"])) for f in items))
