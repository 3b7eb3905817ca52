"""`loa serve` as a real process (hypercorn on loopback), `loa admin` against it, and their error paths."""

from __future__ import annotations

import base64
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi.testclient import TestClient

from loa.control_plane.admin import admin
from loa.control_plane.api import create_app
from loa.control_plane.commands import audit, serve
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import PROVINCE_CSV, Seed, fast_settings

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, args: list[str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        code = "from loa.control_plane.commands import serve; serve()"
        self.proc = subprocess.Popen([sys.executable, "-c", code, "--http", f"127.0.0.1:{self.port}", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited: {self.proc.communicate(timeout=10)}")
            try:
                if httpx2.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError("serve did not answer within 60 s")
            time.sleep(0.1)

    def stop(self) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, out, err


@pytest.fixture
def server_factory() -> Iterator[type[Server]]:
    started: list[Server] = []

    class Tracked(Server):
        def __init__(self, args: list[str]) -> None:
            super().__init__(args)
            started.append(self)

    yield Tracked
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.communicate(timeout=10)


def _cli(url: str, token: str | None, *args: str, stdin: str | None = None) -> str:
    env = {"LOA_URL": url, **({"LOA_TOKEN": token} if token else {})}
    result = CliRunner().invoke(admin, list(args), input=stdin, env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_serve_first_start_admin_cli_and_restart(tmp_path: Path, server_factory: type[Server]) -> None:
    data = tmp_path / "data"
    server = server_factory(["--data-dir", str(data)])
    code, out, err = server.stop()
    assert code == 0, err
    assert "Traceback" not in err
    password = re.search(r"password: (\S+)", out)
    assert password is not None, out
    assert "username: admin" in out

    server = server_factory(["--data-dir", str(data), "--backend", "asyncio"])
    url = server.url
    token = _cli(url, None, "login", "admin", "--password-stdin", stdin=password.group(1) + "\n").strip()
    assert token.startswith("loa_")
    _cli(url, token, "password", stdin=f"{password.group(1)}\nmật khẩu mới rất dài\nmật khẩu mới rất dài\n")
    token = _cli(url, None, "login", "admin", "--password-stdin", stdin="mật khẩu mới rất dài\n").strip()
    csv_file = tmp_path / "province.csv"
    csv_file.write_bytes(b"\xef\xbb\xbf" + PROVINCE_CSV.encode())
    assert "9 rows: 9 created" in _cli(url, token, "zones", "import", str(csv_file))
    assert "Phường Hòa Hiệp Bắc" in _cli(url, token, "zones", "list", "--parent", "490")
    created = _cli(url, token, "users", "create", "lan", "--role", "noc", "--scope", "490", "--name", "Nguyễn Lan")
    assert "one-time password" in created
    key = base64.b64encode(X25519PrivateKey.generate().public_key().public_bytes_raw()).decode()
    enrolled = _cli(url, token, "devices", "enrol", key, "--zone", "20194-01", "--name", "Loa chợ")
    device = enrolled.split()[1]
    assert f"{device}\tspeaker\t20194-01\toffline" in _cli(url, token, "devices", "list", "--zone", "490")
    assert "disabled" in _cli(url, token, "devices", "disable", device)
    assert re.search(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}",
                     _cli(url, token, "devices", "token", "--zone", "20194", "--hours", "2"))
    assert "lan\tnoc\t490" in _cli(url, token, "users", "list")
    assert "intact" in _cli(url, token, "audit-verify")
    metrics = httpx2.get(f"{url}/metrics", timeout=5).text
    assert 'loa_devices{state="disabled"} 1.0' in metrics
    code, out, err = server.stop()
    assert code == 0, err
    assert "password:" not in out  # the first admin exists: nothing printed again

    result = CliRunner().invoke(audit, ["verify", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert "intact" in result.output


def test_serve_on_postgresql(pg_empty_url: str, tmp_path: Path, server_factory: type[Server]) -> None:
    server = server_factory(["--db", pg_empty_url, "--data-dir", str(tmp_path)])
    assert httpx2.get(f"{server.url}/healthz", timeout=5).json()["database"] == "postgresql"
    code, out, _ = server.stop()
    assert code == 0
    assert "username: admin" in out


def test_serve_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    bad_db = runner.invoke(serve, ["--db", "mysql://x@y/z", "--data-dir", str(tmp_path)])
    assert bad_db.exit_code == 1
    assert "unsupported database" in bad_db.output
    bad_bind = runner.invoke(serve, ["--http", "nonsense", "--data-dir", str(tmp_path)])
    assert bad_bind.exit_code == 2
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = runner.invoke(serve, ["--http", f"127.0.0.1:{port}", "--data-dir", str(tmp_path)])
    assert busy.exit_code == 1, busy.output
    assert "cannot serve" in busy.output
    assert "Traceback" not in busy.output


def test_admin_cli_reports_problems_in_one_line_each(tmp_path: Path) -> None:
    cp = ControlPlane(fast_settings(tmp_path))
    try:
        seed = Seed(cp)
        seed.province()
        token = seed.user("root", "admin")
        with TestClient(create_app(control_plane=cp)) as client:
            bad = tmp_path / "bad.csv"
            bad.write_text("code,name,parent\n49,,\n50,Quảng Ngãi,nowhere\n", encoding="utf-8")
            result = CliRunner().invoke(admin, ["--token", token, "zones", "import", str(bad)],
                                        obj={"client": client})
            assert result.exit_code == 1
            assert "422 Invalid input" in result.output
            assert "\n  2: zone name" in result.output
            assert "\n  3: zone '50' names an unknown parent 'nowhere'" in result.output
            denied = CliRunner().invoke(admin, ["users", "list"], obj={"client": client})
            assert denied.exit_code == 1
            assert "401 Authentication required" in denied.output
            as_json = CliRunner().invoke(admin, ["--token", token, "--json", "zones", "list", "--parent", "491"],
                                         obj={"client": client})
            assert '"code": "20227"' in as_json.output
    finally:
        cp.close()
    unreachable = CliRunner().invoke(admin, ["--url", f"http://127.0.0.1:{_free_port()}", "users", "list"],
                                     env={"LOA_TOKEN": "x"})
    assert unreachable.exit_code == 1
    assert "cannot reach the API" in unreachable.output
    assert "Traceback" not in unreachable.output


def test_admin_cli_help_works_without_a_server() -> None:
    for args in (["--help"], ["users", "--help"], ["zones", "import", "--help"], ["devices", "token", "--help"]):
        result = CliRunner().invoke(admin, args)
        assert result.exit_code == 0, result.output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_the_server_caps_malloc_arenas_unless_the_environment_does() -> None:
    """In a fresh interpreter (the cap is per process): it takes effect on glibc, and defers to MALLOC_ARENA_MAX."""
    code = "from loa.control_plane.process_memory import limit_arenas as f; print(f())"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ("True" if platform.libc_ver()[0] == "glibc" else "False")
    out = subprocess.run([sys.executable, "-c", code], env={**env, "MALLOC_ARENA_MAX": "4"}, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "False"
