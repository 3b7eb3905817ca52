"""`loa admin` against a real control plane for the tests: the API in-process (a Starlette test client that `loa
admin` uses as its HTTP client), a province, and one user per role with a token (``USERS``).

:meth:`Env.fails` checks a command fails with one line (status and title) and the given exit code.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from loa.control_plane.admin import admin
from loa.control_plane.api import create_app
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import FakeDispatcher, ManualClock, Seed, fast_settings

__all__ = ["PNG", "START", "USERS", "Env", "admin_env", "write_file"]

START = datetime(2030, 3, 1, 1, 0, tzinfo=UTC)  # 08:00 in Asia/Ho_Chi_Minh
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")
USERS = (("root", "admin", None), ("lan", "noc", "48"), ("minh", "noc", "48"), ("ed", "editor", "490"),
         ("duyet", "approver", "490"), ("lich", "scheduler", "490"), ("xem", "viewer", "20194"))


@dataclass
class Env:
    cp: ControlPlane
    client: TestClient
    seed: Seed
    clock: ManualClock
    dispatcher: FakeDispatcher
    tokens: dict[str, str]
    tmp: Path

    def run(self, who: str | None, *args: str, stdin: str | None = None) -> Result:
        token = ["--token", self.tokens[who]] if who else []
        return CliRunner().invoke(admin, [*token, *args], obj={"client": self.client}, input=stdin)

    def ok(self, who: str, *args: str, stdin: str | None = None) -> str:
        result = self.run(who, *args, stdin=stdin)
        assert result.exit_code == 0, result.output
        return result.stdout

    def rows(self, who: str, *args: str) -> list[list[str]]:
        return [line.split("\t") for line in self.ok(who, *args).splitlines()]

    def json(self, who: str, *args: str) -> Any:
        return json.loads(self.ok(who, "--json", *args))

    def fails(self, who: str | None, *args: str, status: str, exit_code: int = 1) -> str:
        """The one error line (its status and title checked), for a command that must fail."""
        result = self.run(who, *args)
        assert result.exit_code == exit_code, result.output
        assert "Traceback" not in result.output
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        line = next(x for x in lines if x.startswith("Error:")) if exit_code == 2 else lines[0]
        assert line.startswith(status if status.startswith("Error:") else f"Error: {status}"), result.stderr
        return line

    def api(self, who: str, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, headers={"Authorization": f"Bearer {self.tokens[who]}"},
                                       **kwargs)
        assert response.status_code < 300, response.text
        return response.json()


def admin_env(tmp_path: Path) -> Iterator[Env]:
    """A control plane with a province and one user per role, its API in-process; `loa admin` runs against it."""
    clock = ManualClock(START)
    cp = ControlPlane(fast_settings(tmp_path / "data", clock=clock))
    dispatcher = FakeDispatcher()
    cp.alert_dispatcher = dispatcher
    seed = Seed(cp)
    seed.province()
    tokens = {name: seed.user(name, role, scope) for name, role, scope in USERS}
    with TestClient(create_app(control_plane=cp)) as client:
        yield Env(cp, client, seed, clock, dispatcher, tokens, tmp_path)
    cp.close()


def write_file(env: Env, name: str, data: bytes) -> str:
    path = env.tmp / name
    path.write_bytes(data)
    return str(path)
