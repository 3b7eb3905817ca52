"""The HTTP client and the output helpers behind `loa admin` (see :mod:`loa.control_plane.admin` for the output
rules): one-line errors from problem documents, paged lists, tab-separated rows, times in local time.

Failure semantics: an unreachable API raises :class:`click.ClickException` (one line, exit 1); an API error
raises :class:`ApiError` with the problem's status, title and detail, then one indented line per bad CSV line or
conflicting schedule entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click

__all__ = [
    "CLASSES", "DEFAULT_URL", "LEVELS", "LOCAL_TZ", "Api", "ApiError", "api_of", "cell", "conflict_row", "fields",
    "local", "present", "show", "stacked", "tsv",
]

DEFAULT_URL = "http://127.0.0.1:8080"
LOCAL_TZ = "Asia/Ho_Chi_Minh"
CLASSES = ("normal", "priority", "emergency")
LEVELS = ("commune", "district", "province", "national")
F = TypeVar("F", bound=Callable[..., Any])


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
        line += "\n  " + conflict_row(conflict)
    return line


def api_of(ctx: click.Context) -> Api:
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


def tsv(*cells: object) -> str:
    return "\t".join(str(c) for c in cells)


def show(ctx: click.Context, data: Any, line: str) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2) if ctx.obj.get("json") else line)


def local(value: str | None, tz: str = LOCAL_TZ) -> str:
    """An API time (ISO 8601, UTC) as local time with its offset; ``-`` for none."""
    if not value:
        return "-"
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return when.astimezone(ZoneInfo(tz)).isoformat(timespec="seconds")
    except (ValueError, KeyError):
        return value


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return " ".join(str(value).split())  # a row stays one line, whatever the text holds


def fields(data: Mapping[str, Any], times: tuple[str, ...] = (), tz: str = LOCAL_TZ) -> str:
    """One ``field<TAB>value`` row per field (times in ``tz``)."""
    return "\n".join(tsv(key, local(value, tz) if key in times and isinstance(value, str) else cell(value))
                     for key, value in data.items())


def present(**values: Any) -> dict[str, Any]:
    """A JSON body of the options the user gave (None: left out)."""
    return {key: value for key, value in values.items() if value is not None}


def conflict_row(c: Mapping[str, Any]) -> str:
    first = (c.get("occurrences") or [{}])[0]
    pairs = ",".join("/".join(pair) for pair in c.get("zones") or [])
    return tsv("conflict", c.get("entry"), cell(c.get("title")), f"{c.get('count')} collisions",
                local(first.get("start")), pairs or "-")


def stacked(options: Sequence[Callable[[F], F]]) -> Callable[[F], F]:
    """One decorator applying ``options`` (click options) as if written one above the other, first on top."""
    def apply(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func
    return apply
