"""`loa admin`: everyday work through the HTTP API: users, zones, devices and their live status, the library
and its approval, playlists, the schedule, emergency alerts, the audit log.

Every subcommand is one or a few API calls, so it works against a local or a remote `loa serve` and is checked
by the same permissions as any other client. The API address and token come from ``--url``/``--token`` or
``LOA_URL``/``LOA_TOKEN``; ``loa admin login USER`` prints a token to put in ``LOA_TOKEN``.

Output: lists print one tab-separated row per item; ``show`` commands print one ``field<TAB>value`` row per
field; times are shown in Asia/Ho_Chi_Minh (a schedule entry's in its own time zone). ``--json`` prints the
API's JSON instead. Errors print one line (the problem's status, title and detail, plus each bad line of a CSV
import, or each conflicting schedule entry) and exit 1; a mistyped option exits 2 (click's usage error).
"""

from __future__ import annotations

import json
import mimetypes
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click

__all__ = ["admin"]

DEFAULT_URL = "http://127.0.0.1:8080"
LOCAL_TZ = "Asia/Ho_Chi_Minh"
CLASSES = ("normal", "priority", "emergency")
LEVELS = ("commune", "district", "province", "national")
_F = TypeVar("_F", bound=Callable[..., Any])


class ApiError(click.ClickException):
    """A problem document from the API, printed as one line; ``body`` keeps the whole document."""

    def __init__(self, message: str, body: Mapping[str, Any] | None) -> None:
        super().__init__(message)
        self.body = dict(body or {})


class Api:
    """A thin client: JSON in, JSON out, problem documents turned into one-line errors."""

    def __init__(self, client: Any, token: str | None) -> None:
        self._client = client
        self._token = token

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx2

        headers = dict(kwargs.pop("headers", {}))
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            response = self._client.request(method, path, headers=headers, **kwargs)
        except httpx2.HTTPError as exc:
            raise click.ClickException(f"cannot reach the API: {exc}") from None
        if response.status_code >= 400:
            raise ApiError(_problem_line(response), _problem_body(response))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def pages(self, path: str, params: dict[str, Any], limit: int) -> Iterator[dict[str, Any]]:
        cursor, seen = None, 0
        while seen < limit:
            page = self.call("GET", path, params={**params, "limit": min(1000, limit - seen),
                                                  **({"cursor": cursor} if cursor else {})})
            yield from page["items"]
            seen += len(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return


def _problem_body(response: Any) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _problem_line(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    if not isinstance(body, dict):
        return f"HTTP {response.status_code}: {response.text[:200]}"
    line = f"{body.get('status', response.status_code)} {body.get('title', '')}: {body.get('detail', '')}"
    for error in body.get("errors") or []:
        where = error.get("line") or ".".join(str(p) for p in error.get("loc", []))
        line += f"\n  {where}: {error.get('message') or error.get('msg')}"
    for conflict in body.get("conflicts") or []:
        line += "\n  " + _conflict_row(conflict)
    return line


def _api(ctx: click.Context) -> Api:
    obj = ctx.ensure_object(dict)
    if "api" not in obj:
        client = obj.get("client")
        if client is None:
            import httpx2

            client = httpx2.Client(base_url=obj["url"], timeout=60.0)
            ctx.call_on_close(client.close)
        obj["api"] = Api(client, obj.get("token"))
    api = obj["api"]
    assert isinstance(api, Api)
    return api


def _row(*cells: object) -> str:
    return "\t".join(str(c) for c in cells)


def _show(ctx: click.Context, data: Any, line: str) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2) if ctx.obj.get("json") else line)


def _local(value: str | None, tz: str = LOCAL_TZ) -> str:
    """An API time (ISO 8601, UTC) as local time with its offset; ``-`` for none."""
    if not value:
        return "-"
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return when.astimezone(ZoneInfo(tz)).isoformat(timespec="seconds")
    except (ValueError, KeyError):
        return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return " ".join(str(value).split())  # a row stays one line, whatever the text holds


def _fields(data: Mapping[str, Any], times: tuple[str, ...] = (), tz: str = LOCAL_TZ) -> str:
    """One ``field<TAB>value`` row per field (times in ``tz``)."""
    return "\n".join(_row(key, _local(value, tz) if key in times and isinstance(value, str) else _cell(value))
                     for key, value in data.items())


def _body(**values: Any) -> dict[str, Any]:
    """A JSON body of the options the user gave (None: left out)."""
    return {key: value for key, value in values.items() if value is not None}


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
    body = _api(ctx).call("POST", "/api/v1/auth/login", json={"username": username, "password": secret})
    _show(ctx, body, body["token"])
    if body["user"]["must_change_password"]:
        click.echo("loa: this password must be changed: run `loa admin password`", err=True)


@admin.command()
@click.pass_context
def password(ctx: click.Context) -> None:
    """Change my password (prompts for the current and the new one)."""
    current = click.prompt("Current password", hide_input=True, err=True)
    new = click.prompt("New password", hide_input=True, confirmation_prompt=True, err=True)
    _api(ctx).call("POST", "/api/v1/auth/password", json={"current": current, "new": new})
    click.echo("password changed; your other sessions and tokens are revoked")


# -- users ------------------------------------------------------------------------------------------------------

@admin.group()
def users() -> None:
    """User accounts (admins, within their scope)."""


@users.command("list")
@click.option("--role")
@click.option("--limit", default=1000, show_default=True)
@click.pass_context
def users_list(ctx: click.Context, role: str | None, limit: int) -> None:
    items = list(_api(ctx).pages("/api/v1/users", {"role": role} if role else {}, limit))
    _show(ctx, items, "\n".join(_row(u["username"], u["role"], u["scope"] or "national",
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
    body = _api(ctx).call("POST", "/api/v1/users", json={"username": username, "role": role, "scope": scope,
                                                         "display_name": display_name})
    _show(ctx, body, f"created {body['user']['username']}; one-time password: {body['password']}")


@users.command("disable")
@click.argument("username")
@click.option("--enable", is_flag=True, help="Re-enable instead.")
@click.pass_context
def users_disable(ctx: click.Context, username: str, enable: bool) -> None:
    body = _api(ctx).call("PATCH", f"/api/v1/users/{username}", json={"disabled": not enable})
    _show(ctx, body, f"{body['username']} {'disabled' if body['disabled'] else 'enabled'}")


@users.command("reset-password")
@click.argument("username")
@click.pass_context
def users_reset(ctx: click.Context, username: str) -> None:
    body = _api(ctx).call("POST", f"/api/v1/users/{username}/password-reset")
    _show(ctx, body, f"one-time password for {username}: {body['password']}")


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
        body = _api(ctx).call("POST", "/api/v1/zones/import", files={"file": (csv_file.name, handle, "text/csv")})
    _show(ctx, body, f"{body['rows']} rows: {body['created']} created, {body['updated']} updated, "
                     f"{body['unchanged']} unchanged")


@zones.command("list")
@click.option("--parent", help="Only the children of this zone.")
@click.option("--search", "q", help="Search codes and names.")
@click.option("--limit", default=1000, show_default=True)
@click.pass_context
def zones_list(ctx: click.Context, parent: str | None, q: str | None, limit: int) -> None:
    params = {k: v for k, v in (("parent", parent), ("q", q)) if v}
    items = list(_api(ctx).pages("/api/v1/zones", params, limit))
    _show(ctx, items, "\n".join(_row(z["code"], z["parent"] or "-", z["level"] or "-", z["name"]) for z in items))


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
    items = list(_api(ctx).pages("/api/v1/devices", params, limit))
    _show(ctx, items, "\n".join(_row(d["id"], d["kind"], d["zone"] or "-", "online" if d["online"] else "offline",
                                     "disabled" if d["disabled"] else "enabled", d["name"]) for d in items))


@devices.command("enrol")
@click.argument("public_key")
@click.option("--kind", type=click.Choice(["speaker", "board"]), default="speaker", show_default=True)
@click.option("--zone", required=True)
@click.option("--name", default="")
@click.pass_context
def devices_enrol(ctx: click.Context, public_key: str, kind: str, zone: str, name: str) -> None:
    """Enrol a device by the public key printed on it (base64 or hex)."""
    body = _api(ctx).call("POST", "/api/v1/devices", json={"public_key": public_key, "kind": kind, "zone": zone,
                                                           "name": name})
    _show(ctx, body, f"enrolled {body['id']} in {body['zone']}")


@devices.command("token")
@click.option("--zone", required=True)
@click.option("--kind", type=click.Choice(["speaker", "board"]))
@click.option("--name", default="")
@click.option("--hours", default=168, show_default=True, help="Validity.")
@click.pass_context
def devices_token(ctx: click.Context, zone: str, kind: str | None, name: str, hours: int) -> None:
    """Issue a one-time enrolment token for a device to present on its first start."""
    body = _api(ctx).call("POST", "/api/v1/enrolment-tokens", json={"zone": zone, "kind": kind, "name": name,
                                                                    "ttl_hours": hours})
    _show(ctx, body, f"{body['token']}  (zone {body['zone']}, expires {body['expires_at']})")


@devices.command("assign")
@click.argument("device_id")
@click.argument("zone")
@click.pass_context
def devices_assign(ctx: click.Context, device_id: str, zone: str) -> None:
    body = _api(ctx).call("PATCH", f"/api/v1/devices/{device_id}", json={"zone": zone})
    _show(ctx, body, f"{body['id']} is in {body['zone']}")


@devices.command("disable")
@click.argument("device_id")
@click.option("--enable", is_flag=True, help="Re-enable instead.")
@click.pass_context
def devices_disable(ctx: click.Context, device_id: str, enable: bool) -> None:
    body = _api(ctx).call("PATCH", f"/api/v1/devices/{device_id}", json={"disabled": not enable})
    _show(ctx, body, f"{body['id']} {'disabled' if body['disabled'] else 'enabled'}")


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
    api = _api(ctx)
    if device_id is not None:
        device = api.call("GET", f"/api/v1/devices/{device_id}")
        changes = api.call("GET", f"/api/v1/devices/{device_id}/history", params={"limit": history}) \
            if history > 0 else None
        if ctx.obj.get("json"):
            _show(ctx, device if changes is None else {**device, "history": changes["items"]}, "")
            return
        shown = {k: v for k, v in device.items() if k not in ("status", "public_key")}
        lines = [_fields(shown, times=("enrolled_at", "last_seen", "status_at"))]
        lines += [_row(f"status.{key}", _cell(value)) for key, value in sorted((device["status"] or {}).items())]
        lines += [_row("history", _local(c["at"]), "online" if c["online"] else "offline", c["reason"] or "-")
                  for c in (changes or {}).get("items", [])]
        click.echo("\n".join(lines))
        return
    params: dict[str, Any] = _body(zone=zone, online=online, faulty=True if faulty else None)
    items = list(api.pages("/api/v1/devices", params, limit))
    _show(ctx, items, "\n".join(_row(
        d["id"], "online" if d["online"] else "offline", _cell((d["status"] or {}).get("faults")) if d["faulty"]
        else "ok", _local(d["last_seen"]), _local(d["status_at"]), d["name"]) for d in items))


# -- library ----------------------------------------------------------------------------------------------------

def _item_row(item: Mapping[str, Any]) -> str:
    duration = f"{item['duration_ms'] / 1000:.1f}s" if item.get("duration_ms") else "-"
    return _row(item["id"], item["kind"], item["state"], item["class"], item["level"], item["zone"] or "national",
                duration, _cell(item["title"]))


_ITEM_TIMES = ("reviewed_at", "created_at", "updated_at")
_class_option = click.option("--class", "cls", type=click.Choice(CLASSES), help="Default: normal.")
_level_option = click.option("--level", type=click.Choice(LEVELS), help="Issuing level (default: yours).")
_zone_option = click.option("--zone", help="Owner zone (default: your scope).")


@admin.group()
def library() -> None:
    """Library items: audio, e-board texts and images; submit, approve, reject."""


@library.command("list")
@click.option("--kind", type=click.Choice(["audio", "text", "image", "playlist"]))
@click.option("--state", type=click.Choice(["draft", "submitted", "approved", "rejected"]))
@click.option("--class", "cls", type=click.Choice(CLASSES))
@click.option("--level", type=click.Choice(LEVELS))
@click.option("--zone", help="Only items owned in this zone's subtree.")
@click.option("--author")
@click.option("--search", "q", help="Search titles.")
@click.option("--limit", default=1000, show_default=True)
@click.pass_context
def library_list(ctx: click.Context, *, kind: str | None, state: str | None, cls: str | None, level: str | None,
                 zone: str | None, author: str | None, q: str | None, limit: int) -> None:
    """Items I can see, newest first: id, kind, state, class, level, zone, duration, title."""
    params = _body(kind=kind, state=state, level=level, zone=zone, author=author, q=q, **{"class": cls})
    items = list(_api(ctx).pages("/api/v1/library", params, limit))
    _show(ctx, items, "\n".join(_item_row(i) for i in items))


@library.command("show")
@click.argument("item_id", type=int)
@click.pass_context
def library_show(ctx: click.Context, item_id: int) -> None:
    item = _api(ctx).call("GET", f"/api/v1/library/{item_id}")
    _show(ctx, item, _fields(item, times=_ITEM_TIMES))


def _upload(ctx: click.Context, route: str, file: Path, *, title: str | None, cls: str | None, level: str | None,
            zone: str | None) -> None:
    form = _body(title=title or file.stem, level=level, zone=zone, **{"class": cls})
    media_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    try:
        handle = file.open("rb")
    except OSError as exc:
        raise click.ClickException(f"cannot read {str(file)!r}: {exc.strerror or exc}") from None
    with handle:
        item = _api(ctx).call("POST", route, files={"file": (file.name, handle, media_type)}, data=form)
    _show(ctx, item, _item_row(item))


@library.command("upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--title", help="Default: the file name without its extension.")
@_class_option
@_level_option
@_zone_option
@click.pass_context
def library_upload(ctx: click.Context, *, file: Path, title: str | None, cls: str | None, level: str | None,
                   zone: str | None) -> None:
    """Upload audio (any format ffmpeg reads): normalised, stored as Ogg Opus, a new draft item."""
    _upload(ctx, "/api/v1/library/audio", file, title=title, cls=cls, level=level, zone=zone)


@library.command("image")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--title", help="Default: the file name without its extension.")
@_class_option
@_level_option
@_zone_option
@click.pass_context
def library_image(ctx: click.Context, *, file: Path, title: str | None, cls: str | None, level: str | None,
                  zone: str | None) -> None:
    """Upload an e-board image (PNG or JPEG) as a new draft item."""
    _upload(ctx, "/api/v1/library/images", file, title=title, cls=cls, level=level, zone=zone)


@library.command("text")
@click.argument("title")
@click.argument("text")
@_class_option
@_level_option
@_zone_option
@click.pass_context
def library_text(ctx: click.Context, *, title: str, text: str, cls: str | None, level: str | None,
                 zone: str | None) -> None:
    """A new draft e-board text; TEXT ``-`` reads it from standard input."""
    if text == "-":
        text = sys.stdin.read()
    item = _api(ctx).call("POST", "/api/v1/library/texts",
                          json=_body(title=title, text=text, level=level, zone=zone, **{"class": cls}))
    _show(ctx, item, _item_row(item))


def _library_step(ctx: click.Context, item_id: int, step: str, body: dict[str, Any] | None = None) -> None:
    item = _api(ctx).call("POST", f"/api/v1/library/{item_id}/{step}", json=body)
    _show(ctx, item, _item_row(item))


@library.command("submit")
@click.argument("item_id", type=int)
@click.pass_context
def library_submit(ctx: click.Context, item_id: int) -> None:
    """Submit a draft (or rejected) item for approval."""
    _library_step(ctx, item_id, "submit")


@library.command("approve")
@click.argument("item_id", type=int)
@click.pass_context
def library_approve(ctx: click.Context, item_id: int) -> None:
    """Approve a submitted item (never one's own)."""
    _library_step(ctx, item_id, "approve")


@library.command("reject")
@click.argument("item_id", type=int)
@click.option("--reason", required=True, help="Why: the author sees it.")
@click.pass_context
def library_reject(ctx: click.Context, item_id: int, reason: str) -> None:
    """Reject a submitted item with a reason (never one's own)."""
    _library_step(ctx, item_id, "reject", {"reason": reason})


@library.command("delete")
@click.argument("item_id", type=int)
@click.pass_context
def library_delete(ctx: click.Context, item_id: int) -> None:
    """Delete an item no schedule entry or playlist uses."""
    _api(ctx).call("DELETE", f"/api/v1/library/{item_id}")
    _show(ctx, {"deleted": item_id}, f"deleted library item {item_id}")


@admin.group()
def playlists() -> None:
    """Playlists: ordered audio items, approved like any library item."""


@playlists.command("create")
@click.argument("title")
@click.argument("items", nargs=-1, required=True, type=int)
@_class_option
@_level_option
@_zone_option
@click.pass_context
def playlists_create(ctx: click.Context, *, title: str, items: tuple[int, ...], cls: str | None, level: str | None,
                     zone: str | None) -> None:
    """A draft playlist of audio ITEMS (ids), played in the order given."""
    item = _api(ctx).call("POST", "/api/v1/playlists", json=_body(title=title, items=list(items), level=level,
                                                                   zone=zone, **{"class": cls}))
    _show(ctx, item, _item_row(item))


@playlists.command("list")
@click.option("--state", type=click.Choice(["draft", "submitted", "approved", "rejected"]))
@click.option("--zone", help="Only playlists owned in this zone's subtree.")
@click.option("--search", "q", help="Search titles.")
@click.option("--limit", default=1000, show_default=True)
@click.pass_context
def playlists_list(ctx: click.Context, state: str | None, zone: str | None, q: str | None, limit: int) -> None:
    """Playlists I can see, newest first: the library row, then its member ids."""
    items = list(_api(ctx).pages("/api/v1/playlists", _body(state=state, zone=zone, q=q), limit))
    _show(ctx, items, "\n".join(_row(_item_row(i), _cell(i["members"])) for i in items))


# -- schedule ---------------------------------------------------------------------------------------------------

def _conflict_row(c: Mapping[str, Any]) -> str:
    first = (c.get("occurrences") or [{}])[0]
    pairs = ",".join("/".join(pair) for pair in c.get("zones") or [])
    return _row("conflict", c.get("entry"), _cell(c.get("title")), f"{c.get('count')} collisions",
                _local(first.get("start")), pairs or "-")


def _entry_row(e: Mapping[str, Any]) -> str:
    return _row(e["id"], "enabled" if e["enabled"] else "disabled", _local(e["next_occurrence"], e["tz"]),
                e["rrule"] or "once", e["item"], _cell(e["zones"]), _cell(e["title"]))


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


def _entry_options(required: bool) -> Callable[[_F], _F]:
    """The options of an entry (add, check: the item, zones and start are required; edit: all optional)."""
    options = [
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
    ]

    def apply(func: _F) -> _F:
        for option in reversed(options):
            func = option(func)
        return func
    return apply


def _entry_body(api: Api, *, item: int | None, zones: tuple[str, ...], start: str | None, tz: str | None,
                rrule: str | None, title: str | None, cls: str | None, level: str | None, policy: str | None,
                duration_ms: int | None, valid_from: str | None, valid_until: str | None) -> dict[str, Any]:
    if item is not None and title is None:
        title = api.call("GET", f"/api/v1/library/{item}")["title"]
    return _body(title=title, item=item, zones=list(zones) or None, start=_start(start), tz=tz, rrule=rrule,
                 duration_ms=duration_ms, valid_from=_when(valid_from, "--valid-from"),
                 valid_until=_when(valid_until, "--valid-until"), level=level, policy=policy, **{"class": cls})


@admin.group()
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
    items = list(_api(ctx).pages("/api/v1/schedule", _body(zone=zone, item=item, enabled=enabled), limit))
    _show(ctx, items, "\n".join(_entry_row(e) for e in items))


@schedule.command("show")
@click.argument("entry_id", type=int)
@click.pass_context
def schedule_show(ctx: click.Context, entry_id: int) -> None:
    entry = _api(ctx).call("GET", f"/api/v1/schedule/{entry_id}")
    _show(ctx, entry, _fields(entry, times=("next_occurrence", "valid_from", "valid_until", "created_at",
                                            "updated_at"), tz=entry["tz"]))


def _saved(ctx: click.Context, saved: Mapping[str, Any]) -> None:
    lines = [_entry_row(saved["entry"])] + [_conflict_row(c) for c in saved["conflicts"]]
    _show(ctx, saved, "\n".join(lines))


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
    api = _api(ctx)
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
    api = _api(ctx)
    body = _entry_body(api, item=item, zones=zones, start=start, tz=tz, rrule=rrule, title=title, cls=cls,
                       level=level, policy=policy, duration_ms=duration_ms, valid_from=valid_from,
                       valid_until=valid_until)
    result = api.call("POST", "/api/v1/schedule/check", json=_body(**body, replaces=replaces))
    shown_tz = tz or LOCAL_TZ
    lines = [_conflict_row(c) for c in result["conflicts"]]
    lines += [_row("next", _local(t, shown_tz)) for t in result["next_occurrences"]]
    lines.insert(0, "ok: no conflicts" if result["ok"] else f"{len(result['conflicts'])} conflicting entries "
                    f"within {result['horizon_days']} days")
    _show(ctx, result, "\n".join(lines))
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
    body = _body(title=title, item=item, zones=list(zones) or None, start=_start(start), tz=tz, rrule=rrule,
                 duration_ms=duration_ms, valid_from=_when(valid_from, "--valid-from"),
                 valid_until=_when(valid_until, "--valid-until"), level=level, policy=policy, enabled=enabled,
                 **{"class": cls})
    if once:
        body["rrule"] = None
    _saved(ctx, _api(ctx).call("PATCH", f"/api/v1/schedule/{entry_id}", json={**body, "force": force}))


@schedule.command("delete")
@click.argument("entry_id", type=int)
@click.pass_context
def schedule_delete(ctx: click.Context, entry_id: int) -> None:
    """Delete an entry (what the scheduler did with it stays on record)."""
    _api(ctx).call("DELETE", f"/api/v1/schedule/{entry_id}")
    _show(ctx, {"deleted": entry_id}, f"deleted schedule entry {entry_id}")


@schedule.command("firings")
@click.argument("entry_id", type=int)
@click.option("--limit", default=100, show_default=True)
@click.pass_context
def schedule_firings(ctx: click.Context, entry_id: int, limit: int) -> None:
    """What the scheduler did with each occurrence, newest first: time (local), status, item, broadcasts, detail."""
    items = list(_api(ctx).pages(f"/api/v1/schedule/{entry_id}/firings", {}, limit))
    _show(ctx, items, "\n".join(_row(_local(f["occurrence_at"]), f["status"], _cell(f["item"]),
                                     _cell(f["broadcasts"]), _cell(f["detail"])) for f in items))


# -- alerts -----------------------------------------------------------------------------------------------------

_ALERT_TIMES = ("created_at", "triggered_at", "approved_at", "cancelled_at", "issued_at", "expires_at")
_NEXT_STEP = {
    "draft": "trigger it: loa admin alerts trigger {id}",
    "pending_approval": "a second NOC operator or admin confirms it: loa admin alerts confirm {id}",
    "failed": "edit it or trigger it again; the broadcaster said: {dispatch_error}",
}


def _alert_row(a: Mapping[str, Any]) -> str:
    audio = f"live:{a['live_port']}" if a["live_port"] else (f"item:{a['library_item']}" if a["library_item"]
                                                             else f"content:{(a['content_id'] or '-')[:12]}")
    return _row(a["id"], a["state"], a["status"], a["class"], a["level"], _cell(a["zones"]), audio,
                _cell(a["title"] or a["text"]))


def _alert_out(ctx: click.Context, alert: Mapping[str, Any]) -> None:
    line = _alert_row(alert)
    hint = _NEXT_STEP.get(alert["state"])
    if hint and not ctx.obj.get("json"):
        click.echo(f"loa: alert {alert['id']} is {alert['state'].replace('_', ' ')}: "
                   + hint.format(id=alert["id"], dispatch_error=alert["dispatch_error"]), err=True)
    _show(ctx, alert, line)


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


def _alert_options(required: bool) -> Callable[[_F], _F]:
    options = [
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
    ]

    def apply(func: _F) -> _F:
        for option in reversed(options):
            func = option(func)
        return func
    return apply


@admin.group()
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
    items = list(_api(ctx).pages("/api/v1/alerts", _body(state=state, status=status, zone=zone), limit))
    _show(ctx, items, "\n".join(_alert_row(a) for a in items))


@alerts.command("show")
@click.argument("alert_id", type=int)
@click.pass_context
def alerts_show(ctx: click.Context, alert_id: int) -> None:
    alert = _api(ctx).call("GET", f"/api/v1/alerts/{alert_id}")
    shown = {k: v for k, v in alert.items() if k not in ("body", "sig", "cancel_body", "cancel_sig")}
    shown["signed"] = alert["sig"] is not None
    _show(ctx, alert, _fields(shown, times=_ALERT_TIMES))


@alerts.command("create")
@_alert_options(required=True)
@click.option("--trigger", is_flag=True, help="Trigger at once (under the two-person rule: ask for approval).")
@click.pass_context
def alerts_create(ctx: click.Context, *, zones: tuple[str, ...], status: str, item: int | None, content_id: str | None,
                  live_port: int | None, text: str | None, title: str | None, cls: str | None,
                  expires_in: int | None, preroll_ms: int | None, trigger: bool) -> None:
    """Compose an alert for zones of my scope (a draft, unless --trigger)."""
    api = _api(ctx)
    body = _body(zones=list(zones), status=status, text=text, title=title, expires_in_s=expires_in,
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
    api = _api(ctx)
    body = _body(zones=list(zones) or None, status=status, text=text, title=title, expires_in_s=expires_in,
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
    _alert_out(ctx, _api(ctx).call("POST", f"/api/v1/alerts/{alert_id}/trigger"))


@alerts.command("confirm")
@click.argument("alert_id", type=int)
@click.pass_context
def alerts_confirm(ctx: click.Context, alert_id: int) -> None:
    """Confirm an alert another operator triggered: it is signed and sent now."""
    _alert_out(ctx, _api(ctx).call("POST", f"/api/v1/alerts/{alert_id}/confirm"))


@alerts.command("cancel")
@click.argument("alert_id", type=int)
@click.pass_context
def alerts_cancel(ctx: click.Context, alert_id: int) -> None:
    """Cancel at once (no second person): a sent alert gets a signed cancel."""
    _alert_out(ctx, _api(ctx).call("POST", f"/api/v1/alerts/{alert_id}/cancel"))


# -- audit ------------------------------------------------------------------------------------------------------

@admin.command("audit-verify")
@click.pass_context
def audit_verify(ctx: click.Context) -> None:
    """Verify the audit log's hash chain on the server; exit 1 if it is broken."""
    body = _api(ctx).call("GET", "/api/v1/audit/verify")
    _show(ctx, body, body["summary"])
    if not body["ok"]:
        ctx.exit(1)
