"""`loa serve` (the control plane's HTTP API on the embedded defaults) and `loa audit verify`.

Both print one clear line and exit non-zero on failure; neither shows a traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from loa.control_plane.dataplane import DataPlaneSettings
    from loa.control_plane.settings import ControlPlane

__all__ = ["audit", "serve"]

DEFAULT_DATA_DIR = "loa-data"
DEFAULT_HTTP = "127.0.0.1:8080"
DEFAULT_UDP = "127.0.0.1:4433"


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


def _bind(text: str, option: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise click.BadParameter(f"expected HOST:PORT, got {text!r}", param_hint=option)
    return host, int(port)


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
              help=f"Where the embedded database lives (default: $LOA_DATA_DIR or ./{DEFAULT_DATA_DIR}).")
@click.option("--db", "url", metavar="URL", help="Database URL instead of the embedded one (postgresql://...).")
@click.option("--http", "http", default=DEFAULT_HTTP, show_default=True, metavar="HOST:PORT",
              help="Address of the HTTP API and event stream (port 0: any free port, printed).")
@click.option("--udp", "udp", default=DEFAULT_UDP, show_default=True, metavar="HOST:PORT",
              help="Address devices reach the streamer on (0.0.0.0:4433 to serve the LAN).")
@click.option("--zeroconf", is_flag=True, help="Advertise the streamer on the LAN by DNS-SD (_loa._udp).")
@click.option("--multicast", "multicast", multiple=True, metavar="CODE=ADDR:PORT",
              help="Give zone CODE (in the database) an IP multicast group, e.g. 48=239.255.48.1:5004: its live "
                   "streams and alerts go once per packet to the group, for devices that can join it. Repeatable.")
@click.option("--backend", type=click.Choice(["trio", "asyncio"]), default="trio", show_default=True,
              help="Event loop the server runs on.")
def serve(*, data_dir: Path | None, url: str | None, http: str, udp: str, zeroconf: bool,
          multicast: tuple[str, ...], backend: str) -> None:
    """Run loa: the control plane's HTTP API, the scheduler and the streamer, in one process.

    On first start it creates the database, the first administrator (printing a one-time password), the
    server key devices are provisioned with, and the alert authority key. A --multicast zone must exist
    already: import the zones, then restart with it."""
    from loa.control_plane import users
    from loa.control_plane.authority import AuthorityError
    from loa.control_plane.dataplane import DataPlane, DataPlaneSettings
    from loa.control_plane.db import StorageError
    from loa.control_plane.process_memory import limit_arenas
    from loa.control_plane.settings import ControlPlane, Settings
    from loa.streamer.content import ContentError
    from loa.streamer.keys import KeyFileError, public_base64

    limit_arenas()  # before any worker thread exists
    host, port = _bind(http, "--http")
    udp_host, udp_port = _bind(udp, "--udp")
    try:
        settings = DataPlaneSettings(udp=(udp_host, udp_port), zeroconf=zeroconf, groups=_groups(multicast))
    except ValueError as exc:
        raise click.ClickException(f"--multicast: {exc}") from None
    directory = data_dir or Path(os.environ.get("LOA_DATA_DIR", DEFAULT_DATA_DIR))
    _require_writable(directory)
    listener = _listen(host, port)
    try:
        cp = ControlPlane(Settings(data_dir=directory, database_url=url))
    except (StorageError, AuthorityError) as exc:
        listener.close()
        raise click.ClickException(str(exc)) from None
    try:
        try:
            _check_group_zones(cp, settings)
            dataplane = DataPlane(cp, settings)
            sock = dataplane.open_socket()
        except (KeyFileError, ContentError) as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(f"cannot serve devices on udp {udp}: {exc.strerror or exc}") from None
        first = users.ensure_first_admin(cp.db, cp.passwords)
        if first is not None:
            click.echo("loa: created the first administrator; its password is shown only now:")
            click.echo(f"loa:     username: {first[0]}")
            click.echo(f"loa:     password: {first[1]}")
            click.echo("loa: log in and change it (POST /api/v1/auth/password, or `loa admin password`)")
        bound = listener.getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        udp_bound = sock.getsockname()
        lines = [f"loa: control plane API on http://{shown}:{bound[1]} (database: {cp.db.dialect})",
                 (f"loa: devices on udp {udp_bound[0]}:{udp_bound[1]}; server public key "
                  f"{public_base64(dataplane.public_key)}"),
                 f"loa: alert authority public key {cp.authority.public_base64}"]
        lines += [f"loa: zone {code} streams to multicast group {group}" for code, group in settings.groups.items()]
        sys.stdout.flush()

        def ready() -> None:  # once the streamer answers devices: whoever waits for these lines may go on
            for line in lines:
                click.echo(line, err=True)

        with sock:
            _run(cp, listener, backend, dataplane, sock, ready=ready)
    finally:
        listener.close()
        cp.close()


def _groups(values: tuple[str, ...]) -> dict[str, str]:
    """``--multicast CODE=ADDR:PORT`` options as zone code -> group; ClickException for bad syntax, an address
    that is not multicast, or a zone given twice. The same group for two zones is accepted, as `loa streamer`
    accepts it (see :mod:`loa.control_plane.dataplane`)."""
    from loa.streamer.core import parse_group

    groups: dict[str, str] = {}
    for value in values:
        code, sep, group = value.partition("=")
        if not sep or not code:
            raise click.ClickException(f"--multicast: expected CODE=ADDR:PORT (e.g. 48=239.255.48.1:5004), "
                                       f"got {value!r}")
        try:
            parse_group(group)
        except ValueError as exc:
            raise click.ClickException(f"--multicast: zone {code!r}: {exc}") from None
        if code in groups:
            raise click.ClickException(f"--multicast: zone {code!r} is given twice ({groups[code]} and {group})")
        groups[code] = group
    return groups


def _check_group_zones(cp: ControlPlane, settings: DataPlaneSettings) -> None:
    """ClickException when a ``--multicast`` zone is not in the database (or the database cannot be read)."""
    from sqlalchemy.exc import SQLAlchemyError

    from loa.control_plane.dataplane import unknown_zones

    try:
        unknown = unknown_zones(cp.db, settings.groups)
    except SQLAlchemyError as exc:
        raise click.ClickException(f"cannot read the zones for --multicast: {type(exc).__name__}") from None
    if unknown:
        listed = " or ".join(repr(code) for code in unknown)
        raise click.ClickException(f"--multicast: the database has no zone {listed} (create zones with "
                                   "loa admin zones import first)")


def _require_writable(directory: Path) -> None:
    """Refuse to start on a data directory where no file can be created (a read-only mount, permissions): the
    database, uploads and keys live there, and a server that cannot record an alert must not pretend to run. (A
    full disk is not refused here: reads go on, and each write says 507 until space returns.)"""
    if not directory.exists():
        return  # created on first start; a failure to create it is reported there
    probe = directory / f".loa-write-check-{os.getpid()}"
    try:
        probe.touch()
    except OSError as exc:
        raise click.ClickException(f"the data directory {str(directory)!r} is not writable ({exc.strerror or exc}): "
                                   "loa serve needs to write its database, content and keys there") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


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


def _run(cp: object, listener: socket.socket, backend: str, dataplane: object, sock: socket.socket, *,
         ready: Callable[[], None]) -> None:
    import anyio
    from hypercorn.config import Config

    from loa.control_plane.api import create_app
    from loa.control_plane.content import ContentStore
    from loa.control_plane.dataplane import DataPlane
    from loa.control_plane.process_memory import give_back_loop
    from loa.control_plane.scheduler import Scheduler
    from loa.control_plane.settings import ControlPlane

    assert isinstance(cp, ControlPlane)
    assert isinstance(dataplane, DataPlane)
    app = create_app(control_plane=cp)
    app.state.dataplane = dataplane
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]  # hypercorn takes the socket over
    config.graceful_timeout = 5.0
    config.accesslog = None
    store = ContentStore(cp.settings.data_dir / "content")
    swept = store.sweep()
    if swept:
        click.echo(f"loa: removed {swept} unfinished upload file(s) left by a server that stopped mid-upload", err=True)
    scheduler = Scheduler(cp.db, store, dataplane)

    async def shutdown_trigger() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                dataplane.stop()  # bye to every device; the API stops beside it
                return

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(dataplane.run, sock)
            ready()  # the API's socket listens already: a request made now waits in its backlog
            scheduling = anyio.CancelScope()

            async def run_scheduler() -> None:
                with scheduling:
                    await scheduler.run()

            tg.start_soon(run_scheduler)
            giving_back = anyio.CancelScope()

            async def run_give_back() -> None:
                with giving_back:
                    await give_back_loop()

            tg.start_soon(run_give_back)
            if backend == "trio":
                from hypercorn.trio import serve as serve_trio

                await serve_trio(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
            else:
                from hypercorn.asyncio import serve as serve_asyncio

                await serve_asyncio(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
            scheduling.cancel()
            giving_back.cancel()
            dataplane.stop()  # devices are told bye (already asked for if a signal ended the API)
            with anyio.move_on_after(5.0) as waited:
                await dataplane.wait_stopped()
            if waited.cancelled_caught:
                tg.cancel_scope.cancel()

    anyio.run(main, backend=backend, backend_options=_backend_options(backend))


def _backend_options(backend: str) -> dict[str, object]:
    import importlib.util

    if backend == "asyncio" and importlib.util.find_spec("uvloop") is not None:
        return {"use_uvloop": True}
    return {}
