"""`loa admin`: everyday administration through the HTTP API (users, zones, devices, tokens, audit).

Every subcommand is one or a few API calls, so it works against a local or a remote `loa serve` and is checked
by the same permissions as any other client. The API address and token come from ``--url``/``--token`` or
``LOA_URL``/``LOA_TOKEN``; ``loa admin login USER`` prints a token to put in ``LOA_TOKEN``. Errors print one
line (the problem's status, title and detail, plus each bad line of a CSV import) and exit 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

__all__ = ["admin"]

DEFAULT_URL = "http://127.0.0.1:8080"


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
            raise click.ClickException(_problem_line(response))
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


def _problem_line(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    line = f"{body.get('status', response.status_code)} {body.get('title', '')}: {body.get('detail', '')}"
    for error in body.get("errors") or []:
        where = error.get("line") or ".".join(str(p) for p in error.get("loc", []))
        line += f"\n  {where}: {error.get('message') or error.get('msg')}"
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


# -- audit ------------------------------------------------------------------------------------------------------

@admin.command("audit-verify")
@click.pass_context
def audit_verify(ctx: click.Context) -> None:
    """Verify the audit log's hash chain on the server; exit 1 if it is broken."""
    body = _api(ctx).call("GET", "/api/v1/audit/verify")
    _show(ctx, body, body["summary"])
    if not body["ok"]:
        ctx.exit(1)
