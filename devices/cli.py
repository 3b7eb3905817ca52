"""`loa device` (one reference speaker cluster) and `loa fleet` (thousands of simulated ones in one process).

Both print one clear line for every mistake a user can make (bad address, bad key, unreadable key file, too
few file descriptors) and never a traceback. `loa device` creates its identity key on first start and prints
the public key so that an installer can enrol it; `loa fleet` writes ``devices.toml`` with every simulated
device's key beside the keys.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import click

from loa.devices.content import ContentStore, DirectoryStore, MemoryStore, StorageError
from loa.devices.core import Address, SpeakerCore
from loa.devices.identity import IdentityError, encode_key, load_or_create_key, parse_key, public_key_of
from loa.devices.sinks import CounterSink, FrameSink, SinkError, WavRecorder, open_sound_card
from loa.protocol.keytext import is_weak_public_key

__all__ = ["device", "fleet", "parse_server"]

DEFAULT_PORT = 4433
BACKENDS = click.Choice(["trio", "asyncio"])


def parse_server(text: str, *, any_port: bool = False) -> Address:
    """``HOST``, ``HOST:PORT`` or ``[V6]:PORT`` -> a numeric address; ``click.ClickException`` if bad. With
    ``any_port``, port 0 (for a listening address: any free port) is allowed."""
    host, sep, port_text = text.rpartition(":")
    if not sep or (host.count(":") > 1 and not host.startswith("[")):
        host, port_text = text, str(DEFAULT_PORT)
    host = host.strip("[]")
    low = 0 if any_port else 1
    if not host or not port_text.isdigit() or not low <= int(port_text) <= 65535:
        raise click.ClickException(f"bad server address {text!r}: expected HOST:PORT with a port {low}-65535")
    try:
        infos = socket.getaddrinfo(host, int(port_text), type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise click.ClickException(f"bad server address {text!r}: cannot resolve {host!r} ({exc})") from None
    sockaddr = infos[0][4]
    return (str(sockaddr[0]).split("%")[0], int(sockaddr[1]))


def _key(text: str, what: str) -> bytes:
    try:
        return parse_key(text, what)
    except IdentityError as exc:
        raise click.ClickException(str(exc)) from None


def _server_key(text: str) -> bytes:
    key = _key(text, "--server-key")
    if is_weak_public_key(key):
        raise click.ClickException("--server-key is a weak (small-order) X25519 key: not a real server's key")
    return key


def _authority_keys(texts: tuple[str, ...]) -> list[bytes]:
    return [_key(text, f"authority key {text!r}") for text in texts]


def _discover(server_key: bytes) -> Address:
    from loa.devices.discovery import DiscoveryError, discover_server

    try:
        return discover_server(server_key)
    except DiscoveryError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("device")
@click.option("--server", metavar="HOST:PORT", help="The loa server (port 4433 if omitted).")
@click.option("--server-key", required=True, metavar="KEY", help="The server's public key (base64 or hex).")
@click.option("--key-file", default="loa-device.key", show_default=True, type=click.Path(dir_okay=False),
              help="This device's private key; created (mode 0600) on first start.")
@click.option("--authority-key", "authority", multiple=True, metavar="KEY",
              help="An alert authority's Ed25519 public key (base64 or hex); repeat for several.")
@click.option("--record", type=click.Path(dir_okay=False), help="Write what the speaker plays to this WAV file.")
@click.option("--sound-card", is_flag=True, help="Play on the sound card (needs the optional sounddevice package).")
@click.option("--content-dir", type=click.Path(file_okay=False), help="Keep prefetched programmes here.")
@click.option("--zeroconf", is_flag=True, help="Find the server by DNS-SD (_loa._udp), checking its key.")
@click.option("--backend", type=BACKENDS, default="trio", show_default=True)
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Stop after this many seconds.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Local UDP port (default: any).")
@click.option("--token", help="One-time enrolment token.")
@click.option("--test-mode", is_flag=True, help="Conformance test mode: report every frame played.")
def device(
    *,
    server: str | None,
    server_key: str,
    key_file: str,
    authority: tuple[str, ...],
    record: str | None,
    sound_card: bool,
    content_dir: str | None,
    zeroconf: bool,
    backend: str,
    duration: float | None,
    port: int,
    token: str | None,
    test_mode: bool,
) -> None:
    """Run a reference speaker cluster against a loa server."""
    from loa.devices.runner import DeviceRunner, open_udp_socket, run

    server_public = _server_key(server_key)
    authorities = _authority_keys(authority)
    if record and sound_card:
        raise click.ClickException("give either --record or --sound-card, not both")
    if server is None and not zeroconf:
        raise click.ClickException("give --server HOST:PORT, or --zeroconf to find it on the LAN")
    try:
        private, created = load_or_create_key(key_file)
    except IdentityError as exc:
        raise click.ClickException(str(exc)) from None
    public = public_key_of(private)
    from loa.protocol.session import device_id

    click.echo(f"device public key: {encode_key(public)}")
    click.echo(f"device id: {device_id(public)}{' (new key written to ' + key_file + ')' if created else ''}")
    address = _discover(server_public) if zeroconf and server is None else parse_server(server or "")
    try:
        store: ContentStore = DirectoryStore(content_dir) if content_dir else MemoryStore()
        sink: FrameSink = WavRecorder(record) if record else open_sound_card() if sound_card else CounterSink()
    except (SinkError, StorageError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        sock = open_udp_socket(address, port=port)
    except OSError as exc:
        raise click.ClickException(f"cannot open a UDP socket on port {port}: {exc.strerror or exc}") from None
    core = SpeakerCore(
        static_private=private, server_public=server_public, authority_keys=authorities, server_address=address,
        sink=sink, store=store, token=token, test_mode=test_mode, lead=0.04 if sound_card else 0.0,
        timestamp_source=lambda _now: time.time_ns(),
    )
    runner = DeviceRunner(core, address, sock=sock)
    click.echo(f"loa device: {runner.local_address[0]}:{runner.local_address[1]} -> {address[0]}:{address[1]} "
               f"({backend})", err=True)
    interrupted = False
    try:
        run(lambda: runner.run(duration=duration), backend)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        try:
            sink.close()
        except SinkError as exc:
            click.echo(f"loa device: {exc}", err=True)
    stats = core.statistics()
    click.echo(
        f"loa device: {'interrupted; ' if interrupted else ''}connected={stats.connected} frames={stats.frames} "
        f"exact={stats.played} fec={stats.fec} plc={stats.plc} late={stats.late} received={stats.received} "
        f"alerts={stats.alerts_accepted} drops={sum(stats.drops.values())}", err=True,
    )


@click.command("fleet")
@click.option("--count", type=click.IntRange(1, 100_000), required=True, help="Number of simulated devices.")
@click.option("--server", required=True, metavar="HOST:PORT", help="The loa server (port 4433 if omitted).")
@click.option("--server-key", required=True, metavar="KEY", help="The server's public key (base64 or hex).")
@click.option("--keys-dir", required=True, type=click.Path(file_okay=False),
              help="Device keys live here (created on first use), with devices.toml listing them for enrolment.")
@click.option("--authority-key", "authority", multiple=True, metavar="KEY", help="Alert authority public key.")
@click.option("--full", type=click.IntRange(min=0), default=0, show_default=True,
              help="How many devices decode (and record with --record-dir); the rest only count.")
@click.option("--offset-max", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Clock offsets are uniform in +-S seconds.")
@click.option("--drift-max", type=click.FloatRange(0, 500), default=100.0, show_default=True,
              help="Clock drifts are uniform in +-PPM.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Stop after this many seconds.")
@click.option("--record-dir", type=click.Path(file_okay=False), help="WAV recordings of the --full devices.")
@click.option("--backend", type=BACKENDS, default="trio", show_default=True)
@click.option("--bind", "bind_host", default=None, metavar="ADDR", help="Local address of the device sockets.")
@click.option("--start-rate", type=click.FloatRange(min=1), default=200.0, show_default=True,
              help="Devices started per second.")
@click.option("--status-every", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds between status lines.")
@click.option("--zone", metavar="CODE", help="Zone written into devices.toml (then it is a site file's devices).")
def fleet(
    *,
    count: int,
    server: str,
    server_key: str,
    keys_dir: str,
    authority: tuple[str, ...],
    full: int,
    offset_max: float,
    drift_max: float,
    seed: int,
    duration: float | None,
    record_dir: str | None,
    backend: str,
    bind_host: str | None,
    start_rate: float,
    status_every: float,
    zone: str | None,
) -> None:
    """Simulate COUNT devices in one process, each with its own key, session, socket and clock."""
    from loa.devices.fleet import FleetError, build_fleet, fleet_summary, load_fleet_keys, raise_open_file_limit
    from loa.devices.fleet_host import FleetHost
    from loa.devices.runner import run

    server_public = _server_key(server_key)
    authorities = _authority_keys(authority)
    address = parse_server(server)
    if zone is not None and not re.fullmatch(r"[^\x00-\x1f\"\\]{1,64}", zone):
        raise click.ClickException(f"--zone {zone!r}: 1-64 characters, no quotes, backslashes or controls")
    if full > count:
        raise click.ClickException(f"--full {full} is more than --count {count}")
    try:
        raise_open_file_limit(count)
        keys = load_fleet_keys(keys_dir, count, zone=zone)
    except (FleetError, IdentityError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"loa fleet: {count} device keys in {keys_dir}; enrol them from {Path(keys_dir) / 'devices.toml'}",
               err=True)
    try:
        devices = build_fleet(keys, server_public=server_public, server_address=address, authority_keys=authorities,
                              full=full, offset_max=offset_max, drift_max=drift_max, seed=seed,
                              record_dir=record_dir)
        host = FleetHost(devices, address, bind_host=bind_host, start_rate=start_rate)
    except (OSError, SinkError) as exc:
        raise click.ClickException(f"cannot set up the fleet: {getattr(exc, 'strerror', None) or exc}") from None
    cores = [core for core, _ in devices]
    begin = time.monotonic()

    def status(h: FleetHost) -> None:
        line = fleet_summary(cores, h.started).line()
        click.echo(f"[{time.monotonic() - begin:7.1f} s] {line}", err=True)

    interrupted = False
    try:
        run(lambda: host.run(duration=duration, tick=status_every, on_tick=status), backend)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for core in cores:
            try:
                core.sink.close()
            except SinkError as exc:
                click.echo(f"loa fleet: {exc}", err=True)
    summary = fleet_summary(cores, host.started)
    click.echo(f"loa fleet: {'interrupted; ' if interrupted else ''}{time.monotonic() - begin:.1f} s, "
               f"{summary.line()}; sent {host.stats.sent}, received {host.stats.received}, "
               f"send errors {host.stats.send_errors}; drops: {summary.drop_line()}")
