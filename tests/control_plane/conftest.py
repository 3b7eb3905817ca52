"""Fixtures for the control plane: a throwaway PostgreSQL server, and database URLs for both backends.

The PostgreSQL server is started once per test session from the system's ``initdb``/``pg_ctl`` (``$LOA_PG_BIN``, else
Debian's ``/usr/lib/postgresql/<version>/bin``, package ``postgresql``), in a temporary directory, listening only on a
Unix socket in that directory, with trust authentication and durability switched off (a test server). Running as
root, it runs as the ``postgres`` system user (PostgreSQL refuses root). Each test gets its own database, cloned
from a migrated template. Without the binaries the PostgreSQL cases are skipped, or fail when ``CI`` is set.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import pytest

PG_PORT = 5432  # only names the socket file inside our private directory: no TCP port is opened
TEMPLATE = "loa_template"
_db_numbers = count(1)


@dataclass(frozen=True)
class PgServer:
    bin_dir: Path
    root: Path
    socket_dir: Path

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}&port={PG_PORT}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host=str(self.socket_dir), port=PG_PORT, user="postgres", dbname="postgres",
                             autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # test-only DDL built from fixed names


def _pg_bin_dir() -> Path | None:
    chosen = os.environ.get("LOA_PG_BIN")  # a specific installation's bin directory
    if chosen:
        ok = all(os.access(Path(chosen) / tool, os.X_OK) for tool in ("initdb", "pg_ctl"))
        return Path(chosen) if ok else None

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path))

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if os.access(Path(candidate) / "initdb", os.X_OK) and os.access(Path(candidate) / "pg_ctl", os.X_OK):
            return Path(candidate)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


def _unavailable(reason: str) -> None:
    message = f"PostgreSQL tests cannot run: {reason} (Debian: apt-get install postgresql)"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _run(argv: list[str], *, as_user: str | None, timeout: float, cwd: Path) -> None:
    if as_user is not None:
        argv = ["runuser", "-u", as_user, "--", *argv]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bin_dir = _pg_bin_dir()
    if bin_dir is None:
        _unavailable("initdb/pg_ctl not found (in $LOA_PG_BIN, /usr/lib/postgresql/*/bin or on PATH)")
    assert bin_dir is not None
    user = None
    root = Path(tempfile.mkdtemp(prefix="loa-pg-"))  # short path under /tmp: Unix socket paths are limited
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            _unavailable("running as root and there is no 'postgres' system user to run the server as")
        user = "postgres"
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data, sockets, log = root / "data", root / "sock", root / "server.log"
    started = False
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
              "--locale=C", "--no-sync", "--no-instructions"], as_user=user, timeout=120, cwd=root)
        _run(["mkdir", "-m", "700", str(sockets)], as_user=user, timeout=10, cwd=root)
        settings = {
            "listen_addresses": "''", "unix_socket_directories": f"'{sockets}'", "port": str(PG_PORT),
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "200",
            "shared_buffers": "'32MB'",
        }
        conf = "".join(f"{k} = {v}\n" for k, v in settings.items())
        _run(["sh", "-c", f"cat >> {data / 'postgresql.conf'} <<'EOF'\n{conf}EOF"], as_user=user, timeout=10, cwd=root)
        _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"],
             as_user=user, timeout=90, cwd=root)
        started = True
        yield PgServer(bin_dir, root, sockets)
    finally:
        if started:
            try:
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"],
                     as_user=user, timeout=45, cwd=root)
            except (RuntimeError, subprocess.TimeoutExpired):
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "15", "stop"],
                         as_user=user, timeout=30, cwd=root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> str:
    """A database at the newest schema revision, cloned for each test."""
    from loa.control_plane.db import open_engine
    from loa.control_plane.db.migrate import migrate

    pg_server.admin(f"CREATE DATABASE {TEMPLATE}")
    engine = open_engine(pg_server.url(TEMPLATE))
    try:
        migrate(engine)
    finally:
        engine.dispose()
    return TEMPLATE


@pytest.fixture
def pg_url(pg_server: PgServer, pg_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test."""
    name = f"loa_test_{os.getpid()}_{next(_db_numbers)}"
    pg_server.admin(f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    yield pg_server.url(name)
    pg_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_empty_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (no schema) for one test."""
    name = f"loa_empty_{os.getpid()}_{next(_db_numbers)}"
    pg_server.admin(f"CREATE DATABASE {name} TEMPLATE template0")
    yield pg_server.url(name)
    pg_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating each time would cost more than the test)."""
    from loa.control_plane.db import open_engine
    from loa.control_plane.db.migrate import migrate

    path = tmp_path_factory.mktemp("template") / "loa.db"
    engine = open_engine(f"sqlite:///{path}")
    try:
        migrate(engine)
    finally:
        engine.dispose()  # the last connection to close checkpoints the WAL into the file
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database on each backend, fresh for one test."""
    if request.param == "sqlite":
        target = tmp_path / "data" / "loa.db"
        target.parent.mkdir()
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (no schema yet) on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'loa.db'}"
    return str(request.getfixturevalue("pg_empty_url"))


# -- control plane and API fixtures -----------------------------------------------------------------------------


@pytest.fixture
def cp(db_url: str, tmp_path: Path) -> Iterator[object]:
    """A control plane on each backend, with cheap password hashing."""
    from loa.control_plane.settings import ControlPlane
    from loa.control_plane.testing import fast_settings

    plane = ControlPlane(fast_settings(tmp_path, db_url))
    yield plane
    plane.close()


@pytest.fixture
def seed(cp: object) -> object:
    from loa.control_plane.testing import Seed

    return Seed(cp)  # type: ignore[arg-type]


@pytest.fixture
def client(cp: object) -> Iterator[object]:
    from fastapi.testclient import TestClient

    from loa.control_plane.api import create_app

    app = create_app(control_plane=cp)  # type: ignore[arg-type]
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database shared by one test module, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('module') / 'loa.db'}"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    template: str = request.getfixturevalue("pg_template")
    name = f"loa_module_{os.getpid()}_{next(_db_numbers)}"
    server.admin(f"CREATE DATABASE {name} TEMPLATE {template}")
    yield server.url(name)
    server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
