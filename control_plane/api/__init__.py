"""The HTTP API: a FastAPI app (OpenAPI 3.1 at ``/openapi.json``) over the control plane.

JSON in and out; every error is an RFC 9457 problem (``application/problem+json``); lists are paginated with
``limit`` and an opaque ``cursor``; every route declares the permission it needs (``x-loa-permission`` in the
OpenAPI document) and checks the zone scope of what it touches; every change is audited with the caller and
their address in the same transaction. ``/events`` streams changes live (SSE), ``/metrics`` is Prometheus,
``/healthz`` answers when the database does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

import loa
from loa.control_plane.api import problems
from loa.control_plane.api.metrics import Metrics, MetricsMiddleware
from loa.control_plane.api.routes_alerts import router as alerts_router
from loa.control_plane.api.routes_audit import router as audit_router
from loa.control_plane.api.routes_auth import router as auth_router
from loa.control_plane.api.routes_broadcasts import router as broadcasts_router
from loa.control_plane.api.routes_devices import router as devices_router
from loa.control_plane.api.routes_library import router as library_router
from loa.control_plane.api.routes_reports import router as reports_router
from loa.control_plane.api.routes_schedule import router as schedule_router
from loa.control_plane.api.routes_system import router as system_router
from loa.control_plane.api.routes_users import router as users_router
from loa.control_plane.api.routes_zones import router as zones_router
from loa.control_plane.settings import ControlPlane, Settings

__all__ = ["ROUTERS", "create_app"]

ROUTERS = (auth_router, users_router, zones_router, devices_router, audit_router, system_router, alerts_router,
           reports_router, library_router, schedule_router, broadcasts_router)


def create_app(settings: Settings | None = None, *, control_plane: ControlPlane | None = None) -> FastAPI:
    """The API app over ``control_plane`` (or a new one opened from ``settings``, closed on app shutdown).

    Opening migrates the database, so the app is ready as soon as this returns (tests need no lifespan).
    """
    if control_plane is None:
        if settings is None:
            raise ValueError("give settings or a control plane")
        control_plane = ControlPlane(settings)
        owned = True
    else:
        owned = False
    cp = control_plane

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            cp.close()

    app = FastAPI(title="loa control plane", version=loa.__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, description=__doc__)
    app.state.control_plane = cp
    app.state.metrics = Metrics(cp)
    for router in ROUTERS:
        app.include_router(router)
    problems.install(app)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problems.rewrite_openapi(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
