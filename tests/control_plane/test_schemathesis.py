"""Fuzz the whole API from its own OpenAPI document (schemathesis, in-process over ASGI), as a national admin.

Every operation gets generated valid and invalid requests; every response must be no 5xx, carry a documented
status and content type, and match its documented schema; invalid requests must be rejected. ``/events`` is an
endless stream, checked in test_events.py instead. Each request carries a fresh admin token, so an operation
that revokes its caller's token (logout, password change) cannot blind the rest of the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from loa.control_plane.api import ROUTERS, create_app
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import Seed, bearer, fast_settings

EXAMPLES = 15  # per operation, mode and backend
SENT: list[str] = []
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]


@pytest.fixture(scope="module")
def fuzzed(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Seed]]:
    SENT.clear()
    cp = ControlPlane(fast_settings(Path(tmp_path_factory.mktemp("fuzz")), module_db_url))
    seed = Seed(cp)
    seed.province()
    seed.user("root", "admin")
    seed.device("20194-01")
    app = create_app(control_plane=cp)
    yield app, seed
    print(f"\nschemathesis on {cp.db.dialect}: {len(SENT)} requests over {len(set(SENT))} operation/mode pairs")
    cp.close()


@pytest.fixture(scope="module")
def api_schema(fuzzed: tuple[Any, Seed]) -> Any:
    app, _ = fuzzed
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # The caller's token is ours to give (a fresh one per request), not a parameter to fuzz.
    schema.config.generation.update(with_security_parameters=False)
    return schema


ROUTES = [route for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)]
OPERATIONS = sorted((method, route.path, bool(route.dependant.query_params or route.dependant.path_params
                                              or route.dependant.header_params or route.body_field))
                    for route in ROUTES if route.path != "/events" for method in route.methods)
CASES = [pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
         for method, path, has_input in OPERATIONS
         for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if has_input or mode is GenerationMode.POSITIVE]  # nothing to make invalid without any input


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_api_conforms_to_its_openapi(api_schema: Any, fuzzed: tuple[Any, Seed], method: str, path: str,
                                     mode: GenerationMode) -> None:
    _, seed = fuzzed
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    def check(case: Any) -> None:
        SENT.append(f"{method} {path} {mode.value}")
        case.call_and_validate(headers=bearer(seed.token("root")), checks=CHECKS)

    check()
