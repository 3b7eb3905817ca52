"""A streamer built from a site file and run until a signal: what ``loa streamer --config site.toml`` does.

:func:`build_site` reads (or creates) the key files, opens the content store and makes the core;
:func:`run_site` opens the socket, starts the service, the programmes of ``[[broadcast]]`` and the DNS-SD
advertisement, and runs until SIGINT or SIGTERM, then shuts down cleanly (every device gets ``bye``).

Failure semantics: :class:`SiteError` (a ``ValueError``) with one line naming what failed: a key file, the
content directory, a programme file, the UDP address (in use, not of this host). Nothing is left running.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loa.codecs import CodecError
from loa.protocol.alert import PublicKey, key_id
from loa.protocol.session import device_id
from loa.streamer.config import BroadcastConfig, SiteConfig
from loa.streamer.content import ContentError, ContentStore
from loa.streamer.core import StreamerCore
from loa.streamer.discovery import Advertiser
from loa.streamer.keys import (
    KeyFileError,
    ed25519_public,
    load_or_create_authority_key,
    load_or_create_server_key,
    public_base64,
)
from loa.streamer.peers import PEERS_FILE
from loa.streamer.registry import Registry
from loa.streamer.service import (
    RECEIVE_BUFFER,
    StreamerService,
    epoch_for,
    open_udp_socket,
    receive_buffer_shortfall,
)
from loa.streamer.sources import Source, ToneSource, demo_source, file_source
from loa.streamer.status import BroadcastEnded, DeviceEnrolled, DeviceOffline, DeviceOnline, StreamerEvent

__all__ = ["Site", "SiteError", "build_site", "run_site"]


class SiteError(ValueError):
    """The site cannot start; the message is one line naming the cause."""


@dataclass
class Site:
    config: SiteConfig
    core: StreamerCore
    notes: list[str] = field(default_factory=list)  # what was created, for the operator
    signing_keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)  # lab authorities, by name


def build_site(config: SiteConfig, *, epoch_ns: int, send_clock: Callable[[], float] | None = None) -> Site:
    """Keys, content store, registry and core for ``config`` (SiteError if a key file or directory fails)."""
    notes: list[str] = []
    try:
        private, public, created = load_or_create_server_key(config.server.key_file)
        if created:
            notes.append(f"created the server key {config.server.key_file} (mode 0600)")
        authorities: dict[bytes, PublicKey] = {}
        signing: dict[str, Ed25519PrivateKey] = {}
        for authority in config.authorities:
            pub = authority.public_key
            if authority.private_key_file is not None:
                key, made = load_or_create_authority_key(authority.private_key_file)
                if pub is not None and pub != ed25519_public(key):
                    raise SiteError(f"{config.path}: [[authority]] {authority.name!r}: public_key does not match "
                                    f"{authority.private_key_file}")
                pub = ed25519_public(key)
                signing[authority.name] = key
                if made:
                    notes.append(f"created the lab authority key {authority.private_key_file}: "
                                 f"public key {public_base64(pub)}")
            assert pub is not None
            authorities[key_id(pub)] = pub
    except KeyFileError as exc:
        raise SiteError(str(exc)) from None
    try:
        content = None if config.server.content_dir is None else ContentStore(config.server.content_dir)
    except ContentError as exc:
        raise SiteError(str(exc)) from None
    core = StreamerCore(
        static_private=private, zones=config.zones, registry=Registry(config.zones.__contains__, config.devices),
        content=content, authorities=authorities, groups=config.groups, settings=config.settings,
        epoch_ns=epoch_ns, send_clock=send_clock, first_bid=int(time.time()) & 0xFFFFFFFF,
    )
    assert core.public_key == public
    return Site(config, core, notes, signing)


async def _source(service: StreamerService, programme: BroadcastConfig) -> Source:
    try:
        if programme.source == "tone":
            return ToneSource(programme.tone_hz)
        if programme.source == "demo":
            return demo_source(loop=programme.loop)
        if programme.source == "file":
            assert programme.file is not None
            return file_source(programme.file, loop=programme.loop)
        assert programme.live is not None
        return await service.open_live_source(*programme.live)
    except CodecError as exc:
        raise SiteError(f"[[broadcast]] {programme.name!r}: {exc}") from None
    except OSError as exc:
        raise SiteError(f"[[broadcast]] {programme.name!r}: cannot listen on {programme.live}: "
                        f"{exc.strerror or exc}") from None


async def run_site(config: SiteConfig, *, udp: tuple[str, int] | None = None, zeroconf: bool | None = None,
                   log: Callable[[str], None] = print,
                   ready: Callable[[StreamerService], object] | None = None) -> None:
    """Run the site until SIGINT/SIGTERM (or until ``ready``'s service is stopped). SiteError on start-up."""
    site = build_site(config, epoch_ns=epoch_for(anyio.current_time()), send_clock=anyio.current_time)
    host, port = udp or config.server.udp
    try:
        sock = open_udp_socket(host, port, multicast=bool(config.groups), receive_buffer_size=RECEIVE_BUFFER)
    except OSError as exc:
        raise SiteError(f"cannot listen on udp {host}:{port}: {exc.strerror or exc}") from None
    shortfall = receive_buffer_shortfall(sock, RECEIVE_BUFFER)
    if shortfall is not None:
        log(f"warning: {shortfall}")
    with sock:
        advertise = config.server.zeroconf if zeroconf is None else zeroconf
        bound_port = sock.getsockname()[1]
        advertiser = Advertiser(name=config.server.name, host=host, port=bound_port,
                                public_key=site.core.public_key) if advertise else None
        service = StreamerService(site.core, sock, advertiser=advertiser, log=log,
                                  on_event=lambda event: _log_event(site.core, event, log),
                                  peers_path=Path(config.server.key_file).with_name(PEERS_FILE))
        for note in site.notes:
            log(note)
        log(f"listening on udp {host}:{bound_port}; server public key {public_base64(site.core.public_key)}")
        log(f"{len(config.zones)} zones, {len(config.devices)} devices, {len(site.core.live.authorities)} "
            f"authorities")
        async with anyio.create_task_group() as tg:
            await tg.start(_serve, service, tg.cancel_scope)
            tg.start_soon(_stop_on_signal, service, log)
            try:
                for programme in config.broadcasts:
                    source = await _source(service, programme)
                    bid = service.start_broadcast(source, programme.zones, cls=programme.cls, lvl=programme.lvl,
                                                  policy=programme.policy, name=programme.name,
                                                  delay_ms=programme.delay_ms)
                    log(f"broadcast {bid} {programme.name!r} ({programme.source}) to {', '.join(programme.zones)}")
            except BaseException:
                tg.cancel_scope.cancel()
                raise
            if ready is not None:
                ready(service)


def _log_event(core: StreamerCore, event: StreamerEvent, log: Callable[[str], None]) -> None:
    """One line for the events an operator watching the console wants to see."""
    if isinstance(event, DeviceOnline | DeviceOffline | DeviceEnrolled):
        entry = core.registry.get(event.device)
        who = f"device {device_id(event.device)}" + (f" ({entry.name})" if entry is not None and entry.name else "")
        if isinstance(event, DeviceOnline):
            where = f"{event.address[0]}:{event.address[1]}" if event.address else "?"
            log(f"{who} online from {where}{' (restarted)' if event.restarted else ''}")
        elif isinstance(event, DeviceOffline):
            log(f"{who} offline: {event.reason}")
        else:
            log(f"{who} enrolled in zone {event.zone} by token")
    elif isinstance(event, BroadcastEnded):
        log(f"broadcast {event.bid} ended: {event.reason}")


async def _serve(service: StreamerService, scope: anyio.CancelScope, *,
                 task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Run the service; once it has shut down, end everything else that runs beside it."""
    await service.serve(task_status=task_status)
    scope.cancel()


async def _stop_on_signal(service: StreamerService, log: Callable[[str], None]) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log(f"{signal.Signals(signum).name}: saying bye to every device and stopping")
            service.stop()
            return
