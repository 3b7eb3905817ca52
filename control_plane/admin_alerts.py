"""`loa admin alerts`: compose, edit, trigger, confirm (the two-person rule) and cancel emergency alerts.

After a change the next step is said on stderr (who must confirm, what the broadcaster answered); errors are one
line and exit 1; giving two audio sources, or none where one is needed, is a usage error (exit 2).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click

from loa.control_plane.admin_client import CLASSES, Api, F, api_of, cell, fields, present, show, stacked, tsv

__all__ = ["alerts"]


_ALERT_TIMES = ("created_at", "triggered_at", "approved_at", "cancelled_at", "issued_at", "expires_at")
_NEXT_STEP = {
    "draft": "trigger it: loa admin alerts trigger {id}",
    "pending_approval": "a second NOC operator or admin confirms it: loa admin alerts confirm {id}",
    "failed": "edit it or trigger it again; the broadcaster said: {dispatch_error}",
}


def _alert_row(a: Mapping[str, Any]) -> str:
    audio = f"live:{a['live_port']}" if a["live_port"] else (f"item:{a['library_item']}" if a["library_item"]
                                                             else f"content:{(a['content_id'] or '-')[:12]}")
    return tsv(a["id"], a["state"], a["status"], a["class"], a["level"], cell(a["zones"]), audio,
                cell(a["title"] or a["text"]))


def _alert_out(ctx: click.Context, alert: Mapping[str, Any]) -> None:
    line = _alert_row(alert)
    hint = _NEXT_STEP.get(alert["state"])
    if hint and not ctx.obj.get("json"):
        click.echo(f"loa: alert {alert['id']} is {alert['state'].replace('_', ' ')}: "
                   + hint.format(id=alert["id"], dispatch_error=alert["dispatch_error"]), err=True)
    show(ctx, alert, line)


def _alert_audio(api: Api, content_id: str | None, item: int | None, live_port: int | None,
                 required: bool) -> dict[str, Any]:
    given = [name for name, value in (("--content-id", content_id), ("--item", item), ("--live-port", live_port))
             if value is not None]
    if len(given) > 1:
        raise click.UsageError(f"give one audio source, not {' and '.join(given)}")
    if not given:
        if required:
            raise click.UsageError("give the audio: --item ID (a library audio item), --content-id SHA256 or "
                                   "--live-port PORT")
        return {}
    if item is not None:
        found = api.call("GET", f"/api/v1/library/{item}")
        if found["kind"] != "audio" or not found["content_id"]:
            raise click.ClickException(f"library item {item} is {found['kind']}, not audio")
        return {"content_id": found["content_id"], "library_item": item}
    return {"content_id": content_id} if content_id is not None else {"live_port": live_port}


def _alert_options(required: bool) -> Callable[[F], F]:
    return stacked([
        click.option("--zone", "zones", multiple=True, required=required, help="Target zone (repeat for more)."),
        click.option("--status", type=click.Choice(["actual", "exercise", "test"]), required=required,
                     help="CAP status; no default: say which it is."),
        click.option("--item", type=int, help="Audio: a library audio item (its stored content)."),
        click.option("--content-id", help="Audio: stored content by SHA-256."),
        click.option("--live-port", type=click.IntRange(1, 65_535), help="Audio: a live RTP input port."),
        click.option("--text", help="E-board text (at most 512 bytes of UTF-8)."),
        click.option("--title"),
        click.option("--class", "cls", type=click.Choice(CLASSES), help="Default: emergency."),
        click.option("--expires-in", type=int, help="Time to live in seconds (60-86400; default 3600)."),
        click.option("--preroll-ms", type=int, help="Amplifier warm-up before the audio (ms)."),
    ])


@click.group()
def alerts() -> None:
    """Emergency alerts: compose, edit, trigger, confirm (the two-person rule), cancel."""


@alerts.command("list")
@click.option("--state", type=click.Choice(["draft", "pending_approval", "approved", "active", "failed",
                                            "cancelled", "expired"]))
@click.option("--status", type=click.Choice(["actual", "exercise", "test"]))
@click.option("--zone", help="Only alerts targeting a zone in this subtree.")
@click.option("--limit", default=1000, show_default=True)
@click.pass_context
def alerts_list(ctx: click.Context, state: str | None, status: str | None, zone: str | None, limit: int) -> None:
    """Alerts for my area, newest first: id, state, status, class, level, zones, audio, title."""
    items = list(api_of(ctx).pages("/api/v1/alerts", present(state=state, status=status, zone=zone), limit))
    show(ctx, items, "\n".join(_alert_row(a) for a in items))


@alerts.command("show")
@click.argument("alert_id", type=int)
@click.pass_context
def alerts_show(ctx: click.Context, alert_id: int) -> None:
    alert = api_of(ctx).call("GET", f"/api/v1/alerts/{alert_id}")
    shown = {k: v for k, v in alert.items() if k not in ("body", "sig", "cancel_body", "cancel_sig")}
    shown["signed"] = alert["sig"] is not None
    show(ctx, alert, fields(shown, times=_ALERT_TIMES))


@alerts.command("create")
@_alert_options(required=True)
@click.option("--trigger", is_flag=True, help="Trigger at once (under the two-person rule: ask for approval).")
@click.pass_context
def alerts_create(ctx: click.Context, *, zones: tuple[str, ...], status: str, item: int | None, content_id: str | None,
                  live_port: int | None, text: str | None, title: str | None, cls: str | None,
                  expires_in: int | None, preroll_ms: int | None, trigger: bool) -> None:
    """Compose an alert for zones of my scope (a draft, unless --trigger)."""
    api = api_of(ctx)
    body = present(zones=list(zones), status=status, text=text, title=title, expires_in_s=expires_in,
                 preroll_ms=preroll_ms, trigger=trigger or None, **{"class": cls},
                 **_alert_audio(api, content_id, item, live_port, required=True))
    _alert_out(ctx, api.call("POST", "/api/v1/alerts", json=body))


@alerts.command("edit")
@click.argument("alert_id", type=int)
@_alert_options(required=False)
@click.option("--no-text", is_flag=True, help="Remove the e-board text.")
@click.pass_context
def alerts_edit(ctx: click.Context, *, alert_id: int, zones: tuple[str, ...], status: str | None, item: int | None,
                content_id: str | None, live_port: int | None, text: str | None, title: str | None,
                cls: str | None, expires_in: int | None, preroll_ms: int | None, no_text: bool) -> None:
    """Edit a draft or failed alert (a failed one returns to draft); options left out stay."""
    if no_text and text is not None:
        raise click.UsageError("give --text or --no-text, not both")
    api = api_of(ctx)
    body = present(zones=list(zones) or None, status=status, text=text, title=title, expires_in_s=expires_in,
                 preroll_ms=preroll_ms, **{"class": cls}, **_alert_audio(api, content_id, item, live_port,
                                                                         required=False))
    if no_text:
        body["text"] = None
    _alert_out(ctx, api.call("PATCH", f"/api/v1/alerts/{alert_id}", json=body))


@alerts.command("trigger")
@click.argument("alert_id", type=int)
@click.pass_context
def alerts_trigger(ctx: click.Context, alert_id: int) -> None:
    """Trigger a draft or failed alert: under the two-person rule it waits for a second operator's confirm."""
    _alert_out(ctx, api_of(ctx).call("POST", f"/api/v1/alerts/{alert_id}/trigger"))


@alerts.command("confirm")
@click.argument("alert_id", type=int)
@click.pass_context
def alerts_confirm(ctx: click.Context, alert_id: int) -> None:
    """Confirm an alert another operator triggered: it is signed and sent now."""
    _alert_out(ctx, api_of(ctx).call("POST", f"/api/v1/alerts/{alert_id}/confirm"))


@alerts.command("cancel")
@click.argument("alert_id", type=int)
@click.pass_context
def alerts_cancel(ctx: click.Context, alert_id: int) -> None:
    """Cancel at once (no second person): a sent alert gets a signed cancel."""
    _alert_out(ctx, api_of(ctx).call("POST", f"/api/v1/alerts/{alert_id}/cancel"))
