"""RFC 9457 problem details for every error the API returns, and the OpenAPI description of them.

Domain errors carry their status and kind; framework errors (unknown route 404, 405, request validation 422)
and database conflicts or outages are mapped here; so are storage faults: a full disk (files or database) is
507 ``insufficient-storage`` and a read-only data directory 503 ``read-only``, each with one line saying that
nothing was stored. Anything unexpected becomes a 500 problem whose body says nothing about the failure (it is
logged with its traceback, under an id that the body quotes).
"""

from __future__ import annotations

import errno
import logging
import secrets
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loa.control_plane.errors import ControlPlaneError

__all__ = ["PROBLEM_RESPONSES", "PROBLEM_TYPE", "CatchAllMiddleware", "Problem", "install", "problem_response"]

log = logging.getLogger("loa.control_plane.api")
MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE = "/problems/"


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": HTTPStatus(status).phrase}
    for status in (400, 401, 403, 404, 409, 413, 422, 429, 500, 503, 507)
}


def problem_response(status: int, *, kind: str | None = None, title: str | None = None, detail: str | None = None,
                     instance: str | None = None, extra: Mapping[str, Any] | None = None,
                     headers: Mapping[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + kind if kind else "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    body.update(extra or {})
    return JSONResponse(jsonable_encoder(body), status_code=status, media_type=MEDIA_TYPE, headers=dict(headers or {}))


def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ControlPlaneError)
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="loa"'
    if exc.status == 429 and "retry_after" in exc.extra:
        headers["Retry-After"] = str(exc.extra["retry_after"])
    return problem_response(exc.status, kind=exc.kind, title=exc.title, detail=exc.detail,
                            instance=request.url.path, extra=exc.extra, headers=headers)


def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no such resource: {request.url.path}"
    if exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(exc.status_code, detail=detail, instance=request.url.path, headers=exc.headers)


def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in exc.errors()]  # never echo the input: it may hold a password
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(first["loc"])
    return problem_response(422, kind="invalid", title="Invalid input",
                            detail=f"{where}: {first['msg']}" if where else str(first["msg"]),
                            instance=request.url.path, extra={"errors": errors})


def _integrity(request: Request, exc: Exception) -> JSONResponse:
    log.info("integrity error on %s %s: %s", request.method, request.url.path, exc)
    return problem_response(409, kind="conflict", title="Conflict",
                            detail="the change conflicts with the stored data (possibly a concurrent change); "
                                   "reload and try again", instance=request.url.path)


_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_READ_ONLY = frozenset({errno.EROFS})
FULL_DETAIL = "the server's storage is full: nothing was stored; free space on the server and try again"
READ_ONLY_DETAIL = "the server's data directory is read-only: nothing was stored; reads still work"


def _storage_fault(exc: BaseException) -> str | None:
    """``"full"`` or ``"read-only"`` when ``exc`` (or what caused it) is that file system or database fault."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "errno", None)
        if code in _FULL:
            return "full"
        if code in _READ_ONLY:
            return "read-only"
        text = str(current).lower()
        if "database or disk is full" in text or "no space left on device" in text:
            return "full"  # SQLite SQLITE_FULL; PostgreSQL's disk-full errors (SQLSTATE 53100) say this
        if "readonly database" in text or "read-only file system" in text:
            return "read-only"
        current = current.__cause__ or current.__context__
    return None


def _storage(request: Request, fault: str) -> JSONResponse:
    log.warning("storage %s on %s %s", fault, request.method, request.url.path)
    if fault == "full":
        return problem_response(507, kind="insufficient-storage", title="Insufficient Storage", detail=FULL_DETAIL,
                                instance=request.url.path)
    return problem_response(503, kind="read-only", title="Service unavailable", detail=READ_ONLY_DETAIL,
                            instance=request.url.path, headers={"Retry-After": "60"})


def _os_error(request: Request, exc: Exception) -> JSONResponse:
    fault = _storage_fault(exc)
    if fault is not None:
        return _storage(request, fault)
    incident = secrets.token_hex(6)
    log.error("unhandled error %s on %s %s", incident, request.method, request.url.path, exc_info=exc)
    return problem_response(500, kind="internal", title="Internal Server Error",
                            detail=f"an unexpected error occurred (incident {incident}); it has been logged",
                            instance=request.url.path)


def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    fault = _storage_fault(exc)
    if fault is not None:
        return _storage(request, fault)
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return problem_response(503, kind="unavailable", title="Service unavailable",
                            detail="the database is unavailable or busy; try again shortly",
                            instance=request.url.path, headers={"Retry-After": "5"})


class CatchAllMiddleware:
    """Turn any exception a route lets out into a 500 problem (logged here), never a traceback in the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            incident = secrets.token_hex(6)
            log.exception("unhandled error %s on %s %s", incident, scope.get("method"), scope.get("path"))
            if started:
                return  # the response is already under way: nothing more can be said to the client
            response = problem_response(500, kind="internal", title="Internal Server Error",
                                        detail=f"an unexpected error occurred (incident {incident}); "
                                               "it has been logged", instance=scope.get("path"))
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ControlPlaneError, _domain)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(IntegrityError, _integrity)
    app.add_exception_handler(OperationalError, _unavailable)
    app.add_exception_handler(OSError, _os_error)
    app.add_middleware(CatchAllMiddleware)


def rewrite_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Error responses are ``application/problem+json``, not the ``application/json`` FastAPI writes."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content")
                if status[:1] in {"4", "5"} and content and "application/json" in content:
                    content[MEDIA_TYPE] = content.pop("application/json")
    return schema
