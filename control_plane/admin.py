"""`loa admin`: everyday work through the HTTP API: users, zones, devices and their live status, the library
and its approval, playlists, the schedule, emergency alerts, the audit log.

Every subcommand is one or a few API calls, so it works against a local or a remote `loa serve` and is checked
by the same permissions as any other client. The API address and token come from ``--url``/``--token`` or
``LOA_URL``/``LOA_TOKEN``; ``loa admin login USER`` prints a token to put in ``LOA_TOKEN``.

Output: lists print one tab-separated row per item; ``show`` commands print one ``field<TAB>value`` row per
field; times are shown in Asia/Ho_Chi_Minh (a schedule entry's in its own time zone). ``--json`` prints the
API's JSON instead. Errors print one line (the problem's status, title and detail, plus each bad line of a CSV
import, or each conflicting schedule entry) and exit 1; a mistyped option exits 2 (click's usage error).

The command groups live beside this one: ``library`` and ``playlists`` in :mod:`loa.control_plane.admin_library`,
``schedule`` in :mod:`loa.control_plane.admin_schedule`, ``alerts`` in :mod:`loa.control_plane.admin_alerts`; the
client and the output helpers in :mod:`loa.control_plane.admin_client`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from loa.control_plane.admin_alerts import alerts
from loa.control_plane.admin_client import DEFAULT_URL, api_of, cell, fields, local, present, show, tsv
from loa.control_plane.admin_library import library, playlists
from loa.control_plane.admin_schedule import schedule

__all__ = ["admin"]


@click.group()
@click.option("--url", envvar="LOA_URL", default=DEFAULT_URL, show_default=True, help="API address ($LOA_URL).")
@click.option("--token", envvar="LOA_TOKEN", help="Bearer token ($LOA_TOKEN); see `loa admin login`.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of text.")
@click.pass_context
def admin(ctx: click.Context, url: str, token: str | None, as_json: bool) -> None:
    """Administer a running loa through its HTTP API."""
    ctx.ensure_object(dict).update(url=url, token=token, json=as_json)


@admin.command()
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.pass_context
def login(ctx: click.Context, username: str, password_stdin: bool) -> None:
    """Log in; print a session token (export it as LOA_TOKEN)."""
    if password_stdin:
        secret = sys.stdin.readline().rstrip("\n")
    else:  # the prompt goes to stderr, so that `$(loa admin login USER)` captures only the token
        secret = str(click.prompt("Password", hide_input=True, err=True))
    body = api_of(ctx).call("POST", "/api/v1/auth/login", json={"username": username, "password": secret})
    show(ctx, body, body["token"])
    if body["user"]["must_change_password"]:
        click.echo("loa: this password must be changed: run `loa admin password`", err=True)


@admin.command()
@click.pass_context
def password(ctx: click.Context) -> None:
    """Change my password (prompts for the current and the new one)."""
    current = click.prompt("Current password", hide_input=True, err=True)
    new = click.prompt("New password", hide_input=True, confirmation_prompt=True, err=True)
    api_of(ctx).call("POST", "/api/v1/auth/password", json={"current": current, "new": new})
    click.echo("password changed; your other sessions and tokens are revoked")


def _disable_command(group: click.Group, argument: str, route: str, name_key: str) -> click.Command:
    """``loa admin GROUP disable ARGUMENT [--enable]``: PATCH ``route/ARGUMENT`` with ``disabled``."""

    @group.command("disable")
    @click.argument(argument)
    @click.option("--enable", is_flag=True, help="Re-enable instead.")
    @click.pass_context
    def disable(ctx: click.Context, /, enable: bool, **target: str) -> None:
        body = api_of(ctx).call("PATCH", f"{route}/{target[argument]}", json={"disabled": not enable})
        show(ctx, body, f"{body[name_key]} {'disabled' if body['disabled'] else 'enabled'}")

    return disable


# -- users ------------------------------------------------------------------------------------------------------

@admin.group()
def users() -> None:
    """User accounts (admins, within their scope)."""


@users.command("list")
@click.option("--role")
@click.option("--limit", default=1000, show_default=True)
@click.pass_context
def users_list(ctx: click.Context, role: str | None, limit: int) -> None:
    items = list(api_of(ctx).pages("/api/v1/users", {"role": role} if role else {}, limit))
    show(ctx, items, "\n".join(tsv(u["username"], u["role"], u["scope"] or "national",
                                     "disabled" if u["disabled"] else "enabled", u["display_name"]) for u in items))


@users.command("create")
@click.argument("username")
@click.option("--role", required=True, type=click.Choice(
    ["admin", "noc", "editor", "approver", "scheduler", "viewer", "vendor"]))
@click.option("--scope", help="Zone code of the user's scope (default: national).")
@click.option("--name", "display_name", default="", help="Display name.")
@click.pass_context
def users_create(ctx: click.Context, username: str, role: str, scope: str | None, display_name: str) -> None:
    """Create a user with a one-time password (printed once)."""
    body = api_of(ctx).call("POST", "/api/v1/users", json={"username": username, "role": role, "scope": scope,
                                                         "display_name": display_name})
    show(ctx, body, f"created {body['user']['username']}; one-time password: {body['password']}")


users_disable = _disable_command(users, "username", "/api/v1/users", "username")


@users.command("reset-password")
@click.argument("username")
@click.pass_context
def users_reset(ctx: click.Context, username: str) -> None:
    body = api_of(ctx).call("POST", f"/api/v1/users/{username}/password-reset")
    show(ctx, body, f"one-time password for {username}: {body['password']}")


# -- zones ------------------------------------------------------------------------------------------------------

@admin.group()
def zones() -> None:
    """The zone tree."""


@zones.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def zones_import(ctx: click.Context, csv_file: Path) -> None:
    """Import zones from CSV (code,name,parent[,level]; UTF-8), all or nothing."""
    with csv_file.open("rb") as handle:
        body = api_of(ctx).call("POST", "/api/v1/zones/import", files={"file": (csv_file.name, handle, "text/csv")})
    show(ctx, body, f"{body['rows']} rows: {body['created']} created, {body['updated']} updated, "
                     f"{body['unchanged']} unchanged")


@zones.command("list")
@click.option("--parent", help="Only the children of this zone.")
@click.option("--search", "q", help="Search codes and names.")
@click.option("--limit", default=1000, show_default=True)
@click.pass_context
def zones_list(ctx: click.Context, parent: str | None, q: str | None, limit: int) -> None:
    params = {k: v for k, v in (("parent", parent), ("q", q)) if v}
    items = list(api_of(ctx).pages("/api/v1/zones", params, limit))
    show(ctx, items, "\n".join(tsv(z["code"], z["parent"] or "-", z["level"] or "-", z["name"]) for z in items))


# -- devices ----------------------------------------------------------------------------------------------------

@admin.group()
def devices() -> None:
    """Speaker clusters and e-boards."""


@devices.command("list")
@click.option("--zone", help="Only devices in this zone's subtree.")
@click.option("--online/--offline", default=None)
@click.option("--limit", default=1000, show_default=True)
@click.pass_context
def devices_list(ctx: click.Context, zone: str | None, online: bool | None, limit: int) -> None:
    params: dict[str, Any] = {"zone": zone} if zone else {}
    if online is not None:
        params["online"] = online
    items = list(api_of(ctx).pages("/api/v1/devices", params, limit))
    show(ctx, items, "\n".join(tsv(d["id"], d["kind"], d["zone"] or "-", "online" if d["online"] else "offline",
                                     "disabled" if d["disabled"] else "enabled", d["name"]) for d in items))


@devices.command("enrol")
@click.argument("public_key")
@click.option("--kind", type=click.Choice(["speaker", "board"]), default="speaker", show_default=True)
@click.option("--zone", required=True)
@click.option("--name", default="")
@click.pass_context
def devices_enrol(ctx: click.Context, public_key: str, kind: str, zone: str, name: str) -> None:
    """Enrol a device by the public key printed on it (base64 or hex)."""
    body = api_of(ctx).call("POST", "/api/v1/devices", json={"public_key": public_key, "kind": kind, "zone": zone,
                                                           "name": name})
    show(ctx, body, f"enrolled {body['id']} in {body['zone']}")


@devices.command("token")
@click.option("--zone", required=True)
@click.option("--kind", type=click.Choice(["speaker", "board"]))
@click.option("--name", default="")
@click.option("--hours", default=168, show_default=True, help="Validity.")
@click.pass_context
def devices_token(ctx: click.Context, zone: str, kind: str | None, name: str, hours: int) -> None:
    """Issue a one-time enrolment token for a device to present on its first start."""
    body = api_of(ctx).call("POST", "/api/v1/enrolment-tokens", json={"zone": zone, "kind": kind, "name": name,
                                                                    "ttl_hours": hours})
    show(ctx, body, f"{body['token']}  (zone {body['zone']}, expires {body['expires_at']})")


@devices.command("assign")
@click.argument("device_id")
@click.argument("zone")
@click.pass_context
def devices_assign(ctx: click.Context, device_id: str, zone: str) -> None:
    body = api_of(ctx).call("PATCH", f"/api/v1/devices/{device_id}", json={"zone": zone})
    show(ctx, body, f"{body['id']} is in {body['zone']}")


devices_disable = _disable_command(devices, "device_id", "/api/v1/devices", "id")


@devices.command("status")
@click.argument("device_id", required=False)
@click.option("--zone", help="Only devices in this zone's subtree.")
@click.option("--online/--offline", default=None)
@click.option("--faulty", is_flag=True, help="Only devices reporting faults.")
@click.option("--history", "history", default=0, show_default=True,
              help="With DEVICE_ID: also its last N online/offline transitions.")
@click.option("--limit", default=1000, show_default=True)
@click.pass_context
def devices_status(ctx: click.Context, *, device_id: str | None, zone: str | None, online: bool | None,
                   faulty: bool, history: int, limit: int) -> None:
    """Live status: one device's (every field, its latest telemetry as ``status.KEY`` rows), or one row per device
    (id, online, faults, last seen, telemetry time, name)."""
    api = api_of(ctx)
    if device_id is not None:
        device = api.call("GET", f"/api/v1/devices/{device_id}")
        changes = api.call("GET", f"/api/v1/devices/{device_id}/history", params={"limit": history}) \
            if history > 0 else None
        if ctx.obj.get("json"):
            show(ctx, device if changes is None else {**device, "history": changes["items"]}, "")
            return
        shown = {k: v for k, v in device.items() if k not in ("status", "public_key")}
        lines = [fields(shown, times=("enrolled_at", "last_seen", "status_at"))]
        lines += [tsv(f"status.{key}", cell(value)) for key, value in sorted((device["status"] or {}).items())]
        lines += [tsv("history", local(c["at"]), "online" if c["online"] else "offline", c["reason"] or "-")
                  for c in (changes or {}).get("items", [])]
        click.echo("\n".join(lines))
        return
    params: dict[str, Any] = present(zone=zone, online=online, faulty=True if faulty else None)
    items = list(api.pages("/api/v1/devices", params, limit))
    show(ctx, items, "\n".join(tsv(
        d["id"], "online" if d["online"] else "offline", cell((d["status"] or {}).get("faults")) if d["faulty"]
        else "ok", local(d["last_seen"]), local(d["status_at"]), d["name"]) for d in items))


# -- audit ------------------------------------------------------------------------------------------------------

@admin.command("audit-verify")
@click.pass_context
def audit_verify(ctx: click.Context) -> None:
    """Verify the audit log's hash chain on the server; exit 1 if it is broken."""
    body = api_of(ctx).call("GET", "/api/v1/audit/verify")
    show(ctx, body, body["summary"])
    if not body["ok"]:
        ctx.exit(1)


for _group in (library, playlists, schedule, alerts):
    admin.add_command(_group)
