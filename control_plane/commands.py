"""`loa serve` (the control plane's HTTP API on the embedded defaults) and `loa audit verify`.

Both print one clear line and exit non-zero on failure; neither shows a traceback.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import click

__all__ = ["audit", "serve"]

DEFAULT_DATA_DIR = "loa-data"
DEFAULT_HTTP = "127.0.0.1:8080"


def _database_url(data_dir: Path | None, url: str | None, *, must_exist: bool) -> str:
    from loa.control_plane.db import default_url

    if url:
        return url
    directory = data_dir or Path(os.environ.get("LOA_DATA_DIR", DEFAULT_DATA_DIR))
    if must_exist and not (directory / "loa.db").is_file():
        raise click.ClickException(f"no database in {str(directory)!r} (expected {directory / 'loa.db'})")
    return default_url(directory)


def _head(value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    seq, sep, digest = value.partition(":")
    if not sep or not seq.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise click.BadParameter("expected SEQ:HASH as printed by a previous verify", param_hint="--expect-head")
    return int(seq), digest


@click.group()
def audit() -> None:
    """The audit log of every change: verify its hash chain."""


@audit.command()
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
              help=f"Data directory holding loa.db (default: $LOA_DATA_DIR or ./{DEFAULT_DATA_DIR}).")
@click.option("--db", "url", metavar="URL", help="Database URL instead (sqlite:///PATH or postgresql://...).")
@click.option("--expect-head", metavar="SEQ:HASH",
              help="A head recorded earlier: also fail if the chain no longer passes through it.")
def verify(data_dir: Path | None, url: str | None, expect_head: str | None) -> None:
    """Check the audit log's hash chain; exit 0 if intact, 1 naming the first bad entry."""
    from sqlalchemy.exc import SQLAlchemyError

    from loa.control_plane import audit as audit_log
    from loa.control_plane.db import Database, StorageError

    expect = _head(expect_head)
    try:
        db = Database.open(_database_url(data_dir, url, must_exist=True), migrate_schema=False)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        with db.read() as conn:
            report = audit_log.verify(conn, expect=expect)
    except SQLAlchemyError as exc:
        raise click.ClickException(f"cannot read the audit log: {type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0]}") from None
    finally:
        db.close()
    click.echo(report.summary())
    if not report.ok:
        sys.exit(1)


def _bind(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise click.BadParameter(f"expected HOST:PORT, got {text!r}", param_hint="--http")
    return host, int(port)


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
              help=f"Where the embedded database lives (default: $LOA_DATA_DIR or ./{DEFAULT_DATA_DIR}).")
@click.option("--db", "url", metavar="URL", help="Database URL instead of the embedded one (postgresql://...).")
@click.option("--http", "http", default=DEFAULT_HTTP, show_default=True, metavar="HOST:PORT",
              help="Address of the HTTP API and event stream (port 0: any free port, printed).")
@click.option("--backend", type=click.Choice(["trio", "asyncio"]), default="trio", show_default=True,
              help="Event loop the server runs on.")
def serve(data_dir: Path | None, url: str | None, http: str, backend: str) -> None:
    """Run the control plane: migrate the database, create the first admin on first start, serve the API."""
    from loa.control_plane import users
    from loa.control_plane.db import StorageError
    from loa.control_plane.settings import ControlPlane, Settings

    host, port = _bind(http)
    directory = data_dir or Path(os.environ.get("LOA_DATA_DIR", DEFAULT_DATA_DIR))
    listener = _listen(host, port)
    try:
        cp = ControlPlane(Settings(data_dir=directory, database_url=url))
    except StorageError as exc:
        listener.close()
        raise click.ClickException(str(exc)) from None
    try:
        first = users.ensure_first_admin(cp.db, cp.passwords)
        if first is not None:
            click.echo("loa: created the first administrator; its password is shown only now:")
            click.echo(f"loa:     username: {first[0]}")
            click.echo(f"loa:     password: {first[1]}")
            click.echo("loa: log in and change it (POST /api/v1/auth/password, or `loa admin password`)")
        bound = listener.getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        click.echo(f"loa: control plane API on http://{shown}:{bound[1]} (database: {cp.db.dialect})", err=True)
        sys.stdout.flush()
        _run(cp, listener, backend)
    finally:
        listener.close()
        cp.close()


def _listen(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound here so that a busy port is one clear error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc}") from None
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(1024)
    except OSError as exc:
        listener.close()
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    return listener


def _run(cp: object, listener: socket.socket, backend: str) -> None:
    import anyio
    from hypercorn.config import Config

    from loa.control_plane.api import create_app
    from loa.control_plane.settings import ControlPlane

    assert isinstance(cp, ControlPlane)
    app = create_app(control_plane=cp)
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]  # hypercorn takes the socket over
    config.graceful_timeout = 5.0
    config.accesslog = None

    async def shutdown_trigger() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                return

    async def main() -> None:
        if backend == "trio":
            from hypercorn.trio import serve as serve_trio

            await serve_trio(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
        else:
            from hypercorn.asyncio import serve as serve_asyncio

            await serve_asyncio(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]

    anyio.run(main, backend=backend)
