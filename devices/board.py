"""The reference e-board (PROTOCOL.md sections 4.4 ``board``/``board_clear``, 4.9 images, 6.1 rank, 6.4 alerts).

Three parts, the first two sans-I/O:

* :class:`BoardDisplay` decides what is on screen at local time ``now`` and server time ``server_now``: a
  verified, playable emergency alert first, above every item, until it is cancelled or expires (several: the
  highest rank, rotating among equals); else the item of highest rank (``cls``, ``lvl``), rotating among items of
  equal rank every ``rotate_s`` seconds in item order; an item whose ``until`` has passed on server time is not
  shown (nor is an item with an ``until`` while the device does not know server time yet); nothing: a blank
  screen.
* :class:`BoardCore` is the device: a :class:`~loa.devices.core.SpeakerCore` that says ``kind: "board"`` with
  caps ``["text", "image"]``. Items live in ``settings.boards`` (they persist across reboots like every
  setting); alerts are verified exactly as a speaker does (section 6.4) but never become broadcasts: an
  accepted one is shown until ``alert_cancel`` or its ``expires``. ``screen`` is what is shown now, and
  ``on_screen`` is called whenever it changes; ``next_timeout()`` includes the next rotation and ``until``.
* :class:`BoardOutput` and the ``loa board`` command: the I/O. ``loa board run`` runs the board against a
  server (the options of ``loa device``) and rewrites a PNG atomically each time the screen changes;
  ``loa board render`` draws one screen offline (the same pixels as the running board for the same content).

Failure semantics: the core never raises for any input (refused alerts are counted by error name as on a
speaker). A PNG that cannot be written while running is reported on stderr and tried again at the next change;
at start it is one clear error line.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from loa.devices.cli import BACKENDS, _authority_keys, _discover, _key, parse_server
from loa.devices.content import ContentStore, DirectoryStore, MemoryStore, StorageError
from loa.devices.core import SpeakerCore
from loa.devices.identity import IdentityError, encode_key, load_or_create_key, public_key_of
from loa.devices.render import DEFAULT_FONT, FontError, Renderer, Screen, parse_size, write_png
from loa.protocol.alert import Alert
from loa.protocol.control import Board, SignedAlert
from loa.protocol.errors import RemoteProtocolError

__all__ = ["BOARD_CAPS", "DEFAULT_ROTATE_S", "BoardCore", "BoardDisplay", "BoardOutput", "board"]

BOARD_CAPS = ("text", "image")
BOARD_MODEL = "loa reference e-board"
DEFAULT_ROTATE_S = 10.0
MAX_TEXT_BYTES = 512  # PROTOCOL.md: board `text` and alert `text`


class BoardDisplay:
    """Which item or alert is on screen (see the module docstring). Rotation keeps its own state: call
    :meth:`update` whenever the inputs change and at :meth:`next_change`."""

    def __init__(self, rotate_s: float = DEFAULT_ROTATE_S) -> None:
        if not rotate_s > 0:
            raise ValueError(f"rotate_s must be positive, not {rotate_s}")
        self.rotate_s = rotate_s
        self._current: tuple[str, int] | None = None
        self._since = 0.0
        self._group = 0

    @staticmethod
    def candidates(items: Mapping[int, Board], alerts: Mapping[int, Alert], server_now: int | None) -> list[Screen]:
        """The screens of highest rank that may be shown now, in rotation order (item number or alert ``bid``)."""
        entries = [Screen("alert", bid, a.cls, a.lvl, a.text, status=a.status) for bid, a in alerts.items()
                   if server_now is None or a.expires > server_now]
        if not entries:
            entries = [Screen("item", n, b.cls, b.lvl, b.text, b.cid) for n, b in items.items()
                       if b.until is None or (server_now is not None and b.until > server_now)]
        if not entries:
            return []
        top = max((s.cls, s.lvl) for s in entries)
        return sorted((s for s in entries if (s.cls, s.lvl) == top), key=lambda s: s.key or 0)

    def update(self, items: Mapping[int, Board], alerts: Mapping[int, Alert], now: float,
               server_now: int | None) -> Screen:
        """What is shown at local time ``now`` (``server_now``: server time, None while unknown)."""
        group = self.candidates(items, alerts, server_now)
        previous, self._group = self._group, len(group)
        if not group:
            self._current = None
            return Screen()
        ids = [(s.kind, s.key or 0) for s in group]
        if self._current not in ids:
            self._current, self._since = ids[0], now
        elif len(group) > 1 and previous <= 1:
            self._since = now  # a second item of the same rank: the one shown stays a full period
        elif len(group) > 1 and now >= self._since + self.rotate_s:
            steps = max(1, int((now - self._since) // self.rotate_s))
            self._current = ids[(ids.index(self._current) + steps) % len(ids)]
            self._since += steps * self.rotate_s
        return group[ids.index(self._current)]

    def next_change(self) -> float | None:
        """The local time of the next rotation (None: nothing rotates)."""
        return self._since + self.rotate_s if self._group > 1 else None


class BoardCore(SpeakerCore):
    """The reference e-board (see the module docstring); options as :class:`SpeakerCore`, plus ``rotate_s``."""

    def __init__(self, *, rotate_s: float = DEFAULT_ROTATE_S, caps: tuple[str, ...] = BOARD_CAPS,
                 model: str = BOARD_MODEL, **options: Any) -> None:
        self.display = BoardDisplay(rotate_s)
        self.shown_alerts: dict[int, Alert] = {}  # accepted, playable alerts by bid, until cancelled or expired
        self.screen = Screen()
        self.screen_changes = 0
        self.on_screen: Callable[[Screen], None] | None = None
        super().__init__(kind="board", caps=caps, model=model, **options)

    def start(self, now: float) -> None:
        super().start(now)
        self._update_screen(now)

    def _after(self, now: float) -> None:
        super()._after(now)
        self._update_screen(now)

    def _compute_timeout(self) -> float | None:
        times = [super()._compute_timeout(), self.display.next_change()]
        until = [b.until for b in self.settings.boards.values() if b.until is not None]
        if until:
            times.append(self._deadline(min(until)))
        return min((t for t in times if t is not None), default=None)

    def _on_alert(self, message: SignedAlert, now: float, *, beacon: bool = False) -> None:
        """Verify as a speaker does (section 6.4); an accepted, playable alert is shown, never played."""
        server_now = self.clock.to_server(now)
        if server_now is None or not self.settings.zones:
            # checked as soon as the clock estimate is ready and the first `config` gave the zone path (6.4)
            self._deferred_alerts.append((message, beacon))
            return
        if self.alerts.other_copy(message.body, beacon=beacon):
            return  # its beacon was accepted (section 6.4.2)
        try:
            accepted = self.alerts.accept(message.body, message.sig, now=server_now, zones=self.settings.zones,
                                          exercise=bool(self.settings.get("exercise")), beacon=beacon)
        except RemoteProtocolError as exc:
            self.drop_counts[type(exc).__name__] += 1
            self.alerts_refused[type(exc).__name__] += 1
            return
        self.alerts_accepted += 1
        if accepted.playable:
            self.shown_alerts[accepted.alert.bid] = accepted.alert

    def _update_screen(self, now: float) -> None:
        server_now = self.clock.to_server(now)
        if server_now is not None:
            for item, held in list(self.settings.boards.items()):
                if held.until is not None and held.until <= server_now:
                    del self.settings.boards[item]  # shown until `until`: then it is gone
        # a verified cancel, and the alert's expiry, take it out of the alert book: then it is no longer shown
        self.shown_alerts = {bid: a for bid, a in self.shown_alerts.items() if self.alerts.for_bid(bid) is not None}
        screen = self.display.update(self.settings.boards, self.shown_alerts, now, server_now)
        if screen.cid is not None:
            screen = dataclasses.replace(screen, image="ready" if self.store.has(screen.cid) else "missing")
        if screen != self.screen:
            self.screen = screen
            self.screen_changes += 1
            if self.on_screen is not None:
                self.on_screen(screen)

    def image_bytes(self, screen: Screen) -> bytes | None:
        """The stored bytes of ``screen``'s image (None: no image, not stored, or unreadable)."""
        if screen.cid is None or screen.image != "ready":
            return None
        try:
            return self.store.read(screen.cid)
        except (StorageError, OSError, KeyError):
            return None


def _describe(screen: Screen) -> str:
    if screen.kind == "blank":
        return "blank"
    what = "alert bid" if screen.kind == "alert" else "item"
    return f"{what} {screen.key} (cls {screen.cls}, lvl {screen.lvl})"


class BoardOutput:
    """Writes ``core.screen`` to ``path`` as a PNG (atomically) whenever it changes; :meth:`run` on anyio."""

    def __init__(self, core: BoardCore, renderer: Renderer, path: str | Path,
                 log: Callable[[str], None] | None = None) -> None:
        self.core, self.renderer, self.path = core, renderer, Path(path)
        self.written: Screen | None = None
        self.writes = 0
        self.errors = 0
        self._log = log or (lambda _line: None)
        self._wake: Any = None
        core.on_screen = self._changed

    def _changed(self, _screen: Screen) -> None:
        if self._wake is not None:
            self._wake.set()

    def _write(self, screen: Screen, image: bytes | None) -> None:
        write_png(self.path, self.renderer.png(screen, image))

    def write_now(self) -> None:
        """Render and write the current screen now (OSError if the file cannot be written)."""
        screen = self.core.screen
        self._write(screen, self.core.image_bytes(screen))
        self.written = screen
        self.writes += 1

    async def run(self) -> None:
        """Until cancelled: render in a worker thread after every change (the latest screen wins)."""
        import anyio

        while True:
            self._wake = anyio.Event()
            screen = self.core.screen
            if screen == self.written:
                await self._wake.wait()
                continue
            self.written = screen
            try:
                await anyio.to_thread.run_sync(self._write, screen, self.core.image_bytes(screen))
            except OSError as exc:
                self.errors += 1
                self._log(f"cannot write {self.path}: {exc.strerror or exc}")
                continue
            self.writes += 1
            self._log(f"showing {_describe(screen)}")


async def run_board(runner: Any, output: BoardOutput, duration: float | None = None) -> None:
    """Run a :class:`~loa.devices.runner.DeviceRunner` of a :class:`BoardCore` and its output together."""
    import anyio

    async with anyio.create_task_group() as tg:
        tg.start_soon(output.run)
        await runner.run(duration=duration)
        tg.cancel_scope.cancel()


# -- command line ----------------------------------------------------------------------------------------------


def _size(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, int]:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.ClickException(f"--size: {exc}") from None


def _renderer(size: tuple[int, int], font: str) -> Renderer:
    try:
        return Renderer(size, font)
    except FontError as exc:
        raise click.ClickException(str(exc)) from None


def _write_first(output: BoardOutput) -> None:
    try:
        output.write_now()
    except OSError as exc:
        raise click.ClickException(f"cannot write --out {output.path}: {exc.strerror or exc}") from None


_SIZE = click.option("--size", default="1280x720", show_default=True, callback=_size, metavar="WxH",
                     help="Panel size in pixels (64-8192 each).")
_FONT = click.option("--font", default=DEFAULT_FONT, show_default=True, metavar="FILE",
                     help="TrueType font with Vietnamese glyphs (Debian: fonts-dejavu-core).")


@click.group("board")
def board() -> None:
    """The reference e-board: run it against a server, or render one screen offline."""


@board.command("run")
@click.option("--server", metavar="HOST:PORT", help="The loa server (port 4433 if omitted).")
@click.option("--server-key", required=True, metavar="KEY", help="The server's public key (base64 or hex).")
@click.option("--key-file", default="loa-board.key", show_default=True, type=click.Path(dir_okay=False),
              help="This board's private key; created (mode 0600) on first start.")
@click.option("--authority-key", "authority", multiple=True, metavar="KEY",
              help="An alert authority's Ed25519 public key (base64 or hex); repeat for several.")
@click.option("--content-dir", type=click.Path(file_okay=False), help="Keep prefetched images here.")
@click.option("--zeroconf", is_flag=True, help="Find the server by DNS-SD (_loa._udp), checking its key.")
@click.option("--backend", type=BACKENDS, default="trio", show_default=True)
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Stop after this many seconds.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Local UDP port (default: any).")
@click.option("--token", help="One-time enrolment token.")
@click.option("--out", default="board.png", show_default=True, type=click.Path(dir_okay=False),
              help="The PNG rewritten (atomically) each time what is shown changes.")
@_SIZE
@_FONT
@click.option("--rotate", type=click.FloatRange(min=0.5), default=DEFAULT_ROTATE_S, show_default=True,
              help="Seconds each of several items of equal rank stays on screen.")
def run_command(
    *,
    server: str | None,
    server_key: str,
    key_file: str,
    authority: tuple[str, ...],
    content_dir: str | None,
    zeroconf: bool,
    backend: str,
    duration: float | None,
    port: int,
    token: str | None,
    out: str,
    size: tuple[int, int],
    font: str,
    rotate: float,
) -> None:
    """Run the reference e-board against a loa server, drawing what it shows to --out."""
    import time

    from loa.devices.runner import DeviceRunner, open_udp_socket, run
    from loa.protocol.session import device_id

    renderer = _renderer(size, font)
    server_public = _key(server_key, "--server-key")
    authorities = _authority_keys(authority)
    if server is None and not zeroconf:
        raise click.ClickException("give --server HOST:PORT, or --zeroconf to find it on the LAN")
    try:
        private, created = load_or_create_key(key_file)
    except IdentityError as exc:
        raise click.ClickException(str(exc)) from None
    public = public_key_of(private)
    click.echo(f"board public key: {encode_key(public)}")
    click.echo(f"board id: {device_id(public)}{' (new key written to ' + key_file + ')' if created else ''}")
    address = _discover(server_public) if zeroconf and server is None else parse_server(server or "")
    try:
        store: ContentStore = DirectoryStore(content_dir) if content_dir else MemoryStore()
    except StorageError as exc:
        raise click.ClickException(str(exc)) from None
    core = BoardCore(static_private=private, server_public=server_public, authority_keys=authorities,
                     server_address=address, store=store, token=token, rotate_s=rotate,
                     timestamp_source=lambda _now: time.time_ns())
    output = BoardOutput(core, renderer, out, log=lambda line: click.echo(f"loa board: {line}", err=True))
    _write_first(output)
    try:
        sock = open_udp_socket(address, port=port)
    except OSError as exc:
        raise click.ClickException(f"cannot open a UDP socket on port {port}: {exc.strerror or exc}") from None
    runner = DeviceRunner(core, address, sock=sock)
    click.echo(f"loa board: {runner.local_address[0]}:{runner.local_address[1]} -> {address[0]}:{address[1]} "
               f"({backend}), drawing {size[0]}x{size[1]} to {out}", err=True)
    interrupted = False
    try:
        run(lambda: run_board(runner, output, duration), backend)
    except KeyboardInterrupt:
        interrupted = True
    stats = core.statistics()
    click.echo(f"loa board: {'interrupted; ' if interrupted else ''}connected={stats.connected} "
               f"items={len(core.settings.boards)} screens={core.screen_changes} writes={output.writes} "
               f"write_errors={output.errors} alerts={stats.alerts_accepted} drops={sum(stats.drops.values())}",
               err=True)


@board.command("render")
@click.option("--text", help="The text (at most 512 bytes of UTF-8, as in the protocol).")
@click.option("--image", type=click.Path(dir_okay=False), help="A PNG or JPEG file to show (an item's cid).")
@click.option("--cls", type=click.IntRange(0, 2), default=0, show_default=True, help="Class: 0 normal, 1 priority, "
              "2 emergency.")
@click.option("--lvl", type=click.IntRange(0, 3), default=0, show_default=True,
              help="Issuing level: 0 commune, 1 district, 2 province, 3 national.")
@click.option("--alert", is_flag=True, help="Draw the emergency alert screen (an alert's text) instead of an item.")
@click.option("--status", type=click.Choice(["actual", "exercise", "test"]), default="actual", show_default=True,
              help="The alert's status.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The PNG to write.")
@_SIZE
@_FONT
def render_command(*, text: str | None, image: str | None, cls: int, lvl: int, alert: bool, status: str, out: str,
                   size: tuple[int, int], font: str) -> None:
    """Draw one screen offline, exactly as a running board would show it."""
    if text is not None and len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise click.ClickException(f"--text is {len(text.encode('utf-8', 'surrogatepass'))} bytes of UTF-8; "
                                   f"the protocol allows at most {MAX_TEXT_BYTES}")
    if alert and image is not None:
        raise click.ClickException("an alert carries text only: give --text, not --image")
    if not alert and text is None and image is None:
        raise click.ClickException("give --text and/or --image (or --alert)")
    renderer = _renderer(size, font)
    blob = None
    if image is not None:
        try:
            blob = Path(image).read_bytes()
        except OSError as exc:
            raise click.ClickException(f"cannot read --image {image}: {exc.strerror or exc}") from None
    if alert:
        screen = Screen("alert", 0, cls, lvl, text, status=status)
    else:
        cid = hashlib.sha256(blob).digest() if blob is not None else None
        screen = Screen("item", 0, cls, lvl, text, cid, image="ready" if blob is not None else "none")
    try:
        write_png(out, renderer.png(screen, blob))
    except OSError as exc:
        raise click.ClickException(f"cannot write --out {out}: {exc.strerror or exc}") from None
    click.echo(f"loa board: wrote {size[0]}x{size[1]} {_describe(screen)} to {out}", err=True)
